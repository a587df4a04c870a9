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
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import lists, synthetic


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

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        if config.source == "synthetic":
            return {split: self._generate_examples(split=split) for split in ("train", "validation")}
        root = os.fspath(dl_manager.manual_dir)
        return {
            "train": self._generate_examples(
                list_files=[os.path.join(root, f) for f in config.train_lists], root=root
            ),
            "validation": self._generate_examples(
                list_files=[os.path.join(root, f) for f in config.val_lists], root=root
            ),
        }

    def _generate_examples(self, split: str = "", list_files: list[str] | None = None, root: str = ""):
        """Yields (key, example) of a synthetic split, or of the given list files."""
        config = self.builder_config
        if config.source == "synthetic":
            height, width = config.synthetic_size
            generator = synthetic.SyntheticConfig(height=height, width=width)
            seed = _SYNTHETIC_SEEDS[split]
            count = config.synthetic_train if split == "train" else config.synthetic_val
            for index in range(count):
                example = synthetic.generate_example(index, generator, seed, frame2=False)
                key = f"synthetic:{seed}:{index}"
                yield key, {"frame1": example["frame1"], "flow": example["flow"], "key": key}
            return
        entries, _ = lists.read_lists(list_files, root, config.flow_type)
        for entry in entries:
            example = lists.load_example(entry, frame2=False)
            key = f"{entry.source}:{entry.line}"  # unique even when list files share a name
            yield key, {"frame1": example["frame1"], "flow": example["flow"], "key": key}
