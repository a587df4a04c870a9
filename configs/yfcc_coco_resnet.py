"""ResNet-50 on YFCC for COCO: the original's ``rep_learning/resnet50_yfcc_coco_16gpu_42k``.

Launch::

    python main.py --config=configs/yfcc_coco_resnet.py --workdir=runs/yfcc_coco_resnet

Original: 16 GPUs x 16 images (global batch 256), 42k iterations (lr / 10 at
24k and 36k), crop 256 of short side 333, G = 133, K = 49, no guidance cap;
evaluation and checkpoint every 10k. Data: YFCC, as the base.

Cost: 42,000 steps x 256 = 10.75M images. Memory per device and
throughput are measured in docs/benchmarks.md, not here.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
    """Returns the config of ``resnet50_yfcc_coco_16gpu_42k``."""
    config = base.get_config()
    config.data.short_size = 333
    config.data.crop_size = (256, 256)
    config.guidance.bg_ratio = 0.00005632  # G = 133
    config.guidance.nms_ks = 49
    config.batch_size = 256  # 16 GPUs x 16
    return config
