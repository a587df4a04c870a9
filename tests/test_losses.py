"""Tests of cmp_jax.losses.discrete_flow_loss against NumPy and PyTorch references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmp_jax.flow import FlowBins
from cmp_jax.losses import discrete_flow_loss
from tests.test_flow import _numpy_resize_align_corners


def _numpy_loss(logits: np.ndarray, flow: np.ndarray, num_bins: int, fmax: float) -> float:
    """By-hand reference: upsample, bin, log-softmax, mean NLL per axis, summed (float64)."""
    n, h, w, _ = flow.shape
    up = _numpy_resize_align_corners(logits.astype(np.float64), h, w)
    width = 2 * fmax / num_bins
    total = 0.0
    for axis in range(2):
        target = np.clip(flow[..., axis], -fmax + 1e-3, fmax - 1e-3)
        idx = np.floor((target + fmax) / width).astype(int)
        z = up[..., axis * num_bins : (axis + 1) * num_bins]
        z = z - z.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        total -= np.take_along_axis(logp, idx[..., None], -1).mean()
    return total


def test_loss_matches_numpy_reference():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 4, 5, 198)).astype(np.float32) * 2
    flow = rng.uniform(-70, 70, (2, 16, 20, 2)).astype(np.float32)  # some beyond +-50
    got = float(discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), FlowBins()))
    assert got == pytest.approx(_numpy_loss(logits, flow, 99, 50.0), rel=1e-5)


def test_loss_matches_torch_cross_entropy():
    rng = np.random.default_rng(1)
    bins = FlowBins(num_bins=9, fmax=4.0)
    logits = rng.standard_normal((3, 3, 3, 18)).astype(np.float32)
    flow = rng.uniform(-6, 6, (3, 12, 12, 2)).astype(np.float32)
    up = F.interpolate(
        torch.from_numpy(logits.transpose(0, 3, 1, 2)), (12, 12), mode="bilinear", align_corners=True
    )
    idx = torch.from_numpy(np.array(bins.quantize(jnp.asarray(flow))).transpose(0, 3, 1, 2)).long()
    want = F.cross_entropy(up[:, :9], idx[:, 0]) + F.cross_entropy(up[:, 9:], idx[:, 1])
    got = float(discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), bins))
    assert got == pytest.approx(float(want), rel=1e-5)


def test_uniform_logits_give_two_log_c_and_perfect_logits_near_zero():
    bins = FlowBins()
    flow = np.random.default_rng(2).uniform(-50, 50, (1, 8, 8, 2)).astype(np.float32)
    zero = discrete_flow_loss(jnp.zeros((1, 8, 8, 198)), jnp.asarray(flow), bins)
    assert float(zero) == pytest.approx(2 * np.log(99), rel=1e-6)
    onehot = np.concatenate(
        [np.eye(99)[np.asarray(bins.quantize(jnp.asarray(flow[..., a])))] for a in range(2)], -1
    )
    perfect = discrete_flow_loss(jnp.asarray(onehot * 50.0), jnp.asarray(flow), bins)
    assert float(perfect) < 1e-6


def test_loss_is_float32_for_bfloat16_logits():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((1, 2, 2, 198)).astype(np.float32)
    flow = rng.uniform(-50, 50, (1, 8, 8, 2)).astype(np.float32)
    bf = discrete_flow_loss(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(flow), FlowBins())
    f32 = discrete_flow_loss(jnp.asarray(logits).astype(jnp.bfloat16).astype(jnp.float32), flow, FlowBins())
    assert bf.dtype == jnp.float32
    assert float(bf) == pytest.approx(float(f32), rel=1e-6)


def test_loss_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="198 logit channels"):
        discrete_flow_loss(jnp.zeros((1, 2, 2, 10)), jnp.zeros((1, 8, 8, 2)), FlowBins())


def test_motion_weight_weights_pixels_by_target_magnitude():
    rng = np.random.default_rng(4)
    bins = FlowBins(num_bins=9, fmax=8.0)
    logits = rng.standard_normal((2, 3, 3, 18)).astype(np.float32)
    flow = rng.uniform(-10, 10, (2, 12, 12, 2)).astype(np.float32)
    weight = 1.0 + 0.25 * np.linalg.norm(flow, axis=-1)
    # The by-hand reference: per-pixel NLL of both axes, weighted average.
    up = _numpy_resize_align_corners(logits.astype(np.float64), 12, 12)
    idx = np.asarray(bins.quantize(jnp.asarray(flow)))
    nll = np.zeros(flow.shape[:3])
    for axis in range(2):
        z = up[..., axis * 9 : (axis + 1) * 9]
        logp = z - z.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        nll -= np.take_along_axis(logp, idx[..., axis, None], -1)[..., 0]
    want = float((nll * weight).sum() / weight.sum())
    got = float(discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), bins, motion_weight=0.25))
    assert got == pytest.approx(want, rel=1e-5)
    plain = float(discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), bins))
    assert plain == pytest.approx(float(nll.mean()), rel=1e-5)
    assert abs(got - plain) > 1e-3  # the weighting changes the value
    # Static targets: every weight is 1, the plain mean.
    still = np.zeros_like(flow)
    assert float(discrete_flow_loss(jnp.asarray(logits), jnp.asarray(still), bins, 0.5)) == pytest.approx(
        float(discrete_flow_loss(jnp.asarray(logits), jnp.asarray(still), bins)), rel=1e-6
    )
    with pytest.raises(ValueError, match="motion_weight"):
        discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), bins, motion_weight=-1.0)


def test_label_sigma_gives_gaussian_targets_over_the_bins():
    rng = np.random.default_rng(5)
    bins = FlowBins(num_bins=9, fmax=9.0)  # centres -8, -6, ..., 8
    logits = rng.standard_normal((1, 2, 2, 18)).astype(np.float32)
    flow = rng.uniform(-11, 11, (1, 6, 6, 2)).astype(np.float32)  # some beyond the range
    up = _numpy_resize_align_corners(logits.astype(np.float64), 6, 6)
    centres = np.arange(9) * 2.0 - 8.0
    want = 0.0
    for axis in range(2):
        z = up[..., axis * 9 : (axis + 1) * 9]
        logp = z - z.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        v = np.clip(flow[..., axis], -9.0, 9.0)[..., None]
        q = np.exp(-((centres - v) ** 2) / (2 * 1.5**2))
        q = q / q.sum(-1, keepdims=True)
        want -= (q * logp).sum(-1).mean()
    got = float(discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), bins, label_sigma=1.5))
    assert got == pytest.approx(want, rel=1e-5)
    # A narrow Gaussian is the one-hot target of the value's bin (values away from bin edges).
    inner = np.round(flow / 2.0) * 2.0 + 0.1
    inner = np.clip(inner, -7.9, 7.9)
    narrow = discrete_flow_loss(jnp.asarray(logits), jnp.asarray(inner), bins, label_sigma=0.05)
    onehot = discrete_flow_loss(jnp.asarray(logits), jnp.asarray(inner), bins)
    assert float(narrow) == pytest.approx(float(onehot), rel=1e-4)
    with pytest.raises(ValueError, match="label_sigma"):
        discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), bins, label_sigma=-0.5)


def test_epe_weight_adds_the_soft_argmax_end_point_error():
    rng = np.random.default_rng(6)
    bins = FlowBins(num_bins=9, fmax=9.0)
    logits = rng.standard_normal((2, 3, 3, 18)).astype(np.float32)
    flow = rng.uniform(-8, 8, (2, 5, 5, 2)).astype(np.float32)
    up = _numpy_resize_align_corners(logits.astype(np.float64), 5, 5)
    centres = np.arange(9) * 2.0 - 8.0
    expected = []
    for axis in range(2):
        z = up[..., axis * 9 : (axis + 1) * 9]
        p = np.exp(z - z.max(-1, keepdims=True))
        expected.append((p / p.sum(-1, keepdims=True) * centres).sum(-1))
    epe = np.hypot(expected[0] - flow[..., 0], expected[1] - flow[..., 1]).mean()
    plain = float(discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), bins))
    got = float(discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), bins, epe_weight=0.3))
    assert got == pytest.approx(plain + 0.3 * epe, rel=1e-5)
    # With motion_weight the EPE term is weighted as the cross-entropy is.
    weight = 1.0 + 0.2 * np.hypot(flow[..., 0], flow[..., 1])
    per_pixel = np.hypot(expected[0] - flow[..., 0], expected[1] - flow[..., 1])
    weighted = (per_pixel * weight).sum() / weight.sum()
    both = float(discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), bins, 0.2, epe_weight=0.3))
    ce_only = float(discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), bins, 0.2))
    assert both - ce_only == pytest.approx(0.3 * weighted, rel=1e-4)
    # Finite gradients where the soft-argmax hits the target exactly.
    exact = jnp.asarray(np.stack(expected, -1).astype(np.float32))
    grad = jax.grad(lambda z: discrete_flow_loss(z, exact, bins, epe_weight=1.0))(jnp.asarray(logits))
    assert np.isfinite(np.asarray(grad)).all()
    with pytest.raises(ValueError, match="epe_weight"):
        discrete_flow_loss(jnp.asarray(logits), jnp.asarray(flow), bins, epe_weight=-1.0)
