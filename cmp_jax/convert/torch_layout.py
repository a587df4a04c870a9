"""Key and layout mapping between Flax variables and the original PyTorch state dict.

Flax module names mirror the PyTorch ones, with a PyTorch index ``.N`` written
``_N``: Flax ``image_encoder/layer1_0/downsample_0/kernel`` is PyTorch
``image_encoder.layer1.0.downsample.0.weight``. Leaves map as:

=====================  =======================  ================================
Flax                   PyTorch                  layout
=====================  =======================  ================================
params ``kernel``      ``weight``               conv HWIO <-> OIHW
params ``bias``        ``bias``                 as is
params ``scale``       ``weight`` (BatchNorm)   as is (1-D, which tells it apart)
batch_stats ``mean``   ``running_mean``         as is
batch_stats ``var``    ``running_var``          as is
(none)                 ``num_batches_tracked``  int64 scalar; written as given,
                                                dropped when read (``torch_io``
                                                keeps imported ones in the
                                                workdir)
=====================  =======================  ================================

Both directions work on any cmp-jax model (any config); keys and shapes of a
given config's model come from ``torch_shapes`` of its abstract variables.
This module is NumPy only; it does not import PyTorch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

_INDEX_SUFFIX = re.compile(r"_(\d+)$")
_PARAM_NAMES = {"kernel": "weight", "bias": "bias", "scale": "weight"}
_STAT_NAMES = {"mean": "running_mean", "var": "running_var"}
_FLAX_STATS = {v: k for k, v in _STAT_NAMES.items()}
NUM_BATCHES_TRACKED = "num_batches_tracked"


def torch_module_path(flax_path: Sequence[str]) -> str:
    """PyTorch module path of a Flax module path, e.g. ("layer1_0", "conv1") -> "layer1.0.conv1"."""
    return ".".join(_INDEX_SUFFIX.sub(r".\1", name) for name in flax_path)


def flax_module_path(torch_path: str) -> tuple[str, ...]:
    """Flax module path of a PyTorch module path, e.g. "layer1.0.conv1" -> ("layer1_0", "conv1").

    A numeric component joins the one before it (``decoder2.1`` -> ``decoder2_1``).
    """
    out: list[str] = []
    for part in torch_path.split("."):
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return tuple(out)


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _torch_items(variables: Mapping[str, Any]) -> Iterator[tuple[str, str, tuple[str, ...], Any]]:
    """Yields (PyTorch key, Flax leaf name, Flax path, leaf) for every Flax leaf, params first."""
    unknown = set(variables) - {"params", "batch_stats"}
    if unknown:
        raise ValueError(f"unexpected variable collections {sorted(unknown)}")
    for path, value in _flatten(variables["params"]).items():
        *modules, leaf = path
        if leaf not in _PARAM_NAMES:
            raise ValueError(f"no PyTorch name for parameter {'/'.join(path)}")
        yield f"{torch_module_path(modules)}.{_PARAM_NAMES[leaf]}", leaf, path, value
    for path, value in _flatten(variables.get("batch_stats", {})).items():
        *modules, leaf = path
        if leaf not in _STAT_NAMES:
            raise ValueError(f"no PyTorch name for batch statistic {'/'.join(path)}")
        yield f"{torch_module_path(modules)}.{_STAT_NAMES[leaf]}", leaf, path, value


def flax_to_torch_state_dict(
    variables: Mapping[str, Any], num_batches_tracked: int = 0
) -> dict[str, np.ndarray]:
    """Converts Flax variables to a PyTorch state dict of NumPy arrays.

    Args:
      variables: ``{"params": ..., "batch_stats": ...}`` of a cmp-jax module
        (``batch_stats`` may be absent for modules without BatchNorm).
      num_batches_tracked: value written into every BatchNorm's
        ``num_batches_tracked`` buffer.

    Returns:
      Ordered dict from PyTorch key to float32 (or int64) NumPy array, in the
      order of the Flax tree.
    """
    state: dict[str, np.ndarray] = {}
    for key, leaf, path, value in _torch_items(variables):
        array = np.array(value, np.float32)
        if leaf == "kernel":
            if array.ndim != 4:
                raise ValueError(f"expected a 4-D conv kernel at {'/'.join(path)}, got {array.shape}")
            array = np.ascontiguousarray(array.transpose(3, 2, 0, 1))
        state[key] = array
        if leaf == "var":
            state[f"{key.removesuffix('running_var')}{NUM_BATCHES_TRACKED}"] = np.asarray(
                num_batches_tracked, np.int64
            )
    return state


def torch_shapes(variables: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """PyTorch key -> shape of the state dict that ``flax_to_torch_state_dict`` would write.

    Args:
      variables: Flax variables or their abstract shapes (``jax.eval_shape``);
        only ``.shape`` of the leaves is read.

    Returns:
      Shapes in PyTorch layout (OIHW kernels), ``()`` for ``num_batches_tracked``.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for key, leaf, _, value in _torch_items(variables):
        shape = tuple(value.shape)
        if leaf == "kernel" and len(shape) == 4:
            shape = (shape[3], shape[2], shape[0], shape[1])
        shapes[key] = shape
        if leaf == "var":
            shapes[f"{key.removesuffix('running_var')}{NUM_BATCHES_TRACKED}"] = ()
    return shapes


def state_dict_problems(
    expected: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """Lists the keys of a state dict that do not fit a model, by name.

    ``num_batches_tracked`` may be missing (checkpoints of PyTorch < 0.4.1,
    such as the released demo model, have none).

    Args:
      expected: key -> shape the model needs (``torch_shapes``).
      given: key -> shape found.

    Returns:
      One line per missing, mis-shaped or unexpected key; empty when they fit.
    """
    problems = [
        f"{key}: missing"
        for key in expected
        if key not in given and not key.endswith(f".{NUM_BATCHES_TRACKED}")
    ]
    problems += [
        f"{key}: has shape {given[key]}, the model needs {shape}"
        for key, shape in expected.items()
        if key in given and tuple(given[key]) != tuple(shape)
    ]
    problems += [f"{key}: unexpected" for key in given if key not in expected]
    return problems


def torch_to_flax_variables(state_dict: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Converts a PyTorch state dict (NumPy arrays, no ``module.`` prefix) to Flax variables.

    The inverse of ``flax_to_torch_state_dict``: 4-D ``weight`` -> ``kernel``
    (OIHW -> HWIO), 1-D ``weight`` -> ``scale``, ``running_mean/var`` ->
    ``batch_stats`` ``mean/var``; ``num_batches_tracked`` is dropped. Check the
    keys against the model first (``state_dict_problems``).

    Args:
      state_dict: PyTorch key -> array.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` nested dicts of float32 NumPy arrays.

    Raises:
      ValueError: naming every key that has no Flax counterpart.
    """
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    bad = []
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        array = np.asarray(value)
        if leaf == NUM_BATCHES_TRACKED:
            continue
        if leaf == "weight" and array.ndim == 4:
            tree, name, array = params, "kernel", array.transpose(2, 3, 1, 0)
        elif leaf == "weight" and array.ndim == 1:
            tree, name = params, "scale"
        elif leaf == "bias" and array.ndim == 1:
            tree, name = params, "bias"
        elif leaf in _FLAX_STATS and array.ndim == 1:
            tree, name = stats, _FLAX_STATS[leaf]
        else:
            bad.append(f"{key} {array.shape}")
            continue
        for part in flax_module_path(module):
            tree = tree.setdefault(part, {})
        tree[name] = np.ascontiguousarray(array, np.float32)
    if bad:
        raise ValueError("no Flax counterpart for PyTorch keys:\n  " + "\n  ".join(bad))
    return {"params": params, "batch_stats": stats}
