"""Tests of cmp_jax.evaluation: EPE sums and means, baselines, flow pictures, the summary table."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmp_jax import evaluation
from cmp_jax.evaluation import (
    MAGNITUDE_RANGE_NAMES,
    MAGNITUDE_RANGES,
    baselines,
    epe_sums,
    flow_pictures,
    gaussian_splat_flow,
    image_epe,
    nearest_guidance_flow,
    summarize_epe,
    summarize_eval,
)
from cmp_jax.flow import flow_to_color
from cmp_jax.normalization import denormalize


def _random_flow_pair(rng: np.random.Generator, shape=(4, 6, 7)) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and target whose target magnitudes cover every range and both range edges."""
    angle = rng.uniform(-np.pi, np.pi, shape)
    magnitude = rng.uniform(0.0, 60.0, shape)
    target = np.stack([magnitude * np.cos(angle), magnitude * np.sin(angle)], -1).astype(np.float32)
    target[0, 0, 0] = (10.0, 0.0)  # |.| = 10 exactly: belongs to 10-40, not 0-10
    target[0, 0, 1] = (24.0, 32.0)  # |.| = 40 exactly: belongs to 40+
    pred = (target + rng.normal(0.0, 3.0, target.shape)).astype(np.float32)
    return pred, target


def _reference_sums(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """EPE sums in float64 with explicit pixel selection."""
    epe = np.linalg.norm(pred.astype(np.float64) - target, axis=-1)
    magnitude = np.linalg.norm(target.astype(np.float64), axis=-1)
    sums = {"epe_sum": epe.sum(), "count": float(epe.size)}
    for name, (lo, hi) in zip(MAGNITUDE_RANGE_NAMES, MAGNITUDE_RANGES, strict=True):
        selected = epe[(magnitude >= lo) & (magnitude < hi)]
        sums[f"epe_sum/{name}"] = selected.sum()
        sums[f"count/{name}"] = float(selected.size)
    return sums


def test_range_names():
    assert MAGNITUDE_RANGE_NAMES == ("0-10", "10-40", "40+")
    assert MAGNITUDE_RANGES[-1][1] == math.inf


def test_epe_sums_match_numpy_reference_eagerly_and_under_jit():
    pred, target = _random_flow_pair(np.random.default_rng(0))
    want = _reference_sums(pred, target)
    for fn in (epe_sums, jax.jit(epe_sums)):
        got = fn(jnp.asarray(pred), jnp.asarray(target))
        assert set(got) == set(want)
        for key, value in want.items():
            assert got[key].dtype == jnp.float32 and got[key].shape == ()
            np.testing.assert_allclose(float(got[key]), value, rtol=1e-5, err_msg=key)
    # Every range is populated and the ranges partition the pixels.
    assert all(want[f"count/{name}"] > 0 for name in MAGNITUDE_RANGE_NAMES)
    assert sum(want[f"count/{name}"] for name in MAGNITUDE_RANGE_NAMES) == want["count"]


def test_epe_sums_add_up_over_halves_and_under_pmap_psum():
    pred, target = _random_flow_pair(np.random.default_rng(1), shape=(8, 5, 6))
    whole = epe_sums(jnp.asarray(pred), jnp.asarray(target))
    halves = [epe_sums(jnp.asarray(pred[s]), jnp.asarray(target[s])) for s in (slice(0, 3), slice(3, 8))]
    n_dev = jax.local_device_count()
    assert n_dev == 4

    @functools.partial(jax.pmap, axis_name="batch")
    def psummed(p, t):
        return jax.lax.psum(epe_sums(p, t), "batch")

    shards = psummed(pred.reshape(n_dev, -1, *pred.shape[1:]), target.reshape(n_dev, -1, *target.shape[1:]))
    for key, value in whole.items():
        np.testing.assert_allclose(float(halves[0][key] + halves[1][key]), float(value), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(shards[key]), np.full(n_dev, float(value)), rtol=1e-5)


def test_epe_sums_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="pred and target"):
        epe_sums(jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4, 5, 2)))


def test_summarize_epe_means_and_empty_range():
    pred, target = _random_flow_pair(np.random.default_rng(2))
    sums = _reference_sums(pred, target)
    got = summarize_epe({k: np.float32(v) for k, v in sums.items()}, "epe_nearest")
    assert set(got) == {"epe_nearest"} | {f"epe_nearest/{name}" for name in MAGNITUDE_RANGE_NAMES}
    np.testing.assert_allclose(got["epe_nearest"], sums["epe_sum"] / sums["count"], rtol=1e-6)
    for name in MAGNITUDE_RANGE_NAMES:
        want = sums[f"epe_sum/{name}"] / sums[f"count/{name}"]
        np.testing.assert_allclose(got[f"epe_nearest/{name}"], want, rtol=1e-6)

    small = np.clip(target, -5.0, 5.0)  # every magnitude < 10
    got = summarize_epe(
        {k: np.asarray(v) for k, v in epe_sums(jnp.asarray(pred), jnp.asarray(small)).items()}, "e"
    )
    assert math.isnan(got["e/10-40"]) and math.isnan(got["e/40+"])
    assert np.isfinite(got["e"]) and got["e"] == pytest.approx(got["e/0-10"], rel=1e-6)


def _guidance(rng: np.random.Generator, n_points: int, hw=(13, 17)) -> tuple[np.ndarray, np.ndarray]:
    """(1, H, W, 2) sparse flow with distinct random vectors at random distinct pixels, and its mask."""
    h, w = hw
    flat = rng.choice(h * w, size=n_points, replace=False)
    sparse = np.zeros((1, h, w, 2), np.float32)
    mask = np.zeros((1, h, w, 2), np.float32)
    sparse[0, flat // w, flat % w] = rng.uniform(-20.0, 20.0, (n_points, 2))
    mask[0, flat // w, flat % w] = 1.0
    return sparse, mask


def test_nearest_guidance_flow_matches_brute_force():
    rng = np.random.default_rng(3)
    sparse, mask = _guidance(rng, n_points=7)
    # A second image without guidance in the same batch.
    sparse = np.concatenate([sparse, np.zeros_like(sparse)])
    mask = np.concatenate([mask, np.zeros_like(mask)])
    got = nearest_guidance_flow(sparse, mask)
    assert got.dtype == np.float32 and got.shape == sparse.shape
    np.testing.assert_array_equal(got[1], 0.0)

    ys, xs = np.nonzero(mask[0, ..., 0])
    vectors = sparse[0, ys, xs]
    h, w = mask.shape[1:3]
    for y in range(h):
        for x in range(w):
            d2 = (ys - y) ** 2 + (xs - x) ** 2  # integers: ties are exact
            nearest = vectors[d2 == d2.min()]
            assert np.any(np.all(nearest == got[0, y, x], axis=-1)), (y, x)
    np.testing.assert_array_equal(got[0, ys, xs], vectors)


def _brute_force_splat(sparse: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian-weighted mean of the guidance vectors at every pixel, no truncation."""
    ys, xs = np.nonzero(mask[0, ..., 0])
    vectors = sparse[0, ys, xs].astype(np.float64)
    h, w = mask.shape[1:3]
    gy, gx = np.mgrid[:h, :w]
    d2 = (gy[..., None] - ys) ** 2 + (gx[..., None] - xs) ** 2
    weights = np.exp(-d2 / (2 * sigma**2))
    return (weights @ vectors / weights.sum(-1, keepdims=True))[None]


@pytest.mark.parametrize("sigma", [5.0, 20.0])
def test_gaussian_splat_flow_matches_brute_force(sigma):
    # The 4-sigma kernel radius (>= 20 px) exceeds the 13x17 image: no truncation.
    sparse, mask = _guidance(np.random.default_rng(4), n_points=5)
    got = gaussian_splat_flow(sparse, mask, sigma=sigma)
    assert got.dtype == np.float32 and got.shape == sparse.shape
    np.testing.assert_allclose(got, _brute_force_splat(sparse, mask, sigma), rtol=1e-4, atol=1e-4)


def test_gaussian_splat_flow_lone_point_keeps_its_vector_within_reach():
    sigma = 3.0
    sparse = np.zeros((2, 5, 40, 2), np.float32)
    mask = np.zeros_like(sparse)
    sparse[0, 2, 0] = (7.5, -3.0)
    mask[0, 2, 0] = 1.0
    got = gaussian_splat_flow(sparse, mask, sigma=sigma)
    reach = int(baselines._SPLAT_TRUNCATE * sigma + 0.5)  # scipy's kernel radius
    np.testing.assert_allclose(
        got[0, :, : reach + 1], np.broadcast_to(sparse[0, 2, 0], (5, reach + 1, 2)), rtol=1e-6
    )
    np.testing.assert_array_equal(got[0, :, reach + 1 :], 0.0)
    np.testing.assert_array_equal(got[1], 0.0)


def test_flow_pictures_panels():
    rng = np.random.default_rng(6)
    n, h, w = 2, 24, 32
    image = rng.standard_normal((n, h, w, 3)).astype(np.float32)
    target = rng.uniform(-8.0, 8.0, (n, h, w, 2)).astype(np.float32)
    pred = target + rng.normal(0.0, 2.0, target.shape).astype(np.float32)
    mask = np.zeros_like(target)
    mask[0, 12, 16] = 1.0
    pictures = flow_pictures(image, target, pred, mask)
    assert pictures.dtype == np.uint8 and pictures.shape == (n, h, 3 * w, 3)
    for i in range(n):
        scale = np.linalg.norm(target[i].astype(np.float64), axis=-1).max()
        np.testing.assert_array_equal(pictures[i, :, w : 2 * w], flow_to_color(target[i]))
        np.testing.assert_array_equal(pictures[i, :, 2 * w :], flow_to_color(pred[i], max_flow=scale))
    # The image panel is the de-normalised image except around the guidance point.
    np.testing.assert_array_equal(pictures[1, :, :w], denormalize(image[1]))
    far = np.ones((h, w), bool)
    far[2:23, 6:27] = False  # dot radius 2 plus arrow length < 12 px around (12, 16)
    np.testing.assert_array_equal(pictures[0, :, :w][far], denormalize(image[0])[far])
    assert np.any(pictures[0, 10:15, 14:19] != denormalize(image[0])[10:15, 14:19])

    fixed = flow_pictures(image, target, pred, mask, max_flow=40.0)
    np.testing.assert_array_equal(fixed[0, :, w : 2 * w], flow_to_color(target[0], max_flow=40.0))
    assert np.any(fixed[0, :, w : 2 * w] != pictures[0, :, w : 2 * w])


def test_image_epe_is_the_mean_over_each_image():
    pred, target = _random_flow_pair(np.random.default_rng(7))
    got = jax.jit(image_epe)(jnp.asarray(pred), jnp.asarray(target))
    want = np.linalg.norm(pred.astype(np.float64) - target, axis=-1).mean(axis=(1, 2))
    assert got.shape == (pred.shape[0],) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    # Summed over images and scaled by the pixels per image, it is epe_sums' total.
    sums = epe_sums(jnp.asarray(pred), jnp.asarray(target))
    np.testing.assert_allclose(float(got.sum()) * pred[0, ..., 0].size, float(sums["epe_sum"]), rtol=1e-5)


def test_summarize_eval_means_of_model_and_baselines():
    pred, target = _random_flow_pair(np.random.default_rng(8))
    model = _reference_sums(pred, target)
    nearest = _reference_sums(np.zeros_like(pred), target)
    sums = {"loss_sum": 6.0, "images": 4.0}
    sums.update({f"epe/{k}": v for k, v in model.items()})
    sums.update({f"epe_nearest/{k}": v for k, v in nearest.items()})
    got = summarize_eval(sums)
    assert got["eval/loss"] == 1.5
    assert got["eval/epe"] == pytest.approx(model["epe_sum"] / model["count"])
    assert got["eval/epe_nearest/10-40"] == pytest.approx(nearest["epe_sum/10-40"] / nearest["count/10-40"])
    assert not any(k.startswith(("eval/epe_zero", "eval/epe_splat")) for k in got)  # absent baselines


def _hand_metrics() -> dict:
    """Eval metrics as metrics.jsonl records them: the 40+ range empty (null / NaN)."""
    return {
        "eval/loss": 3.2,
        "eval/epe": 1.5,
        "eval/epe/0-10": 0.8,
        "eval/epe/10-40": 9.73,
        "eval/epe/40+": math.nan,
        "eval/epe_zero": 2.5,
        "eval/epe_zero/0-10": 1.25,
        "eval/epe_zero/10-40": 10.5,
        "eval/epe_zero/40+": None,
        "eval/epe_nearest": 2.0,
        "eval/epe_nearest/0-10": 1.6,
        "eval/epe_nearest/10-40": 3.89,
        "eval/epe_nearest/40+": math.nan,
        "eval/epe_splat": 2.25,
        "eval/epe_splat/0-10": 1.75,
        "eval/epe_splat/10-40": 4.0,
        # "eval/epe_splat/40+" missing altogether
        "eval/frac_below_nearest": 0.625,
    }


def test_format_summary_table_from_a_hand_built_dict():
    table = evaluation.format_summary(_hand_metrics())
    assert table.splitlines() == [
        "| EPE (px) | all | 0-10 px | 10-40 px | 40+ px |",
        "| --- | --- | --- | --- | --- |",
        "| model | 1.500 | 0.800 | 9.730 | - |",
        "| zero | 2.500 | 1.250 | 10.500 | - |",
        "| nearest | 2.000 | 1.600 | 3.890 | - |",
        "| splat | 2.250 | 1.750 | 4.000 | - |",
        "| model / nearest | 0.750 | 0.500 | 2.501 | - |",
        "images where the model's EPE is below nearest fill's: 0.625",
    ]
    # Without baselines or the per-image fraction: dashes, no fraction line, no error.
    bare = evaluation.format_summary({"eval/epe": 1.0, "eval/epe/0-10": 1.0})
    assert bare.splitlines()[2] == "| model | 1.000 | 1.000 | - | - |"
    assert bare.splitlines()[-1] == "| model / nearest | - | - | - | - |"


def test_summary_scalars_ratios_to_nearest():
    got = evaluation.summary_scalars(_hand_metrics())
    assert set(got) == {
        "summary/epe_over_nearest",
        "summary/epe_over_nearest/0-10",
        "summary/epe_over_nearest/10-40",
        "summary/epe_over_nearest/40+",
        "summary/frac_below_nearest",
    }
    assert got["summary/epe_over_nearest"] == 0.75 and got["summary/epe_over_nearest/0-10"] == 0.5
    assert got["summary/epe_over_nearest/10-40"] == pytest.approx(9.73 / 3.89)
    assert math.isnan(got["summary/epe_over_nearest/40+"])
    assert got["summary/frac_below_nearest"] == 0.625
    zero_nearest = evaluation.summary_scalars({"eval/epe": 1.0, "eval/epe_nearest": 0.0})
    assert math.isnan(zero_nearest["summary/epe_over_nearest"])


def test_report_summary_prints_and_writes_the_ratios(capsys):
    written = []

    class Writer:
        def write_scalars(self, step, scalars):
            written.append((step, dict(scalars)))

    evaluation.report_summary(Writer(), 1300, _hand_metrics())
    out = capsys.readouterr().out
    assert "summary of the eval at step 1300:" in out
    assert evaluation.format_summary(_hand_metrics()) in out
    np.testing.assert_equal(written, [(1300, evaluation.summary_scalars(_hand_metrics()))])  # NaN == NaN
