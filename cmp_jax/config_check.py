"""Validation of an experiment config before anything is built.

:func:`validate_config` checks the values of every field of ``configs/base.py``
that training reads: types, ranges, known names, and the crop against the
model's stride. It builds nothing (no model, no data pipeline), so a mistyped
``--config.data.crop_size=65`` fails in milliseconds with a message naming the
field, the value and the accepted form, instead of an ``IndexError`` or a
shape error minutes later. Checks that need the data or the devices live with
them: ``input_pipeline.pipeline.check_sources`` (files) and
``cmp_jax.parallel.local_batch_size`` (batch over devices).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import ml_collections

from cmp_jax.flow import FlowBins
from cmp_jax.models.backbones import DILATION_STYLES
from cmp_jax.models.cmp import BACKBONES, DECODERS, UPSAMPLINGS
from cmp_jax.models.decoders import BRANCH_STRIDES
from cmp_jax.models.layers import CONV_IMPLS, INIT_SCHEMES, REMAT_MODES
from input_pipeline import image_ops, lists, pipeline

_RESNET_STRIDES = (8, 16, 32)
_DTYPES = ("float32", "bfloat16")
_CROP_FORM = "(height, width) of positive ints, e.g. --config.data.crop_size='(320, 320)'"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A real number that is not NaN (infinity allowed; bools are not numbers here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def _is_str_tuple(value: Any) -> bool:
    return isinstance(value, tuple | list) and bool(value) and all(isinstance(v, str) and v for v in value)


def _crop_size(value: Any) -> tuple[int, int] | None:
    """``image_ops.crop_size(value)``, or None when it is not of an accepted form."""
    try:
        return image_ops.crop_size(value)
    except ValueError:
        return None


class _Checker:
    """Collects the problems of one config; each names the field, its value and what is accepted."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.problems: list[str] = []

    def check(self, field: str, ok: Callable[[Any], bool], expected: str) -> bool:
        """Records a problem unless ``ok(value)``; True when the value is fine."""
        value = self.config
        for part in field.split("."):
            if not isinstance(value, ml_collections.ConfigDict) or part not in value:
                self.problems.append(f"{field} is missing (configs/base.py defines every field)")
                return False
            value = value[part]
        try:
            good = bool(ok(value))
        except (TypeError, ValueError):
            good = False
        if not good:
            self.problems.append(f"{field}={value!r}: expected {expected}")
        return good

    def choice(self, field: str, choices: tuple[Any, ...]) -> bool:
        return self.check(field, lambda v: v in choices, f"one of {choices}")

    def integer(self, field: str, low: int, expected: str) -> bool:
        return self.check(field, lambda v: _is_int(v) and v >= low, expected)

    def boolean(self, field: str) -> bool:
        return self.check(field, lambda v: isinstance(v, bool), "True or False")

    def constructed(self, group: str, build: Callable[[], Any]) -> None:
        """Records the ValueError that building ``group``'s object raises (its message names the field)."""
        try:
            build()
        except (TypeError, ValueError) as e:
            self.problems.append(f"{group}: {e}")


def _check_model(c: _Checker) -> int | None:
    """Checks ``config.model``; returns the encoder stride, or None when the model is invalid."""
    ok = c.choice("model.backbone", BACKBONES) & c.choice("model.decoder", DECODERS)
    model = c.config.model
    if ok and model.decoder == "skip" and model.backbone == "alexnet":
        c.problems.append(
            "model.decoder='skip': the skip decoder needs a ResNet backbone (AlexNet has no skips)"
        )
        ok = False
    ok &= c.check(
        "model.decoder_combo",
        lambda v: bool(v) and len(set(v)) == len(v) and all(k in BRANCH_STRIDES for k in v),
        f"distinct branch pooling strides from {BRANCH_STRIDES}, e.g. (1, 2, 4)",
    )
    if model.backbone != "alexnet":
        ok &= c.choice("model.output_stride", _RESNET_STRIDES)
    ok &= c.integer("model.img_enc_dim", 1, "a positive int") & c.integer(
        "model.sparse_enc_dim", 1, "a positive int"
    )
    ok &= c.choice("model.init_scheme", INIT_SCHEMES)
    ok &= c.choice("model.dtype", _DTYPES)
    ok &= c.choice("model.dilation_style", DILATION_STYLES) & c.choice("model.conv_impl", CONV_IMPLS)
    if "remat" in model:  # configs saved before the field existed do not rematerialise
        ok &= c.choice("model.remat", REMAT_MODES)
    if "upsample" in model:  # configs saved before the field existed are bilinear
        ok &= c.choice("model.upsample", UPSAMPLINGS)
        if ok and model.upsample == "convex" and model.decoder != "plain":
            c.problems.append(
                "model.upsample='convex': needs model.decoder='plain' (the skip decoder ends at 1/2)"
            )
            ok = False
    return (32 if model.backbone == "alexnet" else model.output_stride) if ok else None


def _check_crop(c: _Checker, stride: int | None) -> None:
    """Checks ``data.crop_size``'s form and, when the model is valid (``stride``), its fit to the model."""
    if not c.check("data.crop_size", _crop_size, _CROP_FORM) or stride is None:
        return
    crop, model = c.config.data.crop_size, c.config.model
    height, width = _crop_size(crop)
    if height % stride or width % stride:
        why = "model.backbone='alexnet'" if model.backbone == "alexnet" else f"model.output_stride={stride}"
        fixed = (max(height // stride, 1) * stride, max(width // stride, 1) * stride)
        c.problems.append(
            f"data.crop_size={crop!r}: expected both sides multiples of the encoder stride {stride} ({why}), "
            f"e.g. {fixed}"
        )
    elif model.decoder == "plain" and min(height, width) < stride * max(model.decoder_combo):
        pool = max(model.decoder_combo)
        c.problems.append(
            f"data.crop_size={crop!r}: expected both sides at least {stride * pool}: the decoder branch "
            f"{pool} (model.decoder_combo) pools the stride-{stride} features by {pool}"
        )


def _check_data(c: _Checker, stride: int | None) -> None:
    data = c.config.data
    if c.choice("data.source", pipeline.SOURCES):
        if data.source == "lists":
            c.check(
                "data.train_lists", _is_str_tuple, "a non-empty tuple of list file paths, e.g. ('train.txt',)"
            )
            c.check(
                "data.val_lists", _is_str_tuple, "a non-empty tuple of list file paths, e.g. ('val.txt',)"
            )
            c.check("data.root", lambda v: v is None or (isinstance(v, str) and v), "None or a directory")
            c.choice("data.flow_type", tuple(lists.FLOW_COLUMNS))
        elif data.source == "synthetic":
            syn = "data.synthetic"
            c.integer(f"{syn}.train_size", 1, "a positive int")
            c.integer(f"{syn}.val_size", 1, "a positive int")
            c.integer(f"{syn}.train_seed", 0, "an int >= 0")
            c.integer(f"{syn}.val_seed", 0, "an int >= 0")
            c.constructed(syn, lambda: pipeline.synthetic_config(data.synthetic))
        else:
            for field in ("name", "train_split", "val_split"):
                c.check(f"data.tfds.{field}", lambda v: isinstance(v, str) and v, "a non-empty string")
            c.check(
                "data.tfds.data_dir", lambda v: v is None or (isinstance(v, str) and v), "None or a directory"
            )
    c.boolean("data.skip_bad_examples")
    c.check(
        "data.max_flow_magnitude",
        lambda v: _is_real(v) and v > 0,
        "a positive number of pixels (inf: no bound)",
    )
    c.integer("data.short_size", 1, "a positive int (pixels)")
    _check_crop(c, stride)
    c.boolean("data.flip")
    c.check(
        "data.num_parallel_calls",
        lambda v: _is_int(v) and (v == -1 or v >= 1),
        "-1 (AUTOTUNE) or a positive int",
    )
    c.integer("data.prefetch", 0, "an int >= 0 (batches)")


def _check_optim(c: _Checker) -> None:
    optim = c.config.optim
    c.check("optim.lr", lambda v: _is_real(v) and 0 < v < math.inf, "a positive finite learning rate")
    c.check("optim.momentum", lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)")
    c.check("optim.weight_decay", lambda v: _is_real(v) and 0 <= v < math.inf, "a finite number >= 0")
    c.check("optim.lr_decay", lambda v: _is_real(v) and 0 < v < math.inf, "a positive finite factor")
    if c.choice("optim.schedule", ("step", "cosine")) and optim.schedule == "step":
        c.check(
            "optim.lr_steps",
            lambda v: (
                all(_is_int(s) and s >= 0 for s in v) and all(b > a for a, b in zip(v, v[1:], strict=False))
            ),
            "increasing steps >= 0, e.g. (24000, 36000), or () for 2/3.5 and 3/3.5 of num_train_steps",
        )
    c.integer("optim.warmup_steps", 0, "an int >= 0 (0: no warm-up)")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks every training field of ``config`` (those of ``configs/base.py``); builds nothing.

    Call it first, before the model or the data are built. It checks: the
    model's names and sizes; ``flow`` (odd ``num_bins``, positive ``fmax``);
    ``data`` (``source`` and the fields of that source, ``flow_type``,
    ``short_size``, ``crop_size`` as (height, width) of positive ints that
    are multiples of the model's stride and large enough for the decoder's
    pooling, ``max_flow_magnitude``, ...); ``guidance`` (through
    ``guidance.SamplerConfig``); ``optim``; ``loss``; batch sizes, step counts
    and the log, eval and checkpoint intervals.

    Args:
      config: the experiment config.

    Raises:
      ValueError: listing every problem, one per line, mostly as
        ``field=value: expected <accepted form>`` (a missing field too).
    """
    c = _Checker(config)
    stride = _check_model(c)
    if c.check("flow.num_bins", lambda v: _is_int(v) and v > 0 and v % 2, "a positive odd int") & c.check(
        "flow.fmax", lambda v: _is_real(v) and 0 < v < math.inf, "a positive finite flow range in pixels"
    ):
        c.constructed("flow", lambda: FlowBins(num_bins=config.flow.num_bins, fmax=config.flow.fmax))
    c.integer("seed", 0, "an int >= 0")
    _check_data(c, stride)
    c.constructed("guidance", lambda: pipeline.sampler_config(config.guidance))
    _check_optim(c)
    c.check(
        "loss.motion_weight", lambda v: _is_real(v) and 0 <= v < math.inf, "a finite number >= 0 (0: off)"
    )
    c.check(
        "loss.label_sigma",
        lambda v: _is_real(v) and 0 <= v < math.inf,
        "a finite number >= 0 px (0: one-hot)",
    )
    if "epe_weight" in config.loss:
        c.check(
            "loss.epe_weight", lambda v: _is_real(v) and 0 <= v < math.inf, "a finite number >= 0 (0: off)"
        )
    if (
        c.integer("batch_size", 1, "a positive int (global batch over all devices)")
        and "grad_accum_steps" in config
    ):
        c.check(
            "grad_accum_steps",
            lambda v: _is_int(v) and v >= 1 and config.batch_size % v == 0,
            f"a positive int dividing batch_size={config.batch_size} (micro-batches of batch_size / k)",
        )
    c.integer("num_train_steps", 0, "an int >= 0")
    c.boolean("sync_batchnorm")
    c.choice("distributed", ("auto", "on", "off"))
    c.integer("eval_every_steps", 0, "an int >= 0 (0: evaluate only at the end)")
    c.integer("eval_batch_size", 1, "a positive int (global eval batch)")
    c.check(
        "num_eval_batches",
        lambda v: _is_int(v) and (v == -1 or v >= 1),
        "-1 (the whole validation set) or a positive int",
    )
    c.boolean("eval_at_start")
    c.integer("num_pictures", 0, "an int >= 0")
    c.integer("checkpoint_every_steps", 1, "a positive int (steps between checkpoints)")
    c.integer("max_to_keep", 1, "a positive int (checkpoints kept)")
    c.integer("log_every_steps", 1, "a positive int (steps between train metric lines)")
    if c.problems:
        listing = "".join(f"\n  {p}" for p in c.problems)
        count = f"{len(c.problems)} problem{'s' if len(c.problems) > 1 else ''}"
        raise ValueError(f"invalid config, {count}:{listing}")
