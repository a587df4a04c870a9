"""Inference: turn a few guidance arrows into dense flow, encoding each image once.

``Predictor`` wraps a trained CMP (a cmp-jax workdir, one imported from an
original PyTorch checkpoint with ``scripts/import_torch.py``, or such a
checkpoint read directly with ``Predictor.from_torch``)::

    predictor = Predictor.from_workdir("runs/semiauto")
    features = predictor.encode(image)                    # (1, H, W, 3) uint8 RGB
    flows = predictor.propagate(features, arrows=[        # 24 guidance sets, one image
        [(120, 80, 15, 0), (30, 200, 0, 0)],              # (x, y, dx, dy) in pixels
        ...
    ])                                                    # (24, H, W, 2) flow in pixels

Conventions: images are RGB on the 0-255 scale (uint8 or float), NHWC; the
Predictor normalises them with the ImageNet mean and std, as in training
(``input_norm="imagenet"``, the default). ``input_norm="mofa"`` feeds
``image / 255 * 2 - 1`` instead, as MOFA-Video does with the released model:
choose it to get the flows MOFA-Video gets (``cmp_jax.normalization``).
Flow and arrows are in pixels of the given image: (x, y) is the column and row
of the guided pixel (rounded to the nearest pixel), (dx, dy) its displacement
(x to the right, y down); dx = dy = 0 marks a point that stays still.

Any image size works: the image is padded at the bottom and right to a
multiple of the encoder stride, and at least to the size the decoder's
coarsest pooling branch needs (with black pixels, as training padded small
frames); the flow is cropped back. Each distinct padded shape compiles
once (``jax.jit``).

The model classifies each flow component into bins over +-``fmax`` (50 px in
the original), so it cannot express longer motions. A guidance set whose
largest arrow component exceeds ``max_arrow`` (0.8 * fmax by default) is run
at a reduced scale s = max_arrow / largest component (rounded down to a
multiple of 1/64): the image and the arrow positions and vectors are scaled by
s, the predicted flow is resized back to the image size and divided by s. The
image is encoded at that scale once and cached in the ``Features``. Scales
below ``MIN_SCALE`` (1/8) are refused: an arrow with a component longer than
max_arrow / MIN_SCALE (8 * max_arrow, 320 px with the default 40) raises a
``ValueError`` naming it, as at such scales the image shrinks to a few pixels
and the flow resized back from them is meaningless.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from cmp_jax import normalization
from cmp_jax.flow import FlowBins, logits_to_flow
from cmp_jax.models import CMP, build_model

Arrows = Sequence[Sequence[float]] | np.ndarray

# Smallest scale a guidance set runs at (module docstring): longer arrows are refused.
MIN_SCALE = 1 / 8


def normalize_images(images: np.ndarray, input_norm: str = "imagenet") -> np.ndarray:
    """Checks and normalises the images a ``Predictor`` is given (``normalization.normalize``).

    Args:
      images: (N, H, W, 3) or (H, W, 3) RGB, 0-255 (uint8 or float).
      input_norm: ``"imagenet"`` (as the input pipeline, the default) or ``"mofa"``.

    Returns:
      float32 (N, H, W, 3) array.

    Raises:
      ValueError: for a shape that is not RGB images, or an unknown ``input_norm``.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) or (H, W, 3) RGB, got shape {images.shape}")
    return normalization.normalize(images, input_norm)


def arrows_to_guidance(arrows: Arrows, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rasterises arrows into the model's sparse flow and mask.

    Args:
      arrows: K arrows (x, y, dx, dy) in pixels; (x, y) is rounded to the
        nearest pixel. An empty sequence gives no guidance.
      height: image height H in pixels.
      width: image width W in pixels.

    Returns:
      (sparse, mask), float32 (H, W, 2) each: (dx, dy) at the guided pixels and
      0 elsewhere; 1.0 at the guided pixels in both channels. A later arrow on
      the same pixel overwrites an earlier one.

    Raises:
      ValueError: naming the first arrow that is malformed, not finite or
        outside the image.
    """
    arr = np.asarray(arrows, np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"arrows must be a sequence of (x, y, dx, dy), got an array of shape {arr.shape}")
    sparse = np.zeros((height, width, 2), np.float32)
    mask = np.zeros((height, width, 2), np.float32)
    for i, (x, y, dx, dy) in enumerate(arr):
        if not np.all(np.isfinite((x, y, dx, dy))):
            raise ValueError(f"arrow {i} {tuple(arr[i])} is not finite")
        col, row = int(round(x)), int(round(y))
        if not (0 <= col < width and 0 <= row < height):
            raise ValueError(
                f"arrow {i} starts at (x={x:g}, y={y:g}), outside the {width}x{height} image "
                f"(x in [0, {width - 1}], y in [0, {height - 1}])"
            )
        sparse[row, col] = (dx, dy)
        mask[row, col] = 1.0
    return sparse, mask


def guidance_to_arrows(sparse: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The arrows (x, y, dx, dy) of one sparse/mask pair, float64 (K, 4), row-major order."""
    rows, cols = np.nonzero(np.asarray(mask)[..., 0] > 0)
    vec = np.asarray(sparse)[rows, cols]
    return np.stack([cols, rows, vec[:, 0], vec[:, 1]], axis=-1).astype(np.float64)


@dataclasses.dataclass
class Features:
    """Encoded images, reusable for any number of guidance sets.

    Attributes:
      image: (N, H, W, 3) float32 images at their own size, normalised as the
        ``Predictor``'s ``input_norm`` says.
      encoded: scale -> image-encoder outputs of the padded image at that
        scale (``CMP.encode``: ``features`` (N, h/s, w/s, 256), plus the skips
        of a ResNet); scale 1.0 is filled by ``Predictor.encode``, others on
        demand.
    """

    image: np.ndarray
    encoded: dict[float, Mapping[str, jax.Array]]

    @property
    def batch(self) -> int:
        """Number of images N."""
        return self.image.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the images in pixels."""
        return self.image.shape[1], self.image.shape[2]


class Predictor:
    """Encode-once / propagate-many flow prediction with a trained CMP.

    Args:
      model: the CMP module (built in inference mode; any ``bn_axis_name`` is dropped).
      variables: ``{"params": ..., "batch_stats": ...}``.
      bins: the flow quantisation the model was trained with.
      max_arrow: largest arrow component in pixels run at full scale; longer
        guidance runs at a reduced scale (module docstring). Default 0.8 * fmax.
      input_norm: how images are normalised for the network: ``"imagenet"``
        (default), as the model was trained, or ``"mofa"``, ``image / 255 * 2 - 1``
        as MOFA-Video feeds the released model, for flows equal to MOFA-Video's
        (``cmp_jax.normalization``). Padding is black in either.
    """

    def __init__(
        self,
        model: CMP,
        variables: Mapping[str, Any],
        bins: FlowBins,
        max_arrow: float | None = None,
        input_norm: str = "imagenet",
    ):
        self.model = model.clone(bn_axis_name=None)
        self.variables = jax.tree.map(jnp.asarray, dict(variables))
        self.bins = bins
        self.max_arrow = 0.8 * bins.fmax if max_arrow is None else float(max_arrow)
        if not 0 < self.max_arrow <= bins.fmax:
            raise ValueError(f"max_arrow must be in (0, fmax={bins.fmax}], got {self.max_arrow}")
        # The normalised black pixel pads images (and checks input_norm).
        self._black = normalization.normalize(np.zeros(3, np.uint8), input_norm)
        self.input_norm = input_norm
        self._encode = jax.jit(lambda v, image: self.model.apply(v, image, method=CMP.encode))
        self._propagate = jax.jit(self._propagate_fn)

    @classmethod
    def from_workdir(
        cls,
        workdir: str | pathlib.Path,
        step: int | None = None,
        max_arrow: float | None = None,
        input_norm: str = "imagenet",
    ) -> Predictor:
        """Loads the newest (or ``step``'s) checkpoint of a cmp-jax workdir.

        Args:
          workdir: a training workdir, or one written by ``scripts/import_torch.py``.
          step: checkpoint step; ``None`` for the newest.
          max_arrow: see the class docstring.
          input_norm: see the class docstring.
        """
        from cmp_jax import state  # optax/orbax only when loading from disk

        config, variables, _ = state.load_variables(workdir, step)
        model = build_model(config.model, num_bins=config.flow.num_bins)
        bins = FlowBins(config.flow.num_bins, config.flow.fmax)
        return cls(model, variables, bins, max_arrow, input_norm)

    @classmethod
    def from_torch(
        cls,
        path: str | pathlib.Path,
        config: Any,
        max_arrow: float | None = None,
        input_norm: str = "imagenet",
    ) -> Predictor:
        """Loads an original-layout PyTorch checkpoint directly (no workdir).

        Args:
          path: e.g. the released ``ckpt_iter_42000.pth.tar`` (read with
            ``torch.load(weights_only=True)``; see ``cmp_jax.convert.torch_io``).
          config: the experiment config of its architecture, e.g.
            ``configs/semiauto_resnet.py``'s ``get_config()`` for the demo model.
          max_arrow: see the class docstring.
          input_norm: see the class docstring.
        """
        from cmp_jax.convert import torch_io  # imports PyTorch

        state_dict, _ = torch_io.unwrap_checkpoint(torch_io.load_torch_file(path), str(path))
        variables = torch_io.variables_from_state_dict(state_dict, config, str(path))
        model = build_model(config.model, num_bins=config.flow.num_bins)
        bins = FlowBins(config.flow.num_bins, config.flow.fmax)
        return cls(model, variables, bins, max_arrow, input_norm)

    @property
    def stride(self) -> int:
        """Encoder stride in pixels; inputs are padded to a multiple of it."""
        return self.model.stride

    def _propagate_fn(self, variables, encoded, sparse, mask):
        n = sparse.shape[0]
        encoded = jax.tree.map(lambda f: jnp.broadcast_to(f, (n, *f.shape[1:])), encoded)
        logits = self.model.apply(variables, encoded, sparse, mask, method=CMP.propagate)
        return logits_to_flow(logits, self.bins, sparse.shape[1:3])

    def _padded(self, height: int, width: int) -> tuple[int, int]:
        """Padded size: a multiple of the stride, at least what the decoder's coarsest branch pools."""
        s = self.stride
        coarsest = 8 if self.model.decoder == "skip" else max(self.model.decoder_combo)
        least = coarsest * s
        return max(-(-height // s) * s, least), max(-(-width // s) * s, least)

    def _encode_at(self, features: Features, scale: float) -> Mapping[str, jax.Array]:
        if scale not in features.encoded:
            h, w = _scaled_size(features.size, scale)
            image = features.image
            if (h, w) != features.size:
                image = np.stack([cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA) for x in image])
            ph, pw = self._padded(h, w)
            padded = np.broadcast_to(self._black, (image.shape[0], ph, pw, 3)).copy()
            padded[:, :h, :w] = image
            features.encoded[scale] = self._encode(self.variables, jnp.asarray(padded))
        return features.encoded[scale]

    def encode(self, images: np.ndarray) -> Features:
        """Normalises, pads and encodes images once.

        Args:
          images: (N, H, W, 3) or (H, W, 3) RGB on the 0-255 scale.

        Returns:
          ``Features`` for ``propagate``.
        """
        features = Features(normalize_images(images, self.input_norm), {})
        self._encode_at(features, 1.0)
        return features

    def propagate(
        self,
        features: Features,
        arrows: Sequence[Arrows] | None = None,
        *,
        sparse: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """Dense flow for G guidance sets.

        Give either ``arrows`` or ``sparse`` and ``mask``. With one encoded
        image the G sets all apply to it; with N images, G must equal N (set i
        guides image i).

        Args:
          features: from ``encode``.
          arrows: G sequences of arrows (x, y, dx, dy) in pixels.
          sparse: (G, H, W, 2) guidance flow in pixels, 0 off the guided pixels.
          mask: (G, H, W, 2) 1.0 at guided pixels (both channels), else 0.

        Returns:
          float32 (G, H, W, 2) flow in pixels, (dx, dy).

        Raises:
          ValueError: for bad arrows (naming the arrow and its set), among
            them arrows longer than ``longest_arrow``, shapes that do not
            match the image, or a G that does not fit N.
        """
        h, w = features.size
        if (arrows is None) == (sparse is None and mask is None):
            raise ValueError("give either arrows or sparse and mask")
        if arrows is not None:
            sets = []
            for g, a in enumerate(arrows):
                try:
                    sets.append(arrows_to_guidance(a, h, w))
                except ValueError as e:
                    raise ValueError(f"guidance set {g}: {e}") from None
                self._check_length(g, np.asarray(a, np.float64).reshape(-1, 4), numbered=True)
            if not sets:
                raise ValueError("arrows holds no guidance set")
            sparse = np.stack([s for s, _ in sets])
            mask = np.stack([m for _, m in sets])
        else:
            if sparse is None or mask is None:
                raise ValueError("give both sparse and mask")
            sparse = np.asarray(sparse, np.float32)
            mask = np.asarray(mask, np.float32)
            if sparse.shape != mask.shape or sparse.shape[1:] != (h, w, 2):
                raise ValueError(
                    f"sparse and mask must be (G, {h}, {w}, 2) for {h}x{w} images, "
                    f"got {sparse.shape} and {mask.shape}"
                )
            for g, (s, m) in enumerate(zip(sparse, mask, strict=True)):
                self._check_length(g, guidance_to_arrows(s, m), numbered=False)
        g = sparse.shape[0]
        if features.batch not in (1, g):
            raise ValueError(f"{g} guidance sets for {features.batch} images: give 1 image or {g}")
        scales = np.array([self._scale(s, m) for s, m in zip(sparse, mask, strict=True)])
        flow = np.zeros((g, h, w, 2), np.float32)
        for scale in np.unique(scales):
            idx = np.nonzero(scales == scale)[0]
            flow[idx] = self._run(features, float(scale), sparse[idx], mask[idx], idx)
        return flow

    @property
    def longest_arrow(self) -> float:
        """Largest arrow component in pixels that ``propagate`` accepts: ``max_arrow / MIN_SCALE``."""
        return self.max_arrow / MIN_SCALE

    def _check_length(self, g: int, arrows: np.ndarray, numbered: bool) -> None:
        """Raises naming the first arrow (x, y, dx, dy) of set ``g`` longer than ``longest_arrow``.

        ``numbered``: name it by its index in ``arrows`` (given by the caller), else by its pixel.
        """
        longest = np.abs(arrows[:, 2:]).max(axis=1, initial=0.0)
        too_long = np.nonzero(longest > self.longest_arrow)[0]
        if too_long.size == 0:
            return
        i = int(too_long[0])
        x, y, dx, dy = arrows[i]
        which = f"arrow {i}" if numbered else "the arrow"
        raise ValueError(
            f"guidance set {g}: {which} at (x={x:g}, y={y:g}) with vector (dx={dx:g}, dy={dy:g}) is too "
            f"long: a {longest[i]:g} px component would need the image run at scale "
            f"{self.max_arrow / longest[i]:.3g}, below the floor MIN_SCALE = 1/{1 / MIN_SCALE:g}; arrow "
            f"components can be at most max_arrow / MIN_SCALE = {self.longest_arrow:g} px "
            f"(max_arrow = {self.max_arrow:g} px)"
        )

    def _scale(self, sparse: np.ndarray, mask: np.ndarray) -> float:
        largest = float(np.max(np.abs(sparse) * (mask > 0), initial=0.0))
        if largest <= self.max_arrow:
            return 1.0
        # Rounded down to 1/64 so that nearby lengths share a compiled shape and an encoding;
        # propagate refused arrows longer than longest_arrow, so only float rounding meets the floor.
        return max(math.floor(self.max_arrow / largest * 64) / 64, MIN_SCALE)

    def _run(self, features: Features, scale: float, sparse, mask, idx) -> np.ndarray:
        h, w = features.size
        encoded = self._encode_at(features, scale)
        if features.batch > 1:
            encoded = jax.tree.map(lambda f: f[idx], encoded)
        sh, sw = _scaled_size((h, w), scale)
        if scale != 1.0:
            scaled = [
                arrows_to_guidance(_scale_arrows(guidance_to_arrows(s, m), scale, sh, sw), sh, sw)
                for s, m in zip(sparse, mask, strict=True)
            ]
            sparse = np.stack([s for s, _ in scaled])
            mask = np.stack([m for _, m in scaled])
        ph, pw = self._padded(sh, sw)
        pad = ((0, 0), (0, ph - sh), (0, pw - sw), (0, 0))
        flow = self._propagate(self.variables, encoded, np.pad(sparse, pad), np.pad(mask, pad))
        flow = np.asarray(flow)[:, :sh, :sw]
        if scale != 1.0:
            flow = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in flow]) / scale
        return flow

    def predict(self, images: np.ndarray, arrows: Sequence[Arrows]) -> np.ndarray:
        """``propagate(encode(images), arrows)``: flow (G, H, W, 2) in pixels."""
        return self.propagate(self.encode(images), arrows)


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    h, w = size
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def _scale_arrows(arrows: np.ndarray, scale: float, height: int, width: int) -> np.ndarray:
    """Arrows of the full-size image mapped onto the image resized by ``scale``.

    Pixel centres map as x' = (x + 0.5) * scale - 0.5 (clipped inside the
    resized image); vectors are multiplied by ``scale``.
    """
    out = arrows * scale
    out[:, 0] = np.clip(np.round((arrows[:, 0] + 0.5) * scale - 0.5), 0, width - 1)
    out[:, 1] = np.clip(np.round((arrows[:, 1] + 0.5) * scale - 0.5), 0, height - 1)
    return out
