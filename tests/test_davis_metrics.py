"""Tests of cmp_jax.evaluation.davis_metrics against hand-computed small cases.

The boundary cases use 10 x 10 images: their diagonal is 14.14 pixels, so the
default tolerance 0.008 (and 0.05) gives a radius of ceil(0.11) = 1 pixel, a
disk that is the pixel and its 4 neighbours. A square mask on rows and columns
a..b (away from the image border) has as ``seg2bmap`` boundary the ring of the
square a-1..b: its own last row and column and the background row and column
before its first ones.
"""

import numpy as np
import pytest

from cmp_jax.evaluation.davis_metrics import (
    boundary_f,
    boundary_map,
    boundary_precision_recall,
    boundary_radius,
    evaluate_sequence,
    region_j,
    summarize,
)


def _square(rows: tuple[int, int], cols: tuple[int, int], shape=(10, 10)) -> np.ndarray:
    """Bool mask, True on rows r0..r1 and columns c0..c1 (inclusive)."""
    mask = np.zeros(shape, bool)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return mask


GT_SQUARE = _square((2, 5), (2, 5))  # 16 pixels; boundary: ring of rows/cols 1..5, 16 pixels
SHIFTED_SQUARE = _square((2, 5), (4, 7))  # GT_SQUARE moved 2 columns right
SMALL_SQUARE = _square((2, 3), (2, 3))  # 4 pixels; boundary: ring of rows/cols 1..3, 8 pixels


def test_region_j_of_overlapping_rectangles():
    # 4x4 squares overlapping on 4 rows x 2 columns: 8 / (16 + 16 - 8) = 1/3.
    assert region_j(SHIFTED_SQUARE, GT_SQUARE) == pytest.approx(1 / 3)
    # 2x3 inside 4x4: 6 / 16.
    assert region_j(_square((2, 3), (2, 4)), GT_SQUARE) == pytest.approx(6 / 16)
    assert region_j(GT_SQUARE, GT_SQUARE) == 1.0
    assert region_j(_square((7, 8), (7, 8)), GT_SQUARE) == 0.0


def test_region_j_empty_conventions():
    empty = np.zeros((10, 10), bool)
    assert region_j(empty, empty) == 1.0
    assert region_j(empty, GT_SQUARE) == 0.0
    assert region_j(GT_SQUARE, empty) == 0.0


def test_boundary_map_is_the_offset_ring_of_a_square():
    expected = _square((1, 5), (1, 5)) & ~_square((2, 4), (2, 4))
    np.testing.assert_array_equal(boundary_map(GT_SQUARE), expected)
    assert boundary_map(GT_SQUARE).sum() == 16


def test_boundary_map_ignores_the_image_border():
    assert not boundary_map(np.ones((6, 6), bool)).any()
    # Right half of the image: only the background column 2 (left of column 3) is boundary.
    right_half = np.zeros((6, 6), bool)
    right_half[:, 3:] = True
    expected = np.zeros((6, 6), bool)
    expected[:, 2] = True
    np.testing.assert_array_equal(boundary_map(right_half), expected)


def test_boundary_radius():
    assert boundary_radius((480, 854)) == 8  # ceil(0.008 * 979.6)
    assert boundary_radius((10, 10)) == 1  # ceil(0.008 * 14.14)
    assert boundary_radius((10, 10), 0.15) == 3  # ceil(2.12)
    assert boundary_radius((10, 10), 2) == 2  # pixels
    with pytest.raises(ValueError):
        boundary_radius((10, 10), 1.5)


def test_boundary_f_of_shifted_square():
    # Rings of cols 1..5 (GT) and 3..7 (pred), radius 1. Of the 16 predicted ring
    # pixels, matched: top row cols 3..6 (4), bottom row cols 3..6 (4), left column
    # rows 2 and 4 (next to rows 1 and 5 of the GT ring; row 3 is 2 away): 10.
    # The mirror image gives the same recall.
    precision, recall = boundary_precision_recall(SHIFTED_SQUARE, GT_SQUARE, 0.05)
    assert precision == pytest.approx(10 / 16)
    assert recall == pytest.approx(10 / 16)
    assert boundary_f(SHIFTED_SQUARE, GT_SQUARE) == pytest.approx(10 / 16)
    # With radius 2 every ring pixel is within 2 pixels of the other ring.
    assert boundary_precision_recall(SHIFTED_SQUARE, GT_SQUARE, 2) == (1.0, 1.0)


def test_boundary_f_of_small_square_inside_large_one():
    # Predicted ring rows/cols 1..3 (8 pixels): all within 1 of the GT ring but (3, 3): P = 7/8.
    # GT ring (16): (1, 1..4) and (2..4, 1) are within 1 of the predicted ring: R = 7/16.
    precision, recall = boundary_precision_recall(SMALL_SQUARE, GT_SQUARE)
    assert precision == pytest.approx(7 / 8)
    assert recall == pytest.approx(7 / 16)
    assert boundary_f(SMALL_SQUARE, GT_SQUARE) == pytest.approx(2 * (7 / 8) * (7 / 16) / (7 / 8 + 7 / 16))
    assert boundary_f(SMALL_SQUARE, GT_SQUARE) == pytest.approx(7 / 12)
    # Swapping prediction and ground truth swaps precision and recall.
    assert boundary_precision_recall(GT_SQUARE, SMALL_SQUARE) == pytest.approx((7 / 16, 7 / 8))


def test_boundary_f_far_apart_is_zero_and_identical_is_one():
    far = _square((7, 8), (7, 8))
    assert boundary_precision_recall(far, GT_SQUARE) == (0.0, 0.0)
    assert boundary_f(far, GT_SQUARE) == 0.0
    assert boundary_f(GT_SQUARE, GT_SQUARE) == 1.0


def test_boundary_empty_conventions():
    empty = np.zeros((10, 10), bool)
    full = np.ones((10, 10), bool)
    assert boundary_precision_recall(empty, empty) == (1.0, 1.0)
    assert boundary_f(empty, empty) == 1.0
    assert boundary_precision_recall(empty, GT_SQUARE) == (1.0, 0.0)
    assert boundary_f(empty, GT_SQUARE) == 0.0
    assert boundary_precision_recall(GT_SQUARE, empty) == (0.0, 1.0)
    assert boundary_f(GT_SQUARE, empty) == 0.0
    # A mask covering the whole image has no boundary either.
    assert boundary_f(full, empty) == 1.0
    assert boundary_f(full, GT_SQUARE) == 0.0


def _two_object_sequence() -> tuple[np.ndarray, np.ndarray]:
    """(pred, gt) label maps of 4 frames, objects 1 (GT_SQUARE) and 2 (rows 7..8, cols 1..3).

    Frame 0 (given) and frame 3 (last) are predicted as all background; frame 1 is
    perfect; in frame 2 object 1 is SHIFTED_SQUARE (J = 1/3, F = 10/16) and object 2
    is missing (J = F = 0).
    """
    object2 = _square((7, 8), (1, 3))
    gt = np.zeros((4, 10, 10), np.int32)
    gt[:, GT_SQUARE] = 1
    gt[:, object2] = 2
    pred = np.zeros_like(gt)
    pred[1] = gt[1]
    pred[2, SHIFTED_SQUARE] = 1
    return pred, gt


def test_evaluate_sequence_scores_frames_1_to_t_minus_2():
    pred, gt = _two_object_sequence()
    result = evaluate_sequence(pred, gt, num_objects=2)
    np.testing.assert_array_equal(result["frames"], [1, 2])
    np.testing.assert_allclose(result["J_per_frame"], [[1.0, 1 / 3], [1.0, 0.0]])
    np.testing.assert_allclose(result["F_per_frame"], [[1.0, 10 / 16], [1.0, 0.0]])
    np.testing.assert_allclose(result["J_per_object"], [2 / 3, 1 / 2])
    np.testing.assert_allclose(result["F_per_object"], [13 / 16, 1 / 2])
    assert result["J"] == pytest.approx(7 / 12)
    assert result["F"] == pytest.approx(21 / 32)
    assert result["JF"] == pytest.approx((7 / 12 + 21 / 32) / 2)


def test_evaluate_sequence_with_last_frame():
    pred, gt = _two_object_sequence()
    result = evaluate_sequence(pred, gt, num_objects=2, exclude_last=False)
    np.testing.assert_array_equal(result["frames"], [1, 2, 3])
    np.testing.assert_allclose(result["J_per_object"], [4 / 9, 1 / 3])
    np.testing.assert_allclose(result["F_per_object"], [13 / 24, 1 / 3])
    assert result["J"] == pytest.approx(7 / 18)
    assert result["F"] == pytest.approx(7 / 16)
    assert result["JF"] == pytest.approx((7 / 18 + 7 / 16) / 2)


def test_evaluate_sequence_rejects_bad_input():
    pred, gt = _two_object_sequence()
    with pytest.raises(ValueError, match="0..1"):
        evaluate_sequence(pred, gt, num_objects=1)
    with pytest.raises(ValueError, match="no frame"):
        evaluate_sequence(pred[:2], gt[:2], num_objects=2)
    with pytest.raises(ValueError, match="both be"):
        evaluate_sequence(pred[:3], gt, num_objects=2)


def test_summarize_averages_over_all_objects():
    sequences = {
        "a": {"J_per_object": np.array([1.0, 0.0]), "F_per_object": np.array([1.0, 0.5])},
        "b": {"J_per_object": np.array([0.5]), "F_per_object": np.array([0.25])},
    }
    summary = summarize(sequences)
    assert summary["J"] == pytest.approx(0.5)  # (1 + 0 + 0.5) / 3
    assert summary["F"] == pytest.approx(1.75 / 3)  # (1 + 0.5 + 0.25) / 3
    assert summary["JF"] == pytest.approx((0.5 + 1.75 / 3) / 2)
    # The mean of the per-sequence J&F, (0.625 + 0.375) / 2 = 0.5, is not what DAVIS reports.
    assert summary["JF"] != pytest.approx(0.5)
    assert summary["num_objects"] == 3
    assert list(summary["sequences"]) == ["a", "b"]
    assert summary["sequences"]["a"] == pytest.approx({"J": 0.5, "F": 0.75, "JF": 0.625})
    assert summary["sequences"]["b"] == pytest.approx({"J": 0.5, "F": 0.25, "JF": 0.375})


def test_summarize_of_evaluated_sequence():
    pred, gt = _two_object_sequence()
    result = evaluate_sequence(pred, gt, num_objects=2)
    summary = summarize({"clip": result})
    assert summary["JF"] == pytest.approx(result["JF"])
    assert summary["sequences"]["clip"]["J"] == pytest.approx(7 / 12)
