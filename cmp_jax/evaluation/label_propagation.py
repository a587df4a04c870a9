"""Video label propagation by feature affinities: how video-trained encoders are scored.

The space-time correspondence literature (CorrFlow, Lai & Xie 2019; Jabri et
al. 2020, "Space-Time Correspondence as a Contrastive Random Walk") measures a
frozen encoder by propagating the object masks of a video's first frame
through the clip with feature affinities alone:

1. Every frame is encoded once; the features (T, h, w, C) are L2-normalised
   per position.
2. The first frame's labels (0 background, 1..L-1 objects) become soft label
   maps at feature resolution: the one-hot (H, W, L) area-averaged to (h, w).
3. For each target frame t >= 1 the references are frame 0 with those
   ground-truth maps and frames ``max(1, t - context) .. t - 1`` with the
   maps predicted for them (fewer at the start of the clip).
4. A target position's candidates are the reference positions within a
   square window of ``radius`` feature pixels around it (positions outside
   the frame excluded), in every reference frame; its affinity to each is the
   feature dot product. The ``topk`` largest over all candidates are kept,
   softmax(affinity / temperature) weighs them, and the weighted sum of their
   label distributions is the target's (h, w, L) soft label map, kept as a
   reference for later frames.
5. Each soft map is upsampled bilinearly to the frame and its argmax is the
   predicted label map; frame 0's is the ground truth.

Memory is bounded: target positions are processed in ``chunk`` x ``chunk``
tiles, each against the (chunk + 2 radius)^2 reference window around it, one
row of tiles and one reference frame at a time, keeping a running top-k; no
(h w) x (h w) affinity is formed. The per-frame step is jit-compiled once per
clip shape: the reference set is a fixed ``1 + context`` slots with a validity
mask, so its shape does not change with t, and invalid slots are skipped.

Geometry: the feature grid is taken to span the frame (half-pixel centres, as
``jax.image.resize``), as it does when the frame size is a multiple of the
encoder stride; ``encoder_features`` pads other sizes by less than one stride.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cmp_jax import normalization
from cmp_jax.models.cmp import CMP

_MASKED = -1e9
"""Affinity of an excluded candidate: its softmax weight underflows to 0."""


def encoder_features(
    model: CMP,
    variables: Mapping[str, Any],
    frames: np.ndarray,
    feature: str = "features",
    batch: int = 8,
) -> np.ndarray:
    """Runs a CMP model's image encoder over video frames.

    Frames are normalised with the ImageNet statistics
    (``normalization.normalize``) and padded at the bottom and right with black
    pixels to a multiple of ``model.stride``, as ``cmp_jax.inference.Predictor``
    pads; the features therefore cover the padded frame. Frames run in batches
    of ``batch`` (the last one padded, so one compilation serves the clip).

    Args:
      model: a ``CMP`` module.
      variables: its variables (``params``, ``batch_stats``).
      frames: (T, H, W, 3) RGB, 0-255, uint8 or float.
      feature: name of the encoder output, e.g. ``"features"`` (the image
        encoder's stride-s output, s = ``model.stride``), ``"layer4"`` (the
        ResNet trunk's output), ``"layer1"`` or ``"stem"``.
      batch: frames per encoder call.

    Returns:
      float32 NumPy (T, h, w, C), h = ceil(H / s), w = ceil(W / s) for the
      stride-s maps.

    Raises:
      ValueError: for frames that are not (T, H, W, 3), or an unknown ``feature``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    model = model.clone(bn_axis_name=None)
    t, height, width, _ = frames.shape
    s = model.stride
    padded = np.broadcast_to(
        normalization.normalize(np.zeros(3, np.uint8)),
        (batch, -(-height // s) * s, -(-width // s) * s, 3),
    ).copy()
    encode = jax.jit(lambda v, x: model.apply(v, x, method=CMP.encode))
    out = []
    for start in range(0, t, batch):
        part = frames[start : start + batch]
        padded[: len(part), :height, :width] = normalization.normalize(part)
        maps = encode(variables, jnp.asarray(padded))
        if feature not in maps:
            raise ValueError(f"unknown feature {feature!r}; the encoder gives {sorted(maps)}")
        out.append(np.asarray(maps[feature][: len(part)], np.float32))
    return np.concatenate(out)


def area_weights(src: int, dst: int) -> np.ndarray:
    """Area-averaging matrix that resizes a length-``src`` axis to ``dst``.

    Output cell i covers input coordinates [i src / dst, (i + 1) src / dst);
    its value is the overlap-weighted mean of the input cells (OpenCV's
    ``INTER_AREA`` when shrinking).

    Args:
      src: input length.
      dst: output length.

    Returns:
      float64 (dst, src), rows summing to 1.
    """
    edges = np.arange(dst + 1) * (src / dst)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(src)[None]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0, None)
    return overlap / overlap.sum(1, keepdims=True)


def soft_labels(labels: np.ndarray, num_labels: int, size: tuple[int, int]) -> np.ndarray:
    """One-hot label map area-averaged to ``size``: per-cell label fractions.

    Args:
      labels: (H, W) int, values in [0, num_labels).
      num_labels: L, background included.
      size: (h, w) output size.

    Returns:
      float32 (h, w, L), summing to 1 over L.

    Raises:
      ValueError: for labels outside [0, num_labels).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.min() < 0 or labels.max() >= num_labels:
        raise ValueError(f"labels must be (H, W) in [0, {num_labels}), got {labels.shape}")
    onehot = np.eye(num_labels)[labels]
    wy = area_weights(labels.shape[0], size[0])
    wx = area_weights(labels.shape[1], size[1])
    return np.einsum("yH,HWl,xW->yxl", wy, onehot, wx, optimize=True).astype(np.float32)


def _tile_candidates(
    target: jax.Array,
    ref: jax.Array,
    ref_labels: jax.Array,
    inside: jax.Array,
    *,
    radius: int,
    topk: int,
    chunk: int,
) -> tuple[jax.Array, jax.Array]:
    """Top-k windowed matches of every target position in one reference frame.

    Args:
      target: (nh, nw, chunk^2, C) normalised target features in tiles.
      ref: (Hp + 2 radius, Wp + 2 radius, C) normalised reference features,
        padded by ``radius`` plus the tiling remainder (Hp = nh chunk).
      ref_labels: (Hp + 2 radius, Wp + 2 radius, L) its soft labels, padded alike.
      inside: (Hp + 2 radius, Wp + 2 radius) bool, True inside the frame.
      radius: window radius in feature pixels.
      topk: matches kept.
      chunk: tile side.

    Returns:
      (affinities (nh, nw, chunk^2, topk), labels (nh, nw, chunk^2, topk, L));
      excluded candidates have affinity ``_MASKED``.
    """
    nw = target.shape[1]
    side = chunk + 2 * radius
    offsets = np.arange(side)
    cols = np.arange(nw)[:, None] * chunk + offsets  # (nw, side)
    # window[p, q]: reference cell q of a tile's window lies within radius of target cell p.
    p, q = np.arange(chunk), offsets
    near = (q[None] >= p[:, None]) & (q[None] <= p[:, None] + 2 * radius)  # (chunk, side)
    window = (near[:, None, :, None] & near[None, :, None, :]).reshape(chunk * chunk, side * side)

    def tile_row(args):
        i, target_row = args

        def windows(x):
            """(nw, side * side, ...) reference windows of the tiles in row i."""
            band = jax.lax.dynamic_slice_in_dim(x, i * chunk, side, axis=0)
            return jnp.moveaxis(band[:, cols], 1, 0).reshape(nw, side * side, *x.shape[2:])

        feats, labels, valid = windows(ref), windows(ref_labels), windows(inside)
        aff = jnp.einsum("npc,nqc->npq", target_row, feats)
        aff = jnp.where(window[None] & valid[:, None, :], aff, _MASKED)
        best, index = jax.lax.top_k(aff, topk)
        return best, jnp.take_along_axis(labels[:, None], index[..., None], axis=2)

    return jax.lax.map(tile_row, (jnp.arange(target.shape[0]), target))


@functools.partial(
    jax.jit,
    static_argnames=("height", "width", "context", "topk", "radius", "temperature", "chunk"),
    donate_argnums=(1,),
)
def _propagate_step(
    features: jax.Array,
    soft: jax.Array,
    t: jax.Array,
    *,
    height: int,
    width: int,
    context: int,
    topk: int,
    radius: int,
    temperature: float,
    chunk: int,
) -> jax.Array:
    """Predicts frame t's soft labels from its references and stores them in ``soft``.

    Args:
      features: (T, Hp + 2 radius, Wp + 2 radius, C) normalised features,
        padded by ``radius`` at the top and left and by ``radius`` plus the
        tiling remainder at the bottom and right (Hp, Wp multiples of ``chunk``).
      soft: (T, Hp + 2 radius, Wp + 2 radius, L) soft label maps, padded alike;
        frames 0..t-1 filled.
      t: target frame index, int32 scalar >= 1.
      height: h, feature rows of the frame.
      width: w, feature columns of the frame.
      context: previous predicted frames used as references.
      topk: matches kept per target position.
      radius: window radius in feature pixels.
      temperature: softmax temperature.
      chunk: tile side.

    Returns:
      ``soft`` with frame t's (h, w, L) map written at [t, radius:, radius:].
    """
    num_labels = soft.shape[-1]
    hp, wp = features.shape[1] - 2 * radius, features.shape[2] - 2 * radius
    nh, nw = hp // chunk, wp // chunk
    target = jax.lax.dynamic_index_in_dim(features, t, keepdims=False)[
        radius : radius + hp, radius : radius + wp
    ]
    target = target.reshape(nh, chunk, nw, chunk, -1).swapaxes(1, 2).reshape(nh, nw, chunk * chunk, -1)
    inside = np.zeros(features.shape[1:3], bool)
    inside[radius : radius + height, radius : radius + width] = True
    # Slot 0 is frame 0 (ground truth); slots 1.. are frames t - context .. t - 1 (from 1 on).
    frames = jnp.concatenate([jnp.zeros(1, jnp.int32), t - context + jnp.arange(context, dtype=jnp.int32)])
    valid = jnp.concatenate([jnp.ones(1, bool), frames[1:] >= 1])

    def merge(carry, slot):
        frame, ok = slot

        def with_frame(carry):
            best, labels = carry
            new_best, new_labels = _tile_candidates(
                target,
                jax.lax.dynamic_index_in_dim(features, frame, keepdims=False),
                jax.lax.dynamic_index_in_dim(soft, frame, keepdims=False),
                inside,
                radius=radius,
                topk=topk,
                chunk=chunk,
            )
            both = jnp.concatenate([best, new_best], axis=-1)
            both_labels = jnp.concatenate([labels, new_labels], axis=-2)
            best, index = jax.lax.top_k(both, topk)
            return best, jnp.take_along_axis(both_labels, index[..., None], axis=-2)

        return jax.lax.cond(ok, with_frame, lambda c: c, carry), None

    init = (
        jnp.full((nh, nw, chunk * chunk, topk), _MASKED, features.dtype),
        jnp.zeros((nh, nw, chunk * chunk, topk, num_labels), soft.dtype),
    )
    (best, labels), _ = jax.lax.scan(merge, init, (jnp.maximum(frames, 0), valid))
    weights = jax.nn.softmax(best / temperature, axis=-1)
    pred = jnp.einsum("abpk,abpkl->abpl", weights, labels)
    pred = pred.reshape(nh, nw, chunk, chunk, num_labels).swapaxes(1, 2).reshape(hp, wp, num_labels)
    return jax.lax.dynamic_update_slice(
        soft, pred[None, :height, :width], (t, jnp.int32(radius), jnp.int32(radius), jnp.int32(0))
    )


def propagate_soft_labels(
    features: np.ndarray,
    first_labels: np.ndarray,
    num_labels: int,
    *,
    context: int = 20,
    topk: int = 10,
    radius: int = 12,
    temperature: float = 0.05,
    chunk: int = 8,
) -> np.ndarray:
    """Soft label maps of every frame at feature resolution (module docstring, steps 1-4).

    Args:
      features: (T, h, w, C) float encoder features; L2-normalised here.
      first_labels: (H, W) int ground truth of frame 0: 0 background, 1..L-1 objects.
      num_labels: L, background included.
      context: previous predicted frames among a target's references.
      topk: matches kept per target position, over all references.
      radius: half side of the square search window, in feature pixels.
      temperature: softmax temperature of the affinities.
      chunk: side of the target tiles processed together; the working memory
        is about (w / chunk) (chunk + 2 radius)^2 (C + chunk^2) floats.

    Returns:
      float32 (T, h, w, L); frame 0 is the area-averaged ground truth, every
      map sums to 1 over L.

    Raises:
      ValueError: for bad shapes, labels or parameters.
    """
    features = np.asarray(features, np.float32)
    if features.ndim != 4:
        raise ValueError(f"features must be (T, h, w, C), got shape {features.shape}")
    if context < 0 or radius < 0 or chunk < 1 or not 1 <= topk <= (chunk + 2 * radius) ** 2:
        raise ValueError(
            f"need context >= 0, radius >= 0, chunk >= 1, 1 <= topk <= (chunk + 2 radius)^2; got "
            f"context={context}, radius={radius}, chunk={chunk}, topk={topk}"
        )
    t, height, width, _ = features.shape
    first = soft_labels(first_labels, num_labels, (height, width))
    hp, wp = -(-height // chunk) * chunk, -(-width // chunk) * chunk
    pad = ((0, 0), (radius, radius + hp - height), (radius, radius + wp - width), (0, 0))
    feats = jnp.asarray(features)
    feats = feats / jnp.maximum(jnp.linalg.norm(feats, axis=-1, keepdims=True), 1e-12)
    feats = jnp.pad(feats, pad)
    soft = np.zeros((t, *feats.shape[1:3], num_labels), np.float32)
    soft[0, radius : radius + height, radius : radius + width] = first
    soft = jnp.asarray(soft)
    for i in range(1, t):
        soft = _propagate_step(
            feats,
            soft,
            jnp.int32(i),
            height=height,
            width=width,
            context=context,
            topk=topk,
            radius=radius,
            temperature=float(temperature),
            chunk=chunk,
        )
    return np.asarray(soft[:, radius : radius + height, radius : radius + width])


@functools.partial(jax.jit, static_argnames=("frame_size",))
def _upsampled_argmax(soft: jax.Array, frame_size: tuple[int, int]) -> jax.Array:
    """(h, w, L) soft labels -> (H, W) int32 argmax of their bilinear upsampling."""
    up = jax.image.resize(soft, (*frame_size, soft.shape[-1]), "bilinear")
    return jnp.argmax(up, axis=-1).astype(jnp.int32)


def propagate_labels(
    features: np.ndarray,
    first_labels: np.ndarray,
    num_labels: int,
    *,
    frame_size: tuple[int, int],
    context: int = 20,
    topk: int = 10,
    radius: int = 12,
    temperature: float = 0.05,
    chunk: int = 8,
) -> np.ndarray:
    """Propagates the first frame's labels through a clip (the module docstring's protocol).

    Args:
      features: (T, h, w, C) float encoder features; L2-normalised here.
      first_labels: (H, W) int ground truth of frame 0: 0 background, 1..L-1 objects.
      num_labels: L, background included.
      frame_size: (H, W) of the output label maps.
      context: previous predicted frames among a target's references.
      topk: matches kept per target position, over all references.
      radius: half side of the square search window, in feature pixels.
      temperature: softmax temperature of the affinities.
      chunk: side of the target tiles processed together (memory, not results).

    Returns:
      int32 NumPy (T, H, W) label maps; frame 0 is ``first_labels``.

    Raises:
      ValueError: for bad shapes, labels or parameters.
    """
    first_labels = np.asarray(first_labels)
    frame_size = (int(frame_size[0]), int(frame_size[1]))
    if first_labels.shape != frame_size:
        raise ValueError(f"first_labels {first_labels.shape} must have frame_size {frame_size}")
    soft = propagate_soft_labels(
        features,
        first_labels,
        num_labels,
        context=context,
        topk=topk,
        radius=radius,
        temperature=temperature,
        chunk=chunk,
    )
    out = np.empty((len(soft), *frame_size), np.int32)
    out[0] = first_labels
    for i in range(1, len(soft)):
        out[i] = np.asarray(_upsampled_argmax(jnp.asarray(soft[i]), frame_size))
    return out
