"""Mask kinds, the spec parser, and vectorised random boxes."""

import numpy as np
import pytest

from inpainting import masks


def test_center_is_exactly_the_middle_square():
  mask = masks.make("center")
  assert mask.shape == (64, 64, 1) and mask.dtype == np.float32
  expected = np.zeros((64, 64, 1), np.float32)
  expected[16:48, 16:48] = 1.0
  np.testing.assert_array_equal(mask, expected)


def _rectangle(height, width, rows, cols):
  """float32 [H, W, 1] with ones on rows [r0, r1) x cols [c0, c1) (x = column, y = row)."""
  expected = np.zeros((height, width, 1), np.float32)
  expected[rows[0] : rows[1], cols[0] : cols[1]] = 1.0
  return expected


@pytest.mark.parametrize(
  "height, width, rows, cols",
  [
    (64, 64, (16, 48), (16, 48)),
    (48, 80, (12, 36), (20, 60)),  # Not square: rows follow the height, columns the width.
    (80, 40, (20, 60), (10, 30)),
    (6, 10, (1, 4), (2, 7)),  # Odd halves: floor(side / 4), then side // 2 pixels.
  ],
)
def test_center_box_position_on_any_image_size(height, width, rows, cols):
  np.testing.assert_array_equal(
    masks.make("center", height, width), _rectangle(height, width, rows, cols)
  )
  batch = masks.make_batch("outpaint", 2, height, width)
  np.testing.assert_array_equal(
    batch, np.broadcast_to(1.0 - _rectangle(height, width, rows, cols), batch.shape)
  )


@pytest.mark.parametrize(
  "spec, height, width, rows, cols",
  [
    ("box:4,10,8,6", 64, 64, (10, 16), (4, 12)),
    ("box:0,0,1,1", 64, 64, (0, 1), (0, 1)),
    ("box:56,60,8,4", 64, 64, (60, 64), (56, 64)),  # Touches the bottom-right corner.
    ("box:70,3,10,20", 32, 80, (3, 23), (70, 80)),  # x beyond the height: x is a column.
  ],
)
def test_explicit_box_position(spec, height, width, rows, cols):
  expected = _rectangle(height, width, rows, cols)
  np.testing.assert_array_equal(masks.make(spec, height, width), expected)
  np.testing.assert_array_equal(masks.make_batch(spec, 3, height, width), np.stack([expected] * 3))


def test_outpaint_is_the_inverse_of_center_and_full_is_all_ones():
  center = masks.make_batch("center", 3)
  np.testing.assert_array_equal(masks.make_batch("outpaint", 3), 1.0 - center)
  full = masks.make_batch("full", 2)
  assert full.shape == (2, 64, 64, 1) and np.all(full == 1.0)


def test_explicit_box():
  mask = masks.make(masks.parse("box:4,10,8,6"))  # x=4 (column), y=10 (row)
  assert mask.sum() == 8 * 6
  assert mask[10:16, 4:12].min() == 1.0
  assert mask[9, 4] == 0.0 and mask[10, 3] == 0.0 and mask[16, 4] == 0.0 and mask[10, 12] == 0.0
  with pytest.raises(ValueError, match="does not fit"):
    masks.make("box:60,0,8,8")


def test_random_boxes_are_rectangles_of_bounded_size_and_seeded():
  batch = masks.make_batch("random_box", 256, rng=np.random.default_rng(0))
  assert batch.shape == (256, 64, 64, 1) and set(np.unique(batch)) <= {0.0, 1.0}
  rows = batch[..., 0].any(axis=2)  # [B, H]: rows touched by the box
  cols = batch[..., 0].any(axis=1)
  heights, widths = rows.sum(1), cols.sum(1)
  assert heights.min() >= 16 and heights.max() <= 48
  assert widths.min() >= 16 and widths.max() <= 48
  # A rectangle: its area is the product of its extents.
  np.testing.assert_array_equal(batch.sum(axis=(1, 2, 3)), heights * widths)
  assert len(np.unique(heights)) > 10  # sizes actually vary
  again = masks.make_batch("random_box", 256, rng=np.random.default_rng(0))
  np.testing.assert_array_equal(batch, again)
  with pytest.raises(ValueError, match="random generator"):
    masks.make_batch("random_box", 2)


def test_random_boxes_sit_where_their_uniforms_say():
  # uniforms = (height, width, row, column) fractions. Sides take H/4 + floor(u * (H/2 + 1))
  # pixels (16..48 on 64), the corner floor(u * (free room + 1)); worked out by hand here.
  eps = 1e-9
  cases = [
    # (uniforms, height, width, rows [y0, y1), cols [x0, x1))
    ((0.0, 0.0, 0.0, 0.0), 64, 64, (0, 16), (0, 16)),  # Smallest box, top-left corner.
    ((1 - eps,) * 4, 64, 64, (16, 64), (16, 64)),  # Largest box, bottom-right corner.
    ((0.5, 0.25, 0.5, 1 - eps), 64, 64, (16, 48), (40, 64)),  # h 32, w 24; y 16, x 40.
    ((0.2, 0.7, 0.9, 0.1), 64, 64, (38, 60), (2, 41)),  # h 16+6, w 16+23; y 38.7, x 2.6.
    ((1 - eps, 0.0, 1 - eps, 0.0), 48, 80, (12, 48), (0, 20)),  # h 36 (of 48), w 20 (of 80).
    ((0.0, 1 - eps, 0.0, 1 - eps), 48, 80, (0, 12), (20, 80)),  # h 12, w 60, right edge.
  ]
  for uniforms, height, width, rows, cols in cases:
    got = masks.make_batch(
      "random_box", 1, height, width, uniforms=np.array([uniforms], np.float64)
    )[0]
    np.testing.assert_array_equal(got, _rectangle(height, width, rows, cols), err_msg=str(uniforms))


def test_random_boxes_are_solid_rectangles_that_reach_every_edge():
  batch = masks.make_batch("random_box", 512, rng=np.random.default_rng(1))[..., 0]
  y0, x0, y1, x1 = [], [], [], []
  for mask in batch:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    expected = _rectangle(64, 64, (rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1))[..., 0]
    np.testing.assert_array_equal(mask, expected)  # Solid: no gaps inside its extent.
    y0.append(rows[0])
    x0.append(cols[0])
    y1.append(rows[-1] + 1)
    x1.append(cols[-1] + 1)
  y0, x0, y1, x1 = map(np.array, (y0, x0, y1, x1))
  # Corners spread over the image: some boxes touch each edge, and none is always centred.
  assert (y0 == 0).any() and (x0 == 0).any() and (y1 == 64).any() and (x1 == 64).any()
  assert len(np.unique(y0)) > 20 and len(np.unique(x0)) > 20
  # Rows and columns are placed independently (not one shared offset).
  assert not np.array_equal(y0, x0)
  # The same draws through `uniforms` give the same boxes.
  uniforms = np.random.default_rng(1).random((512, 4))
  np.testing.assert_array_equal(
    masks.make_batch("random_box", 512, uniforms=uniforms)[..., 0], batch
  )


@pytest.mark.parametrize(
  "spec", ["", "centre", "box:1,2,3", "box:a,b,c,d", "box:0,0,0,4", "box:-1,0,4,4"]
)
def test_parse_rejects_bad_specs_with_one_line(spec):
  with pytest.raises(ValueError) as error:
    masks.parse(spec)
  assert "\n" not in str(error.value)


def test_parse_accepts_every_kind():
  for name in ("center", "random_box", "full", "outpaint"):
    assert masks.parse(name).kind == name
  assert masks.parse(" box:1,2,3,4 ") == masks.MaskSpec("box", (1, 2, 3, 4))
  assert masks.parse("random_box").is_random and not masks.parse("center").is_random
