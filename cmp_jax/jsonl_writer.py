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
from clu.metric_writers import interface


def _number(value: Any) -> float | int | None:
    value = np.asarray(value).item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value  # NaN is not JSON; +-inf are written as such
    return value


class JsonlWriter(interface.MetricWriter):
    """Appends scalar metrics to ``path``, one JSON object per call.

    Args:
      path: the ``.jsonl`` file; created with its directory, appended to on resume.
    """

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
