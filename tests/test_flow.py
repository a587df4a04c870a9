"""Tests of cmp_jax.flow: align-corners resize, bins, soft-argmax, colour wheel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmp_jax.flow import FlowBins, flow_to_color, logits_to_flow, resize_bilinear_align_corners


def _numpy_resize_align_corners(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Reference: per-pixel bilinear sampling at i * (in - 1) / (out - 1), float64."""
    n, h, w, c = x.shape
    out = np.zeros((n, out_h, out_w, c))
    for i in range(out_h):
        sy = i * (h - 1) / (out_h - 1) if out_h > 1 else 0.0
        y0 = int(np.floor(sy))
        y1 = min(y0 + 1, h - 1)
        fy = sy - y0
        for j in range(out_w):
            sx = j * (w - 1) / (out_w - 1) if out_w > 1 else 0.0
            x0 = int(np.floor(sx))
            x1 = min(x0 + 1, w - 1)
            fx = sx - x0
            top = (1 - fx) * x[:, y0, x0] + fx * x[:, y0, x1]
            bottom = (1 - fx) * x[:, y1, x0] + fx * x[:, y1, x1]
            out[:, i, j] = (1 - fy) * top + fy * bottom
    return out


@pytest.mark.parametrize(
    "in_hw,out_hw", [((5, 7), (17, 9)), ((12, 10), (384, 320)), ((1, 3), (4, 6)), ((9, 9), (4, 5))]
)
def test_resize_matches_numpy_reference(in_hw, out_hw):
    x = np.random.default_rng(0).standard_normal((2, *in_hw, 3))
    got = np.asarray(resize_bilinear_align_corners(jnp.asarray(x, jnp.float32), out_hw))
    want = _numpy_resize_align_corners(x, *out_hw)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


def test_resize_matches_torch_and_differs_from_half_pixel():
    x = np.random.default_rng(1).standard_normal((1, 6, 8, 2)).astype(np.float32)
    got = np.asarray(resize_bilinear_align_corners(jnp.asarray(x), (24, 32)))
    ref = F.interpolate(
        torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(24, 32), mode="bilinear", align_corners=True
    )
    np.testing.assert_allclose(got, ref.numpy().transpose(0, 2, 3, 1), atol=1e-6)
    # The corners coincide with the input corners, which half-pixel resizing does not give.
    np.testing.assert_array_equal(got[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]])
    half_pixel = jax.image.resize(jnp.asarray(x), (1, 24, 32, 2), "bilinear")
    assert np.abs(got - np.asarray(half_pixel)).max() > 1e-2


def test_default_bins_match_the_original():
    bins = FlowBins()
    assert bins.num_bins == 99 and bins.fmax == 50.0
    np.testing.assert_allclose(bins.width, 100 / 99)
    centres = bins.centres()
    assert centres.shape == (99,)
    assert centres[49] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(centres[[0, 98]], [-50 + 50 / 99, 50 - 50 / 99], atol=1e-5)


def test_quantize_edges_and_clamping():
    bins = FlowBins()
    values = jnp.array([0.0, 0.5, -0.5, 0.51, -0.51, 49.9999, 50.0, 1e6, -50.0, -1e6, 10.0])
    idx = np.asarray(bins.quantize(values))
    np.testing.assert_array_equal(idx[:5], [49, 49, 49, 50, 48])
    # Values at or beyond the range land in the end bins, never at index C.
    np.testing.assert_array_equal(idx[5:10], [98, 98, 98, 0, 0])
    assert idx[10] == int(np.floor((10 + 50) / (100 / 99)))
    assert idx.max() < bins.num_bins and idx.min() >= 0


def test_quantize_is_inverse_of_centres():
    bins = FlowBins(num_bins=21, fmax=10.0)
    np.testing.assert_array_equal(np.asarray(bins.quantize(bins.centres())), np.arange(21))


@pytest.mark.parametrize("num_bins", [0, 98, -3])
def test_even_or_nonpositive_bin_count_rejected(num_bins):
    with pytest.raises(ValueError, match="odd"):
        FlowBins(num_bins=num_bins)


def test_soft_argmax_expectation():
    bins = FlowBins(num_bins=5, fmax=5.0)  # centres -4, -2, 0, 2, 4
    logits = np.full((1, 1, 1, 10), -1e4, np.float32)
    logits[..., 3] = 0.0  # x: all mass on centre 2
    logits[..., 5 + 0] = 0.0  # y: half on -4 ...
    logits[..., 5 + 2] = 0.0  # ... half on 0
    flow = np.asarray(bins.expected_flow(jnp.asarray(logits)))
    np.testing.assert_allclose(flow[0, 0, 0], [2.0, -2.0], atol=1e-5)
    uniform = np.asarray(bins.expected_flow(jnp.zeros((1, 10))))
    np.testing.assert_allclose(uniform, 0.0, atol=1e-6)


def test_logits_to_flow_reads_out_then_upsamples():
    bins = FlowBins()
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((2, 3, 4, 198)).astype(np.float32) * 3
    flow = np.asarray(logits_to_flow(jnp.asarray(logits), bins, (9, 13)))
    low = np.asarray(bins.expected_flow(jnp.asarray(logits)))
    np.testing.assert_allclose(flow, _numpy_resize_align_corners(low, 9, 13), atol=1e-5)
    with pytest.raises(ValueError, match="198 logit channels"):
        bins.expected_flow(jnp.zeros((1, 10)))


def test_flow_to_color_directions():
    flow = np.zeros((1, 5, 2))
    flow[0, 1] = [1, 0]  # right
    flow[0, 2] = [0, 1]  # down
    flow[0, 3] = [-1, 0]  # left
    flow[0, 4] = [0, -1]  # up
    img = flow_to_color(flow).astype(int)
    assert img.shape == (1, 5, 3) and img.dtype == np.int64
    np.testing.assert_array_equal(img[0, 0], [255, 255, 255])  # no motion is white
    r, g, b = img[0, 1]
    assert r == 255 and g < 64 and b < 64  # right: red
    r, g, b = img[0, 3]
    assert b > r and g > r  # left: cyan-blue
    r, g, b = img[0, 2]
    assert g > b  # down: yellow-green
    r, g, b = img[0, 4]
    assert b > g  # up: blue-violet
    # Half the magnitude: half the saturation.
    half = flow_to_color(flow * 0.5, max_flow=1.0).astype(int)
    assert half[0, 1, 1] > img[0, 1, 1]
    nan = flow_to_color(np.full((2, 2, 2), np.nan))
    np.testing.assert_array_equal(nan, 0)
