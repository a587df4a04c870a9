"""Helpers shared by the model tests: non-trivial random weights for parity checks."""

import jax
import jax.numpy as jnp
import numpy as np


def count_params(tree) -> int:
    """Number of scalars in a pytree of arrays or shape structs."""
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def randomize(variables, key):
    """Replaces BN affine params and biases by random values so nothing is trivially 0 or 1."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    keys = jax.random.split(key, len(leaves))
    out = []
    for (path, x), k in zip(leaves, keys, strict=True):
        name = path[-1].key
        if name == "scale":
            x = jax.random.uniform(k, x.shape, minval=0.5, maxval=1.5)
        elif name == "bias":
            x = 0.1 * jax.random.normal(k, x.shape)
        out.append(x)
    return jax.tree_util.tree_unflatten(treedef, out)


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
