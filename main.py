"""Training entry point: ``python main.py --config=configs/<experiment>.py --workdir=DIR``.

The training loop (``cmp_jax.train.train_and_evaluate``) is not written yet;
until it is, this entry point validates the config, builds the model it names
and exits with a message saying so, instead of pretending to train.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    """Validates the config and builds its model; training is not implemented yet."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from cmp_jax.models import build_model

    config = FLAGS.config
    model = build_model(config.model, num_bins=config.flow.num_bins)
    logging.info("config is valid; model: %s + %s decoder", model.backbone, model.decoder)
    sys.exit("training is not implemented yet (the training loop is a later issue); nothing was run")


if __name__ == "__main__":
    app.run(main)
