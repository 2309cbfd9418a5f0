"""Procedural captioned scenes (inpainting.scenes), the default dataset: no input folder.

Train scene i is `scenes.generate(seed, i)`; validation scene i is
`scenes.generate(seed, VALIDATION_INDEX_OFFSET + i)`, so the two never share a scene. Each
record carries its `scene`, from which evaluation re-renders alternatives exactly, and the
scene's `context_caption` and `dialogue` (`scenes.conversation`: turns that reveal the centre
object's shape, colour and size, each turn naming the attribute it reveals).
"""

from __future__ import annotations

from typing import Any

from data_prep import core
from inpainting import scenes

PREPROCESSING = "rendered at 64x64 by inpainting.scenes (no resizing)"
VALIDATION_INDEX_OFFSET = 1 << 40


def collect(input_dir: str, options: core.Options, skips: core.Skips) -> dict[str, list[core.Item]]:
  del input_dir, skips  # Generated, so nothing to read and nothing to skip.
  return {
    "train": [core.Item(f"train-{i:06d}", index=i) for i in range(options.num_train)],
    "validation": [
      core.Item(f"validation-{i:06d}", index=VALIDATION_INDEX_OFFSET + i)
      for i in range(options.num_validation)
    ],
  }


def extra_metadata(options: core.Options) -> dict[str, Any]:
  return {
    "scenes": {
      "num_train": options.num_train,
      "num_validation": options.num_validation,
      "validation_index_offset": VALIDATION_INDEX_OFFSET,
      "shapes": list(scenes.SHAPES),
      "colors": {name: list(rgb) for name, rgb in scenes.COLORS.items()},
      "sizes": list(scenes.SIZES),
      "captions_per_scene": scenes.NUM_CAPTIONS,
      "dialogue_turns": scenes.NUM_TURNS,
      "dialogue_reveals": list(scenes.ATTRIBUTES),
    }
  }
