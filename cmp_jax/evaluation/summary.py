"""The summary a newcomer reads: the model's EPE beside the baselines', and its ratio to nearest fill.

:func:`format_summary` turns the ``eval/...`` metrics of one evaluation (from
``Evaluator``) into a markdown table, one row per flow (model, zero, nearest,
splat) and one column per magnitude range, plus the model's ratio to the
nearest-guidance fill; :func:`summary_scalars` gives the ratios as scalars for
``metrics.jsonl``; :func:`report_summary` does both at the end of training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
from absl import logging

from cmp_jax.evaluation.metrics import BASELINES, MAGNITUDE_RANGE_NAMES

# Key of the fraction of eval images whose model EPE is below nearest fill's (``Evaluator``).
FRAC_BELOW_NEAREST = "eval/frac_below_nearest"
# Prefix of the ratios written by :func:`summary_scalars`.
RATIO_PREFIX = "summary/epe_over_nearest"


def _value(metrics: Mapping[str, Any], key: str) -> float:
    """``metrics[key]`` as a float; NaN when missing or None (JSON null)."""
    value = metrics.get(key)
    return math.nan if value is None else float(value)


def _ratio(num: float, den: float) -> float:
    return num / den if math.isfinite(num) and math.isfinite(den) and den > 0 else math.nan


def _cell(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "-"


def _columns() -> list[str]:
    """Key suffixes of the table's columns: overall, then each magnitude range."""
    return [""] + [f"/{name}" for name in MAGNITUDE_RANGE_NAMES]


def summary_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The model's EPE divided by nearest fill's, overall and per magnitude range.

    Args:
      metrics: eval metrics (``eval/epe``, ``eval/epe/<range>``,
        ``eval/epe_nearest``, ``eval/epe_nearest/<range>``, optionally
        ``eval/frac_below_nearest``).

    Returns:
      ``summary/epe_over_nearest`` and ``summary/epe_over_nearest/<range>`` for
      each range of ``MAGNITUDE_RANGE_NAMES`` (NaN where either EPE is
      undefined, e.g. a range without pixels, or nearest fill's is 0), and
      ``summary/frac_below_nearest`` copied from ``eval/frac_below_nearest``
      when present.
    """
    out: dict[str, float] = {}
    for col in _columns():
        model, nearest = _value(metrics, f"eval/epe{col}"), _value(metrics, f"eval/epe_nearest{col}")
        out[RATIO_PREFIX + col] = _ratio(model, nearest)
    if FRAC_BELOW_NEAREST in metrics:
        out["summary/frac_below_nearest"] = _value(metrics, FRAC_BELOW_NEAREST)
    return out


def format_summary(metrics: Mapping[str, Any]) -> str:
    """A markdown table of the model's and the baselines' EPE, and the model's ratio to nearest fill.

    Args:
      metrics: eval metrics as ``Evaluator`` returns them or ``metrics.jsonl``
        records them (a missing key, ``None`` or NaN prints as ``-``).

    Returns:
      Lines: the table (rows model, zero, nearest, splat and ``model /
      nearest``; columns all pixels and each target-magnitude range, in
      pixels), then, when ``eval/frac_below_nearest`` is present, the fraction
      of images on which the model's EPE is below nearest fill's. No trailing
      newline.
    """
    columns = _columns()
    header = ["EPE (px)", "all"] + [f"{name} px" for name in MAGNITUDE_RANGE_NAMES]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for label, prefix in [("model", "eval/epe")] + [(name, f"eval/epe_{name}") for name in BASELINES]:
        cells = [_cell(_value(metrics, prefix + col)) for col in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ratios = summary_scalars(metrics)
    lines.append("| model / nearest | " + " | ".join(_cell(ratios[RATIO_PREFIX + c]) for c in columns) + " |")
    if FRAC_BELOW_NEAREST in metrics:
        frac = _value(metrics, FRAC_BELOW_NEAREST)
        lines.append(f"images where the model's EPE is below nearest fill's: {_cell(frac)}")
    return "\n".join(lines)


def report_summary(writer: Any, step: int, metrics: Mapping[str, Any]) -> None:
    """Logs and prints :func:`format_summary` and writes :func:`summary_scalars` at ``step``.

    Args:
      writer: a clu ``MetricWriter`` (in training: TensorBoard and
        ``metrics.jsonl`` on process 0), given one ``write_scalars`` call.
      step: the step of the evaluation ``metrics`` come from.
      metrics: eval metrics (see :func:`format_summary`).
    """
    table = format_summary(metrics)
    logging.info("summary of the eval at step %d:\n%s", step, table)
    if jax.process_index() == 0:
        print(f"summary of the eval at step {step}:\n{table}", flush=True)
    writer.write_scalars(step, summary_scalars(metrics))
