"""The ``"taps"`` conv formulation matches ``"xla"`` (``lax.conv``): parameters, values, gradients.

Covers every conv shape the models use (1x1 with stride 1 and 2, 3x3 with
stride 1/2 and dilation 2/4, the 5x5 convs of AlexNet and the guidance
encoder, the 7x7 stride-2 ResNet stem, AlexNet's 11x11 stride-4 conv1) on
odd-sized inputs, and a whole small CMP: identical parameter trees, logits,
loss and parameter gradients in training mode.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmp_jax.flow import FlowBins
from cmp_jax.losses import discrete_flow_loss
from cmp_jax.models import CMP
from cmp_jax.models.layers import TAP_MIN_CHANNELS, ModelOps, _auto_conv_impl, resolve_conv_impl, tap_conv
from tests.helpers import random_inputs, random_variables


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _tree_signature(tree):
    return jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), tree)


def _count_convs(fn, *args) -> int:
    return str(jax.make_jaxpr(fn)(*args)).count("conv_general_dilated")


# (kernel, stride, padding, dilation, in channels, out channels, bias, where the models use it);
# "as taps": shapes the models run on lax.conv (thin inputs), forced through the taps.
CONV_SHAPES = [
    (1, 1, 0, 1, 32, 24, True, "1x1 (bottleneck, conv5, head, fc7)"),
    (1, 2, 0, 1, 32, 24, False, "1x1 stride 2 (shortcut)"),
    (3, 1, 1, 1, 24, 16, False, "3x3"),
    (3, 2, 1, 1, 24, 16, False, "3x3 stride 2"),
    (3, 1, 2, 2, 24, 16, False, "3x3 dilation 2 (layer3)"),
    (3, 1, 4, 4, 24, 16, False, "3x3 dilation 4 (layer4)"),
    (5, 1, 2, 1, 24, 16, True, "5x5 (AlexNet conv2)"),
    (5, 2, 2, 1, 4, 16, True, "5x5 stride 2 on guidance (ShallowNet; lax.conv)"),
    (7, 2, 3, 1, 3, 16, False, "7x7 stride 2 on RGB (ResNet stem; lax.conv)"),
    (7, 2, 3, 1, TAP_MIN_CHANNELS, 16, False, "7x7 stride 2 as taps"),
    (11, 4, 5, 1, 3, 16, True, "11x11 stride 4 on RGB (AlexNet conv1; lax.conv)"),
    (11, 4, 5, 1, TAP_MIN_CHANNELS, 16, True, "11x11 stride 4 as taps"),
]


@pytest.mark.parametrize("kernel,stride,padding,dilation,cin,cout,bias,where", CONV_SHAPES)
def test_taps_conv_matches_xla(kernel, stride, padding, dilation, cin, cout, bias, where):
    x = jax.random.normal(jax.random.key(0), (2, 23, 18, cin), jnp.float32)
    convs = {
        impl: ModelOps(conv_impl=impl).conv(
            cout, kernel, stride=stride, padding=padding, dilation=dilation, use_bias=bias, name="c"
        )
        for impl in ("xla", "taps")
    }
    # Same parameter names and shapes (and the same nn.Conv creates them): checkpoints
    # do not see the switch.
    shapes = {impl: jax.eval_shape(conv.init, jax.random.key(1), x) for impl, conv in convs.items()}
    assert _tree_signature(shapes["taps"]) == _tree_signature(shapes["xla"])
    variables = {"params": {"kernel": jax.random.normal(jax.random.key(2), (kernel, kernel, cin, cout))}}
    if bias:
        variables["params"]["bias"] = jax.random.normal(jax.random.key(3), (cout,))

    # Gradients of the many-tap kernels take long to compile; their forward is checked.
    with_grad = "as taps" not in where
    results = {}
    for impl, conv in convs.items():

        def loss(v, x, conv=conv):
            y = conv.apply(v, x)
            return jnp.sum(jnp.sin(y)), y

        if with_grad:
            results[impl] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(variables, x)
        else:
            results[impl] = ((None, jax.jit(conv.apply)(variables, x)), {})
    (_, out), grads = results["taps"]
    (_, ref), ref_grads = results["xla"]
    out_hw = [(n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 for n in (23, 18)]
    assert out.shape == ref.shape == (2, *out_hw, cout)
    assert _rel_err(out, ref) <= 1e-5, where
    # Gradients sum over more terms (bias: every output pixel) in another order.
    for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads), strict=True):
        assert _rel_err(g, r) <= 5e-5, where
    # Only the thin k x k convs fall back to lax.conv.
    uses_lax = kernel > 1 and cin < TAP_MIN_CHANNELS
    assert _count_convs(convs["taps"].apply, variables, x) == int(uses_lax)


def test_tap_conv_bfloat16_accumulates_in_float32():
    x = jax.random.normal(jax.random.key(0), (1, 12, 12, 64), jnp.float32)
    w = jax.random.normal(jax.random.key(1), (3, 3, 64, 32), jnp.float32) / 24
    args = ((1, 1), ((2, 2), (2, 2)))
    ref = jax.lax.conv_general_dilated(
        x, w, *args, rhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    out = tap_conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), *args, rhs_dilation=(2, 2))
    assert out.dtype == jnp.bfloat16
    # bfloat16 inputs (8-bit mantissa), one rounding of the float32 sum.
    assert _rel_err(out, ref) <= 2e-2


def test_tap_conv_rejects_what_it_does_not_implement():
    x, w = jnp.zeros((1, 8, 8, 16)), jnp.zeros((3, 3, 8, 4))
    with pytest.raises(NotImplementedError, match="feature groups"):
        tap_conv(x, w, (1, 1), ((1, 1), (1, 1)), feature_group_count=2)
    with pytest.raises(NotImplementedError, match="padding"):
        tap_conv(x, jnp.zeros((3, 3, 16, 4)), (1, 1), "SAME")
    with pytest.raises(ValueError, match="conv_impl"):
        ModelOps(conv_impl="im2col")


def test_whole_model_taps_matches_xla():
    """A small ResNet-18 CMP in training mode: loss, logits and every parameter gradient."""
    models = {
        impl: CMP(backbone="resnet18", decoder_combo=(1, 2), num_bins=9, conv_impl=impl)
        for impl in ("xla", "taps")
    }
    inputs = random_inputs(2, 64, 64, seed=5, density=0.05)
    variables = random_variables(models["xla"], *inputs, seed=6)
    shapes = jax.eval_shape(models["taps"].init, jax.random.key(0), *inputs)
    assert _tree_signature(shapes) == _tree_signature(variables)
    bins = FlowBins(num_bins=9, fmax=50.0)
    flow = jax.random.uniform(jax.random.key(7), (2, 64, 64, 2), minval=-60, maxval=60)
    results = {}
    for impl, model in models.items():

        def loss(params, model=model):
            logits, _ = model.apply(
                {**variables, "params": params}, *inputs, train=True, mutable=["batch_stats"]
            )
            return discrete_flow_loss(logits, flow, bins), logits

        results[impl] = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    (loss_taps, logits), grads = results["taps"]
    (loss_xla, ref), ref_grads = results["xla"]
    assert 0.3 < float(jnp.std(ref)) < 100, "logits should have a non-trivial scale"
    assert _rel_err(logits, ref) <= 1e-5
    assert abs(float(loss_taps) - float(loss_xla)) <= 1e-5 * abs(float(loss_xla))
    # The biases of convs followed by BatchNorm have a true gradient of 0 (rounding
    # noise on both sides), so each leaf's error is measured against at least 1e-3
    # of the largest gradient.
    floor = 1e-3 * max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(ref_grads))
    for (path, g), r in zip(
        jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(ref_grads), strict=True
    ):
        scale = max(float(jnp.abs(r).max()), floor)
        assert float(jnp.abs(g - r).max()) <= 5e-5 * scale, jax.tree_util.keystr(path)
    # The taps model keeps lax.conv only for the RGB and guidance stems.
    assert _count_convs(models["taps"].apply, variables, *inputs) == 2


def test_auto_is_taps_on_cpu_and_xla_elsewhere():
    assert jax.default_backend() == "cpu"
    assert resolve_conv_impl("auto") == "taps"
    assert _auto_conv_impl("gpu") == "xla"
    assert _auto_conv_impl("tpu") == "xla"
    assert [resolve_conv_impl(impl) for impl in ("xla", "taps")] == ["xla", "taps"]
    with pytest.raises(ValueError, match="conv_impl"):
        resolve_conv_impl("fft")
    # The default model takes the taps path here: only the two thin stems stay on lax.conv.
    model = CMP(backbone="resnet18", decoder_combo=(1, 2), num_bins=9)
    assert model.conv_impl == "auto"
    inputs = random_inputs(1, 64, 64, seed=1, density=0.05)
    variables = jax.eval_shape(model.init, jax.random.key(0), *inputs)
    assert _count_convs(model.apply, variables, *inputs) == 2
    assert _count_convs(model.clone(conv_impl="xla").apply, variables, *inputs) > 20
