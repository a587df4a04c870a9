"""Flow utilities: align-corners resize, quantisation into bins, soft-argmax, colours.

Conventions: flow arrays are (..., H, W, 2) with channels (dx, dy) in pixels
(x to the right, y down); logits are (N, h, w, 2 * C) with channels 0..C-1 the
x classifier and C..2C-1 the y classifier, as in the original.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# Margin (pixels) by which targets are clamped inside [-fmax, fmax] before binning.
_CLAMP_MARGIN = 1e-3


def _align_corners_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of 1-D linear interpolation with align_corners=True.

    Output pixel i samples the input at i * (in - 1) / (out - 1), so the first and
    last pixels of input and output coincide.

    Args:
      in_size: input length.
      out_size: output length.

    Returns:
      (lo, hi, w): int32 arrays of the two input taps and the float32 weight of
      ``hi`` for every output position, each of shape (out_size,).
    """
    if out_size > 1:
        src = np.arange(out_size, dtype=np.float64) * ((in_size - 1) / (out_size - 1))
    else:
        src = np.zeros((out_size,), np.float64)
    lo = np.clip(np.floor(src).astype(np.int32), 0, in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    w = (src - lo).astype(np.float32)
    return lo, hi, w


def resize_bilinear_align_corners(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of NHWC maps with PyTorch's ``align_corners=True`` semantics.

    ``jax.image.resize`` uses half-pixel centres, which is a different function;
    the original uses align-corners everywhere (decoder branches, skip decoder,
    loss, read-out). Interpolation is separable and gathers the two taps, so it
    is exact in the input dtype (no matmul precision loss on accelerators).

    Args:
      x: (N, H, W, C) array.
      size: output (H_out, W_out) in pixels.

    Returns:
      (N, H_out, W_out, C) array, dtype of ``x``.
    """
    out_h, out_w = size
    in_h, in_w = x.shape[-3], x.shape[-2]
    if (in_h, in_w) == (out_h, out_w):
        return x
    lo, hi, w = _align_corners_taps(in_h, out_h)
    w = jnp.asarray(w, x.dtype)[:, None, None]
    x = x[..., lo, :, :] * (1 - w) + x[..., hi, :, :] * w
    lo, hi, w = _align_corners_taps(in_w, out_w)
    w = jnp.asarray(w, x.dtype)[:, None]
    return x[..., lo, :] * (1 - w) + x[..., hi, :] * w


@dataclasses.dataclass(frozen=True)
class FlowBins:
    """Uniform quantisation of each flow component into ``num_bins`` classes.

    Bin k covers [k * width - fmax, (k + 1) * width - fmax) with width =
    2 * fmax / num_bins; its centre is k * width - fmax + width / 2, so with an
    odd count the middle bin is centred on zero motion.

    Attributes:
      num_bins: classes per axis, C (99 in the original); must be odd.
      fmax: flow range in pixels (50 in the original); targets are clamped to
        [-fmax + 1e-3, fmax - 1e-3] before binning.
    """

    num_bins: int = 99
    fmax: float = 50.0

    def __post_init__(self):
        if self.num_bins < 1 or self.num_bins % 2 == 0:
            raise ValueError(f"num_bins must be a positive odd number, got {self.num_bins}")
        if self.fmax <= 2 * _CLAMP_MARGIN:
            raise ValueError(f"fmax must be a positive flow range in pixels, got {self.fmax}")

    @property
    def width(self) -> float:
        """Bin width in pixels (100 / 99 in the original)."""
        return 2.0 * self.fmax / self.num_bins

    def centres(self) -> np.ndarray:
        """Bin centres in pixels, float32 array of shape (C,)."""
        k = np.arange(self.num_bins, dtype=np.float64)
        return (k * self.width - self.fmax + self.width / 2).astype(np.float32)

    def quantize(self, flow: jax.Array) -> jax.Array:
        """Maps flow values (pixels) to bin indices.

        Args:
          flow: any-shape float array of flow components in pixels.

        Returns:
          int32 array of the same shape with values in [0, C - 1]; values beyond
          the range fall into the end bins, never into index C.
        """
        flow = jnp.asarray(flow, jnp.float32)
        t = jnp.clip(flow, -self.fmax + _CLAMP_MARGIN, self.fmax - _CLAMP_MARGIN)
        idx = jnp.floor((t + self.fmax) / self.width).astype(jnp.int32)
        return jnp.clip(idx, 0, self.num_bins - 1)

    def expected_flow(self, logits: jax.Array) -> jax.Array:
        """Soft-argmax read-out: softmax expectation over bin centres.

        Args:
          logits: (..., 2 * C) logits, x classifier first.

        Returns:
          float32 flow (..., 2) in pixels, (dx, dy).
        """
        c = self.num_bins
        if logits.shape[-1] != 2 * c:
            raise ValueError(f"expected {2 * c} logit channels for {c} bins, got {logits.shape[-1]}")
        logits = logits.astype(jnp.float32)
        centres = jnp.asarray(self.centres())
        px = jax.nn.softmax(logits[..., :c], axis=-1)
        py = jax.nn.softmax(logits[..., c:], axis=-1)
        # An elementwise sum, not a matmul: accelerators run default-precision
        # float32 matmuls in TF32/bfloat16 passes, which would cost 0.03-0.2 px.
        return jnp.stack([jnp.sum(px * centres, -1), jnp.sum(py * centres, -1)], axis=-1)


def logits_to_flow(logits: jax.Array, bins: FlowBins, size: tuple[int, int]) -> jax.Array:
    """The original's inference read-out of dense flow from logits.

    Soft-argmax at logit resolution, then align-corners bilinear upsampling of
    the 2-channel flow to the image size (the order differs from training,
    where logits are upsampled before the cross-entropy).

    Args:
      logits: (N, h, w, 2 * C) decoder output.
      bins: the quantisation the model was trained with.
      size: image (H, W) in pixels.

    Returns:
      float32 flow (N, H, W, 2) in pixels.
    """
    return resize_bilinear_align_corners(bins.expected_flow(logits), size)


# Middlebury colour wheel segments: (length, channel held at 255, channel ramped,
# ramp direction). Red->yellow, yellow->green, green->cyan, cyan->blue,
# blue->magenta, magenta->red.
_WHEEL_SEGMENTS = (
    (15, 0, 1, +1),
    (6, 1, 0, -1),
    (4, 1, 2, +1),
    (11, 2, 1, -1),
    (13, 2, 0, +1),
    (6, 0, 2, -1),
)


def _colour_wheel() -> np.ndarray:
    """The Middlebury colour wheel: 55 RGB colours (0-255) around the hue circle.

    Returns:
      float64 array (55, 3).
    """
    wheel = np.zeros((sum(seg[0] for seg in _WHEEL_SEGMENTS), 3))
    start = 0
    for length, full, ramp, direction in _WHEEL_SEGMENTS:
        t = np.arange(length) / length
        wheel[start : start + length, full] = 255
        wheel[start : start + length, ramp] = 255 * (t if direction > 0 else 1 - t)
        start += length
    return wheel


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Renders flow with the Middlebury colour coding (hue = direction, saturation = speed).

    Zero motion is white; motion to the right is red, down is yellow-green,
    left is cyan-blue, up is violet. Magnitudes are divided by ``max_flow`` (the
    largest magnitude in ``flow`` when ``None``) and saturate beyond it.

    Args:
      flow: (H, W, 2) or (N, H, W, 2) flow in pixels, (dx, dy). Non-finite
        values are drawn black.
      max_flow: magnitude in pixels that maps to full saturation.

    Returns:
      uint8 RGB image(s), (..., H, W, 3).
    """
    flow = np.asarray(flow, np.float64)
    if flow.shape[-1] != 2:
        raise ValueError(f"flow must end in 2 channels (dx, dy), got shape {flow.shape}")
    finite = np.all(np.isfinite(flow), axis=-1)
    u = np.where(finite, flow[..., 0], 0.0)
    v = np.where(finite, flow[..., 1], 0.0)
    mag = np.sqrt(u**2 + v**2)
    if max_flow is None:
        max_flow = float(mag.max()) if mag.size else 0.0
    max_flow = max(max_flow, np.finfo(np.float32).eps)
    u, v, mag = u / max_flow, v / max_flow, mag / max_flow

    wheel = _colour_wheel()
    ncols = wheel.shape[0]
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    fk = (angle + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = (k0 + 1) % ncols
    f = (fk - k0)[..., None]
    col = ((1 - f) * wheel[k0] + f * wheel[k1]) / 255.0
    sat = np.minimum(mag, 1.0)[..., None]
    col = np.where(mag[..., None] <= 1, 1 - sat * (1 - col), col * 0.75)
    col = np.where(finite[..., None], col, 0.0)
    return np.round(col * 255).astype(np.uint8)
