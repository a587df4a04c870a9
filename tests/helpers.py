"""Helpers shared by the model tests: non-trivial random weights for parity checks."""

import jax
import jax.numpy as jnp
import numpy as np


def count_params(tree) -> int:
    """Number of scalars in a pytree of arrays or shape structs."""
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def random_variables(model, *inputs, seed: int = 0, init_fn=None):
    """Random variables of ``model`` drawn in NumPy (much faster than a jitted init on CPU).

    Conv kernels are He-normal (std sqrt(2 / (k * k * out))); biases N(0, 0.1);
    BN scales U(0.5, 1.5) except the last BN of each bottleneck (``bn3``), drawn
    from U(0.1, 0.3) as in trained ResNets: with unit-scale residual branches
    the float32 rounding noise of 16 blocks compounds to ~1e-3 on the logits,
    in PyTorch and JAX alike (measured against float64). Running statistics
    are mean 0, var 1; see ``calibrate``.

    Args:
      model: a Flax module.
      *inputs: example inputs of ``model.init`` (arrays or shape structs).
      seed: NumPy seed.
      init_fn: alternative to ``model.init`` (same signature).

    Returns:
      The variables pytree with float32 NumPy leaves.
    """
    shapes = jax.eval_shape(init_fn or model.init, jax.random.key(0), *inputs)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":
            x = rng.standard_normal(shape) * np.sqrt(2.0 / (np.prod(shape[:-2]) * shape[-1]))
        elif name == "bias":
            x = 0.1 * rng.standard_normal(shape)
        elif name == "scale":
            low = 0.1 if path[-2].key == "bn3" else 0.5
            x = rng.uniform(low, 3 * low, shape)
        elif name == "mean":
            x = np.zeros(shape)
        elif name == "var":
            x = np.ones(shape)
        else:
            raise ValueError(f"no random rule for {jax.tree_util.keystr(path)}")
        return x.astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def calibrate(model, variables, *inputs, key=None):
    """Sets every running BN statistic to the batch statistic of ``inputs`` (train mode).

    Eval-mode activations then keep a sane scale through deep nets, so a parity
    tolerance in absolute units is meaningful. Recovers the batch statistic from
    the momentum-0.1 update new = 0.9 * old + 0.1 * batch.
    """
    rngs = {"dropout": key if key is not None else jax.random.key(0)}
    _, updated = model.apply(variables, *inputs, train=True, mutable=["batch_stats"], rngs=rngs)
    stats = jax.tree_util.tree_map(
        lambda new, old: (new - 0.9 * old) / 0.1, updated["batch_stats"], variables["batch_stats"]
    )
    return {**variables, "batch_stats": stats}


def random_inputs(batch: int, height: int, width: int, seed: int = 0, density: float = 0.01):
    """A random normalised image and guidance (sparse, mask), NHWC float32 NumPy arrays."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((batch, height, width, 3)).astype(np.float32)
    mask = (rng.random((batch, height, width, 1)) < density).astype(np.float32).repeat(2, -1)
    sparse = (rng.uniform(-30, 30, (batch, height, width, 2)) * mask).astype(np.float32)
    return jnp.asarray(image), jnp.asarray(sparse), jnp.asarray(mask)


def constant_flow_variables(model, size: int, kx: int, ky: int, seed: int = 0):
    """Variables of ``model`` whose logits peak at bins (kx, ky) at every pixel, whatever the input.

    The decoder head's kernel is zero and its bias 40 at x bin ``kx`` and y bin
    ``ky`` (0 elsewhere), so the soft-argmax flow is the two bin centres
    (to ~1e-15) everywhere.
    """
    variables = random_variables(model, *random_inputs(1, size, size), seed=seed)
    head = variables["params"]["flow_decoder"]["head"]
    head["kernel"] = np.zeros_like(head["kernel"])
    bias = np.zeros_like(head["bias"])
    bias[kx] = bias[model.num_bins + ky] = 40.0
    head["bias"] = bias
    return variables
