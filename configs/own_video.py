r"""Your own videos: a small CMP on frames and flow from scripts/extract_flow.py, for a CPU or one GPU.

The three commands (from the repository root; ``VIDEOS`` is a video file or a
folder searched for videos, ``OUT`` the extraction folder)::

    .venv/bin/python scripts/extract_flow.py --videos VIDEOS --out OUT --resize 192 --val-fraction 0.2
    .venv/bin/python main.py --config=configs/own_video.py --config.data.root=OUT --workdir=runs/own_video
    .venv/bin/python scripts/predict.py --workdir runs/own_video \
        --image OUT/$(head -n1 OUT/val.txt | cut -d' ' -f1) --arrow 80,60,10,0 --out runs/own_video/pred

The first writes ``OUT/train.txt`` and ``OUT/val.txt`` (the last 20 % of each
video's frame pairs, after a gap, so validation frames are never trained on)
with the flow as the original's 8-bit jpg pairs (``data.flow_type = "jpg"``,
extract_flow's default ``--format``); ``--resize 192`` stores frames at the
short side this config trains at. The list files are found under
``data.root`` (a relative list path is looked up there first). The third
predicts the flow of a validation frame (the first frame of ``OUT/val.txt``,
never trained on) from one arrow ``x,y,dx,dy`` in pixels and writes
``runs/own_video/pred.flo`` and ``pred.png``.

Model, optimiser and learning switches come from ``configs/synthetic.py``
(original initialisation, lr 0.02 with a cosine schedule, Gaussian bin
targets with ``loss.label_sigma = 1`` px, 99 bins over +-50 px), so
improvements made there carry over; the data, the sizes and the step counts
are set here:
ResNet-18 at output stride 8, batch 8, frames resized to a short side of 192 and
160 x 160 crops (random for training, centred for evaluation), grid +
watershed guidance scaled to the crop with the paper's ratios at 320 px
(G = 165 ~ crop / 2, K = 67 ~ crop / 5): G = 80 and K = 33. 3000 steps of
batch 8, evaluating every 250 steps on the whole ``val.txt`` (EPE of the model
beside the zero-flow, nearest-guidance and splat baselines) and saving a
checkpoint every 250 steps; the cosine schedule follows a command-line
``--config.num_train_steps=N``. docs/own_videos.md gives
a measured run on real footage.
"""

from configs import synthetic


def get_config():
    """Returns the own-video config (lists written by scripts/extract_flow.py under data.root)."""
    config = synthetic.get_config()
    config.model.backbone = "resnet18"
    config.model.output_stride = 8
    config.data.source = "lists"
    # Relative to data.root (--config.data.root=OUT): extract_flow.py --val-fraction writes both there.
    config.data.train_lists = ("train.txt",)
    config.data.val_lists = ("val.txt",)
    config.data.flow_type = "jpg"  # extract_flow.py --format jpg (its default); "flo" for --format flo
    config.data.short_size = 192
    config.data.crop_size = (160, 160)
    config.guidance.bg_ratio = 1 / 80**2  # grid stride G = 80
    config.guidance.nms_ks = 33
    config.batch_size = 8
    config.num_train_steps = 3000
    config.eval_batch_size = 8
    config.num_eval_batches = -1
    config.eval_every_steps = 250
    config.eval_at_start = True
    config.checkpoint_every_steps = 250
    config.log_every_steps = 50
    # Label propagation on synthetic clips says little about a model of real footage.
    config.label_prop.num_clips = 0
    return config
