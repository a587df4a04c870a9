"""Base config: every field, commented, with the original's values as defaults.

Experiment files import ``get_config`` from here and override only what differs.
Groups: ``model`` (architecture and initialisation), ``flow`` (quantisation of
the flow target), ``data`` (sources and transforms), ``guidance`` (sparse
guidance sampling) and ``optim`` (optimiser and schedule); the training,
checkpoint and logging fields sit at the top level (``config.batch_size``,
``config.checkpoint_every_steps``, ...). The defaults are the ResNet-50 YFCC
experiment's (``rep_learning/resnet50_yfcc_voc_16gpu_42k``: 16 GPUs x 10 images).
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """Returns the base config (original defaults: ResNet-50, plain decoder)."""
    config = ml_collections.ConfigDict()

    # --- model: cmp_jax.models.build_model(config.model, num_bins=config.flow.num_bins)
    config.model = ml_collections.ConfigDict()
    # Image encoder: "alexnet" (BN-AlexNet FCN, stride 32) or "resnet18/34/50/101".
    config.model.backbone = "resnet50"
    # Propagation decoder: "plain" (representation learning) or "skip" (demo model).
    config.model.decoder = "plain"
    # Pooling strides of the plain decoder's branches (each of 1, 2, 4, 8).
    config.model.decoder_combo = (1, 2, 4)
    # ResNet output stride: 8 (original; layer3/4 dilated), 16 or 32. AlexNet is 32.
    config.model.output_stride = 8
    # Channels of the image features and of the sparse-motion features.
    config.model.img_enc_dim = 256
    config.model.sparse_enc_dim = 16
    # "original": Xavier-normal gain 0.02 on every conv, BN scale ~ N(1, 0.02)
    # (what the original ends up with); "he": He-normal fan-out, BN scale 1.
    config.model.init_scheme = "original"
    # Compute dtype: "float32" (original) or "bfloat16" (parameters, loss and
    # soft-argmax stay float32).
    config.model.dtype = "float32"
    # ResNet dilation pattern: "cmp" (every block of a dilated layer dilated, as
    # the original) or "torchvision" (first block keeps the previous dilation).
    config.model.dilation_style = "cmp"
    # Convolution formulation: "xla" (lax.conv; the native path on GPU/TPU),
    # "taps" (a sum of per-tap matmuls, same parameters; XLA:CPU computes its
    # gradients faster than lax.conv's) or "auto": "taps" when JAX's backend is
    # the CPU, "xla" otherwise (decided once and logged).
    config.model.conv_impl = "auto"
    # "bilinear" (the original: logits at 1/stride, upsampled bilinearly by the loss and
    # the read-out) or "convex" (learned convex upsampling to full resolution, as RAFT
    # does; plain decoder only; not in the original).
    config.model.upsample = "bilinear"
    # "none" or "blocks": recompute each ResNet block / AlexNet stage / decoder
    # branch in the backward pass (less activation memory kept, more compute;
    # the same parameters and function).
    config.model.remat = "none"

    # --- flow quantisation: cmp_jax.flow.FlowBins(**config.flow)
    config.flow = ml_collections.ConfigDict()
    # Classes per flow axis C (odd); the decoder outputs 2 * C logits.
    config.flow.num_bins = 99
    # Flow range in pixels; targets are clamped to +-(fmax - 1e-3) before binning.
    config.flow.fmax = 50.0

    # Seed of initialisation, dropout, data order, crops, flips and guidance.
    config.seed = 0

    # --- data: input_pipeline.pipeline.create_from_config
    config.data = ml_collections.ConfigDict()
    # "lists" (the original's list files), "synthetic" (embedded generator) or
    # "tfds" (a prepared cmp_flow TFDS dataset).
    config.data.source = "lists"
    # List files, concatenated in order; paths inside are relative to `root`
    # (or to the working directory when root is None) unless absolute. A relative
    # list file path is looked up under `root` first, then in the working directory.
    config.data.train_lists = ("data/yfcc/lists/train.txt",)
    config.data.val_lists = ("data/yfcc/lists/val.txt",)
    # A placeholder reads back as None but, unlike a plain None, can be set from
    # the command line (--config.data.root=DIR); the same for tfds.data_dir.
    config.data.root = config_dict.placeholder(str)
    # "jpg": `frame1 frame2 flow_x flow_y` (8-bit flow images over +-50 px);
    # "flo": `frame1 frame2 flow.flo`.
    config.data.flow_type = "jpg"
    # Bad examples (wrong column count, missing or undecodable file, size
    # mismatch, non-finite flow, flow beyond max_flow_magnitude): False raises an
    # error naming list file, line and path; True skips them (substituting the
    # next example) and counts them (train/bad_examples).
    config.data.skip_bad_examples = False
    # Pixels: a flow value with |dx| or |dy| above it makes the example bad, as
    # NaN does. No motion between two frames is that large; such a value comes
    # from a corrupt .flo and would otherwise train as the outermost flow bin.
    config.data.max_flow_magnitude = 1e4
    # Shorter side after resizing and the crop (random for training, centred
    # for eval; zero padding when smaller), pixels; crop_size is (height, width).
    config.data.short_size = 416
    config.data.crop_size = (320, 320)
    # Horizontal flip with dx negated, p = 0.5 (off in the original).
    config.data.flip = False
    # Threads of the per-example work (-1: tf.data AUTOTUNE) and batches prefetched.
    config.data.num_parallel_calls = -1
    config.data.prefetch = 2
    # The embedded procedural dataset (data.source = "synthetic").
    config.data.synthetic = ml_collections.ConfigDict()
    config.data.synthetic.height = 416
    config.data.synthetic.width = 416
    config.data.synthetic.train_size = 10_000
    config.data.synthetic.val_size = 256
    config.data.synthetic.train_seed = 0
    config.data.synthetic.val_seed = 1
    # Radii in pixels of the discs of object and camera (background)
    # translations; they do not scale with the image size.
    config.data.synthetic.max_object_shift = 30.0
    config.data.synthetic.max_camera_shift = 8.0
    # Objects per example (uniform in [min, max]) and their radii as fractions of
    # min(height, width); the other generator fields keep SyntheticConfig's defaults.
    config.data.synthetic.min_objects = 1
    config.data.synthetic.max_objects = 5
    config.data.synthetic.min_object_radius = 0.07
    config.data.synthetic.max_object_radius = 0.2
    # A prepared TFDS dataset (data.source = "tfds"); see input_pipeline/tfds_builder.
    config.data.tfds = ml_collections.ConfigDict()
    config.data.tfds.name = "cmp_flow/lists"
    config.data.tfds.data_dir = config_dict.placeholder(str)
    config.data.tfds.train_split = "train"
    config.data.tfds.val_split = "validation"

    # --- guidance: input_pipeline.guidance.SamplerConfig
    config.guidance = ml_collections.ConfigDict()
    # Strategies combined: "grid", "watershed", "uniform", "single", "full".
    config.guidance.strategy = ("grid", "watershed")
    # Grid stride G = int(sqrt(1 / bg_ratio)) (165 here, float truncation kept).
    config.guidance.bg_ratio = 0.00003629
    # Watershed NMS window K (odd); points closer than (K - 1) / 2 are thinned.
    config.guidance.nms_ks = 67
    # Keep at most this many guidance points (-1: all).
    config.guidance.max_num_guide = -1

    # --- optim: optax SGD with step decay (cmp_jax.state.create_optimizer)
    config.optim = ml_collections.ConfigDict()
    # Learning rate at step 0 (not scaled with the batch size, as the original).
    config.optim.lr = 0.1
    config.optim.momentum = 0.9
    # Added to the gradient of every parameter (BN and biases included) before
    # momentum, as PyTorch's SGD(weight_decay=...) does.
    config.optim.weight_decay = 1e-4
    # Steps at which the lr is multiplied by lr_decay; () = 2/3.5 and 3/3.5 of
    # num_train_steps, rounded (the paper's schedule).
    config.optim.lr_steps = (24_000, 36_000)
    config.optim.lr_decay = 0.1
    # "step" (the original: the decay above) or "cosine" (lr * (1 + cos(pi t)) / 2,
    # t from 0 after the warm-up to 1 at num_train_steps; lr_steps unused).
    config.optim.schedule = "step"
    # Linear warm-up: the first warmup_steps steps' lr is scaled by (step + 1) /
    # warmup_steps (0: none, as the original).
    config.optim.warmup_steps = 0

    # --- loss: cmp_jax.losses.discrete_flow_loss (training; eval/loss stays unweighted)
    config.loss = ml_collections.ConfigDict()
    # 0 (original): every pixel counts the same. w > 0: pixel weights 1 + w * |flow|
    # (|flow| in pixels), normalised over the batch, so fast pixels count more.
    config.loss.motion_weight = 0.0
    # 0 (original): one-hot bin targets. s > 0: Gaussian targets over the bin
    # centres with standard deviation s pixels around the exact flow value.
    config.loss.label_sigma = 0.0
    # 0 (original): cross-entropy only. w > 0: plus w x the mean end-point error
    # (pixels) of the soft-argmax flow, the quantity evaluation reports.
    config.loss.epe_weight = 0.0

    # --- train
    # Global batch over all devices of all processes (original: per-GPU batch x
    # GPUs = 10 x 16); per-device batch = batch_size / (local devices x processes).
    config.batch_size = 160
    # Gradient accumulation: each optimiser step averages the gradients of k
    # micro-batches of batch_size / k run one after the other (BatchNorm
    # statistics updated per micro-batch); the lr schedule counts optimiser steps.
    config.grad_accum_steps = 1
    config.num_train_steps = 42_000
    # BatchNorm statistics averaged over all devices in training (False: per
    # device, as the original).
    config.sync_batchnorm = False
    # Initialise jax.distributed (multi-process run): "auto" when the launcher's
    # environment names a coordinator (JAX_COORDINATOR_ADDRESS, SLURM, ...),
    # "on" / "off" to force it.
    config.distributed = "auto"

    # --- eval
    # Steps between evaluations on data.val_lists (and one at the end); 0: only at the end.
    config.eval_every_steps = 10_000
    # Global eval batch; eval covers the validation set once, the last
    # incomplete batch dropped; num_eval_batches > 0 stops earlier.
    config.eval_batch_size = 16
    config.num_eval_batches = -1
    # Also evaluate before the first step (the original's initial_val).
    config.eval_at_start = True
    # Images of the first eval batch drawn as pictures (image | target | prediction).
    config.num_pictures = 4

    # --- label propagation: representation quality as video J&F
    # (cmp_jax.evaluation.video_segmentation; scripts/eval_label_propagation.py).
    config.label_prop = ml_collections.ConfigDict()
    # Held-out synthetic clips scored at each evaluation (eval/label_prop/jf); 0: off.
    config.label_prop.num_clips = 0
    config.label_prop.num_frames = 8
    # Clips repeat each frame-pair motion of data.synthetic every frame, scaled by this.
    config.label_prop.motion_scale = 0.25
    # Generator seed of the clips (neither data.synthetic.train_seed nor val_seed).
    config.label_prop.seed = 100
    # Encoder output used: "layer4" (the ResNet trunk's stride-8 output, as the
    # correspondence literature reads ResNets), "features" (after conv5), "layer1", "stem".
    config.label_prop.feature = "layer4"
    # The protocol of the correspondence literature: previous predicted frames
    # kept as references, matches kept per position, search window half side in
    # feature pixels, softmax temperature.
    config.label_prop.context = 20
    config.label_prop.topk = 10
    config.label_prop.radius = 12
    config.label_prop.temperature = 0.05

    # --- checkpoint: Orbax, in workdir/checkpoints
    config.checkpoint_every_steps = 10_000
    config.max_to_keep = 3

    # --- log
    # Steps between train metric lines (loss, lr, steps/s, images/s, guidance points).
    config.log_every_steps = 100

    return config
