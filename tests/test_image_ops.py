"""input_pipeline.image_ops: crop size, short-side resize of images and flow with the original's rounding."""

import cv2
import numpy as np
import pytest

from input_pipeline import image_ops


@pytest.mark.parametrize(
    "value, size", [(320, (320, 320)), ((384, 256), (384, 256)), ([64, 96], (64, 96)), (np.int64(8), (8, 8))]
)
def test_crop_size_accepts_an_int_or_a_pair(value, size):
    assert image_ops.crop_size(value) == size


@pytest.mark.parametrize("value", [(65,), (64, 0), (64.0, 64), True, (True, 3), "320", (1, 2, 3), None])
def test_crop_size_refuses_other_forms(value):
    with pytest.raises(ValueError, match="crop size must be"):
        image_ops.crop_size(value)


def test_short_side_size_truncates_the_long_side():
    assert image_ops.short_side_size(333, 100, 60) == (199, 60)  # int(199.8)
    assert image_ops.short_side_size(360, 640, 416) == (416, 739)  # int(739.55): rounding would give 740
    assert image_ops.short_side_size(100, 100, 50) == (50, 50)


def test_resize_short_side_scales_flow_with_the_image():
    image = np.zeros((100, 150, 3), np.uint8)
    flow = np.full((100, 150, 2), [4.0, -2.0], np.float32)
    image2 = image_ops.resize_short_side(image, 50)
    flow2 = image_ops.resize_flow_short_side(flow, 50)
    assert image2.shape == (50, 75, 3) and flow2.shape == (50, 75, 2) and flow2.dtype == np.float32
    np.testing.assert_allclose(flow2, np.broadcast_to([2.0, -1.0], flow2.shape), atol=1e-6)
    tall = image_ops.resize_short_side(np.zeros((333, 100, 3), np.uint8), 60)
    assert tall.shape == (199, 60, 3)
    # Already at size: the very same arrays.
    assert image_ops.resize_short_side(image2, 50) is image2
    assert image_ops.resize_flow_short_side(flow2, 50) is flow2


def test_resize_short_side_interpolation():
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    area = image_ops.resize_short_side(image, 20, cv2.INTER_AREA)
    np.testing.assert_array_equal(area, cv2.resize(image, (30, 20), interpolation=cv2.INTER_AREA))
    cubic = image_ops.resize_short_side(image, 20)
    np.testing.assert_array_equal(cubic, cv2.resize(image, (30, 20), interpolation=cv2.INTER_CUBIC))
