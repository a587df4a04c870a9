"""ResNet-50 on four sources, for LIP: ``rep_learning/resnet50_yfcc+youtube+vip+mpii_lip_16gpu_70k``.

The "CMP (4.57M)" row of the original's results: YFCC + YouTube9K + VIP +
MPII image-flow pairs, with the human-centric guidance (G = 80, K = 15) on
all four. Only YFCC was released: make ``data/youtube9000``, ``data/VIP`` and
``data/MPII`` ``lists/train.txt`` yourself (``scripts/extract_flow.py``).
Validation is on YFCC.

Launch::

    python main.py --config=configs/lip_resnet.py --workdir=runs/lip_resnet

Original: 16 GPUs x 10 images (global batch 160), 70k iterations (lr / 10 at
40k and 60k), crop 320 of short side 416, G = 80 (its grid includes row and
column 0), K = 15, no guidance cap; evaluation and checkpoint every 10k.

Cost: 70,000 steps x 160 = 11.2M images. Memory per device and
throughput are measured in docs/benchmarks.md, not here.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
    """Returns the config of ``resnet50_yfcc+youtube+vip+mpii_lip_16gpu_70k``."""
    config = base.get_config()
    config.data.train_lists = (
        "data/yfcc/lists/train.txt",
        "data/youtube9000/lists/train.txt",
        "data/VIP/lists/train.txt",
        "data/MPII/lists/train.txt",
    )
    config.guidance.bg_ratio = 0.00015625  # G = 80
    config.guidance.nms_ks = 15
    config.num_train_steps = 70_000
    config.optim.lr_steps = (40_000, 60_000)
    return config
