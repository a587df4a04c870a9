"""ResNet-50, skip decoder, VIP + MPII: the original's ``semiauto_annot/resnet50_vip+mpii_liteflow``.

The recipe of the released demo model (``ckpt_iter_42000.pth.tar``, used for
the CMP and semi-automatic annotation demos): skip-layer decoder, logits at
1/2 resolution. VIP and MPII frames, flow (LiteFlowNet) and lists were never
released: make ``data/VIP/lists/{train,randval}.txt`` and
``data/MPII/lists/train.txt`` yourself (``scripts/extract_flow.py``).

Launch::

    python main.py --config=configs/semiauto_resnet.py --workdir=runs/semiauto_resnet

Original: 8 GPUs x 8 images (global batch 64), 42k iterations (lr / 10 at
24k and 36k), crop 384 of short side 416, G = 131, K = 41, no guidance cap;
evaluation and checkpoint every 5k, validation on VIP ``randval``.

Cost: 42,000 steps x 64 = 2.69M images. Memory per device and
throughput are measured in docs/benchmarks.md, not here.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
    """Returns the config of ``semiauto_annot/resnet50_vip+mpii_liteflow``."""
    config = base.get_config()
    config.model.decoder = "skip"  # ignores model.decoder_combo (always 1, 2, 4, 8)
    config.data.train_lists = ("data/VIP/lists/train.txt", "data/MPII/lists/train.txt")
    config.data.val_lists = ("data/VIP/lists/randval.txt",)
    config.data.crop_size = (384, 384)
    config.guidance.bg_ratio = 5.74e-5  # G = 131
    config.guidance.nms_ks = 41
    config.batch_size = 64  # 8 GPUs x 8
    config.eval_every_steps = 5_000
    config.checkpoint_every_steps = 5_000
    return config
