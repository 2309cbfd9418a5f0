"""Building blocks shared by the model families (NHWC, Flax NNX).

Parameters are always float32; `dtype` is the compute dtype (float32 or bfloat16).
Softmax, normalisation statistics and every loss run in float32.
Nothing here holds an `nnx.Rngs` after construction: randomness at call time comes in as
explicit keys so that a train step is a pure function of (state, batch, rng).

Initialisation goes through `ParamInit`, which draws *every* random parameter of a model
from one flat counter-hash normal at the end of construction. XLA:CPU compiles each
`jax.random` call separately (about 0.1-1 s each on a loaded 2-core machine), so the usual
one-draw-per-parameter init made building a small model take half a minute.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from inpainting.models import strided_conv
from inpainting.models.strided_conv import depth_to_space, space_to_depth  # noqa: F401  (re-exported)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(model_config: ml_collections.ConfigDict):
  """The jnp dtype named by `config.model.dtype`."""
  if model_config.dtype not in DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {model_config.dtype!r}")
  return DTYPES[model_config.dtype]


# --- Initialisation ----------------------------------------------------------------------------


def _mix32(x: jax.Array) -> jax.Array:
  """A 32-bit integer hash with good avalanche (Wellons' lowbias32)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def hashed_normal(seed: jax.Array, size: int) -> jax.Array:
  """`size` standard normals from a counter hash of `seed` (uint32 [2]) via Box-Muller.

  Deterministic for a given seed on every backend and sharding (pure integer math).
  """
  mixed = _mix32(seed[0] ^ _mix32(seed[1] + jnp.uint32(0x9E3779B9)))
  index = jnp.arange(size, dtype=jnp.uint32)
  bits_a = _mix32(2 * index + mixed)
  bits_b = _mix32(2 * index + 1 + mixed)
  uniform_a = ((bits_a >> 8).astype(jnp.float32) + 0.5) / 2.0**24  # (0, 1)
  uniform_b = (bits_b >> 8).astype(jnp.float32) / 2.0**24  # [0, 1)
  return jnp.sqrt(-2.0 * jnp.log(uniform_a)) * jnp.cos(2.0 * jnp.pi * uniform_b)


class ParamInit:
  """Creates float32 parameters; random ones are filled later by a single draw.

  Usage: pass one ParamInit to every layer of a model, then call `finish()` once before
  the parameters are read. Until then random parameters hold their mean.
  """

  def __init__(self, rngs: nnx.Rngs):
    key_data = jax.random.key_data(rngs.params())
    self._seed = key_data.reshape(-1)[:2].astype(jnp.uint32)
    self._pending: list[tuple[nnx.Variable, float | np.ndarray, float]] = []

  def normal(self, shape, std, mean: float = 0.0, kind=nnx.Param) -> nnx.Variable:
    """A variable drawn from N(mean, std^2) at `finish()`; `std` may be an array that
    broadcasts against `shape` (zero where the entries stay at `mean`)."""
    variable = kind(jnp.full(shape, mean, jnp.float32))
    if np.any(std):
      self._pending.append((variable, std, mean))
    return variable

  def lecun(self, shape) -> nnx.Param:
    """LeCun normal: variance 1 / fan_in, fan_in = prod(shape[:-1])."""
    return self.normal(shape, 1.0 / math.sqrt(max(math.prod(shape[:-1]), 1)))

  @staticmethod
  def zeros(shape) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, jnp.float32))

  @staticmethod
  def ones(shape) -> nnx.Param:
    return nnx.Param(jnp.ones(shape, jnp.float32))

  def finish(self) -> None:
    """Draws every pending random parameter from one flat normal."""
    sizes = [math.prod(variable.shape) for variable, _, _ in self._pending]
    if not sizes:
      return
    flat = hashed_normal(self._seed, sum(sizes))
    offsets = np.cumsum([0, *sizes])
    for (variable, std, mean), start, size in zip(self._pending, offsets, sizes):
      chunk = jax.lax.slice(flat, (int(start),), (int(start + size),))
      variable[...] = mean + std * chunk.reshape(variable.shape)
    self._pending = []


# --- Basic layers ------------------------------------------------------------------------------


def _padding(padding: str | int):
  """'SAME' / 'VALID', or the same explicit padding on all four sides."""
  if isinstance(padding, str):
    return padding
  return ((padding, padding), (padding, padding))


class Conv(nnx.Module):
  """2-D convolution, NHWC input, HWIO kernel (LeCun normal unless `kernel_std`)."""

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    init: ParamInit,
    stride: int = 1,
    padding: str | int = "SAME",
    use_bias: bool = True,
    kernel_std: float | None = None,
    dtype=jnp.float32,
    impl: str = "auto",
  ):
    shape = (kernel_size, kernel_size, in_channels, out_channels)
    self.kernel = init.lecun(shape) if kernel_std is None else init.normal(shape, kernel_std)
    self.bias = init.zeros((out_channels,)) if use_bias else None
    self.stride = stride
    self.padding = _padding(padding)
    self.dtype = dtype
    self.impl = impl  # How 4x4 stride-2 convs are computed (strided_conv.IMPLS).

  def __call__(self, x: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
    kernel = (self.kernel[...] if kernel is None else kernel).astype(self.dtype)
    x = x.astype(self.dtype)
    padding = self.padding
    if isinstance(padding, str):  # Explicit pads, so that SAME 4x4/2 takes the fast path too.
      strides = (self.stride, self.stride)
      padding = tuple(jax.lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, padding))
    if kernel.shape[:2] == (4, 4) and self.stride == 2 and padding == ((1, 1), (1, 1)):
      y = strided_conv.down(x, kernel, self.impl)
    else:
      y = jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(self.stride, self.stride),
        padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
      )
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class ConvTranspose(nnx.Module):
  """PyTorch ConvTranspose2d(kernel 4, stride 2, padding 1) in NHWC: output 2H x 2W.

  The kernel is stored [4, 4, out, in] with kernel[i, j, o, c] == torch_weight[c, o, i, j],
  which is the HWIO kernel of the strided conv this layer is the adjoint of; it runs
  through `strided_conv.up` (see there for how it is computed). Init N(0, kernel_std^2).
  """

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    *,
    init: ParamInit,
    use_bias: bool,
    kernel_std: float,
    dtype=jnp.float32,
    impl: str = "auto",
  ):
    self.kernel = init.normal((4, 4, out_channels, in_channels), kernel_std)
    self.bias = init.zeros((out_channels,)) if use_bias else None
    self.dtype = dtype
    self.impl = impl

  def __call__(self, x: jax.Array) -> jax.Array:
    y = strided_conv.up(x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.impl)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class Dense(nnx.Module):
  """x @ kernel + bias; `zero_init` starts the kernel at zero (identity-style branches)."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    init: ParamInit,
    use_bias: bool = True,
    zero_init: bool = False,
    dtype=jnp.float32,
  ):
    shape = (in_features, out_features)
    self.kernel = init.zeros(shape) if zero_init else init.lecun(shape)
    self.bias = init.zeros((out_features,)) if use_bias else None
    self.dtype = dtype

  def __call__(self, x: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
    kernel = self.kernel[...] if kernel is None else kernel
    y = x.astype(self.dtype) @ kernel.astype(self.dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


def gaussian_head(
  in_features: int, out_features: int, *, init: ParamInit, initial_sigma: float
) -> Dense:
  """Dense to [mu | log sigma] (each `out_features`) of a diagonal Gaussian.

  The mu columns start LeCun-normal, so mu carries its input from the first step; the
  log-sigma columns start at zero weight and log(initial_sigma) bias. A zero-initialised
  mu would leave a saddle: the networks fed with samples from the Gaussian see pure noise,
  learn nothing from it, and so send mu no gradient (measured: the caption condition's KL
  stayed under 0.6 nats over 128 dimensions for all of README command 1).
  """
  head = Dense(in_features, 2 * out_features, init=init, zero_init=True)
  column_std = np.concatenate(
    [np.full(out_features, 1 / math.sqrt(in_features)), np.zeros(out_features)]
  )
  head.kernel = init.normal((in_features, 2 * out_features), column_std[None, :])
  head.bias = nnx.Param(
    jnp.concatenate([jnp.zeros(out_features), jnp.full(out_features, math.log(initial_sigma))])
  )
  return head


class Embed(nnx.Module):
  """Token embedding table, N(0, 1/width) init."""

  def __init__(self, vocab_size: int, width: int, *, init: ParamInit):
    self.table = init.normal((vocab_size, width), 1.0 / math.sqrt(width))

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.table[...], ids, axis=0)


def num_groups(channels: int, max_groups: int = 8) -> int:
  """Largest group count <= max_groups that divides `channels` (GroupNorm)."""
  for groups in range(min(max_groups, channels), 0, -1):
    if channels % groups == 0:
      return groups
  return 1


class GroupNorm(nnx.Module):
  """GroupNorm over (H, W, channels of a group); statistics in float32."""

  def __init__(self, channels: int, *, init: ParamInit, eps: float = 1e-5):
    self.groups = num_groups(channels)
    self.scale = init.ones((channels,))
    self.bias = init.zeros((channels,))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    grouped = x.astype(jnp.float32).reshape(batch, height, width, self.groups, -1)
    mean = jnp.mean(grouped, axis=(1, 2, 4), keepdims=True)
    var = jnp.mean(jnp.square(grouped - mean), axis=(1, 2, 4), keepdims=True)
    normed = ((grouped - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
    return (normed * self.scale[...] + self.bias[...]).astype(x.dtype)


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis; statistics in float32."""

  def __init__(self, width: int, *, init: ParamInit, eps: float = 1e-5):
    self.scale = init.ones((width,))
    self.bias = init.zeros((width,))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    normed = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    return (normed * self.scale[...] + self.bias[...]).astype(x.dtype)


def upsample_nearest(x: jax.Array) -> jax.Array:
  """2x nearest-neighbour upsampling (cheap on XLA:CPU, no checkerboard)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout keyed explicitly; `key=None` means deterministic (identity)."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


# --- Conditioning --------------------------------------------------------------------------


class FiLM(nnx.Module):
  """Feature-wise affine modulation: x * (1 + scale(c)) + shift(c).

  Zero-initialised, so an untrained FiLM is the identity and a zero condition only adds
  the learned bias.
  """

  def __init__(self, cond_dim: int, channels: int, *, init: ParamInit, dtype=jnp.float32):
    self.proj = Dense(cond_dim, 2 * channels, init=init, zero_init=True, dtype=dtype)

  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    scale, shift = jnp.split(self.proj(cond), 2, axis=-1)
    return x * (1.0 + scale[:, None, None, :]) + shift[:, None, None, :]


class ConvBlock(nnx.Module):
  """3x3 conv -> GroupNorm -> FiLM(cond) -> SiLU."""

  def __init__(self, in_channels: int, out_channels: int, cond_dim: int, *, init, dtype):
    self.conv = Conv(in_channels, out_channels, 3, init=init, dtype=dtype)
    self.norm = GroupNorm(out_channels, init=init)
    self.film = FiLM(cond_dim, out_channels, init=init, dtype=dtype)

  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    return nnx.silu(self.film(self.norm(self.conv(x)), cond))


# --- Attention -----------------------------------------------------------------------------


def attend(
  q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array, num_heads: int
) -> jax.Array:
  """Multi-head dot-product attention with a key padding mask.

  Args:
    q: [B, Q, D] queries; k, v: [B, K, D]; key_mask: bool [B, K], True = attend.
    num_heads: D is split into this many heads.

  Returns:
    [B, Q, D]. A row whose keys are all masked gets uniform weights (finite, never NaN);
    callers that must ignore such rows zero them themselves.
  """
  batch, num_q, width = q.shape
  head_dim = width // num_heads
  split = lambda t: t.reshape(t.shape[0], t.shape[1], num_heads, head_dim)  # noqa: E731
  logits = jnp.einsum("bqhd,bkhd->bhqk", split(q), split(k)).astype(jnp.float32)
  logits = logits / math.sqrt(head_dim)
  logits = jnp.where(key_mask[:, None, None, :], logits, -1e9)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, split(v))
  return out.reshape(batch, num_q, width)


class SelfAttention(nnx.Module):
  def __init__(self, width: int, num_heads: int, *, init: ParamInit, dtype):
    self.num_heads = num_heads
    self.qkv = Dense(width, 3 * width, init=init, dtype=dtype)
    self.out = Dense(width, width, init=init, dtype=dtype)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
    return self.out(attend(q, k, v, mask, self.num_heads))


class CrossAttention(nnx.Module):
  """Image features attend to word features; residual, zero-initialised output.

  Examples whose caption has no real token (the empty caption) get no update at all.
  """

  def __init__(self, channels: int, context_dim: int, num_heads: int, *, init, dtype):
    if channels % num_heads:
      raise ValueError(f"attention heads {num_heads} must divide the width {channels}")
    self.num_heads = num_heads
    self.norm = GroupNorm(channels, init=init)
    self.q = Dense(channels, channels, init=init, dtype=dtype)
    self.kv = Dense(context_dim, 2 * channels, init=init, dtype=dtype)
    self.out = Dense(channels, channels, init=init, zero_init=True, dtype=dtype)

  def __call__(self, x: jax.Array, words: jax.Array, word_mask: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    q = self.q(self.norm(x).reshape(batch, height * width, channels))
    k, v = jnp.split(self.kv(words), 2, axis=-1)
    attended = self.out(attend(q, k, v, word_mask, self.num_heads))
    has_words = jnp.any(word_mask, axis=-1).astype(x.dtype)[:, None, None, None]
    return x + has_words * attended.reshape(x.shape)


# --- Spectral normalisation ------------------------------------------------------------------


class PowerIterationVector(nnx.BatchStat):
  """The persisted singular-vector estimate of spectral normalisation (not trained)."""


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.sum(x * x) + eps)


def spectral_normalize(kernel: jax.Array, u: PowerIterationVector, update_stats: bool) -> jax.Array:
  """kernel / sigma_max(kernel) with one power-iteration step (Miyato et al. 2018).

  The kernel is viewed as a [fan_in, out] matrix. `u` ([out]) is the running estimate of
  the top right-singular vector (its scale is irrelevant); with `update_stats` the
  improved estimate is written back. Deterministic; no gradient flows through u or v.
  """
  matrix = kernel.reshape(-1, kernel.shape[-1])
  u_old = jax.lax.stop_gradient(u[...])
  v = jax.lax.stop_gradient(_l2_normalize(matrix @ u_old))
  u_new = jax.lax.stop_gradient(_l2_normalize(matrix.T @ v))
  sigma = v @ matrix @ u_new
  if update_stats:
    u[...] = u_new
  return kernel / jnp.maximum(sigma, 1e-12)


class SNConv(nnx.Module):
  """Conv2d with a spectrally normalised kernel."""

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    init: ParamInit,
    stride: int = 1,
    padding: int = 1,
    dtype=jnp.float32,
    impl: str = "auto",
  ):
    self.conv = Conv(
      in_channels,
      out_channels,
      kernel_size,
      init=init,
      stride=stride,
      padding=padding,
      dtype=dtype,
      impl=impl,
    )
    self.u = init.normal((out_channels,), 1.0, kind=PowerIterationVector)

  def __call__(self, x: jax.Array, update_stats: bool) -> jax.Array:
    return self.conv(x, spectral_normalize(self.conv.kernel[...], self.u, update_stats))


class SNDense(nnx.Module):
  """Linear layer with a spectrally normalised kernel."""

  def __init__(
    self, in_features: int, out_features: int, *, init: ParamInit, use_bias: bool = True, dtype
  ):
    self.dense = Dense(in_features, out_features, init=init, use_bias=use_bias, dtype=dtype)
    self.u = init.normal((out_features,), 1.0, kind=PowerIterationVector)

  def __call__(self, x: jax.Array, update_stats: bool) -> jax.Array:
    return self.dense(x, spectral_normalize(self.dense.kernel[...], self.u, update_stats))


# --- Batch norm with PyTorch semantics ---------------------------------------------------------


class TorchBatchNorm(nnx.Module):
  """BatchNorm2d exactly as PyTorch computes it (for the pix2pix reference).

  Train mode normalises with the biased batch variance and updates the running averages
  with momentum 0.1 and the *unbiased* variance; eval mode uses the running averages.
  Scale starts at N(1, 0.02) and bias at 0, as pix2pix initialises them.
  """

  def __init__(self, channels: int, *, init: ParamInit, momentum: float = 0.1, eps: float = 1e-5):
    self.scale = init.normal((channels,), 0.02, mean=1.0)
    self.bias = init.zeros((channels,))
    self.mean = nnx.BatchStat(jnp.zeros((channels,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((channels,), jnp.float32))
    self.momentum = momentum
    self.eps = eps

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    dtype = x.dtype
    x = x.astype(jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axis=axes)
      var = jnp.mean(jnp.square(x - mean), axis=axes)
      count = math.prod(x.shape[:-1])
      unbiased = var * count / max(count - 1, 1)
      m = self.momentum
      self.mean[...] = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
      self.var[...] = (1 - m) * self.var[...] + m * jax.lax.stop_gradient(unbiased)
    else:
      mean, var = self.mean[...], self.var[...]
    y = (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
    return y.astype(dtype)


# --- Optimisers ------------------------------------------------------------------------------


def learning_rate_schedule(
  optim_config: ml_collections.ConfigDict, peak: float, num_train_steps: int
) -> Callable[[jax.Array], jax.Array]:
  """Linear warm-up to `peak`, then constant or cosine decay to 0 at the last step."""
  warmup = max(int(optim_config.warmup_steps), 0)
  if optim_config.schedule == "constant":
    after = optax.constant_schedule(peak)
  elif optim_config.schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, max(num_train_steps - warmup, 1))
  else:
    raise ValueError(f"optim.schedule must be constant or cosine, got {optim_config.schedule!r}")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def adam(
  optim_config: ml_collections.ConfigDict, peak: float, num_train_steps: int
) -> optax.GradientTransformation:
  """Adam with the configured schedule (`learning_rate_schedule`) and optional clipping.

  The learning rate is an injected hyper-parameter, so the rate of the last update can be
  read back from the optimizer state (`learning_rate`) instead of recomputed.
  """

  def transform(learning_rate):
    parts = []
    if optim_config.grad_clip > 0:
      parts.append(optax.clip_by_global_norm(optim_config.grad_clip))
    parts.append(optax.adam(learning_rate, b1=optim_config.b1, b2=optim_config.b2))
    return optax.chain(*parts)

  schedule = learning_rate_schedule(optim_config, peak, num_train_steps)
  return optax.inject_hyperparams(transform)(learning_rate=schedule)


def learning_rate(optimizer: nnx.Optimizer) -> jax.Array:
  """The learning rate of `optimizer`'s last update (an `adam` above), float32 scalar."""
  return jnp.asarray(optimizer.opt_state.hyperparams["learning_rate"][...], jnp.float32)
