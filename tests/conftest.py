"""Test setup: 4 fake CPU devices (set before JAX starts) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torchvision segfaults when imported after TensorFlow 2.21 in one process (seen with
# torch 2.14.1 / torchvision 0.29.1); the other order is fine, so import it first.
import jax  # noqa: E402
import torchvision  # noqa: E402, F401

# Tests compare numbers, not speed: skip XLA's slow optimisation passes.
jax.config.update("jax_disable_most_optimizations", True)
