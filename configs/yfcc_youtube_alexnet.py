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

Cost: 140,000 steps x 192 = 26.88M images. Not measured; rough estimates:
training costs about 44 GFLOP per image (3x the 15 GFLOP forward pass at
384x384, from XLA's cost analysis), 1.2 EFLOP in all: 1.5-3.5 h of H100
compute at 100-200 TFLOP/s, so the input pipeline (65-98 samples/s per CPU
core, measured on the development machine) sets the pace: about 5-7 h with
16 host cores. Memory: XLA's memory analysis (compiled for CPU) puts float32
training at about 0.51 GiB per image, about 100 GiB for the global batch:
more than one H100 (80 GB) holds, within one H200 (141 GB).
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
    """Returns the config of ``alexnet_yfcc+youtube_voc_16gpu_140k``."""
    config = base.get_config()
    config.model.backbone = "alexnet"  # stride 32; model.output_stride is unused
    config.data.crop_size = (384, 384)
    config.data.train_lists = (
        "data/yfcc/lists/train.txt",
        "data/youtube9000/lists/train.txt",
    )
    config.guidance.bg_ratio = 0.000025  # G = 200
    config.guidance.nms_ks = 81
    config.guidance.max_num_guide = 150
    config.batch_size = 192  # 16 GPUs x 12
    config.num_train_steps = 140_000
    config.optim.lr_steps = (80_000, 120_000)
    return config
