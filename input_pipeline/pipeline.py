"""The tf.data input pipeline: examples -> transforms -> guidance -> device-shaped batches.

Per example, in this order (the original's ``ImageFlowDataset``):

1. load frame1 and the flow (list files, the synthetic generator or a TFDS
   dataset); frame 2 is neither decoded nor rendered (the CMP loss does not
   use it; list files only check that it exists);
2. resize so the shorter side is ``short_size`` (aspect kept, int truncation):
   image bicubic (OpenCV's, a = -0.75, no antialiasing; the original used
   PIL's), flow bilinear with both components multiplied by new_h / old_h;
3. zero-pad (centred) when smaller than the crop, then crop: random offset
   ``int(u * (L - crop))`` with u ~ U[0, 1) for training, centred for eval;
4. optionally (``flip``, off by default as in the original) flip horizontally
   with probability 0.5, negating dx;
5. normalise RGB on the 0-255 scale with ImageNet mean/std;
6. sample guidance on the cropped flow.

Steps 1-6 run in one ``tf.numpy_function`` per example (OpenCV releases the GIL,
so ``num_parallel_calls`` threads scale across cores); tf.data does the
indexing, parallelism, batching, device reshaping and prefetching.

Reproducibility: the pipeline is a function of (seed, sample number). Sample
``i`` of process ``p`` is example ``perm_{seed,p,e}[i mod N]`` of epoch
``e = i // N`` of that process's shard, transformed with randomness drawn from
``np.random.default_rng((seed, p, i))``. Starting at ``start_step`` skips
straight to sample ``start_step * local_batch``, so a resumed run sees exactly
the data an uninterrupted run would have seen.

Output batches are dicts of NumPy-convertible tensors shaped
(local_devices, per_device_batch, ...): ``image`` (H, W, 3) float32,
``sparse`` (H, W, 2), ``mask`` (H, W, 2), ``flow`` (H, W, 2) float32 in pixels,
``num_guides`` int32.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import os
import re
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import tensorflow as tf
from absl import logging

from cmp_jax import normalization
from input_pipeline import flow_io, guidance, image_ops, lists, synthetic

# ``normalization.normalize`` of every uint8 value in every channel: (1, 256, 3) float32.
_NORMALIZE_LUT = normalization.normalize(np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1))[None]


# glibc mallopt parameters (malloc.h) and the values keep_freed_memory sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
_TRIM_THRESHOLD_BYTES = 512 << 20


def keep_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    Every example allocates about 6 MB of decoded images, flow and outputs and
    frees them again. By default glibc maps blocks above a (dynamic) threshold
    freshly and trims the freed top of the heap, so those megabytes come back as
    new pages each time, hundreds of page faults per example. With
    blocks below 32 MB served from the heap and up to 512 MB of free heap kept,
    they are reused instead. Process-wide; the process keeps up to that much
    freed memory (per malloc arena) mapped. No-op (False) where the C library
    has no ``mallopt`` (not glibc).

    Returns:
      True if both settings were applied.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1
    return mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1 and ok


def crop(
    image: np.ndarray, flow: np.ndarray, size: tuple[int, int], rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Centred zero padding to at least ``size``, then a random (train) or centre (eval) crop.

    Args:
      image: (H, W, 3) array.
      flow: (H, W, 2) float32.
      size: crop (height, width) in pixels.
      rng: draws the offsets ``int(u * (L - crop))``; ``None`` crops the centre.

    Returns:
      (image, flow) of spatial size ``size``.
    """
    ch, cw = size
    h, w = image.shape[:2]
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    if ph or pw:
        pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
        image, flow = np.pad(image, pad), np.pad(flow, pad)
        h, w = image.shape[:2]
    if rng is None:
        y0, x0 = (h - ch) // 2, (w - cw) // 2
    else:
        y0, x0 = int(rng.random() * (h - ch)), int(rng.random() * (w - cw))
    return image[y0 : y0 + ch, x0 : x0 + cw], flow[y0 : y0 + ch, x0 : x0 + cw]


def normalize(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> float32 ``normalization.normalize(image)`` (ImageNet mean/std, 0-255 scale).

    A per-channel lookup table (``cv2.LUT``, GIL released) instead of float arithmetic.
    """
    return cv2.LUT(np.ascontiguousarray(image), _NORMALIZE_LUT)


@dataclasses.dataclass(frozen=True)
class TransformConfig:
    """Per-example transform settings.

    Attributes:
      short_size: shorter side after resizing, pixels (416; 333 for COCO).
      crop_size: (height, width) of the crop, pixels.
      train: random crop (and flip) if True, centre crop if False.
      flip: horizontal flip with p = 0.5 when training (off in the original).
      sampler: guidance sampling settings.
    """

    short_size: int
    crop_size: tuple[int, int]
    train: bool
    flip: bool = False
    sampler: guidance.SamplerConfig = guidance.SamplerConfig()


def transform_example(
    image: np.ndarray, flow: np.ndarray, config: TransformConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Resize, crop, flip, normalise and sample guidance for one example.

    Args:
      image: (H, W, 3) uint8 RGB frame 1.
      flow: (H, W, 2) float32 flow from frame 1 to frame 2, pixels.
      config: transform settings.
      rng: source of all randomness of this example.

    Returns:
      dict with ``image`` (h, w, 3) float32 normalised, ``sparse``, ``mask`` and
      ``flow`` (h, w, 2) float32, ``num_guides`` int32 scalar; (h, w) = crop.
    """
    image = image_ops.resize_short_side(image, config.short_size)
    flow = image_ops.resize_flow_short_side(flow, config.short_size)
    image, flow = crop(image, flow, config.crop_size, rng if config.train else None)
    if config.train and config.flip and rng.random() < 0.5:
        image = image[:, ::-1]
        flow = flow[:, ::-1] * np.array([-1, 1], np.float32)
    flow = np.ascontiguousarray(flow, np.float32)
    sparse, mask, num = guidance.sample_guidance(flow, config.sampler, rng)
    return {
        "image": normalize(image),
        "sparse": sparse,
        "mask": mask,
        "flow": flow,
        "num_guides": np.int32(num),
    }


class BadExampleCounter:
    """Thread-safe record of the distinct examples skipped as bad (``skip_bad_examples=True``).

    Examples are keyed by what identifies them across sources (``Source.key``:
    a list example's real file paths; a malformed list line's real list file
    path and line number), so one counter shared by the training and eval
    pipelines counts, and logs, an example that both read once, however often
    later epochs (or prefetching) meet it again. ``messages`` keeps the first
    error of each.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.messages: dict[Hashable, str] = {}

    def add(self, key: Hashable, message: str) -> None:
        """Records that the example ``key`` is bad, and why; logs it the first time."""
        with self._lock:
            if key in self.messages:
                return
            self.messages[key] = message
            count = len(self.messages)
        logging.warning("skipped bad example (%d so far): %s", count, message)

    @property
    def count(self) -> int:
        """Distinct bad examples met so far."""
        with self._lock:
            return len(self.messages)


@dataclasses.dataclass
class Source:
    """Random access to the examples of this process's shard.

    Attributes:
      size: number of examples.
      load: maps an example index in [0, size) to (frame1 uint8 (H, W, 3),
        flow float32 (H, W, 2)); raises ``lists.BadExampleError`` for bad data.
      key: maps an example index to what identifies the example across
        sources (equal for the same example read through two sources), for
        ``BadExampleCounter``; ``None``: (this source's id, the index).
    """

    size: int
    load: Callable[[int], tuple[np.ndarray, np.ndarray]]
    key: Callable[[int], Hashable] | None = None


def list_source(
    list_files: Sequence[str],
    root: str | None,
    flow_type: str,
    skip_bad_examples: bool,
    process_index: int = 0,
    process_count: int = 1,
    max_flow_magnitude: float = math.inf,
    counter: BadExampleCounter | None = None,
) -> Source:
    """Examples of the original's list files; process p takes entries p, p + P, ...

    All processes get the same number of entries: the last ``len % P`` are dropped.

    Args:
      list_files: list files, concatenated in order.
      root: directory prepended to relative paths (``None``: as given).
      flow_type: ``"jpg"`` (x/y flow images) or ``"flo"``.
      skip_bad_examples: skip and count malformed lines instead of raising.
      process_index: this process.
      process_count: number of processes.
      max_flow_magnitude: largest accepted ``|dx|``, ``|dy|`` in pixels; an
        example with a larger (or non-finite) flow value is bad.
      counter: receives the skipped malformed lines (``None``: they are logged).

    Returns:
      The source of this process's shard; its key is the example's real file
      paths (frame1, frame2, flow).
    """
    entries, _ = lists.read_lists(
        list_files,
        root,
        flow_type,
        skip_bad_examples=skip_bad_examples,
        on_skip=None if counter is None else counter.add,
    )
    # Equal shards (the last len % P entries are dropped), so every process runs
    # the same number of eval steps.
    entries = entries[: len(entries) - len(entries) % process_count][process_index::process_count]
    if not entries:
        raise ValueError(
            f"no examples for process {process_index} of {process_count} in list files {list(list_files)}"
        )

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        example = lists.load_example(entries[i], frame2=False, max_flow_magnitude=max_flow_magnitude)
        return example["frame1"], example["flow"]

    def key(i: int) -> tuple[str, ...]:
        entry = entries[i]
        return tuple(os.path.realpath(p) for p in (entry.frame1, entry.frame2, *entry.flow))

    return Source(size=len(entries), load=load, key=key)


def synthetic_source(
    config: synthetic.SyntheticConfig,
    size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Source:
    """The procedural dataset: examples p, p + P, ... of indices [0, size - size % P).

    Args:
      config: generator settings (frame size, objects, motion ranges).
      size: examples in the whole dataset (an epoch).
      seed: generator seed (different seeds give disjoint datasets, e.g. for
        train and validation).
      process_index: this process.
      process_count: number of processes.

    Returns:
      The source of this process's shard.
    """
    indices = list(range(process_index, size - size % process_count, process_count))

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        example = synthetic.generate_example(indices[i], config, seed, frame2=False)
        return example["frame1"], example["flow"]

    return Source(size=len(indices), load=load)


class _Sampler:
    """Maps a sample number to an example and its transformed, guided version."""

    def __init__(
        self,
        source: Source,
        transform: TransformConfig,
        seed: int,
        process_index: int,
        shuffle: bool,
        skip_bad_examples: bool,
        counter: BadExampleCounter,
    ):
        self.source, self.transform, self.seed = source, transform, seed
        self.process_index, self.shuffle = process_index, shuffle
        self.skip_bad, self.counter = skip_bad_examples, counter
        # Per-instance cache: a few epochs are in flight at once (prefetching).
        self._permutation = functools.lru_cache(maxsize=4)(self._make_permutation)

    def _make_permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.process_index, epoch, 0x5EED))
        return rng.permutation(self.source.size)

    def example_index(self, sample: int) -> int:
        """Example index of sample number ``sample`` (epochs are reshuffled)."""
        epoch, pos = divmod(sample, self.source.size)
        return int(self._permutation(epoch)[pos]) if self.shuffle else pos

    def __call__(self, sample: np.int64) -> tuple[np.ndarray, ...]:
        sample = int(sample)
        for attempt in range(self.source.size):
            index = self.example_index(sample + attempt)
            try:
                image, flow = self.source.load(index)
                break
            except lists.BadExampleError as err:
                if not self.skip_bad:
                    raise
                # Substitute the next example of the stream: deterministic, so a
                # resumed run still sees what an uninterrupted one would.
                key = (id(self.source), index) if self.source.key is None else self.source.key(index)
                self.counter.add(key, str(err))
        else:
            raise ValueError("every example of the source is bad")
        rng = np.random.default_rng((self.seed, self.process_index, sample))
        out = transform_example(image, flow, self.transform, rng)
        return tuple(out[k] for k in _OUTPUT_KEYS)


_OUTPUT_KEYS = ("image", "sparse", "mask", "flow", "num_guides")
_CHANNELS = {"image": 3, "sparse": 2, "mask": 2, "flow": 2}


def create_dataset(
    source: Source,
    transform: TransformConfig,
    *,
    local_batch: int,
    local_devices: int,
    seed: int,
    start_step: int = 0,
    num_samples: int | None = None,
    shuffle: bool = True,
    skip_bad_examples: bool = False,
    process_index: int = 0,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    prefetch: int = 2,
    counter: BadExampleCounter | None = None,
    reuse_freed_memory: bool = True,
) -> tf.data.Dataset:
    """Builds the batched, device-shaped tf.data pipeline over ``source``.

    Args:
      source: this process's examples.
      transform: resize/crop/flip/guidance settings.
      local_batch: examples per batch on this process (all its devices).
      local_devices: devices on this process; batches are reshaped to
        (local_devices, local_batch / local_devices, ...).
      seed: seed of shuffling, crops, flips and guidance.
      start_step: first batch (resume): sample numbers start at
        ``start_step * local_batch``.
      num_samples: samples to produce (``None``: endless, epochs reshuffled).
        Incomplete final batches are dropped.
      shuffle: permute examples per epoch (training); eval keeps file order.
      skip_bad_examples: replace a bad example by the next one and count it,
        instead of raising.
      process_index: this process (decorrelates processes' randomness).
      num_parallel_calls: threads for the per-example work.
      prefetch: batches prepared ahead.
      counter: receives the skipped bad examples (share one between the
        training and eval pipelines to count an example both meet once).
      reuse_freed_memory: call ``keep_freed_memory`` (process-wide malloc
        settings; fewer page faults per example).

    Sets OpenCV to one thread per call (``cv2.setNumThreads(1)``, process-wide):
    the examples themselves run in parallel.

    Returns:
      A dataset of dicts: ``image`` (D, B, H, W, 3), ``sparse``/``mask``/``flow``
      (D, B, H, W, 2) float32, ``num_guides`` (D, B) int32; D = local_devices,
      B = local_batch / D.
    """
    if local_batch % local_devices:
        raise ValueError(f"local batch {local_batch} is not divisible by the {local_devices} local devices")
    # Parallelism comes from tf.data running examples concurrently; OpenCV's own
    # thread pool inside each call would only oversubscribe the cores.
    cv2.setNumThreads(1)
    if reuse_freed_memory and not keep_freed_memory():
        logging.warning("input pipeline: mallopt unavailable; freed memory is not kept for reuse")
    sampler = _Sampler(
        source, transform, seed, process_index, shuffle, skip_bad_examples, counter or BadExampleCounter()
    )
    start = start_step * local_batch
    stop = -1 if num_samples is None else start + num_samples
    h, w = transform.crop_size

    def load(sample: tf.Tensor) -> dict[str, tf.Tensor]:
        outs = tf.numpy_function(
            sampler, [sample], [tf.float32] * 4 + [tf.int32], stateful=False, name="cmp_example"
        )
        example = dict(zip(_OUTPUT_KEYS, outs, strict=True))
        for key, channels in _CHANNELS.items():
            example[key] = tf.ensure_shape(example[key], (h, w, channels))
        example["num_guides"] = tf.ensure_shape(example["num_guides"], ())
        return example

    def to_devices(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        per_device = local_batch // local_devices
        return {k: tf.reshape(v, (local_devices, per_device, *v.shape[1:])) for k, v in batch.items()}

    ds = tf.data.Dataset.range(start, stop) if stop >= 0 else tf.data.Dataset.range(start, 2**62)
    ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True).map(to_devices)
    return ds.prefetch(prefetch)


def numpy_batches(dataset: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    """``dataset.as_numpy_iterator()``, with a bad example's error unwrapped.

    TensorFlow wraps an exception of the loading code in an ``InvalidArgumentError``
    whose message starts with the graph function's name; a bad example is
    re-raised here as the ``lists.BadExampleError`` it was (file, line, value).

    Raises:
      lists.BadExampleError: a bad example, with ``data.skip_bad_examples`` off.
    """
    iterator = dataset.as_numpy_iterator()
    marker = "BadExampleError: "
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            if marker not in e.message:
                raise
            text = e.message.split(marker, 1)[1].splitlines()[0]
            raise lists.BadExampleError(
                f"{text}\n(set data.skip_bad_examples=True to skip and count bad examples)"
            ) from None
        yield batch


def tfds_source(
    name: str,
    data_dir: str | None,
    split: str,
    process_index: int = 0,
    process_count: int = 1,
    max_flow_magnitude: float = math.inf,
) -> Source:
    """Examples of a prepared ``cmp_flow`` TFDS dataset (array_record format).

    Args:
      name: dataset name with config, e.g. ``"cmp_flow/lists"``.
      data_dir: TFDS data directory (``None``: the TFDS default).
      split: ``"train"`` or ``"validation"`` (any TFDS split expression).
      process_index: this process.
      process_count: number of processes; ``tfds.split_for_jax_process``
        gives each its own even slice.
      max_flow_magnitude: largest accepted ``|dx|``, ``|dy|`` in pixels; an
        example with a larger (or non-finite) flow value is bad
        (``lists.BadExampleError`` naming the dataset, split, process, index
        and the example's ``key`` feature, its list file and line).

    Returns:
      The source of this process's slice.
    """
    import tensorflow_datasets as tfds

    import input_pipeline.tfds_builder  # noqa: F401 (registers cmp_flow)

    builder = tfds.builder(name, data_dir=data_dir)
    shard = tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count, drop_remainder=True
    )
    data = builder.as_data_source(split=shard)

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        example = data[i]
        flow = np.asarray(example["flow"], np.float32)
        try:
            flow_io.check_flow_values(flow, max_flow_magnitude)
        except ValueError as e:
            origin = example["key"].decode() if isinstance(example["key"], bytes) else example["key"]
            where = f"TFDS {name} split {split!r} (process {process_index} of {process_count}) example {i}"
            raise lists.BadExampleError(f"{where} ({origin}): flow {e}") from e
        return np.asarray(example["frame1"]), flow

    def key(i: int) -> tuple[Any, ...]:
        return (name, data_dir, split, process_index, process_count, i)

    return Source(size=len(data), load=load, key=key)


def sampler_config(config: Any) -> guidance.SamplerConfig:
    """``guidance.SamplerConfig`` from the ``config.guidance`` group."""
    return guidance.SamplerConfig(
        strategy=tuple(config.strategy),
        bg_ratio=float(config.bg_ratio),
        nms_ks=int(config.nms_ks),
        max_num_guide=int(config.max_num_guide),
    )


SOURCES = ("lists", "synthetic", "tfds")
"""The values of ``config.data.source``."""

DEFAULT_MAX_FLOW_MAGNITUDE = 1e4
"""``config.data.max_flow_magnitude`` of configs saved before the field existed, pixels."""

# Fields of ``config.data.synthetic`` that are not ``SyntheticConfig`` fields.
_SYNTHETIC_SOURCE_FIELDS = ("train_size", "val_size", "train_seed", "val_seed")


def synthetic_config(fields: Any) -> synthetic.SyntheticConfig:
    """The generator that ``config.data.synthetic`` describes.

    Every field but the sizes and seeds (``train_size``, ``val_size``,
    ``train_seed``, ``val_seed``) is passed to ``SyntheticConfig``.

    Raises:
      ValueError: naming a field that ``SyntheticConfig`` does not have.
    """
    kwargs = {k: v for k, v in dict(fields).items() if k not in _SYNTHETIC_SOURCE_FIELDS}
    known = {f.name for f in dataclasses.fields(synthetic.SyntheticConfig)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"unknown config.data.synthetic fields {unknown}; accepted: {sorted(known)}")
    return synthetic.SyntheticConfig(**kwargs)


def source_from_config(
    config: Any,
    split: str,
    process_index: int = 0,
    process_count: int = 1,
    counter: BadExampleCounter | None = None,
) -> Source:
    """The ``Source`` that ``config.data`` names for ``split`` (``"train"`` or ``"eval"``).

    ``counter`` receives the malformed lines that list files skip. A config
    saved before ``data.max_flow_magnitude`` existed gets its default, 1e4 px.
    """
    data = config.data
    train = split == "train"
    max_flow = float(data.get("max_flow_magnitude", DEFAULT_MAX_FLOW_MAGNITUDE))
    if data.source == "lists":
        files = data.train_lists if train else data.val_lists
        return list_source(
            list(files),
            data.root,
            data.flow_type,
            data.skip_bad_examples,
            process_index,
            process_count,
            max_flow_magnitude=max_flow,
            counter=counter,
        )
    if data.source == "synthetic":
        syn = data.synthetic
        gen = synthetic_config(syn)
        size = syn.train_size if train else syn.val_size
        return synthetic_source(
            gen, size, syn.train_seed if train else syn.val_seed, process_index, process_count
        )
    if data.source == "tfds":
        tf_split = data.tfds.train_split if train else data.tfds.val_split
        return tfds_source(
            data.tfds.name, data.tfds.data_dir, tf_split, process_index, process_count, max_flow
        )
    raise ValueError(f"unknown data.source {data.source!r}; choose one of {SOURCES}")


_CHECKED_LINES = 5
_LISTS_ADVICE = (
    "Point data.root (--config.data.root=DIR) at the folder that the list files' paths are relative to, "
    "or data.train_lists / data.val_lists at existing list files; the README's Data section says how "
    "to prepare data (configs/synthetic.py trains without any)."
)
_TFDS_ADVICE = (
    "Build the dataset (the README's Data section: tfds build cmp_flow ...) or point data.tfds.data_dir "
    "(--config.data.tfds.data_dir=DIR) at the folder that holds it."
)


def _missing_tfds(tfds_config: Any) -> list[str]:
    """What is missing of the TFDS dataset ``tfds_config`` names (``config.data.tfds``); prepares nothing."""
    import tensorflow_datasets as tfds

    import input_pipeline.tfds_builder  # noqa: F401 (registers cmp_flow)

    data_dir = tfds_config.data_dir
    if data_dir is not None and not os.path.isdir(data_dir):
        return [f"data.tfds.data_dir {data_dir} is not a directory"]
    builder = tfds.builder(tfds_config.name, data_dir=data_dir)
    if not builder.is_prepared():
        return [f"TFDS dataset {tfds_config.name} is not prepared in {builder.data_dir}"]
    problems = []
    for field in ("train_split", "val_split"):
        split = tfds_config[field]
        names = [part.split("[")[0].strip() for part in re.split(r"\+", split)]
        unknown = [n for n in names if n not in builder.info.splits]
        if unknown:
            problems.append(
                f"data.tfds.{field} {split!r}: TFDS dataset {tfds_config.name} in {builder.data_dir} has no "
                f"split {', '.join(unknown)} (it has {', '.join(builder.info.splits)})"
            )
    return problems


def check_sources(config: Any) -> None:
    """Checks that the data ``config.data`` names is there, building and loading nothing.

    Meant to run first, before minutes of model building: it lists every
    problem at once. Under a tenth of a second for list files (plus about half
    a second of TFDS import for ``tfds``).

    * ``lists``: ``data.root`` (when set) is a directory, every training and
      validation list file exists (looked up as ``lists.read_lists`` does:
      under ``data.root`` first) and so does every file named on the first 5
      examples of each.
    * ``tfds``: ``data.tfds.data_dir`` (when set) is a directory, the dataset
      is prepared in it and has the configured splits (nothing is downloaded).
    * ``synthetic``: nothing to check.

    Args:
      config: the experiment config (group ``data``).

    Raises:
      FileNotFoundError: one message naming every missing list file, data
        file, directory or dataset, and what to do.
    """
    data = config.data
    if data.source == "lists":
        problems = []
        if data.root is not None and not os.path.isdir(data.root):
            problems.append(f"data.root {data.root} is not a directory")
        problems += lists.missing_files([*data.train_lists, *data.val_lists], data.root, _CHECKED_LINES)
        advice = _LISTS_ADVICE
    elif data.source == "tfds":
        problems, advice = _missing_tfds(data.tfds), _TFDS_ADVICE
    else:
        return
    if problems:
        listing = "".join(f"\n  {p}" for p in problems)
        raise FileNotFoundError(f"{len(problems)} missing (data.source={data.source!r}):{listing}\n{advice}")


def create_from_config(
    config: Any,
    split: str,
    *,
    local_batch: int,
    local_devices: int | None = None,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    counter: BadExampleCounter | None = None,
) -> tuple[tf.data.Dataset, Source]:
    """The training (endless, shuffled, random crops) or eval (one pass, centre crops) pipeline.

    Args:
      config: the experiment config (groups ``data``, ``guidance``; ``seed``).
      split: ``"train"`` or ``"eval"``.
      local_batch: examples per batch on this process.
      local_devices: devices of this process (default ``jax.local_device_count()``).
      start_step: first training step (resume); ignored for eval.
      process_index: this process (default ``jax.process_index()``).
      process_count: number of processes (default ``jax.process_count()``).
      counter: receives the skipped bad examples and malformed list lines;
        pass the same one to the training and eval pipelines so that an
        example both read is counted and logged once.

    Returns:
      (dataset, source); eval covers the source once, dropping the last
      incomplete batch.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if None in (local_devices, process_index, process_count):
        import jax

        local_devices = jax.local_device_count() if local_devices is None else local_devices
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    train = split == "train"
    source = source_from_config(config, split, process_index, process_count, counter)
    transform = TransformConfig(
        short_size=config.data.short_size,
        crop_size=image_ops.crop_size(config.data.crop_size),
        train=train,
        flip=config.data.flip,
        sampler=sampler_config(config.guidance),
    )
    dataset = create_dataset(
        source,
        transform,
        local_batch=local_batch,
        local_devices=local_devices,
        seed=config.seed if train else config.seed + 1,
        start_step=start_step if train else 0,
        num_samples=None if train else source.size,
        shuffle=train,
        skip_bad_examples=config.data.skip_bad_examples,
        process_index=process_index,
        num_parallel_calls=config.data.num_parallel_calls,
        prefetch=config.data.prefetch,
        counter=counter,
    )
    return dataset, source
