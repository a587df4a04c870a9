"""Tests of the experiment configs in configs/: keys, the original's values, and the model each builds.

Every ``configs/*.py`` except ``__init__.py`` is loaded by path (``base.py``
included, and any config added later, e.g. ``synthetic.py``). Each must return
a ConfigDict with exactly the base's fields and types. Configs that reproduce a
released experiment are checked against ``EXPECTED``, transcribed from the
original's experiment files (reference §4.5 and §5.2). Every config's model is
built and initialised at the smallest input it accepts.
"""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cmp_jax.models import build_model
from configs import base
from input_pipeline.guidance import SamplerConfig

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIG_NAMES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.name != "__init__.py")

YFCC_TRAIN = ("data/yfcc/lists/train.txt",)
YFCC_VAL = ("data/yfcc/lists/val.txt",)
YOUTUBE = "data/youtube9000/lists/train.txt"
VIP = "data/VIP/lists/train.txt"
MPII = "data/MPII/lists/train.txt"

# name: (original experiment, backbone, decoder, short side, crop (h, w), GPUs, batch per GPU,
#        iterations, lr_steps, G, K, max_num_guide, train lists, val lists, val/save frequency)
EXPECTED = {
    "base": ("resnet50_yfcc_voc_16gpu_42k", "resnet50", "plain", 416, (320, 320), 16, 10,
             42_000, (24_000, 36_000), 165, 67, -1, YFCC_TRAIN, YFCC_VAL, 10_000),
    "yfcc_resnet": ("resnet50_yfcc_voc_16gpu_42k", "resnet50", "plain", 416, (320, 320), 16, 10,
                    42_000, (24_000, 36_000), 165, 67, -1, YFCC_TRAIN, YFCC_VAL, 10_000),
    "yfcc_coco_resnet": ("resnet50_yfcc_coco_16gpu_42k", "resnet50", "plain", 333, (256, 256), 16, 16,
                         42_000, (24_000, 36_000), 133, 49, -1, YFCC_TRAIN, YFCC_VAL, 10_000),
    "yfcc_alexnet": ("alexnet_yfcc_voc_16gpu_70k", "alexnet", "plain", 416, (384, 384), 16, 12,
                     70_000, (40_000, 60_000), 80, 41, 150, YFCC_TRAIN, YFCC_VAL, 10_000),
    "yfcc_alexnet_8gpu": ("alexnet_yfcc_voc_8gpu_140k", "alexnet", "plain", 416, (384, 384), 8, 12,
                          140_000, (80_000, 120_000), 80, 41, 150, YFCC_TRAIN, YFCC_VAL, 10_000),
    "yfcc_youtube_alexnet": ("alexnet_yfcc+youtube_voc_16gpu_140k", "alexnet", "plain", 416, (384, 384),
                             16, 12, 140_000, (80_000, 120_000), 200, 81, 150,
                             (*YFCC_TRAIN, YOUTUBE), YFCC_VAL, 10_000),
    "lip_resnet": ("resnet50_yfcc+youtube+vip+mpii_lip_16gpu_70k", "resnet50", "plain", 416, (320, 320),
                   16, 10, 70_000, (40_000, 60_000), 80, 15, -1,
                   (*YFCC_TRAIN, YOUTUBE, VIP, MPII), YFCC_VAL, 10_000),
    "semiauto_resnet": ("resnet50_vip+mpii_liteflow", "resnet50", "skip", 416, (384, 384), 8, 8,
                        42_000, (24_000, 36_000), 131, 41, -1,
                        (VIP, MPII), ("data/VIP/lists/randval.txt",), 5_000),
}  # fmt: skip

# Configs whose model is initialised for real (AlexNet; ResNet and the skip decoder
# are initialised in test_models.py); the others are traced with jax.eval_shape.
REAL_INIT = ("yfcc_alexnet",)


def load(name: str) -> ml_collections.ConfigDict:
    """Imports configs/<name>.py by path and returns its ``get_config()``."""
    spec = importlib.util.spec_from_file_location(f"_config_under_test_{name}", CONFIG_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.__doc__, f"configs/{name}.py has no module docstring"
    return module.get_config()


def flatten(cfg: ml_collections.ConfigDict, prefix: str = "") -> dict:
    """Flattens nested ConfigDicts into {"group.field": value}."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def smallest_input(model) -> int:
    """Smallest square side the model accepts: stride x the largest decoder pooling."""
    largest_pool = 8 if model.decoder == "skip" else max(model.decoder_combo)
    return model.stride * largest_pool


def test_discovery_finds_every_released_experiment():
    assert set(EXPECTED) <= set(CONFIG_NAMES)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_has_exactly_the_base_fields(name):
    config = load(name)
    assert isinstance(config, ml_collections.ConfigDict)
    got, want = flatten(config), flatten(base.get_config())
    assert sorted(set(got) - set(want)) == [], "fields the base does not have (typos?)"
    assert sorted(set(want) - set(got)) == [], "fields of the base removed"
    for key, default in want.items():
        if default is not None:
            assert type(got[key]) is type(default), f"{key}: {type(got[key])} vs base {type(default)}"
    SamplerConfig(**config.guidance)  # validates strategy, bg_ratio, K and the cap
    model = build_model(config.model, num_bins=config.flow.num_bins)
    crop = config.data.crop_size
    assert len(crop) == 2 and crop[0] % model.stride == 0 and crop[1] % model.stride == 0
    assert list(config.optim.lr_steps) == sorted(config.optim.lr_steps)
    assert all(0 < s < config.num_train_steps for s in config.optim.lr_steps)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_matches_the_original_experiment(name):
    (_, backbone, decoder, short, crop, gpus, per_gpu, steps, lr_steps, grid, nms_ks, max_guide,
     train_lists, val_lists, every) = EXPECTED[name]  # fmt: skip
    config = load(name)
    assert (config.model.backbone, config.model.decoder) == (backbone, decoder)
    assert (config.data.short_size, tuple(config.data.crop_size)) == (short, crop)
    assert config.batch_size == gpus * per_gpu
    assert config.num_train_steps == steps
    assert tuple(config.optim.lr_steps) == lr_steps
    # The paper's schedule: lr / 10 at 2/3.5 and 3/3.5 of the iterations.
    assert lr_steps == (round(steps * 2 / 3.5), round(steps * 3 / 3.5))
    assert int(math.sqrt(1 / config.guidance.bg_ratio)) == grid
    assert SamplerConfig(**config.guidance).grid_stride == grid
    assert config.guidance.nms_ks == nms_ks
    assert config.guidance.max_num_guide == max_guide
    assert tuple(config.guidance.strategy) == ("grid", "watershed")
    assert (tuple(config.data.train_lists), tuple(config.data.val_lists)) == (train_lists, val_lists)
    assert (config.data.flow_type, config.data.source, config.data.flip) == ("jpg", "lists", False)
    assert (config.eval_every_steps, config.checkpoint_every_steps) == (every, every)
    # Common to every released experiment (reference §5.1).
    assert (config.optim.lr, config.optim.momentum, config.optim.weight_decay) == (0.1, 0.9, 1e-4)
    assert config.optim.lr_decay == 0.1
    assert (config.flow.num_bins, config.flow.fmax) == (99, 50.0)
    assert (config.model.img_enc_dim, config.model.sparse_enc_dim) == (256, 16)
    assert tuple(config.model.decoder_combo) == (1, 2, 4)
    assert not config.sync_batchnorm


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_model_initialises(name):
    config = load(name)
    model = build_model(config.model, num_bins=config.flow.num_bins)
    size = smallest_input(model)
    out_hw = {"skip": size // 2}.get(
        model.decoder, size if model.upsample == "convex" else size // model.stride
    )
    shape = (1, out_hw, out_hw, 2 * config.flow.num_bins)
    image, sparse = jnp.zeros((1, size, size, 3)), jnp.zeros((1, size, size, 2))
    if name in REAL_INIT:
        variables = model.init(jax.random.key(0), image, sparse, sparse)
        logits = model.apply(variables, image, sparse, sparse)
        assert np.isfinite(np.asarray(logits)).all()
    else:
        variables = jax.eval_shape(model.init, jax.random.key(0), image, sparse, sparse)
        logits = jax.eval_shape(model.apply, variables, image, sparse, sparse)
    assert logits.shape == shape
    assert logits.dtype == jnp.float32
    # ... and it is the smallest: one stride less is rejected.
    small = jax.ShapeDtypeStruct((1, size - model.stride, size - model.stride, 3), jnp.float32)
    small_g = jax.ShapeDtypeStruct(small.shape[:3] + (2,), jnp.float32)
    with pytest.raises(ValueError, match="decoder branch"):
        jax.eval_shape(model.init, jax.random.key(0), small, small_g, small_g)
