"""Image encoders: the BN-AlexNet FCN and the dilated ResNets of the original.

Each encoder maps a normalised image (N, H, W, 3) to a dict of named NHWC
features. Every encoder returns ``"features"``: the (N, H/s, W/s, 256) output of
its final 1x1 conv (bias, no BN, no ReLU), s being ``stride``. ResNets also
return ``"stem"`` (after conv1, BN and ReLU; 64 channels at 1/2) and
``"layer1"`` (256 channels for ResNet-50/101, 64 for 18/34, at 1/4), which the
skip decoder uses, and ``"layer4"`` (the trunk output before ``conv5``).

Submodule names mirror the original PyTorch keys with ``.N`` written ``_N``:
``conv1_0``/``conv1_1`` for AlexNet's ``conv1.0``/``conv1.1``, ``layer3_0`` for
ResNet ``layer3.0``, ``downsample_0``/``downsample_1`` for the shortcut conv/BN.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from cmp_jax.models.layers import ModelOps, conv_bn_relu, max_pool


class AlexNetBNFCN(nn.Module):
    """Fully convolutional AlexNet with BatchNorm (original ``AlexNetBN_FCN``).

    Channel widths 96-256-384-384-256 (Krizhevsky's, not torchvision's), fc6 as a
    3x3 conv and fc7 as a 1x1 conv with 4096 channels, each followed by dropout
    0.5, then ``conv8``: 1x1 to ``output_dim`` with bias and no BN/ReLU.

    Attributes:
      ops: layer factory (init scheme, dtype, BN sync).
      output_dim: channels of the output features (256).
      strides: strides of conv1, pool1, pool2 and pool5; (4, 2, 2, 2) gives the
        original total stride 32, (2, 2, 2, 1) its unused 8x variant.
      dropout_rate: dropout after fc6 and fc7 (0.5).
    """

    ops: ModelOps = ModelOps()
    output_dim: int = 256
    strides: Sequence[int] = (4, 2, 2, 2)
    dropout_rate: float = 0.5

    @property
    def stride(self) -> int:
        """Total output stride in pixels."""
        s = 1
        for v in self.strides:
            s *= v
        return s

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Encodes an image.

        Args:
          x: normalised image, (N, H, W, 3).
          train: BatchNorm batch statistics and dropout (needs the ``dropout`` RNG).

        Returns:
          ``{"features": (N, H/32, W/32, output_dim)}`` for the default strides.
        """
        s1, s2, s3, s5 = self.strides
        stage = self.ops.remat_block(AlexNetBNFCN._stage, static_argnums=tuple(range(2, 9)))
        x = stage(self, x, train, "conv1", 96, 11, s1, 5, s2)
        x = stage(self, x, train, "conv2", 256, 5, 1, 2, s3)
        x = stage(self, x, train, "conv3", 384, 3, 1, 1, 0)
        x = stage(self, x, train, "conv4", 384, 3, 1, 1, 0)
        x = stage(self, x, train, "conv5", 256, 3, 1, 1, s5)
        x = stage(self, x, train, "fc6", 4096, 3, 1, 1, 0)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = stage(self, x, train, "fc7", 4096, 1, 1, 0, 0)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = self.ops.conv(self.output_dim, 1, name="conv8")(x)
        return {"features": x}

    def _stage(
        self,
        x: jax.Array,
        train: bool,
        name: str,
        features: int,
        kernel: int,
        stride: int,
        padding: int,
        pool_stride: int,
    ) -> jax.Array:
        """One stage: conv ``{name}_0``, BN ``{name}_1``, ReLU, then a 3x3 max-pool if ``pool_stride``.

        A unit of ``ModelOps.remat_block``, called from ``__call__`` with the
        module as ``self``; every argument but ``x`` is static.
        """
        x = conv_bn_relu(
            self.ops, x, train, features, kernel, stride=stride, padding=padding,
            conv_name=f"{name}_0", bn_name=f"{name}_1",
        )  # fmt: skip
        return max_pool(x, 3, pool_stride, 1) if pool_stride else x


class _ResidualBlock(nn.Module):
    """Fields shared by the two ResNet block types.

    Attributes:
      ops: layer factory.
      planes: width of the block's convs; the output has ``expansion * planes`` channels.
      stride: stride of the block's strided 3x3 conv.
      dilation: dilation (and padding) of the block's 3x3 convs.
      downsample: whether the shortcut is a 1x1 conv + BN (``downsample.0/1``).
    """

    ops: ModelOps
    planes: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False


class BasicBlock(_ResidualBlock):
    """ResNet basic block (two 3x3 convs, the first strided), torchvision layout."""

    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Maps (N, H, W, C_in) to (N, H/stride, W/stride, planes)."""
        ops = self.ops
        d = self.dilation
        out = ops.conv(
            self.planes, 3, stride=self.stride, padding=d, dilation=d, use_bias=False, name="conv1"
        )(x)
        out = nn.relu(ops.batch_norm(name="bn1")(out, train))
        out = ops.conv(self.planes, 3, padding=d, dilation=d, use_bias=False, name="conv2")(out)
        out = ops.batch_norm(name="bn2")(out, train)
        shortcut = _shortcut(ops, x, train, self.planes, self.stride) if self.downsample else x
        return nn.relu(out + shortcut)


class Bottleneck(_ResidualBlock):
    """ResNet v1.5 bottleneck (1x1, strided 3x3, 1x1 to 4 * planes), torchvision layout."""

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Maps (N, H, W, C_in) to (N, H/stride, W/stride, 4 * planes)."""
        ops = self.ops
        d = self.dilation
        out = ops.conv(self.planes, 1, use_bias=False, name="conv1")(x)
        out = nn.relu(ops.batch_norm(name="bn1")(out, train))
        out = ops.conv(
            self.planes, 3, stride=self.stride, padding=d, dilation=d, use_bias=False, name="conv2"
        )(out)
        out = nn.relu(ops.batch_norm(name="bn2")(out, train))
        out = ops.conv(self.planes * 4, 1, use_bias=False, name="conv3")(out)
        out = ops.batch_norm(name="bn3")(out, train)
        shortcut = _shortcut(ops, x, train, self.planes * 4, self.stride) if self.downsample else x
        return nn.relu(out + shortcut)


def _shortcut(ops: ModelOps, x: jax.Array, train: bool, features: int, stride: int) -> jax.Array:
    """The projection shortcut ``downsample.0`` (1x1 conv) and ``downsample.1`` (BN)."""
    x = ops.conv(features, 1, stride=stride, use_bias=False, name="downsample_0")(x)
    return ops.batch_norm(name="downsample_1")(x, train)


RESNET_DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}

DILATION_STYLES = ("cmp", "torchvision")


class DilatedResNet(nn.Module):
    """ResNet trunk with dilated last stages plus a 1x1 conv to ``output_dim``.

    With ``output_stride=8`` (the original), layer3 and layer4 run at stride 1
    with dilation 2 and 4; 16 dilates only layer4 (dilation 2); 32 is the plain
    ResNet. ``dilation_style="cmp"`` (default) dilates every block of a dilated
    layer, as the original rewrites them; ``"torchvision"`` gives the first block
    of each dilated layer the previous dilation, as torchvision's
    ``replace_stride_with_dilation`` does.

    Attributes:
      ops: layer factory.
      depth: 18, 34, 50 or 101.
      output_stride: 8, 16 or 32.
      output_dim: channels of the ``conv5`` head (256).
      dilation_style: ``"cmp"`` or ``"torchvision"``.
    """

    ops: ModelOps = ModelOps()
    depth: int = 50
    output_stride: int = 8
    output_dim: int = 256
    dilation_style: str = "cmp"

    @property
    def stride(self) -> int:
        """Total output stride in pixels."""
        return self.output_stride

    def _layer_plan(self) -> list[tuple[int, int, int]]:
        """(stride, dilation, first-block dilation) of layer1..layer4."""
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"ResNet output_stride must be 8, 16 or 32, got {self.output_stride}")
        if self.dilation_style not in DILATION_STYLES:
            raise ValueError(
                f"unknown dilation_style {self.dilation_style!r}; choose one of {DILATION_STYLES}"
            )
        n_dilated = {8: 2, 16: 1, 32: 0}[self.output_stride]
        plan, dilation = [(1, 1, 1)], 1
        for i in range(3):
            if i >= 3 - n_dilated:
                previous, dilation = dilation, dilation * 2
                first = previous if self.dilation_style == "torchvision" else dilation
                plan.append((1, dilation, first))
            else:
                plan.append((2, 1, 1))
        return plan

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Encodes an image.

        Args:
          x: normalised image, (N, H, W, 3).
          train: BatchNorm mode.

        Returns:
          dict with ``features`` (N, H/s, W/s, output_dim), ``stem``
          (N, H/2, W/2, 64), ``layer1`` (N, H/4, W/4, 64 * expansion) and
          ``layer4`` (N, H/s, W/s, 512 * expansion), the trunk output.
        """
        if self.depth not in RESNET_DEPTHS:
            raise ValueError(f"unknown ResNet depth {self.depth}; choose one of {sorted(RESNET_DEPTHS)}")
        block_cls, counts = RESNET_DEPTHS[self.depth]
        ops = self.ops
        block = ops.remat_block(block_cls, static_argnums=(2,))
        x = ops.conv(64, 7, stride=2, padding=3, use_bias=False, name="conv1")(x)
        stem = nn.relu(ops.batch_norm(name="bn1")(x, train))
        x = max_pool(stem, 3, 2, 1)
        feats = {"stem": stem}
        in_ch = 64
        for li, ((stride, dilation, first), count) in enumerate(
            zip(self._layer_plan(), counts, strict=True), start=1
        ):
            planes = 64 * 2 ** (li - 1)
            for bi in range(count):
                x = block(
                    ops,
                    planes,
                    stride=stride if bi == 0 else 1,
                    dilation=first if bi == 0 else dilation,
                    downsample=bi == 0 and (stride != 1 or in_ch != planes * block_cls.expansion),
                    name=f"layer{li}_{bi}",
                )(x, train)
                in_ch = planes * block_cls.expansion
            if li in (1, 4):
                feats[f"layer{li}"] = x
        feats["features"] = ops.conv(self.output_dim, 1, name="conv5")(x)
        return feats
