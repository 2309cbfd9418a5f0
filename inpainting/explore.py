"""Latent tools: unconditional samples, interpolation and z-switching, measured.

    python -m inpainting.explore sample      --workdir=W [--num=16] [--caption=""] --out=grid.png
    python -m inpainting.explore interpolate --workdir=W [--class_a=cat --class_b=sheep]
        [--caption_a=... --caption_b=...] [--num=4] [--steps=9] [--mask=...] --out=grid.png
    python -m inpainting.explore switch      --workdir=W [--class_a=cat --class_b=sheep]
        [--caption_b=...] [--num=5] [--samples=4] [--mask=center|box:x,y,w,h] --out=grid.png

Common flags: --data_dir (default: the run's data), --split (validation), --step, --seed,
--classifier (a file from `python -m inpainting.metrics.sketch_classifier`), and
--metrics_out (the figures as JSON; they are also printed as one JSON line).

Modes (each needs the family hooks it names; a family without them gets a one-line error):
  sample       `sample`: K completions of an all-hole image (mask `full`) under --caption
               (default "": no caption), z from the learned prior. One grid of samples.
  interpolate  per example of class A (or the first examples), two rows: `interpolate`,
               z moving between two prior draws (a variance-preserving path, every frame a
               draw the prior could make) under caption A; and `interpolate_caption`, the
               condition moving from caption A to caption B with the noise held fixed.
  switch       z-switching: a real example of class A, a region erased (--mask), completed
               under caption B in three ways: K draws from the prior (`sample`); z re-encoded
               by the posterior (`encode_posterior`) from the partial drawing (the erased
               region blank: white paper), then finished from that z (`complete_from_z`),
               as the original work re-encoded the partial drawing with B's model; and z
               re-encoded from the first prior completion. Row: A | A erased | K prior
               samples | from z(partial) | from z(completion) | under A's own caption.

Captions of classes: with labelled records (the sketch sources), --class_a / --class_b name
class words ("all" = every class of the data, every ordered pair) and each class's caption
is the first caption of its records ("a drawing of a cat"). Without labels (photos,
synthetic scenes) example i is switched to the first caption of the next example (its
"donor"), or to --caption_b.

Measurement, instead of eyeballing:
  * drawings (labelled data and --classifier): sample -> recognisable rate (top class
    probability >= 0.5) of the samples next to the same rate on the real held-out drawings,
    and the classifier's accuracy there (the ceiling); switch -> switch success: the
    fraction of completions classified as B whose kept border equals A's pixels exactly
    (and, for context, the rate at which the erased drawing alone and the completions under
    A's own caption are classified as B and A); interpolate -> along the caption path, the
    classifier's P(B) / (P(A) + P(B)) per frame: the fraction of paths on which it never
    goes back by more than 0.02, the excess variation (total variation minus |end - start|;
    0 = monotone) and the mean values at both ends.
  * synthetic scenes: switch success with the exact compliance matcher
    (inpainting/metrics/compliance.py): the centre object drawn is the donor caption's
    (shape, colour and size), border exact.

explore reads a run through `inference.load_run` and runs the family's functions through
`run.state_fn`; it names no family and imports neither the trainer nor grain.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
MODES = ("sample", "interpolate", "switch")
PAD = 2  # Pixels between grid tiles.
LABEL_WIDTH = 150  # Pixels of row labels on the left of a grid.
# A path counts as monotone when no frame-to-frame step goes back by more than this.
MONOTONE_TOLERANCE = 0.02


def define_flags() -> None:
  """Defined only when run as a program, so importing this module adds no global flags."""
  flags.DEFINE_string("workdir", None, "A trained run's workdir.")
  flags.DEFINE_string("out", None, "Output PNG path.")
  flags.DEFINE_string(
    "data_dir", None, "Prepared folder to take examples from (default: the run's)."
  )
  flags.DEFINE_string("split", "validation", "Split to take examples from.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer(
    "num", None, "sample: samples (16); interpolate, switch: examples per class."
  )
  flags.DEFINE_integer("samples", 4, "switch: prior completions per example.")
  flags.DEFINE_integer("steps", 9, "interpolate: frames per path, ends included.")
  flags.DEFINE_string(
    "mask", None, "interpolate, switch: center | box:x,y,w,h (default: the run's)."
  )
  flags.DEFINE_string("caption", "", "sample: the caption ('' = unconditional).")
  flags.DEFINE_string("class_a", None, "Class word(s) of the examples, comma-separated, or 'all'.")
  flags.DEFINE_string("class_b", None, "Class word(s) to switch/interpolate to, or 'all'.")
  flags.DEFINE_string("caption_a", None, "interpolate: start caption (default: class A's).")
  flags.DEFINE_string("caption_b", None, "interpolate, switch: target caption (default: B's).")
  flags.DEFINE_string("classifier", None, "A sketch classifier file (.npz) for the figures.")
  flags.DEFINE_string("metrics_out", None, "Also write the figures to this JSON file.")
  flags.DEFINE_integer("grid_rows", 24, "Most rows drawn in the PNG (all are measured).")


# --- running a family's functions --------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _jitted(graphdef, hook, hparams, array_keys: tuple[str, ...], static: tuple):
  """hook(bundle, batch, rng, *batch[array_keys], *static, hparams), pure and jitted."""
  import jax  # noqa: PLC0415

  from inpainting import run as run_layout  # noqa: PLC0415

  def call(bundle, batch, rng):
    rest = {k: v for k, v in batch.items() if k not in array_keys}
    return hook(bundle, rest, rng, *(batch[k] for k in array_keys), *static, hparams)

  return jax.jit(run_layout.state_fn(graphdef, call))


def call_hook(
  run, name: str, batch: dict, seed: int, arrays: dict | None = None, static: tuple = ()
) -> np.ndarray:
  """Runs the family's hook `name` on a host batch; UserError if the family has none."""
  import jax  # noqa: PLC0415

  from inpainting.errors import UserError  # noqa: PLC0415

  hook = getattr(run.family, name, None)
  if hook is None:
    raise UserError(
      f"model {run.config.model.name!r} has no latent z to explore (its family defines no {name})"
    )
  second = ("tokens_b", "token_mask_b", "segments_b")
  keys = [k for k in (*run.family.batch.device_keys, *second) if k in batch]
  device = {k: jax.numpy.asarray(batch[k]) for k in keys}
  arrays = {k: jax.numpy.asarray(v) for k, v in (arrays or {}).items()}
  fn = _jitted(run.graphdef, hook, run.hparams, tuple(arrays), static)
  return np.asarray(fn(run.state, {**device, **arrays}, jax.random.PRNGKey(seed)))


def make_batch(
  run, pixels: np.ndarray, mask: np.ndarray, captions: Sequence[str], captions_b=None
) -> dict[str, np.ndarray]:
  """A host batch of B images (uint8 [B, 64, 64, 3]), holes ([B, 64, 64, 1]) and captions,
  tokenised as the run was; `captions_b` fills tokens_b / token_mask_b (and segments_b
  for a family that reads the parts of a conversation text)."""
  from inpainting import batching, records  # noqa: PLC0415

  length = run.config.data.max_caption_length
  for caption in {*captions, *(captions_b or ())}:
    used = int(run.tokenizer.encode([caption], 4 * length)[1].sum())
    if used > length:
      logging.warning(
        "caption %r is %d tokens, over the run's max_caption_length %d: its end is cut off",
        caption,
        used,
        length,
      )
  examples = [records.Example(str(i), p, [c]) for i, (p, c) in enumerate(zip(pixels, captions))]
  batch = batching.assemble(
    examples, pixels, mask, list(captions), run.tokenizer, length, run.family.batch
  )
  if captions_b is not None:
    second = batching.tokenize(list(captions_b), run.tokenizer, length, run.family.batch)
    batch.update({f"{key}_b": value for key, value in second.items()})
  return batch


# --- data ---------------------------------------------------------------------------------------


class Data:
  """The examples of one split, with what explore needs to know about them."""

  def __init__(self, data_dir: str, split: str):
    from inpainting.metrics import sketch_classifier  # noqa: PLC0415

    self.examples = sketch_classifier.read_examples(data_dir, split)
    self.labelled = all(e.label is not None for e in self.examples)
    self.scenes = all(e.scene is not None for e in self.examples)
    self.classes = sorted({e.label for e in self.examples}) if self.labelled else []
    self._captions = {}
    if self.labelled:
      for e in self.examples:
        self._captions.setdefault(e.label, e.captions[0])

  def caption_of(self, word: str) -> str:
    """The canonical caption of a class: the first caption of its first record."""
    from inpainting.errors import UserError  # noqa: PLC0415

    if word not in self._captions:
      raise UserError(f"no class {word!r} in the data; classes: {', '.join(self.classes)}")
    return self._captions[word]

  def class_of_caption(self, caption: str) -> str | None:
    return next((w for w, c in self._captions.items() if c == caption), None)

  def of_class(self, word: str, count: int) -> list:
    self.caption_of(word)
    return [e for e in self.examples if e.label == word][:count]

  def words(self, spec: str | None) -> list[str]:
    """Class words of a --class_a / --class_b value ('all' or None = every class)."""
    if spec in (None, "", "all"):
      return list(self.classes)
    words = [w.strip() for w in spec.split(",") if w.strip()]
    for w in words:
      self.caption_of(w)
    return words


def _resolve_data_dir(config, workdir: str, data_dir: str | None) -> str:
  from inpainting.errors import UserError  # noqa: PLC0415

  folder = data_dir or config.data.dir or os.path.join(workdir, "data")
  if not os.path.isfile(os.path.join(folder, "metadata.json")):
    raise UserError(f"{folder} is not a prepared dataset (pass --data_dir)")
  return folder


def _hole(run, spec: str | None, count: int) -> np.ndarray:
  """[count, 64, 64, 1] masks of --mask (default: the run's mask; random boxes -> center)."""
  from inpainting import masks  # noqa: PLC0415
  from inpainting.errors import UserError  # noqa: PLC0415

  spec = spec or run.config.data.mask
  if spec == "random_box":
    spec = "center"
  try:
    return masks.make_batch(masks.parse(spec), count)
  except ValueError as error:
    raise UserError(str(error)) from None


# --- scoring ------------------------------------------------------------------------------------


def border_exact(completions: np.ndarray, pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Whether each completion [..., B, 64, 64, 3] in [-1, 1] keeps the uint8 pixels of its
  input [B, 64, 64, 3] exactly outside the hole: bool [..., B]."""
  from inpainting import images  # noqa: PLC0415

  kept = np.broadcast_to(mask[..., 0] < 0.5, pixels.shape[:3])
  same = (images.to_uint8(completions) == pixels).all(-1)  # [..., B, H, W]
  return (same | ~kept).all((-2, -1))


def _rate(values) -> float | None:
  values = np.asarray(values, np.float64)
  return float(values.mean()) if values.size else None


def monotonicity(path: np.ndarray) -> dict[str, float]:
  """Paths [P, F] of P(B) / (P(A) + P(B)): the fraction that never go back towards A by more
  than MONOTONE_TOLERANCE in a step, the mean excess variation (total variation minus
  |end - start|; 0 for a monotone path, either way), and the mean start and end values (a
  flat path is monotone too: read it with how far it moved)."""
  steps = np.diff(path, axis=-1)
  excess = np.abs(steps).sum(-1) - np.abs(path[:, -1] - path[:, 0])
  return {
    "monotone_rate": _rate((steps >= -MONOTONE_TOLERANCE).all(-1)),
    "excess_variation": _rate(excess),
    "start_mean": _rate(path[:, 0]),
    "end_mean": _rate(path[:, -1]),
  }


# --- modes -----------------------------------------------------------------------------------------


def sample_mode(run, data: Data, classifier, *, num: int, caption: str, seed: int):
  """(grid rows, figures) of `num` samples with everything erased, under `caption`."""
  from inpainting import masks  # noqa: PLC0415

  white = np.full((1, 64, 64, 3), 255, np.uint8)
  batch = make_batch(run, white, masks.make_batch("full", 1), [caption])
  samples = run.sample(batch, num, seed)[:, 0]  # [num, 64, 64, 3]
  per_row = 8
  rows = [
    (f"sample {i + 1}-{min(i + per_row, num)}", list(samples[i : i + per_row]))
    for i in range(0, num, per_row)
  ]
  figures: dict[str, Any] = {"mode": "sample", "caption": caption, "num_samples": num}
  if classifier is not None and data.labelled:
    from inpainting.metrics import sketch_classifier  # noqa: PLC0415

    probs = classifier.probabilities(samples)
    figures["recognisable_rate"] = _rate(sketch_classifier.recognisable(probs))
    predicted = probs.argmax(-1)
    names = [*classifier.classes, sketch_classifier.OTHER]
    figures["predicted_classes"] = {c: int((predicted == i).sum()) for i, c in enumerate(names)}
    word = data.class_of_caption(caption)
    if word is not None and word in classifier.classes:
      figures["caption_class"] = word
      figures["caption_class_rate"] = _rate(predicted == classifier.index(word))
    figures["real"] = _real_scores(data, classifier)
  return rows, figures


def _real_scores(data: Data, classifier) -> dict[str, Any]:
  """The classifier on the real drawings of the split: its accuracy (the ceiling) and
  recognisable rate."""
  from inpainting import images  # noqa: PLC0415
  from inpainting.metrics import sketch_classifier  # noqa: PLC0415

  pixels, labels = sketch_classifier.labelled(data.examples, classifier.classes)
  probs = classifier.probabilities(images.to_float(pixels))
  found = sketch_classifier.scores(probs, labels, classifier.classes)
  return {k: found[k] for k in ("count", "accuracy", "recognisable_rate")}


def _pairs(data: Data, class_a, class_b, caption_b) -> list[tuple[str | None, str | None]]:
  """(class A, class B) pairs for labelled data; [(None, None)] otherwise (donor captions)."""
  from inpainting.errors import UserError  # noqa: PLC0415

  if not data.labelled:
    if class_a or class_b:
      raise UserError("--class_a/--class_b need labelled records (the sketch sources)")
    return [(None, None)]
  if caption_b is not None:
    word_b = data.class_of_caption(caption_b)
    return [(a, word_b) for a in data.words(class_a) if a != word_b]
  pairs = [(a, b) for a in data.words(class_a) for b in data.words(class_b) if a != b]
  if not pairs:
    raise UserError("no pair of different classes to switch between")
  return pairs


def _examples_for(data: Data, word: str | None, num: int):
  from inpainting.errors import UserError  # noqa: PLC0415

  chosen = data.of_class(word, num) if word is not None else data.examples[:num]
  if not chosen:
    raise UserError(f"no examples{f' of class {word!r}' if word else ''} in the split")
  return chosen


def _captions_b(data: Data, chosen, word_b, caption_b) -> tuple[list[str], list]:
  """Target captions, and for donor captions the donor examples (else Nones)."""
  if caption_b is not None:
    return [caption_b] * len(chosen), [None] * len(chosen)
  if word_b is not None:
    return [data.caption_of(word_b)] * len(chosen), [None] * len(chosen)
  donors = chosen[1:] + chosen[:1] if len(chosen) > 1 else chosen
  return [d.captions[0] for d in donors], donors


def switch_mode(run, data: Data, classifier, *, pairs, num, samples, mask_spec, caption_b, seed):
  """(grid rows, figures) of z-switching every example of each pair."""
  from inpainting import images  # noqa: PLC0415

  rows, figures_by_pair = [], {}
  totals: dict[str, list] = {}
  for word_a, word_b in pairs:
    chosen = _examples_for(data, word_a, num)
    pixels = np.stack([e.image for e in chosen])
    mask = _hole(run, mask_spec, len(chosen))
    captions_b, donors = _captions_b(data, chosen, word_b, caption_b)
    own = [e.captions[0] for e in chosen]
    batch_b = make_batch(run, pixels, mask, captions_b)
    prior = run.sample(batch_b, samples, seed)  # [K, B, ...]
    # The partial drawing: the erased region blank (white paper), re-encoded under B.
    partial = np.where(mask > 0.5, np.uint8(255), pixels).astype(np.uint8)
    z_partial = call_hook(run, "encode_posterior", make_batch(run, partial, mask, captions_b), seed)
    from_partial = call_hook(run, "complete_from_z", batch_b, seed, {"z": z_partial[None]})
    first = images.to_uint8(prior[0])
    z_completed = call_hook(run, "encode_posterior", make_batch(run, first, mask, captions_b), seed)
    from_completed = call_hook(run, "complete_from_z", batch_b, seed, {"z": z_completed[None]})
    control = run.sample(make_batch(run, pixels, mask, own), 1, seed)  # under A's caption
    methods = {
      "prior": prior,
      "posterior_partial": from_partial,
      "posterior_completed": from_completed,
    }
    erased = images.to_float(pixels) * (1 - mask)
    for i, example in enumerate(chosen):
      name = f"{word_a}->{word_b}" if word_a else f"{example.id}->donor"
      tiles = [images.to_float(pixels[i]), erased[i], *prior[:, i], from_partial[0, i]]
      rows.append((name, [*tiles, from_completed[0, i], control[0, i]]))
    figures = _switch_figures(
      data, classifier, methods, control, pixels, mask, chosen, donors, word_a, word_b, partial
    )
    key = f"{word_a}->{word_b}" if word_a else "donor captions"
    figures_by_pair[key] = figures
    for name, value in figures.items():
      totals.setdefault(name, []).append((value, len(chosen)))
  overall = {
    name: float(sum(v * n for v, n in values) / sum(n for _, n in values))
    for name, values in totals.items()
    if all(isinstance(v, float) for v, _ in values)
  }
  legend = "A | A erased | K prior samples under B | from z(partial) | from z(completion) | under A"
  return rows, {"mode": "switch", "columns": legend, "overall": overall, "pairs": figures_by_pair}


def _switch_figures(
  data, classifier, methods, control, pixels, mask, chosen, donors, word_a, word_b, partial
):
  from inpainting import images  # noqa: PLC0415

  figures: dict[str, Any] = {"examples": len(chosen)}
  exact = {name: border_exact(done, pixels, mask) for name, done in methods.items()}
  for name, ok in exact.items():
    figures[f"border_exact_{name}"] = _rate(ok)
  if data.labelled and classifier is not None and word_b is not None:
    a, b = classifier.index(word_a), classifier.index(word_b)
    for name, done in methods.items():
      predicted = classifier.probabilities(done).argmax(-1)
      figures[f"switch_success_{name}"] = _rate((predicted == b) & exact[name])
      figures[f"stayed_a_{name}"] = _rate(predicted == a)
    figures["erased_classified_b"] = _rate(
      classifier.probabilities(images.to_float(partial)).argmax(-1) == b
    )
    figures["control_classified_a"] = _rate(classifier.probabilities(control).argmax(-1) == a)
  elif data.scenes and all(d is not None for d in donors):
    from inpainting.metrics import compliance  # noqa: PLC0415

    scenes = [e.scene for e in chosen]
    given = [d.scene for d in donors]
    for name, done in methods.items():
      found = compliance.scene_metrics(done, scenes, mask, given)
      # scene_metrics scores the first completion; every one of the K is scored here.
      hits = np.stack(
        [compliance.scene_metrics(k[None], scenes, mask, given)["obeys_caption_all"] for k in done]
      )
      figures[f"switch_success_{name}"] = _rate(hits.astype(bool) & exact[name])
      figures[f"stayed_a_{name}"] = _rate(found["compliance_all"])
    figures["control_compliance"] = _rate(
      compliance.scene_metrics(control, scenes, mask)["compliance_all"]
    )
  return figures


def interpolate_mode(run, data: Data, classifier, *, pairs, num, steps, mask_spec, captions, seed):
  """(grid rows, figures): per example, a z path and a caption path."""
  from inpainting import images  # noqa: PLC0415

  caption_a_flag, caption_b_flag = captions
  t = np.linspace(0.0, 1.0, steps, dtype=np.float32)
  z_weights = np.stack([np.cos(t * math.pi / 2), np.sin(t * math.pi / 2)], -1)  # unit rows
  rows, paths = [], []
  for word_a, word_b in pairs:
    chosen = _examples_for(data, word_a, num)
    pixels = np.stack([e.image for e in chosen])
    mask = _hole(run, mask_spec, len(chosen))
    if mask_spec is None and run.config.data.mask == "full":
      pixels = np.full_like(pixels, 255)  # Nothing is kept: start from blank paper.
    if caption_a_flag is not None:
      captions_a = [caption_a_flag] * len(chosen)
    elif word_a is not None:
      captions_a = [data.caption_of(word_a)] * len(chosen)
    else:
      captions_a = [e.captions[0] for e in chosen]
    captions_b, _ = _captions_b(data, chosen, word_b, caption_b_flag)
    batch = make_batch(run, pixels, mask, captions_a, captions_b)
    z_path = call_hook(run, "interpolate", batch, seed, {"weights": z_weights}, (2,))
    caption_path = call_hook(run, "interpolate_caption", batch, seed, {"weights": t})
    erased = images.to_float(pixels) * (1 - mask)
    for i in range(len(chosen)):
      name = f"{word_a}->{word_b}" if word_a and word_b else chosen[i].id
      rows.append((f"z path ({word_a or chosen[i].id})", [erased[i], *z_path[:, i]]))
      rows.append((f"caption {name}", [erased[i], *caption_path[:, i]]))
    if data.labelled and classifier is not None and word_a and word_b:
      a, b = classifier.index(word_a), classifier.index(word_b)
      probs = classifier.probabilities(caption_path)  # [F, B, C]
      paths.append((probs[..., b] / np.maximum(probs[..., a] + probs[..., b], 1e-12)).T)
  figures: dict[str, Any] = {"mode": "interpolate", "frames": steps, "rows": "z path, caption path"}
  if paths:
    figures["caption_path"] = monotonicity(np.concatenate(paths))
    figures["caption_path"]["paths"] = int(sum(len(p) for p in paths))
  return rows, figures


# --- the picture ------------------------------------------------------------------------------------


def grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], max_rows: int) -> np.ndarray:
  """uint8 picture: one labelled row per entry, tiles in [-1, 1] [64, 64, 3]."""
  from PIL import Image, ImageDraw  # noqa: PLC0415

  from inpainting import images  # noqa: PLC0415

  rows = list(rows)[:max_rows]
  columns = max(len(tiles) for _, tiles in rows)
  size = 64
  height = len(rows) * (size + PAD) + PAD
  width = LABEL_WIDTH + columns * (size + PAD) + PAD
  picture = np.full((height, width, 3), 255, np.uint8)
  for r, (_, tiles) in enumerate(rows):
    for c, tile in enumerate(tiles):
      y, x = PAD + r * (size + PAD), LABEL_WIDTH + PAD + c * (size + PAD)
      picture[y : y + size, x : x + size] = images.to_uint8(tile)
  canvas = Image.fromarray(picture)
  draw = ImageDraw.Draw(canvas)
  for r, (label, _) in enumerate(rows):
    draw.text((4, PAD + r * (size + PAD) + size // 2 - 6), label[:24], fill=(0, 0, 0))
  return np.asarray(canvas)


# --- entry point ------------------------------------------------------------------------------------


def explore(
  mode: str,
  workdir: str,
  *,
  data_dir: str | None = None,
  split: str = "validation",
  step: int | None = None,
  seed: int = 0,
  num: int | None = None,
  samples: int = 4,
  steps: int = 9,
  mask: str | None = None,
  caption: str = "",
  class_a: str | None = None,
  class_b: str | None = None,
  caption_a: str | None = None,
  caption_b: str | None = None,
  classifier_path: str | None = None,
) -> tuple[list, dict[str, Any]]:
  """Runs one mode; returns (grid rows, figures). See the module docstring.

  Raises:
    UserError: an unknown mode, a family without the needed hook, unknown classes, a
      missing classifier or data folder.
  """
  from inpainting import inference  # noqa: PLC0415
  from inpainting import run as run_layout  # noqa: PLC0415
  from inpainting.errors import UserError  # noqa: PLC0415

  if mode not in MODES:
    raise UserError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
  if samples < 1 or steps < 2 or (num is not None and num < 1):
    raise UserError("--num and --samples must be >= 1, --steps >= 2")
  # The data, classes and classifier are checked before the checkpoint is read.
  config = run_layout.load_config(os.path.abspath(workdir))
  data = Data(_resolve_data_dir(config, os.path.abspath(workdir), data_dir), split)
  pairs = _pairs(data, class_a, class_b, caption_b) if mode != "sample" else []
  classifier = None
  if classifier_path:
    from inpainting.metrics import sketch_classifier  # noqa: PLC0415

    classifier = sketch_classifier.load(classifier_path)
  run = inference.load_run(workdir, step)
  if mode == "sample":
    rows, figures = sample_mode(run, data, classifier, num=num or 16, caption=caption, seed=seed)
  elif mode == "switch":
    rows, figures = switch_mode(
      run,
      data,
      classifier,
      pairs=pairs,
      num=num or 5,
      samples=samples,
      mask_spec=mask,
      caption_b=caption_b,
      seed=seed,
    )
  else:
    rows, figures = interpolate_mode(
      run,
      data,
      classifier,
      pairs=pairs,
      num=num or 4,
      steps=steps,
      mask_spec=mask,
      captions=(caption_a, caption_b),
      seed=seed,
    )
  figures = {"workdir": workdir, "step": run.step, "model": run.name, **figures}
  if classifier is not None:
    figures["classifier"] = {
      "path": classifier_path,
      "classes": classifier.classes,
      "heldout_accuracy": classifier.meta.get("validation", {}).get("accuracy"),
    }
  return rows, figures


def main(argv):
  from inpainting.logs import quiet_libraries  # noqa: PLC0415

  quiet_libraries()
  from inpainting import images  # noqa: PLC0415
  from inpainting.errors import UserError  # noqa: PLC0415

  if len(argv) != 2:
    print(f"error: give one mode: {' | '.join(MODES)}", file=sys.stderr)
    sys.exit(2)
  try:
    out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
    if not os.path.isdir(out_dir):
      raise UserError(f"output folder {out_dir} does not exist")
    rows, figures = explore(
      argv[1],
      FLAGS.workdir,
      data_dir=FLAGS.data_dir,
      split=FLAGS.split,
      step=FLAGS.step,
      seed=FLAGS.seed,
      num=FLAGS.num,
      samples=FLAGS.samples,
      steps=FLAGS.steps,
      mask=FLAGS.mask,
      caption=FLAGS.caption,
      class_a=FLAGS.class_a,
      class_b=FLAGS.class_b,
      caption_a=FLAGS.caption_a,
      caption_b=FLAGS.caption_b,
      classifier_path=FLAGS.classifier,
    )
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  images.save_png(FLAGS.out, grid(rows, FLAGS.grid_rows))
  if FLAGS.metrics_out:
    with open(FLAGS.metrics_out, "w", encoding="utf-8") as f:
      json.dump(figures, f, indent=2)
      f.write("\n")
  print(f"wrote {FLAGS.out}: {min(len(rows), FLAGS.grid_rows)} rows", file=sys.stderr)
  print(json.dumps(figures))


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)
