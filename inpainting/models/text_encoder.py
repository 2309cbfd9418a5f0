"""Caption encoder and conditioning augmentation.

Tokens (0 = padding) -> embeddings + learned positions (or a pretrained encoder's token
features, `text.pretrained`) -> a small pre-LN transformer -> per-word features (for
cross-attention) and a masked-mean sentence vector. Conditioning
augmentation (StackGAN, ChatPainter) maps the sentence vector to a Gaussian N(mu, sigma)
over a `cond_dim` condition; training draws c = mu + sigma * eps and pays
KL(N(mu, sigma) || N(0, 1)), which smooths the condition manifold for small caption sets.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from inpainting import pretrained
from inpainting.models import layers, minilm
from inpainting.models.layers import ParamInit

# Keeps sigma of the condition in a numerically safe range.
_LOG_SIGMA_RANGE = (-8.0, 4.0)
# sigma of the condition at initialisation: small, so the caption reaches the image
# networks from the first step; the KL to N(0, I) then widens it as far as it pays.
INITIAL_CONDITION_SIGMA = 0.1


class TransformerBlock(nnx.Module):
  """Pre-LN block: x + attn(LN(x)); x + MLP(LN(x))."""

  def __init__(self, width: int, num_heads: int, mlp_ratio: int, *, init: ParamInit, dtype):
    self.norm1 = layers.LayerNorm(width, init=init)
    self.attn = layers.SelfAttention(width, num_heads, init=init, dtype=dtype)
    self.norm2 = layers.LayerNorm(width, init=init)
    self.mlp_in = layers.Dense(width, mlp_ratio * width, init=init, dtype=dtype)
    self.mlp_out = layers.Dense(mlp_ratio * width, width, init=init, dtype=dtype)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x), mask)
    return x + self.mlp_out(nnx.gelu(self.mlp_in(self.norm2(x))))


# Pretrained token encoders a caption encoder can start from (`text.pretrained`): name ->
# its module (`vocab_path()`: the vocabulary a run copies as its tokenizer;
# `load_encoder(dtype, weight=...)`; `WIDTH`: its feature width).
PRETRAINED = {"minilm": minilm}


def pretrained_module(text_config: ml_collections.ConfigDict | None):
  """The module of `text.pretrained` (a `PRETRAINED` value); None without one (or without
  a caption encoder, or for configs saved before the knob).

  Raises:
    ValueError: (one line) an unknown name.
  """
  name = text_config.get("pretrained", "") if text_config is not None else ""
  if name and name not in PRETRAINED:
    choices = ", ".join(["''", *PRETRAINED])
    raise ValueError(f"model.text.pretrained must be one of {choices}, got {name!r}")
  return PRETRAINED[name] if name else None


def pretrained_vocab(model_config: ml_collections.ConfigDict) -> str | None:
  """The vocabulary file of the config's pretrained caption encoder; None without one.

  Raises:
    ValueError: (one line) an unknown encoder.
    UserError: the encoder's package is not installed.
  """
  module = pretrained_module(model_config.get("text"))
  return module.vocab_path() if module else None


def learned_only(text_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`text_config` with no pretrained encoder (embeddings learned over the same ids)."""
  text_config = ml_collections.ConfigDict(text_config.to_dict())
  text_config.pretrained = ""
  return text_config


class CaptionEncoder(nnx.Module):
  """Token ids -> (word features [B, L, width], float32 sentence vector [B, width]).

  The tokens enter as learned embeddings plus learned positions, or, with
  `text.pretrained = "minilm"`, as all-MiniLM-L6-v2's token features (WordPiece ids; frozen
  unless `text.finetune_pretrained`) through a learned Dense to `width`. Either way
  `text.depth` trainable blocks follow.
  """

  def __init__(
    self,
    text_config: ml_collections.ConfigDict,
    vocab_size: int,
    max_length: int,
    *,
    init: ParamInit,
    dtype=jnp.float32,
  ):
    if vocab_size <= 0:
      raise ValueError("config.model.vocab_size is 0: the trainer fills it from the tokenizer")
    width = text_config.width
    self.dtype = dtype
    module = pretrained_module(text_config)
    if module is not None:
      trainable = text_config.get("finetune_pretrained", False)
      weight = nnx.Param if trainable else pretrained.PretrainedWeight
      self.pretrained = module.load_encoder(dtype, weight=weight)
      self.pretrained_to_width = layers.Dense(module.WIDTH, width, init=init, dtype=dtype)
      self.embed = self.positions = None
    else:
      self.embed = layers.Embed(vocab_size, width, init=init)
      self.positions = init.normal((max_length, width), 0.02)
      self.pretrained = self.pretrained_to_width = None
    # Learned part embeddings (0 = context caption, t = turn t; later turns share the
    # last), or None. Runs saved before the knob existed have none.
    num_segments = text_config.get("num_segments", 0)
    self.segment_table = init.normal((num_segments, width), 0.02) if num_segments else None
    self.blocks = nnx.List(
      [
        TransformerBlock(
          width, text_config.num_heads, text_config.mlp_ratio, init=init, dtype=dtype
        )
        for _ in range(text_config.depth)
      ]
    )
    self.final_norm = layers.LayerNorm(width, init=init)

  def __call__(
    self, tokens: jax.Array, token_mask: jax.Array, segments: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """segments: int [B, L] each token's part (batch["segments"]); None = all part 0.
    Read only with a segment table."""
    length = tokens.shape[1]
    if self.pretrained is not None:
      features, _ = self.pretrained(tokens, token_mask)
      x = self.pretrained_to_width(features)
    else:
      x = self.embed(tokens) + self.positions[:length]
    if self.segment_table is not None:
      table = self.segment_table[...]
      if segments is None:
        segments = jnp.zeros_like(tokens)
      x = x + table[jnp.minimum(segments, table.shape[0] - 1)]
    x = x.astype(self.dtype)
    for block in self.blocks:
      x = block(x, token_mask)
    words = self.final_norm(x)
    # Masked mean; the safe denominator gives the empty caption a zero vector, not NaN.
    weights = token_mask.astype(jnp.float32)[..., None]
    total = jnp.sum(words.astype(jnp.float32) * weights, axis=1)
    sentence = total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
    return words, sentence


class Condition(NamedTuple):
  """What the image networks receive from a caption.

  Attributes:
    vector: [B, cond_dim] the condition c (a sample, or mu when deterministic).
    words: [B, L, width] per-word features for cross-attention.
    word_mask: bool [B, L] True for real tokens.
    mu, log_sigma: float32 [B, cond_dim] the conditioning-augmentation Gaussian.
  """

  vector: jax.Array
  words: jax.Array
  word_mask: jax.Array
  mu: jax.Array
  log_sigma: jax.Array


class CaptionConditioner(nnx.Module):
  """CaptionEncoder + conditioning augmentation (sentence -> mu, log sigma -> c)."""

  def __init__(self, model_config: ml_collections.ConfigDict, max_length: int, *, init, dtype):
    text = model_config.text
    self.encoder = CaptionEncoder(text, model_config.vocab_size, max_length, init=init, dtype=dtype)
    # mu starts as a random projection of the sentence, sigma at INITIAL_CONDITION_SIGMA.
    self.to_gaussian = layers.gaussian_head(
      text.width, text.cond_dim, init=init, initial_sigma=INITIAL_CONDITION_SIGMA
    )

  def __call__(
    self,
    tokens: jax.Array,
    token_mask: jax.Array,
    key: jax.Array | None,
    segments: jax.Array | None = None,
  ) -> Condition:
    """Encodes a caption batch.

    Args:
      tokens, token_mask: the batch's caption ids and validity mask.
      key: draws c = mu + sigma * eps in training; None returns c = mu. Sampling uses
        mu: the caption then fixes the condition and diversity comes from z alone.
      segments: each token's part of a conversation (read with `text.num_segments`).
    """
    words, sentence = self.encoder(tokens, token_mask, segments)
    mu, log_sigma = jnp.split(self.to_gaussian(sentence), 2, axis=-1)
    log_sigma = jnp.clip(log_sigma, *_LOG_SIGMA_RANGE)
    vector = mu
    if key is not None:
      vector = mu + jnp.exp(log_sigma) * jax.random.normal(key, mu.shape, mu.dtype)
    return Condition(vector, words, token_mask, mu, log_sigma)


def null_condition(
  batch_size: int, length: int, cond_dim: int, width: int, dtype=jnp.float32
) -> Condition:
  """The all-zero condition used when captions are switched off (`model.use_caption`).

  Args:
    batch_size, length: the caption batch's shape.
    cond_dim, width: `config.model.text.cond_dim` and `.width`.
  """
  zeros = jnp.zeros((batch_size, cond_dim), jnp.float32)
  return Condition(
    vector=zeros,
    words=jnp.zeros((batch_size, length, width), dtype),
    word_mask=jnp.zeros((batch_size, length), bool),
    mu=zeros,
    log_sigma=zeros,
  )
