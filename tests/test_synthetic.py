"""Tests of input_pipeline.synthetic: determinism, shapes, exact flow, affine motion, config errors."""

import concurrent.futures
import dataclasses

import cv2
import numpy as np
import pytest
from scipy import ndimage

from input_pipeline.synthetic import (
    EXAMPLE_KEYS,
    SyntheticConfig,
    generate_example,
    render_scene,
    sample_scene,
)

SMALL = SyntheticConfig(height=128, width=160)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Float64 bilinear samples of an (H, W, C) image at points with 0 <= x <= W - 2, 0 <= y <= H - 2."""
    image = image.astype(np.float64)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = (1 - fx) * image[y0, x0] + fx * image[y0, x0 + 1]
    bottom = (1 - fx) * image[y0 + 1, x0] + fx * image[y0 + 1, x0 + 1]
    return (1 - fy) * top + fy * bottom


def _affine_flow(m: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(K, 2) flow m(p) - p of the (2, 3) affine ``m`` at pixels (xs, ys)."""
    p = np.stack([xs, ys], -1).astype(np.float64)
    return p @ m[:, :2].T + m[:, 2] - p


def _affine_residual(flow: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> float:
    """Largest residual (pixels) of the least-squares affine fit of (K, 2) ``flow`` on pixels (xs, ys)."""
    design = np.stack([xs, ys, np.ones_like(xs)], -1).astype(np.float64)
    coef = np.linalg.lstsq(design, flow.astype(np.float64), rcond=None)[0]
    return float(np.abs(design @ coef - flow).max())


def _constancy_errors(example: dict[str, np.ndarray], flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|frame2(p + flow(p)) - frame1(p)| (max over RGB) at frame-1 pixels p that stay visible.

    p qualifies if its 5 x 5 neighbourhood in frame 1 and the 5 x 5 neighbourhood
    of round(p + flow(p)) in frame 2 show one layer only (away from layer edges,
    not occluded) and p + flow(p) is inside the image. The true flow (not
    ``flow``) selects the pixels, so a wrong ``flow`` is measured on the same set.

    Returns:
      (errors in grey levels, layer index of each pixel (0 = background)).
    """
    layers1, layers2, true_flow = example["layers1"], example["layers2"], example["flow"]
    h, w = layers1.shape
    stable1 = ndimage.minimum_filter(layers1, 5) == ndimage.maximum_filter(layers1, 5)
    low2, high2 = ndimage.minimum_filter(layers2, 5), ndimage.maximum_filter(layers2, 5)
    ys, xs = np.nonzero(stable1)
    qx, qy = xs + true_flow[ys, xs, 0], ys + true_flow[ys, xs, 1]
    keep = (qx >= 0) & (qx <= w - 2) & (qy >= 0) & (qy <= h - 2)
    ys, xs, qx, qy = ys[keep], xs[keep], qx[keep], qy[keep]
    rx, ry, k = np.round(qx).astype(int), np.round(qy).astype(int), layers1[ys, xs]
    keep = (low2[ry, rx] == k) & (high2[ry, rx] == k)
    ys, xs, k = ys[keep], xs[keep], k[keep]
    qx = np.clip(xs + flow[ys, xs, 0], 0, w - 2.0001)
    qy = np.clip(ys + flow[ys, xs, 1], 0, h - 2.0001)
    errors = np.abs(_bilinear(example["frame2"], qx, qy) - example["frame1"][ys, xs]).max(-1)
    return errors, k


def test_keys_shapes_dtypes_and_ranges():
    for config in (SMALL, SyntheticConfig(height=96, width=64, min_objects=2, max_objects=3)):
        for index in range(5):
            ex = generate_example(index, config)
            assert tuple(ex) == EXAMPLE_KEYS
            h, w = config.height, config.width
            assert ex["frame1"].shape == ex["frame2"].shape == (h, w, 3)
            assert ex["frame1"].dtype == ex["frame2"].dtype == np.uint8
            assert ex["flow"].shape == (h, w, 2) and ex["flow"].dtype == np.float32
            assert ex["segmentation"].shape == (h, w) and ex["segmentation"].dtype == np.int32
            assert ex["num_objects"].shape == () and ex["num_objects"].dtype == np.int32
            n = int(ex["num_objects"])
            assert config.min_objects <= n <= config.max_objects
            assert 0 <= ex["segmentation"].min() and ex["segmentation"].max() <= n
            assert np.isfinite(ex["flow"]).all()
            assert ex["frame1"].std() > 5 and ex["frame2"].std() > 5  # textured, not flat


def test_default_size():
    ex = generate_example(0)
    assert ex["frame1"].shape == (416, 416, 3) and ex["flow"].shape == (416, 416, 2)


def test_deterministic_per_index_and_seed():
    a, b = generate_example(7, SMALL), generate_example(7, SMALL)
    for key in EXAMPLE_KEYS:
        np.testing.assert_array_equal(a[key], b[key])
    for other in (generate_example(8, SMALL), generate_example(7, SMALL, seed=1)):
        assert not np.array_equal(a["frame1"], other["frame1"])
        assert not np.array_equal(a["flow"], other["flow"])


def test_thread_safe_and_independent_of_call_order():
    indices = [5, 0, 3, 11, 2, 9, 4, 1]
    sequential = [generate_example(i, SMALL, seed=3) for i in sorted(indices)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = dict(
            zip(indices, pool.map(lambda i: generate_example(i, SMALL, seed=3), indices), strict=True)
        )
    for i, want in zip(sorted(indices), sequential, strict=True):
        for key in EXAMPLE_KEYS:
            np.testing.assert_array_equal(parallel[i][key], want[key])


def test_object_counts_cover_the_range():
    config = dataclasses.replace(SMALL, min_objects=2, max_objects=4)
    counts = {int(generate_example(i, config)["num_objects"]) for i in range(30)}
    assert counts == {2, 3, 4}
    empty = generate_example(0, dataclasses.replace(SMALL, min_objects=0, max_objects=0))
    assert int(empty["num_objects"]) == 0 and not empty["segmentation"].any()


def test_articulated_prob_sets_the_number_of_parts():
    for prob, parts in ((0.0, 1), (1.0, 2)):
        scene = sample_scene(1, dataclasses.replace(SMALL, articulated_prob=prob, min_objects=3))
        labels = [layer.label for layer in scene.layers]
        assert sorted(labels) == sorted(list(range(1, scene.num_objects + 1)) * parts)


@pytest.mark.parametrize("config,count", [(SMALL, 25), (SyntheticConfig(), 3)])
def test_frame2_at_flow_target_matches_frame1(config, count):
    """Brightness constancy through the flow, on background and object pixels that stay visible."""
    errors = {"background": [], "objects": [], "background shifted": [], "objects shifted": []}
    for index in range(count):
        ex = render_scene(sample_scene(index, config), with_layers=True)
        # The same pixels with the flow off by 2 pixels: the check can fail.
        for suffix, offset in (("", 0.0), (" shifted", 2.0)):
            error, layer = _constancy_errors(ex, ex["flow"] + np.float32(offset))
            errors["background" + suffix].append(error[layer == 0])
            errors["objects" + suffix].append(error[layer > 0])
    median = {key: np.median(np.concatenate(value)) for key, value in errors.items()}
    p90 = {key: np.percentile(np.concatenate(value), 90) for key, value in errors.items()}
    assert min(sum(e.size for e in value) for value in errors.values()) > 1000
    # Residual differences are bilinear interpolation error (frame 2 is itself resampled).
    assert median["background"] < 1.5 and p90["background"] < 5, (median, p90)
    assert median["objects"] < 2.5 and p90["objects"] < 9, (median, p90)
    assert median["background shifted"] > 3 * median["background"], median
    assert median["objects shifted"] > 3 * median["objects"], median


def test_zero_motion_gives_identical_frames_and_zero_flow():
    still = dataclasses.replace(
        SMALL,
        max_camera_shift=0.0,
        max_camera_rotation_deg=0.0,
        max_camera_zoom=0.0,
        max_object_shift=0.0,
        max_rotation_deg=0.0,
        max_scale_change=0.0,
        max_articulation_deg=0.0,
        articulated_prob=0.5,
    )
    for index in range(5):
        ex = generate_example(index, still)
        np.testing.assert_array_equal(ex["frame2"], ex["frame1"])
        assert np.abs(ex["flow"]).max() < 1e-4


def test_flow_is_the_motion_of_the_top_layer_and_segmentation_matches():
    for index in range(10):
        scene = sample_scene(index, SMALL)
        ex = render_scene(scene, with_layers=True)
        layers1, flow, seg = ex["layers1"], ex["flow"], ex["segmentation"]
        # Background (label 0) moves with the camera.
        ys, xs = np.nonzero(seg == 0)
        np.testing.assert_array_equal(layers1 == 0, seg == 0)
        np.testing.assert_allclose(flow[ys, xs], _affine_flow(scene.camera, ys, xs), atol=1e-3)
        for k, layer in enumerate(scene.layers, start=1):
            ys, xs = np.nonzero(layers1 == k)
            assert (seg[ys, xs] == layer.label).all()
            np.testing.assert_allclose(flow[ys, xs], _affine_flow(layer.motion, ys, xs), atol=1e-3)
            # Frame 1 shows the layer's texture at rest.
            ox, oy = layer.origin
            assert layer.mask[ys - oy, xs - ox].all()
            np.testing.assert_array_equal(ex["frame1"][ys, xs], layer.texture[ys - oy, xs - ox])


def test_flow_is_affine_per_part_not_per_articulated_object():
    """Fits on the flow alone: every part is one affine map, an articulated object's union is not."""
    config = dataclasses.replace(SMALL, articulated_prob=0.5)
    articulated_checked = 0
    for index in range(12):
        scene = sample_scene(index, config)
        ex = render_scene(scene, with_layers=True)
        for label in range(1, scene.num_objects + 1):
            parts = [k for k, layer in enumerate(scene.layers, start=1) if layer.label == label]
            pixels = [np.nonzero(ex["layers1"] == k) for k in parts]
            for ys, xs in pixels:
                if ys.size >= 10:
                    assert _affine_residual(ex["flow"][ys, xs], ys, xs) < 1e-3
            if len(parts) == 1 and pixels[0][0].size >= 10:
                ys, xs = np.nonzero(ex["segmentation"] == label)
                assert _affine_residual(ex["flow"][ys, xs], ys, xs) < 1e-3
            if len(parts) == 2 and min(ys.size for ys, _ in pixels) >= 30:
                ys, xs = np.nonzero(ex["segmentation"] == label)
                assert _affine_residual(ex["flow"][ys, xs], ys, xs) > 0.3
                articulated_checked += 1
    assert articulated_checked >= 3


def test_motion_stays_in_range():
    config = SyntheticConfig()
    centre = np.array([[(config.width - 1) / 2.0, (config.height - 1) / 2.0]])
    for index in range(4):
        ex = generate_example(index, config)
        assert np.mean(np.abs(ex["flow"]) > 50.0) < 0.01
        shift = _affine_flow(sample_scene(index, config).camera, centre[:, 1], centre[:, 0])
        assert np.hypot(*shift[0]) <= config.max_camera_shift + 1e-6


def test_objects_are_more_saturated_than_the_background():
    for index in range(8):
        ex = generate_example(index, SMALL)
        saturation = cv2.cvtColor(ex["frame1"], cv2.COLOR_RGB2HSV)[..., 1]
        seg = ex["segmentation"]
        if (seg > 0).sum() >= 50:
            assert np.median(saturation[seg > 0]) > np.median(saturation[seg == 0]) + 40


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"height": 8}, "height and width must be >= 16"),
        ({"width": 32.0}, "width must be an int"),
        ({"min_objects": -1}, "min_objects must be >= 0"),
        ({"min_objects": 4, "max_objects": 2}, r"max_objects \(2\) must be >= min_objects \(4\)"),
        ({"articulated_prob": 1.5}, r"articulated_prob must be in \[0, 1\]"),
        ({"max_camera_shift": -1.0}, "max_camera_shift must be finite and >= 0"),
        ({"max_object_shift": float("inf")}, "max_object_shift must be finite"),
        ({"max_rotation_deg": 90.0}, r"max_rotation_deg must be in \[0, 90.0\)"),
        ({"max_scale_change": 0.7}, r"max_scale_change must be in \[0, 0.5\)"),
        ({"max_camera_zoom": -0.1}, "max_camera_zoom"),
        ({"min_object_radius": 0.3, "max_object_radius": 0.2}, "min_object_radius <= max_object_radius"),
        ({"max_object_radius": 0.6}, "max_object_radius <= 0.5"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=f"SyntheticConfig: .*{message}"):
        SyntheticConfig(**kwargs)


def test_without_frame2_everything_else_is_identical():
    config = SyntheticConfig(height=96, width=128)
    for index in range(6):
        full = generate_example(index, config, seed=3)
        lean = generate_example(index, config, seed=3, frame2=False)
        assert set(lean) == set(EXAMPLE_KEYS) - {"frame2"}
        for key in lean:
            np.testing.assert_array_equal(lean[key], full[key])
