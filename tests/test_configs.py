"""Every config file and variant builds, passes the trainer's checks, and comments its knobs."""

import importlib
import os
import re

import pytest

from inpainting import train

VARIANTS = {
  "vaegan": (None, "runlocal", "gpu"),
  "l2": (None, "runlocal"),
  "pix2pix": (None,),
  "painter": (None, "runlocal"),
  "chatpainter": (None, "runlocal", "gpu"),
  "smoke": (None,),
  "sketch": ("center", "full", "full,runlocal"),
}
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")


@pytest.mark.parametrize(
  "name,arg", [(name, arg) for name, args in VARIANTS.items() for arg in args]
)
def test_each_variant_passes_the_trainer_checks(name, arg):
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  config.model.vocab_size = 64
  train.check_config(config)


def test_every_config_file_is_checked_here():
  files = {f[:-3] for f in os.listdir(CONFIGS) if f.endswith(".py") and not f.startswith("_")}
  assert files - {"common"} == set(VARIANTS)


def test_an_unknown_variant_is_refused():
  from configs import vaegan  # noqa: PLC0415

  with pytest.raises(ValueError, match="unknown config argument"):
    vaegan.get_config("tpu")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_knob_set_in_a_config_has_a_comment(name):
  """`c.a.b = v` lines without `# ...` are knobs a reader cannot look up (a section made
  from a ConfigDict or a `*_config()` helper is not a knob)."""
  with open(os.path.join(CONFIGS, f"{name}.py")) as f:
    lines = f.read().splitlines()
  bare = [
    line.strip()
    for i, line in enumerate(lines)
    if re.match(r"\s+[a-z_]+(\.[a-z_0-9]+)+ = ", line)
    and "#" not in line
    and not re.search(r"= (ml_collections\.ConfigDict|\w+_config)\(\)$", line)
    and not lines[i - 1].strip().startswith("#")
  ]
  assert not bare, bare
