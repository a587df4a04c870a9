"""ResNet-50 on YFCC: the original's ``rep_learning/resnet50_yfcc_voc_16gpu_42k``.

The base config *is* this experiment, so nothing is overridden here; the file
exists so that every released experiment has a config of its own.

Launch::

    python main.py --config=configs/yfcc_resnet.py --workdir=runs/yfcc_resnet

Original: 16 GPUs x 10 images (global batch 160), 42k iterations (lr / 10 at
24k and 36k), crop 320 of short side 416, G = 165, K = 67, no guidance cap;
evaluation and checkpoint every 10k. Data: ``data/yfcc/lists/{train,val}.txt``
(the layout of docs/data.md; YFCC frames, flow and lists were released).

Cost: 42,000 steps x 160 = 6.72M images (the paper reports 7.5 h on 16 GTX
1080 Ti). Memory per device and throughput are measured in
docs/benchmarks.md, not here.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
    """Returns the config of ``resnet50_yfcc_voc_16gpu_42k`` (the base, unchanged)."""
    return base.get_config()
