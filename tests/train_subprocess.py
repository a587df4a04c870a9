"""The tiny training config of tests/test_train.py, and a training process it can kill.

``tiny_config`` is the cheapest config that still runs every part of
``train.train_and_evaluate`` (ResNet-18 at output stride 32 on 32 x 32 crops of
34 x 34 synthetic frames, one example per device, one eval batch).

Run as a script, it trains that config in a workdir on 4 fake CPU devices and
stops inside the checkpoint save of one step, after Orbax has written the step
into its temporary directory and before the directory is renamed (committed)::

    python tests/train_subprocess.py WORKDIR OVERRIDES_JSON HANG_STEP MARKER [CACHE_DIR]

When the save of ``HANG_STEP`` reaches the commit, the temporary directory's
path is written to ``MARKER`` and the saving thread sleeps until the process is
killed. ``OVERRIDES_JSON`` maps top-level config fields to values;
``CACHE_DIR`` is a persistent XLA compilation cache to share with the caller.
"""

import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
    """The tiny synthetic config: 4 steps, eval at the end, checkpoints every 2 steps.

    ``optim.lr_steps = (3,)`` is explicit (the schedule does not depend on
    ``num_train_steps``) and decays the lr of the 4th step (0-based step 3).
    BatchNorm is synchronised: with one image per device and 1 x 1 features in
    layer4 and the decoder, per-device BatchNorm would map every input to the
    same activations, so the training loss would not depend on the data.

    Args:
      **overrides: top-level config fields (``num_train_steps=2``, ``seed=1``, ...).
    """
    from configs import synthetic

    config = synthetic.get_config()
    config.model.backbone = "resnet18"
    config.model.upsample = "bilinear"  # the original's decoder, as the released configs
    config.label_prop.num_clips = 0  # no label propagation at eval (tests switch it on)
    config.model.output_stride = 32
    config.model.img_enc_dim = 16
    config.model.decoder_combo = (1,)
    config.flow.num_bins = 9
    config.flow.fmax = 10.0
    config.data.synthetic.height = 34
    config.data.synthetic.width = 34
    config.data.synthetic.train_size = 64
    config.data.synthetic.val_size = 4
    config.data.short_size = 34
    config.data.crop_size = (32, 32)
    config.data.num_parallel_calls = 1
    config.data.prefetch = 1
    config.guidance.bg_ratio = 1 / 8**2  # grid stride 8
    config.guidance.nms_ks = 5
    config.batch_size = 4
    config.sync_batchnorm = True
    config.eval_batch_size = 4
    config.num_pictures = 1
    config.num_train_steps = 4
    # Step decay: the resume tests change num_train_steps between runs, which a cosine schedule follows.
    config.optim.schedule = "step"
    config.optim.lr_steps = (3,)
    config.eval_every_steps = 0
    config.eval_at_start = False
    config.checkpoint_every_steps = 2
    config.log_every_steps = 1
    config.max_to_keep = 3
    for key, value in overrides.items():
        config[key] = value
    return config


def _hang_in_commit(step: int, marker: pathlib.Path) -> None:
    """Makes Orbax's commit (rename of the temporary step directory) of ``step`` hang."""
    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
        if self.get_final().name == str(step):
            tmp = pathlib.Path(self.get())
            marker.with_suffix(".tmp").write_text(str(tmp))
            marker.with_suffix(".tmp").replace(marker)
            while True:  # blocks the saving thread until the process is killed
                time.sleep(1)
        return await original(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize


def main(argv: list[str]) -> None:
    workdir, overrides, hang_step, marker = argv[1], json.loads(argv[2]), int(argv[3]), argv[4]
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=4").strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))

    import jax

    jax.config.update("jax_disable_most_optimizations", True)
    if len(argv) > 5:
        jax.config.update("jax_compilation_cache_dir", argv[5])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if jax.local_device_count() != 4:
        raise RuntimeError(f"expected 4 CPU devices, got {jax.local_devices()}")

    from cmp_jax import train

    _hang_in_commit(hang_step, pathlib.Path(marker))
    train.train_and_evaluate(tiny_config(**overrides), workdir)


if __name__ == "__main__":
    main(sys.argv)
