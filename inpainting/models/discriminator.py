"""Caption-aware PatchGAN discriminator with spectral norm and projection (vaegan).

D sees the composited 64x64 image concatenated with the mask channel and outputs one logit
per 8x8 patch. The caption enters by projection (Miyato & Koyama 2018): D's own caption
encoder gives a sentence vector e, and <embed(e), features(x)> is added to each patch logit.
Training is matching-aware (GAN-INT-CLS): a real image with another example's caption
counts as fake, so D must check the caption, not only realism.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from inpainting.models import layers, strided_conv
from inpainting.models.text_encoder import CaptionEncoder, learned_only

Batch = dict[str, jax.Array]


class ProjectionPatchDiscriminator(nnx.Module):
  """Spectrally normalised PatchGAN: 64 -> 32 -> 16 -> 8 px, then patch logits."""

  def __init__(self, model_config: ml_collections.ConfigDict, max_length: int, *, init):
    dtype = layers.compute_dtype(model_config)
    w0, w1, w2 = model_config.disc_widths
    impl = strided_conv.conv_impl(model_config)
    self.dtype = dtype
    # D learns its own embedding of the same ids even when G's encoder is pretrained: a
    # second copy of that encoder would cost more than the whole discriminator.
    self.text = CaptionEncoder(
      learned_only(model_config.text), model_config.vocab_size, max_length, init=init, dtype=dtype
    )
    self.convs = nnx.List(
      [
        layers.SNConv(4, w0, 4, stride=2, init=init, dtype=dtype, impl=impl),
        layers.SNConv(w0, w1, 4, stride=2, init=init, dtype=dtype, impl=impl),
        layers.SNConv(w1, w2, 4, stride=2, init=init, dtype=dtype, impl=impl),
        layers.SNConv(w2, w2, 3, stride=1, init=init, dtype=dtype),
      ]
    )
    self.to_logit = layers.SNConv(w2, 1, 3, stride=1, init=init, dtype=dtype)
    self.embed_caption = layers.SNDense(
      model_config.text.width, w2, use_bias=False, init=init, dtype=dtype
    )

  def features(self, image: jax.Array, mask: jax.Array, update_stats: bool) -> list[jax.Array]:
    """Image features after each conv; the last [N, 8, 8, w2] feeds `score`.

    Args:
      image: [N, 64, 64, 3] composited or real images; mask: [N, 64, 64, 1].
      update_stats: advance the spectral-norm power iteration (True only in D's update).
    """
    h = jnp.concatenate([image, mask], axis=-1).astype(self.dtype)
    features = []
    for conv in self.convs:
      h = nnx.leaky_relu(conv(h, update_stats), 0.2)
      features.append(h)
    return features

  def score(
    self, h: jax.Array, tokens: jax.Array, token_mask: jax.Array, update_stats: bool
  ) -> jax.Array:
    """Patch logits [N, 8, 8] (float32): unconditional logit + caption projection."""
    _, sentence = self.text(tokens, token_mask)
    embedded = self.embed_caption(sentence, update_stats)
    projection = jnp.sum(
      h.astype(jnp.float32) * embedded.astype(jnp.float32)[:, None, None, :], axis=-1
    )
    return self.to_logit(h, update_stats)[..., 0].astype(jnp.float32) + projection

  def __call__(
    self,
    image: jax.Array,
    mask: jax.Array,
    tokens: jax.Array,
    token_mask: jax.Array,
    update_stats: bool,
  ) -> tuple[jax.Array, list[jax.Array]]:
    """Scores image-caption pairs: (float32 patch logits [N, 8, 8], features)."""
    features = self.features(image, mask, update_stats)
    return self.score(features[-1], tokens, token_mask, update_stats), features


def mismatched_captions(tokens: jax.Array, token_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each example's caption replaced by the previous example's (a roll by one).

  With a batch of at least two, example i gets the caption of example i - 1, never its own
  index; identical caption strings in one batch are possible and simply count as wrong.
  """
  return jnp.roll(tokens, 1, axis=0), jnp.roll(token_mask, 1, axis=0)


def matching_aware_batch(batch: Batch, fake: jax.Array, with_mismatch: bool = True) -> Batch:
  """The discriminator's input for one D update, stacked along the batch axis.

  Segments, each of the batch size B:
    0  real image, its own caption       -> real
    1  generated (composited) image, its own caption -> fake
    2  real image, a mismatched caption (`mismatched_captions`) -> fake
  Segment 2 is left out when `with_mismatch` is False. Segment 2's images are segment
  0's, so a D update may compute their features once and score them twice.

  Returns:
    dict with image [S*B, 64, 64, 3], mask [S*B, 64, 64, 1], tokens and token_mask [S*B, L].
  """
  wrong_tokens, wrong_mask = mismatched_captions(batch["tokens"], batch["token_mask"])
  images = [batch["image"], fake.astype(batch["image"].dtype)]
  tokens = [batch["tokens"], batch["tokens"]]
  token_masks = [batch["token_mask"], batch["token_mask"]]
  if with_mismatch:
    images.append(batch["image"])
    tokens.append(wrong_tokens)
    token_masks.append(wrong_mask)
  segments = len(images)
  return {
    "image": jnp.concatenate(images, axis=0),
    "mask": jnp.concatenate([batch["mask"]] * segments, axis=0),
    "tokens": jnp.concatenate(tokens, axis=0),
    "token_mask": jnp.concatenate(token_masks, axis=0),
  }
