"""BN-AlexNet on YFCC, 8 GPUs: the original's ``rep_learning/alexnet_yfcc_voc_8gpu_140k``.

The single-node recipe: ``configs/yfcc_alexnet.py`` with half the
global batch and twice the iterations, so it sees the same 13.44M images.

Launch::

    python main.py --config=configs/yfcc_alexnet_8gpu.py --workdir=runs/yfcc_alexnet_8gpu

Original: 8 GPUs x 12 images (global batch 96), 140k iterations (lr / 10 at
80k and 120k), crop 384 of short side 416, G = 80, K = 41, at most 150
guidance points; evaluation and checkpoint every 10k. Data: YFCC, as the base.

Cost: 140,000 steps x 96 = 13.44M images. Memory per device and
throughput are measured in docs/benchmarks.md, not here.
"""

import ml_collections

from configs import yfcc_alexnet


def get_config() -> ml_collections.ConfigDict:
    """Returns the config of ``alexnet_yfcc_voc_8gpu_140k`` (``yfcc_alexnet`` on 8 GPUs)."""
    config = yfcc_alexnet.get_config()
    config.batch_size = 96  # 8 GPUs x 12
    config.num_train_steps = 140_000
    config.optim.lr_steps = (80_000, 120_000)
    return config
