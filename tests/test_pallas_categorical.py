"""The fused Pallas kernel of the pairwise categorical sweep takes the jax.numpy sweep's steps.

Interpreted (on any machine) it must give identical samples, so the exact-enumeration tests of the
jax.numpy sweep carry over to it; natively (CUDA GPUs, where `method="auto"` picks it for categorical
programs) it may differ only where the GPU's exp rounds a near-tie comparison the other way.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import Block, SamplingSchedule
from heatbath.graphs import color_blocks
from heatbath.kernels import pairwise_sweep
from heatbath.kernels.pallas_backend import pallas_available
from heatbath.kernels.pallas_categorical import categorical_block_update
from stats_helpers import random_init
from test_exact_agreement import _program
from test_pairwise_kernels import pairwise_categorical_model


def _run(program, k: int, chains: int, method: str, clamp: int = 0):
    """Samples of every node after a short schedule, from fixed chain keys and random initial states."""
    spins, cats, ebm = program
    blocks = color_blocks(ebm, nodes=cats[clamp:])
    clamped = [Block(cats[:clamp])] if clamp else []
    prog = _program(ebm, blocks, clamped, k)
    tables = pairwise_sweep.pairwise_tables(prog)
    all_blocks = list(blocks) + list(clamped)
    init = random_init(jax.random.key(0), all_blocks, chains, [k] * len(all_blocks), [jnp.uint8] * len(all_blocks))
    words = jnp.stack([jnp.arange(chains, dtype=jnp.uint32), jnp.full((chains,), 7, jnp.uint32)], 1)
    observed = [jnp.asarray(prog.gibbs_spec.node_ids(cats[clamp:]), jnp.int32)]
    schedule = SamplingSchedule(3, 1, 1)
    return pairwise_sweep._run_local(prog, schedule, tables, words, [s.T for s in init], observed, method)[0]


def test_interpreted_kernel_takes_the_same_steps_as_jax_numpy(monkeypatch):
    """A general pairwise categorical EBM (K = 3, random K×K couplings, several source blocks, a
    clamped block, a node count that is not a multiple of the node tile, 160 chains: one whole chain
    tile and a part of one): identical samples."""
    model = pairwise_categorical_model(np.random.default_rng(3), 41, 3)
    reference = _run(model, 3, 160, "gather", clamp=3)
    interpreted = functools.partial(categorical_block_update, interpret=True, tile_chains=32)
    monkeypatch.setattr(pairwise_sweep, "categorical_block_update", interpreted)
    kernel = _run(model, 3, 160, "pallas", clamp=3)
    np.testing.assert_array_equal(np.asarray(kernel), np.asarray(reference))


def test_categorical_pallas_needs_a_gpu():
    from heatbath.errors import HeatbathError

    if pallas_available():
        pytest.skip("a GPU is present: the method runs")
    with pytest.raises(HeatbathError, match="needs CUDA GPUs"):
        pairwise_sweep._method("pallas", None, _Kind("categorical"), jax.devices("cpu"), 8)


def test_tensor_methods_refuse_categorical_programs():
    from heatbath.errors import HeatbathError

    with pytest.raises(HeatbathError, match="spin programs only"):
        pairwise_sweep._method("tensor", None, _Kind("categorical"), jax.devices("cpu"), 8)


class _Kind:
    def __init__(self, kind):
        self.kind = kind


@pytest.mark.skipif(not pallas_available(), reason="the native kernel runs on a CUDA GPU")
def test_native_kernel_follows_the_jax_numpy_chain():
    model = pairwise_categorical_model(np.random.default_rng(5), 300, 5)
    reference = _run(model, 5, 512, "gather", clamp=4)
    kernel = _run(model, 5, 512, "pallas", clamp=4)
    agree = float(jnp.mean(kernel == reference))
    assert agree > 0.9999, agree


def test_blocks_beyond_int32_indices_take_the_jax_numpy_update():
    from heatbath.kernels.pallas_categorical import categorical_kernel_fits

    state = jax.ShapeDtypeStruct((1000, 128), jnp.uint8)
    neighbours = jax.ShapeDtypeStruct((1000, 4), jnp.int32)
    small = jax.ShapeDtypeStruct((1000, 4, 5, 5), jnp.float32)
    bias = jax.ShapeDtypeStruct((1000, 5), jnp.float32)
    assert categorical_kernel_fits(bias, [(state, neighbours, small)], 128)
    assert not categorical_kernel_fits(bias, [(state, neighbours, small)], 2**22)  # 1000 x 4M states
    huge = jax.ShapeDtypeStruct((2**24, 8, 16, 16), jnp.float32)  # 2^35 weights
    assert not categorical_kernel_fits(bias, [(state, neighbours, huge)], 128)
