"""A clu ``MetricWriter`` that appends scalars to a JSON-lines file.

Each ``write_scalars(step, scalars)`` call appends one line
``{"step": step, "<name>": value, ...}`` (e.g. ``{"step": 1000, "eval/epe": 3.2,
"eval/epe_nearest": 5.1}``), so the whole metric history is readable without
TensorBoard. Everything else (images, histograms, ...) is ignored: the
TensorBoard writer beside it records those.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging
from clu.metric_writers import interface


def _number(value: Any) -> float | int | None:
    value = np.asarray(value).item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value  # NaN is not JSON; +-inf are written as such
    return value


def _rows_through(path: pathlib.Path, last_step: int) -> tuple[list[str], int]:
    """The lines of ``path`` whose step is at most ``last_step``, and how many others there were."""
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            step = None  # a line torn by a kill
        if isinstance(step, int) and step <= last_step:
            kept.append(line)
        else:
            dropped += 1
    return kept, dropped


class JsonlWriter(interface.MetricWriter):
    """Appends scalar metrics to ``path``, one JSON object per call.

    Args:
      path: the ``.jsonl`` file; created with its directory.
      resume_step: the step training starts from. Rows of a previous run with
        a later step (the steps about to be replayed after a resume from an
        older checkpoint) and unreadable lines are dropped first, so that each
        step appears once; 0 starts a new file. ``None`` appends to any file.
    """

    def __init__(self, path: str | pathlib.Path, resume_step: int | None = None):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept, dropped = _rows_through(self.path, resume_step if resume_step > 0 else -1)
            if dropped:
                logging.info(
                    "%s: dropped %d rows after step %d (replayed from the checkpoint)",
                    path,
                    dropped,
                    resume_step,
                )
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(self.path)
        self._file = self.path.open("a")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Appends ``{"step": step, **scalars}``; NaN becomes ``null``."""
        record = {"step": int(step), **{k: _number(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def write_summaries(self, step, values, metadata=None):  # noqa: D102 (not recorded)
        pass

    def write_images(self, step, images):  # noqa: D102 (not recorded)
        pass

    def write_videos(self, step, videos):  # noqa: D102 (not recorded)
        pass

    def write_audios(self, step, audios, *, sample_rate):  # noqa: D102 (not recorded)
        pass

    def write_texts(self, step, texts):  # noqa: D102 (not recorded)
        pass

    def write_histograms(self, step, arrays, num_buckets=None):  # noqa: D102 (not recorded)
        pass

    def write_hparams(self, hparams):  # noqa: D102 (not recorded)
        pass

    def flush(self) -> None:
        """Flushes the file."""
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        self._file.close()
