"""The evaluation loop over a validation set, and the evaluation of a finished workdir.

:class:`Evaluator` runs the eval pipeline (``input_pipeline.pipeline``, hence
TensorFlow; this module is not imported by ``cmp_jax.evaluation`` itself)
through a pmapped eval step over the local devices. Training calls it every
``eval_every_steps``; :func:`evaluate_workdir` calls it once on a trained
workdir's checkpoint, with the same or other data, without writing anything
(``scripts/benchmark.py propagation``).
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from absl import logging

from cmp_jax import parallel
from cmp_jax import state as state_lib
from cmp_jax.evaluation.baselines import baseline_flows
from cmp_jax.evaluation.metrics import summarize_eval
from cmp_jax.evaluation.pictures import batch_pictures
from cmp_jax.evaluation.summary import FRAC_BELOW_NEAREST
from input_pipeline import image_ops, pipeline

_INPUTS = ("image", "sparse", "mask", "flow", "num_guides")


def _local_values(x: Any) -> np.ndarray:
    """This process's values of a pmapped per-example output (devices, B), flattened in device order."""
    if isinstance(x, jax.Array):
        return np.concatenate([np.asarray(s.data).reshape(-1) for s in x.addressable_shards])
    return np.asarray(x).reshape(-1)


def _sum_over_processes(values: np.ndarray) -> np.ndarray:
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)


class Evaluator:
    """Runs the eval set through a pmapped eval step; caches what does not depend on the model.

    The eval pipeline is deterministic (centre crops, guidance seeded by sample
    number), so the baselines, which do not depend on the model, are computed
    on the first pass only: their EPE sums and their per-image EPEs.

    Args:
      config: the experiment config (``data``, ``guidance``, ``seed``,
        ``eval_batch_size``, ``num_eval_batches``, ``num_pictures``).
      step_fn: ``cmp_jax.train.eval_step`` with its ``bins`` bound:
        ``step_fn(state, batch, baselines, axis_name=...)`` returning (sums,
        flow, per-image EPEs).
      counter: receives the bad examples skipped (``data.skip_bad_examples``);
        the training pipeline's, so that an example both read counts once.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        step_fn: Callable[..., Any],
        counter: pipeline.BadExampleCounter | None = None,
    ):
        self.config = config
        self.local_batch = parallel.local_batch_size(config.eval_batch_size, "eval_batch_size")
        self.dataset, source = pipeline.create_from_config(
            config, "eval", local_batch=self.local_batch, counter=counter
        )
        if source.size < self.local_batch:
            # A small validation set (e.g. a few videos' val.txt) is not a dead end: the batch shrinks
            # to the largest multiple of the local device count that it fills.
            devices = jax.local_device_count()
            if source.size < devices:
                raise ValueError(
                    f"the validation set of this process has {source.size} examples, fewer than its "
                    f"{devices} local devices: at least {devices} are needed for one eval batch"
                )
            clamped = source.size // devices * devices
            logging.warning(
                "config.eval_batch_size=%d gives this process eval batches of %d, more than its %d "
                "validation examples: evaluating with batches of %d per process (eval_batch_size=%d)",
                config.eval_batch_size,
                self.local_batch,
                source.size,
                clamped,
                clamped * jax.process_count(),
            )
            self.local_batch = clamped
            self.dataset, source = pipeline.create_from_config(
                config, "eval", local_batch=clamped, counter=counter
            )
        batches = source.size // self.local_batch
        if config.num_eval_batches > 0:
            batches = min(batches, config.num_eval_batches)
        if batches < 1:
            raise ValueError(
                f"the validation set of this process has {source.size} examples, fewer than one "
                f"eval batch ({self.local_batch}); lower config.eval_batch_size"
            )
        self.num_batches = batches
        self.p_eval = parallel.pmap_step(step_fn, donate_state=False)
        self.baseline_sums: dict[str, float] | None = None
        self.baseline_image_epe: dict[str, np.ndarray] | None = None
        # Images of the last evaluation over all processes.
        self.num_images = 0

    def __call__(self, state: Any) -> tuple[dict[str, float], np.ndarray | None]:
        """Eval metrics and pictures of the first batch (process 0).

        Args:
          state: the replicated state (``apply_fn``, ``params``, ``batch_stats``).

        Returns:
          (metrics, pictures): ``summarize_eval``'s ``eval/...`` means plus
          ``eval/frac_below_nearest``, the fraction of eval images whose mean
          EPE (over the image's pixels) is strictly below nearest fill's; and
          ``batch_pictures`` of the first batch, or None when
          ``num_pictures`` is 0.
        """
        totals: dict[str, float] = {}
        baseline_totals: dict[str, float] = {}
        model_images: list[np.ndarray] = []
        baseline_images: dict[str, list[np.ndarray]] = {}
        pictures = None
        for i, batch in enumerate(pipeline.numpy_batches(self.dataset.take(self.num_batches))):
            inputs = {k: batch[k] for k in _INPUTS}
            baselines = baseline_flows(inputs) if self.baseline_sums is None else {}
            sums, flow, image_epe = self.p_eval(state, inputs, baselines)
            sums = jax.device_get(parallel.first_replica(sums))
            for k, v in sums.items():
                target = baseline_totals if k.startswith("epe_") else totals
                target[k] = target.get(k, 0.0) + float(v)
            model_images.append(_local_values(image_epe["epe"]))
            for name in baselines:
                baseline_images.setdefault(name, []).append(_local_values(image_epe[f"epe_{name}"]))
            if i == 0 and self.config.num_pictures > 0:
                pictures = batch_pictures(inputs, jax.device_get(flow), self.config.num_pictures)
        if self.baseline_sums is None:
            self.baseline_sums = baseline_totals
            self.baseline_image_epe = {k: np.concatenate(v) for k, v in baseline_images.items()}
        metrics = summarize_eval({**totals, **self.baseline_sums})
        model = np.concatenate(model_images)
        below, count = _sum_over_processes(
            np.array([np.sum(model < self.baseline_image_epe["nearest"]), model.size], np.float64)
        )
        metrics[FRAC_BELOW_NEAREST] = float(below / count)
        self.num_images = int(count)
        return metrics, pictures


def eval_config(
    config: ml_collections.ConfigDict,
    data_config: ml_collections.ConfigDict | None = None,
    *,
    lists: Sequence[str] | None = None,
    root: str | None = None,
    flow_type: str | None = None,
    batch_size: int | None = None,
    num_batches: int = -1,
) -> ml_collections.ConfigDict:
    """A workdir's config with its eval data replaced, for :func:`evaluate_workdir`.

    Args:
      config: the workdir's experiment config (its model, flow bins and seed
        are kept; the eval guidance is seeded by ``seed + 1`` as in training).
      data_config: an experiment config whose ``data`` and ``guidance``
        groups replace the workdir's (source, lists or synthetic generator,
        resize and crop, guidance sampler).
      lists: list files replacing ``data.val_lists`` (and ``data.source``
        becomes ``"lists"``), after ``data_config``.
      root: ``data.root`` for ``lists`` (default: the config's).
      flow_type: ``data.flow_type`` for ``lists``, ``"jpg"`` or ``"flo"``
        (default: the config's).
      batch_size: ``eval_batch_size`` (default: the config's).
      num_batches: batches to evaluate, -1 for the whole validation set.

    Returns:
      A new config; the inputs are not modified. Pictures are off.
    """
    out = ml_collections.ConfigDict(config.to_dict())
    if data_config is not None:
        out.data = ml_collections.ConfigDict(data_config.data.to_dict())
        out.guidance = ml_collections.ConfigDict(data_config.guidance.to_dict())
    if lists:
        out.data.source = "lists"
        out.data.val_lists = tuple(str(p) for p in lists)
        if root is not None:
            out.data.root = str(root)
        if flow_type is not None:
            out.data.flow_type = flow_type
    elif root is not None or flow_type is not None:
        raise ValueError("root and flow_type apply to lists; give lists too")
    if batch_size is not None:
        out.eval_batch_size = int(batch_size)
    out.num_eval_batches = int(num_batches)
    out.num_pictures = 0
    return out


def evaluate_workdir(
    workdir: str | pathlib.Path,
    config: ml_collections.ConfigDict | None = None,
    step: int | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Evaluates a workdir's checkpoint on a validation set; writes nothing.

    Args:
      workdir: a training workdir (``config.json`` and ``checkpoints/``); read only.
      config: the config defining the model and the eval data (from
        :func:`eval_config`); default: the workdir's own, whole validation set.
      step: the checkpoint to evaluate; None for the newest.

    Returns:
      (metrics, info): the ``Evaluator``'s metrics; ``step`` (the checkpoint
      read), ``images`` (evaluated, over all processes) and ``devices``
      (local devices used).
    """
    # Imported here: cmp_jax.train imports this module for the training loop's Evaluator.
    from cmp_jax import train

    saved, variables, step = state_lib.load_variables(workdir, step)
    config = eval_config(saved) if config is None else config
    model, bins = state_lib.build_from_config(config)
    model.clone(bn_axis_name=None).check_size(*image_ops.crop_size(config.data.crop_size))
    tx = optax.identity()
    state = state_lib.TrainState(
        step=np.asarray(step, np.int32),
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        opt_state=tx.init(variables["params"]),
        batch_stats=variables["batch_stats"],
        rng=np.zeros((2,), np.uint32),
    )
    evaluator = Evaluator(config, functools.partial(train.eval_step, bins=bins))
    metrics, _ = evaluator(parallel.replicate(state))
    info = {"step": step, "images": evaluator.num_images, "devices": jax.local_device_count()}
    return metrics, info
