"""Numerical parity of the Flax modules with their PyTorch twins and torchvision.

Weights are random (He init, random BN affine) with BN running statistics set to
the statistics of the test input, so eval-mode activations keep a realistic
scale and the absolute tolerance on logits means something.
"""

import jax
import numpy as np
import pytest
import torch
import torchvision

from cmp_jax import torch_models
from cmp_jax.models import CMP
from cmp_jax.models.backbones import DilatedResNet
from cmp_jax.models.layers import ModelOps
from tests.helpers import calibrate, random_inputs, random_variables

torch.set_num_threads(2)


def _nchw(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x).transpose(0, 3, 1, 2))


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize(
    "backbone,decoder,height,width",
    [("alexnet", "plain", 384, 320), ("resnet50", "plain", 256, 320), ("resnet50", "skip", 256, 320)],
)
def test_flax_and_torch_logits_agree(backbone, decoder, height, width):
    model = CMP(backbone=backbone, decoder=decoder)
    inputs = random_inputs(1, height, width, seed=3)
    variables = random_variables(model, *inputs, seed=1)
    variables = jax.jit(lambda v: calibrate(model, v, *inputs))(variables)
    logits = np.asarray(jax.jit(model.apply)(variables, *inputs))

    twin = torch_models.CMP(backbone, decoder).eval()
    torch_models.load_flax_variables(twin, variables)
    with torch.no_grad():
        ref = _nhwc(twin(*(_nchw(x) for x in inputs)))

    assert logits.shape == ref.shape
    assert 0.3 < logits.std() < 100, "logits should have a non-trivial scale"
    err = np.abs(logits - ref).max()
    print(f"{backbone}+{decoder} {height}x{width}: max |logit diff| = {err:.2e}")
    assert err <= 1e-4


def test_torchvision_resnet50_layer4_matches():
    """Torchvision's dilated resnet50 with our weights gives our layer4 features.

    torchvision's ``replace_stride_with_dilation`` leaves the first block of
    each dilated layer at the previous dilation; the original dilates every
    block. Our ``dilation_style`` covers both, and ``apply_cmp_dilation`` turns
    a torchvision model into the original's.
    """
    x = random_inputs(1, 128, 96, seed=4)[0]
    encoders = {s: DilatedResNet(ModelOps(), depth=50, dilation_style=s) for s in ("cmp", "torchvision")}
    variables = random_variables(encoders["cmp"], x, seed=2)
    variables = jax.jit(lambda v: calibrate(encoders["cmp"], v, x))(variables)
    trunk = {
        "params": {k: v for k, v in variables["params"].items() if k != "conv5"},
        "batch_stats": variables["batch_stats"],
    }
    ours = {}
    for style, encoder in encoders.items():
        ours[style] = np.asarray(jax.jit(encoder.apply)(variables, x)["layer4"])
        net = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
        net.fc = torch.nn.Identity()
        if style == "cmp":
            torch_models.apply_cmp_dilation(net, 8)
        torch_models.load_flax_variables(net, trunk)  # strict: every torchvision key is filled
        net.eval()
        with torch.no_grad():
            t = net.maxpool(net.relu(net.bn1(net.conv1(_nchw(x)))))
            ref = _nhwc(net.layer4(net.layer3(net.layer2(net.layer1(t)))))
        assert ours[style].shape == ref.shape == (1, 16, 12, 2048)
        err = np.abs(ours[style] - ref).max()
        scale = np.abs(ref).max()
        print(f"torchvision layer4 ({style} dilation): max |diff| = {err:.2e}, max |x| = {scale:.1f}")
        assert err <= 1e-4 * max(1.0, scale)
    # The two patterns are different functions, so the comparison above is not vacuous.
    assert np.abs(ours["cmp"] - ours["torchvision"]).max() > 1e-2 * np.abs(ours["cmp"]).max()


def test_load_flax_variables_reports_mismatched_shapes():
    model = CMP(backbone="resnet18", num_bins=5)
    variables = random_variables(model, *random_inputs(1, 32, 32))
    twin = torch_models.CMP("resnet18", "plain", num_bins=99)
    with pytest.raises(RuntimeError, match=r"flow_decoder\.head\.weight"):
        torch_models.load_flax_variables(twin, variables)
