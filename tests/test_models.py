"""Tests of the Flax CMP modules: parameter counts, shapes, names, init, errors, BatchNorm."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from cmp_jax.models import CMP, build_model
from cmp_jax.models.decoders import ConvexUpsampler, MotionDecoderPlain, MotionDecoderSkipLayer
from cmp_jax.models.layers import BatchNorm, ModelOps
from cmp_jax.models.sparse_encoder import ShallowNet
from tests.helpers import count_params, random_inputs, random_variables


def _abstract_variables(model, height, width, batch=1):
    image, sparse, mask = (jax.ShapeDtypeStruct((batch, height, width, c), jnp.float32) for c in (3, 2, 2))
    variables = jax.eval_shape(model.init, jax.random.key(0), image, sparse, mask)
    logits = jax.eval_shape(model.apply, variables, image, sparse, mask)
    return variables, logits


@pytest.mark.parametrize(
    "backbone,decoder,size,total,logits_hw",
    [
        ("alexnet", "plain", 384, 32_502_694, 12),
        ("resnet50", "plain", 320, 25_497_510, 40),
        ("resnet50", "skip", 384, 28_516_422, 192),
    ],
)
def test_parameter_counts_equal_the_original(backbone, decoder, size, total, logits_hw):
    variables, logits = _abstract_variables(CMP(backbone=backbone, decoder=decoder), size, size)
    params = variables["params"]
    assert count_params(params) == total
    assert count_params(params["flow_encoder"]) == 4_000
    expected_decoder = 1_460_934 if decoder == "plain" else 4_479_846
    assert count_params(params["flow_decoder"]) == expected_decoder
    assert logits.shape == (1, logits_hw, logits_hw, 198)
    assert logits.dtype == jnp.float32


def test_submodule_counts_standalone():
    x = jnp.zeros((1, 64, 64, 4))
    assert count_params(jax.eval_shape(ShallowNet().init, jax.random.key(0), x)["params"]) == 4_000
    feats = jnp.zeros((1, 8, 8, 272))
    plain = jax.eval_shape(MotionDecoderPlain().init, jax.random.key(0), feats)
    assert count_params(plain["params"]) == 1_460_934
    skips = {"layer1": jnp.zeros((1, 16, 16, 256)), "stem": jnp.zeros((1, 32, 32, 64))}
    skip = jax.eval_shape(MotionDecoderSkipLayer().init, jax.random.key(0), feats, skips)
    assert count_params(skip["params"]) == 4_479_846


def test_names_mirror_the_original_keys():
    variables, _ = _abstract_variables(CMP(backbone="resnet50", decoder="skip"), 64, 64)
    p = variables["params"]
    assert set(p) == {"image_encoder", "flow_encoder", "flow_decoder"}
    assert {"conv1", "bn1", "layer3_0", "layer4_2", "conv5"} <= set(p["image_encoder"])
    assert {"downsample_0", "downsample_1", "conv2", "bn3"} <= set(p["image_encoder"]["layer3_0"])
    assert set(p["flow_encoder"]) == {"features_0", "features_1", "features_4", "features_5"}
    dec = set(p["flow_decoder"])
    assert {"decoder1_0", "decoder1_7", "decoder8_1", "decoder8_8", "fusion8_0", "head"} <= dec
    assert {"skipconv4_0", "skipconv2_1", "fusion4_1", "fusion2_0"} <= dec
    alex, _ = _abstract_variables(CMP(backbone="alexnet"), 128, 128)
    assert {"conv1_0", "conv1_1", "fc6_0", "fc7_1", "conv8"} <= set(alex["params"]["image_encoder"])
    assert set(alex["params"]["flow_decoder"]) >= {"decoder2_1", "decoder2_5", "decoder4_4", "head"}


@pytest.mark.parametrize(
    "backbone,output_stride,hw,feat_hw",
    [("resnet18", 8, (64, 96), (8, 12)), ("resnet34", 16, (64, 96), (4, 6)),
     ("resnet101", 32, (128, 192), (4, 6)), ("resnet50", 16, (64, 64), (4, 4))],
)  # fmt: skip
def test_other_resnets_and_output_strides(backbone, output_stride, hw, feat_hw):
    model = CMP(backbone=backbone, output_stride=output_stride)
    assert model.stride == output_stride
    _, logits = _abstract_variables(model, *hw)
    assert logits.shape == (1, *feat_hw, 198)


def test_skip_decoder_works_with_resnet18():
    _, logits = _abstract_variables(CMP(backbone="resnet18", decoder="skip"), 64, 64)
    assert logits.shape == (1, 32, 32, 198)


def test_size_not_multiple_of_stride_names_size_and_stride():
    with pytest.raises(ValueError, match=r"400x384 .* stride 32"):
        _abstract_variables(CMP(backbone="alexnet"), 400, 384)
    with pytest.raises(ValueError, match=r"324x320 .* stride 8"):
        _abstract_variables(CMP(backbone="resnet50"), 324, 320)


def test_unknown_backbone_or_decoder_lists_choices():
    with pytest.raises(ValueError, match=r"unknown backbone 'vgg16'.*resnet50"):
        _abstract_variables(CMP(backbone="vgg16"), 64, 64)
    with pytest.raises(ValueError, match=r"unknown decoder 'unet'.*'plain', 'skip'"):
        _abstract_variables(CMP(decoder="unet"), 64, 64)
    with pytest.raises(ValueError, match="needs a ResNet"):
        _abstract_variables(CMP(backbone="alexnet", decoder="skip"), 64, 64)
    with pytest.raises(ValueError, match="features are only 2x2"):
        _abstract_variables(CMP(backbone="alexnet"), 64, 64)
    with pytest.raises(ValueError, match="combo"):
        _abstract_variables(CMP(decoder_combo=(1, 3)), 64, 64)
    with pytest.raises(ValueError, match="unknown model config keys"):
        build_model({"backbone": "resnet50", "depth": 50})


def test_build_model_from_config_values():
    model = build_model({"backbone": "alexnet", "decoder_combo": [1, 2], "dtype": "bfloat16"})
    assert model.decoder_combo == (1, 2) and model.dtype == jnp.bfloat16


def _leaves_by_name(tree, name):
    return [
        (jax.tree_util.keystr(path), x)
        for path, x in jax.tree_util.tree_leaves_with_path(tree)
        if path[-1].key == name
    ]


def test_original_init_is_tiny_xavier_normal():
    model = CMP(backbone="resnet18")
    image, sparse, mask = random_inputs(1, 32, 32)
    params = jax.jit(model.init)(jax.random.key(0), image, sparse, mask)["params"]
    conv = params["image_encoder"]["layer3_1"]["conv2"]["kernel"]  # 3x3, 256 -> 256
    fan_in, fan_out = 9 * 256, 9 * 256
    expected = 0.02 * np.sqrt(2 / (fan_in + fan_out))
    assert float(jnp.std(conv)) == pytest.approx(expected, rel=0.02)
    head = params["flow_decoder"]["head"]["kernel"]  # 1x1, 384 -> 198
    assert float(jnp.std(head)) == pytest.approx(0.02 * np.sqrt(2 / (384 + 198)), rel=0.05)
    biases = jnp.concatenate([b for _, b in _leaves_by_name(params, "bias")])
    assert float(jnp.abs(biases).max()) == 0.0  # conv biases and BN shifts
    scales = jnp.concatenate([s for _, s in _leaves_by_name(params, "scale")])
    assert float(jnp.mean(scales)) == pytest.approx(1.0, abs=0.002)
    assert float(jnp.std(scales)) == pytest.approx(0.02, rel=0.05)


def test_he_init_option():
    model = CMP(backbone="resnet18", init_scheme="he")
    image, sparse, mask = random_inputs(1, 32, 32)
    params = jax.jit(model.init)(jax.random.key(0), image, sparse, mask)["params"]
    conv = params["image_encoder"]["layer3_1"]["conv2"]["kernel"]
    assert float(jnp.std(conv)) == pytest.approx(np.sqrt(2 / (9 * 256)), rel=0.02)
    scales = jnp.concatenate([s for _, s in _leaves_by_name(params, "scale")])
    assert bool(jnp.all(scales == 1.0))
    with pytest.raises(ValueError, match="unknown init scheme"):
        ModelOps(init="lecun")


def test_batchnorm_matches_torch_training_and_eval():
    x = np.random.default_rng(0).standard_normal((4, 5, 6, 3)).astype(np.float32) * 3 + 1
    bn = BatchNorm()
    variables = bn.init(jax.random.key(0), jnp.asarray(x), train=False)
    y, updated = bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    ref = torch.nn.BatchNorm2d(3)
    ref.train()
    y_ref = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(y), y_ref, atol=1e-5)
    stats = updated["batch_stats"]
    np.testing.assert_allclose(stats["mean"], ref.running_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(stats["var"], ref.running_var.numpy(), atol=1e-6)  # unbiased
    ref.eval()
    z = bn.apply({**variables, **updated}, jnp.asarray(x), train=False)
    z_ref = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(z), z_ref, atol=1e-5)


def test_sync_batchnorm_over_pmap_equals_global_batch():
    n_dev = jax.local_device_count()
    assert n_dev == 4, "conftest forces 4 CPU devices"
    x = np.random.default_rng(1).standard_normal((n_dev * 2, 3, 3, 5)).astype(np.float32) * 2 - 1
    local = BatchNorm(axis_name="batch")
    variables = BatchNorm().init(jax.random.key(0), jnp.asarray(x), train=False)

    def step(v, xs):
        return local.apply(v, xs, train=True, mutable=["batch_stats"])

    y, upd = jax.pmap(step, axis_name="batch", in_axes=(None, 0))(
        variables, jnp.asarray(x).reshape(n_dev, 2, 3, 3, 5)
    )
    y_ref, upd_ref = BatchNorm().apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(y).reshape(x.shape), np.asarray(y_ref), atol=1e-5)
    for name in ("mean", "var"):
        got = np.asarray(upd["batch_stats"][name])
        np.testing.assert_allclose(got, np.broadcast_to(upd_ref["batch_stats"][name], got.shape), atol=1e-6)
    # Without an axis name each device normalises with its own statistics.
    y_local, _ = jax.pmap(
        lambda v, xs: BatchNorm().apply(v, xs, train=True, mutable=["batch_stats"]), in_axes=(None, 0)
    )(variables, jnp.asarray(x).reshape(n_dev, 2, 3, 3, 5))
    assert np.abs(np.asarray(y_local).reshape(x.shape) - np.asarray(y_ref)).max() > 1e-3


def test_alexnet_dropout_needs_rng_and_is_off_in_eval():
    model = CMP(backbone="alexnet")
    image, sparse, mask = random_inputs(1, 128, 128)
    variables = random_variables(model, image, sparse, mask)
    apply = jax.jit(model.apply, static_argnums=4, static_argnames="mutable")
    a = apply(variables, image, sparse, mask, False)
    b = apply(variables, image, sparse, mask, False)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(flax.errors.InvalidRngError):
        model.apply(variables, image, sparse, mask, train=True, mutable=["batch_stats"])
    outs = [
        apply(variables, image, sparse, mask, True, mutable=("batch_stats",), rngs={"dropout": k})[0]
        for k in (jax.random.key(1), jax.random.key(2))
    ]
    assert float(jnp.abs(outs[0] - outs[1]).max()) > 0


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = CMP(backbone="resnet18", dtype=jnp.bfloat16)
    image, sparse, mask = random_inputs(1, 32, 32)
    variables = jax.jit(model.init)(jax.random.key(0), image, sparse, mask)
    dtypes = {x.dtype for x in jax.tree_util.tree_leaves(variables)}
    assert dtypes == {jnp.dtype(jnp.float32)}
    logits = jax.jit(model.apply)(variables, image, sparse, mask)
    assert logits.dtype == jnp.float32
    jaxpr = str(jax.make_jaxpr(model.apply)(variables, image, sparse, mask))
    convs = [line for line in jaxpr.splitlines() if "conv_general_dilated" in line]
    assert convs and all("bf16[" in line.split("=")[0] for line in convs)


def _box_mean_upsampled(logits: np.ndarray, s: int) -> np.ndarray:
    """Mean of each 3x3 neighbourhood (edge-padded), repeated over s x s blocks."""
    n, h, w, c = logits.shape
    padded = np.pad(logits, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    mean = sum(padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9
    return mean.repeat(s, 1).repeat(s, 2)


def test_convex_upsampler_weights_are_convex_combinations_of_neighbours():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    features = rng.standard_normal((2, 3, 4, 6)).astype(np.float32)
    module = ConvexUpsampler(factor=2, hidden=4)
    variables = module.init(jax.random.PRNGKey(0), logits, features)
    params = flax.core.unfreeze(variables["params"])
    kernel, bias = params["mask_2"]["kernel"], params["mask_2"]["bias"]
    # Zero mask logits: equal weights, the 3x3 mean.
    params["mask_2"] = {"kernel": jnp.zeros_like(kernel), "bias": jnp.zeros_like(bias)}
    out = module.apply({**variables, "params": params}, logits, features)
    assert out.shape == (2, 6, 8, 5)
    np.testing.assert_allclose(out, _box_mean_upsampled(logits, 2), rtol=1e-5, atol=1e-6)
    # All weight on the centre (index 4 of the 9, for each of the s*s positions): block copies.
    centre = np.zeros((9, 2, 2), np.float32)
    centre[4] = 50.0
    params["mask_2"] = {"kernel": jnp.zeros_like(kernel), "bias": jnp.asarray(centre.reshape(-1))}
    out = module.apply({**variables, "params": params}, logits, features)
    np.testing.assert_allclose(out, logits.repeat(2, 1).repeat(2, 2), rtol=1e-5, atol=1e-6)


def test_convex_upsampling_option_gives_full_resolution_logits():
    model = CMP(backbone="resnet18", upsample="convex")
    variables, logits = _abstract_variables(model, 64, 64)
    assert logits.shape == (1, 64, 64, 198)
    assert set(variables["params"]["upsampler"]) == {"mask_0", "mask_1", "mask_2"}
    assert variables["params"]["upsampler"]["mask_2"]["kernel"].shape == (1, 1, 64, 9 * 64)
    assert "upsampler" not in _abstract_variables(CMP(backbone="resnet18"), 64, 64)[0]["params"]
    with pytest.raises(ValueError, match="needs the plain decoder"):
        _abstract_variables(CMP(backbone="resnet18", decoder="skip", upsample="convex"), 64, 64)
    with pytest.raises(ValueError, match=r"unknown upsample 'nearest'.*'bilinear', 'convex'"):
        _abstract_variables(CMP(backbone="resnet18", upsample="nearest"), 64, 64)
