"""4x4 stride-2 padding-1 convs (pix2pix's resampling, the PatchGANs'), computed fast on CPU.

Three linear maps share one kernel w [4, 4, C, A] (HWIO):
  down(x, w):  x [B, 2H, 2W, C] -> [B, H, W, A]   the strided conv
  up(y, w):    y [B, H, W, A] -> [B, 2H, 2W, C]   its adjoint in x, i.e. the transposed conv
  grad_w(x, dy) -> [4, 4, C, A]                   the weight gradient of both

The backward pass of `down` is (up, grad_w) and that of `up` is (down, grad_w), so with a
custom VJP every pass of either layer is one of these three maps. Each map has several exact
formulations whose speed on XLA:CPU differs by up to ~80x with the shape (see
benchmarks/conv_kernels.py): the autodiff form of a strided conv's weight gradient is a
window-dilated convolution that runs at 4-8 GFLOP/s on thin or tiny maps, where a plain
matmul over patches reaches ~100. `choose()` holds the measured choice per shape.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_DIMS = ("NHWC", "HWIO", "NHWC")


def space_to_depth(x: jax.Array, factor: int) -> jax.Array:
  """[B, H, W, C] -> [B, H / f, W / f, f * f * C]; channels ordered (row, column, C)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // factor, factor, w // factor, factor, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // factor, w // factor, factor * factor * c)


def depth_to_space(x: jax.Array, factor: int) -> jax.Array:
  """The inverse of `space_to_depth`."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, factor, factor, c // (factor * factor))
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * factor, w * factor, -1)


def _pad1(x: jax.Array) -> jax.Array:
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def _folded_kernel(w: jax.Array) -> jax.Array:
  """[4, 4, C, A] -> [2 (ty), 2 (tx), 4C (py, px, C), A]: tap k = 2t + p."""
  c, a = w.shape[2:]
  return w.reshape(2, 2, 2, 2, c, a).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, a)


def _unfolded_kernel(folded: jax.Array) -> jax.Array:
  """The inverse of `_folded_kernel`."""
  c4, a = folded.shape[2:]
  return folded.reshape(2, 2, 2, 2, c4 // 4, a).transpose(0, 2, 1, 3, 4, 5).reshape(4, 4, -1, a)


def _patches(x: jax.Array) -> jax.Array:
  """x [B, 2H, 2W, C] -> the 16 taps of every output pixel, [B, H, W, 16C] in folded order."""
  s = space_to_depth(_pad1(x), 2)  # [B, H + 1, W + 1, 4C]
  h, w = s.shape[1] - 1, s.shape[2] - 1
  return jnp.concatenate([s[:, ty : ty + h, tx : tx + w] for ty in (0, 1) for tx in (0, 1)], -1)


# --- down: the strided conv --------------------------------------------------------------------


def down_direct(x, w):
  """XLA's strided convolution."""
  return jax.lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DIMS)


def down_folded(x, w):
  """Space-to-depth of the padded input, then a 2x2 stride-1 conv with regrouped taps."""
  return jax.lax.conv_general_dilated(
    space_to_depth(_pad1(x), 2), _folded_kernel(w), (1, 1), "VALID", dimension_numbers=_DIMS
  )


def down_matmul(x, w):
  """Patches [B*H*W, 16C] @ kernel [16C, A]."""
  patches = _patches(x)
  flat_kernel = _folded_kernel(w).reshape(-1, w.shape[-1])
  return jnp.einsum("bhwk,ka->bhwa", patches, flat_kernel)


# --- up: the adjoint (transposed conv) ---------------------------------------------------------


def up_direct(y, w):
  """XLA's autodiff of the strided conv: an input-dilated convolution."""
  b, h, width, _ = y.shape
  x_shape = jax.ShapeDtypeStruct((b, 2 * h, 2 * width, w.shape[2]), y.dtype)
  return jax.linear_transpose(functools.partial(down_direct, w=w), x_shape)(y)[0]


def _phase_kernel(w: jax.Array) -> jax.Array:
  """[4, 4, C, A] -> [2, 2, A, 4C (ay, ax, C)]: output phase a uses tap 3 - a - 2t."""
  c, a = w.shape[2:]
  flipped = w[::-1, ::-1].reshape(2, 2, 2, 2, c, a)  # [ty, ay, tx, ax, C, A]
  return flipped.transpose(0, 2, 5, 1, 3, 4).reshape(2, 2, a, 4 * c)


def _interleave_phases(z: jax.Array) -> jax.Array:
  """z [B, H + 1, W + 1, 4C], phase (a, b) valid at offset (a, b) -> [B, 2H, 2W, C]."""
  b, h1, w1, c4 = z.shape
  h, w, c = h1 - 1, w1 - 1, c4 // 4
  z = z.reshape(b, h1, w1, 2, 2, c)
  rows = [jnp.stack([z[:, a : a + h, p : p + w, a, p] for p in (0, 1)], 3) for a in (0, 1)]
  return jnp.stack(rows, 2).reshape(b, 2 * h, 2 * w, c)  # [B, H, 2 (a), W, 2 (b), C]


def up_phase(y, w):
  """One 2x2 stride-1 conv of the padded input giving all four output phases at once."""
  return _interleave_phases(
    jax.lax.conv_general_dilated(
      _pad1(y), _phase_kernel(w), (1, 1), "VALID", dimension_numbers=_DIMS
    )
  )


def up_matmul(y, w):
  """y [B*H*W, A] @ kernel^T [A, 16C], then the 16 taps scattered back (col2im)."""
  b, h, width, _ = y.shape
  c = w.shape[2]
  cols = jnp.einsum("bhwa,ka->bhwk", y, _folded_kernel(w).reshape(-1, w.shape[-1]))
  cols = cols.reshape(b, h, width, 2, 2, 4 * c)
  s = jnp.zeros((b, h + 1, width + 1, 4 * c), y.dtype)
  for ty in (0, 1):
    for tx in (0, 1):
      s = s.at[:, ty : ty + h, tx : tx + width].add(cols[:, :, :, ty, tx])
  return depth_to_space(s, 2)[:, 1:-1, 1:-1]


# --- grad_w: the weight gradient ---------------------------------------------------------------


def grad_w_direct(x, dy):
  """XLA's autodiff of the strided conv: a window-dilated convolution."""
  kernel_shape = jax.ShapeDtypeStruct((4, 4, x.shape[-1], dy.shape[-1]), x.dtype)
  return jax.linear_transpose(functools.partial(down_direct, x), kernel_shape)(dy)[0]


def grad_w_matmul(x, dy):
  """Patches^T [16C, B*H*W] @ dy [B*H*W, A]."""
  folded = jnp.einsum("bhwk,bhwa->ka", _patches(x), dy)
  return _unfolded_kernel(folded.reshape(2, 2, -1, dy.shape[-1]))


def grad_w_taps(x, dy):
  """Four [4C, B*H*W] @ [B*H*W, A] matmuls, one per folded tap, without the patch tensor."""
  s = space_to_depth(_pad1(x), 2)
  h, w = dy.shape[1:3]
  taps = [
    jnp.einsum("bhwc,bhwa->ca", s[:, ty : ty + h, tx : tx + w], dy)
    for ty in (0, 1)
    for tx in (0, 1)
  ]
  return _unfolded_kernel(jnp.stack(taps).reshape(2, 2, -1, dy.shape[-1]))


DOWN = {"direct": down_direct, "folded": down_folded, "matmul": down_matmul}
UP = {"direct": up_direct, "phase": up_phase, "matmul": up_matmul}
GRAD_W = {"direct": grad_w_direct, "matmul": grad_w_matmul, "taps": grad_w_taps}


# --- the choice and the layers' entry points ---------------------------------------------------

IMPLS = ("auto", "xla")  # auto: the measured CPU choice below; xla: XLA's own forms.


def check_impl(policy: str) -> None:
  """Raises ValueError unless `policy` is one of IMPLS (config.model.conv_impl)."""
  if policy not in IMPLS:
    raise ValueError(f"model.conv_impl must be one of {IMPLS}, got {policy!r}")


def conv_impl(model_config) -> str:
  """`config.model.conv_impl`, checked; "auto" for configs saved before the knob existed."""
  policy = model_config.get("conv_impl", "auto")
  check_impl(policy)
  return policy


def choose(op: str, size: int, c: int, policy: str) -> str:
  """The formulation of `op` for input side `size` (2H) and C thin-side channels.

  Measured on a 2-core AMD EPYC at batch 64 (benchmarks/conv_kernels.py, RESULTS.md): XLA's
  strided conv is best on maps of 16+ px with 16+ input channels, a matmul over patches
  elsewhere; the four-phase conv is the best transposed conv from 16 px up and the matmul
  below; the weight gradient is a matmul for thin inputs and four tap matmuls otherwise.
  Other backends keep XLA's forms, which their vendor libraries already run well.
  """
  check_impl(policy)
  if policy == "xla" or jax.default_backend() != "cpu":
    return "direct"
  if op == "down":
    return "direct" if size >= 16 and c >= 16 else "matmul"
  if op == "up":
    return "phase" if size >= 16 else "matmul"
  return "matmul" if c < 16 else "taps"


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def down(x: jax.Array, w: jax.Array, policy: str = "auto") -> jax.Array:
  """conv(x, w, 4x4, stride 2, padding 1): [B, 2H, 2W, C] -> [B, H, W, A]."""
  return DOWN[choose("down", x.shape[1], x.shape[-1], policy)](x, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def up(y: jax.Array, w: jax.Array, policy: str = "auto") -> jax.Array:
  """The transposed conv (adjoint of `down` in x): [B, H, W, A] -> [B, 2H, 2W, C]."""
  return UP[choose("up", 2 * y.shape[1], w.shape[2], policy)](y, w)


def grad_w(x: jax.Array, dy: jax.Array, policy: str = "auto") -> jax.Array:
  """d<down(x, w), dy>/dw, [4, 4, C, A]."""
  return GRAD_W[choose("grad_w", x.shape[1], x.shape[-1], policy)](x, dy)


def _down_fwd(x, w, policy):
  return down(x, w, policy), (x, w)


def _down_bwd(policy, residuals, dy):
  x, w = residuals
  return up(dy, w, policy), grad_w(x, dy, policy)


def _up_fwd(y, w, policy):
  return up(y, w, policy), (y, w)


def _up_bwd(policy, residuals, g):
  y, w = residuals
  return down(g, w, policy), grad_w(g, y, policy)


down.defvjp(_down_fwd, _down_bwd)
up.defvjp(_up_fwd, _up_bwd)
