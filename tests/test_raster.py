"""inpainting/strokes.py: the rasteriser on known strokes, parsing, augmentation, captions."""

import numpy as np
import pytest

from inpainting import strokes

WHITE = 255


def line(*points):
  return np.array(points, np.float64)


def draw(stroke_list, line_width=1.0):
  """Pixel-coordinate drawing (no fitting), one channel."""
  image = strokes.rasterize(stroke_list, line_width=line_width, fit_box=False)
  assert image.shape == (64, 64, 3) and image.dtype == np.uint8
  assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
  return image[..., 0]


def test_a_horizontal_stroke_through_pixel_centres_inks_exactly_its_row():
  grey = draw([line((10, 20), (50, 20))])
  expected = np.full((64, 64), WHITE, np.uint8)
  expected[20, 10:51] = 0  # Columns 10..50 of row 20, nothing else.
  np.testing.assert_array_equal(grey, expected)


def test_a_wider_stroke_inks_the_rows_within_half_its_width():
  grey = draw([line((10, 20), (50, 20))], line_width=3.0)
  inked_rows = np.flatnonzero((grey < WHITE).any(1))
  assert inked_rows.tolist() == [19, 20, 21]
  assert (grey[19:22, 10:51] == 0).all()
  # Round caps: one pixel beyond each end, on the stroke's row, at distance 1 -> full ink.
  assert grey[20, 9] == 0 and grey[20, 51] == 0


def test_a_stroke_between_pixel_centres_is_anti_aliased():
  grey = draw([line((10, 20.5), (50, 20.5))])
  # Rows 20 and 21 are half a pixel from the line: half covered each, i.e. mid grey.
  assert (grey[20, 12:49] == 128).all() and (grey[21, 12:49] == 128).all()
  assert (grey[:20] == WHITE).all() and (grey[22:] == WHITE).all()


def test_a_single_point_stroke_is_a_dot_and_a_vertical_stroke_a_column():
  grey = draw([line((5, 7)), line((40, 30), (40, 33))])
  assert grey[7, 5] == 0 and (grey[30:34, 40] == 0).all()
  assert int((grey < WHITE).sum()) == 1 + 4


def test_pairs_of_segments_and_pixels_match_a_brute_force_distance_field():
  rng = np.random.default_rng(0)
  drawing = [rng.uniform(-5, 70, (n, 2)) for n in (1, 2, 7, 15)]  # Some points off-image.
  for width in (1.0, 1.5, 2.5):
    got = strokes.ink(drawing, 64, width)
    rows, cols = np.mgrid[0:64, 0:64]
    pixel = np.stack([cols, rows], -1).astype(np.float64)
    best = np.full((64, 64), np.inf)
    for s in drawing:
      pairs = [(s[0], s[0])] if len(s) == 1 else list(zip(s[:-1], s[1:]))
      for a, b in pairs:
        d = b - a
        t = np.clip(((pixel - a) @ d) / max(d @ d, 1e-12), 0, 1)
        best = np.minimum(best, np.linalg.norm(pixel - a - t[..., None] * d, axis=-1))
    np.testing.assert_allclose(got, np.clip(width / 2 + 0.5 - best, 0, 1), atol=1e-6)


def test_fitting_centres_the_bounding_box_and_keeps_its_aspect():
  square = [line((0, 0), (255, 0), (255, 255), (0, 255), (0, 0))]
  grey = strokes.rasterize(square, line_width=1.0, margin=2.0)[..., 0]
  inked = np.argwhere(grey < WHITE)
  # The box spans 64 - 2 * 2 - 1 = 59 px around the centre 31.5: 2.0 .. 61.0.
  assert inked.min(0).tolist() == [2, 2] and inked.max(0).tolist() == [61, 61]
  wide = [line((0, 100), (200, 100), (200, 150))]  # 200 x 50: fitted by its width.
  inked = np.argwhere(strokes.rasterize(wide, line_width=1.0, margin=2.0)[..., 0] < WHITE)
  assert inked[:, 1].min() == 2 and inked[:, 1].max() == 61
  height = inked[:, 0].max() - inked[:, 0].min()
  assert abs(height - 59 / 4) <= 1.5  # Aspect kept: a quarter of the width.


def test_quickdraw_parsing_and_each_reason_to_refuse_a_drawing():
  parsed = strokes.from_quickdraw([[[0, 10, 20], [5, 5, 5]], [[], []], [[1], [2], [0]]])
  assert [s.tolist() for s in parsed] == [[[0, 5], [10, 5], [20, 5]], [[1, 2]]]
  cases = {
    strokes.MALFORMED: ["nope", [[1, 2]], [[[1, 2], [3]]], [[["1"], [2]]], [[[True], [2]]]],
    strokes.EMPTY: [[], [[[], []]]],
    strokes.OUT_OF_RANGE: [[[[0, 256], [0, 0]]], [[[-1], [3]]], [[[float("nan")], [3]]]],
  }
  for reason, drawings in cases.items():
    for drawing in drawings:
      with pytest.raises(strokes.StrokeError) as error:
        strokes.from_quickdraw(drawing)
      assert error.value.reason == reason, drawing


def test_stroke3_offsets_accumulate_and_pen_lifts_split_strokes():
  sequence = np.array([[1, 1, 0], [2, 0, 1], [0, 3, 0], [1, 0, 1], [5, 5, 1]], np.int16)
  parsed = strokes.from_stroke3(sequence)
  assert [s.tolist() for s in parsed] == [[[1, 1], [3, 1]], [[3, 4], [4, 4]], [[9, 9]]]
  cases = {
    strokes.MALFORMED: [np.zeros((3, 2)), np.array([[1, 1, 2]]), np.array(["a", "b", "c"]), "x"],
    strokes.EMPTY: [np.zeros((0, 3), np.int16)],
    strokes.OUT_OF_RANGE: [np.array([[1001, 0, 0]]), np.array([[np.inf, 0, 1]])],
  }
  for reason, sequences in cases.items():
    for sequence in sequences:
      with pytest.raises(strokes.StrokeError) as error:
        strokes.from_stroke3(sequence)
      assert error.value.reason == reason, sequence


def test_augmentation_is_seeded_and_changes_the_picture():
  drawing = [line((0, 0), (100, 0), (100, 60)), line((20, 30), (80, 30))]
  plain = strokes.render(drawing)
  first, again = (
    strokes.render(drawing, augment_seed=(1, 2)),
    strokes.render(drawing, augment_seed=(1, 2)),
  )
  np.testing.assert_array_equal(first, again)
  assert (first != plain).any() and (first != strokes.render(drawing, augment_seed=(3,))).any()


def test_captions_name_the_class_with_the_right_article():
  assert strokes.captions("cat")[0] == "a drawing of a cat"
  assert strokes.captions("apple")[0] == "a drawing of an apple"
  assert strokes.captions("The Eiffel Tower")[0] == "a drawing of The Eiffel Tower"
  assert len(set(strokes.captions("cat"))) == len(strokes.CAPTION_TEMPLATES) > 1
