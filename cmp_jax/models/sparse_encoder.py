"""Sparse motion encoder (the original ``ShallowNet``).

Input is the 4-channel guidance map [dx, dy, mask, mask] (NHWC; dx, dy in pixels,
zero away from guidance points; mask 0/1), unnormalised as in the original.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from cmp_jax.models.layers import ModelOps, avg_pool, conv_bn_relu, max_pool


def shallownet_strides(stride: int) -> tuple[int, int, int]:
    """Strides (conv, max-pool, avg-pool) giving a total ``stride``.

    8 gives the original ``shallownet8x`` (2, 2, 2) and 32 ``shallownet32x``
    (2, 2, 8); any multiple of 4 follows the same pattern.
    """
    if stride < 4 or stride % 4:
        raise ValueError(f"ShallowNet total stride must be a multiple of 4, got {stride}")
    return (2, 2, stride // 4)


class ShallowNet(nn.Module):
    """Conv5x5/s0 -> BN -> ReLU -> MaxPool s1 -> Conv3x3 -> BN -> ReLU -> AvgPool s2.

    PyTorch keys ``features.{0,1,4,5}`` map to ``features_{0,1,4,5}``. 4,000
    parameters with 16 output channels.

    Attributes:
      ops: layer factory.
      output_dim: channels of the second conv, the output (16); the first has 16.
      strides: (s0, s1, s2); (2, 2, 2) is 8x, (2, 2, 8) is 32x.
    """

    ops: ModelOps = ModelOps()
    output_dim: int = 16
    strides: Sequence[int] = (2, 2, 2)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Encodes guidance.

        Args:
          x: (N, H, W, 4) guidance [dx, dy, mask, mask].
          train: BatchNorm mode.

        Returns:
          (N, H/s, W/s, output_dim) features, s = s0 * s1 * s2 (floor division).
        """
        s0, s1, s2 = self.strides
        x = conv_bn_relu(
            self.ops, x, train, 16, 5, stride=s0, padding=2, conv_name="features_0", bn_name="features_1"
        )
        x = max_pool(x, s1, s1)
        x = conv_bn_relu(
            self.ops, x, train, self.output_dim, 3, padding=1, conv_name="features_4", bn_name="features_5"
        )
        return avg_pool(x, s2)
