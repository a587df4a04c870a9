"""Orbax checkpoints of the training state in ``workdir/checkpoints``.

A thin wrapper over Orbax's ``CheckpointManager`` (V0 API, ``StandardSave`` /
``StandardRestore``), so that a later move to another Orbax API stays local.
A checkpoint holds one pytree of host arrays::

    {"step": (), "params": {...}, "batch_stats": {...}, "opt_state": (...), "rng": (2,) uint32}

Orbax writes each step into a temporary directory and renames it when complete,
so a process killed while saving leaves the previous checkpoints intact and the
partial one is never listed (``latest_step`` ignores it).

Restoring checks every array's shape against the target built from the config
first (Orbax alone would silently load the stored shapes) and names the
mismatching parameters.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointShapeError(ValueError):
    """A checkpoint's arrays do not have the shapes the config's model needs."""


def key_name(path: tuple[Any, ...]) -> str:
    """``params/image_encoder/conv1/kernel`` from a pytree key path."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    return {
        key_name(path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if hasattr(leaf, "shape")
    }


def check_tree(expected: Any, given: Any, what: str, allow_unexpected: bool = False) -> None:
    """Compares two pytrees of arrays (or array metadata) by key path and shape.

    Args:
      expected: the tree the config's model needs.
      given: the tree found (a checkpoint's metadata, converted variables).
      what: names ``given`` in the error message.
      allow_unexpected: accept arrays of ``given`` that ``expected`` lacks.

    Raises:
      CheckpointShapeError: listing every missing, unexpected or mis-shaped
        array by its path (``params/flow_decoder/head/kernel``).
    """
    want, have = _shapes(expected), _shapes(given)
    problems = [f"{name}: missing from {what}" for name in want if name not in have]
    problems += [
        f"{name}: {what} has {have[name]}, the config's model needs {shape}"
        for name, shape in want.items()
        if name in have and have[name] != shape
    ]
    if not allow_unexpected:
        problems += [f"{name}: unexpected in {what}" for name in have if name not in want]
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CheckpointShapeError(
            f"{what} does not match the config's model ({len(problems)} arrays):\n  {shown}{more}"
        )


class Checkpointer:
    """Saves and restores training-state pytrees under one directory.

    Args:
      directory: where the step directories go (``workdir/checkpoints``).
      max_to_keep: newest checkpoints kept; older ones are deleted.
    """

    def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 3):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = pathlib.Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_handlers=ocp.StandardCheckpointHandler(),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or ``None`` when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of all complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any) -> None:
        """Writes ``tree`` (host arrays) as the checkpoint of ``step``; asynchronous.

        Every process of a multi-process run must call it (Orbax synchronises them).
        """
        tree = jax.tree.map(np.asarray, tree)
        self._manager.save(step, args=ocp.args.StandardSave(tree))

    def restore(self, step: int, target: Any) -> Any:
        """Reads the checkpoint of ``step`` into the structure of ``target``.

        Args:
          step: a step of ``all_steps()``.
          target: a pytree of arrays with the expected structure, shapes and dtypes.

        Returns:
          The restored tree (NumPy arrays), with ``target``'s structure.

        Raises:
          CheckpointShapeError: naming every array whose stored shape differs
            from the target's, or that is missing from the checkpoint.
        """
        target = jax.tree.map(np.asarray, target)
        stored = self._manager.item_metadata(step)
        stored = getattr(stored, "tree", stored)
        if stored is None:
            raise ValueError(f"checkpoint {self.directory / str(step)} has no readable metadata")
        check_tree(target, stored, f"checkpoint {self.directory / str(step)}", allow_unexpected=True)
        return self._manager.restore(step, args=ocp.args.StandardRestore(target))

    def wait_until_finished(self) -> None:
        """Blocks until pending asynchronous saves are written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases Orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()


def write_config(path: str | pathlib.Path, config: Any) -> None:
    """Writes an ml_collections config as indented JSON (tuples become lists)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
