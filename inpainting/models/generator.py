"""The caption-conditioned U-Net generator shared by `vaegan` and `l2`.

Input: `masked_input(batch)` [B, 64, 64, 4], folded by space-to-depth into 32x32x16; the
levels run at 32, 16, 8 pixels with `config.model.widths`, the bottleneck at 4x4, and the
last 32x32 features unfold by depth-to-space into the 64x64 RGB output (sub-pixel
convolution). No layer works at 64x64: on XLA:CPU the full-resolution normalisation and
conv backward passes cost more than everything else together. Text enters in three ways:
  * FiLM at every block from the condition vector (concatenated with z when there is one),
  * cross-attention from image features to word features at `attention_resolutions`,
  * (through the condition) the latent z, also added as a dense map at the bottleneck,
  * optionally (`model.cond_map_resolutions`) a dense map of (condition, z) added on the
    way up at the listed resolutions: FiLM is the same at every pixel, so this is the one
    path by which the caption can lay out *where* things go (a shape's outline).
Optionally (`model.coord_frequencies`) the input gains sin/cos channels of the pixel
coordinates (Fourier features), a position code that FiLM can weight into an outline.
Optionally (`model.extra_up_blocks`) each up level gains residual ConvBlocks: more depth
where outlines are drawn. Only plain 3x3 convs, stride-2 3x3 convs, and 1x1 conv + nearest
upsampling on the way up (the 3x3 conv after the skip concatenation does the spatial
mixing): cheap on XLA:CPU.
The output is tanh RGB over the whole image; callers composite it with the border.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from inpainting.models import layers
from inpainting.models.layers import ParamInit
from inpainting.models.text_encoder import Condition

IMAGE_SIZE = 64
BOTTLENECK_SIZE = 4
FOLD = 2  # Space-to-depth factor: the U-Net's top level runs at 64 / FOLD px.


def check_cond_map(model_config: ml_collections.ConfigDict) -> None:
  """`model.cond_map_resolutions` must name up-path levels (ValueError otherwise)."""
  levels = tuple(IMAGE_SIZE // FOLD // 2**i for i in range(len(model_config.widths)))
  unknown = sorted(set(model_config.get("cond_map_resolutions", ())) - set(levels))
  if unknown:
    raise ValueError(f"model.cond_map_resolutions {unknown} are not U-Net levels {levels}")


def fourier_coordinates(num_frequencies: int) -> jax.Array:
  """[64, 64, 4 F] sin and cos of x and y (pixel centres in [-1, 1]) at pi * 2^0..2^(F-1)."""
  centres = (jnp.arange(IMAGE_SIZE, dtype=jnp.float32) + 0.5) / IMAGE_SIZE * 2 - 1
  y, x = jnp.meshgrid(centres, centres, indexing="ij")
  angles = [jnp.pi * 2.0**k * t for k in range(num_frequencies) for t in (x, y)]
  return jnp.stack([f(a) for a in angles for f in (jnp.sin, jnp.cos)], axis=-1)


class CaptionUNet(nnx.Module):
  """U-Net over the masked image, conditioned on a caption and optionally a latent z."""

  def __init__(self, model_config: ml_collections.ConfigDict, *, init: ParamInit):
    dtype = layers.compute_dtype(model_config)
    widths = tuple(model_config.widths)
    top = IMAGE_SIZE // FOLD
    if top // 2 ** len(widths) != BOTTLENECK_SIZE:
      raise ValueError(f"model.widths needs 3 levels (32, 16, 8 px), got {widths}")
    text = model_config.text
    self.z_dim = model_config.z_dim
    self.dtype = dtype
    self.resolutions = tuple(top // 2**i for i in range(len(widths)))
    self.attention_resolutions = tuple(model_config.attention_resolutions)
    film_dim = text.cond_dim + self.z_dim
    bottleneck = widths[-1]
    heads = model_config.attention_heads

    def block(cin, cout):
      return layers.ConvBlock(cin, cout, film_dim, init=init, dtype=dtype)

    def cross_attention(channels):
      return layers.CrossAttention(channels, text.width, heads, init=init, dtype=dtype)

    self.coord_frequencies = model_config.get("coord_frequencies", 0)
    in_channels = 4 + 4 * self.coord_frequencies
    self.stem = layers.Conv(in_channels * FOLD * FOLD, widths[0], 3, init=init, dtype=dtype)
    self.down_blocks = nnx.List([block(w, w) for w in widths])
    self.down_attn = nnx.List(
      [
        cross_attention(w)
        for w, r in zip(widths, self.resolutions)
        if r in self.attention_resolutions
      ]
    )
    next_widths = widths[1:] + (bottleneck,)
    self.downsamples = nnx.List(
      [
        layers.Conv(w, w_next, 3, stride=2, init=init, dtype=dtype)
        for w, w_next in zip(widths, next_widths)
      ]
    )
    if self.z_dim:
      self.z_to_map = layers.Dense(
        self.z_dim, BOTTLENECK_SIZE**2 * bottleneck, init=init, dtype=dtype
      )
    self.cond_map_resolutions = tuple(model_config.get("cond_map_resolutions", ()))
    rank = model_config.get("cond_map_channels", 16)
    check_cond_map(model_config)
    # (condition, z) -> a [r, r, rank] map -> 1x1 conv to the level's width, per resolution.
    self.cond_maps = nnx.List(
      [
        layers.Dense(film_dim, r * r * rank, init=init, dtype=dtype)
        for r in self.cond_map_resolutions
      ]
    )
    self.cond_map_projections = nnx.List(
      [
        layers.Conv(rank, widths[self.resolutions.index(r)], 1, init=init, dtype=dtype)
        for r in self.cond_map_resolutions
      ]
    )
    self.middle = nnx.List([block(bottleneck, bottleneck) for _ in range(2)])
    self.upsamples = nnx.List(
      [layers.Conv(w_next, w, 1, init=init, dtype=dtype) for w, w_next in zip(widths, next_widths)]
    )
    self.up_blocks = nnx.List([block(2 * w, w) for w in widths])
    # Residual ConvBlocks after each up level's first block (model.extra_up_blocks).
    extra = model_config.get("extra_up_blocks", 0)
    self.extra_up_blocks = nnx.List([block(w, w) for w in widths for _ in range(extra)])
    self.extra_per_level = extra
    self.up_attn = nnx.List(
      [
        cross_attention(w)
        for w, r in zip(widths, self.resolutions)
        if r in self.attention_resolutions
      ]
    )
    self.out_norm = layers.GroupNorm(widths[0], init=init)
    self.out_conv = layers.Conv(widths[0], 3 * FOLD * FOLD, 3, init=init, dtype=dtype)

  def __call__(self, x: jax.Array, cond: Condition, z: jax.Array | None = None) -> jax.Array:
    """Generates a full image.

    Args:
      x: float32 [B, 64, 64, 4] masked image + mask (`registry.masked_input`).
      cond: the caption condition (`CaptionConditioner` or `null_condition`).
      z: float32 [B, z_dim] latent, required iff the model has z_dim > 0.

    Returns:
      float32 [B, 64, 64, 3] in [-1, 1], not yet composited.
    """
    film = cond.vector
    if self.z_dim:
      film = jnp.concatenate([film, z], axis=-1)
    film = film.astype(self.dtype)
    words = cond.words.astype(self.dtype)
    x = x.astype(self.dtype)
    if self.coord_frequencies:
      codes = fourier_coordinates(self.coord_frequencies)
      coords = jnp.broadcast_to(codes, x.shape[:1] + codes.shape)
      x = jnp.concatenate([x, coords.astype(self.dtype)], axis=-1)
    h = self.stem(layers.space_to_depth(x, FOLD))
    skips = []
    attn_index = 0
    for level, resolution in enumerate(self.resolutions):
      h = self.down_blocks[level](h, film)
      if resolution in self.attention_resolutions:
        h = self.down_attn[attn_index](h, words, cond.word_mask)
        attn_index += 1
      skips.append(h)
      h = nnx.silu(self.downsamples[level](h))
    if self.z_dim:
      h = h + self.z_to_map(z.astype(self.dtype)).reshape(h.shape)
    for block in self.middle:
      h = block(h, film)
    for level in reversed(range(len(self.resolutions))):
      h = layers.upsample_nearest(self.upsamples[level](h))  # 1x1 conv at low res.
      h = self._add_cond_map(h, film, self.resolutions[level])
      h = self.up_blocks[level](jnp.concatenate([h, skips[level]], axis=-1), film)
      for i in range(self.extra_per_level):
        h = h + self.extra_up_blocks[level * self.extra_per_level + i](h, film)
      if self.resolutions[level] in self.attention_resolutions:
        attn_index -= 1
        h = self.up_attn[attn_index](h, words, cond.word_mask)
    h = layers.depth_to_space(self.out_conv(nnx.silu(self.out_norm(h))), FOLD)
    return jnp.tanh(h.astype(jnp.float32))

  def _add_cond_map(self, h: jax.Array, film: jax.Array, resolution: int) -> jax.Array:
    if resolution not in self.cond_map_resolutions:
      return h
    index = self.cond_map_resolutions.index(resolution)
    spatial = self.cond_maps[index](film).reshape(h.shape[0], resolution, resolution, -1)
    return h + self.cond_map_projections[index](nnx.silu(spatial))
