"""Procedural captioned scenes: the project's embedded default dataset (pure numpy).

Each 64x64 scene is a textured two-tone background with 2 to 4 coloured shapes. Exactly
one shape, `scene["objects"][0]`, sits in the centre so that the 32x32 hole (pixels 16:48)
hides it completely; the others lie in the border ring and never touch the hole. Every
caption names the centre shape's size, colour and shape, so the caption determines what
belongs in the hole, and `with_center` + `render` can draw every alternative exactly: that
is how evaluation measures caption compliance.

A scene is a JSON-serialisable dict, and `render(scene)` reproduces the generated image bit
for bit (the prepared records store the scene next to the pixels):

    {"background": {"kind": "gradient" | "stripes", "colors": [[r, g, b], [r, g, b]],
                    "angle": degrees, "period": pixels (stripes), "phase": radians (stripes),
                    "noise": grain amplitude, "noise_offset": [x, y] into a fixed texture},
     "objects": [{"shape", "color", "size", "x", "y", "radius", "rotation"}, ...]}

Coordinates are in pixels with (0, 0) the top-left corner of the image, x to the right and
y down; a pixel's centre is at (i + 0.5, j + 0.5). Shapes are drawn from signed distance
fields, with one pixel of analytic anti-aliasing.
"""

from __future__ import annotations

import colorsys
import copy
import itertools
import math
from typing import Any

import numpy as np

IMAGE_SIZE = 64
HOLE_START, HOLE_END = 16, 48  # The erased centre square, in pixels (end exclusive).

SHAPES = ("circle", "square", "triangle", "star", "heart", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
  "red": (220, 30, 30),
  "orange": (255, 120, 0),
  "yellow": (250, 230, 40),
  "green": (30, 160, 50),
  "cyan": (0, 200, 220),
  "blue": (30, 60, 220),
  "purple": (140, 40, 180),
  "pink": (255, 120, 200),
  "white": (250, 250, 250),
  "black": (15, 15, 15),
}
SIZES = ("small", "large")

# The centre object's radius depends only on its size, so `with_center` is exact.
CENTER_RADIUS = {"small": 6.5, "large": 12.5}
CENTER_JITTER = 1.5  # Max offset of the centre object from the image centre, pixels.
BORDER_RADIUS = {"small": 3.8, "large": 6.0}
BORDER_RADIUS_JITTER = 0.05  # Border radii vary by +-5 %.
MAX_ROTATION = 20.0  # Degrees either way: squares stay squares, hearts stay upright.
MIN_BACKGROUND_DISTANCE = 80.0  # RGB distance between any named colour and the background.
NUM_CAPTIONS = 5


def _regular_star(points: int, outer: float, inner: float) -> np.ndarray:
  angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
  radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
  return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


# Unit polygon outlines (radius 1, pointing up, y down); circle, square and heart are
# analytic below.
_OUTLINES: dict[str, np.ndarray] = {
  "triangle": _regular_star(3, 1.1, 1.1)[::2],
  "star": _regular_star(5, 1.1, 0.45),
  "diamond": np.array([[0.0, -1.1], [0.7, 0.0], [0.0, 1.1], [-0.7, 0.0]]),
}
_SQUARE_HALF_SIDE = 0.78


def _heart_geometry(extent: float) -> tuple[float, float, float]:
  """Heart = a square standing on a corner plus two discs centred on its upper sides.

  Returns (half-side h = disc radius, disc offset h/sqrt2, vertical shift that centres the
  outline), scaled so that the heart reaches `extent` from its centre.
  """
  offset, shift = 1 / math.sqrt(2), (1 - 1 / math.sqrt(2)) / 2  # For h = 1.
  reach = max(shift + 2 * offset, math.hypot(offset, shift - offset) + 1)
  scale = extent / reach
  return scale, offset * scale, shift * scale


_HEART_HALF_SIDE, _HEART_OFFSET, _HEART_SHIFT = _heart_geometry(1.05)

# How far each shape reaches from its centre, in radii (rotation invariant).
EXTENT = {
  "circle": 1.0,
  "square": _SQUARE_HALF_SIDE * math.sqrt(2),
  "heart": 1.05,
  **{k: float(np.linalg.norm(v, axis=1).max()) for k, v in _OUTLINES.items()},
}


# --- drawing ---------------------------------------------------------------------------


def _box_sdf(u: np.ndarray, v: np.ndarray, half_side: float) -> np.ndarray:
  qu, qv = np.abs(u) - half_side, np.abs(v) - half_side
  outside = np.hypot(np.maximum(qu, 0.0), np.maximum(qv, 0.0))
  return outside + np.minimum(np.maximum(qu, qv), 0.0)


def _polygon_sdf(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
  """Signed distance (negative inside) from points to a closed polygon, any convexity."""
  ax, ay = vertices[:, 0, None, None], vertices[:, 1, None, None]
  following = np.roll(vertices, -1, axis=0)
  ex = following[:, 0, None, None] - ax
  ey = following[:, 1, None, None] - ay
  wx, wy = u[None] - ax, v[None] - ay
  t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
  dist2 = ((wx - ex * t) ** 2 + (wy - ey * t) ** 2).min(axis=0)
  # Crossing number: count edges that straddle the point's row to its right.
  above, below = wy >= 0, wy < ey
  crosses = (above & below & (ex * wy > ey * wx)) | (~above & ~below & (ex * wy <= ey * wx))
  inside = crosses.sum(axis=0) % 2 == 1
  return np.where(inside, -1.0, 1.0) * np.sqrt(dist2)


def _unit_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Signed distance to a shape of radius 1 at the origin, in the shape's own frame."""
  if shape == "circle":
    return np.hypot(u, v) - 1.0
  if shape == "square":
    return _box_sdf(u, v, _SQUARE_HALF_SIDE)
  if shape == "heart":
    v = v - _HEART_SHIFT
    diagonal = math.sqrt(0.5)
    square = _box_sdf((u + v) * diagonal, (v - u) * diagonal, _HEART_HALF_SIDE)
    lobe_v = v + _HEART_OFFSET
    lobes = np.hypot(np.abs(u) - _HEART_OFFSET, lobe_v) - _HEART_HALF_SIDE
    return np.minimum(square, lobes)
  return _polygon_sdf(u, v, _OUTLINES[shape])


def _coverage(obj: dict[str, Any], px: np.ndarray, py: np.ndarray) -> np.ndarray:
  """Fraction of each pixel covered by `obj` (SDF with a one-pixel anti-aliased edge).

  Args:
    obj: an object dict.
    px: pixel-centre x coordinates, shape [1, W].
    py: pixel-centre y coordinates, shape [H, 1].
  """
  angle = math.radians(obj["rotation"])
  radius = obj["radius"]
  cos, sin = math.cos(angle) / radius, math.sin(angle) / radius
  dx, dy = px - obj["x"], py - obj["y"]
  # Undo the rotation: the shape's frame, in radii.
  u, v = cos * dx + sin * dy, cos * dy - sin * dx
  return np.clip(0.5 - radius * _unit_sdf(obj["shape"], u, v), 0.0, 1.0)


_COORDS = np.arange(IMAGE_SIZE, dtype=np.float64) + 0.5 - IMAGE_SIZE / 2  # Pixel centres.
# A fixed film-grain texture; a scene shows the 64x64 window at its `noise_offset`.
_GRAIN_SIZE = 192
_GRAIN = np.random.default_rng(20240601).standard_normal((_GRAIN_SIZE, _GRAIN_SIZE))


def _background(background: dict[str, Any]) -> np.ndarray:
  """The float64 background of a scene, channels first: [3, 64, 64]."""
  angle = math.radians(background["angle"])
  cos, sin = math.cos(angle), math.sin(angle)
  if background["kind"] == "gradient":
    along = _COORDS[None, :] * cos + _COORDS[:, None] * sin
    mix = np.clip(along / IMAGE_SIZE + 0.5, 0.0, 1.0)
  elif background["kind"] == "stripes":
    # sin(a(x) + b(y)), expanded so that only 1-D sines are evaluated.
    frequency = 2 * np.pi / background["period"]
    across_x = frequency * cos * _COORDS + background["phase"]
    across_y = frequency * sin * _COORDS
    wave = np.sin(across_x)[None, :] * np.cos(across_y)[:, None]
    wave += np.cos(across_x)[None, :] * np.sin(across_y)[:, None]
    mix = 0.5 + 0.5 * wave
  else:
    raise ValueError(f"unknown background kind {background['kind']!r}")
  x, y = background["noise_offset"]
  grain = background["noise"] * _GRAIN[y : y + IMAGE_SIZE, x : x + IMAGE_SIZE]  # All channels.
  first, second = background["colors"]
  return np.stack([a + (b - a) * mix + grain for a, b in zip(first, second)])


def render(scene: dict[str, Any]) -> np.ndarray:
  """Draws a scene dict; returns uint8 [64, 64, 3]. `generate` uses it, so it is exact."""
  image = _background(scene["background"])
  for obj in scene["objects"]:
    reach = obj["radius"] * EXTENT[obj["shape"]] + 1.0
    # Only the object's bounding box is evaluated.
    x0, x1 = max(0, int(obj["x"] - reach)), min(IMAGE_SIZE, int(math.ceil(obj["x"] + reach)))
    y0, y1 = max(0, int(obj["y"] - reach)), min(IMAGE_SIZE, int(math.ceil(obj["y"] + reach)))
    if x0 >= x1 or y0 >= y1:
      continue
    px = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    py = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    alpha = _coverage(obj, px, py)
    for channel, value in enumerate(COLORS[obj["color"]]):
      patch = image[channel, y0:y1, x0:x1]
      patch += alpha * (value - patch)
  pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return np.ascontiguousarray(pixels.transpose(1, 2, 0))


def with_center(scene: dict[str, Any], shape: str, color: str, size: str) -> dict[str, Any]:
  """A copy of `scene` whose centre object has other attributes, same position and rotation.

  Evaluation renders every (shape, colour, size) candidate this way and compares them with
  a generated hole, so the candidates differ only inside the hole.
  """
  if shape not in SHAPES or color not in COLORS or size not in SIZES:
    raise ValueError(f"unknown centre attributes {(shape, color, size)!r}")
  scene = copy.deepcopy(scene)
  center = scene["objects"][0]
  center.update(shape=shape, color=color, size=size, radius=CENTER_RADIUS[size])
  return scene


# --- sampling ----------------------------------------------------------------------------


def _distance_to_hole(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Euclidean distance from points to the hole square (0 inside it)."""
  dx = np.maximum(np.maximum(HOLE_START - x, x - HOLE_END), 0.0)
  dy = np.maximum(np.maximum(HOLE_START - y, y - HOLE_END), 0.0)
  return np.hypot(dx, dy)


def _sample_background(rng: np.random.Generator) -> dict[str, Any]:
  """Two muted tones, far (in RGB) from every named colour, so every object stands out."""
  palette = np.asarray(list(COLORS.values()), np.float64)
  tones: list[list[int]] = []
  while len(tones) < 2:
    hue, saturation, value = rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(0.35, 0.75)
    tone = np.rint(255 * np.asarray(colorsys.hsv_to_rgb(hue, saturation, value)))
    if tones:  # The whole blend between the two tones must stay clear of the palette.
      tone_points = np.linspace(tones[0], tone, 5)
    else:
      tone_points = tone[None]
    distance = np.linalg.norm(tone_points[:, None] - palette[None], axis=-1).min()
    if distance >= MIN_BACKGROUND_DISTANCE:
      tones.append([int(c) for c in tone])
  kind = "gradient" if rng.uniform() < 0.5 else "stripes"
  return {
    "kind": kind,
    "colors": tones,
    "angle": round(float(rng.uniform(0.0, 360.0)), 2),
    "period": round(float(rng.uniform(6.0, 16.0)), 2) if kind == "stripes" else 0.0,
    "phase": round(float(rng.uniform(0.0, 2 * np.pi)), 3) if kind == "stripes" else 0.0,
    "noise": round(float(rng.uniform(0.0, 6.0)), 2),
    "noise_offset": [int(v) for v in rng.integers(0, _GRAIN_SIZE - IMAGE_SIZE + 1, size=2)],
  }


def _sample_border_objects(rng: np.random.Generator, count: int) -> list[dict[str, Any]]:
  """`count` shapes (fewer if they do not fit) in the border ring, apart from each other."""
  objects: list[dict[str, Any]] = []
  margins: list[float] = []
  for _ in range(count):
    shape = SHAPES[rng.integers(len(SHAPES))]
    size = SIZES[rng.integers(len(SIZES))]
    radius = BORDER_RADIUS[size] * rng.uniform(1 - BORDER_RADIUS_JITTER, 1 + BORDER_RADIUS_JITTER)
    margin = radius * EXTENT[shape] + 1.0  # Reach plus anti-aliasing and a little air.
    xs, ys = rng.uniform(margin, IMAGE_SIZE - margin, size=(2, 256))
    valid = _distance_to_hole(xs, ys) >= margin
    for other, other_margin in zip(objects, margins):
      valid &= np.hypot(xs - other["x"], ys - other["y"]) >= margin + other_margin + 1.0
    if not valid.any():
      continue
    first = int(np.argmax(valid))
    objects.append(
      {
        "shape": shape,
        "color": list(COLORS)[rng.integers(len(COLORS))],
        "size": size,
        "x": round(float(xs[first]), 3),
        "y": round(float(ys[first]), 3),
        "radius": round(float(radius), 3),
        "rotation": round(float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)), 2),
      }
    )
    margins.append(margin)
  return objects


# --- captions ------------------------------------------------------------------------------

# The centre object's phrase comes in several attribute orders, so that no attribute is
# found by its position alone. Border objects are always "a {size} {color} {shape}" with
# a location (`_location`).
CENTER_FORMS = (
  "a {size} {color} {shape}",
  "a {color} {shape}, {size} in size",
  "a {size} {shape} in {color}",
  "a {shape} that is {size} and {color}",
)
# Captions: {center} is a CENTER_FORMS phrase, {context} one or two border objects with
# their locations, {background} `_background_phrase`. Some name the context first (then
# one border object, so that 24 tokens keep the whole centre phrase), and some give the
# centre object no location word: the border objects' locations tell them apart.
_TEMPLATES = (
  "{center} in the middle, with {context}",
  "{center} at the centre, next to {context}",
  "in the middle there is {center}, and {context}",
  "{center} surrounded by {context}",
  "{center} in the center {background}",
  "a picture of {center} in the middle {background}, with {context}",
  "the middle shows {center}; {context} nearby",
  "{center} sits in the centre of the image {background}",
  "{context}, and {center} in the middle",
  "{context}, and the centre has {center}",
  "next to {context} there is {center}",
  "{context}; the middle holds {center}",
  "{context}, close to {center}",
  "{center} {background}",
)


def _describe(obj: dict[str, Any], form: str = CENTER_FORMS[0]) -> str:
  return form.format(size=obj["size"], color=obj["color"], shape=obj["shape"])


def center_phrases(obj: dict[str, Any]) -> list[str]:
  """Every phrase a generator caption can name the centre object `obj` with."""
  return [_describe(obj, form) for form in CENTER_FORMS]


def _context_first(template: str) -> bool:
  return -1 < template.find("{context}") < template.find("{center}")


def _location(obj: dict[str, Any]) -> str:
  """Where a border object is: "in the top left corner", "on the right", ..."""
  third = IMAGE_SIZE / 3
  row = "top" if obj["y"] < third else "bottom" if obj["y"] > 2 * third else ""
  column = "left" if obj["x"] < third else "right" if obj["x"] > 2 * third else ""
  if row and column:
    return f"in the {row} {column} corner"
  if row:
    return f"at the {row}"
  return f"on the {column or 'side'}"


def _background_phrase(background: dict[str, Any]) -> str:
  mean = np.mean(background["colors"])
  tone = "dark" if mean < 115 else "light" if mean > 150 else "grey"
  texture = "striped" if background["kind"] == "stripes" else "shaded"
  return f"on a {tone} {texture} background"


def _placed(obj: dict[str, Any]) -> str:
  """A border object with its location: "a small red star in the top left corner"."""
  return f"{_describe(obj)} {_location(obj)}"


def _context(border: list[dict[str, Any]], chosen) -> str:
  return " and ".join(_placed(border[i]) for i in chosen)


def _most_mentioned(template: str, border: list[dict[str, Any]]) -> int:
  """How many border objects a caption in `template` names at most: one when the context
  comes first (the centre phrase must fit in 24 tokens), else up to two."""
  return 1 if _context_first(template) else min(2, len(border))


def _captions(rng: np.random.Generator, scene: dict[str, Any]) -> list[str]:
  """NUM_CAPTIONS paraphrases; each names the centre object's size, colour and shape."""
  center, border = scene["objects"][0], scene["objects"][1:]
  background = _background_phrase(scene["background"])
  captions = []
  for template_index in rng.choice(len(_TEMPLATES), NUM_CAPTIONS, replace=False):
    template = _TEMPLATES[template_index]
    mentioned = rng.permutation(len(border))[
      : rng.integers(1, _most_mentioned(template, border) + 1)
    ]
    form = CENTER_FORMS[rng.integers(len(CENTER_FORMS))]
    captions.append(
      template.format(
        center=_describe(center, form), context=_context(border, mentioned), background=background
      )
    )
  return captions


def possible_captions(scene: dict[str, Any]) -> set[str]:
  """Every caption `_captions` can write for `scene` (for checking held-out wordings)."""
  center, border = scene["objects"][0], scene["objects"][1:]
  background = _background_phrase(scene["background"])
  found = set()
  for template in _TEMPLATES:
    for count in range(1, _most_mentioned(template, border) + 1):
      for chosen in itertools.permutations(range(len(border)), count):
        for phrase in center_phrases(center):
          found.add(
            template.format(center=phrase, context=_context(border, chosen), background=background)
          )
  return found


def generate(seed: int, index: int) -> tuple[np.ndarray, dict[str, Any], list[str]]:
  """Generates scene number `index` of the stream `seed` (deterministic).

  Returns:
    (uint8 [64, 64, 3] image, JSON-serialisable scene dict, NUM_CAPTIONS captions).
  """
  rng = np.random.default_rng([seed, index])
  background = _sample_background(rng)
  size = SIZES[rng.integers(len(SIZES))]
  center = {
    "shape": SHAPES[rng.integers(len(SHAPES))],
    "color": list(COLORS)[rng.integers(len(COLORS))],
    "size": size,
    "x": round(float(IMAGE_SIZE / 2 + rng.uniform(-CENTER_JITTER, CENTER_JITTER)), 3),
    "y": round(float(IMAGE_SIZE / 2 + rng.uniform(-CENTER_JITTER, CENTER_JITTER)), 3),
    "radius": CENTER_RADIUS[size],
    "rotation": round(float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)), 2),
  }
  border = []
  while not border:  # At least one border object, so every caption has context.
    border = _sample_border_objects(rng, int(rng.integers(1, 4)))
  scene = {"background": background, "objects": [center, *border]}
  return render(scene), scene, _captions(rng, scene)


# --- conversations -------------------------------------------------------------------------
#
# For the dialogue families (issue 13): a context caption that describes what the hole leaves
# visible (the background and the border objects) and never the centre object, and a
# dialogue whose turns reveal the centre object's attributes one at a time. Both come from
# their own random stream, `default_rng([seed, index, CONVERSATION_STREAM])`, so `generate`'s
# images, scenes and captions are exactly what they were before conversations existed.

CONVERSATION_STREAM = 1
ATTRIBUTES = ("shape", "color", "size")  # What a synthetic dialogue turn reveals.
NUM_TURNS = len(ATTRIBUTES)

_CONTEXT_TEMPLATES = (
  "{objects} {background}",
  "a picture {background} with {objects}",
  "around the middle, {background}: {objects}",
  "{background}, with {objects} near the edges",
  "the border shows {objects}, {background}",
  "an image {background} showing {objects}",
  "near the edges there is {objects}, {background}",
  "{objects}, all {background}",
)

# Per attribute: (question, answers) pairs; an answer's {value} is the attribute's value and
# every answer names it. Size questions may be yes/no questions: (question, yes-value,
# answers when yes, answers when no).
_SHAPE_TURNS = (
  "what is in the middle?",
  "what shape is in the middle?",
  "what shape is the object in the centre?",
  "which shape is hidden in the middle?",
  "what is the middle object?",
  "which shape is it?",
)
_SHAPE_ANSWERS = ("a {value}", "it is a {value}", "{value}", "it's a {value}", "a {value} shape")
_COLOR_TURNS = (
  "which colour is it?",
  "what colour is it?",
  "what color is the object in the middle?",
  "what colour is the middle object?",
  "which color does it have?",
)
_COLOR_ANSWERS = ("it is {value}", "{value}", "it's {value}", "the colour is {value}")
_SIZE_OPEN_TURNS = ("how big is it?", "what size is it?", "is it small or large?")
_SIZE_OPEN_ANSWERS = ("{value}", "it is {value}", "it's a {value} one")
_SIZE_YES_NO_TURNS = (("is it big?", "large"), ("is it large?", "large"), ("is it small?", "small"))
_SIZE_YES_ANSWERS = ("yes, {value}", "yes, it is {value}")
_SIZE_NO_ANSWERS = ("no, {value}", "no, it is {value}")


def _pick(rng: np.random.Generator, options: tuple[Any, ...]) -> Any:
  return options[int(rng.integers(len(options)))]


def _context_caption(rng: np.random.Generator, scene: dict[str, Any]) -> str:
  """Every border object (in a random order) and the background; never the centre object."""
  border = scene["objects"][1:]
  phrases = [_placed(border[i]) for i in rng.permutation(len(border))]
  objects = phrases[0] if len(phrases) < 2 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
  template = _pick(rng, _CONTEXT_TEMPLATES)
  return template.format(objects=objects, background=_background_phrase(scene["background"]))


def _turn(rng: np.random.Generator, attribute: str, value: str) -> dict[str, str]:
  if attribute == "shape":
    question, answer = _pick(rng, _SHAPE_TURNS), _pick(rng, _SHAPE_ANSWERS)
  elif attribute == "color":
    question, answer = _pick(rng, _COLOR_TURNS), _pick(rng, _COLOR_ANSWERS)
  elif rng.uniform() < 0.5:
    question, answer = _pick(rng, _SIZE_OPEN_TURNS), _pick(rng, _SIZE_OPEN_ANSWERS)
  else:
    question, asked = _pick(rng, _SIZE_YES_NO_TURNS)
    answer = _pick(rng, _SIZE_YES_ANSWERS if asked == value else _SIZE_NO_ANSWERS)
  return {"question": question, "answer": answer.format(value=value), "reveals": attribute}


def conversation(seed: int, index: int, scene: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
  """The context caption and dialogue of scene `index` of the stream `seed`.

  Args:
    seed, index: as given to `generate`.
    scene: the scene `generate(seed, index)` returned.

  Returns:
    (context caption, NUM_TURNS turns {"question", "answer", "reveals"}): the context caption
    names the background and every border object, not the centre object; turn t's answer
    names the centre object's attribute `reveals` (one of ATTRIBUTES, each revealed once, in
    a random order).
  """
  rng = np.random.default_rng([seed, index, CONVERSATION_STREAM])
  context = _context_caption(rng, scene)
  center = scene["objects"][0]
  order = [ATTRIBUTES[i] for i in rng.permutation(NUM_TURNS)]
  return context, [_turn(rng, attribute, center[attribute]) for attribute in order]
