"""The embedded default: a small CMP on the procedural moving-sprites dataset.

Launch (no download needed; about 15 minutes on a 2-core CPU)::

    python main.py --config=configs/synthetic.py --workdir=runs/synthetic

ResNet-18 (output stride 8) with the plain decoder, 128 x 128 crops from
144 x 144 procedural frames, grid + watershed guidance with K and G scaled from
the paper's 384-pixel values (K = 27, G = 67). Evaluation compares the model's
end-point error with the zero-flow, nearest-guidance and Gaussian-splat
baselines on the same 128 validation examples.
"""

from configs import base


def get_config():
    """Returns the synthetic-data config."""
    config = base.get_config()
    config.model.backbone = "resnet18"
    config.data.source = "synthetic"
    config.data.synthetic.height = 144
    config.data.synthetic.width = 144
    config.data.synthetic.val_size = 128
    config.data.short_size = 144
    config.data.crop_size = (128, 128)
    config.guidance.bg_ratio = 1 / 67**2
    config.guidance.nms_ks = 27
    config.batch_size = 16
    config.num_train_steps = 600
    config.optim.lr_steps = ()
    config.eval_batch_size = 16
    config.eval_every_steps = 200
    config.eval_at_start = False
    config.checkpoint_every_steps = 200
    config.log_every_steps = 20
    return config
