"""Guidance sampler (input_pipeline.guidance) against its SciPy transcription of the original."""

import concurrent.futures
import math
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
from scipy import signal

from input_pipeline import guidance
from input_pipeline.guidance import edges as edge_stage
from input_pipeline.guidance import nms, reference
from input_pipeline.guidance.common import Box


def _flows():
    """(name, flow) cases: random piecewise-rigid flows of several sizes and special flows."""
    rng = np.random.default_rng(1234)
    cases = []
    for i, (h, w) in enumerate(
        [(48, 48), (64, 97), (131, 80), (200, 256), (256, 256), (384, 384), (320, 416)] * 4
    ):
        cases.append(
            (f"rigid{i}_{h}x{w}", reference.piecewise_rigid_flow(h, w, rng, int(rng.integers(1, 6))))
        )
    cases.append(("zero", np.zeros((60, 70, 2), np.float32)))
    cases.append(("translation", np.full((60, 70, 2), 3.5, np.float32)))
    one = np.zeros((60, 70, 2), np.float32)
    one[20, 33] = (1.5, -2.0)
    cases.append(("one_pixel", one))
    tiny = reference.piecewise_rigid_flow(90, 90, rng) * np.float32(1e-5)  # strengths below the 0.01 floor
    cases.append(("tiny", tiny))
    big = reference.piecewise_rigid_flow(120, 150, rng) * np.float32(300)
    big[rng.integers(0, 120, 20), rng.integers(0, 150, 20)] = rng.choice([-1e4, 1e4], (20, 2))
    cases.append(("extremes", big))
    y, x = np.mgrid[0:100, 0:140].astype(np.float32)
    cases.append(("rotation", np.stack([-(y - 50) * 0.02, (x - 70) * 0.02], axis=-1)))
    cases.append(("integer", np.round(reference.piecewise_rigid_flow(150, 170, rng, 5))))
    # 8-bit flow images decoded as the original does: v / 255 * 100 - 50.
    quantised = np.round((reference.piecewise_rigid_flow(160, 120, rng) + 50) / 100 * 255)
    cases.append(("jpg_quantised", (quantised / 255 * 100 - 50).astype(np.float32)))
    return cases


FLOWS = _flows()


@pytest.mark.parametrize("name,flow", FLOWS, ids=[name for name, _ in FLOWS])
def test_stages_equal_reference(name, flow):
    edges = guidance.motion_edges(flow)
    expected_edges = reference.motion_edges(flow)
    np.testing.assert_array_equal(edges, expected_edges)
    distance = guidance.edge_distance(edges)
    expected_distance = reference.edge_distance(expected_edges)
    assert distance.dtype == np.float32
    np.testing.assert_array_equal(distance, expected_distance.astype(np.float32))
    for k in (15, 41, 81):
        np.testing.assert_array_equal(
            guidance.nms_candidates(distance, k),
            reference.nms_candidates(expected_distance, k),
            err_msg=f"K={k}",
        )


def test_some_cases_are_not_trivial():
    """The comparisons above see edges, plateaus and many candidates, not just empty maps."""
    counts = [
        int(guidance.nms_candidates(guidance.edge_distance(guidance.motion_edges(f)), 15).sum())
        for _, f in FLOWS
    ]
    assert max(counts) > 200
    assert sum(c > 0 for c in counts) > len(counts) // 2


def test_no_motion_edge_distance_is_scipys():
    """SciPy's transform without any edge pixel measures to a virtual pixel at (-1, 0)."""
    edges = np.zeros((5, 7), bool)
    y, x = np.mgrid[0:5, 0:7]
    expected = np.sqrt((y + 1.0) ** 2 + x**2)
    np.testing.assert_array_equal(reference.edge_distance(edges), expected)
    np.testing.assert_array_equal(guidance.edge_distance(edges), expected.astype(np.float32))
    # Its maxima lie on the image border, so no candidate survives, except with K = 1.
    assert not guidance.nms_candidates(expected, 41).any()
    np.testing.assert_array_equal(guidance.nms_candidates(expected, 1), reference.nms_candidates(expected, 1))
    assert guidance.nms_candidates(expected, 1).sum() == 3 * 5


@pytest.mark.parametrize("k", [1, 3, 5, 9])
def test_small_windows_equal_reference(k):
    rng = np.random.default_rng(k)
    distance = reference.edge_distance(reference.motion_edges(reference.piecewise_rigid_flow(40, 33, rng)))
    np.testing.assert_array_equal(guidance.nms_candidates(distance, k), reference.nms_candidates(distance, k))


def test_concurrent_threads_equal_reference():
    """The numba kernels release the GIL and share no state: threads give the reference's points."""
    config = guidance.SamplerConfig(("grid", "watershed"), 0.000025, 41)
    cases = [(i, flow) for i, (_, flow) in enumerate(FLOWS[:12])] * 2

    def ours(case):
        seed, flow = case
        return guidance.sample_points(flow, config, np.random.default_rng(seed))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ours, cases))
    for (seed, flow), points in zip(cases, results, strict=True):
        rows, cols = reference.sample_points(
            flow, ["grid", "watershed"], 0.000025, 41, -1, np.random.default_rng(seed)
        )
        np.testing.assert_array_equal(points, np.stack([cols, rows], axis=1))


def test_float32_distances_keep_the_order():
    """Distinct square roots of integers stay distinct and ordered in float32.

    Distances are square roots of integers <= 2 * 800**2 (working images are < 800
    pixels a side), so float32 comparisons (the NMS) decide as the reference's
    float64 ones.
    """
    roots = np.sqrt(np.arange(2 * 800**2 + 1, dtype=np.float64)).astype(np.float32)
    assert np.all(np.diff(roots) > 0)


@pytest.mark.parametrize("k", [3, 5, 15, 41])
def test_nms_on_plateaus_equals_reference(k):
    """Maps with many ties, zeros and local maxima (not distance maps)."""
    rng = np.random.default_rng(k)
    for h, w, levels in [(50, 60, 3), (64, 97, 20), (90, 45, 400)]:
        distance = np.sqrt(rng.integers(0, levels, (h, w)).astype(np.float64))
        np.testing.assert_array_equal(
            guidance.nms_candidates(distance, k), reference.nms_candidates(distance, k), err_msg=f"{h}x{w}"
        )


def _local_edge_maps():
    """Edge maps whose edges cover only part of the image, some touching its border."""
    rng = np.random.default_rng(11)
    maps = []
    for h, w in [(60, 70), (121, 90), (200, 230), (300, 260)]:
        for _ in range(4):  # outlines of a few shapes (interior maxima) in a random box
            canvas = np.zeros((h, w), np.uint8)
            y0, x0 = rng.integers(-20, h - 10), rng.integers(-20, w - 10)
            y1, x1 = y0 + rng.integers(10, h), x0 + rng.integers(10, w)
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.integers(y0, y1), rng.integers(x0, x1)
                ry, rx = rng.integers(3, (y1 - y0) // 2 + 4), rng.integers(3, (x1 - x0) // 2 + 4)
                if rng.random() < 0.5:
                    cv2.rectangle(canvas, (int(cx - rx), int(cy - ry)), (int(cx + rx), int(cy + ry)), 1)
                else:
                    cv2.ellipse(canvas, (int(cx), int(cy)), (int(rx), int(ry)), 0, 0, 360, 1)
            clutter = np.zeros((h, w), bool)
            clutter[max(y0, 0) : y1, max(x0, 0) : x1] = (
                rng.random((h, w))[max(y0, 0) : y1, max(x0, 0) : x1] < 0.003
            )
            maps.append((canvas > 0) | clutter)
        for y, x in [(0, 0), (h - 1, w // 2), (h // 2, w - 1), (h // 3, w // 4)]:
            edges = np.zeros((h, w), bool)
            edges[y, x] = True
            maps.append(edges)
        edges = np.zeros((h, w), bool)
        edges[0, :] = True  # a whole image row
        maps.append(edges)
    return maps


def _nms_work(size):
    return nms.NmsWork(np.empty(size, np.int32), np.empty(size, np.int32), np.empty(size, bool))


@pytest.mark.parametrize("k", [1, 3, 5, 15, 41, 81])
def test_edge_box_crop_equals_reference(k):
    """The watershed computes the distance only on the edges' bounding box widened by K // 2."""
    for i, edges in enumerate(_local_edge_maps()):
        h, w = edges.shape
        ys, xs = np.flatnonzero(edges.any(axis=1)), np.flatnonzero(edges.any(axis=0))
        box = Box(ys[0], ys[-1] + 1, xs[0], xs[-1] + 1) if len(ys) else Box(h, 0, w, 0)
        rows, cols = nms.watershed_candidates(edges, box, k, _nms_work(h * w))
        expected = reference.nms_candidates(reference.edge_distance(edges), k)
        np.testing.assert_array_equal(rows, np.nonzero(expected)[0], err_msg=f"map {i}")
        np.testing.assert_array_equal(cols, np.nonzero(expected)[1], err_msg=f"map {i}")


@pytest.mark.parametrize("step", [1, 3, 8, 16])
def test_pruned_nms_equals_reference(step):
    """The pruned NMS (exact distances on every ``step``-th row only) on whole-image boxes."""
    for name, flow in FLOWS[::3]:
        edges = reference.motion_edges(flow)
        h, w = edges.shape
        if not edges.any() or min(h, w) < 3:
            continue
        distance = reference.edge_distance(edges)
        for k in (3, 15, 49, 81):
            rows, cols = nms._pruned_nms(
                edges, k, Box(0, h, 0, w), Box(1, h - 1, 1, w - 1), step, _nms_work(h * w)
            )
            expected = np.nonzero(reference.nms_candidates(distance, k))
            np.testing.assert_array_equal(rows, expected[0], err_msg=f"{name} K={k}")
            np.testing.assert_array_equal(cols, expected[1], err_msg=f"{name} K={k}")


def test_window_max_clips_at_the_ends():
    rng = np.random.default_rng(4)
    for n, half in [(1, 3), (7, 1), (40, 5), (41, 20), (100, 60), (384, 40), (50, 0), (9, 4)]:
        values = rng.integers(0, 50, n).astype(np.int32)
        out = np.empty(n, np.int32)
        nms._window_max(values, half, out, np.empty((2, n + 2 * half), np.int32))
        expected = [values[max(0, x - half) : x + half + 1].max() for x in range(n)]
        np.testing.assert_array_equal(out, expected, err_msg=f"n={n} half={half}")


def test_threshold_ties_are_decided_in_float32():
    """Strengths exactly at 0.1 * peak: the float32 division and comparison decide."""
    for step in (1.0, 0.3, 0.7, 3e-3, 12.5):
        flow = np.zeros((40, 50, 2), np.float32)
        flow[:, 20:, 0] = np.float32(10 * step)  # Sobel strength 40 * step: the peak
        flow[5:30, 35:, 1] = np.float32(step)  # 4 * step: at the threshold
        np.testing.assert_array_equal(guidance.motion_edges(flow), reference.motion_edges(flow), err_msg=step)


def test_threshold_as_one_comparison():
    """``s >= _least_above(peak)`` decides the float32 ``s / peak > 0.1`` exactly, also next to it."""
    rng = np.random.default_rng(2)
    peaks = np.float32(np.concatenate([[0.01, 0.03, 1.0, 3.0, 40.0], 10.0 ** rng.uniform(-2, 30, 300)]))
    tenth = np.float32(0.1)
    for peak in peaks:
        low = edge_stage._least_above(peak)
        assert np.float32(low) == low  # a float32 (returned as a Python float)
        low = np.float32(low)
        near = np.float32(tenth * peak) + np.arange(-8, 9, dtype=np.float32) * np.spacing(tenth * peak)
        np.testing.assert_array_equal(near >= low, near / peak > tenth, err_msg=peak)
        assert low / peak > tenth >= np.nextafter(low, np.float32(0)) / peak


def _scipy_strengths(flow):
    """Edge strengths as the original computes them: float32 ``convolve2d``, NumPy's float32 magnitudes."""
    magnitudes = []
    for c in range(2):
        gx = signal.convolve2d(flow[..., c], reference.SOBEL, mode="same", boundary="symm")
        gy = signal.convolve2d(flow[..., c], reference.SOBEL.T, mode="same", boundary="symm")
        magnitudes.append(np.sqrt(gx**2 + gy**2))
    return sum(magnitudes)


def _float64_edges(flow):
    """The edge map of the same operations in float64 (integer Sobel kernel): not what the original does."""
    kernel = reference.SOBEL.astype(np.int64)
    magnitudes = []
    for c in range(2):
        gx = signal.convolve2d(flow[..., c], kernel, mode="same", boundary="symm")
        gy = signal.convolve2d(flow[..., c], kernel.T, mode="same", boundary="symm")
        magnitudes.append(np.sqrt(gx**2 + gy**2))
    strength = sum(magnitudes)
    return strength / max(strength.max(), 0.01) > 0.1


def _strengths(flow, literal):
    h, w = flow.shape[:2]
    strength = np.empty((h, w), np.float32)
    if literal:
        peak = edge_stage._literal_strengths(flow, strength)
    else:
        row_peak = np.empty(h, np.int32)
        assert edge_stage._strengths(flow, strength, row_peak) == np.abs(flow).max()
        peak = row_peak.view(np.float32).max()
    return strength, peak


def test_sobel_sums_in_scipys_order():
    """Values spanning ~2**60: float32 Sobel sums round, and do so in SciPy's order.

    Another summation order (NumPy's, below) gives different strengths here; ours
    are the original's bit for bit.
    """
    rng = np.random.default_rng(4)
    flow = rng.choice([1.0, -3.0, 1e-9, -7e-10, 1e8, 0.1], size=(30, 40, 2)).astype(np.float32)
    flow *= rng.random((30, 40, 2), np.float32)
    expected = _scipy_strengths(flow)
    assert expected.dtype == np.float32
    for literal in (False, True):
        strength, peak = _strengths(flow, literal)
        np.testing.assert_array_equal(strength, expected)
        assert peak == expected.max()
    padded = np.pad(flow[..., 0], 1, mode="edge")
    two = np.float32(2)
    other_gx = (padded[:-2, 2:] + two * padded[1:-1, 2:] + padded[2:, 2:]) - (
        padded[:-2, :-2] + two * padded[1:-1, :-2] + padded[2:, :-2]
    )
    scipy_gx = signal.convolve2d(flow[..., 0], reference.SOBEL, mode="same", boundary="symm")
    assert other_gx.dtype == np.float32 and np.any(np.abs(other_gx) != np.abs(scipy_gx))
    np.testing.assert_array_equal(guidance.motion_edges(flow), reference.motion_edges(flow))


def _strength_cases():
    """Flows for the strengths: real-like, scales, cancellation, values spanning 2**60, subnormals."""
    rng = np.random.default_rng(21)
    cases = [(name, flow) for name, flow in FLOWS]
    for scale in (1e-42, 1e-30, 1e-6, 1.0, 1e6, 1e12, 1e17):
        cases.append((f"noise{scale:g}", (rng.standard_normal((40, 50, 2)) * scale).astype(np.float32)))
    pattern = reference.piecewise_rigid_flow(60, 80, rng, 4) * np.float32(1e-3)
    cases.append(("offset", pattern + np.float32(3e4)))  # large values, small differences
    spread = rng.choice([1.0, -3.0, 1e-9, -7e-10, 1e8, 0.1], (30, 40, 2)).astype(np.float32)
    cases.append(("spread", spread * rng.random((30, 40, 2), np.float32)))
    for i in range(200):  # random sizes, scales and motions
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        flow = reference.piecewise_rigid_flow(h, w, rng, int(rng.integers(1, 6)), float(rng.uniform(0.1, 60)))
        cases.append((f"random{i}", flow * np.float32(10.0 ** rng.uniform(-3, 3))))
    return cases


def test_strengths_are_the_originals_bit_for_bit():
    """Float32 strengths of both kernels equal SciPy's float32 ``convolve2d`` ones, bit for bit."""
    for name, flow in _strength_cases():
        expected = _scipy_strengths(flow)
        for literal in (False, True):
            strength, peak = _strengths(flow, literal)
            np.testing.assert_array_equal(strength.view(np.int32), expected.view(np.int32), err_msg=name)
            assert peak == expected.max(), name
        np.testing.assert_array_equal(guidance.motion_edges(flow), reference.motion_edges(flow), err_msg=name)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_flow_equals_reference(bad):
    """Non-finite flow: inf * 0 is NaN (the kernel's zero terms count); NaN peaks as NumPy's."""
    flow = reference.piecewise_rigid_flow(40, 50, np.random.default_rng(6))
    for y, x, c in [(0, 0, 0), (20, 25, 1), (39, 49, 0)]:
        broken = flow.copy()
        broken[y, x, c] = bad
        with np.errstate(invalid="ignore"):
            expected = reference.motion_edges(broken)
        np.testing.assert_array_equal(guidance.motion_edges(broken), expected)


def _threshold_flows():
    """(name, flow, pixels): flows within float32 rounding of the threshold.

    pixels: the (y, x) where the float64 edge map differs from the float32 one.
    """
    impulse = np.zeros((64, 64, 2), np.float32)
    impulse[:, 8:56, 0] = 11  # a band moving by 11 px: peak strength 44 along its two sides
    # An impulse of 2.2 px: its 4 direct neighbours have strength 4.4 (in float32 as in float64);
    # 4.4 / 44 exceeds 0.1 by 2e-9 in float64 but rounds to float32(0.1) in float32.
    impulse[24, 20, 1] = 2.2
    nudged = reference.piecewise_rigid_flow(64, 64, np.random.default_rng(48), 3)
    assert nudged[14, 5, 0] == np.float32(-2.8585699)
    nudged[14, 5, 0] = -2.8637345  # nudged by 0.0052 px
    return [
        ("impulse", impulse, [(23, 20), (24, 19), (24, 21), (25, 20)]),
        ("nudged", nudged, [(14, 4)]),
    ]


@pytest.mark.parametrize("name,flow,pixels", _threshold_flows(), ids=[c[0] for c in _threshold_flows()])
def test_threshold_in_float32_as_the_original(name, flow, pixels):
    """Where float64 and the original's float32 disagree on an edge, ours agree with the original."""
    expected = reference.motion_edges(flow)
    float64 = _float64_edges(flow)
    assert np.argwhere(expected != float64).tolist() == [list(p) for p in pixels]
    assert not expected[tuple(np.transpose(pixels))].any()  # float64 keeps them, the original does not
    np.testing.assert_array_equal(guidance.motion_edges(flow), expected)
    for k in (15, 41):
        config = guidance.SamplerConfig(("grid", "watershed"), nms_ks=k)
        for seed in range(3):
            rows, cols = reference.sample_points(
                flow, ["grid", "watershed"], config.bg_ratio, k, -1, np.random.default_rng(seed)
            )
            points = guidance.sample_points(flow, config, np.random.default_rng(seed))
            np.testing.assert_array_equal(points, np.stack([cols, rows], axis=1), err_msg=f"K={k}")
    if name == "impulse":  # the watershed candidates differ too: float64 would sample other points
        for k in (15, 41):
            candidates = reference.nms_candidates(reference.edge_distance(expected), k)
            float64_candidates = reference.nms_candidates(reference.edge_distance(float64), k)
            assert not np.array_equal(candidates, float64_candidates)


def _near_threshold_flows():
    """(name, flow): flows with many strengths near the threshold or the peak, or huge values."""
    rng = np.random.default_rng(22)
    h, w = 50, 80
    threshold = np.zeros((h, w, 2), np.float32)
    threshold[:, 50:, 0] = 100  # peak 400 + 8 s at the step
    slope = 400 / 72 * (1 + (np.arange(h) - 25) * 1e-6)  # ramp strength 8 s = 0.1 * peak, +-2e-5
    threshold[..., 1] = np.arange(w)[None, :] * slope[:, None]
    offset = reference.piecewise_rigid_flow(70, 90, rng, 3) * np.float32(2e-3) + np.float32(3e4)
    huge = reference.piecewise_rigid_flow(40, 50, rng) * np.float32(1e20)
    top = np.zeros((30, 40, 2), np.float32)
    top[10:, 15:] = np.finfo(np.float32).max
    return [("threshold", threshold), ("offset", offset), ("huge", huge), ("float32_max", top)]


@pytest.mark.parametrize("name,flow", _near_threshold_flows(), ids=[c[0] for c in _near_threshold_flows()])
def test_near_threshold_and_huge_flows_equal_reference(name, flow):
    """Many pixels at the threshold, large values with small differences, overflowing squares."""
    with np.errstate(over="ignore", invalid="ignore"):
        expected = reference.motion_edges(flow)
    np.testing.assert_array_equal(guidance.motion_edges(flow), expected)
    assert (np.abs(flow).max() > edge_stage._FLOW_LIMIT) == (name in ("huge", "float32_max"))
    if name == "threshold":
        strength = _scipy_strengths(flow)
        near = np.abs(strength / strength.max() - 0.1) < 1e-5
        assert near.sum() > 20 and 0 < expected[near].sum() < near.sum()  # decided both ways


@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (6, 1), (2, 2)])
def test_tiny_flows_equal_reference(h, w):
    flow = reference.piecewise_rigid_flow(h, w, np.random.default_rng(h * w))
    edges = guidance.motion_edges(flow)
    np.testing.assert_array_equal(edges, reference.motion_edges(flow))
    np.testing.assert_array_equal(
        guidance.edge_distance(edges), reference.edge_distance(edges).astype(np.float32)
    )


SAMPLE_CONFIGS = [
    guidance.SamplerConfig(),
    guidance.SamplerConfig(("grid", "watershed"), 0.000025, 81, 150),
    guidance.SamplerConfig(("grid", "watershed"), 0.00003629, 67, -1),
    guidance.SamplerConfig(("watershed",), 0.00015625, 15, -1),
    guidance.SamplerConfig(("single", "watershed", "uniform", "grid"), 0.001, 41, 7),
    guidance.SamplerConfig(("uniform",), 0.01, 41, -1),
]


@pytest.mark.parametrize("config", SAMPLE_CONFIGS, ids=str)
def test_sample_points_equal_reference(config):
    for seed, (name, flow) in enumerate(FLOWS):
        if "single" in config.strategy and not flow.any():
            continue  # the original fails there (see test_single_on_static_flow)
        args = (list(config.strategy), config.bg_ratio, config.nms_ks, config.max_num_guide)
        rows, cols = reference.sample_points(flow, *args, np.random.default_rng(seed))
        points = guidance.sample_points(flow, config, np.random.default_rng(seed))
        assert points.dtype == np.int32 and points.shape == (len(rows), 2), name
        np.testing.assert_array_equal(points, np.stack([cols, rows], axis=1), err_msg=name)


def test_large_flow_is_subsampled_like_the_reference():
    flow = reference.piecewise_rigid_flow(820, 900, np.random.default_rng(5), num_objects=5)  # ds = 2
    config = guidance.SamplerConfig(("watershed",), nms_ks=41)
    points = guidance.sample_points(flow, config, np.random.default_rng(0))
    rows, cols = reference.sample_points(
        flow, ["watershed"], config.bg_ratio, 41, -1, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(points, np.stack([cols, rows], axis=1))
    assert len(points) > 0 and np.all(points % 2 == 0)


def _violations(points, d):
    diff = np.abs(points[:, None, :] - points[None, :, :])
    close = (diff[..., 0] < d) & (diff[..., 1] < d)
    np.fill_diagonal(close, False)
    return int(close.sum())


def test_thinning_rule_and_reference():
    rng = np.random.default_rng(7)
    for n, d in [(0, 5.0), (1, 5.0), (40, 3.0), (300, 20.0), (500, 7.5)]:
        points = rng.integers(0, 120, (n, 2))
        kept = guidance.thin_candidates(points, d, np.random.default_rng(n))
        assert _violations(kept, d) == 0
        expected = reference.neighbor_elim(points[:, 0], points[:, 1], d, np.random.default_rng(n))
        np.testing.assert_array_equal(kept, np.stack(expected, axis=1))
        # Dropping happens only where needed: every dropped point had a close neighbour.
        if n >= 40:
            assert _violations(points, d) > 0 and len(kept) < n


def test_thinning_special_cases_and_generator_state():
    """Thinning of row-major and unsorted points, duplicates, huge coordinates, fractional d.

    The generator must end where the reference's one draw per contested pair leaves it.
    """
    rng = np.random.default_rng(8)
    grid = np.stack(np.divmod(np.sort(rng.choice(200 * 200, 400, replace=False)), 200), axis=1)
    cases = [
        (grid, 20.0),  # row-major, as the sampler passes them
        (grid, 40.0),
        (grid[::-1], 20.0),
        (np.repeat(rng.integers(0, 30, (30, 2)), 2, axis=0), 4.0),  # duplicates
        (rng.integers(-(10**12), 10**12, (50, 2)) // 10**10 * 10**10, 3e10),  # int64 differences
        (rng.integers(0, 50, (80, 2)), 2.5),
        (rng.integers(0, 50, (80, 2)), 0.5),
        (rng.integers(0, 50, (80, 2)), 0.0),
    ]
    for i, (points, d) in enumerate(cases):
        ours, theirs = np.random.default_rng(i), np.random.default_rng(i)
        kept = guidance.thin_candidates(points, d, ours)
        expected = reference.neighbor_elim(points[:, 0], points[:, 1], d, theirs)
        np.testing.assert_array_equal(kept, np.stack(expected, axis=1), err_msg=f"case {i}")
        assert ours.random() == theirs.random(), f"case {i}"


def test_watershed_points_respect_distance_rule():
    for name, flow in FLOWS:
        points = guidance.watershed_points(flow, 41, np.random.default_rng(0))
        assert _violations(points, 20) == 0, name


def test_max_num_guide_and_guidance_values():
    rng = np.random.default_rng(3)
    flow = reference.piecewise_rigid_flow(128, 160, rng, num_objects=5)
    unlimited = guidance.sample_points(flow, guidance.SamplerConfig(bg_ratio=0.001, nms_ks=15), rng)
    assert len(unlimited) > 20
    for limit in (0, 1, 5, 10_000):
        config = guidance.SamplerConfig(bg_ratio=0.001, nms_ks=15, max_num_guide=limit)
        sparse, mask, count = guidance.sample_guidance(flow, config, np.random.default_rng(limit))
        points = guidance.sample_points(flow, config, np.random.default_rng(limit))
        assert len(points) == min(limit, len(unlimited))
        at_points = np.zeros(flow.shape[:2], bool)
        at_points[points[:, 1], points[:, 0]] = True
        assert count == at_points.sum()
        assert sparse.dtype == mask.dtype == np.float32
        np.testing.assert_array_equal(mask, np.repeat(at_points[..., None], 2, axis=-1).astype(np.float32))
        np.testing.assert_array_equal(sparse, np.where(at_points[..., None], flow, 0))
        expected_sparse, expected_mask = reference.flow_sampler(
            flow, list(config.strategy), config.bg_ratio, 15, limit, np.random.default_rng(limit)
        )
        np.testing.assert_array_equal(sparse, expected_sparse)
        np.testing.assert_array_equal(mask, expected_mask)


def test_points_to_guidance_uses_x_as_column():
    flow = np.arange(4 * 6 * 2, dtype=np.float32).reshape(4, 6, 2)
    sparse, mask = guidance.points_to_guidance(flow, np.array([[5, 1], [0, 3], [5, 1]]))
    assert mask.sum() == 4 and mask[1, 5].all() and mask[3, 0].all()
    np.testing.assert_array_equal(sparse[1, 5], flow[1, 5])
    with pytest.raises(ValueError, match="outside"):
        guidance.points_to_guidance(flow, np.array([[6, 0]]))
    for bad in ([0, -1], [-1, 0], [0, 4], [2, 2, 5, 9]):
        with pytest.raises(ValueError, match="outside the 6x4 image"):
            guidance.points_to_guidance(flow, np.array(bad).reshape(-1, 2))


@pytest.mark.parametrize(
    "size,bg_ratio,stride,positions",
    [
        (320, 0.00003629, 165, [77, 242]),
        (320, 0.00015625, 80, [0, 80, 160, 240]),
        (384, 0.00015625, 80, [32, 112, 192, 272, 352]),
        (384, 0.000025, 200, [92, 292]),
        (256, 0.00005632, 133, [61, 194]),
        (384, 5.74e-5, 131, [61, 192, 323]),
    ],
)
def test_grid_matches_reference_table(size, bg_ratio, stride, positions):
    assert guidance.SamplerConfig(bg_ratio=bg_ratio).grid_stride == stride
    points = guidance.grid_points(size, size, bg_ratio)
    assert sorted(set(points[:, 0].tolist())) == positions
    assert sorted(set(points[:, 1].tolist())) == positions
    assert len(points) == len(positions) ** 2


def test_grid_non_square_order():
    points = guidance.grid_points(100, 250, 1 / 80**2)  # rows 10, 90; columns 5, 85, 165, 245
    expected_x = [5, 5, 85, 85, 165, 165, 245, 245]
    np.testing.assert_array_equal(points, np.stack([expected_x, [10, 90] * 4], axis=1))
    zero = np.zeros((100, 250, 2), np.float32)
    rows, cols = reference.sample_points(zero, ["grid"], 1 / 80**2, 41, -1, np.random.default_rng(0))
    assert sorted(zip(cols.tolist(), rows.tolist(), strict=True)) == sorted(map(tuple, points.tolist()))


def test_static_flow_gives_only_the_grid():
    flow = np.full((320, 320, 2), -1.25, np.float32)
    config = guidance.SamplerConfig(bg_ratio=0.00003629, nms_ks=67)
    _, mask, count = guidance.sample_guidance(flow, config, np.random.default_rng(0))
    assert count == 4 == mask[..., 0].sum()
    rows, _ = reference.sample_points(
        flow, ["grid", "watershed"], 0.00003629, 67, -1, np.random.default_rng(0)
    )
    assert len(rows) == 4


def test_single_on_static_flow():
    flow = np.zeros((30, 40, 2), np.float32)
    config = guidance.SamplerConfig(("single",))
    assert len(guidance.sample_points(flow, config, np.random.default_rng(0))) == 0
    with pytest.raises(ValueError):  # the original draws from an empty range
        reference.sample_points(flow, ["single"], config.bg_ratio, 41, -1, np.random.default_rng(0))
    flow[7, 9, 1] = 0.5
    np.testing.assert_array_equal(guidance.sample_points(flow, config, np.random.default_rng(0)), [[9, 7]])


def test_uniform_count():
    config = guidance.SamplerConfig(("uniform",), bg_ratio=0.003)
    points = guidance.sample_points(np.zeros((50, 70, 2), np.float32), config, np.random.default_rng(0))
    assert len(points) == int(0.003 * 50 * 70) == 10
    assert points[:, 0].max() < 70 and points[:, 1].max() < 50


def test_full_strategy():
    flow = reference.piecewise_rigid_flow(20, 30, np.random.default_rng(0))
    config = guidance.SamplerConfig(("full", "grid"), max_num_guide=3)
    sparse, mask, count = guidance.sample_guidance(flow, config, np.random.default_rng(0))
    np.testing.assert_array_equal(sparse, flow)
    assert mask.dtype == np.float32 and mask.min() == 1 and count == 600
    points = guidance.sample_points(flow, config, np.random.default_rng(0))
    assert len(points) == 600 and tuple(points[31]) == (1, 1)


def test_deterministic_per_seed():
    flow = reference.piecewise_rigid_flow(256, 256, np.random.default_rng(9), num_objects=5)
    config = guidance.SamplerConfig(("grid", "watershed", "uniform"), bg_ratio=0.0005, nms_ks=15)
    first = guidance.sample_points(flow, config, np.random.default_rng(1))
    np.testing.assert_array_equal(first, guidance.sample_points(flow, config, np.random.default_rng(1)))
    assert not np.array_equal(first, guidance.sample_points(flow, config, np.random.default_rng(2)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"strategy": ("grid", "gradnms")}, "grid.*watershed.*uniform.*single.*full"),
        ({"strategy": ()}, "empty"),
        ({"strategy": ("grid", "grid")}, "twice"),
        ({"bg_ratio": 0.0}, "bg_ratio"),
        ({"bg_ratio": 1.5}, "bg_ratio"),
        ({"bg_ratio": True}, "bg_ratio"),
        ({"nms_ks": 40}, "odd"),
        ({"nms_ks": -3}, "odd"),
        ({"nms_ks": 41.0}, "int"),
        ({"max_num_guide": -2}, "max_num_guide"),
        ({"max_num_guide": 1.5}, "max_num_guide"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        guidance.SamplerConfig(**kwargs)


def test_config_normalises_strategy():
    assert guidance.SamplerConfig(strategy="watershed").strategy == ("watershed",)
    assert guidance.SamplerConfig(strategy=["grid", "uniform"]).strategy == ("grid", "uniform")
    assert guidance.SamplerConfig(bg_ratio=0.00003629).grid_stride == 165 != round(math.sqrt(1 / 0.00003629))


def test_flow_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        guidance.sample_guidance(np.zeros((10, 10, 3), np.float32), guidance.SamplerConfig(), None)
    with pytest.raises(ValueError, match="shape"):
        guidance.motion_edges(np.zeros((10, 10), np.float32))


def test_benchmark_cli():
    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "sampler", "--repeats", "2", "--flows", "1"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| size | K | G | oracle ms | ours ms |")
    assert [line.split("|")[1].strip() for line in lines[2:5]] == ["256", "320", "384"]
    assert lines[-1].startswith("speedup ") and lines[-1].endswith("x")
    float(lines[-1].split()[1][:-1])
