"""ResNet-50 on YFCC: the original's ``rep_learning/resnet50_yfcc_voc_16gpu_42k``.

The base config *is* this experiment, so nothing is overridden here; the file
exists so that every released experiment has a config of its own.

Launch::

    python main.py --config=configs/yfcc_resnet.py --workdir=runs/yfcc_resnet

Original: 16 GPUs x 10 images (global batch 160), 42k iterations (lr / 10 at
24k and 36k), crop 320 of short side 416, G = 165, K = 67, no guidance cap;
evaluation and checkpoint every 10k. Data: ``data/yfcc/lists/{train,val}.txt``
(the README's layout; YFCC frames, flow and lists were released).

Cost: 42,000 steps x 160 = 6.72M images. The paper reports 7.5 h on 16 GTX
1080 Ti. Not measured here; rough estimates: training costs about 235 GFLOP
per image (3x the 78 GFLOP forward pass at 320x320, from XLA's cost
analysis), 1.6 EFLOP in all: 2-4.5 h on one H100 sustaining 100-200 TFLOP/s,
with the input pipeline (65-98 samples/s per CPU core, measured on the
development machine) needing about 5-13 host cores to keep up. Memory: XLA's
memory analysis (compiled for CPU) puts float32 training at about 0.9 GiB per
image, about 145 GiB for the global batch: more than one H100 (80 GB) or H200
(141 GB) holds, so use several devices (or a smaller ``batch_size``, which
changes the recipe).
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
    """Returns the config of ``resnet50_yfcc_voc_16gpu_42k`` (the base, unchanged)."""
    return base.get_config()
