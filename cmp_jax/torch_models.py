"""PyTorch definitions of the CMP architectures, key for key the original's.

These serve three purposes: numerical parity tests of the Flax modules, users
who fine-tune the BN-AlexNet encoder in PyTorch (it is not a torchvision
model), and the converter. Layouts are PyTorch's (NCHW); state-dict keys are
the original repository's (without its ``module.`` prefix), so
``load_flax_variables`` can copy a cmp-jax model in with ``strict=True``.

The ResNet encoder is torchvision's ``ResNet`` with the original's rewrite of
the last stages (``apply_cmp_dilation``) and the extra ``conv5`` head; its
trunk keys are torchvision's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cmp_jax.convert.torch_layout import flax_to_torch_state_dict


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class AlexNetBNFCN(nn.Module):
    """BN-AlexNet FCN encoder: 96-256-384-384-256, fc6 3x3 / fc7 1x1 (4096), conv8 1x1.

    Input (N, 3, H, W) normalised; output (N, output_dim, H/32, W/32).
    """

    def __init__(self, output_dim: int = 256, strides: Sequence[int] = (4, 2, 2, 2)):
        super().__init__()
        s1, s2, s3, s5 = strides
        self.conv1 = nn.Sequential(*_conv_bn_relu(3, 96, 11, s1, 5))
        self.pool1 = nn.MaxPool2d(3, s2, 1)
        self.conv2 = nn.Sequential(*_conv_bn_relu(96, 256, 5, 1, 2))
        self.pool2 = nn.MaxPool2d(3, s3, 1)
        self.conv3 = nn.Sequential(*_conv_bn_relu(256, 384, 3, 1, 1))
        self.conv4 = nn.Sequential(*_conv_bn_relu(384, 384, 3, 1, 1))
        self.conv5 = nn.Sequential(*_conv_bn_relu(384, 256, 3, 1, 1))
        self.pool5 = nn.MaxPool2d(3, s5, 1)
        self.fc6 = nn.Sequential(*_conv_bn_relu(256, 4096, 3, 1, 1), nn.Dropout(0.5))
        self.fc7 = nn.Sequential(*_conv_bn_relu(4096, 4096, 1), nn.Dropout(0.5))
        self.conv8 = nn.Conv2d(4096, output_dim, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``{"features": (N, 256, H/32, W/32)}`` for a normalised (N, 3, H, W) image."""
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.pool5(self.conv5(self.conv4(self.conv3(x))))
        return {"features": self.conv8(self.fc7(self.fc6(x)))}


def apply_cmp_dilation(resnet: torchvision.models.ResNet, output_stride: int = 8) -> None:
    """Rewrites a torchvision ResNet in place into the original's dilated trunk.

    Every block of layer3 (output stride 8) and layer4 (8 or 16) gets stride 1,
    and its 3x3 convs dilation = padding = 2 or 4 (2 for layer4 at stride 16);
    the shortcut 1x1 convs get stride 1. Unlike torchvision's
    ``replace_stride_with_dilation``, the first block of a dilated layer is
    dilated too. Works on a plain torchvision model, or on one built with
    ``replace_stride_with_dilation=[False, True, True]`` when ``output_stride``
    is 8 (with 16 its layer3 would stay at stride 1); the weights are untouched.

    Args:
      resnet: a torchvision ResNet (BasicBlock or Bottleneck).
      output_stride: 8, 16 or 32 (32 leaves the model as it is).
    """
    dilations = {8: {"layer3": 2, "layer4": 4}, 16: {"layer4": 2}, 32: {}}
    if output_stride not in dilations:
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    for layer_name, d in dilations[output_stride].items():
        for block in getattr(resnet, layer_name):
            for conv in (block.conv1, block.conv2):
                if conv.kernel_size == (3, 3):
                    conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)


_RESNETS = {
    18: (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
    34: (torchvision.models.resnet.BasicBlock, [3, 4, 6, 3]),
    50: (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3]),
    101: (torchvision.models.resnet.Bottleneck, [3, 4, 23, 3]),
}


class DilatedResNet(torchvision.models.ResNet):
    """torchvision ResNet trunk (no ``fc``) dilated as the original, plus ``conv5`` 1x1 -> 256.

    ``forward`` returns ``features`` (N, output_dim, H/s, W/s), ``stem``
    (after conv1-BN-ReLU, 1/2), ``layer1`` (1/4) and ``layer4`` (the trunk
    output), as the Flax encoder does.
    """

    def __init__(self, depth: int = 50, output_stride: int = 8, output_dim: int = 256):
        block, layers = _RESNETS[depth]
        super().__init__(block, layers)
        del self.fc
        apply_cmp_dilation(self, output_stride)
        self.conv5 = nn.Conv2d(512 * block.expansion, output_dim, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns the named features of a normalised (N, 3, H, W) image."""
        stem = self.relu(self.bn1(self.conv1(x)))
        layer1 = self.layer1(self.maxpool(stem))
        layer4 = self.layer4(self.layer3(self.layer2(layer1)))
        return {"features": self.conv5(layer4), "stem": stem, "layer1": layer1, "layer4": layer4}


class ShallowNet(nn.Module):
    """Sparse motion encoder; ``features.{0,1,4,5}`` as in the original."""

    def __init__(self, output_dim: int = 16, strides: Sequence[int] = (2, 2, 2)):
        super().__init__()
        s0, s1, s2 = strides
        self.features = nn.Sequential(
            *_conv_bn_relu(4, 16, 5, s0, 2),
            nn.MaxPool2d(s1, s1),
            *_conv_bn_relu(16, output_dim, 3, 1, 1),
            nn.AvgPool2d(s2, s2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps guidance (N, 4, H, W) to (N, 16, H/s, W/s)."""
        return self.features(x)


def _branch(k: int, cin: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.MaxPool2d(k, k)] if k > 1 else []
    for j in range(num_convs):
        layers += _conv_bn_relu(cin if j == 0 else 128, 128, 3, 1, 1)
    return nn.Sequential(*layers)


class MotionDecoderPlain(nn.Module):
    """Plain propagation decoder: branches ``decoder{k}``, concat, 1x1 ``head``."""

    def __init__(self, input_dim: int = 272, output_dim: int = 198, combo: Sequence[int] = (1, 2, 4)):
        super().__init__()
        self.combo = tuple(combo)
        for k in self.combo:
            self.add_module(f"decoder{k}", _branch(k, input_dim, 2))
        self.head = nn.Conv2d(128 * len(self.combo), output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps fused features (N, 272, h, w) to logits (N, 2C, h, w)."""
        size = x.shape[2:]
        outs = [_upsample(getattr(self, f"decoder{k}")(x), size) for k in self.combo]
        return self.head(torch.cat(outs, dim=1))


class MotionDecoderSkipLayer(nn.Module):
    """Skip-layer decoder of the demo model (four 3-conv branches, fusion8/4/2, head at 1/2)."""

    def __init__(self, input_dim: int = 272, output_dim: int = 198, layer1_dim: int = 256):
        super().__init__()
        for k in (1, 2, 4, 8):
            self.add_module(f"decoder{k}", _branch(k, input_dim, 3))
        self.fusion8 = nn.Sequential(*_conv_bn_relu(512, 256, 3, 1, 1))
        self.skipconv4 = nn.Sequential(*_conv_bn_relu(layer1_dim, 128, 3, 1, 1))
        self.fusion4 = nn.Sequential(*_conv_bn_relu(256 + 128, 128, 3, 1, 1))
        self.skipconv2 = nn.Sequential(*_conv_bn_relu(64, 32, 3, 1, 1))
        self.fusion2 = nn.Sequential(*_conv_bn_relu(128 + 32, 64, 3, 1, 1))
        self.head = nn.Conv2d(64, output_dim, 1)

    def forward(self, x: torch.Tensor, skips: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Maps fused features (N, 272, h, w) and skips to logits (N, 2C, 4h, 4w)."""
        size = x.shape[2:]
        x = torch.cat([_upsample(getattr(self, f"decoder{k}")(x), size) for k in (1, 2, 4, 8)], 1)
        x = self.fusion8(x)
        layer1, stem = skips["layer1"], skips["stem"]
        x = self.fusion4(torch.cat([_upsample(x, layer1.shape[2:]), self.skipconv4(layer1)], 1))
        x = self.fusion2(torch.cat([_upsample(x, stem.shape[2:]), self.skipconv2(stem)], 1))
        return self.head(x)


class CMP(nn.Module):
    """The CMP network in PyTorch (NCHW); keys as the original without ``module.``.

    Covers the original's options (256/16 feature channels, the original's
    dilation pattern); Flax models built with other ``img_enc_dim``,
    ``sparse_enc_dim`` or ``dilation_style="torchvision"`` have no twin here.

    Args:
      backbone: ``alexnet`` or ``resnet{18,34,50,101}``.
      decoder: ``plain`` or ``skip``.
      decoder_combo: plain-decoder branch strides.
      output_stride: ResNet output stride.
      num_bins: classes per axis (logits have 2 * num_bins channels).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        decoder: str = "plain",
        decoder_combo: Sequence[int] = (1, 2, 4),
        output_stride: int = 8,
        num_bins: int = 99,
    ):
        super().__init__()
        if backbone != "alexnet" and backbone.removeprefix("resnet") not in ("18", "34", "50", "101"):
            raise ValueError(f"unknown backbone {backbone!r}; choose alexnet or resnet18/34/50/101")
        if decoder not in ("plain", "skip"):
            raise ValueError(f"unknown decoder {decoder!r}; choose 'plain' or 'skip'")
        if backbone == "alexnet":
            self.image_encoder = AlexNetBNFCN()
            stride = 32
        else:
            depth = int(backbone.removeprefix("resnet"))
            self.image_encoder = DilatedResNet(depth, output_stride)
            stride = output_stride
        self.flow_encoder = ShallowNet(strides=(2, 2, stride // 4))
        self.decoder = decoder
        if decoder == "plain":
            self.flow_decoder = MotionDecoderPlain(output_dim=2 * num_bins, combo=decoder_combo)
        else:
            layer1_dim = 64 * self.image_encoder.layer1[0].expansion
            self.flow_decoder = MotionDecoderSkipLayer(output_dim=2 * num_bins, layer1_dim=layer1_dim)

    def forward(self, image: torch.Tensor, sparse: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits (N, 2C, h, w) from image (N, 3, H, W), sparse (N, 2, H, W), mask (N, 2, H, W)."""
        feats = self.image_encoder(image)
        motion = self.flow_encoder(torch.cat([sparse, mask], dim=1))
        x = torch.cat([feats["features"], motion], dim=1)
        if self.decoder == "plain":
            return self.flow_decoder(x)
        return self.flow_decoder(x, feats)


def load_flax_variables(module: nn.Module, variables: Mapping[str, Any]) -> None:
    """Copies cmp-jax variables into a PyTorch module of the same architecture.

    Args:
      module: a module of this file (``CMP`` or one of its parts) whose keys
        match the Flax tree given.
      variables: ``{"params": ..., "batch_stats": ...}`` for that module.

    Raises:
      RuntimeError: listing missing, unexpected or mis-shaped keys.
    """
    state = {k: torch.from_numpy(v) for k, v in flax_to_torch_state_dict(variables).items()}
    own = module.state_dict()
    bad_shapes = [
        f"{k}: flax {tuple(v.shape)} vs torch {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad_shapes:
        raise RuntimeError("mis-shaped keys:\n  " + "\n  ".join(bad_shapes))
    module.load_state_dict(state, strict=True)
