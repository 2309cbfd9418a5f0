"""Test setup: four fake CPU devices, set before jax is imported anywhere; shared fixtures.

Fixtures for the trainer's tests (test_train, test_multiprocess, test_evaluate):
  data_dir        the smoke config's synthetic scenes, prepared once per session
  smoke_config    a factory: configs/smoke.py with dotted overrides
  compare_runs    one check that two runs trained alike (every metric of every step, and
                  every tensor's update from the common initial state)
  initial_state_of  the step-0 state the trainer creates for a config
  tb_scalars      a run's TensorBoard scalars, {tag: {step: value}}
"""

from __future__ import annotations

import glob
import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled executables are shared between tests and their subprocesses (the same program
# gives the same results), which cuts the suite's compile time several-fold.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR",
  os.path.join(os.path.expanduser("~"), ".cache", "inpainting-tests-jax"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def repo_root() -> str:
  return REPO_ROOT


# --- Smoke configs and data ------------------------------------------------------------------


def make_smoke_config(**overrides):
  """configs/smoke.py with overrides given as {"a.b": value}."""
  from configs import smoke  # noqa: PLC0415  (after the XLA flags above)

  config = smoke.get_config()
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for name in parents:
      target = target[name]
    target[leaf] = value
  return config


@pytest.fixture(scope="session")
def smoke_config():
  """`smoke_config(**{"a.b": value})` -> the smoke config with those overrides."""
  return make_smoke_config


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """The smoke config's synthetic scenes, prepared once for the whole session."""
  from data_prep import bootstrap  # noqa: PLC0415

  return bootstrap.resolve_data_dir(make_smoke_config(), str(tmp_path_factory.mktemp("data")))


# --- Comparing two training runs -------------------------------------------------------------


def initial_state(config) -> dict[str, np.ndarray]:
  """The trainer's step-0 state of `config` (flat, on the host), from its own functions.

  Independent of the mesh: every parameter is created from `config.seed` alone.
  """
  import jax  # noqa: PLC0415

  from inpainting import checkpointing, run, sharding, train  # noqa: PLC0415

  config = run.finalize_config(config)
  mesh = sharding.make_mesh(config.mesh, config.global_batch_size)
  _, state, _ = train.create_state(config, mesh)
  flat, _ = checkpointing.flatten(state)
  return {k: np.asarray(jax.device_get(v)) for k, v in flat.items()}


def read_scalars(workdir: str) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of every scalar in WORKDIR/tensorboard (all event files)."""
  from tensorboard.backend.event_processing import event_accumulator  # noqa: PLC0415

  found: dict[str, dict[int, float]] = {}
  files = sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*")))
  assert files, f"no TensorBoard events in {workdir}"
  for path in files:
    events = event_accumulator.EventAccumulator(path, size_guidance={"scalars": 0})
    events.Reload()
    for tag in events.Tags()["scalars"]:
      for event in events.Scalars(tag):
        found.setdefault(tag, {})[event.step] = event.value
  return found


def run_mismatches(
  reference: str,
  other: str,
  initial: dict[str, np.ndarray],
  learning_rate: float,
  *,
  metric_rtol: float = 1e-3,
  metric_atol: float = 1e-6,
  update_rtol: float = 0.05,
  lr_fraction: float = 0.1,
  nearly_all: float = 0.995,
  incomparable_budget: float = 1e-3,
  skip_metrics: tuple[str, ...] = ("perf/",),
) -> list[str]:
  """Everything that differs between two runs of one config on different topologies.

  Returns one line per disagreement; an empty list means the runs trained alike:
  - metrics: the same TensorBoard tags at the same steps, every value of every step within
    `metric_rtol` / `metric_atol` (tags starting with one of `skip_metrics` excluded:
    timings, and eval/ when only one of the runs evaluated);
  - state: the same final step and tensors; integer tensors (step counts, RNG key) equal;
  - updates, delta = final - `initial` per float tensor (parameters, optimizer moments,
    statistics): |delta_other - delta_reference| <= `update_rtol` x |delta_reference|
    (norms over the tensor), for tensors holding all but `incomparable_budget` of the
    elements;
  - parameters (tensors outside an optimizer state): at least `nearly_all` of their
    elements within `lr_fraction` x `learning_rate` of the reference's update.

  The parameters themselves cannot tell runs apart: a few Adam steps move each by at most
  ~steps x lr. The budget is for tensors whose gradient is zero in exact arithmetic (a
  conv bias right before a GroupNorm with one channel per group): Adam turns their float
  noise into lr-sized steps that no two topologies share.
  """
  from inpainting import checkpointing  # noqa: PLC0415

  problems = []
  scalars_ref, scalars_other = read_scalars(reference), read_scalars(other)
  tags = {t for t in scalars_ref.keys() | scalars_other.keys() if not t.startswith(skip_metrics)}
  for tag in sorted(tags):
    ref, got = scalars_ref.get(tag, {}), scalars_other.get(tag, {})
    if ref.keys() != got.keys():
      problems.append(f"metric {tag}: steps {sorted(got)} vs {sorted(ref)}")
      continue
    for step in sorted(ref):
      if not np.isclose(got[step], ref[step], rtol=metric_rtol, atol=metric_atol):
        problems.append(f"metric {tag} at step {step}: {got[step]!r} vs {ref[step]!r}")

  step_ref, final_ref = checkpointing.read_latest_state(os.path.join(reference, "checkpoints"))
  step_other, final_other = checkpointing.read_latest_state(os.path.join(other, "checkpoints"))
  if step_ref != step_other:
    problems.append(f"final checkpoint step {step_other} vs {step_ref}")
  if not final_ref.keys() == final_other.keys() == initial.keys():
    odd = (final_ref.keys() ^ final_other.keys()) | (final_ref.keys() ^ initial.keys())
    problems.append(f"the states hold different tensors: {sorted(odd)[:5]}")
  keys = sorted(final_ref.keys() & final_other.keys() & initial.keys())
  float_elements = sum(initial[k].size for k in keys if initial[k].dtype.kind == "f")
  unmatched, unmatched_elements = [], 0
  param_elements = param_far = 0
  for key in keys:
    if initial[key].dtype.kind != "f":
      if not np.array_equal(final_ref[key], final_other[key]):
        problems.append(f"{key}: {final_other[key]} vs {final_ref[key]}")
      continue
    start = initial[key].astype(np.float64)
    delta_ref = final_ref[key].astype(np.float64) - start
    delta_other = final_other[key].astype(np.float64) - start
    size, diff = np.linalg.norm(delta_ref), np.linalg.norm(delta_other - delta_ref)
    if not diff <= update_rtol * size:  # Also catches NaN.
      unmatched.append(f"update of {key}: |difference| {diff:.3g} vs |update| {size:.3g}")
      unmatched_elements += start.size
    if ".opt_state." not in key:
      param_elements += start.size
      param_far += int(np.sum(~(np.abs(delta_other - delta_ref) <= lr_fraction * learning_rate)))
  if unmatched_elements > incomparable_budget * float_elements:
    problems.extend(unmatched)
  if param_far > (1 - nearly_all) * param_elements:
    problems.append(
      f"parameter updates: {param_far} of {param_elements} elements differ by more than "
      f"{lr_fraction * learning_rate:.3g}"
    )
  return problems


@pytest.fixture(scope="session")
def compare_runs():
  """`compare_runs(reference, other, initial, learning_rate, **tolerances)`: see
  `run_mismatches` (a list of disagreements, empty when the runs agree)."""
  return run_mismatches


@pytest.fixture(scope="session")
def initial_state_of():
  """`initial_state_of(config)`: the flat step-0 state the trainer creates for `config`."""
  return initial_state


@pytest.fixture(scope="session")
def tb_scalars():
  """`tb_scalars(workdir)` -> {tag: {step: value}} of the run's TensorBoard scalars."""
  return read_scalars
