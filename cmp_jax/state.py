"""The training state, its optimiser, and reading and writing it in a workdir.

This module holds what training, conversion and inference share and imports
no TensorFlow: ``TrainState``, the original's SGD with step decay, parameter
initialisation, and ``load_variables`` / ``save_variables``, which read the
model variables of a workdir's checkpoint or write given variables as a
checkpoint that ``train_and_evaluate`` resumes from and ``Predictor`` loads.

A workdir holds ``config.json`` (the experiment config) and
``checkpoints/<step>/`` (Orbax; see ``cmp_jax.checkpoint``).

The optimiser is the original's: SGD with momentum 0.9 and weight decay 1e-4
added to the gradient of every parameter (PyTorch's coupling), lr 0.1 times
0.1 for every milestone of ``optim.lr_steps`` reached (lr of step i, 0-based:
``lr * decay ** #{s in lr_steps: s <= i}``).
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from cmp_jax import checkpoint, parallel
from cmp_jax.flow import FlowBins
from cmp_jax.models import CMP, build_model
from input_pipeline import image_ops


class TrainState(train_state.TrainState):
    """Parameters, optimiser state and step (``flax.training``) plus BatchNorm statistics and RNG.

    Attributes:
      batch_stats: BatchNorm running means and variances.
      rng: (2,) uint32 base key; the dropout key of a step is derived from it and
        the step number (and the device), so resuming draws the same numbers.
    """

    batch_stats: Any
    rng: jax.Array


def learning_rate_schedule(config: ml_collections.ConfigDict) -> Callable[[Any], Any]:
    """The lr of a (0-based) step: optional linear warm-up, then step decay or cosine.

    ``optim.schedule = "step"`` (the original): ``lr * lr_decay ** (number of
    lr_steps <= step)``; ``optim.lr_steps = ()`` means 2/3.5 and 3/3.5 of
    ``num_train_steps``, rounded. ``"cosine"``: ``lr * 0.5 * (1 + cos(pi * t))``
    with t going from 0 after the warm-up to 1 at ``num_train_steps``.
    ``optim.warmup_steps = n > 0`` multiplies the first n steps' lr by
    ``(step + 1) / n``.
    """
    kind = config.optim.get("schedule", "step")
    warmup = int(config.optim.get("warmup_steps", 0))
    if kind not in ("step", "cosine"):
        raise ValueError(f'optim.schedule must be "step" or "cosine", got {kind!r}')
    if warmup < 0:
        raise ValueError(f"optim.warmup_steps must be >= 0, got {warmup}")
    steps = tuple(config.optim.lr_steps) or tuple(
        round(config.num_train_steps * f) for f in (2 / 3.5, 3 / 3.5)
    )
    if kind == "step" and any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(f"optim.lr_steps must increase, got {steps}")
    base, decay = float(config.optim.lr), float(config.optim.lr_decay)
    boundaries = jnp.asarray(steps, jnp.int32)
    cosine_steps = max(int(config.num_train_steps) - warmup, 1)

    def schedule(step):
        step = jnp.asarray(step, jnp.int32)
        if kind == "step":
            lr = base * decay ** jnp.sum(step >= boundaries).astype(jnp.float32)
        else:
            t = jnp.clip((step - warmup).astype(jnp.float32) / cosine_steps, 0.0, 1.0)
            lr = base * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
        if warmup:
            lr = lr * jnp.minimum(1.0, (step + 1).astype(jnp.float32) / warmup)
        return lr

    return schedule


def create_optimizer(
    config: ml_collections.ConfigDict, schedule: Callable[[Any], Any]
) -> optax.GradientTransformation:
    """SGD as PyTorch's ``SGD(lr, momentum, weight_decay)``: decay added to the gradient first."""
    return optax.chain(
        optax.add_decayed_weights(config.optim.weight_decay),
        optax.sgd(schedule, momentum=config.optim.momentum),
    )


def build_from_config(config: ml_collections.ConfigDict) -> tuple[CMP, FlowBins]:
    """The model (BatchNorm synchronised over devices when ``sync_batchnorm``) and the flow bins."""
    axis = parallel.AXIS_NAME if config.sync_batchnorm else None
    model = build_model(config.model, num_bins=config.flow.num_bins, bn_axis_name=axis)
    return model, FlowBins(num_bins=config.flow.num_bins, fmax=config.flow.fmax)


def create_train_state(
    config: ml_collections.ConfigDict, model: CMP, tx: optax.GradientTransformation
) -> TrainState:
    """Initialises parameters (seeded by ``config.seed``) for the configured crop size.

    The model is initialised without BatchNorm synchronisation (outside pmap),
    which does not change any parameter.
    """
    h, w = image_ops.crop_size(config.data.crop_size)
    model.clone(bn_axis_name=None).check_size(h, w)
    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    image = jnp.zeros((1, h, w, 3), jnp.float32)
    guide = jnp.zeros((1, h, w, 2), jnp.float32)

    @jax.jit
    def init(key):
        return model.clone(bn_axis_name=None).init({"params": key, "dropout": key}, image, guide, guide)

    variables = init(init_key)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
        rng=state_key,
    )


def state_tree(state: TrainState) -> dict[str, Any]:
    """The checkpointed part of a state: step, params, batch_stats, opt_state, rng."""
    return {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "rng": state.rng,
    }


def with_tree(state: TrainState, tree: Mapping[str, Any]) -> TrainState:
    """``state`` with the fields of a restored ``state_tree``."""
    return state.replace(
        step=jnp.asarray(tree["step"]),
        params=tree["params"],
        batch_stats=tree["batch_stats"],
        opt_state=tree["opt_state"],
        rng=jnp.asarray(tree["rng"]),
    )


def read_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """The experiment config that training wrote to ``workdir/config.json``."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {workdir} a cmp-jax workdir (written by main.py)?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def _template(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Zero-filled host arrays with the structure and shapes of ``state_tree`` for ``config``."""
    model, _ = build_from_config(config)
    tx = create_optimizer(config, learning_rate_schedule(config))
    abstract = jax.eval_shape(lambda: state_tree(create_train_state(config, model, tx)))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)


def load_variables(
    workdir: str | pathlib.Path, step: int | None = None
) -> tuple[ml_collections.ConfigDict, dict[str, Any], int]:
    """Reads the model variables of a workdir's checkpoint.

    Args:
      workdir: a training workdir (``config.json`` and ``checkpoints/``).
      step: the checkpoint to read; ``None`` for the newest.

    Returns:
      (config, variables, step): the experiment config, ``{"params": ...,
      "batch_stats": ...}`` as host NumPy arrays, and the step read.

    Every checkpoint read is verified (``checkpoint.Checkpointer.restore``);
    without ``step``, one that fails is reported and the next newest is read.
    The workdir is not modified.

    Raises:
      FileNotFoundError: no config, no checkpoint, or no checkpoint of ``step``.
      checkpoint.CheckpointShapeError: the checkpoint does not fit the config's model.
      checkpoint.CheckpointCorruptError: the checkpoint of ``step`` (or, without
        ``step``, every checkpoint) fails verification.
    """
    workdir = pathlib.Path(workdir)
    config = read_config(workdir)
    ckpt = checkpoint.Checkpointer(workdir / "checkpoints", config.get("max_to_keep", 3))
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
        if step is None:
            tree, step = ckpt.restore_newest(_template(config))
        elif step not in steps:
            raise FileNotFoundError(f"no checkpoint of step {step} in {ckpt.directory}; there are {steps}")
        else:
            tree = ckpt.restore(step, _template(config))
    finally:
        ckpt.close()
    return config, {"params": tree["params"], "batch_stats": tree["batch_stats"]}, int(step)


def save_variables(
    workdir: str | pathlib.Path, config: ml_collections.ConfigDict, variables: Mapping[str, Any], step: int
) -> pathlib.Path:
    """Writes model variables as the workdir checkpoint of ``step`` (plus ``config.json``).

    The checkpoint is a full training state: the optimiser state is freshly
    initialised (zero momentum) and the RNG comes from ``config.seed``, so
    ``main.py`` with this workdir continues training from ``step`` and
    ``Predictor.from_workdir`` loads it.

    Args:
      workdir: output directory (created).
      config: the experiment config whose model the variables belong to.
      variables: ``{"params": ..., "batch_stats": ...}``.
      step: the step to record.

    Returns:
      The checkpoint directory written.

    Raises:
      checkpoint.CheckpointShapeError: naming every array whose structure or
        shape differs from the config's model (missing, unexpected, mis-shaped).
    """
    workdir = pathlib.Path(workdir)
    template = _template(config)
    checkpoint.check_tree(
        {"params": template["params"], "batch_stats": template["batch_stats"]},
        {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})},
        what=f"the variables for {workdir}",
    )
    as_float32 = functools.partial(jax.tree.map, lambda x: np.asarray(x, np.float32))
    params = as_float32(dict(variables["params"]))
    tx = create_optimizer(config, learning_rate_schedule(config))
    _, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    tree = {
        "step": np.asarray(step, template["step"].dtype),
        "params": params,
        "batch_stats": as_float32(dict(variables.get("batch_stats", {}))),
        "opt_state": jax.tree.map(np.asarray, tx.init(params)),
        "rng": np.asarray(state_key),
    }
    checkpoint.write_config(workdir / "config.json", config)
    ckpt = checkpoint.Checkpointer(workdir / "checkpoints", config.get("max_to_keep", 3))
    try:
        ckpt.save(step, tree)
    finally:
        ckpt.close()
    return ckpt.directory / str(step)
