"""Key and layout mapping between Flax variables and the original PyTorch state dict.

Flax module names mirror the PyTorch ones, with a PyTorch index ``.N`` written
``_N``: Flax ``image_encoder/layer1_0/downsample_0/kernel`` is PyTorch
``image_encoder.layer1.0.downsample.0.weight``. Leaves map as:

=====================  =======================  ================================
Flax                   PyTorch                  layout
=====================  =======================  ================================
params ``kernel``      ``weight``               conv HWIO -> OIHW
params ``bias``        ``bias``                 as is
params ``scale``       ``weight`` (BatchNorm)   as is
batch_stats ``mean``   ``running_mean``         as is
batch_stats ``var``    ``running_var``          as is
(none)                 ``num_batches_tracked``  int64 scalar, written as given
=====================  =======================  ================================

This module is NumPy only; it does not import PyTorch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_INDEX_SUFFIX = re.compile(r"_(\d+)$")
_PARAM_NAMES = {"kernel": "weight", "bias": "bias", "scale": "weight"}
_STAT_NAMES = {"mean": "running_mean", "var": "running_var"}


def torch_module_path(flax_path: Sequence[str]) -> str:
    """PyTorch module path of a Flax module path, e.g. ("layer1_0", "conv1") -> "layer1.0.conv1"."""
    return ".".join(_INDEX_SUFFIX.sub(r".\1", name) for name in flax_path)


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


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
    unknown = set(variables) - {"params", "batch_stats"}
    if unknown:
        raise ValueError(f"unexpected variable collections {sorted(unknown)}")
    state: dict[str, np.ndarray] = {}
    for path, value in _flatten(variables["params"]).items():
        *modules, leaf = path
        if leaf not in _PARAM_NAMES:
            raise ValueError(f"no PyTorch name for parameter {'/'.join(path)}")
        array = np.array(value, np.float32)
        if leaf == "kernel":
            if array.ndim != 4:
                raise ValueError(f"expected a 4-D conv kernel at {'/'.join(path)}, got {array.shape}")
            array = np.ascontiguousarray(array.transpose(3, 2, 0, 1))
        state[f"{torch_module_path(modules)}.{_PARAM_NAMES[leaf]}"] = array
    for path, value in _flatten(variables.get("batch_stats", {})).items():
        *modules, leaf = path
        if leaf not in _STAT_NAMES:
            raise ValueError(f"no PyTorch name for batch statistic {'/'.join(path)}")
        module = torch_module_path(modules)
        state[f"{module}.{_STAT_NAMES[leaf]}"] = np.array(value, np.float32)
        if leaf == "var":
            state[f"{module}.num_batches_tracked"] = np.asarray(num_batches_tracked, np.int64)
    return state
