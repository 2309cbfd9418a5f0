"""Proves the suite has teeth: injects known bugs one at a time and checks a test fails.

    python tests/mutations.py [--only NAME,NAME] [--list]

Each mutation replaces one exact snippet of the source (it must occur exactly once) in a
fresh copy of the tree (tracked and untracked, not ignored, files), then runs the tests
named for it. A mutation is `caught` when at least one of those tests fails, and the line
names the failing test. The script exits 1 if any mutation survives (or a snippet no
longer matches the code: the table must follow the code).

Not part of the pytest run (it runs the slow tests many times); about 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  path: str
  old: str
  new: str
  tests: tuple[str, ...]


MUTATIONS = (
  Mutation(
    "lr x2 in the multi-device run of a compared pair",
    "inpainting/train.py",
    "  mesh = sharding.make_mesh(config.mesh, config.global_batch_size)\n",
    "  mesh = sharding.make_mesh(config.mesh, config.global_batch_size)\n"
    "  if mesh.size > 1:\n"
    "    config.optim.learning_rate *= 2\n"
    "    config.optim.d_learning_rate *= 2\n",
    ("tests/test_train.py::test_four_devices_match_one_device",),
  ),
  Mutation(
    "restore that silently starts from scratch",
    "inpainting/train.py",
    "  if restored is None:\n    first_step = 0\n",
    "  restored = None\n  if restored is None:\n    first_step = 0\n",
    ("tests/test_train.py::test_resume_after_sigkill_is_bit_exact",),
  ),
  Mutation(
    "KL without the exp(-2 log sigma_p) factor",
    "inpainting/losses.py",
    "jnp.exp(-2.0 * log_sigma_p)",
    "1.0",
    ("tests/test_losses.py",),
  ),
  Mutation(
    "a family that reads the hole",
    "inpainting/models/registry.py",
    '  known = batch["image"] * (1.0 - batch["mask"])\n',
    '  known = batch["image"]\n',
    ("tests/test_families.py::test_samples_do_not_depend_on_the_hole_pixels",),
  ),
  Mutation(
    "a sampler that ignores the caption",
    "inpainting/models/vaegan.py",
    '  text, _, _, prior = parts\n  cond = text(batch["tokens"], batch["token_mask"], None)\n',
    "  text, _, _, prior = parts\n"
    '  cond = text(batch["tokens"] * 0, batch["token_mask"] & False, None)\n',
    ("tests/test_families.py::test_the_caption_changes_the_samples",),
  ),
  Mutation(
    "a box mask placed at (0, 0)",
    "inpainting/masks.py",
    "  one[y : y + h, x : x + w] = 1.0\n",
    "  one[0:h, 0:w] = 1.0\n",
    ("tests/test_masks.py",),
  ),
  Mutation(
    "load_run returning fresh weights",
    "inpainting/inference.py",
    "  if state is None:\n",
    "  state = {'model': nnx.state(family.create(config, nnx.Rngs(config.seed))),"
    " 'rng': state['rng']}\n  if state is None:\n",
    ("tests/test_train.py",),
  ),
  Mutation(
    "the grain iterator state not saved",
    "inpainting/checkpointing.py",
    "    self.state = json.loads(state.decode())\n    self.iterator.set_state(self.state)\n",
    "    self.state = json.loads(state.decode())\n",
    ("tests/test_train.py::test_resume_after_sigkill_is_bit_exact",),
  ),
  Mutation(
    "a checkpoint written after a NaN step",
    "inpainting/train.py",
    "      if step % config.log_every_steps == 0 or will_save:\n        last_metrics = flush_metrics()\n",
    "      if will_save:\n        checkpointer.save(step, state, data_state, force=True)\n"
    "      if step % config.log_every_steps == 0 or will_save:\n        last_metrics = flush_metrics()\n",
    ("tests/test_train.py::test_nan_stops_the_run_and_keeps_the_last_good_checkpoint",),
  ),
  Mutation(
    "G trained against the discriminator before its update",
    "inpainting/models/gan.py",
    "  optimizer.update(discriminator, grads)\n  aux = {**aux",
    "  before = snapshot(discriminator)\n  optimizer.update(discriminator, grads)\n"
    "  return loss, {**aux, 'grad_norm_d': optax.tree.norm(grads)}, before\n  aux = {**aux",
    ("tests/test_families.py::test_gan_step_updates_d_then_g_against_the_updated_d",),
  ),
  Mutation(
    "a corrupt checkpoint deleted instead of moved aside",
    "inpainting/run.py",
    "      shutil.move(checkpointer.step_directory(step), target)\n",
    "      shutil.rmtree(checkpointer.step_directory(step))\n",
    ("tests/test_contract.py::test_corrupt_latest_checkpoint_is_moved_aside_and_the_run_resumes",),
  ),
  Mutation(
    "a changed model field accepted on resume",
    "inpainting/run.py",
    "  return [k for k in changed if not any(k == f or k.startswith(f) for f in RESUMABLE_FIELDS)]",
    "  return [k for k in changed if k.startswith('data.mask')]",
    ("tests/test_contract.py::test_a_changed_model_field_is_refused_in_one_line",),
  ),
)


def _files() -> list[str]:
  listed = subprocess.run(
    ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
    cwd=REPO,
    check=True,
    capture_output=True,
    text=True,
  ).stdout.split("\n")
  return [f for f in listed if f and os.path.isfile(os.path.join(REPO, f))]


def _copy_tree(target: str) -> None:
  for name in _files():
    destination = os.path.join(target, name)
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    shutil.copy2(os.path.join(REPO, name), destination)


def _apply(tree: str, mutation: Mutation) -> None:
  path = os.path.join(tree, mutation.path)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  count = text.count(mutation.old)
  if count != 1:
    raise LookupError(f"{mutation.path}: the snippet occurs {count} times, not once")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text.replace(mutation.old, mutation.new))


def _failing_test(output: str) -> str | None:
  match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
  return match.group(1) if match else None


def run(mutation: Mutation) -> tuple[bool, str, float]:
  """(caught, what failed or why not, seconds)."""
  started = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix="mutant-") as tree:
    _copy_tree(tree)
    try:
      _apply(tree, mutation)
    except LookupError as error:
      return False, f"not applied: {error}", time.perf_counter() - started
    env = dict(os.environ, PYTHONPATH=tree)
    result = subprocess.run(
      [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation.tests],
      cwd=tree,
      env=env,
      capture_output=True,
      text=True,
    )
  seconds = time.perf_counter() - started
  output = result.stdout + result.stderr
  if result.returncode == 1:
    return True, _failing_test(output) or "a test failed", seconds
  if result.returncode == 0:
    return False, "every test passed", seconds
  return False, f"pytest exit {result.returncode}: {output.strip().splitlines()[-1:]}", seconds


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="", help="Comma-separated substrings of mutation names.")
  parser.add_argument("--list", action="store_true", help="List the mutations and exit.")
  args = parser.parse_args()
  chosen = [m for m in MUTATIONS if not args.only or any(s in m.name for s in args.only.split(","))]
  if args.list:
    for m in chosen:
      print(f"{m.name}: {m.path} -> {' '.join(m.tests)}")
    return 0
  survivors = 0
  for mutation in chosen:
    caught, detail, seconds = run(mutation)
    survivors += not caught
    verdict = "caught" if caught else "SURVIVED"
    print(f"{verdict:8s} {mutation.name} ({seconds:.0f} s): {detail}", flush=True)
  print(f"{len(chosen) - survivors} of {len(chosen)} mutations caught")
  return 1 if survivors else 0


if __name__ == "__main__":
  sys.exit(main())
