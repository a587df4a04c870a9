"""``cmp_flow``: frame-1 images (JPEG) and their optical flow (float32, zlib, lossless).

Configs:

* ``lists``: packs the original's list files found in the manual directory
  (``train.txt`` and ``val.txt`` by default, paths relative to the manual
  directory or absolute; ``frame1 frame2 flow_x flow_y`` or ``frame1 frame2
  flow.flo`` lines). Frame 2 is not stored: the CMP loss does not use it.
* ``synthetic``: the embedded moving-sprites dataset (``input_pipeline.synthetic``),
  10,000 training and 256 validation examples at 416x416 (as ``configs/base.py``);
  ``synthetic_tiny``: 64 + 16 examples at 64x64, for smoke tests.

Each example: ``frame1`` uint8 (H, W, 3) RGB, ``flow`` float32 (H, W, 2) (dx,
dy) in pixels, ``key`` the source (list file and line, or synthetic index).

Generation runs in one of two ways, chosen by the build's ``DownloadConfig``:

* **In this process** (no Beam options and no Beam runner, the default): a Python generator; TFDS's
  writer shuffles through disk, so a split larger than memory is fine.
* **On Apache Beam** when the build is given Beam options or a runner (``tfds build ...
  --beam_pipeline_options="runner=...,..."``, or ``DownloadConfig(beam_options=..., beam_runner=...)``):
  each split is ``Create`` of row ranges (up to ``_MAX_ROWS_PER_ELEMENT`` examples; ``Create``
  reshuffles them over the workers) then ``FlatMap(examples_in_range)``, which loads the examples of a
  range on a worker. The elements are pairs of numbers and the ``FlatMap`` carries only the split's
  small description (``ListsSource``/``SyntheticSource``), never the list lines, so the pipeline stays
  small for lists of millions of lines; each worker process reads the list files itself, once (cached
  while they are unchanged). Launcher and workers must therefore see the list files and the files they
  name at the same paths (a shared file system: give an absolute ``--manual_dir``), and workers must
  import this repository's ``input_pipeline``. Beam's local runners hold a whole split in memory while
  TFDS groups it into shards; use a cluster runner, or the in-process default, for data larger than
  memory.

Both ways give the same examples under the same keys, encoded the same way, in the same order (TFDS
sorts a split by the hash of its keys), so the dataset version does not depend on the way: the records
parse to equal ``tf.train.Example`` protos. (Their bytes are not reproducible even between two
in-process builds: protobuf writes the feature map in an order that changes from process to process.)
TFDS's Beam writer cuts a split of several shards (above about 128 MiB) at other example boundaries
than its in-process writer; one-shard splits hold the same records.

A bad example stops the build in both ways, as ``lists.BadExampleError`` naming the list file, the line
and the path: a list line with the wrong number of columns when the lists are read (before any example
is generated), a missing or undecodable file when its example is loaded. Beam's local runners raise it
as it is, with the step name appended to the message; other runners report it in their own error.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import lists, synthetic

_MAX_ROWS_PER_ELEMENT = 64
"""Most examples one Beam element (a row range) loads: about a second of work for list examples."""
_MIN_ELEMENTS = 1024
"""Elements a split is cut into at least (one per example when it has fewer examples)."""


@dataclasses.dataclass
class CmpFlowConfig(tfds.core.BuilderConfig):
    """What to pack.

    Attributes:
      source: ``"lists"`` or ``"synthetic"``.
      flow_type: list format, ``"jpg"`` (flow image pairs) or ``"flo"``.
      train_lists: list files of the train split, relative to the manual dir.
      val_lists: list files of the validation split.
      synthetic_size: (height, width) of synthetic frames, pixels.
      synthetic_train: number of synthetic training examples.
      synthetic_val: number of synthetic validation examples.
    """

    source: str = "lists"
    flow_type: str = "jpg"
    train_lists: tuple[str, ...] = ("train.txt",)
    val_lists: tuple[str, ...] = ("val.txt",)
    synthetic_size: tuple[int, int] = (416, 416)
    synthetic_train: int = 10_000
    synthetic_val: int = 256


# Seeds of the synthetic splits (validation differs from training).
_SYNTHETIC_SEEDS = {"train": 0, "validation": 1}


@dataclasses.dataclass(frozen=True)
class ListsSource:
    """The examples of one split of the ``lists`` config: the lines of its list files, in order.

    Attributes:
      list_files: the list files (as given to ``lists.read_lists``).
      root: prepended to relative paths in them (the manual directory).
      flow_type: ``"jpg"`` or ``"flo"``.
      count: the number of entries the launcher read; a worker that reads another number fails.
    """

    list_files: tuple[str, ...]
    root: str
    flow_type: str
    count: int

    def examples(self, start: int, stop: int) -> Iterator[tuple[str, dict]]:
        """Yields (key, example) of entries ``start`` to ``stop - 1``; the key is ``"<list file>:<line>"``.

        Raises:
          lists.BadExampleError: an entry's files are missing, unreadable or inconsistent.
          RuntimeError: the list files no longer hold ``count`` entries.
        """
        entries = _read_lists_cached(self.list_files, self.root, self.flow_type, _stamps(self))
        if len(entries) != self.count:
            raise RuntimeError(
                f"{', '.join(self.list_files)} changed during the build: {len(entries)} entries, "
                f"{self.count} when the build started"
            )
        for entry in entries[start:stop]:
            example = lists.load_example(entry, frame2=False)
            key = f"{entry.source}:{entry.line}"  # unique even when list files share a name
            yield key, {"frame1": example["frame1"], "flow": example["flow"], "key": key}


@dataclasses.dataclass(frozen=True)
class SyntheticSource:
    """The examples of one split of a synthetic config.

    Attributes:
      config: the generator parameters.
      seed: the split's seed.
      count: the number of examples.
    """

    config: synthetic.SyntheticConfig
    seed: int
    count: int

    def examples(self, start: int, stop: int) -> Iterator[tuple[str, dict]]:
        """Yields (key, example) of examples ``start`` to ``stop - 1``, keyed ``synthetic:<seed>:<i>``."""
        for index in range(start, stop):
            example = synthetic.generate_example(index, self.config, self.seed, frame2=False)
            key = f"synthetic:{self.seed}:{index}"
            yield key, {"frame1": example["frame1"], "flow": example["flow"], "key": key}


def _stamps(source: ListsSource) -> tuple[tuple[str, int, int], ...]:
    """(path, modification time in ns, size) of each list file: the cache key of its contents."""
    stamps = []
    for list_file in source.list_files:
        path = lists.locate_list_file(list_file, source.root)
        info = os.stat(path)
        stamps.append((path, info.st_mtime_ns, info.st_size))
    return tuple(stamps)


@functools.lru_cache(maxsize=2)
def _read_lists_cached(
    list_files: tuple[str, ...], root: str, flow_type: str, stamps: tuple[tuple[str, int, int], ...]
) -> lists.ListTable:
    """``lists.read_lists``, once per process and list contents (``stamps`` keys the cache: train, val)."""
    del stamps  # only part of the cache key
    entries, _ = lists.read_lists(list(list_files), root, flow_type)
    return entries


def examples_in_range(
    rows: tuple[int, int], source: ListsSource | SyntheticSource
) -> Iterator[tuple[str, dict]]:
    """The Beam work function: (key, example) of rows ``[start, stop)`` of a split.

    Module-level, and its arguments are plain data, so that Beam workers in other processes or on other
    machines unpickle it by importing this module.

    Args:
      rows: (start, stop) row indices.
      source: the split.

    Returns:
      An iterator of (key, example).
    """
    start, stop = rows
    return source.examples(start, stop)


def row_ranges(count: int) -> list[tuple[int, int]]:
    """Splits ``count`` rows into consecutive (start, stop) ranges, the Beam elements of a split.

    Ranges of ``count // _MIN_ELEMENTS`` rows (one row below ``_MIN_ELEMENTS`` rows), so at least
    ``_MIN_ELEMENTS`` ranges, or as many as there are rows, until the ranges reach
    ``_MAX_ROWS_PER_ELEMENT`` rows; every range but the last has the same length.
    """
    size = min(_MAX_ROWS_PER_ELEMENT, max(1, count // _MIN_ELEMENTS))
    return [(start, min(start + size, count)) for start in range(0, count, size)]


class CmpFlow(tfds.core.GeneratorBasedBuilder):
    """Frames and optical flow for Conditional Motion Propagation."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        CmpFlowConfig(name="lists", description="The original's list files from the manual dir."),
        CmpFlowConfig(name="synthetic", source="synthetic", description="Procedural moving sprites."),
        CmpFlowConfig(
            name="synthetic_tiny",
            source="synthetic",
            synthetic_size=(64, 64),
            synthetic_train=64,
            synthetic_val=16,
            description="A few small procedural examples for smoke tests.",
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "For the `lists` config, put train.txt and val.txt (the original's list format) in the manual "
        "directory; relative paths inside them are resolved against it. "
        "`python scripts/extract_flow.py` prepares such lists from your own videos."
    )

    # Set by download_and_prepare from its DownloadConfig.
    _use_beam: bool = False
    _max_examples: int | None = None

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "frame1": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "flow": tfds.features.Tensor(
                        shape=(None, None, 2), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB
                    ),
                    "key": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
        )

    def download_and_prepare(self, *, download_config: tfds.download.DownloadConfig | None = None, **kwargs):
        """Builds the dataset, on Apache Beam when ``download_config`` has Beam options or a runner.

        Args:
          download_config: as for ``tfds.core.DatasetBuilder.download_and_prepare``; its ``beam_options``
            or ``beam_runner`` (the CLI's ``--beam_pipeline_options`` sets the options) choose Beam.
          **kwargs: the other arguments of ``tfds.core.DatasetBuilder.download_and_prepare``.
        """
        download_config = download_config or tfds.download.DownloadConfig()
        self._use_beam = download_config.beam_options is not None or download_config.beam_runner is not None
        self._max_examples = download_config.max_examples_per_split
        super().download_and_prepare(download_config=download_config, **kwargs)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        if config.source == "synthetic":
            height, width = config.synthetic_size
            generator = synthetic.SyntheticConfig(height=height, width=width)
            counts = {"train": config.synthetic_train, "validation": config.synthetic_val}
            return {
                split: self._generate_examples(SyntheticSource(generator, _SYNTHETIC_SEEDS[split], count))
                for split, count in counts.items()
            }
        root = os.fspath(dl_manager.manual_dir)
        splits = {"train": config.train_lists, "validation": config.val_lists}
        out = {}
        for split, names in splits.items():
            source = ListsSource(tuple(os.path.join(root, name) for name in names), root, config.flow_type, 0)
            # Read here, so that a malformed line or a missing list file stops the build before it starts.
            entries = _read_lists_cached(source.list_files, root, config.flow_type, _stamps(source))
            out[split] = self._generate_examples(dataclasses.replace(source, count=len(entries)))
        return out

    def _generate_examples(self, source: ListsSource | SyntheticSource):
        """The (key, example) pairs of a split: a generator, or a Beam ``PTransform`` producing them.

        Args:
          source: the split.

        Returns:
          With Beam (see ``download_and_prepare``): ``Create(row ranges) | FlatMap(examples_in_range)``;
          else a generator of every example, in row order.
        """
        if not self._use_beam:
            return source.examples(0, source.count)
        import apache_beam as beam  # only Beam builds need it

        count = source.count if self._max_examples is None else min(source.count, self._max_examples)
        return beam.Create(row_ranges(count)) | beam.FlatMap(examples_in_range, source=source)
