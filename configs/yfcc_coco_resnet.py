"""ResNet-50 on YFCC for COCO: the original's ``rep_learning/resnet50_yfcc_coco_16gpu_42k``.

Launch::

    python main.py --config=configs/yfcc_coco_resnet.py --workdir=runs/yfcc_coco_resnet

Original: 16 GPUs x 16 images (global batch 256), 42k iterations (lr / 10 at
24k and 36k), crop 256 of short side 333, G = 133, K = 49, no guidance cap;
evaluation and checkpoint every 10k. Data: YFCC, as the base.

Cost: 42,000 steps x 256 = 10.75M images. Not measured; rough estimates:
training costs about 150 GFLOP per image (3x the 50 GFLOP forward pass at
256x256, from XLA's cost analysis), 1.6 EFLOP in all: 2-4.5 h on one H100
sustaining 100-200 TFLOP/s, with the input pipeline (65-98 samples/s per CPU
core, measured on the development machine at 384 crops) needing about 7-20
host cores to keep up. Memory: XLA's memory analysis (compiled for CPU) puts
float32 training at about 0.58 GiB per image, about 150 GiB for the global
batch: more than one H100 (80 GB) or H200 (141 GB) holds, so use several
devices (or a smaller ``batch_size``, which changes the recipe).
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
