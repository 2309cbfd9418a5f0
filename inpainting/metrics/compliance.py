"""Exact caption compliance on the synthetic scenes: what did the model draw in the hole?

Every synthetic scene can be re-rendered with any (shape, colour, size) at the centre
(`scenes.with_center`), and the candidates differ only inside the hole. A completion is
classified as the candidate whose hole is nearest to it (L2 over hole pixels); compliance
is how often that candidate's attributes are the caption's (= the scene's) attributes.
The renderer's own images therefore score 100%, and a fill that ignores the caption
scores about chance (`chance_levels`).
"""

from __future__ import annotations

import collections
import json
from typing import Any

import numpy as np

from inpainting import images
from inpainting import scenes as scenes_lib

ATTRIBUTES = ("shape", "color", "size")
_CACHE_SCENES = 128  # Rendered candidate sets kept (about 1.2 MB each).


def _choices() -> dict[str, tuple[str, ...]]:
  return {
    "shape": tuple(scenes_lib.SHAPES),
    "color": tuple(scenes_lib.COLORS),
    "size": tuple(scenes_lib.SIZES),
  }


def chance_levels() -> dict[str, float]:
  """Accuracy of uniform guessing: 1/len per attribute, their product for all three."""
  levels = {name: 1.0 / len(values) for name, values in _choices().items()}
  levels["all"] = float(np.prod([levels[name] for name in ATTRIBUTES]))
  return levels


class CandidateRenderer:
  """Renders (and caches) every (shape, colour, size) variant of a scene's centre.

  Candidates are ordered by (shape, colour, size) index, shape-major; `candidate_index`
  gives the attribute indices of each row. An LRU cache keyed by the scene's JSON keeps
  the last `capacity` scenes, so scoring K samples of the same scenes renders them once.
  """

  def __init__(self, capacity: int = _CACHE_SCENES):
    choices = _choices()
    self.capacity = capacity
    grid = np.meshgrid(*(np.arange(len(choices[a])) for a in ATTRIBUTES), indexing="ij")
    self.candidate_index = np.stack([g.reshape(-1) for g in grid], axis=1)  # [N, 3]
    self._names = [
      tuple(choices[a][i] for a, i in zip(ATTRIBUTES, row)) for row in self.candidate_index
    ]
    self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

  def __call__(self, scene: dict[str, Any]) -> np.ndarray:
    """uint8 [N, 64, 64, 3]: the scene with each candidate centre object."""
    key = json.dumps(scene, sort_keys=True, default=str)
    if key in self._cache:
      self._cache.move_to_end(key)
      return self._cache[key]
    renders = np.stack(
      [
        scenes_lib.render(scenes_lib.with_center(scene, shape, color, size))
        for shape, color, size in self._names
      ]
    )
    self._cache[key] = renders
    if len(self._cache) > self.capacity:
      self._cache.popitem(last=False)
    return renders


_DEFAULT_RENDERER: CandidateRenderer | None = None


def _renderer(renderer: CandidateRenderer | None) -> CandidateRenderer:
  global _DEFAULT_RENDERER
  if renderer is not None:
    return renderer
  if _DEFAULT_RENDERER is None:
    _DEFAULT_RENDERER = CandidateRenderer()
  return _DEFAULT_RENDERER


def classify_center(
  generated, scenes: list[dict[str, Any]], mask, renderer: CandidateRenderer | None = None
) -> dict[str, np.ndarray]:
  """Nearest rendered candidate to each generated hole.

  Args:
    generated: float [B, 64, 64, 3] completions in [-1, 1].
    scenes: the B scene dicts the inputs were rendered from.
    mask: [B, 64, 64, 1] (or [B, 64, 64]) with 1 = hole; only hole pixels are compared.
    renderer: a CandidateRenderer to share its cache; default: a module-level one.

  Returns:
    {"shape", "color", "size": int [B] predicted indices into SHAPES / COLORS / SIZES,
     "distance": float [B] L2 distance to the chosen candidate over the hole}.
  """
  generated = np.asarray(generated, np.float32)
  hole = np.asarray(mask, np.float32).reshape(generated.shape[:3])
  if len(scenes) != len(generated):
    raise ValueError(f"{len(generated)} images but {len(scenes)} scenes")
  renderer = _renderer(renderer)
  chosen = np.zeros(len(generated), np.int64)
  distance = np.zeros(len(generated), np.float32)
  for b, scene in enumerate(scenes):
    rows, cols = np.nonzero(hole[b] > 0.5)
    candidates = images.to_float(renderer(scene)[:, rows, cols])  # [N, P, 3]
    target = generated[b, rows, cols]  # [P, 3]
    squared = np.square(candidates - target[None]).sum(axis=(1, 2))
    chosen[b] = int(np.argmin(squared))
    distance[b] = np.sqrt(squared[chosen[b]])
  predicted = renderer.candidate_index[chosen]
  out = {name: predicted[:, i] for i, name in enumerate(ATTRIBUTES)}
  out["distance"] = distance
  return out


def true_attributes(scenes: list[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Index of each scene's centre shape / colour / size, int [B] each."""
  choices = _choices()
  return {
    name: np.array([choices[name].index(s["objects"][0][name]) for s in scenes], np.int64)
    for name in ATTRIBUTES
  }


def correct(
  generated, scenes: list[dict[str, Any]], mask, renderer: CandidateRenderer | None = None
) -> dict[str, np.ndarray]:
  """Per-image correctness (bool [B]) for "shape", "color", "size" and "all" three."""
  predicted = classify_center(generated, scenes, mask, renderer)
  truth = true_attributes(scenes)
  out = {name: predicted[name] == truth[name] for name in ATTRIBUTES}
  out["all"] = out["shape"] & out["color"] & out["size"]
  return out


def compliance(
  generated, scenes: list[dict[str, Any]], mask, renderer: CandidateRenderer | None = None
) -> dict[str, float]:
  """Accuracy of the drawn centre object against the caption: shape, color, size, all."""
  return {
    name: float(np.mean(hits)) for name, hits in correct(generated, scenes, mask, renderer).items()
  }
