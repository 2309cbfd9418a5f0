"""The run layout: what a workdir holds and how it is read back.

    WORKDIR/config.json           the finalized config (data folder, vocabulary size)
    WORKDIR/tokenizer.model       the run's own tokenizer (evaluation may use other data)
    WORKDIR/checkpoints/<step>/   orbax checkpoints (inpainting/checkpointing.py)
    WORKDIR/corrupt_checkpoints/  unreadable steps moved aside (never deleted)

The trainer, `evaluate`, `inpaint` and the demo all go through here, so they share the
one-line errors for a missing run, a changed config and an unreadable checkpoint. Nothing
here imports the trainer or grain.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from inpainting import batching, checkpointing, logs, records
from inpainting import tokenizer as tokenizers
from inpainting.errors import UserError
from inpainting.models import registry, text_encoder

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"
# Config fields a resumed run may change: they do not change what the saved state means.
# Knobs added after runs were written whose off value is not 0/False/"": read as this
# value when a saved config lacks them.
ADDED_KNOB_DEFAULTS = {"data.text_source": batching.DEFAULT_TEXT_SOURCE}
RESUMABLE_FIELDS = (
  "num_train_steps",
  "log_every_steps",
  "eval_every_steps",
  "checkpoint_every_steps",
  "keep_checkpoints",
  "num_eval_batches",
  "num_grid_examples",
  "num_grid_samples",
  "data.dir",  # The same prepared data may move (a copied workdir, another mount).
  "data.num_workers",
  "data.prefetch_batches",
  "mesh.",
  "debug.",
)


# --- Config and tokenizer --------------------------------------------------------------------


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UserError(f"{workdir} holds no trained run (no {CONFIG_FILE})")
  try:
    with open(path, encoding="utf-8") as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as error:
    raise UserError(f"cannot read {path}: {error}") from None


def tokenizer_path(workdir: str) -> str:
  return os.path.join(workdir, records.TOKENIZER_FILE)


def _flat(config: ml_collections.ConfigDict) -> dict[str, Any]:
  out = {}

  def walk(prefix: str, value: Any) -> None:
    if isinstance(value, dict):
      for key, item in value.items():
        walk(f"{prefix}{key}.", item)
    else:
      out[prefix[:-1]] = list(value) if isinstance(value, tuple | list) else value

  walk("", config.to_dict())
  return out


def differing_fields(saved: ml_collections.ConfigDict, new: ml_collections.ConfigDict) -> list[str]:
  """Fields (dotted) whose values differ and may not change on resume."""
  a, b = _flat(saved), _flat(new)
  changed = [k for k in sorted(a.keys() | b.keys()) if a.get(k, "<absent>") != b.get(k, "<absent>")]
  # A knob added after the run was written is accepted at its off value (0, False, "", or
  # the default listed in ADDED_KNOB_DEFAULTS), which is how the code reads a config that
  # lacks it.
  changed = [
    k
    for k in changed
    if k in a or (b[k] not in (0, 0.0, False, "", None) and b[k] != ADDED_KNOB_DEFAULTS.get(k))
  ]
  return [k for k in changed if not any(k == f or k.startswith(f) for f in RESUMABLE_FIELDS)]


def tokenizer_source(config: ml_collections.ConfigDict) -> str:
  """The tokenizer a new run reads its data with and copies into its workdir: the data
  folder's SentencePiece model, or the pretrained caption encoder's vocabulary
  (`model.text.pretrained`).

  Raises:
    UserError: an unknown pretrained encoder, or its package is not installed.
  """
  try:
    vocab = text_encoder.pretrained_vocab(config.model)
  except ValueError as error:
    raise UserError(str(error)) from None
  return vocab or os.path.join(config.data.dir, records.TOKENIZER_FILE)


def finalize_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy with the values that come from the data filled in (vocabulary size)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.vocab_size = tokenizers.load(tokenizer_source(config)).vocab_size
  return config


def write_run_files(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Checks a resumed run's config, then writes config.json and the tokenizer (process 0).

  Raises:
    UserError: the workdir holds a run whose config differs in a field that may not
      change on resume; names every such field.
  """
  if os.path.isfile(os.path.join(workdir, CONFIG_FILE)):
    saved = load_config(workdir)
    fields = differing_fields(saved, config)
    if fields:
      shown = ", ".join(f"{k} ({_get(saved, k)!r} -> {_get(config, k)!r})" for k in fields[:6])
      more = f" and {len(fields) - 6} more" if len(fields) > 6 else ""
      raise UserError(
        f"{workdir} holds a run with a different config: {shown}{more}; "
        "use a new --workdir or the saved values"
      )
  if jax.process_index() != 0:
    return
  tmp = os.path.join(workdir, CONFIG_FILE + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(config.to_json(indent=2))
  os.replace(tmp, os.path.join(workdir, CONFIG_FILE))
  source = tokenizer_source(config)
  if os.path.abspath(source) != os.path.abspath(tokenizer_path(workdir)):
    shutil.copyfile(source, tokenizer_path(workdir) + ".tmp")
    os.replace(tokenizer_path(workdir) + ".tmp", tokenizer_path(workdir))


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  return _flat(config).get(dotted, "<absent>")


# --- Abstract state --------------------------------------------------------------------------


def abstract_bundle(config: ml_collections.ConfigDict) -> tuple[nnx.GraphDef, Any]:
  """Graph definition and ShapeDtypeStructs of the model bundle; allocates nothing."""
  family = registry.get(config.model.name)
  bundle = nnx.eval_shape(lambda: family.create(config, nnx.Rngs(config.seed)))
  return nnx.split(bundle)


def abstract_state(config: ml_collections.ConfigDict) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """(graphdef, {"model": ShapeDtypeStructs, "rng": the step-key slot}) of a train state."""
  graphdef, model = abstract_bundle(config)
  return graphdef, {"model": model, "rng": jax.ShapeDtypeStruct((2,), jnp.uint32)}


def state_fn(graphdef: nnx.GraphDef, fn, *args):
  """(state, batch, rng) -> fn(bundle, batch, rng, *args), the bundle merged from a train
  state; the pure form of a family's `sample` or `evaluate` that both the trainer and
  inference jit."""

  def pure(state, batch, rng):
    return fn(nnx.merge(graphdef, state["model"]), batch, rng, *args)

  return pure


# --- Checkpoints -----------------------------------------------------------------------------


def open_checkpoints(workdir: str, *, read_only: bool, **options) -> checkpointing.Checkpointer:
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  if read_only:
    if not os.path.isdir(directory):
      raise UserError(f"{workdir} has no checkpoints")
  return checkpointing.Checkpointer(directory, read_only=read_only, **options)


def _shapes(abstract) -> dict[str, tuple[tuple[int, ...], str]]:
  flat, _ = checkpointing.flatten(abstract)
  return {k: (tuple(x.shape), str(x.dtype)) for k, x in flat.items()}


def _check_structure(workdir: str, step: int, saved: dict, expected: dict) -> None:
  if saved == expected:
    return
  missing = sorted(expected.keys() - saved.keys())
  extra = sorted(saved.keys() - expected.keys())
  reshaped = sorted(k for k in expected.keys() & saved.keys() if expected[k] != saved[k])
  detail = "; ".join(
    f"{label} {names[0]}" + (f" (+{len(names) - 1})" if len(names) > 1 else "")
    for label, names in (("missing", missing), ("unexpected", extra), ("reshaped", reshaped))
    if names
  )
  raise UserError(
    f"checkpoint step {step} in {workdir} does not match the run's config.json ({detail})"
  )


def restore(
  checkpointer: checkpointing.Checkpointer,
  workdir: str,
  abstract,
  *,
  step: int | None = None,
  data: checkpointing.DataIteratorState | None = None,
  move_corrupt: bool = False,
) -> tuple[int | None, Any]:
  """Restores `step`, or the newest readable step, into arrays like `abstract`.

  A step whose files cannot be read is reported in one line and, with `move_corrupt`
  (process 0 of a training run), moved to WORKDIR/corrupt_checkpoints; the next older
  step is tried. An explicitly requested step that cannot be read is an error.

  Returns:
    (step, state), or (None, None) when there is no readable checkpoint.

  Raises:
    UserError: the saved arrays do not match `abstract` (a changed model), or `step` is
      missing or unreadable.
  """
  steps = sorted(checkpointer.all_steps(), reverse=True)
  if step is not None:
    if step not in steps:
      raise UserError(f"no checkpoint at step {step} in {workdir}; have {sorted(steps)}")
    steps = [step]
  expected = _shapes(abstract)
  for candidate in steps:
    try:
      saved = checkpointer.saved_shapes(candidate)
    except Exception as error:  # noqa: BLE001  (unreadable metadata: a corrupt step)
      _corrupt(checkpointer, workdir, candidate, error, step is not None, move_corrupt)
      continue
    _check_structure(workdir, candidate, saved, expected)
    try:
      if data is None:
        return candidate, checkpointer.restore_state(candidate, abstract)
      return candidate, checkpointer.restore(candidate, abstract, data)
    except Exception as error:  # noqa: BLE001  (unreadable arrays: a corrupt step)
      _corrupt(checkpointer, workdir, candidate, error, step is not None, move_corrupt)
  return None, None


def _corrupt(checkpointer, workdir, step, error, requested: bool, move: bool) -> None:
  text = " ".join(str(error).split()).split(". See full")[0]  # TensorStore appends a repr.
  reason = f"{type(error).__name__}: {text[:160]}"
  if requested:
    raise UserError(f"checkpoint step {step} in {workdir} is unreadable ({reason})")
  if move:
    if jax.process_index() == 0:
      target = os.path.join(workdir, CORRUPT_DIR, f"step_{step}_{int(time.time())}")
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(checkpointer.step_directory(step), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # noqa: PLC0415

      multihost_utils.sync_global_devices(f"moved corrupt checkpoint {step}")
    checkpointer.reload()
    where = f"moved to {CORRUPT_DIR}/"
  else:
    where = "skipped"
  logs.console(f"checkpoint step {step} is unreadable ({reason}); {where}, trying an older one")
