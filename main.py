"""Training entry point: ``python main.py --config=configs/<experiment>.py --workdir=DIR``.

Flags only: ``--config`` (an ml_collections config file; fields can be
overridden, e.g. ``--config.batch_size=8``) and ``--workdir`` (checkpoints,
metrics; a workdir with checkpoints resumes). Hides the accelerators from
TensorFlow (it only feeds data), then calls
``cmp_jax.train.train_and_evaluate(config, workdir)``. A failed checkpoint save
exits with status 1 and its one message.

Once training has returned, every file of the run is written and closed
(checkpoints waited for, metric writers closed), and the process leaves with
``os._exit(0)`` after flushing its output. An ordinary interpreter exit
sometimes waited about a minute at this point (in 2 of 5 runs of the
embedded default, after the last log line) while the remaining background
threads were torn down; the thread that held it was not pinned down.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    """Hides accelerators from TensorFlow and runs the training loop."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import tensorflow as tf

    # TensorFlow only runs the input pipeline: keep it off the GPUs/TPUs JAX uses.
    tf.config.experimental.set_visible_devices([], "GPU")
    tf.config.experimental.set_visible_devices([], "TPU")

    from cmp_jax import checkpoint, train

    logging.info("config:\n%s", FLAGS.config)
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except checkpoint.CheckpointSaveError as e:
        # TensorStore is still finishing the failed save's other writes in its own
        # threads; an ordinary interpreter exit while they call back into Python can
        # abort the process ("exception not rethrown"). Everything of ours is closed.
        logging.error("%s", e)
        logging.flush()
        sys.stderr.write(f"error: {e}\n")
        sys.stderr.flush()
        os._exit(1)
    import jax

    if jax.process_count() > 1:
        jax.distributed.shutdown()
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    app.run(main)
