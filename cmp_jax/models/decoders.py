"""Dense motion decoders: the plain propagation decoder and the skip-layer decoder.

Both take the concatenated image and sparse-motion features (N, h, w, 272) and
return logits (N, h', w', 2 * C), x classifier first. Names mirror the PyTorch
keys with ``.N`` written ``_N`` (``decoder2_1`` is ``decoder2.1``: index 0 of a
pooled branch is its max-pool, which has no weights).

``ConvexUpsampler`` is not in the original: an option (``model.upsample =
"convex"``) that brings the plain decoder's logits to the input resolution by
learned convex combinations of 3 x 3 coarse neighbours, as RAFT (Teed & Deng,
ECCV 2020) upsamples its flow, instead of the loss's bilinear upsampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmp_jax.flow import resize_bilinear_align_corners
from cmp_jax.models.layers import ModelOps, conv_bn_relu, max_pool

BRANCH_STRIDES = (1, 2, 4, 8)


class _BranchDecoder(nn.Module):
    """Base of the two decoders: their propagation branch.

    Attributes:
      ops: layer factory.
    """

    ops: ModelOps = ModelOps()

    def _branches(self, x: jax.Array, train: bool, strides: Sequence[int], num_convs: int) -> list[jax.Array]:
        """``_branch`` for each of ``strides``, each a unit of ``ModelOps.remat_block``."""
        branch = self.ops.remat_block(_BranchDecoder._branch, static_argnums=(2, 3, 4))
        return [branch(self, x, train, k, num_convs) for k in strides]

    def _branch(self, x: jax.Array, train: bool, k: int, num_convs: int) -> jax.Array:
        """One propagation branch: max-pool k (k > 1), ``num_convs`` 3x3 conv-BN-ReLU to 128.

        Output is upsampled back to the input size (align-corners bilinear).
        Creates ``decoder{k}_{i}`` in this module's scope.
        """
        size = x.shape[1:3]
        if min(size) < k:
            raise ValueError(
                f"decoder branch {k} max-pools by {k} but the features are only {size[0]}x{size[1]}; "
                f"use an input at least {k} times the encoder stride on each side"
            )
        offset = 0
        if k > 1:
            x = max_pool(x, k, k)
            offset = 1
        for j in range(num_convs):
            i = offset + 3 * j
            x = conv_bn_relu(
                self.ops, x, train, 128, 3, padding=1,
                conv_name=f"decoder{k}_{i}", bn_name=f"decoder{k}_{i + 1}",
            )  # fmt: skip
        return resize_bilinear_align_corners(x, size)


class MotionDecoderPlain(_BranchDecoder):
    """Plain propagation decoder (all representation-learning configs).

    One branch per entry of ``combo`` (max-pool k, two 3x3 conv-BN-ReLU to 128,
    upsample back), concatenated in ``combo`` order and mapped by a single 1x1
    conv ``head`` (with bias) to ``output_dim`` logits at the input resolution.
    1,460,934 parameters for combo (1, 2, 4) and 198 outputs.

    Attributes:
      ops: layer factory.
      output_dim: 2 * C logits.
      combo: pooling strides of the branches, each in (1, 2, 4, 8).
    """

    output_dim: int = 198
    combo: Sequence[int] = (1, 2, 4)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Decodes fused features.

        Args:
          x: (N, h, w, C_img + C_sparse) fused features.
          train: BatchNorm mode.

        Returns:
          (N, h, w, output_dim) logits.
        """
        bad = [k for k in self.combo if k not in BRANCH_STRIDES]
        if bad or not self.combo or len(set(self.combo)) != len(self.combo):
            raise ValueError(
                f"decoder combo must be distinct values from {BRANCH_STRIDES}, got {tuple(self.combo)}"
            )
        branches = self._branches(x, train, self.combo, num_convs=2)
        x = jnp.concatenate(branches, axis=-1)
        return self.ops.conv(self.output_dim, 1, name="head")(x)


class MotionDecoderSkipLayer(_BranchDecoder):
    """Skip-layer decoder of the released demo model (semi-automatic annotation).

    Four branches (k = 1, 2, 4, 8) with three 3x3 conv-BN-ReLU each, concat ->
    ``fusion8`` (3x3 -> 256) at 1/8; upsample to the ``layer1`` skip (1/4),
    concat with ``skipconv4`` (3x3 256 -> 128) of it -> ``fusion4`` (3x3 -> 128);
    upsample to the ``stem`` skip (1/2), concat with ``skipconv2`` (3x3 64 -> 32)
    of it -> ``fusion2`` (3x3 -> 64); ``head`` 1x1 -> logits at 1/2.
    4,479,846 parameters with 198 outputs. Ignores any branch combo, as the
    original does.

    Attributes:
      ops: layer factory.
      output_dim: 2 * C logits.
    """

    output_dim: int = 198

    @nn.compact
    def __call__(self, x: jax.Array, skips: dict[str, jax.Array], train: bool = False) -> jax.Array:
        """Decodes fused features with encoder skips.

        Args:
          x: (N, h, w, 272) fused features at 1/8.
          skips: encoder features; needs ``layer1`` (N, H/4, W/4, C1) and
            ``stem`` (N, H/2, W/2, 64); with output stride 8 these are 2h and 4h.
          train: BatchNorm mode.

        Returns:
          (N, H/2, W/2, output_dim) logits, at the ``stem`` resolution.
        """
        missing = [k for k in ("layer1", "stem") if k not in skips]
        if missing:
            raise ValueError(
                f"the skip decoder needs encoder features {missing}; only ResNet image encoders provide them"
            )
        ops = self.ops
        x = jnp.concatenate(self._branches(x, train, BRANCH_STRIDES, num_convs=3), -1)
        x = conv_bn_relu(ops, x, train, 256, 3, padding=1, conv_name="fusion8_0", bn_name="fusion8_1")
        for level, skip_name, skip_ch, fused_ch in ((4, "layer1", 128, 128), (2, "stem", 32, 64)):
            skip = skips[skip_name]
            x = resize_bilinear_align_corners(x, skip.shape[1:3])
            s = conv_bn_relu(
                ops, skip, train, skip_ch, 3, padding=1,
                conv_name=f"skipconv{level}_0", bn_name=f"skipconv{level}_1",
            )  # fmt: skip
            x = jnp.concatenate([x, s.astype(x.dtype)], axis=-1)
            x = conv_bn_relu(
                ops, x, train, fused_ch, 3, padding=1,
                conv_name=f"fusion{level}_0", bn_name=f"fusion{level}_1",
            )  # fmt: skip
        return ops.conv(self.output_dim, 1, name="head")(x)


class ConvexUpsampler(nn.Module):
    """Learned convex upsampling of logits by an integer factor (not in the original).

    Each fine pixel is a convex combination of the 3 x 3 coarse logits around
    its coarse pixel; the weights (softmax over the 9) come from the fused
    features through ``mask_0`` (3x3 conv to ``hidden``), ``mask_1`` (BN) and
    ReLU, and ``mask_2`` (1x1 conv to 9 * factor**2). Coarse pixel (i, j)
    covers fine pixels [i * factor, (i + 1) * factor) (half-pixel centres);
    borders repeat the edge logits.

    Attributes:
      ops: layer factory.
      factor: upsampling factor s (the encoder stride).
      hidden: channels of the mask branch.
    """

    ops: ModelOps = ModelOps()
    factor: int = 8
    hidden: int = 64

    @nn.compact
    def __call__(self, logits: jax.Array, features: jax.Array, train: bool = False) -> jax.Array:
        """Upsamples logits.

        Args:
          logits: (N, h, w, C) coarse logits.
          features: (N, h, w, F) the fused features the logits were decoded from.
          train: BatchNorm mode.

        Returns:
          (N, h * s, w * s, C) logits.
        """
        n, h, w, c = logits.shape
        s = self.factor
        mask = conv_bn_relu(
            self.ops, features, train, self.hidden, 3, padding=1, conv_name="mask_0", bn_name="mask_1"
        )
        mask = self.ops.conv(9 * s * s, 1, name="mask_2")(mask)
        mask = jax.nn.softmax(mask.astype(jnp.float32).reshape(n, h, w, 9, s, s), axis=3)
        padded = jnp.pad(logits.astype(jnp.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        neighbours = jnp.stack(
            [padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=3
        )
        fine = jnp.einsum("nhwkab,nhwkc->nhawbc", mask, neighbours)
        return fine.reshape(n, h * s, w * s, c).astype(logits.dtype)
