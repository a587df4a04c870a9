"""``model.remat``: block rematerialisation keeps parameters and numbers, saves activations.

The memory test counts the residuals the forward pass keeps for the backward
pass (the leaves of the ``jax.vjp`` closure), which is what ``remat`` changes
on every backend. XLA:CPU's compiled memory analysis cannot show it: the CPU
pipeline drops the optimisation barriers of ``jax.checkpoint`` and CSE merges
the recomputation back into the forward pass (ResNet-18 at 128x128, batch 4:
279.1 MiB temp either way).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmp_jax.flow import FlowBins
from cmp_jax.losses import discrete_flow_loss
from cmp_jax.models.cmp import CMP, build_model
from cmp_jax.models.layers import ModelOps
from tests.helpers import random_variables

BINS = FlowBins(num_bins=9, fmax=10.0)


def _model(backbone: str, remat: str, **kwargs) -> CMP:
    return CMP(backbone=backbone, img_enc_dim=16, num_bins=BINS.num_bins, remat=remat, **kwargs)


def _inputs(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = jnp.asarray(rng.standard_normal((n, size, size, 3)), jnp.float32)
    flow = jnp.asarray(5.0 * rng.standard_normal((n, size, size, 2)), jnp.float32)
    mask = jnp.asarray(rng.random((n, size, size, 1)) < 0.05, jnp.float32).repeat(2, -1)
    return image, flow * mask, mask, flow


def _loss_fn(model: CMP, batch_stats, inputs):
    image, sparse, mask, flow = inputs

    def loss(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            image, sparse, mask, True,
            mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)},
        )  # fmt: skip
        return discrete_flow_loss(logits, flow, BINS), updates["batch_stats"]

    return loss


def _shapes(tree):
    return jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), tree)


@pytest.mark.parametrize(
    "backbone, decoder, size",
    [("resnet18", "plain", 64), ("resnet18", "skip", 64), ("alexnet", "plain", 128)],
)
def test_remat_keeps_variable_tree(backbone, decoder, size):
    """Same parameter and batch-stat names, shapes and dtypes with and without remat."""
    combo = (1,) if decoder == "plain" else (1, 2, 4)
    image, sparse, mask, _ = _inputs(2, size)
    trees = [
        _shapes(jax.eval_shape(_model(backbone, r, decoder=decoder, decoder_combo=combo).init,
                               jax.random.key(0), image, sparse, mask))
        for r in ("none", "blocks")
    ]  # fmt: skip
    assert trees[0] == trees[1]


@pytest.mark.parametrize("backbone, size", [("resnet18", 64), ("alexnet", 64)])
def test_remat_same_loss_gradients_and_batch_stats(backbone, size):
    """Training-mode loss, every gradient and the BatchNorm updates equal those without remat."""
    inputs = _inputs(2, size)
    plain = _model(backbone, "none", decoder_combo=(1,))
    variables = random_variables(plain, *inputs[:3])
    results = []
    for remat in ("none", "blocks"):
        loss = _loss_fn(_model(backbone, remat, decoder_combo=(1,)), variables["batch_stats"], inputs)
        results.append(jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"]))
    ((loss0, stats0), grads0), ((loss1, stats1), grads1) = results
    np.testing.assert_allclose(loss1, loss0, rtol=1e-5)
    leaves0 = jax.tree_util.tree_leaves((grads0, stats0))
    leaves1 = jax.tree_util.tree_leaves((grads1, stats1))
    for a, b in zip(leaves0, leaves1, strict=True):
        # The floor covers the conv biases before a BatchNorm, whose gradient is rounding noise.
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(a))) + 2e-6)
    assert jax.tree_util.tree_structure(grads0) == jax.tree_util.tree_structure(grads1)


def _residual_bytes(model: CMP, n: int, size: int) -> int:
    inputs = _inputs(n, size)
    variables = jax.eval_shape(model.init, jax.random.key(0), *inputs[:3])

    def vjp_fn(v):
        return jax.vjp(_loss_fn(model, v["batch_stats"], inputs), v["params"], has_aux=True)[1]

    residuals = jax.eval_shape(vjp_fn, variables)
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(residuals))


def test_remat_saves_activation_memory():
    """ResNet-18 at 128x128, batch 4: the backward pass keeps under a third of the bytes.

    Measured: 299.8 MiB of residuals (activations and parameters) without
    remat, 85.5 MiB with.
    """
    without = _residual_bytes(_model("resnet18", "none", decoder_combo=(1,)), 4, 128)
    with_remat = _residual_bytes(_model("resnet18", "blocks", decoder_combo=(1,)), 4, 128)
    assert with_remat < without / 3


def test_remat_rejects_unknown_mode():
    """ModelOps and CMP name the accepted modes."""
    with pytest.raises(ValueError, match=r"unknown remat 'layers'.*'none', 'blocks'"):
        ModelOps(remat="layers")
    image, sparse, mask, _ = _inputs(1, 64)
    with pytest.raises(ValueError, match="unknown remat"):
        jax.eval_shape(
            build_model({"backbone": "resnet18", "remat": "all"}).init, jax.random.key(0), image, sparse, mask
        )
