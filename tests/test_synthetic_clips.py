"""Tests of input_pipeline.synthetic clips: shapes, determinism, frame pairs, motion, occlusion."""

import dataclasses

import numpy as np
import pytest

from input_pipeline.synthetic import (
    SyntheticConfig,
    generate_clip,
    generate_example,
    render_clip,
    render_scene,
    sample_scene,
)

# Per-frame motion ranges a few times smaller than the frame-pair defaults.
CLIPS = SyntheticConfig(
    height=96,
    width=128,
    max_camera_shift=2.0,
    max_object_shift=4.0,
    max_rotation_deg=4.0,
    max_scale_change=0.02,
    max_articulation_deg=8.0,
)
FRAMES = 6


def _single_object(**motion) -> SyntheticConfig:
    """One object, no limb, no camera motion, with the given object motion ranges."""
    fields = dict(
        max_camera_shift=0.0, max_camera_rotation_deg=0.0, max_camera_zoom=0.0, max_rotation_deg=0.0
    )
    fields.update(max_scale_change=0.0, articulated_prob=0.0, min_object_radius=0.1, max_object_radius=0.15)
    fields.update(motion)
    return dataclasses.replace(CLIPS, min_objects=1, max_objects=1, **fields)


def _centroid(mask: np.ndarray) -> np.ndarray:
    """(x, y) centroid in pixels of a non-empty (H, W) bool mask."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def _inside(mask: np.ndarray) -> bool:
    """Whether a (H, W) bool mask stays off the image border (the object is not cut by it)."""
    return not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_shapes_dtypes_and_keys():
    clip = generate_clip(0, CLIPS, FRAMES)
    assert set(clip) == {"frames", "masks", "num_objects"}
    assert clip["frames"].shape == (FRAMES, 96, 128, 3) and clip["frames"].dtype == np.uint8
    assert clip["masks"].shape == (FRAMES, 96, 128) and clip["masks"].dtype == np.uint8
    assert clip["num_objects"].dtype == np.int32 and clip["num_objects"].shape == ()
    assert clip["masks"].max() <= clip["num_objects"]
    assert generate_clip(0, CLIPS, 1)["frames"].shape == (1, 96, 128, 3)


def test_num_frames_must_be_positive():
    with pytest.raises(ValueError, match="num_frames"):
        generate_clip(0, CLIPS, 0)


def test_deterministic_and_indices_differ():
    a, b = generate_clip(5, CLIPS, FRAMES, seed=3), generate_clip(5, CLIPS, FRAMES, seed=3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["frames"], generate_clip(6, CLIPS, FRAMES, seed=3)["frames"])
    assert not np.array_equal(a["frames"], generate_clip(5, CLIPS, FRAMES, seed=4)["frames"])


@pytest.mark.parametrize("index", range(4))
def test_first_frames_are_the_frame_pair(index):
    """Frame 0 is the pair's frame 1 (the scene at rest), frame 1 its frame 2, mask 0 its segmentation."""
    clip = generate_clip(index, CLIPS, 2)
    pair = generate_example(index, CLIPS)
    np.testing.assert_array_equal(clip["frames"][0], render_scene(sample_scene(index, CLIPS))["frame1"])
    np.testing.assert_array_equal(clip["frames"][0], pair["frame1"])
    np.testing.assert_array_equal(clip["frames"][1], pair["frame2"])
    np.testing.assert_array_equal(clip["masks"][0], pair["segmentation"])
    assert clip["num_objects"] == pair["num_objects"]


@pytest.mark.parametrize("index", range(6))
def test_masks_are_visible_regions_of_the_top_layer(index):
    """Each pixel carries the label of the top-most layer covering it, each layer rendered alone.

    Also: the frame shows that layer's own pixels there, and every object with
    a visible pixel in a frame (frame 0 included) has a non-empty mask in it.
    """
    scene = sample_scene(index, CLIPS)
    clip = render_clip(scene, FRAMES)
    expected_masks = np.zeros_like(clip["masks"])
    expected_frames = render_clip(dataclasses.replace(scene, layers=()), FRAMES)["frames"]
    for layer in scene.layers:
        alone = render_clip(dataclasses.replace(scene, layers=(layer,)), FRAMES)
        covered = alone["masks"] > 0
        expected_masks[covered] = layer.label
        expected_frames[covered] = alone["frames"][covered]
    np.testing.assert_array_equal(clip["masks"], expected_masks)
    np.testing.assert_array_equal(clip["frames"], expected_frames)


def test_some_objects_occlude_others():
    """Among a few clips, some object is partly hidden by another (the occlusion test is not vacuous)."""
    hidden = 0
    for index in range(6):
        scene = sample_scene(index, CLIPS)
        clip = render_clip(scene, FRAMES)
        for layer in scene.layers:
            alone = render_clip(dataclasses.replace(scene, layers=(layer,)), FRAMES)["masks"] > 0
            hidden += int(np.sum(alone & (clip["masks"] != layer.label)))
    assert hidden > 100


@pytest.mark.parametrize("index", range(4))
def test_translating_object_mask_moves_by_its_shift(index):
    """A purely translating object's mask centroid moves by its shift every frame (within a pixel)."""
    config = _single_object()
    scene = sample_scene(index, config)
    shift = scene.layers[0].motion[:, 2]
    np.testing.assert_allclose(scene.layers[0].motion[:, :2], np.eye(2))
    masks = generate_clip(index, config, 10)["masks"] == 1
    checked = 0
    for t in range(10):
        if _inside(masks[t]):
            np.testing.assert_allclose(_centroid(masks[t]), _centroid(masks[0]) + t * shift, atol=1.0)
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("index", range(4))
def test_affine_object_mask_follows_the_composed_motion(index):
    """With rotation and scaling, the mask centroid at frame t is M^t (centroid at rest), within a pixel."""
    config = _single_object(max_rotation_deg=6.0, max_scale_change=0.03)
    scene = sample_scene(index, config)
    motion = scene.layers[0].motion
    masks = generate_clip(index, config, 8)["masks"] == 1
    point, checked = _centroid(masks[0]), 0
    for t in range(8):
        if _inside(masks[t]):
            np.testing.assert_allclose(_centroid(masks[t]), point, atol=1.0)
            checked += 1
        point = motion[:, :2] @ point + motion[:, 2]
    assert checked >= 3


@pytest.mark.parametrize("index", range(4))
def test_limbs_turn_about_their_moving_joint(index):
    """A limb turns by its hinge angle every frame about its joint, which follows the translating body.

    The limb's mask centroid at frame t is J + t d + R(t theta) (c_0 - J) for
    joint J, body shift d, hinge angle theta and rest centroid c_0 (within a
    pixel); repeating the limb's frame-pair motion instead would drift off the body.
    """
    config = _single_object(articulated_prob=1.0, max_articulation_deg=8.0)
    scene = sample_scene(index, config)
    body, limb = sorted(scene.layers, key=lambda layer: np.abs(layer.hinge - np.eye(2, 3)).sum())
    shift = body.motion[:, 2]
    linear, offset = limb.hinge[:, :2], limb.hinge[:, 2]
    joint = np.linalg.solve(np.eye(2) - linear, offset)  # the hinge's fixed point
    theta = np.arctan2(linear[1, 0], linear[0, 0])
    masks = render_clip(dataclasses.replace(scene, layers=(limb,)), 8)["masks"] > 0
    rest, checked = _centroid(masks[0]) - joint, 0
    for t in range(8):
        if _inside(masks[t]):
            c, s = np.cos(t * theta), np.sin(t * theta)
            expected = joint + t * shift + np.array([[c, -s], [s, c]]) @ rest
            np.testing.assert_allclose(_centroid(masks[t]), expected, atol=1.0, err_msg=f"frame {t}")
            checked += 1
    assert checked >= 3
