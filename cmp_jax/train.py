"""Training and evaluation: pure step functions and the ``train_and_evaluate`` loop.

``train_step`` and ``eval_step`` are pure functions of (state, batch); they
average over devices only through an optional ``axis_name`` (gradients, loss
and metrics with ``lax.pmean``, EPE sums with ``lax.psum``). ``cmp_jax.parallel``
pmaps them. Batches are dicts from ``input_pipeline.pipeline``: ``image``
(B, H, W, 3) normalised, ``sparse``/``mask``/``flow`` (B, H, W, 2) with flow in
pixels, ``num_guides`` (B,).

The state, its initialisation and the optimiser (the original's SGD with step
decay) live in ``cmp_jax.state``; evaluation in ``cmp_jax.evaluation``.

The loop: initialise (or resume from the newest checkpoint in
``workdir/checkpoints``: step, parameters, BatchNorm statistics, optimiser
state, RNG and data position), then train ``num_train_steps`` steps, logging
train metrics every ``log_every_steps``, evaluating every ``eval_every_steps``
and saving every ``checkpoint_every_steps`` and at the end. Metrics go to
TensorBoard event files and ``workdir/metrics.jsonl`` (process 0 only).
Evaluation is ``cmp_jax.evaluation``'s (``evaluator.Evaluator``); after the
last one, ``evaluation.report_summary`` prints the summary table and writes
its ``summary/...`` ratios.
"""

from __future__ import annotations

import functools
import math
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from cmp_jax import checkpoint, config_check, evaluation, memory_report, parallel
from cmp_jax import state as state_lib
from cmp_jax.evaluation import video_segmentation
from cmp_jax.evaluation.evaluator import Evaluator
from cmp_jax.flow import FlowBins, logits_to_flow
from cmp_jax.jsonl_writer import JsonlWriter
from cmp_jax.losses import discrete_flow_loss
from cmp_jax.state import TrainState
from input_pipeline import pipeline


def _loss_and_grads(
    state: TrainState,
    batch_stats: Any,
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    bins: FlowBins,
    motion_weight: float,
    label_sigma: float,
    epe_weight: float,
) -> tuple[jax.Array, Any, Any]:
    """(loss, gradients, updated BatchNorm statistics) of one (micro-)batch in training mode."""

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": batch_stats},
            batch["image"],
            batch["sparse"],
            batch["mask"],
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": rng},
        )
        loss = discrete_flow_loss(logits, batch["flow"], bins, motion_weight, label_sigma, epe_weight)
        return loss, updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return loss, grads, updates.get("batch_stats", batch_stats)


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    bins: FlowBins,
    schedule: Callable[[Any], Any],
    axis_name: str | None = None,
    motion_weight: float = 0.0,
    label_sigma: float = 0.0,
    epe_weight: float = 0.0,
    grad_accum_steps: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on the discrete flow loss.

    Args:
      state: the training state.
      batch: ``image`` (B, H, W, 3), ``sparse``, ``mask``, ``flow`` (B, H, W, 2)
        in pixels, ``num_guides`` (B,).
      bins: flow quantisation of the loss.
      schedule: lr of a step (logged; the optimiser has its own copy).
      axis_name: device axis to average gradients and metrics over, or ``None``.
      motion_weight: pixel weighting of the loss by target magnitude
        (``losses.discrete_flow_loss``; 0 = the original's plain mean).
      label_sigma: Gaussian soft targets over the bins, in pixels
        (``losses.discrete_flow_loss``; 0 = the original's one-hot bins).
      epe_weight: weight of the soft-argmax end-point error added to the loss
        (``losses.discrete_flow_loss``; 0 = the original's cross-entropy only).
      grad_accum_steps: k; with k > 1 the batch is split into k micro-batches
        of B / k run one after the other (``lax.scan``; BatchNorm statistics
        updated after each, dropout keyed per micro-batch), and the one
        optimiser step uses the mean of their gradients (and reports the mean
        of their losses). k = 1 is the plain step.

    Returns:
      (new state, metrics): ``loss``, ``lr`` (of this step) and ``num_guides``
      (mean guidance points per image), averaged over the devices.
    """
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    step_loss = functools.partial(
        _loss_and_grads,
        state,
        bins=bins,
        motion_weight=motion_weight,
        label_sigma=label_sigma,
        epe_weight=epe_weight,
    )
    if grad_accum_steps == 1:
        loss, grads, batch_stats = step_loss(state.batch_stats, batch, rng)
    else:
        size = batch["image"].shape[0]
        if size % grad_accum_steps:
            raise ValueError(
                f"batch of {size} per device does not split into grad_accum_steps={grad_accum_steps}"
            )
        micro = jax.tree.map(
            lambda x: x.reshape(grad_accum_steps, size // grad_accum_steps, *x.shape[1:]), batch
        )

        def accumulate(carry, inputs):
            grads_sum, loss_sum, stats = carry
            index, micro_batch = inputs
            loss, grads, stats = step_loss(stats, micro_batch, jax.random.fold_in(rng, index))
            return (jax.tree.map(jnp.add, grads_sum, grads), loss_sum + loss, stats), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        carry = (zeros, jnp.zeros((), jnp.float32), state.batch_stats)
        (grads, loss, batch_stats), _ = jax.lax.scan(accumulate, carry, (jnp.arange(grad_accum_steps), micro))
        grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
        loss = loss / grad_accum_steps
    metrics = {
        "loss": loss,
        "lr": jnp.asarray(schedule(state.step), jnp.float32),
        "num_guides": jnp.mean(batch["num_guides"].astype(jnp.float32)),
    }
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        metrics = jax.lax.pmean(metrics, axis_name)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return state, metrics


def configured_train_step(config: Any, bins: FlowBins, schedule: Callable[[Any], Any]) -> Callable[..., Any]:
    """``train_step`` with the config's loss options and gradient accumulation bound.

    Args:
      config: the experiment config (``loss.*`` and ``grad_accum_steps``; absent fields of older
        configs take the original's values).
      bins: flow quantisation.
      schedule: the lr schedule (for the logged lr).

    Returns:
      ``step(state, batch, axis_name=None)``, to be jitted or pmapped.
    """
    return functools.partial(
        train_step,
        bins=bins,
        schedule=schedule,
        motion_weight=config.loss.get("motion_weight", 0.0),
        label_sigma=config.loss.get("label_sigma", 0.0),
        epe_weight=config.loss.get("epe_weight", 0.0),
        grad_accum_steps=config.get("grad_accum_steps", 1),
    )


def eval_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    baselines: Mapping[str, jax.Array],
    *,
    bins: FlowBins,
    axis_name: str | None = None,
) -> tuple[dict[str, jax.Array], jax.Array, dict[str, jax.Array]]:
    """Loss and end-point-error sums of the model and of baseline flows on one batch.

    Args:
      state: the training state (BatchNorm in inference mode).
      batch: as for ``train_step``.
      baselines: name -> (B, H, W, 2) baseline flow in pixels (may be empty).
      bins: flow quantisation.
      axis_name: device axis to sum over, or ``None``.

    Returns:
      (sums, flow, image_epe): ``loss_sum`` and ``images`` plus
      ``evaluation.epe_sums`` of the soft-argmax flow (keys ``epe/...``) and of
      each baseline (keys ``epe_<name>/...``), summed over the devices; the
      predicted flow (B, H, W, 2) in pixels; and ``evaluation.image_epe``, the
      mean EPE of each image of this device, (B,), of the model (key ``epe``)
      and of each baseline (``epe_<name>``), not summed.
    """
    logits = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats},
        batch["image"],
        batch["sparse"],
        batch["mask"],
        train=False,
    )
    target = batch["flow"]
    flow = logits_to_flow(logits, bins, target.shape[1:3])
    n = jnp.asarray(target.shape[0], jnp.float32)
    sums = {"loss_sum": discrete_flow_loss(logits, target, bins) * n, "images": n}
    sums.update({f"epe/{k}": v for k, v in evaluation.epe_sums(flow, target).items()})
    image_epe = {"epe": evaluation.image_epe(flow, target)}
    for name, baseline in baselines.items():
        sums.update({f"epe_{name}/{k}": v for k, v in evaluation.epe_sums(baseline, target).items()})
        image_epe[f"epe_{name}"] = evaluation.image_epe(baseline, target)
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    return sums, flow, image_epe


def _check_finite(history: list[Mapping[str, Any]], first_step: int, ckpt: checkpoint.Checkpointer) -> None:
    """Raises ``FloatingPointError`` naming the first step of ``history`` whose loss is not finite.

    Args:
      history: host metrics of consecutive steps, the first being ``first_step``.
      first_step: step number of ``history[0]``.
      ckpt: the checkpointer, to name the last good checkpoint.
    """
    for offset, metrics in enumerate(history):
        loss = float(np.asarray(metrics["loss"]))
        if not math.isfinite(loss):
            last = ckpt.latest_step()
            kept = f"the last good checkpoint (step {last}) is kept" if last is not None else "no checkpoint"
            raise FloatingPointError(
                f"training loss is {loss} at step {first_step + offset}: stopping; {kept} in "
                f"{ckpt.directory}. Lower optim.lr, or check the data for corrupt flow "
                "(data.skip_bad_examples)."
            )


def _create_writer(workdir: pathlib.Path, start: int) -> metric_writers.MetricWriter:
    """TensorBoard + log + ``metrics.jsonl`` (resumed at ``start``) on process 0; log only elsewhere."""
    if jax.process_index() > 0:
        return metric_writers.create_default_writer(workdir, just_logging=True)
    return metric_writers.MultiWriter(
        [
            metric_writers.create_default_writer(workdir),
            JsonlWriter(workdir / "metrics.jsonl", resume_step=start),
        ]
    )


def _new_or_restored_state(
    config: ml_collections.ConfigDict,
    model: Any,
    schedule: Callable[[Any], Any],
    ckpt: checkpoint.Checkpointer,
) -> TrainState:
    """A fresh training state, or the newest good checkpoint's (failed ones moved aside)."""
    state = state_lib.create_train_state(config, model, state_lib.create_optimizer(config, schedule))
    tree, latest = ckpt.restore_newest(state_lib.state_tree(state), move_aside=True)
    if tree is None:
        return state
    logging.info("resumed from %s at step %d", ckpt.step_dir(latest), latest)
    return state_lib.with_tree(state, tree)


def _evaluate(
    state: TrainState,
    evaluator: Evaluator,
    writer: metric_writers.MetricWriter,
    step: int,
    label_prop: Callable[[Mapping[str, Any]], dict[str, float]] | None = None,
) -> tuple[TrainState, dict[str, float]]:
    """Evaluates (after averaging BatchNorm statistics over devices) and writes the metrics.

    Args:
      state: the replicated training state.
      evaluator: the EPE evaluation.
      writer: where the metrics go.
      step: the step they are written at.
      label_prop: ``video_segmentation.training_evaluator``'s score of the
        model variables (``eval/label_prop/...``), or None.

    Returns:
      (the state with averaged statistics, the eval metrics).
    """
    state = state.replace(batch_stats=parallel.mean_over_devices(state.batch_stats))
    metrics, pictures = evaluator(state)
    if label_prop is not None:
        replica = parallel.first_replica(state)
        metrics.update(
            label_prop(jax.device_get({"params": replica.params, "batch_stats": replica.batch_stats}))
        )
    writer.write_scalars(step, metrics)
    if pictures is not None:
        writer.write_images(step, {"eval/pictures": pictures})
    logging.info("eval at step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return state, metrics


def _save(state: TrainState, ckpt: checkpoint.Checkpointer, step: int) -> TrainState:
    """Saves the replicated state (BatchNorm statistics averaged first) unless it holds NaN/inf.

    Returns:
      The state with averaged statistics.

    Raises:
      FloatingPointError: naming the non-finite arrays; nothing is saved.
    """
    state = state.replace(batch_stats=parallel.mean_over_devices(state.batch_stats))
    tree = state_lib.state_tree(parallel.first_replica(state))
    bad = checkpoint.non_finite_arrays(tree)
    if bad:
        raise FloatingPointError(
            f"non-finite values after step {step} in {len(bad)} arrays ({', '.join(bad[:5])}, ...): "
            f"stopping without saving; the last good checkpoint (step {ckpt.latest_step()}) is kept "
            f"in {ckpt.directory}. Lower optim.lr."
        )
    ckpt.save(step, tree)
    return state


class _TrainLog:
    """Collects the per-step metrics between logging steps and writes their means.

    Steps are dispatched without waiting for their results; the losses are
    fetched (and checked for NaN/inf) together at each logging step and before
    a save, which still names the first bad step.
    """

    def __init__(self, start: int, batch_size: int, ckpt: checkpoint.Checkpointer, bad_examples: Any):
        self._batch_size, self._ckpt, self._bad_examples = batch_size, ckpt, bad_examples
        self._history: list[dict[str, jax.Array]] = []
        self._tick, self._tick_step = time.perf_counter(), start

    def append(self, metrics: dict[str, jax.Array]) -> None:
        """Adds one step's (replicated, possibly not yet computed) metrics."""
        self._history.append(metrics)

    def check(self) -> list[dict[str, Any]]:
        """Fetches the pending steps' metrics; raises ``FloatingPointError`` on a non-finite loss."""
        values = jax.device_get([parallel.first_replica(m) for m in self._history])
        _check_finite(values, self._tick_step + 1, self._ckpt)
        return values

    def write(self, writer: metric_writers.MetricWriter, step: int) -> None:
        """Writes the means of the steps since the last write (``train/...``) and starts anew."""
        values = self.check()
        elapsed = time.perf_counter() - self._tick
        steps = step - self._tick_step
        scalars = {f"train/{k}": float(np.mean([v[k] for v in values])) for k in values[0]}
        scalars["train/lr"] = float(values[-1]["lr"])
        scalars["train/steps_per_s"] = steps / elapsed
        scalars["train/images_per_s"] = steps * self._batch_size / elapsed
        scalars["train/bad_examples"] = self._bad_examples.count
        writer.write_scalars(step, scalars)
        self._history, self._tick, self._tick_step = [], time.perf_counter(), step


def _compiled_train_step(p_train: Callable[..., Any], state: TrainState, dataset: Any, config: Any):
    """The pmapped step compiled ahead of time for the dataset's batches, after its memory check.

    Logs XLA's per-device memory plan; raises ``MemoryError`` (from
    ``memory_report.check``) before the first step when a device reports less
    memory than the plan needs. Falls back to the lazily compiled step when the
    batch shapes are not fully known.
    """
    spec = dataset.element_spec
    if any(None in tuple(v.shape) for v in spec.values()):
        return p_train
    batch = {k: jax.ShapeDtypeStruct(tuple(v.shape), v.dtype.as_numpy_dtype) for k, v in spec.items()}
    compiled = p_train.lower(state, batch).compile()
    memory = memory_report.step_memory(compiled, batch["image"].shape[1])
    limit = memory_report.device_limit(jax.local_devices()[0])
    logging.info("%s", memory_report.describe(memory, limit))
    memory_report.check(memory, limit, config, jax.device_count())
    return compiled


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
    """Trains ``config`` in ``workdir``, resuming from its newest good checkpoint if any.

    Args:
      config: the experiment config (``configs/base.py`` documents every field).
      workdir: output directory: ``checkpoints/``, ``config.json``, TensorBoard
        events and ``metrics.jsonl``.

    Returns:
      The metrics of the last evaluation (``eval/loss``, ``eval/epe``,
      ``eval/epe_nearest``, ...); empty when no evaluation ran.
    """
    # Bad values and missing data fail here, before any model is built or file written.
    config_check.validate_config(config)
    pipeline.check_sources(config)
    parallel.maybe_initialize_distributed(config.distributed)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    logging.info(
        "process %d of %d; %d local devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.local_devices(),
    )
    local_batch = parallel.local_batch_size(config.batch_size)
    model, bins = state_lib.build_from_config(config)
    schedule = state_lib.learning_rate_schedule(config)
    ckpt = checkpoint.Checkpointer(workdir / "checkpoints", config.max_to_keep)
    state = _new_or_restored_state(config, model, schedule, ckpt)
    start = int(state.step)
    if jax.process_index() == 0:
        checkpoint.write_config(workdir / "config.json", config)

    writer = _create_writer(workdir, start)
    if start == 0:
        writer.write_hparams({k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str))})
    # One count of skipped bad examples over both pipelines (an example read by both counts once).
    bad_examples = pipeline.BadExampleCounter()
    evaluator = Evaluator(config, functools.partial(eval_step, bins=bins), counter=bad_examples)
    label_prop = video_segmentation.training_evaluator(config, model)
    train_ds, _ = pipeline.create_from_config(
        config, "train", local_batch=local_batch, start_step=start, counter=bad_examples
    )
    p_train = parallel.pmap_step(configured_train_step(config, bins, schedule))
    state = parallel.replicate(state)
    p_train = _compiled_train_step(p_train, state, train_ds, config)
    eval_metrics: dict[str, float] = {}
    try:
        if start == 0 and config.eval_at_start:
            state, eval_metrics = _evaluate(state, evaluator, writer, 0, label_prop)
        total = config.num_train_steps
        progress = periodic_actions.ReportProgress(num_train_steps=total, every_secs=60.0)
        log = _TrainLog(start, config.batch_size, ckpt, bad_examples)
        batches: Iterable[dict[str, np.ndarray]] = pipeline.numpy_batches(train_ds)
        for step, batch in zip(range(start + 1, total + 1), batches, strict=False):
            ckpt.poll()  # a failed asynchronous save stops training here
            state, metrics = p_train(state, batch)
            log.append(metrics)
            progress(step, time.perf_counter())
            last = step == total
            if step % config.log_every_steps == 0 or last:
                log.write(writer, step)
            if (config.eval_every_steps and step % config.eval_every_steps == 0) or last:
                state, eval_metrics = _evaluate(state, evaluator, writer, step, label_prop)
            if step % config.checkpoint_every_steps == 0 or last:
                log.check()
                state = _save(state, ckpt, step)
        if eval_metrics:  # the last evaluation is the final one (at step total, or 0 without steps)
            evaluation.report_summary(writer, max(start, total), eval_metrics)
    finally:  # pending checkpoint writes complete even when training stops on an error
        ckpt.close()
        writer.close()
    return eval_metrics
