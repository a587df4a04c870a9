"""BN-AlexNet on YFCC: the original's ``rep_learning/alexnet_yfcc_voc_16gpu_70k``.

Launch::

    python main.py --config=configs/yfcc_alexnet.py --workdir=runs/yfcc_alexnet

Original: 16 GPUs (2 nodes x 8) x 12 images (global batch 192), 70k
iterations (lr / 10 at 40k and 60k), crop 384 of short side 416, G = 80,
K = 41, at most 150 guidance points; evaluation and checkpoint every 10k.
Data: YFCC, as the base. ``configs/yfcc_alexnet_8gpu.py`` is the same recipe
with half the batch and twice the steps.

Cost: 70,000 steps x 192 = 13.44M images. Memory per device and
throughput are measured in docs/benchmarks.md, not here.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
    """Returns the config of ``alexnet_yfcc_voc_16gpu_70k``."""
    config = base.get_config()
    config.model.backbone = "alexnet"  # stride 32; model.output_stride is unused
    config.data.crop_size = (384, 384)
    config.guidance.bg_ratio = 0.00015625  # G = 80
    config.guidance.nms_ks = 41
    config.guidance.max_num_guide = 150
    config.batch_size = 192  # 16 GPUs x 12
    config.num_train_steps = 70_000
    config.optim.lr_steps = (40_000, 60_000)
    return config
