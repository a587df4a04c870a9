"""DAVIS-2017 video object segmentation sequences through TFDS, for label propagation.

TFDS's ``davis`` builder (version 2.1.0) has the configs ``480p`` and
``full_resolution`` and the splits ``train`` (60 sequences) and ``validation``
(30, the sequences of the semi-supervised DAVIS-2017 val protocol). Each example
is a whole sequence: ``video/frames`` (the JPEG frames), ``video/segmentations``
(the annotations: one channel of palette indices, 0 for the background and
1..K for the objects, numbered as in the official PNGs) and ``metadata``
(``video_name``, ``num_frames``). Frame sizes differ between sequences.

The dataset downloads on first preparation (DAVIS-2017-trainval-480p.zip from
the DAVIS site, about 800 MB), which ``load_sequences`` does only when asked::

    tfds build davis/480p --data_dir ~/tensorflow_datasets

Frames are decoded with OpenCV (the accurate integer DCT, as PIL, which the
official evaluation uses, decodes them), annotations losslessly from PNG.
"""

from collections.abc import Iterable, Iterator

import cv2
import numpy as np

# TFDS builder and its configs (resolutions) and splits.
DATASET = "davis"
RESOLUTIONS = ("480p", "full_resolution")
SPLITS = ("train", "validation")
# Annotation value of "void" pixels; the official evaluation counts them as background.
VOID = 255


def _decode_frame(encoded: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame from its encoded (JPEG or PNG) bytes."""
    bgr = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_mask(encoded: bytes) -> np.ndarray:
    """(H, W) uint8 object labels from an encoded one-channel PNG, void (255) as background."""
    mask = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    mask = mask.reshape(mask.shape[:2])
    mask[mask == VOID] = 0
    return mask


def load_sequences(
    split: str = "validation",
    resolution: str = "480p",
    data_dir: str | None = None,
    names: Iterable[str] | None = None,
    download: bool = False,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, int]]:
    """Iterates over the DAVIS-2017 sequences of a split, frames and object masks decoded.

    Args:
      split: ``"validation"`` (the usual evaluation set) or ``"train"``.
      resolution: TFDS config, ``"480p"`` or ``"full_resolution"``.
      data_dir: TFDS data folder (None: TFDS's default, ``~/tensorflow_datasets``
        unless ``TFDS_DATA_DIR`` says otherwise).
      names: sequence names to keep (e.g. ``["bike-packing"]``), in the
        dataset's order; None keeps all.
      download: download and prepare the dataset if it is not prepared yet
        (about 800 MB for 480p); False raises instead.

    Returns:
      Iterator of (name, frames, masks, num_objects): frames (T, H, W, 3) uint8
      RGB, masks (T, H, W) uint8 labels (0 background, 1..K objects; void
      pixels as background), num_objects K the largest label of the first
      frame's mask, as the official evaluation counts objects.

    Raises:
      ValueError: unknown split or resolution.
      FileNotFoundError: the dataset is not prepared in ``data_dir`` and
        ``download`` is False (raised by this call, not by the first ``next``).
    """
    import tensorflow_datasets as tfds

    if resolution not in RESOLUTIONS:
        raise ValueError(f"DAVIS resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    if split not in SPLITS:
        raise ValueError(f"DAVIS split must be one of {SPLITS}, got {split!r}")
    name = f"{DATASET}/{resolution}"
    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    elif not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS dataset {name} is not prepared in {builder.data_dir}: prepare it once with "
            f"`tfds build {name} --data_dir DIR` (downloads DAVIS-2017 trainval, about 800 MB for 480p) "
            "or call load_sequences(..., download=True), and pass that DIR as data_dir"
        )
    skip = tfds.decode.SkipDecoding()
    dataset = builder.as_dataset(split=split, decoders={"video": {"frames": skip, "segmentations": skip}})
    wanted = None if names is None else set(names)

    def sequences() -> Iterator[tuple[str, np.ndarray, np.ndarray, int]]:
        for example in tfds.as_numpy(dataset):
            sequence = example["metadata"]["video_name"].decode()
            if wanted is not None and sequence not in wanted:
                continue
            frames = np.stack([_decode_frame(encoded) for encoded in example["video"]["frames"]])
            masks = np.stack([_decode_mask(encoded) for encoded in example["video"]["segmentations"]])
            yield sequence, frames, masks, int(masks[0].max())

    return sequences()
