"""Orbax checkpoints of the training state in ``workdir/checkpoints``, verified on restore.

A thin wrapper over Orbax's ``CheckpointManager`` (V0 API, ``StandardSave`` /
``StandardRestore``), so that a later move to another Orbax API stays local.
A checkpoint holds one pytree of host arrays::

    {"step": (), "params": {...}, "batch_stats": {...}, "opt_state": (...), "rng": (2,) uint32}

Orbax writes each step into a temporary directory and renames it when complete,
so a process killed while saving leaves the previous checkpoints intact and the
partial one is never listed (``latest_step`` ignores it).

Trust:

* Once a save has completed, the first process writes ``cmp_manifest.json``
  into its step directory: the size and CRC-32 of every file. Restoring checks
  the files against it (missing, truncated, changed bytes), restores, and
  checks every floating array for NaN and infinity. A checkpoint without a
  manifest (saved by an older cmp-jax, or the run stopped between the save and
  its manifest) is restored with a warning and the finiteness check only.
* Restoring first compares the stored tree with the target built from the
  config, by key path and shape (Orbax alone would load the stored shapes, or
  fail on a different structure with its own message), and names every
  missing, unexpected or mis-shaped array.
* ``restore_newest`` falls back from a checkpoint that fails to the next newest,
  saying which and why; in training it moves the failed one aside to
  ``checkpoints.corrupt/`` (never deletes it).
* A failed asynchronous save is noticed by ``poll``, which the training loop
  calls before every step, and raised as one ``CheckpointSaveError`` naming the
  directory and the cause; Orbax's own error logs of the failure are held back.
"""

from __future__ import annotations

import functools
import json
import logging as py_logging
import pathlib
import shutil
import sys
import zlib
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

# File written into each complete step directory: sizes and CRC-32s of its files.
MANIFEST = "cmp_manifest.json"
_MANIFEST_FORMAT = 1
# Read and checksum files in chunks of this many bytes.
_CHUNK = 1 << 24


class CheckpointShapeError(ValueError):
    """A checkpoint's arrays do not have the structure or shapes the config's model needs."""


class CheckpointCorruptError(ValueError):
    """A checkpoint cannot be trusted: unreadable, truncated, changed on disk or non-finite.

    Attributes:
      path: the step directory.
      reason: what failed, in words.
    """

    def __init__(self, path: pathlib.Path, reason: str):
        super().__init__(f"checkpoint {path} is unusable: {reason}")
        self.path = path
        self.reason = reason


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (disk full, permissions, ...)."""


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


def indented_list(items: list[str], limit: int = 20) -> str:
    """``items`` one per indented line (after a newline), at most ``limit`` and a count of the rest."""
    more = [f"... and {len(items) - limit} more"] if len(items) > limit else []
    return "".join(f"\n  {item}" for item in items[:limit] + more)


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
        raise CheckpointShapeError(
            f"{what} does not match the config's model ({len(problems)} arrays; a different "
            f"backbone, decoder or number of bins?):{indented_list(problems)}"
        )


def non_finite_arrays(tree: Any) -> list[str]:
    """Key paths of the floating arrays of ``tree`` that hold NaN or infinity."""
    return [
        key_name(path)
        for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.all(np.isfinite(x))
    ]


def _files(step_dir: pathlib.Path) -> Iterator[pathlib.Path]:
    for path in sorted(step_dir.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            yield path


def _crc32(path: pathlib.Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def write_manifest(step_dir: pathlib.Path) -> None:
    """Writes ``MANIFEST`` (size and CRC-32 of every file) into a complete step directory."""
    files = {
        str(p.relative_to(step_dir)): {"bytes": p.stat().st_size, "crc32": _crc32(p)}
        for p in _files(step_dir)
    }
    tmp = step_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"format": _MANIFEST_FORMAT, "files": files}, indent=1, sort_keys=True) + "\n")
    tmp.replace(step_dir / MANIFEST)


def verify_files(step_dir: pathlib.Path) -> bool:
    """Checks a step directory's files against its manifest.

    Returns:
      True when verified, False when the directory has no manifest.

    Raises:
      CheckpointCorruptError: a file is missing, has another size or other bytes,
        or the manifest is unreadable.
    """
    path = step_dir / MANIFEST
    if not path.exists():
        return False
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointCorruptError(step_dir, f"its manifest {MANIFEST} is unreadable ({e})") from None
    for name, want in files.items():
        file = step_dir / name
        if not file.is_file():
            raise CheckpointCorruptError(step_dir, f"file {name} is missing")
        size = file.stat().st_size
        if size != want["bytes"]:
            raise CheckpointCorruptError(
                step_dir,
                f"file {name} has {size} bytes, {want['bytes']} were written (truncated or overwritten)",
            )
        if _crc32(file) != want["crc32"]:
            raise CheckpointCorruptError(
                step_dir, f"file {name} has changed on disk since it was written (CRC-32)"
            )
    return True


def _cause(error: BaseException) -> str:
    """The innermost message of an exception chain, on one line."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 1000 else text[:1000] + " ..."


class _HoldOrbaxErrors(py_logging.Filter):
    """Drops Orbax's ERROR records while a save is pending (a failed save logs a traceback per thread).

    The failure itself reaches the user as ``CheckpointSaveError``.
    """

    def __init__(self, checkpointer: Checkpointer):
        super().__init__()
        self._checkpointer = checkpointer

    def filter(self, record: py_logging.LogRecord) -> bool:
        saving = self._checkpointer._pending is not None or self._checkpointer._failed
        return not (saving and record.levelno >= py_logging.ERROR and "orbax" in record.pathname)


def _quiet_closed_loop_hook(unraisable: Any, previous: Any) -> None:
    """``sys.unraisablehook`` that drops "Event loop is closed" from Orbax's writers.

    After a failed asynchronous save Orbax closes its event loop while
    TensorStore still completes the other writes; each completion reports this
    error as unraisable, one traceback per array. The failure itself is raised
    once, as ``CheckpointSaveError``. Everything else goes to the previous hook.
    """
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    previous(unraisable)


class Checkpointer:
    """Saves and restores training-state pytrees under one directory, verified.

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
        self._pending: int | None = None
        self._failed = False
        self._held = _HoldOrbaxErrors(self)
        if not isinstance(sys.unraisablehook, functools.partial) or (
            sys.unraisablehook.func is not _quiet_closed_loop_hook
        ):
            sys.unraisablehook = functools.partial(_quiet_closed_loop_hook, previous=sys.unraisablehook)
        py_logging.getLogger("absl").addFilter(self._held)

    def step_dir(self, step: int) -> pathlib.Path:
        """The directory of the checkpoint of ``step``."""
        return self.directory / str(step)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or ``None`` when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of all complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any) -> None:
        """Writes ``tree`` (host arrays) as the checkpoint of ``step``; asynchronous.

        Waits for the previous save first. Every process of a multi-process run
        must call it (Orbax synchronises them).

        Raises:
          CheckpointSaveError: the previous save failed.
        """
        self._finish()
        tree = jax.tree.map(np.asarray, tree)
        try:
            self._manager.save(step, args=ocp.args.StandardSave(tree))
        except Exception as e:
            self._raise_save_error(step, e)
        self._pending = step

    def poll(self) -> None:
        """Finishes a completed asynchronous save (its manifest); cheap when none is pending.

        Raises:
          CheckpointSaveError: the save failed, naming the directory and the cause.
        """
        if self._pending is not None and not self._manager.is_saving_in_progress():
            self._finish()

    def _finish(self) -> None:
        step = self._pending
        if step is None:
            return
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            self._raise_save_error(step, e)
        finally:
            self._pending = None
        if jax.process_index() == 0 and self.step_dir(step).is_dir():
            write_manifest(self.step_dir(step))

    def _raise_save_error(self, step: int, error: BaseException) -> None:
        self._failed = True
        cause = _cause(error)
        previous = [s for s in self.all_steps() if s != step]
        kept = (
            f"the newest complete checkpoint is step {previous[-1]}"
            if previous
            else "no checkpoint is complete"
        )
        raise CheckpointSaveError(
            f"saving the checkpoint of step {step} into {self.directory} failed: {cause}\n"
            f"Training stopped; {kept}. Free disk space (or fix the directory's permissions) "
            "and run the same command again to resume."
        ) from None

    def restore(self, step: int, target: Any) -> Any:
        """Reads and verifies the checkpoint of ``step`` into the structure of ``target``.

        Args:
          step: a step of ``all_steps()``.
          target: a pytree of arrays with the expected structure, shapes and dtypes.

        Returns:
          The restored tree (NumPy arrays), with ``target``'s structure.

        Raises:
          CheckpointShapeError: naming every array whose stored shape differs
            from the target's, or that is missing or unexpected.
          CheckpointCorruptError: the files differ from the manifest, Orbax
            cannot read them, or an array holds NaN or infinity.
        """
        step_dir = self.step_dir(step)
        verified = verify_files(step_dir)
        if not verified:
            logging.warning(
                "checkpoint %s has no %s (saved by an older cmp-jax, or the run stopped right after "
                "saving): its files are not verified, only its values' finiteness",
                step_dir,
                MANIFEST,
            )
        target = jax.tree.map(np.asarray, target)
        try:
            stored = self._manager.item_metadata(step)
        except Exception as e:
            raise CheckpointCorruptError(step_dir, f"its metadata is unreadable ({_cause(e)})") from None
        stored = getattr(stored, "tree", stored)
        if stored is None:
            raise CheckpointCorruptError(step_dir, "it has no readable metadata")
        check_tree(target, stored, f"checkpoint {step_dir}")
        try:
            tree = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:
            raise CheckpointCorruptError(step_dir, f"Orbax cannot read it ({_cause(e)})") from None
        bad = non_finite_arrays(tree)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise CheckpointCorruptError(step_dir, f"NaN or infinite values in {len(bad)} arrays ({shown})")
        return tree

    def restore_newest(self, target: Any, move_aside: bool = False) -> tuple[Any, int] | tuple[None, None]:
        """Restores the newest checkpoint that passes ``restore``'s checks.

        Each one that fails is reported (path and reason) and, with
        ``move_aside``, moved to ``<directory>.corrupt/<step>``; the next newest
        is tried.

        Args:
          target: as for ``restore``.
          move_aside: move failed checkpoints out of the directory (training);
            readers leave the workdir as it is.

        Returns:
          (tree, step), or (None, None) when there is no checkpoint.

        Raises:
          CheckpointShapeError: the newest checkpoint does not fit ``target``
            (a configuration mismatch: no fallback).
          CheckpointCorruptError: every checkpoint failed; names each.
        """
        failures = []
        for step in reversed(self.all_steps()):
            try:
                tree = self.restore(step, target)
            except CheckpointCorruptError as e:
                failures.append(str(e))
                where = self._move_aside(step) if move_aside else None
                logging.error("%s%s; trying the previous one", e, f" (moved to {where})" if where else "")
                continue
            if failures:
                logging.warning("falling back to checkpoint %s", self.step_dir(step))
            return tree, step
        if failures:
            raise CheckpointCorruptError(
                self.directory, "no checkpoint passed the checks:\n  " + "\n  ".join(failures)
            )
        return None, None

    def _move_aside(self, step: int) -> pathlib.Path | None:
        if jax.process_index() != 0:
            return None
        aside = self.directory.parent / f"{self.directory.name}.corrupt"
        aside.mkdir(exist_ok=True)
        dest, n = aside / str(step), 1
        while dest.exists():
            dest, n = aside / f"{step}-{n}", n + 1
        shutil.move(str(self.step_dir(step)), dest)
        self._manager.reload()
        return dest

    def wait_until_finished(self) -> None:
        """Blocks until pending asynchronous saves are written and their manifests too.

        Raises:
          CheckpointSaveError: a pending save failed.
        """
        self._finish()

    def close(self) -> None:
        """Waits for pending saves and releases Orbax's resources.

        Raises:
          CheckpointSaveError: a pending save failed (not raised again once reported).
        """
        try:
            if not self._failed:
                self._finish()
        finally:
            try:
                self._manager.close()
            except Exception:
                if not self._failed:
                    raise
            py_logging.getLogger("absl").removeFilter(self._held)


def write_config(path: str | pathlib.Path, config: Any) -> None:
    """Writes an ml_collections config as indented JSON (tuples become lists)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
