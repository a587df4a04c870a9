"""BN-AlexNet on YFCC + YouTube9K: the original's ``rep_learning/alexnet_yfcc+youtube_voc_16gpu_140k``.

The "CMP (3.22M)" row of the original's results (1.26M YFCC + 1.96M YouTube9K
image-flow pairs). YouTube9K's frames, flow and lists were never released:
make ``data/youtube9000/lists/train.txt`` yourself (``scripts/extract_flow.py``
writes lists in the original's format). Validation is on YFCC.

Launch::

    python main.py --config=configs/yfcc_youtube_alexnet.py --workdir=runs/yfcc_youtube_alexnet

Original: 16 GPUs x 12 images (global batch 192), 140k iterations (lr / 10 at
80k and 120k), crop 384 of short side 416, G = 200, K = 81 (the paper's
values), at most 150 guidance points; evaluation and checkpoint every 10k.

Cost: 140,000 steps x 192 = 26.88M images. Memory per device and
throughput are measured in docs/benchmarks.md, not here.
"""

import ml_collections

from configs import yfcc_alexnet


def get_config() -> ml_collections.ConfigDict:
    """Returns ``alexnet_yfcc+youtube_voc_16gpu_140k``: ``yfcc_alexnet``, YouTube9K, G 200, K 81, 140k."""
    config = yfcc_alexnet.get_config()
    config.data.train_lists = (
        "data/yfcc/lists/train.txt",
        "data/youtube9000/lists/train.txt",
    )
    config.guidance.bg_ratio = 0.000025  # G = 200
    config.guidance.nms_ks = 81
    config.num_train_steps = 140_000
    config.optim.lr_steps = (80_000, 120_000)
    return config
