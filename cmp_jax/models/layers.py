"""Building blocks shared by every CMP module: convolutions, BatchNorm, pooling.

All tensors are NHWC. Convolutions use PyTorch's explicit symmetric padding so
that output sizes equal the original's for every input size. Parameter names
follow Flax (``kernel`` HWIO, ``bias``, ``scale``); running BatchNorm statistics
live in the ``batch_stats`` collection as ``mean`` and ``var``.

Two initialisation schemes are available (``ModelOps.init``):

* ``"original"`` (default): what the original code ends up with after its
  global re-initialisation: every conv kernel Xavier-normal with gain 0.02
  (std = 0.02 * sqrt(2 / (fan_in + fan_out)), fans = channels * k * k), biases 0,
  BatchNorm scale ~ N(1, 0.02), BatchNorm shift 0.
* ``"he"``: He/Kaiming normal on ``fan_out`` (std = sqrt(2 / (out * k * k))),
  as torchvision initialises ResNets; BatchNorm scale 1, shift 0, biases 0.

Two formulations of the convolution are available (``ModelOps.conv_impl``),
with identical parameters; ``"auto"`` (the default) picks ``"taps"`` when JAX's
default backend is the CPU and ``"xla"`` on GPU/TPU (``resolve_conv_impl``):

* ``"xla"``: ``lax.conv_general_dilated``.
* ``"taps"``: ``tap_conv``, a k x k convolution written as the sum over its
  k * k taps of a 2-D matmul (N * H' * W', C_in) @ (C_in, C_out) of a strided,
  shifted slice of the padded input; a 1x1 convolution is a single matmul.
  XLA:CPU computes the weight gradient of ``lax.conv`` slowly (2-6x slower
  than the forward for wide layers); the gradients of these matmuls are plain
  matmuls. Convolutions with fewer than ``TAP_MIN_CHANNELS`` input channels
  (the RGB and guidance stems), where k * k thin matmuls lose, stay on
  ``lax.conv``. Meant for CPU training (``scripts/benchmark.py train_step``);
  on GPU/TPU ``lax.conv`` is the native path.

Rematerialisation (``ModelOps.remat``): ``"none"`` (default) keeps every
activation for the backward pass; ``"blocks"`` stores only the inputs of each
block (ResNet residual block, BN-AlexNet stage, decoder branch) and recomputes
its inside in the backward pass (``flax.linen.remat``), trading compute for
activation memory. The parameters, their names and the function are the same.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging
from jax import lax

INIT_SCHEMES = ("original", "he")
CONV_IMPLS = ("auto", "xla", "taps")
REMAT_MODES = ("none", "blocks")
# Below this many input channels a k x k "taps" convolution (k > 1) uses lax.conv.
TAP_MIN_CHANNELS = 16

_XAVIER_GAIN = 0.02
_BN_SCALE_STD = 0.02


def _bn_scale_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """Draws BatchNorm scales from N(1, 0.02), the original's global re-init."""
    return 1.0 + _BN_SCALE_STD * jax.random.normal(key, shape, dtype)


@functools.cache
def _auto_conv_impl(backend: str) -> str:
    impl = "taps" if backend == "cpu" else "xla"
    logging.info('conv_impl "auto": %r on the %s backend', impl, backend)
    return impl


def resolve_conv_impl(conv_impl: str) -> str:
    """The concrete convolution formulation of ``conv_impl``.

    Args:
      conv_impl: one of ``CONV_IMPLS``.

    Returns:
      ``"xla"`` or ``"taps"``: ``"auto"`` becomes ``"taps"`` on the CPU backend
      and ``"xla"`` elsewhere (decided from ``jax.default_backend()`` and logged
      once per backend); the others are returned unchanged.
    """
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv_impl {conv_impl!r}; choose one of {CONV_IMPLS}")
    if conv_impl == "auto":
        return _auto_conv_impl(jax.default_backend())
    return conv_impl


@dataclasses.dataclass(frozen=True)
class ModelOps:
    """Layer factory carrying the options every module shares.

    Attributes:
      init: initialisation scheme, one of ``INIT_SCHEMES``.
      dtype: compute dtype of convolutions and activations (parameters stay
        float32).
      bn_axis_name: when set, BatchNorm averages its batch statistics over this
        pmap/shard_map axis (synchronised BN). ``None`` keeps them per device,
        as the original does.
      conv_impl: convolution formulation, one of ``CONV_IMPLS``: ``"xla"``
        (``lax.conv_general_dilated``), ``"taps"`` (``tap_conv``) or ``"auto"``
        (``resolve_conv_impl``: taps on CPU, xla on GPU/TPU). Same parameters
        and function; only speed and rounding differ.
      remat: rematerialisation, one of ``REMAT_MODES``: ``"none"`` or
        ``"blocks"`` (each block recomputed in the backward pass; see
        ``remat_block``).
    """

    init: str = "original"
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    conv_impl: str = "auto"
    remat: str = "none"

    def __post_init__(self):
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"unknown init scheme {self.init!r}; choose one of {INIT_SCHEMES}")
        resolve_conv_impl(self.conv_impl)
        if self.remat not in REMAT_MODES:
            raise ValueError(f"unknown remat {self.remat!r}; choose one of {REMAT_MODES}")

    def remat_block(self, target: Any, static_argnums: tuple[int, ...]) -> Any:
        """``target`` recomputed in the backward pass when ``remat == "blocks"``.

        ``flax.linen.remat`` lifts the module's scope, so the variables the
        block creates keep their names and places in the tree.

        Args:
          target: a Module class, or an unbound method of a Module class
            called as ``target(module, *args)`` (its submodules are created in
            ``module``'s scope, as when called directly).
          static_argnums: positions of the non-array arguments (``train``,
            sizes, names), counting the module (``self``) as 0.

        Returns:
          ``target`` itself for ``remat == "none"``, else its remat version.
        """
        if self.remat == "none":
            return target
        return nn.remat(target, static_argnums=static_argnums)

    def kernel_init(self) -> nn.initializers.Initializer:
        """Returns the conv kernel initialiser of the chosen scheme."""
        if self.init == "original":
            # variance = scale * 2 / (fan_in + fan_out), so scale = gain**2.
            return nn.initializers.variance_scaling(_XAVIER_GAIN**2, "fan_avg", "normal")
        return nn.initializers.variance_scaling(2.0, "fan_out", "normal")

    def conv(
        self,
        features: int,
        kernel: int,
        *,
        name: str,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        use_bias: bool = True,
    ) -> nn.Conv:
        """A square conv with PyTorch-style symmetric zero padding.

        Args:
          features: output channels.
          kernel: kernel side k (k x k).
          name: module name (mirrors the original's PyTorch name).
          stride: stride in pixels.
          padding: zero padding added on each side, in pixels.
          dilation: kernel dilation.
          use_bias: whether the conv has a bias.

        Returns:
          A ``flax.linen.Conv`` mapping (N, H, W, C_in) to (N, H', W', features).
        """
        return nn.Conv(
            features,
            (kernel, kernel),
            strides=(stride, stride),
            padding=((padding, padding), (padding, padding)),
            kernel_dilation=(dilation, dilation),
            use_bias=use_bias,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=self.kernel_init(),
            bias_init=nn.initializers.zeros,
            conv_general_dilated=tap_conv if resolve_conv_impl(self.conv_impl) == "taps" else None,
            name=name,
        )

    def batch_norm(self, *, name: str) -> BatchNorm:
        """A BatchNorm2d with the original's eps (1e-5) and momentum (0.1)."""
        scale_init = _bn_scale_init if self.init == "original" else nn.initializers.ones
        return BatchNorm(axis_name=self.bn_axis_name, scale_init=scale_init, dtype=self.dtype, name=name)


def _pair(value: int | Sequence[int] | None) -> tuple[int, int]:
    if value is None:
        return (1, 1)
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def tap_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """``lax.conv_general_dilated`` for NHWC x HWIO as a sum of per-tap matmuls.

    For a kh x kw kernel with stride s, dilation d and padding p, the padded
    input is sliced once per tap (i, j), starting at (i * d, j * d) with step s,
    to an (N, H', W', C_in) array; each slice, flattened to (N * H' * W', C_in),
    is multiplied by ``rhs[i, j]`` (C_in, C_out) and the products are summed.
    Low-precision inputs accumulate in float32 and are rounded once at the
    end. Convolutions with kh * kw > 1 and fewer than ``TAP_MIN_CHANNELS``
    input channels are passed to ``lax.conv_general_dilated``.

    The signature is ``lax.conv_general_dilated``'s so that ``flax.linen.Conv``
    can take it as its ``conv_general_dilated``; only what ``ModelOps.conv``
    uses is supported (NHWC/HWIO/NHWC, explicit padding or ``"VALID"``, no
    input dilation, one feature group).

    Args:
      lhs: input, (N, H, W, C_in).
      rhs: kernel, (kh, kw, C_in, C_out).
      window_strides: (sh, sw).
      padding: ((top, bottom), (left, right)) zero padding or ``"VALID"``.
      lhs_dilation: must be None or all ones.
      rhs_dilation: kernel dilation (dh, dw) or None.
      dimension_numbers: must describe NHWC, HWIO, NHWC (or be None).
      feature_group_count: must be 1.
      precision: matmul precision, as for ``lax.dot_general``.
      preferred_element_type: output dtype (default: the input dtype).

    Returns:
      (N, H', W', C_out) output, H' = (H + top + bottom - dh * (kh - 1) - 1) // sh + 1
      (likewise W').

    Raises:
      NotImplementedError: for an unsupported layout, input dilation, grouping
        or padding.
    """
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    if dimension_numbers is not None and (
        lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != nhwc
    ):
        raise NotImplementedError(f"tap_conv supports NHWC/HWIO/NHWC only, got {dimension_numbers}")
    if _pair(lhs_dilation) != (1, 1) or feature_group_count != 1:
        raise NotImplementedError("tap_conv supports neither input dilation nor feature groups")
    if isinstance(padding, str):
        if padding != "VALID":
            raise NotImplementedError(f"tap_conv takes explicit padding or 'VALID', got {padding!r}")
        padding = ((0, 0), (0, 0))
    kh, kw, cin, cout = rhs.shape
    if kh * kw > 1 and cin < TAP_MIN_CHANNELS:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            rhs_dilation=rhs_dilation,
            dimension_numbers=nhwc,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    (sh, sw), (dh, dw) = _pair(tuple(window_strides)), _pair(rhs_dilation)
    (top, bottom), (left, right) = padding
    x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, h, w, _ = x.shape
    out_h = (h - dh * (kh - 1) - 1) // sh + 1
    out_w = (w - dw * (kw - 1) - 1) // sw + 1
    out_dtype = preferred_element_type or lhs.dtype
    acc_dtype = jnp.promote_types(out_dtype, jnp.float32)
    y = None
    for i in range(kh):
        for j in range(kw):
            start = (0, i * dh, j * dw, 0)
            limit = (n, i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, cin)
            tap = lax.slice(x, start, limit, (1, sh, sw, 1)).reshape(n * out_h * out_w, cin)
            # A 2-D dot: XLA:CPU runs an einsum contracting N, H, W at once far slower.
            term = lax.dot(tap, rhs[i, j], precision=precision, preferred_element_type=acc_dtype)
            y = term if y is None else y + term
    return y.astype(out_dtype).reshape(n, out_h, out_w, cout)


class BatchNorm(nn.Module):
    """BatchNorm over the channel (last) axis with PyTorch ``BatchNorm2d`` semantics.

    Training normalises with the biased batch variance and updates the running
    variance with the unbiased one (n / (n - 1)), exactly as PyTorch does;
    ``momentum`` is PyTorch's (weight of the new statistic). Statistics are
    computed in float32 whatever the compute dtype.

    Attributes:
      momentum: PyTorch momentum (0.1).
      epsilon: added to the variance (1e-5).
      axis_name: pmap/shard_map axis to average statistics over (sync BN), or
        ``None`` for per-device statistics.
      scale_init: initialiser of the scale (gamma).
      dtype: output dtype.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    axis_name: str | None = None
    scale_init: nn.initializers.Initializer = nn.initializers.ones
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Normalises ``x`` (N, H, W, C) per channel.

        Args:
          x: activations, (N, H, W, C) (any leading axes work).
          train: use batch statistics and update the running ones.

        Returns:
          The normalised activations, same shape, in ``dtype``.
        """
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)

        x32 = x.astype(jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            count = x32.size // features
            mean = jnp.mean(x32, axes)
            if self.axis_name is not None:
                mean = lax.pmean(mean, self.axis_name)
                count = count * lax.psum(1, self.axis_name)
            var = jnp.mean(jnp.square(x32 - mean), axes)
            if self.axis_name is not None:
                var = lax.pmean(var, self.axis_name)
            if not self.is_initializing():
                unbiased = var * (count / max(count - 1, 1))
                ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
                ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x32 - mean) * (scale * lax.rsqrt(var + self.epsilon)) + bias
        return y.astype(self.dtype)


def conv_bn_relu(
    ops: ModelOps,
    x: jax.Array,
    train: bool,
    features: int,
    kernel: int,
    *,
    conv_name: str,
    bn_name: str,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
) -> jax.Array:
    """Conv -> BatchNorm -> ReLU, created in the calling module's scope.

    The original writes these as ``nn.Sequential(conv, bn, relu)`` entries of a
    larger container, so the conv and BN carry that container's indices as
    names (``decoder2_1`` and ``decoder2_2`` for PyTorch ``decoder2.1`` and
    ``decoder2.2``). Must be called inside a ``@nn.compact`` method.

    Args:
      ops: the shared layer factory.
      x: input, (N, H, W, C_in).
      train: BatchNorm mode.
      features: output channels.
      kernel: conv kernel side.
      conv_name: name of the conv module.
      bn_name: name of the BatchNorm module.
      stride: conv stride.
      padding: conv zero padding on each side, in pixels.
      dilation: conv dilation.

    Returns:
      (N, H', W', features) activations after ReLU.
    """
    x = ops.conv(features, kernel, stride=stride, padding=padding, dilation=dilation, name=conv_name)(x)
    x = ops.batch_norm(name=bn_name)(x, train)
    return nn.relu(x)


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """PyTorch ``MaxPool2d(window, stride, padding)`` (floor mode, -inf padding), NHWC."""
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=pad)


def avg_pool(x: jax.Array, window: int) -> jax.Array:
    """PyTorch ``AvgPool2d(window, window)`` (no padding, floor mode), NHWC."""
    return nn.avg_pool(x, (window, window), strides=(window, window), padding="VALID")
