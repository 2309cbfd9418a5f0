"""`pix2pix`: the classic image-to-image GAN (Isola et al. 2017) as a fixed baseline.

The architecture is the reference PyTorch one (UnetGenerator with 6 downsamplings, ngf=64,
batch norm; 3-layer PatchGAN, ndf=64) so that an outside implementation can be compared
with it: 29,245,059 generator and 2,769,729 discriminator parameters. Captions are
not used. Differences from the reference, all forced by this project's contract:
  * input: masked RGB + mask (4 channels); the output is composited with the border,
    and D judges the composited image;
  * sample() runs batch norm in eval mode (running averages) and, unless
    `model.sample_dropout`, no dropout, so the K samples are identical.
Reference quirk kept on purpose (`model.skip_after_leaky_relu`): the reference's in-place
LeakyReLU overwrites each block's input before the skip concatenation, so the skip carries
LeakyReLU(x), not x.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from inpainting import losses
from inpainting.models import gan, layers, registry, strided_conv
from inpainting.models.layers import Conv, ConvTranspose, ParamInit, TorchBatchNorm
from inpainting.models.registry import Batch, composite, masked_input

INIT_STD = 0.02  # The reference's init_type="normal", init_gain=0.02.
DROPOUT_RATE = 0.5


def _down_conv(in_channels: int, out_channels: int, init: ParamInit, dtype, impl) -> Conv:
  return Conv(
    in_channels,
    out_channels,
    4,
    init=init,
    stride=2,
    padding=1,
    use_bias=False,
    kernel_std=INIT_STD,
    dtype=dtype,
    impl=impl,
  )


def _up_conv(in_channels, out_channels, use_bias: bool, init, dtype, impl) -> ConvTranspose:
  """ConvTranspose2d(in, out, kernel_size=4, stride=2, padding=1)."""
  return ConvTranspose(
    in_channels,
    out_channels,
    init=init,
    use_bias=use_bias,
    kernel_std=INIT_STD,
    dtype=dtype,
    impl=impl,
  )


class UNetBlock(nnx.Module):
  """One level of the reference UnetSkipConnectionBlock, built from the inside out.

  innermost: LeakyReLU, down, ReLU, up, BN                                   + skip
  middle:    LeakyReLU, down, BN, [inner], ReLU, up, BN (, dropout)          + skip
  outermost: down, [inner], ReLU, up (with bias), tanh                       (no skip)
  """

  def __init__(
    self,
    outer_channels: int,
    inner_channels: int,
    *,
    init: ParamInit,
    dtype,
    impl: str,
    input_channels: int | None = None,
    inner: UNetBlock | None = None,
    outermost: bool = False,
    use_dropout: bool = False,
    skip_after_leaky_relu: bool = True,
  ):
    input_channels = input_channels or outer_channels
    self.outermost = outermost
    self.innermost = inner is None
    self.use_dropout = use_dropout
    self.skip_after_leaky_relu = skip_after_leaky_relu
    self.down = _down_conv(input_channels, inner_channels, init, dtype, impl)
    has_down_norm = not outermost and not self.innermost
    self.down_norm = TorchBatchNorm(inner_channels, init=init) if has_down_norm else None
    self.inner = inner
    up_in = inner_channels if self.innermost else 2 * inner_channels
    self.up = _up_conv(up_in, outer_channels, outermost, init, dtype, impl)
    self.up_norm = None if outermost else TorchBatchNorm(outer_channels, init=init)

  def __call__(self, x: jax.Array, train: bool, dropout_key: jax.Array | None) -> jax.Array:
    if self.outermost:
      h = self.down(x)
    else:
      x_act = nnx.leaky_relu(x, 0.2)
      if self.skip_after_leaky_relu:
        x = x_act
      h = self.down(x_act)
      if self.down_norm is not None:
        h = self.down_norm(h, train)
    if self.inner is not None:
      inner_key = None if dropout_key is None else jax.random.fold_in(dropout_key, 1)
      h = self.inner(h, train, inner_key)
    h = self.up(nnx.relu(h))
    if self.outermost:
      return jnp.tanh(h.astype(jnp.float32))
    h = self.up_norm(h, train)
    if self.use_dropout:
      h = layers.dropout(h, DROPOUT_RATE, dropout_key)
    return jnp.concatenate([x, h], axis=-1)


class Pix2PixUNet(nnx.Module):
  """The reference UnetGenerator(input_nc=4, output_nc=3, num_downs=6, ngf=64)."""

  def __init__(self, model_config: ml_collections.ConfigDict, *, init: ParamInit):
    dtype = layers.compute_dtype(model_config)
    ngf = model_config.ngf
    skip = model_config.skip_after_leaky_relu
    kw = dict(
      init=init, dtype=dtype, impl=strided_conv.conv_impl(model_config), skip_after_leaky_relu=skip
    )
    block = UNetBlock(ngf * 8, ngf * 8, **kw)  # Innermost: 2 -> 1 px.
    for _ in range(model_config.num_downs - 5):  # 512-wide middle blocks, with dropout.
      block = UNetBlock(ngf * 8, ngf * 8, inner=block, use_dropout=True, **kw)
    block = UNetBlock(ngf * 4, ngf * 8, inner=block, **kw)
    block = UNetBlock(ngf * 2, ngf * 4, inner=block, **kw)
    block = UNetBlock(ngf, ngf * 2, inner=block, **kw)
    self.model = UNetBlock(3, ngf, input_channels=4, inner=block, outermost=True, **kw)

  def __call__(self, x: jax.Array, train: bool, dropout_key: jax.Array | None) -> jax.Array:
    """[B, 64, 64, 4] masked input -> float32 [B, 64, 64, 3] in [-1, 1] (not composited)."""
    return self.model(x, train, dropout_key)


class Pix2PixPatchGAN(nnx.Module):
  """The reference NLayerDiscriminator(input_nc=7, ndf=64, n_layers=3): 64 px -> 6x6 logits."""

  def __init__(self, model_config: ml_collections.ConfigDict, *, init: ParamInit):
    dtype = layers.compute_dtype(model_config)
    ndf = model_config.ndf

    def conv(cin, cout, stride, use_bias):
      return Conv(
        cin,
        cout,
        4,
        init=init,
        stride=stride,
        padding=1,
        use_bias=use_bias,
        kernel_std=INIT_STD,
        dtype=dtype,
        impl=strided_conv.conv_impl(model_config),
      )

    self.first = conv(7, ndf, 2, True)
    self.convs = nnx.List(
      [
        conv(ndf, ndf * 2, 2, False),
        conv(ndf * 2, ndf * 4, 2, False),
        conv(ndf * 4, ndf * 8, 1, False),
      ]
    )
    self.norms = nnx.List([TorchBatchNorm(c, init=init) for c in (ndf * 2, ndf * 4, ndf * 8)])
    self.last = conv(ndf * 8, 1, 1, True)

  def __call__(self, condition: jax.Array, image: jax.Array, train: bool) -> jax.Array:
    """(generator input [B, 64, 64, 4], image [B, 64, 64, 3]) -> float32 logits [B, 6, 6, 1]."""
    h = nnx.leaky_relu(self.first(jnp.concatenate([condition, image], axis=-1)), 0.2)
    for conv, norm in zip(self.convs, self.norms):
      h = nnx.leaky_relu(norm(conv(h), train), 0.2)
    return self.last(h).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Pix2PixHParams:
  """What train_step and sample read besides the modules."""

  l1_weight: float  # Weight of the L1 term in G's loss (the reference's lambda_L1).
  sample_dropout: bool  # Test-time dropout in sample() (the paper's noise source).


def hparams(config: ml_collections.ConfigDict) -> Pix2PixHParams:
  return registry.hparams_from(
    Pix2PixHParams, config.loss, sample_dropout=bool(config.model.sample_dropout)
  )


def check_config(config: ml_collections.ConfigDict) -> None:
  registry.check_model_config(config, layers.compute_dtype)
  registry.check_model_config(config, strided_conv.conv_impl)


class Pix2Pix(nnx.Module):
  """Generator, discriminator and their Adam optimizers."""

  def __init__(self, config: ml_collections.ConfigDict, rngs: nnx.Rngs):
    init = ParamInit(rngs)
    self.generator = Pix2PixUNet(config.model, init=init)
    self.discriminator = Pix2PixPatchGAN(config.model, init=init)
    init.finish()
    tx_g = layers.adam(config.optim, config.optim.learning_rate, config.num_train_steps)
    tx_d = layers.adam(config.optim, config.optim.d_learning_rate, config.num_train_steps)
    self.opt_g = nnx.Optimizer(self.generator, tx_g, wrt=nnx.Param)
    self.opt_d = nnx.Optimizer(self.discriminator, tx_d, wrt=nnx.Param)


def create(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> Pix2Pix:
  return Pix2Pix(config, rngs)


def train_step(bundle: Pix2Pix, batch: Batch, rng: jax.Array, hp: Pix2PixHParams) -> dict:
  """The reference optimize_parameters(): G forward once, D update, then G update.

  Batch norm runs in train mode throughout, and each network call updates its running
  averages as in PyTorch (D: fake pass, real pass, then the G-step pass).
  """
  condition = masked_input(batch)

  # G forward once (train mode, dropout from rng); its VJP serves G's update.
  g_graph, g_params, g_stats = nnx.split(bundle.generator, nnx.Param, ...)

  def forward(params):
    generator = nnx.merge(g_graph, params, g_stats, copy=True)
    raw = generator(condition, True, rng)
    return raw, nnx.state(generator, nnx.Not(nnx.Param))

  raw, g_vjp, new_g_stats = jax.vjp(forward, g_params, has_aux=True)
  nnx.update(bundle.generator, new_g_stats)
  fake = composite(raw, batch)

  def d_loss_fn(disc):
    pred_fake = disc(condition, jax.lax.stop_gradient(fake), True)
    pred_real = disc(condition, batch["image"], True)
    loss_fake = losses.bce_with_logits(pred_fake, 0.0)
    loss_real = losses.bce_with_logits(pred_real, 1.0)
    return 0.5 * (loss_fake + loss_real), {"loss_d_fake": loss_fake, "loss_d_real": loss_real}

  loss_d, d_metrics, (d_graph, d_state) = gan.update_discriminator(
    bundle.discriminator, bundle.opt_d, d_loss_fn
  )

  def g_loss_fn(raw_output):
    disc = nnx.merge(d_graph, d_state, copy=True)
    pred_fake = disc(condition, composite(raw_output, batch), True)
    adversarial = losses.bce_with_logits(pred_fake, 1.0)
    l1 = jnp.mean(jnp.abs(raw_output - batch["image"]))
    aux = {"loss_g_adv": adversarial, "loss_l1": l1}
    return adversarial + hp.l1_weight * l1, (aux, nnx.state(disc, nnx.BatchStat))

  (loss_g, (g_metrics, d_stats)), raw_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(raw)
  nnx.update(bundle.discriminator, d_stats)
  (g_grads,) = g_vjp(raw_grad)
  bundle.opt_g.update(bundle.generator, g_grads)

  return {
    "loss_g": loss_g,
    "loss_d": loss_d,
    **g_metrics,
    **d_metrics,
    "l1_hole": losses.masked_l1(raw, batch["image"], batch["mask"]),
    "grad_norm_g": optax.tree.norm(g_grads),
    **gan.learning_rates(bundle.opt_g, bundle.opt_d),
  }


def sample(
  bundle: Pix2Pix, batch: Batch, rng: jax.Array, num_samples: int, hp: Pix2PixHParams
) -> jax.Array:
  """Eval-mode completions, [num_samples, B, 64, 64, 3], border copied from the input.

  Without `model.sample_dropout` all K samples are the same deterministic output; with it,
  each sample gets its own dropout mask (the paper's source of test-time noise).
  """
  condition = masked_input(batch)
  if not hp.sample_dropout:
    out = composite(bundle.generator(condition, False, None), batch)
    return jnp.broadcast_to(out, (num_samples, *out.shape))
  keys = jax.random.split(rng, num_samples)
  outs = [composite(bundle.generator(condition, False, key), batch) for key in keys]
  return jnp.stack(outs)


def evaluate(bundle: Pix2Pix, batch: Batch, rng: jax.Array, hp: Pix2PixHParams) -> dict:
  """Held-out L1 (whole image and hole), hole PSNR and D's BCE, all in eval mode."""
  del rng  # Deterministic in eval mode.
  condition = masked_input(batch)
  raw = bundle.generator(condition, False, None)
  fake = composite(raw, batch)
  pred_fake = bundle.discriminator(condition, fake, False)
  pred_real = bundle.discriminator(condition, batch["image"], False)
  return {
    "loss_l1": jnp.mean(jnp.abs(raw - batch["image"])),
    "loss_g_adv": losses.bce_with_logits(pred_fake, 1.0),
    "loss_d": 0.5
    * (losses.bce_with_logits(pred_fake, 0.0) + losses.bce_with_logits(pred_real, 1.0)),
    "l1_hole": losses.masked_l1(raw, batch["image"], batch["mask"]),
    "psnr_hole": registry.hole_psnr(fake, batch),
  }


registry.register(
  "pix2pix",
  registry.Family(
    hparams=hparams,
    create=create,
    train_step=train_step,
    sample=sample,
    evaluate=evaluate,
    check_config=check_config,
    progress_metrics=("loss_g", "loss_d", "loss_l1"),
  ),
)
