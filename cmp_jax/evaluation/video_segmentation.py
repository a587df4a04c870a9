"""Representation quality as video label propagation J&F: clips, encoders, scores.

Ties together the clips (synthetic from the procedural generator, or DAVIS-2017
through ``input_pipeline.davis``), the frozen encoder of a model
(``label_propagation.encoder_features``), the propagation protocol
(``label_propagation.propagate_labels``) and the DAVIS-2017 metrics
(``davis_metrics``). Used by ``scripts/eval_label_propagation.py``,
``scripts/benchmark.py label_propagation`` and, with ``config.label_prop``,
by the training loop's evaluation (``eval/label_prop/jf``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from cmp_jax import state as state_lib
from cmp_jax.evaluation import davis_metrics, label_propagation
from input_pipeline import pipeline, synthetic


class Clip(NamedTuple):
    """One video with its ground-truth object masks.

    Attributes:
      name: sequence name.
      frames: (T, H, W, 3) uint8 RGB.
      masks: (T, H, W) uint8 label maps: 0 background, 1..num_objects objects.
      num_objects: objects labelled in frame 0.
    """

    name: str
    frames: np.ndarray
    masks: np.ndarray
    num_objects: int


def synthetic_clips(config: ml_collections.ConfigDict, num_clips: int, num_frames: int) -> list[Clip]:
    """Held-out clips of the experiment's procedural data (``config.data.synthetic``).

    The generator's motion ranges are per frame pair; a clip repeats each
    motion every frame, so they are scaled by ``config.label_prop.motion_scale``.
    The clips come from ``config.label_prop.seed``, a seed that training and
    validation (``train_seed``, ``val_seed``) do not use.

    Args:
      config: the experiment config (groups ``data.synthetic`` and ``label_prop``).
      num_clips: clips, indices 0..num_clips - 1.
      num_frames: T, frames per clip.

    Returns:
      The clips, named ``synthetic_<index>``; objects absent from frame 0 are
      relabelled background (as DAVIS counts objects from frame 0), and
      clips with none in frame 0 are skipped.
    """
    generator = pipeline.synthetic_config(config.data.synthetic)
    s = float(config.label_prop.motion_scale)
    generator = dataclasses.replace(
        generator,
        max_camera_shift=generator.max_camera_shift * s,
        max_camera_rotation_deg=generator.max_camera_rotation_deg * s,
        max_camera_zoom=generator.max_camera_zoom * s,
        max_object_shift=generator.max_object_shift * s,
        max_rotation_deg=generator.max_rotation_deg * s,
        max_scale_change=generator.max_scale_change * s,
        max_articulation_deg=generator.max_articulation_deg * s,
    )
    clips, index = [], 0
    while len(clips) < num_clips:
        clip = synthetic.generate_clip(index, generator, num_frames, seed=int(config.label_prop.seed))
        masks = clip["masks"]
        present = np.unique(masks[0])
        present = present[present > 0]
        if len(present):  # a clip whose objects are all hidden in frame 0 has nothing to propagate
            relabel = np.zeros(256, np.uint8)
            relabel[present] = np.arange(1, len(present) + 1)
            clips.append(Clip(f"synthetic_{index:03d}", clip["frames"], relabel[masks], len(present)))
        index += 1
    return clips


def load_workdir(
    workdir: str, step: int | None, default_label_prop: ml_collections.ConfigDict
) -> tuple[ml_collections.ConfigDict, dict[str, Any], int, Any]:
    """A trained workdir for label propagation.

    Args:
      workdir: the training workdir.
      step: its checkpoint to read (None: the newest good one).
      default_label_prop: ``label_prop`` group for a workdir written before it existed.

    Returns:
      (config, variables, step, model): ``state.load_variables``'s three and the
      config's ``CMP`` without BatchNorm synchronisation.
    """
    config, variables, step = state_lib.load_variables(workdir, step)
    if "label_prop" not in config:
        config.label_prop = default_label_prop
    model, _ = state_lib.build_from_config(config)
    return config, variables, step, model.clone(bn_axis_name=None)


def random_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The variables a training run of ``config`` starts from (its seed's initialisation)."""
    model, _ = state_lib.build_from_config(config)
    tx = state_lib.create_optimizer(config, state_lib.learning_rate_schedule(config))
    state = state_lib.create_train_state(config, model, tx)
    return jax.device_get({"params": state.params, "batch_stats": state.batch_stats})


def evaluate_encoder(
    model: Any,
    variables: Mapping[str, Any],
    clips: Iterable[Clip],
    protocol: Mapping[str, Any],
    feature: str = "features",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Label propagation J&F of one frozen encoder on clips.

    Args:
      model: a ``CMP`` (BatchNorm not synchronised).
      variables: its ``params`` and ``batch_stats``.
      clips: the videos.
      protocol: keyword arguments of ``label_propagation.propagate_labels``
        (``context``, ``topk``, ``radius``, ``temperature``).
      feature: the encoder output used (``"features"``, ``"layer4"``, ...).

    Returns:
      (``davis_metrics.summarize`` of the clips: ``J``, ``F``, ``JF`` and
      per-sequence rows; name -> (T, H, W) int32 predicted label maps).
    """
    results, predictions = {}, {}
    for clip in clips:
        feats = label_propagation.encoder_features(model, variables, clip.frames, feature=feature)
        pred = label_propagation.propagate_labels(
            feats, clip.masks[0], clip.num_objects + 1, frame_size=clip.masks.shape[1:], **protocol
        )
        results[clip.name] = davis_metrics.evaluate_sequence(pred, clip.masks, clip.num_objects)
        predictions[clip.name] = pred
    return davis_metrics.summarize(results), predictions


def feature_of(config: ml_collections.ConfigDict) -> str:
    """``config.label_prop.feature``; ``"features"`` for AlexNet, whose encoder has no other output."""
    return "features" if config.model.backbone == "alexnet" else config.label_prop.feature


def protocol_of(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The propagation parameters of ``config.label_prop``."""
    lp = config.label_prop
    return {"context": lp.context, "topk": lp.topk, "radius": lp.radius, "temperature": lp.temperature}


def training_evaluator(config: ml_collections.ConfigDict, model: Any):
    """The training loop's label propagation score, or None when ``config.label_prop.num_clips`` is 0.

    Returns:
      A function of the model variables (host arrays) returning
      ``{"eval/label_prop/j", "eval/label_prop/f", "eval/label_prop/jf"}``
      (fractions, 0-1) on the same held-out synthetic clips at every call.
    """
    lp = config.get("label_prop")
    if lp is None or not lp.num_clips:
        return None
    clips = synthetic_clips(config, lp.num_clips, lp.num_frames)
    model = model.clone(bn_axis_name=None)
    protocol = protocol_of(config)

    def score(variables: Mapping[str, Any]) -> dict[str, float]:
        summary, _ = evaluate_encoder(model, variables, clips, protocol, feature_of(config))
        return {f"eval/label_prop/{k.lower()}": float(summary[k]) for k in ("J", "F", "JF")}

    return score
