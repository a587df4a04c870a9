"""Devices and processes: every ``pmap`` detail of the training loop lives here.

The step functions in ``cmp_jax.train`` are pure and know nothing of devices:
they take an optional ``axis_name`` and, when it is given, average gradients
and metrics with ``lax.pmean``/``lax.psum`` over it. This module wraps them in
``jax.pmap`` over the local devices (with JAX's multi-process runtime, the
collectives span every device of every process), replicates the training state
onto the devices, averages per-device BatchNorm statistics, fetches values back
to the host and initialises ``jax.distributed`` for multi-process runs.

Layouts: a replicated tree has a leading axis of length ``jax.local_device_count()``
on every leaf; a batch from the input pipeline is already shaped
(local_devices, per_device_batch, ...) and is passed to the pmapped step as is.

Only current JAX idioms: the state is replicated with ``jax.device_put`` onto a
``NamedSharding`` over the local devices (what ``flax.jax_utils.replicate``
does); no ``device_put_replicated``/``device_put_sharded``/``PmapSharding``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

AXIS_NAME = "devices"

# Environment variables that a multi-process launcher sets and that
# ``jax.distributed.initialize()`` reads (its own, SLURM's and Open MPI's).
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri")


def maybe_initialize_distributed(setting: str) -> bool:
    """Starts JAX's multi-process runtime when the run is launched on several processes.

    Must run before any other JAX call that touches devices.

    Args:
      setting: ``config.distributed``: ``"on"`` (always initialise), ``"off"``
        (never) or ``"auto"`` (when one of the launcher variables
        ``JAX_COORDINATOR_ADDRESS``, ``SLURM_JOB_ID``, ``OMPI_MCA_orte_hnp_uri``
        is set). ``jax.distributed.initialize()`` reads the coordinator address,
        process count and process id from that environment (or, for plain
        launches, ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
        ``JAX_PROCESS_ID``).

    Returns:
      Whether ``jax.distributed.initialize()`` was called.
    """
    if setting not in ("on", "off", "auto"):
        raise ValueError(f"config.distributed must be 'on', 'off' or 'auto', got {setting!r}")
    if setting == "off" or (setting == "auto" and not any(os.environ.get(n) for n in _DISTRIBUTED_ENV)):
        return False
    kwargs = {}
    if "JAX_NUM_PROCESSES" in os.environ:
        kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    if "JAX_PROCESS_ID" in os.environ:
        kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    logging.info("jax.distributed initialised: process %d of %d", jax.process_index(), jax.process_count())
    return True


def local_batch_size(global_batch: int, what: str = "batch_size") -> int:
    """This process's share of a global batch.

    Args:
      global_batch: examples per step over all devices of all processes.
      what: the config field, for the error message.

    Returns:
      ``global_batch / process_count``; it is also a multiple of the local
      device count.

    Raises:
      ValueError: when the global batch does not split evenly over the devices.
    """
    devices = jax.local_device_count()
    processes = jax.process_count()
    if global_batch < 1 or global_batch % (devices * processes):
        raise ValueError(
            f"config.{what}={global_batch} does not divide over {devices} local devices x "
            f"{processes} processes; use a multiple of {devices * processes}"
        )
    return global_batch // processes


def replicate(tree: Any) -> Any:
    """Copies every leaf onto each local device, stacked on a new leading axis."""
    devices = jax.local_devices()
    sharding = jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.array(devices), (AXIS_NAME,)), jax.P(AXIS_NAME)
    )

    def put(x):
        x = np.asarray(x)
        return jax.device_put(np.broadcast_to(x, (len(devices), *x.shape)), sharding)

    return jax.tree.map(put, tree)


def first_replica(tree: Any) -> Any:
    """The first device's copy of a replicated tree, as host NumPy arrays."""

    def take(x):
        if isinstance(x, jax.Array) and len(x.addressable_shards) > 1:
            return np.asarray(x.addressable_shards[0].data)[0]
        return np.asarray(x)[0]

    return jax.tree.map(take, tree)


def pmap_step(step_fn: Callable[..., Any], donate_state: bool = True) -> Callable[..., Any]:
    """``jax.pmap`` of a step ``fn(state, batch, ..., axis_name=None)`` over the local devices.

    Args:
      step_fn: a pure step function taking ``axis_name`` as a keyword; every
        positional argument is mapped over its leading (device) axis.
      donate_state: donate the first argument's buffers (the old state).

    Returns:
      The pmapped function; its outputs keep the leading device axis.
    """
    return jax.pmap(
        functools.partial(step_fn, axis_name=AXIS_NAME),
        axis_name=AXIS_NAME,
        donate_argnums=(0,) if donate_state else (),
    )


@functools.partial(jax.pmap, axis_name=AXIS_NAME)
def _mean_over_devices(tree: Any) -> Any:
    return jax.lax.pmean(tree, AXIS_NAME)


def mean_over_devices(tree: Any) -> Any:
    """Averages a replicated tree of float arrays over all devices (of all processes).

    Used for the per-device BatchNorm running statistics before evaluation and
    checkpoints, so that every device (and the checkpoint) holds the same
    estimate. The result stays replicated; an empty tree is returned as is.
    """
    return _mean_over_devices(tree) if jax.tree.leaves(tree) else tree
