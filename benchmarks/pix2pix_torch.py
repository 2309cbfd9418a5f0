"""The same pix2pix step in PyTorch, as the outside reference for `configs/pix2pix.py`.

  pip install torch  # CPU wheel; not a dependency of the project
  python benchmarks/pix2pix_torch.py [--batch=64] [--steps=10] [--threads=0] [--device=cpu|cuda]

Same model (29,245,059 + 2,769,729 parameters, checked below), same step (G forward, D
update on the composited fake and the real image, G update with BCE + 100 x L1), random
data. Prints the median step time and images/s, last line JSON, so that train_step.py's
pix2pix figure can be read as a ratio against the framework the issue quotes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn


def _down(cin: int, cout: int, bias: bool = False) -> nn.Conv2d:
  return nn.Conv2d(cin, cout, 4, 2, 1, bias=bias)


def _up(cin: int, cout: int, bias: bool = False) -> nn.ConvTranspose2d:
  return nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)


class Block(nn.Module):
  """UnetSkipConnectionBlock: outermost, middle (optionally with dropout) or innermost."""

  def __init__(self, outer, inner_c, inner=None, input_c=None, outermost=False, dropout=False):
    super().__init__()
    input_c = input_c or outer
    self.outermost = outermost
    if outermost:
      layers = [_down(input_c, inner_c), inner, nn.ReLU(True), _up(2 * inner_c, outer, True)]
      layers.append(nn.Tanh())
    elif inner is None:
      layers = [nn.LeakyReLU(0.2, True), _down(input_c, inner_c), nn.ReLU(True)]
      layers += [_up(inner_c, outer), nn.BatchNorm2d(outer)]
    else:
      layers = [nn.LeakyReLU(0.2, True), _down(input_c, inner_c), nn.BatchNorm2d(inner_c)]
      layers += [inner, nn.ReLU(True), _up(2 * inner_c, outer), nn.BatchNorm2d(outer)]
      if dropout:
        layers.append(nn.Dropout(0.5))
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    if self.outermost:
      return self.model(x)
    return torch.cat([x, self.model(x)], 1)


def generator(ngf: int = 64) -> nn.Module:
  block = Block(ngf * 8, ngf * 8)
  block = Block(ngf * 8, ngf * 8, block, dropout=True)
  block = Block(ngf * 4, ngf * 8, block)
  block = Block(ngf * 2, ngf * 4, block)
  block = Block(ngf, ngf * 2, block)
  return Block(3, ngf, block, input_c=4, outermost=True)


def discriminator(ndf: int = 64) -> nn.Module:
  layers = [nn.Conv2d(7, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
  for cin, cout, stride in ((ndf, ndf * 2, 2), (ndf * 2, ndf * 4, 2), (ndf * 4, ndf * 8, 1)):
    layers += [nn.Conv2d(cin, cout, 4, stride, 1, bias=False), nn.BatchNorm2d(cout)]
    layers.append(nn.LeakyReLU(0.2, True))
  layers.append(nn.Conv2d(ndf * 8, 1, 4, 1, 1))
  return nn.Sequential(*layers)


def count(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters() if p.requires_grad)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
  parser.add_argument("--device", default="cpu", help="cpu | cuda (the same GPU as JAX's)")
  args = parser.parse_args()
  if args.device == "cuda" and not torch.cuda.is_available():
    raise SystemExit("error: --device=cuda but this PyTorch sees no CUDA GPU")
  device = torch.device(args.device)
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  net_g, net_d = generator(), discriminator()
  params = {"generator": count(net_g), "discriminator": count(net_d)}
  if params != {"generator": 29_245_059, "discriminator": 2_769_729}:
    raise SystemExit(f"error: parameter counts {params} differ from the reference")
  net_g, net_d = net_g.to(device), net_d.to(device)
  opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
  opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
  bce, l1 = nn.BCEWithLogitsLoss(), nn.L1Loss()

  image = torch.rand(args.batch, 3, 64, 64, device=device) * 2 - 1
  mask = torch.zeros(args.batch, 1, 64, 64, device=device)
  mask[:, :, 16:48, 16:48] = 1
  condition = torch.cat([image * (1 - mask), mask], 1)

  def step():
    raw = net_g(condition)
    fake = raw * mask + image * (1 - mask)
    opt_d.zero_grad(set_to_none=True)
    pred_fake = net_d(torch.cat([condition, fake.detach()], 1))
    pred_real = net_d(torch.cat([condition, image], 1))
    loss_d = 0.5 * (
      bce(pred_fake, torch.zeros_like(pred_fake)) + bce(pred_real, torch.ones_like(pred_real))
    )
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    pred_fake = net_d(torch.cat([condition, fake], 1))
    loss_g = bce(pred_fake, torch.ones_like(pred_fake)) + 100.0 * l1(raw, image)
    loss_g.backward()
    opt_g.step()

  times = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    step()
    if device.type == "cuda":
      torch.cuda.synchronize()
    if i >= args.warmup:
      times.append(time.perf_counter() - start)
  median = statistics.median(times)
  result = {
    "framework": f"torch {torch.__version__}",
    "device": args.device,
    "threads": torch.get_num_threads(),
    "batch": args.batch,
    "params": params,
    "median_step_seconds": median,
    "step_seconds_min_max": [min(times), max(times)],
    "images_per_second": args.batch / median,
  }
  print(f"pix2pix (torch): {result['images_per_second']:.1f} img/s, {median * 1e3:.0f} ms/step")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
