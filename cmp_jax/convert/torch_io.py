"""PyTorch files from cmp-jax workdirs and back: export formats, safe loading, import.

Export formats (``export_workdir``):

``original``
  The whole model in the original repository's checkpoint layout,
  ``{"step": N, "state_dict": OrderedDict}`` with keys ``module.image_encoder.*``,
  ``module.flow_encoder.*``, ``module.flow_decoder.*`` (the ``module.`` of its
  ``DistModule`` wrapper), BatchNorm ``running_mean``/``running_var`` and
  ``num_batches_tracked`` (below). Code written for the original loads it
  strictly into its ``nn.DataParallel``-wrapped model, and so does
  ``nn.DataParallel(cmp_jax.torch_models.CMP(...))``. There is no
  ``optimizer`` entry: the original's ``--load-path`` (weights only) reads it,
  its ``--resume`` does not.
``encoder``
  The image encoder for fine-tuning. ResNet: ``OUT`` holds the trunk with
  torchvision's key names, which loads with ``strict=True`` into
  ``torchvision.models.resnet<depth>()`` whose ``fc`` is ``nn.Identity()``;
  the 2048 -> 256 ``conv5`` head goes to ``<OUT stem>_conv5<OUT suffix>``
  (keys ``weight`` (256, 2048, 1, 1) and ``bias``, for ``nn.Conv2d(2048, 256, 1)``).
  The dilation is not part of the weights: apply
  ``cmp_jax.torch_models.apply_cmp_dilation(net, output_stride)`` for the
  trunk the model was trained with (``model.dilation_style = "torchvision"``
  at output stride 8: build ``resnet50(replace_stride_with_dilation=[False,
  True, True])`` instead). BN-AlexNet: ``OUT`` holds the state dict
  of ``cmp_jax.torch_models.AlexNetBNFCN`` (conv8 included); no second file.

``num_batches_tracked`` (a BatchNorm's count of training forward passes, not
a parameter) has no place in the Flax variables. ``import_checkpoint`` keeps
the file's values in ``TRACKED_FILE`` in the workdir, beside ``config.json``,
with the step it recorded; the checkpoint and the training state are unchanged.
An export at step N writes each layer's recorded value plus the steps trained
since the import (N minus the recorded step: training runs every BatchNorm
once a step, as PyTorch counts), so an export at the imported step gives the
file's values back exactly. Layers without a recorded value, and workdirs
without the file (trained from scratch, or imported from a file without
``num_batches_tracked`` such as the released demo model), get N.

All tensors are float32 (``num_batches_tracked`` int64) on the CPU, NCHW/OIHW.
Files are read with ``torch.load(weights_only=True)``: a pickle that would run
code is refused (``UnsafeCheckpointError``), and so are weights that are NaN or
infinite (``unwrap_checkpoint``).
"""

from __future__ import annotations

import collections
import io
import json
import pathlib
import pickle
import pickletools
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch

from cmp_jax import checkpoint, state
from cmp_jax.convert import torch_layout
from input_pipeline import image_ops

FORMATS = ("encoder", "original")
MODULE_PREFIX = "module."

TRACKED_FILE = "num_batches_tracked.json"
"""Name of the workdir file of imported ``num_batches_tracked`` values (module docstring):
``{"step": S, "num_batches_tracked": {PyTorch key without "module.": count}}``."""


class UnsafeCheckpointError(ValueError):
    """A PyTorch file holds pickled objects other than tensors and plain containers."""


_RESAVE = (
    "Only weights are read: from a source you trust, save the state dict alone "
    "(torch.save(model.state_dict(), PATH))."
)
# Pickles at the start of a legacy (pre-zip) ``torch.save`` file: magic number, protocol version,
# system info, the object, the storage keys; raw storage bytes follow.
_LEGACY_PICKLES = 5


def load_torch_file(path: str | pathlib.Path) -> Any:
    """Reads a PyTorch file with ``torch.load(map_location="cpu", weights_only=True)``.

    Refusals are decided by what the file holds, not by PyTorch's message text,
    and PyTorch's message (which advises loading unsafely) is never passed on.
    A TorchScript archive is refused before loading. A file whose pickle parses
    (read statically with ``pickletools``) but which ``weights_only`` loading
    rejects holds Python objects beyond tensors: it is refused, naming them
    where ``torch.serialization.get_unsafe_globals_in_checkpoint`` lists them
    (zip-format files).

    Args:
      path: a ``.pth`` / ``.pth.tar`` file written by ``torch.save``.

    Returns:
      The unpickled object (dicts, lists, numbers, strings and tensors only).

    Raises:
      FileNotFoundError: no such file.
      UnsafeCheckpointError: the file holds objects other than tensors and
        plain containers (code), or is a TorchScript archive.
      ValueError: not a file ``torch.load`` reads.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PyTorch file {path}")
    if _is_torchscript(path):
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it is a TorchScript archive, a program and not only tensors; "
            f"cmp-jax will not execute it. {_RESAVE}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not _pickles_parse(path):
            raise ValueError(
                f"{path} is not a PyTorch file torch.load can read: its pickle data is malformed"
            ) from None
        objects = _unsafe_globals(path)
        named = f" ({', '.join(sorted(objects))})" if objects else ""
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it contains Python objects beyond tensors and plain "
            f"containers{named}, which unpickling would create by running code; cmp-jax will not "
            f"execute them. {_RESAVE}"
        ) from None
    except (EOFError, KeyError, RuntimeError) as e:
        raise ValueError(f"{path} is not a PyTorch file torch.load can read ({type(e).__name__}: {e})") from e


def _is_torchscript(path: pathlib.Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip whose record folder holds ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.count("/") == 1 and name.endswith("/constants.pkl") for name in archive.namelist())


def _pickles_parse(path: pathlib.Path) -> bool:
    """Whether the pickle data of a ``torch.save`` file parses, read statically (nothing runs).

    Zip format: the archive's ``data.pkl`` must be one whole pickle. Legacy format: the file must
    start with whole pickles, up to the ``_LEGACY_PICKLES`` the format holds before its raw bytes.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                records = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
                if len(records) != 1:
                    return False
                data = archive.read(records[0])
            return _whole_pickles(io.BytesIO(data), len(data), 1) == 1
        with open(path, "rb") as stream:
            return _whole_pickles(stream, path.stat().st_size, _LEGACY_PICKLES) > 0
    except (ValueError, EOFError, zipfile.BadZipFile):
        return False


def _whole_pickles(stream: BinaryIO, size: int, most: int) -> int:
    """Parses up to ``most`` consecutive pickles from ``stream`` (``size`` bytes); returns how many.

    Raises:
      ValueError: a pickle is cut short or holds an unknown opcode.
    """
    count = 0
    while stream.tell() < size and count < most:
        for _ in pickletools.genops(stream):
            pass
        count += 1
    return count


def _unsafe_globals(path: pathlib.Path) -> list[str]:
    """The ``module.name`` objects of a zip-format file that ``weights_only`` loading refuses.

    Empty where PyTorch cannot list them statically (legacy files, pickles with other opcodes).
    """
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, EOFError, pickle.UnpicklingError):
        return []


def model_torch_shapes(config: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
    """PyTorch key (no ``module.`` prefix) -> shape of the state dict of ``config``'s model.

    Computed from the abstract variables of the model's init (no arrays are made).
    """
    model, _ = state.build_from_config(config)
    model = model.clone(bn_axis_name=None)
    h, w = image_ops.crop_size(config.data.crop_size)
    image = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
    guide = jax.ShapeDtypeStruct((1, h, w, 2), jnp.float32)
    abstract = jax.eval_shape(
        lambda key, *inputs: model.init({"params": key, "dropout": key}, *inputs),
        jax.random.key(0),
        image,
        guide,
        guide,
    )
    return torch_layout.torch_shapes(
        {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    )


def _to_numpy(value: Any, key: str, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise ValueError(f"{what}: {key} is a {type(value).__name__}, not a tensor")


def unwrap_checkpoint(obj: Any, what: str) -> tuple[dict[str, np.ndarray], int | None]:
    """The state dict and step of a loaded original-layout checkpoint or bare state dict.

    Args:
      obj: ``{"step": N, "state_dict": {...}, ...}`` (other entries, such as
        ``optimizer``, are ignored) or a bare ``{key: tensor}`` mapping; keys
        may carry the ``module.`` prefix.
      what: names the source in error messages (the file path).

    Returns:
      (state_dict, step): NumPy arrays keyed without ``module.``, and the
      recorded step (``None`` for a bare state dict).

    Raises:
      ValueError: neither layout, a value that is not a tensor, or tensors
        holding NaN or infinite values (every one named).
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what} holds a {type(obj).__name__}, not a checkpoint dict or a state dict")
    step = None
    if "state_dict" in obj:
        step = obj.get("step")
        step = None if step is None else int(step)
        obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise ValueError(f"{what}: 'state_dict' is a {type(obj).__name__}, not a dict")
    sd, non_finite = {}, []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ValueError(f"{what}: key {key!r} is not a string; expected a state dict")
        array = sd[key.removeprefix(MODULE_PREFIX)] = _to_numpy(value, key, what)
        if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
            non_finite.append(f"{key} ({nan} NaN, {inf} infinite of {array.size} values)")
    if non_finite:
        raise ValueError(
            f"{what}: {len(non_finite)} tensor(s) hold NaN or infinite values (a diverged or damaged "
            f"checkpoint; the model would predict NaN flow):{checkpoint.indented_list(non_finite)}"
        )
    return sd, step


def variables_from_state_dict(
    state_dict: Mapping[str, np.ndarray], config: ml_collections.ConfigDict, what: str
) -> dict[str, Any]:
    """Converts a whole-model PyTorch state dict to the Flax variables of ``config``'s model.

    Args:
      state_dict: keys as the original's without ``module.`` (``image_encoder.conv1.weight``);
        ``num_batches_tracked`` optional.
      config: the experiment config the weights belong to.
      what: names the source in error messages.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` of float32 NumPy arrays.

    Raises:
      checkpoint.CheckpointShapeError: listing every missing, unexpected or
        mis-shaped key by its PyTorch name.
    """
    given = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    problems = torch_layout.state_dict_problems(model_torch_shapes(config), given)
    if problems:
        m = config.model
        shown = "\n  ".join(problems[:30])
        more = f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""
        raise checkpoint.CheckpointShapeError(
            f"{what} does not fit the config's model ({m.backbone} + {m.decoder} decoder, "
            f"{config.flow.num_bins} bins; {len(problems)} keys):\n  {shown}{more}"
        )
    return torch_layout.torch_to_flax_variables(state_dict)


def import_checkpoint(
    path: str | pathlib.Path,
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    step: int | None = None,
) -> tuple[pathlib.Path, int]:
    """Writes an original-layout PyTorch checkpoint as a cmp-jax workdir.

    Args:
      path: ``{"step", "state_dict"}`` file (e.g. the released
        ``ckpt_iter_42000.pth.tar``) or a bare whole-model state dict.
      config: the experiment config of the model (e.g. ``configs/semiauto_resnet.py``).
      workdir: new workdir (``config.json`` and ``checkpoints/<step>``); one
        that already holds checkpoints is refused.
      step: the step to record; ``None`` for the file's ``step`` (0 for a bare
        state dict). The file's ``num_batches_tracked``, if any, go to
        ``TRACKED_FILE`` with it (module docstring).

    Returns:
      (checkpoint directory, step).

    Raises:
      UnsafeCheckpointError, FileNotFoundError, ValueError: see ``load_torch_file``
        and ``unwrap_checkpoint``; ``FileExistsError`` for a workdir with checkpoints.
      checkpoint.CheckpointShapeError: the weights do not fit the config's model.
    """
    ckpt_dir = pathlib.Path(workdir) / "checkpoints"
    if ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise FileExistsError(f"{ckpt_dir} already holds checkpoints; import into a new workdir")
    sd, file_step = unwrap_checkpoint(load_torch_file(path), str(path))
    variables = variables_from_state_dict(sd, config, str(path))
    step = step if step is not None else (file_step if file_step is not None else 0)
    ckpt_path = state.save_variables(workdir, config, variables, step)
    tracked = {k: int(v) for k, v in sd.items() if k.endswith(f".{torch_layout.NUM_BATCHES_TRACKED}")}
    path = pathlib.Path(workdir) / TRACKED_FILE
    if tracked:
        record = json.dumps({"step": step, "num_batches_tracked": tracked}, indent=1, sort_keys=True)
        tmp = path.with_name(TRACKED_FILE + ".tmp")
        tmp.write_text(record + "\n")
        tmp.replace(path)
    else:
        path.unlink(missing_ok=True)  # a record left by an earlier import does not describe this one
    return ckpt_path, step


def tracked_counts(workdir: str | pathlib.Path, step: int) -> dict[str, int]:
    """The ``num_batches_tracked`` to export at ``step`` for the layers that ``TRACKED_FILE`` records.

    Args:
      workdir: a cmp-jax workdir.
      step: the step of the checkpoint being exported.

    Returns:
      PyTorch key (no ``module.``) -> the recorded count plus ``step`` minus
      the recorded step. Empty without the file, or for a ``step`` before the
      recorded one (a checkpoint the record does not describe).
    """
    path = pathlib.Path(workdir) / TRACKED_FILE
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    since = step - int(record["step"])
    if since < 0:
        return {}
    return {key: int(count) + since for key, count in record["num_batches_tracked"].items()}


def _tensors(sd: Mapping[str, np.ndarray], prefix: str = "") -> collections.OrderedDict:
    return collections.OrderedDict((prefix + k, torch.from_numpy(np.array(v))) for k, v in sd.items())


def _with_tracked(
    sd: dict[str, np.ndarray], tracked: Mapping[str, int], prefix: str = ""
) -> dict[str, np.ndarray]:
    """``sd`` with the ``num_batches_tracked`` of ``tracked`` (keyed ``prefix + key``) written in."""
    for key in sd:
        if key.endswith(torch_layout.NUM_BATCHES_TRACKED) and prefix + key in tracked:
            sd[key] = np.asarray(tracked[prefix + key], np.int64)
    return sd


def original_checkpoint(
    variables: Mapping[str, Any], step: int, tracked: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The whole model in the original's checkpoint layout.

    Args:
      variables: ``{"params": ..., "batch_stats": ...}`` of a cmp-jax ``CMP``.
      step: written as ``step`` and as every ``num_batches_tracked`` that
        ``tracked`` does not give.
      tracked: PyTorch key (no ``module.``) -> ``num_batches_tracked``
        (``tracked_counts``).

    Returns:
      ``{"step": step, "state_dict": OrderedDict("module.<key>" -> tensor)}``.
    """
    sd = torch_layout.flax_to_torch_state_dict(variables, num_batches_tracked=step)
    sd = _with_tracked(sd, tracked or {})
    return {"step": int(step), "state_dict": _tensors(sd, MODULE_PREFIX)}


def _sub_variables(variables: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {"params": variables["params"][name], "batch_stats": variables["batch_stats"].get(name, {})}


def encoder_state_dicts(
    config: ml_collections.ConfigDict,
    variables: Mapping[str, Any],
    step: int,
    tracked: Mapping[str, int] | None = None,
) -> tuple[collections.OrderedDict, collections.OrderedDict | None]:
    """The image encoder as PyTorch state dicts for fine-tuning.

    Args:
      config: the experiment config (``model.backbone`` decides the layout).
      variables: ``{"params": ..., "batch_stats": ...}`` of the whole ``CMP``.
      step: written into every ``num_batches_tracked`` that ``tracked`` does not give.
      tracked: whole-model PyTorch key (``image_encoder.bn1.num_batches_tracked``)
        -> ``num_batches_tracked`` (``tracked_counts``).

    Returns:
      (encoder, head). ResNet: the torchvision trunk (no ``fc``, no ``conv5``)
      and the ``conv5`` head as ``{"weight", "bias"}`` of an ``nn.Conv2d``.
      AlexNet: the ``torch_models.AlexNetBNFCN`` state dict and ``None``.
    """
    sd = torch_layout.flax_to_torch_state_dict(
        _sub_variables(variables, "image_encoder"), num_batches_tracked=step
    )
    sd = _with_tracked(sd, tracked or {}, prefix="image_encoder.")
    if config.model.backbone == "alexnet":
        return _tensors(sd), None
    head = {k.removeprefix("conv5."): v for k, v in sd.items() if k.startswith("conv5.")}
    trunk = {k: v for k, v in sd.items() if not k.startswith("conv5.")}
    return _tensors(trunk), _tensors(head)


def head_path(out: str | pathlib.Path) -> pathlib.Path:
    """Where the ResNet ``conv5`` head of an ``encoder`` export to ``out`` goes.

    ``enc.pth`` -> ``enc_conv5.pth``; ``enc.pth.tar`` -> ``enc_conv5.pth.tar``.
    """
    out = pathlib.Path(out)
    stem, dot, suffixes = out.name.partition(".")
    return out.with_name(f"{stem}_conv5{dot}{suffixes}")


def export_workdir(
    workdir: str | pathlib.Path, out: str | pathlib.Path, fmt: str, step: int | None = None
) -> list[pathlib.Path]:
    """Exports a workdir's checkpoint to PyTorch files (see the module docstring).

    ``num_batches_tracked`` are those ``tracked_counts`` gives, else the step.

    Args:
      workdir: a cmp-jax training workdir.
      out: output file.
      fmt: ``"encoder"`` or ``"original"``.
      step: the checkpoint; ``None`` for the newest.

    Returns:
      The files written: ``[out]``, plus the ``conv5`` head file for a ResNet ``encoder`` export.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    config, variables, step = state.load_variables(workdir, step)
    tracked = tracked_counts(workdir, step)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "original":
        if config.model.get("upsample", "bilinear") != "bilinear":
            raise ValueError(
                f"{workdir} was trained with model.upsample={config.model.upsample!r}, which the original "
                "code does not have: its layout cannot hold the model. Export the encoder (format "
                "'encoder'), or train with model.upsample='bilinear'."
            )
        torch.save(original_checkpoint(variables, step, tracked), out)
        return [out]
    encoder, head = encoder_state_dicts(config, variables, step, tracked)
    torch.save(encoder, out)
    if head is None:
        return [out]
    torch.save(head, head_path(out))
    return [out, head_path(out)]
