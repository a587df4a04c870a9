"""The composite CMP model: image encoder + sparse motion encoder + propagation decoder.

Data flow (NHWC throughout)::

    image  (N, H, W, 3) --image_encoder--> features (N, H/s, W/s, 256) [+ skips]
    sparse (N, H, W, 2) + mask (N, H, W, 2) --flow_encoder--> (N, H/s, W/s, 16)
    concat (N, H/s, W/s, 272) --flow_decoder--> logits (N, h, w, 2 * C)

s is 32 for AlexNet and the ResNet output stride (8 by default); the logits are
at 1/s for the plain decoder and 1/2 for the skip decoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmp_jax.models.backbones import AlexNetBNFCN, DilatedResNet
from cmp_jax.models.decoders import ConvexUpsampler, MotionDecoderPlain, MotionDecoderSkipLayer
from cmp_jax.models.layers import ModelOps
from cmp_jax.models.sparse_encoder import ShallowNet, shallownet_strides

BACKBONES = ("alexnet", "resnet18", "resnet34", "resnet50", "resnet101")
DECODERS = ("plain", "skip")
UPSAMPLINGS = ("bilinear", "convex")


class CMP(nn.Module):
    """Conditional Motion Propagation network.

    Attributes:
      backbone: image encoder, one of ``BACKBONES``.
      decoder: ``"plain"`` (propagation decoder) or ``"skip"`` (skip-layer
        decoder of the demo model; ResNet backbones only).
      decoder_combo: branch pooling strides of the plain decoder.
      output_stride: ResNet output stride (8, 16 or 32); AlexNet is always 32.
      img_enc_dim: channels of the image features (256).
      sparse_enc_dim: channels of the sparse-motion features (16).
      num_bins: flow classes per axis C; the decoder outputs 2 * C logits.
      init_scheme: initialisation scheme, ``"original"`` or ``"he"``.
      dtype: compute dtype (parameters stay float32).
      bn_axis_name: pmap axis for synchronised BatchNorm, or ``None``.
      dilation_style: ResNet dilation pattern, ``"cmp"`` or ``"torchvision"``.
      conv_impl: convolution formulation, ``"auto"`` (taps on the CPU backend,
        xla on GPU/TPU), ``"xla"`` or ``"taps"`` (see ``ModelOps``); the
        parameters are the same.
      upsample: ``"bilinear"`` (the original: the plain decoder's logits stay
        at 1/s and are upsampled bilinearly by the loss and the read-out) or
        ``"convex"`` (``ConvexUpsampler`` returns them at full resolution;
        plain decoder only; not in the original).
      remat: rematerialisation, ``"none"`` (keep every activation for the
        backward pass) or ``"blocks"`` (each ResNet residual block,
        BN-AlexNet stage and decoder branch recomputed in the backward pass;
        less activation memory, more compute; see ``ModelOps``). The
        parameters and their names are the same.
    """

    backbone: str = "resnet50"
    decoder: str = "plain"
    decoder_combo: Sequence[int] = (1, 2, 4)
    output_stride: int = 8
    img_enc_dim: int = 256
    sparse_enc_dim: int = 16
    num_bins: int = 99
    init_scheme: str = "original"
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    dilation_style: str = "cmp"
    conv_impl: str = "auto"
    upsample: str = "bilinear"
    remat: str = "none"

    @property
    def stride(self) -> int:
        """Stride of the encoder feature maps in pixels; crops must be multiples of it."""
        return 32 if self.backbone == "alexnet" else self.output_stride

    def setup(self):
        """Builds the three parts; raises ``ValueError`` for unknown names."""
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {BACKBONES}")
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; choose one of {DECODERS}")
        if self.upsample not in UPSAMPLINGS:
            raise ValueError(f"unknown upsample {self.upsample!r}; choose one of {UPSAMPLINGS}")
        if self.upsample == "convex" and self.decoder != "plain":
            raise ValueError("upsample='convex' needs the plain decoder (the skip decoder ends at 1/2)")
        if self.decoder == "skip" and self.backbone == "alexnet":
            raise ValueError("the skip decoder needs a ResNet backbone (AlexNet has no skips)")
        ops = ModelOps(
            init=self.init_scheme,
            dtype=self.dtype,
            bn_axis_name=self.bn_axis_name,
            conv_impl=self.conv_impl,
            remat=self.remat,
        )
        if self.backbone == "alexnet":
            self.image_encoder = AlexNetBNFCN(ops, output_dim=self.img_enc_dim)
        else:
            self.image_encoder = DilatedResNet(
                ops,
                depth=int(self.backbone.removeprefix("resnet")),
                output_stride=self.output_stride,
                output_dim=self.img_enc_dim,
                dilation_style=self.dilation_style,
            )
        self.flow_encoder = ShallowNet(
            ops, output_dim=self.sparse_enc_dim, strides=shallownet_strides(self.stride)
        )
        if self.decoder == "plain":
            self.flow_decoder = MotionDecoderPlain(
                ops, output_dim=2 * self.num_bins, combo=tuple(self.decoder_combo)
            )
        else:
            self.flow_decoder = MotionDecoderSkipLayer(ops, output_dim=2 * self.num_bins)
        if self.upsample == "convex":
            self.upsampler = ConvexUpsampler(ops, factor=self.stride)

    def check_size(self, height: int, width: int) -> None:
        """Raises ``ValueError`` unless both sides are multiples of the encoder stride."""
        if height % self.stride or width % self.stride:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of the encoder stride "
                f"{self.stride} ({self.backbone}); crop or pad to a multiple of {self.stride}"
            )

    def encode(self, image: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Runs the image encoder once; the result can serve many guidance sets.

        Args:
          image: (N, H, W, 3) image normalised with ImageNet mean/std on the
            0-255 scale; H and W multiples of ``stride``.
          train: BatchNorm batch statistics and dropout.

        Returns:
          dict of named features; ``features`` is (N, H/s, W/s, img_enc_dim).
        """
        self.check_size(image.shape[1], image.shape[2])
        return self.image_encoder(image.astype(self.dtype), train)

    def propagate(
        self,
        image_features: Mapping[str, jax.Array],
        sparse: jax.Array,
        mask: jax.Array,
        train: bool = False,
    ) -> jax.Array:
        """Propagates sparse guidance into dense flow logits.

        Args:
          image_features: output of ``encode``.
          sparse: (N, H, W, 2) guidance flow (dx, dy) in pixels, zero elsewhere.
          mask: (N, H, W, 2) 1.0 at guidance pixels in both channels, else 0.
          train: BatchNorm mode.

        Returns:
          (N, h, w, 2 * num_bins) float32 logits, x classifier first; (h, w)
          is (H, W) with ``upsample="convex"``.
        """
        if sparse.shape != mask.shape or sparse.shape[-1] != 2:
            raise ValueError(
                f"sparse and mask must both be (N, H, W, 2), got {sparse.shape} and {mask.shape}"
            )
        self.check_size(sparse.shape[1], sparse.shape[2])
        guidance = jnp.concatenate([sparse, mask], axis=-1).astype(self.dtype)
        motion = self.flow_encoder(guidance, train)
        feats = image_features["features"]
        if motion.shape[1:3] != feats.shape[1:3]:
            raise ValueError(
                f"image features {feats.shape[1:3]} and guidance features {motion.shape[1:3]} "
                "differ in size: the guidance must have the image's height and width"
            )
        x = jnp.concatenate([feats, motion.astype(feats.dtype)], axis=-1)
        if self.decoder == "plain":
            logits = self.flow_decoder(x, train)
            if self.upsample == "convex":
                logits = self.upsampler(logits, x, train)
        else:
            logits = self.flow_decoder(x, image_features, train)
        return logits.astype(jnp.float32)

    def __call__(
        self, image: jax.Array, sparse: jax.Array, mask: jax.Array, train: bool = False
    ) -> jax.Array:
        """Full forward: ``propagate(encode(image), sparse, mask)``.

        Args:
          image: (N, H, W, 3) normalised image.
          sparse: (N, H, W, 2) guidance flow in pixels.
          mask: (N, H, W, 2) guidance mask.
          train: BatchNorm batch statistics and dropout (``dropout`` RNG for AlexNet).

        Returns:
          (N, h, w, 2 * num_bins) float32 logits.
        """
        return self.propagate(self.encode(image, train), sparse, mask, train)


def build_model(cfg: Mapping[str, Any], **overrides: Any) -> CMP:
    """Builds ``CMP`` from a model config (``config.model``) plus overrides.

    Unknown keys raise an error listing the accepted ones.
    """
    fields = {f for f in CMP.__dataclass_fields__ if f not in ("parent", "name")}
    kwargs = {**dict(cfg), **overrides}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; accepted: {sorted(fields)}")
    if isinstance(kwargs.get("dtype"), str):
        kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
    if "decoder_combo" in kwargs:
        kwargs["decoder_combo"] = tuple(kwargs["decoder_combo"])
    return CMP(**kwargs)
