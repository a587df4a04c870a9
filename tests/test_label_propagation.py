"""Label propagation: oracle and shuffled features, brute force, the window, top-1, the encoder."""

import jax
import numpy as np
import pytest

from cmp_jax.evaluation.label_propagation import (
    area_weights,
    encoder_features,
    propagate_labels,
    propagate_soft_labels,
    soft_labels,
)
from cmp_jax.models import CMP
from tests.helpers import random_variables

SCALE = 4  # frame pixels per feature pixel in the synthetic clip


def two_squares(frames: int = 4, size: int = 32) -> np.ndarray:
    """(T, size, size) labels at feature resolution: square 1 moves right, square 2 down, 1 px a frame."""
    labels = np.zeros((frames, size, size), np.int64)
    for t in range(frames):
        labels[t, 4:12, 4 + t : 12 + t] = 1
        labels[t, 18 + t : 26 + t, 16:24] = 2
    return labels


def oracle_features(labels: np.ndarray, channels: int = 8, seed: int = 0) -> np.ndarray:
    """One-hot object identity per feature position, plus a tiny noise."""
    rng = np.random.default_rng(seed)
    feats = np.eye(channels)[labels]
    return (feats + 0.01 * rng.standard_normal(feats.shape)).astype(np.float32)


def mean_iou(pred: np.ndarray, truth: np.ndarray, label: int) -> float:
    """IoU of one label, averaged over frames 1.. (frame 0 is given)."""
    p, g = pred[1:] == label, truth[1:] == label
    return float(np.mean((p & g).sum((1, 2)) / (p | g).sum((1, 2))))


@pytest.fixture(scope="module")
def clip():
    small = two_squares()
    return small, small.repeat(SCALE, 1).repeat(SCALE, 2)


def test_oracle_features_track_the_objects(clip):
    small, truth = clip
    pred = propagate_labels(oracle_features(small), truth[0], 3, frame_size=truth.shape[1:])
    assert pred.shape == truth.shape and pred.dtype == np.int32
    np.testing.assert_array_equal(pred[0], truth[0])
    for label in (1, 2):
        assert mean_iou(pred, truth, label) > 0.95


def test_shuffled_features_do_not(clip):
    small, truth = clip
    feats = oracle_features(small)
    t, h, w, c = feats.shape
    rng = np.random.default_rng(1)
    shuffled = np.stack([f.reshape(h * w, c)[rng.permutation(h * w)].reshape(h, w, c) for f in feats])
    pred = propagate_labels(shuffled, truth[0], 3, frame_size=truth.shape[1:])
    for label in (1, 2):
        assert mean_iou(pred, truth, label) < 0.5


def brute_force(features, first_labels, num_labels, context, topk, radius, temperature):
    """Every frame's soft labels, one target position at a time (the protocol, literally)."""
    t, h, w, _ = features.shape
    feats = features / np.linalg.norm(features, axis=-1, keepdims=True)
    soft = np.zeros((t, h, w, num_labels))
    soft[0] = soft_labels(first_labels, num_labels, (h, w))
    for i in range(1, t):
        refs = [0, *range(max(1, i - context), i)]
        for y in range(h):
            for x in range(w):
                ys = slice(max(0, y - radius), y + radius + 1)
                xs = slice(max(0, x - radius), x + radius + 1)
                aff = np.concatenate([(feats[r, ys, xs] @ feats[i, y, x]).ravel() for r in refs])
                labels = np.concatenate([soft[r, ys, xs].reshape(-1, num_labels) for r in refs])
                best = np.argsort(-aff)[:topk]
                weights = np.exp((aff[best] - aff[best].max()) / temperature)
                soft[i, y, x] = weights @ labels[best] / weights.sum()
    return soft


def test_matches_a_brute_force_reference():
    rng = np.random.default_rng(2)
    # 9x11 is no multiple of the 4x4 tiles; 6 frames with context 2 drop frames from the references.
    feats = rng.standard_normal((6, 9, 11, 5)).astype(np.float32)
    first = rng.integers(0, 3, (18, 22))
    kw = {"context": 2, "topk": 3, "radius": 2, "temperature": 0.5}
    soft = propagate_soft_labels(feats, first, 3, chunk=4, **kw)
    np.testing.assert_allclose(soft, brute_force(feats, first, 3, **kw), atol=1e-5)


def test_a_match_beyond_the_radius_is_never_used():
    # Frame 0: object 1 at the top left of a background with another feature; frame 1: the
    # object's feature appears at the bottom right, 13 feature pixels away in each direction.
    feats = np.zeros((2, 16, 16, 2), np.float32)
    feats[..., 0] = 1
    feats[0, :2, :2] = (0, 1)
    feats[1, 14:, 14:] = (0, 1)
    first = np.zeros((16, 16), np.int64)
    first[:2, :2] = 1
    kw = {"num_labels": 2, "frame_size": (16, 16), "topk": 1}
    near = propagate_labels(feats, first, radius=12, **kw)
    far = propagate_labels(feats, first, radius=14, **kw)
    assert (near[1, 14:, 14:] == 0).all()  # the only match is out of reach
    assert (far[1, 14:, 14:] == 1).all()  # and is found once it is in reach


def test_topk_one_copies_the_best_match():
    # Frame 1 is frame 0 shifted right by one feature pixel: each position's best match is its
    # left neighbour in frame 0, whose label it copies exactly (no blending).
    rng = np.random.default_rng(3)
    first_feats = rng.standard_normal((10, 12, 32)).astype(np.float32)
    feats = np.stack([first_feats, np.roll(first_feats, 1, axis=1)])
    feats[1] += 0.05 * rng.standard_normal(feats[1].shape).astype(np.float32)
    first = rng.integers(0, 5, (10, 12))
    soft = propagate_soft_labels(feats, first, 5, topk=1, radius=2)
    np.testing.assert_array_equal(soft[1].max(-1), 1.0)  # one match, one label, at every position
    np.testing.assert_array_equal(soft[1, :, 1:], np.eye(5)[first[:, :-1]])
    pred = propagate_labels(feats, first, 5, frame_size=(10, 12), topk=1, radius=2)
    np.testing.assert_array_equal(pred[1, :, 1:], first[:, :-1])


def test_soft_labels_area_average():
    np.testing.assert_allclose(area_weights(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(area_weights(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    labels = np.array([[0, 1, 1, 2], [0, 0, 1, 2]])
    soft = soft_labels(labels, 3, (1, 2))
    np.testing.assert_allclose(soft[0], [[0.75, 0.25, 0], [0, 0.5, 0.5]])
    with pytest.raises(ValueError, match="labels"):
        soft_labels(labels, 2, (1, 2))


def test_encoder_features_shapes_and_batching():
    model = CMP(backbone="resnet18", img_enc_dim=16, init_scheme="he")
    image = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
    variables = random_variables(model, image, init_fn=lambda key, x: model.init(key, x, method=CMP.encode))
    frames = np.random.default_rng(4).integers(0, 256, (3, 60, 60, 3)).astype(np.uint8)
    feats = encoder_features(model, variables, frames, batch=2)  # padded to 64x64, last batch short
    assert feats.shape == (3, 8, 8, 16) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, encoder_features(model, variables, frames, batch=3), atol=1e-4)
    assert encoder_features(model, variables, frames[:1], feature="layer4").shape == (1, 8, 8, 512)
    with pytest.raises(ValueError, match="unknown feature"):
        encoder_features(model, variables, frames[:1], feature="nope")
