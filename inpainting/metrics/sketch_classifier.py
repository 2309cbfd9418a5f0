"""A small sketch classifier: the measurement that replaces judging drawings by eye.

    python -m inpainting.metrics.sketch_classifier --data_dir=D --out=classifier.npz
        [--steps=2000] [--batch_size=64] [--seed=0]

trains on the train split of a prepared folder of labelled drawings (the quickdraw or
sketchrnn sources store each record's class word as its `label`), with augmentation
applied on the fly to the bitmaps (random rotation, per-axis scale, shift and horizontal
flip, resampled bilinearly), and reports on the validation split (real drawings it never
saw): accuracy, the ceiling of every figure it gives about generated drawings, and the
recognisable rate, the fraction classified into a training class with probability >=
RECOGNISABLE (0.5). `inpainting.explore` uses it to score samples, z-switches and
interpolation paths.

Besides the C classes of the data it has one more output, OTHER ("not a drawing of any
class"), trained on generated non-drawings mixed into every batch (NEGATIVE_FRACTION of
it): blank paper with faint noise, salt noise, random scribbles of 1 to 6 straight
strokes, 3 to 12 short fragments scattered over the page, and soft grey blobs. Without it
a softmax over the C classes has to call anything a class: a classifier without OTHER put
blank pages into one class with probability >= 0.5, so a model that draws nothing would
have scored 100 % recognisable.

The network: grey ink (1 - mean RGB) / 2, folded by space-to-depth to 32x32x4 -> 3x3
convs with GroupNorm + ReLU, stride 2 down to 4x4 -> global mean -> a dense layer per
class. About 0.1 M parameters; on the shared 2-core CPU a step of batch 64 takes about
70 ms, so the default 2000 steps take about 3 minutes.

Storage: one `.npz` file with every parameter under "param/<path>" and the metadata (class
words, widths, training settings, validation figures) as UTF-8 JSON in "meta". Read back
with `np.load(allow_pickle=False)`: no pickle, so a classifier file from elsewhere cannot
run code. A classifier belongs to a data set's class list, not to a training run, is
small and never resumed, so one self-describing file is easier to pass around (`--out`,
explore's `--classifier`) than an orbax checkpoint folder; it is written to a temporary
name and renamed, so a half-written file never appears.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from inpainting import images, records
from inpainting.errors import UserError
from inpainting.models import layers

FORMAT = "inpainting.sketch_classifier/1"
RECOGNISABLE = 0.5  # Recognisable: a training class (not OTHER) with at least this probability.
OTHER = "(not a drawing of any class)"  # The extra output's name in reports.
NEGATIVE_FRACTION = 0.25  # Share of each training batch that is generated non-drawings.
WIDTHS = (16, 32, 64, 128)  # Channels at 32, 16, 8, 4 px (after folding 64 -> 32 px).
FOLD = 2  # Space-to-depth factor: no layer at 64x64 (slow on XLA:CPU, as in the generator).
# Augmentation ranges (uniform), in degrees, scale factors and pixels.
ROTATION, SCALE, SHIFT = 12.0, 0.15, 4.0


# --- data ---------------------------------------------------------------------------------------


def read_examples(data_dir: str, split: str) -> list[records.Example]:
  """Every record of one split of a prepared folder, in record order."""
  from array_record.python.array_record_module import ArrayRecordReader  # noqa: PLC0415

  paths = records.shard_paths(data_dir, split)
  if not paths:
    raise UserError(f"{data_dir} has no {split} records (is it a prepared folder?)")
  out = []
  for path in paths:
    reader = ArrayRecordReader(path, "readahead_buffer_size:0")
    try:
      out.extend(records.decode(r) for r in reader.read_all())
    finally:
      reader.close()
  return out


def labelled(examples: Sequence[records.Example], classes: Sequence[str]):
  """(uint8 pixels [N, 64, 64, 3], int labels [N]) of the examples whose label is a class."""
  index = {c: i for i, c in enumerate(classes)}
  kept = [e for e in examples if e.label in index]
  pixels = np.stack([e.image for e in kept]) if kept else np.zeros((0, 64, 64, 3), np.uint8)
  return pixels, np.array([index[e.label] for e in kept], np.int32)


def to_ink(images_float: jax.Array) -> jax.Array:
  """[-1, 1] RGB [B, 64, 64, 3] -> ink [B, 64, 64, 1] in [0, 1] (white paper = 0)."""
  return (1.0 - jnp.mean(images_float, axis=-1, keepdims=True)) / 2.0


def augment(ink: jax.Array, key: jax.Array) -> jax.Array:
  """Random rotation, per-axis scale, shift and horizontal flip of ink [B, H, W, 1]."""
  b, h, w, _ = ink.shape
  keys = jax.random.split(key, 5)
  angle = jnp.deg2rad(jax.random.uniform(keys[0], (b,), minval=-ROTATION, maxval=ROTATION))
  scale = 1.0 + jax.random.uniform(keys[1], (b, 2), minval=-SCALE, maxval=SCALE)
  shift = jax.random.uniform(keys[2], (b, 2), minval=-SHIFT, maxval=SHIFT)
  flip = jnp.where(jax.random.bernoulli(keys[3], 0.5, (b,)), -1.0, 1.0)
  rows, cols = jnp.mgrid[0:h, 0:w].astype(jnp.float32)
  cy, cx = (h - 1) / 2, (w - 1) / 2

  def one(image, angle, scale, shift, flip):
    # Output pixel -> input pixel: undo shift, rotation, then scale (and the flip).
    y, x = rows - cy - shift[0], cols - cx - shift[1]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    xr, yr = cos * x + sin * y, -sin * x + cos * y
    src = [yr / scale[0] + cy, flip * xr / scale[1] + cx]
    return jax.scipy.ndimage.map_coordinates(image[..., 0], src, order=1, cval=0.0)[..., None]

  return jax.vmap(one)(ink, angle, scale, shift, flip)


def negatives(key: jax.Array, count: int, size: int = 64) -> jax.Array:
  """`count` generated non-drawings, ink [count, size, size, 1]: blank paper with faint
  noise, salt noise, scribbles of 1-6 random straight strokes, 3-12 short scattered
  fragments, or a soft grey blob."""
  keys = jax.random.split(key, 13)
  rows, cols = jnp.mgrid[0:size, 0:size].astype(jnp.float32)
  pixel = jnp.stack([cols, rows], -1)[None, None]  # [1, 1, H, W, 2]
  faint = jax.random.uniform(keys[0], (count, size, size)) * jax.random.uniform(
    keys[1], (count, 1, 1), maxval=0.05
  )
  density = jax.random.uniform(keys[2], (count, 1, 1), minval=0.01, maxval=0.3)
  salt = (jax.random.uniform(keys[3], (count, size, size)) < density).astype(jnp.float32)

  def strokes(starts, offsets, used):  # Anti-aliased segments [count, S, 2] -> [count, H, W].
    a, d = starts[:, :, None, None], offsets[:, :, None, None]
    t = jnp.clip(((pixel - a) * d).sum(-1) / jnp.maximum((d**2).sum(-1), 1e-6), 0.0, 1.0)
    distance = jnp.sqrt(((pixel - a - t[..., None] * d) ** 2).sum(-1))  # [count, S, H, W]
    distance = jnp.where(used[:, :, None, None], distance, jnp.inf).min(1)
    return jnp.clip(1.25 - distance, 0.0, 1.0)

  ends = jax.random.uniform(keys[4], (count, 6, 2, 2), minval=4.0, maxval=size - 5.0)
  used = jnp.arange(6)[None] < jax.random.randint(keys[5], (count, 1), 1, 7)
  scribble = strokes(ends[:, :, 0], ends[:, :, 1] - ends[:, :, 0], used)
  # Fragments: 3-12 strokes of 1-6 px scattered over the page, as an untrained generator draws.
  starts = jax.random.uniform(keys[10], (count, 12, 2), minval=4.0, maxval=size - 5.0)
  offsets = jax.random.uniform(keys[11], (count, 12, 2), minval=-6.0, maxval=6.0)
  used = jnp.arange(12)[None] < jax.random.randint(keys[12], (count, 1), 3, 13)
  fragments = strokes(starts, offsets, used)
  centre = jax.random.uniform(keys[6], (count, 1, 1, 2), minval=16.0, maxval=size - 16.0)
  half = jax.random.uniform(keys[7], (count, 1, 1, 2), minval=6.0, maxval=24.0)
  level = jax.random.uniform(keys[8], (count, 1, 1), minval=0.1, maxval=0.7)
  outside = jnp.max(jnp.abs(pixel[0] - centre) - half, axis=-1)  # < 0 inside the box
  blob = level * jnp.clip(0.5 - outside / 4.0, 0.0, 1.0)
  kind = jax.random.randint(keys[9], (count, 1, 1), 0, 5)
  ink = jnp.select(
    [kind == 0, kind == 1, kind == 2, kind == 3], [faint, salt, scribble, fragments], blob
  )
  return ink[..., None]


# --- the network ----------------------------------------------------------------------------


class SketchClassifier(nnx.Module):
  """Ink [B, 64, 64, 1] -> logits [B, num_outputs] (the data's classes, then OTHER)."""

  def __init__(self, num_outputs: int, widths: Sequence[int] = WIDTHS, seed: int = 0):
    init = layers.ParamInit(nnx.Rngs(seed))
    widths = tuple(widths)
    self.stem = layers.Conv(FOLD * FOLD, widths[0], 3, init=init)
    self.downs = nnx.List(
      [layers.Conv(a, b, 3, stride=2, init=init) for a, b in zip(widths[:-1], widths[1:])]
    )
    self.norms = nnx.List([layers.GroupNorm(c, init=init) for c in widths[1:]])
    self.head = layers.Dense(widths[-1], num_outputs, init=init)
    init.finish()

  def __call__(self, ink: jax.Array) -> jax.Array:
    h = nnx.relu(self.stem(layers.space_to_depth(ink, FOLD)))
    for down, norm in zip(self.downs, self.norms):
      h = nnx.relu(norm(down(h)))
    return self.head(jnp.mean(h, axis=(1, 2)))


@dataclasses.dataclass
class Classifier:
  """A trained classifier and what it knows: its class words and metadata.

  Its outputs are `classes` in order, then OTHER (index len(classes))."""

  model: SketchClassifier
  classes: list[str]
  meta: dict[str, Any]

  def probabilities(self, images_float: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities [N, C + 1] (the C classes, then OTHER) of images in [-1, 1],
    [N, 64, 64, 3] (any leading shape [..., 64, 64, 3] is kept: [..., C + 1])."""
    array = np.asarray(images_float, np.float32)
    lead = array.shape[:-3]
    flat = array.reshape(-1, *array.shape[-3:])
    graphdef, state = nnx.split(self.model)
    out = [
      np.asarray(_predict(graphdef, state, jnp.asarray(flat[i : i + batch_size])))
      for i in range(0, len(flat), batch_size)
    ]
    outputs = len(self.classes) + 1
    probs = np.concatenate(out) if out else np.zeros((0, outputs), np.float32)
    return probs.reshape(*lead, outputs)

  def index(self, word: str) -> int:
    if word not in self.classes:
      raise UserError(f"class {word!r} is not one of the classifier's: {', '.join(self.classes)}")
    return self.classes.index(word)


@functools.partial(jax.jit, static_argnums=0)
def _predict(graphdef, state, images_float):
  return jax.nn.softmax(nnx.merge(graphdef, state)(to_ink(images_float)), axis=-1)


# --- training and scoring --------------------------------------------------------------------


def recognisable(probs: np.ndarray) -> np.ndarray:
  """bool [...]: classified into a training class (not OTHER) with probability >=
  RECOGNISABLE, for probabilities [..., C + 1]."""
  return np.asarray(probs)[..., :-1].max(-1) >= RECOGNISABLE


def scores(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
  """accuracy (OTHER counts as wrong), recognisable_rate, per-class accuracy and the
  confusion matrix (rows: true class, columns: predicted, OTHER last) of probabilities
  [N, C + 1]."""
  predicted = probs.argmax(-1)
  confusion = np.zeros((len(classes), len(classes) + 1), np.int64)
  np.add.at(confusion, (labels, predicted), 1)
  per_class = {
    c: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None
    for i, c in enumerate(classes)
  }
  return {
    "count": len(labels),
    "accuracy": float(np.mean(predicted == labels)) if len(labels) else None,
    "recognisable_rate": float(np.mean(recognisable(probs))) if len(labels) else None,
    "per_class_accuracy": per_class,
    "confusion": confusion.tolist(),
  }


def train(
  data_dir: str,
  *,
  steps: int = 2000,
  batch_size: int = 64,
  learning_rate: float = 2e-3,
  weight_decay: float = 1e-4,
  seed: int = 0,
  widths: Sequence[int] = WIDTHS,
  log: Callable[[str], None] | None = None,
) -> Classifier:
  """Trains on `data_dir`'s train split, scores its validation split (in `meta`).

  Raises:
    UserError: records without labels, or fewer than two classes.
  """
  train_examples = read_examples(data_dir, "train")
  classes = sorted({e.label for e in train_examples if e.label is not None})
  if len(classes) < 2:
    raise UserError(
      f"{data_dir}: a classifier needs labelled drawings of at least two classes "
      f"(found {classes or 'no labels'}; prepare with --source=quickdraw or sketchrnn)"
    )
  pixels, labels = labelled(train_examples, classes)
  model = SketchClassifier(len(classes) + 1, widths, seed)
  num_negatives = max(1, round(NEGATIVE_FRACTION * batch_size))
  schedule = optax.cosine_decay_schedule(learning_rate, steps)
  optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=weight_decay), wrt=nnx.Param)
  rng = np.random.default_rng(seed)
  key = jax.random.PRNGKey(seed)
  start = time.perf_counter()
  order = rng.permutation(len(labels))
  position = 0
  for step in range(1, steps + 1):
    if position + batch_size > len(order):
      order, position = rng.permutation(len(labels)), 0
    take = order[position : position + batch_size] if batch_size <= len(order) else order
    position += len(take)
    batch = jnp.asarray(images.to_float(pixels[take]))
    loss, accuracy = _train_step(
      model,
      optimizer,
      batch,
      jnp.asarray(labels[take]),
      jax.random.fold_in(key, step),
      num_negatives,
      len(classes),
    )
    if log and (step % max(steps // 10, 1) == 0 or step == steps):
      log(
        f"step {step}/{steps}: loss {float(loss):.3f}, train batch accuracy "
        f"{float(accuracy):.2f} ({time.perf_counter() - start:.0f} s)"
      )
  classifier = Classifier(model, classes, {})
  val_pixels, val_labels = labelled(read_examples(data_dir, "validation"), classes)
  validation = scores(classifier.probabilities(images.to_float(val_pixels)), val_labels, classes)
  # Fresh non-drawings (a key training never used): how many are called a class.
  junk = np.asarray(negatives(jax.random.PRNGKey(seed + 1_000_003), 256))
  junk_probs = classifier.probabilities(1.0 - 2.0 * np.repeat(junk, 3, axis=-1))
  validation["negatives_recognisable_rate"] = float(np.mean(recognisable(junk_probs)))
  classifier.meta = {
    "format": FORMAT,
    "classes": classes,
    "widths": list(widths),
    "data_dir": os.path.abspath(data_dir),
    "train_examples": len(labels),
    "steps": steps,
    "batch_size": batch_size,
    "learning_rate": learning_rate,
    "weight_decay": weight_decay,
    "seed": seed,
    "augmentation": {"rotation_degrees": ROTATION, "scale": SCALE, "shift_px": SHIFT, "flip": True},
    "negative_fraction": NEGATIVE_FRACTION,
    "train_seconds": round(time.perf_counter() - start, 1),
    "validation": validation,
  }
  return classifier


@functools.partial(nnx.jit, static_argnums=(5, 6))
def _train_step(model, optimizer, batch, labels, key, num_negatives, other):
  key_augment, key_negatives = jax.random.split(key)
  ink = jnp.concatenate(
    [augment(to_ink(batch), key_augment), negatives(key_negatives, num_negatives)], axis=0
  )
  labels = jnp.concatenate([labels, jnp.full((num_negatives,), other, labels.dtype)])

  def loss_fn(model):
    logits = model(ink)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, jnp.mean(logits.argmax(-1) == labels)

  (loss, accuracy), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  optimizer.update(model, grads)
  return loss, accuracy


# --- storage -------------------------------------------------------------------------------------


def save(path: str, classifier: Classifier) -> None:
  """Writes the classifier as one .npz (see the module docstring), atomically."""
  from inpainting import checkpointing  # noqa: PLC0415

  flat, _ = checkpointing.flatten(nnx.state(classifier.model, nnx.Param))
  arrays = {f"param/{k}": np.asarray(v) for k, v in flat.items()}
  meta = json.dumps(classifier.meta, ensure_ascii=False).encode("utf-8")
  arrays["meta"] = np.frombuffer(meta, np.uint8)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def load(path: str) -> Classifier:
  """Reads a file written by `save`.

  Raises:
    UserError: a missing file, or one that is not a classifier of this format.
  """
  from inpainting import checkpointing  # noqa: PLC0415

  if not os.path.isfile(path):
    raise UserError(f"no classifier file {path}")
  try:
    with np.load(path, allow_pickle=False) as data:
      meta = json.loads(bytes(data["meta"]).decode("utf-8"))
      flat = {k[len("param/") :]: data[k] for k in data.files if k.startswith("param/")}
  except (OSError, ValueError, KeyError) as error:
    raise UserError(f"{path} is not a sketch classifier ({error})") from None
  if meta.get("format") != FORMAT:
    raise UserError(f"{path} is not a sketch classifier (format {meta.get('format')!r})")
  model = SketchClassifier(len(meta["classes"]) + 1, meta["widths"])
  state = nnx.state(model, nnx.Param)
  expected, _ = checkpointing.flatten(state)
  if {k: v.shape for k, v in expected.items()} != {k: v.shape for k, v in flat.items()}:
    raise UserError(f"{path}: parameters do not match the classifier described in its metadata")
  nnx.update(model, checkpointing.unflatten({k: jnp.asarray(v) for k, v in flat.items()}, state))
  return Classifier(model, list(meta["classes"]), meta)


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str]) -> None:
  from absl import flags  # noqa: PLC0415

  from inpainting.logs import quiet_libraries  # noqa: PLC0415

  del argv
  FLAGS = flags.FLAGS
  quiet_libraries()
  try:
    out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
    if not os.path.isdir(out_dir):
      raise UserError(f"output folder {out_dir} does not exist")
    classifier = train(
      FLAGS.data_dir,
      steps=FLAGS.steps,
      batch_size=FLAGS.batch_size,
      seed=FLAGS.seed,
      log=lambda line: print(line, file=sys.stderr, flush=True),
    )
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  save(FLAGS.out, classifier)
  validation = classifier.meta["validation"]
  print(
    f"wrote {FLAGS.out}: {len(classifier.classes)} classes, held-out accuracy "
    f"{validation['accuracy']:.3f} on {validation['count']} real drawings, recognisable "
    f"{validation['recognisable_rate']:.3f} (generated non-drawings: "
    f"{validation['negatives_recognisable_rate']:.3f})",
    file=sys.stderr,
  )
  print(json.dumps({"classifier": FLAGS.out, "classes": classifier.classes, **validation}))


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_string("data_dir", None, "A prepared folder of labelled drawings.")
  flags.DEFINE_string("out", None, "The classifier file to write (.npz).")
  flags.DEFINE_integer("steps", 2000, "Training steps.")
  flags.DEFINE_integer("batch_size", 64, "Drawings per step.")
  flags.DEFINE_integer("seed", 0, "Parameters, batch order and augmentation.")
  flags.mark_flags_as_required(["data_dir", "out"])
  app.run(main)
