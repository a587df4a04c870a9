"""Base config: every field, commented, with the original's values as defaults.

Experiment files import ``get_config`` from here and override only what differs.
Groups: ``model`` (architecture and initialisation) and ``flow`` (quantisation
of the flow target). Data, guidance, optimiser, training, checkpoint and logging
groups are added with the training loop.
"""

import ml_collections


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

    # --- flow quantisation: cmp_jax.flow.FlowBins(**config.flow)
    config.flow = ml_collections.ConfigDict()
    # Classes per flow axis C (odd); the decoder outputs 2 * C logits.
    config.flow.num_bins = 99
    # Flow range in pixels; targets are clamped to +-(fmax - 1e-3) before binning.
    config.flow.fmax = 50.0

    return config
