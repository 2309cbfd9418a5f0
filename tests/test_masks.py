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
