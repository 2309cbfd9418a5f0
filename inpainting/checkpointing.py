"""All orbax code: restore-or-init, periodic async saves, preemption saves.

A checkpoint at step N holds
  state/   every array of the train state (model, optimizers, statistics), the step and
           the RNG key, as one flat dict keyed by path, so any nnx module tree round-trips;
  data/    each process's grain iterator state (one JSON file per process), positioned
           after the last batch that step N consumed, so a resumed run sees exactly the
           batches an uninterrupted run would have.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging as logging_std
import signal
import sys
import threading
import traceback
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


def flatten(tree) -> tuple[dict[str, Any], Any]:
  """Pytree -> ({'path.to.leaf': leaf}, treedef)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  flat = {}
  for path, leaf in leaves:
    parts = []
    for key in path:
      if isinstance(key, jax.tree_util.DictKey):
        parts.append(str(key.key))
      elif isinstance(key, jax.tree_util.SequenceKey):
        parts.append(str(key.idx))
      elif isinstance(key, jax.tree_util.GetAttrKey) and key.name != "value":
        parts.append(key.name)
    flat[".".join(parts)] = leaf
  return flat, treedef


def unflatten(flat: dict[str, Any], like) -> Any:
  """Inverse of `flatten`, using the structure of `like`."""
  keys, treedef = flatten(like)
  return jax.tree_util.tree_unflatten(treedef, [flat[k] for k in keys])


def read_latest_state(directory: str) -> tuple[int, dict[str, np.ndarray]]:
  """(step, {path: numpy array}) of the newest checkpoint, whatever topology wrote it.

  For inspection and tests: every array lands on one local device, then on the host.
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.CheckpointManager(
    directory,
    item_names=("state",),
    item_handlers={"state": ocp.StandardCheckpointHandler()},
    options=ocp.CheckpointManagerOptions(read_only=True, create=False),
  ) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    metadata = manager.item_metadata(step)["state"]
    target = {
      k: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device) for k, m in metadata.items()
    }
    restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
    )
  return step, {k: np.asarray(v) for k, v in restored["state"].items()}


class DataIteratorState:
  """Adapter that lets grain's orbax handler save a state we recorded ourselves.

  The trainer prefetches batches ahead of the step, so the live grain iterator is ahead
  of what training has consumed. The state to save is the one recorded right after the
  last consumed batch was drawn.
  """

  def __init__(self, iterator):
    self.iterator = iterator
    self.state: dict[str, Any] | None = None

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state.decode())
    self.iterator.set_state(self.state)

  def start_prefetch(self) -> None:
    """Called by grain's handler after restore; prefetch restarts on the next `next`."""

  def snapshot(self) -> _FrozenState:
    """The state now, immune to later batches (saves may finish in the background)."""
    return _FrozenState(self.get_state())


class _FrozenState:
  def __init__(self, state: bytes):
    self._state = state

  def get_state(self) -> bytes:
    return self._state


@contextlib.contextmanager
def _late_reads_dropped_on_failure():
  """When a restore fails (an unreadable file), the reads of the step's other arrays are
  abandoned in flight. Each then reports itself on stderr: as an "Event loop is closed"
  traceback when it completes into orbax's closed event loop, or as "Exception ignored in
  <coroutine _read_array_index_and_device_put>" when it is garbage-collected (measured: up
  to 929 traceback lines on a loaded machine, after our one-line message). Their results
  are discarded anyway, so those reports are dropped.

  The closed-loop guard goes in before the restore starts: tensorstore keeps the bound
  `call_soon_threadsafe` it looked up when the read began, so a guard installed after the
  failure missed those reads (seen in CI as a bare "Event loop is closed" traceback)."""
  _drop_calls_into_closed_loops()
  try:
    yield
  except Exception:
    _drop_reports_of_abandoned_reads()
    raise


def _drop_calls_into_closed_loops() -> None:
  """A callback posted to a closed event loop is dropped instead of raising."""
  original = asyncio.BaseEventLoop.call_soon_threadsafe
  if getattr(original, "drops_on_closed_loop", False):
    return

  def call_soon_threadsafe(loop, *args, **kwargs):
    if loop.is_closed():
      return None
    try:
      return original(loop, *args, **kwargs)
    except RuntimeError:
      if loop.is_closed():  # Closed between the check and the call (seen in CI).
        return None
      raise

  call_soon_threadsafe.drops_on_closed_loop = True
  asyncio.BaseEventLoop.call_soon_threadsafe = call_soon_threadsafe


def _drop_reports_of_abandoned_reads() -> None:
  if getattr(sys.unraisablehook, "drops_abandoned_reads", False):
    return
  previous_hook = sys.unraisablehook

  def unraisablehook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and "/orbax/" in code.co_filename:
      return  # An abandoned orbax read of a checkpoint already reported unreadable.
    previous_hook(unraisable)

  unraisablehook.drops_abandoned_reads = True
  sys.unraisablehook = unraisablehook

  previous_excepthook = sys.excepthook

  def excepthook(kind, value, tb):
    if kind is RuntimeError and str(value) == "Event loop is closed":
      return  # Printed by a native callback that completes into orbax's closed loop.
    previous_excepthook(kind, value, tb)

  sys.excepthook = excepthook
  logging_std.getLogger("asyncio").addFilter(_AbandonedReads())


class _AbandonedReads(logging_std.Filter):
  """Drops asyncio's "exception was never retrieved" reports of abandoned orbax reads."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    text = str(record.msg)
    if "never retrieved" not in text:
      return True
    tb = record.exc_info[2] if record.exc_info else None
    frames = traceback.extract_tb(tb) if tb is not None else []
    where = " ".join([str(record.args or ""), text, *(frame.filename for frame in frames)])
    return not any(mark in where for mark in ("orbax", "OCDBT", "TensorStore", "tensorstore"))


def _grain_checkpoint():
  import grain  # noqa: PLC0415  (training only)

  return grain.checkpoint


class Checkpointer:
  """Wraps `ocp.CheckpointManager` with the project's save policy and SIGTERM handling."""

  def __init__(
    self,
    directory: str,
    *,
    save_every_steps: int = 0,
    keep: int | None = None,
    async_save: bool = True,
    read_only: bool = False,
  ):
    if read_only:  # Only reads: no save policy, nothing deleted, nothing created.
      options = ocp.CheckpointManagerOptions(
        save_interval_steps=0, max_to_keep=None, read_only=True, create=False
      )
    else:
      options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=async_save,
        save_decision_policy=policies.AnySavePolicy(
          [
            policies.FixedIntervalPolicy(save_every_steps),
            policies.PreemptionCheckpointingPolicy(),
          ]
        ),
        # Every process writes its own iterator file into the step folder.
        enable_per_process_directory_creation=False,
      )
    handlers = {"state": ocp.StandardCheckpointHandler()}
    if not read_only:  # Readers (evaluate, inpaint, the demo) need no grain.
      import grain  # noqa: PLC0415

      handlers["data"] = grain.checkpoint.CheckpointHandler()
    self._manager = ocp.CheckpointManager(
      directory, item_names=tuple(handlers), item_handlers=handlers, options=options
    )
    self._sigterm = threading.Event()
    if not read_only:
      self._install_sigterm_handler()

  def _install_sigterm_handler(self) -> None:
    # With jax.distributed, JAX's preemption service owns SIGTERM and every process agrees
    # on the step through `reached_preemption`. A lone process needs its own flag.
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
      return
    signal.signal(signal.SIGTERM, lambda signum, frame: self._sigterm.set())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_stop(self, step: int) -> bool:
    """True once SIGTERM arrived (or the cluster's preemption sync point is reached)."""
    return self._sigterm.is_set() or self._manager.reached_preemption(step)

  def should_save(self, step: int) -> bool:
    """Whether the save policy (every N steps, or preemption) wants step `step`."""
    return self._manager.should_save(step)

  def restore(self, step: int, abstract_state, data: DataIteratorState):
    """Restores `step` into arrays shaped and sharded like `abstract_state`.

    Returns the restored state pytree; `data`'s iterator is repositioned in place.
    """
    flat_abstract, _ = flatten(abstract_state)
    args = ocp.args.Composite(
      state=ocp.args.StandardRestore(flat_abstract),
      data=_grain_checkpoint().CheckpointRestore(data),
    )
    with _late_reads_dropped_on_failure():
      restored = self._manager.restore(step, args=args)
    return unflatten(restored["state"], abstract_state)

  def restore_state(self, step: int, abstract_state):
    """Restores only the train state (no data iterator): for evaluation and inference."""
    flat_abstract, _ = flatten(abstract_state)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(flat_abstract))
    with _late_reads_dropped_on_failure():
      restored = self._manager.restore(step, args=args)
    return unflatten(restored["state"], abstract_state)

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def saved_shapes(self, step: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """{flat key: (shape, dtype name)} of the train state saved at `step` (its metadata)."""
    metadata = self._manager.item_metadata(step)["state"]
    return {k: (tuple(m.shape), str(m.dtype)) for k, m in metadata.items()}

  def step_directory(self, step: int) -> str:
    return str(self._manager.directory / str(step))

  def reload(self) -> None:
    """Re-reads the step list from disk (after a step folder was moved away)."""
    self._manager.reload()

  def save(self, step: int, state, data: DataIteratorState, *, force: bool = False) -> bool:
    """Saves if the policy (or `force`) says so; returns whether a save started."""
    flat, _ = flatten(state)
    saved = self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(flat),
        data=_grain_checkpoint().CheckpointSave(data.snapshot()),
      ),
      force=force,
    )
    return saved

  def saving(self) -> bool:
    """Whether an async save is still being written in the background."""
    return self._manager.is_saving_in_progress()

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
