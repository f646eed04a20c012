"""The dense layer's product from two float16 digits (`kernels.dense_product`, the CUDA GPU route)
carries float32-sized errors for rows of scales from 1e-30 to 1e28, gives the same bits whatever the chains it runs
with, and the platform choice picks the float32 product on CPUs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath.kernels.dense_product import DEPTH_CHUNK, dense_field, float16_digits, float16_parts_product, float32_product


def _rows_of_many_scales(rng, m):
    """An RBM-like layer whose rows span 60 orders of magnitude, a zero row, and a row whose
    couplings themselves span six orders (small ones must keep their absolute accuracy)."""
    w = rng.normal(0, 1, (8, m)) * np.array([1e-30, 1e-6, 0.05, 1.0, 3e3, 1e28, 0.0, 1.0])[:, None]
    w[7] *= 10.0 ** rng.uniform(-6, 0, m)
    return w.astype(np.float32)


def test_float16_parts_are_as_accurate_as_a_float32_product_on_every_row_scale():
    rng = np.random.default_rng(5)
    m, chains = 784, 64
    w = _rows_of_many_scales(rng, m)
    states = rng.choice(np.array([-1, 1], np.int8), (m, chains))
    exact = w.astype(np.float64) @ states.astype(np.float64)
    parts = np.asarray(jax.jit(float16_parts_product)(jnp.asarray(w), jnp.asarray(states)), np.float64)
    assert np.all(np.isfinite(parts))
    np.testing.assert_array_equal(parts[6], 0.0)
    top = np.abs(w).max(axis=1).astype(np.float64)
    # each coupling within 2^-23 of its row's largest, and float32 accumulation: sqrt(m) such terms
    # as a typical sum gives ~2^-18 here; dropping the second part gives ~2^-13, no row scaling 1.
    relative = np.abs(parts - exact).max(axis=1)[top > 0] / (top[top > 0] * np.sqrt(m))
    assert relative.max() < 2.0**-20, relative


def test_float16_parts_match_the_float32_products_error_on_an_rbm_layer():
    rng = np.random.default_rng(6)
    w = rng.normal(0, 0.05, (500, 784)).astype(np.float32)
    states = rng.choice(np.array([-1, 1], np.int8), (784, 256))
    exact = w.astype(np.float64) @ states.astype(np.float64)
    error = {f.__name__: np.abs(np.asarray(jax.jit(f)(jnp.asarray(w), jnp.asarray(states)), np.float64) - exact).max()
             for f in (float16_parts_product, float32_product)}
    assert error["float16_parts_product"] <= 2 * error["float32_product"], error


def test_dense_field_takes_the_float32_product_on_cpu():
    rng = np.random.default_rng(7)
    w = jnp.asarray(rng.normal(0, 0.3, (40, 96)), jnp.float32)
    states = jnp.asarray(rng.choice(np.array([-1, 1], np.int8), (96, 16)))
    cpu = jax.devices("cpu")[0]
    w, states = jax.device_put(w, cpu), jax.device_put(states, cpu)
    np.testing.assert_array_equal(np.asarray(jax.jit(dense_field)(w, states)),
                                  np.asarray(jax.jit(float32_product)(w, states)))


def test_float16_digits_are_integers_that_float16_holds_and_represent_each_coupling_to_2_pow_minus_23():
    """w · up = a + b / 4096 to within 2^-13 with integer digits of at most 2048 (exact in float16),
    the row's largest |w · up| in (2^10, 2^11]: each coupling within 2^-23 of its row's largest."""
    w = _rows_of_many_scales(np.random.default_rng(8), 512)
    a, b, up = (np.asarray(x, np.float64) for x in jax.jit(float16_digits)(jnp.asarray(w)))
    for digit in (a, b):
        np.testing.assert_array_equal(digit, np.round(digit))
        assert np.abs(digit).max() <= 2048
    top = np.abs(w).max(axis=1, keepdims=True) * up
    assert np.all((top[top > 0] > 2.0**10) & (top[top > 0] <= 2.0**11))
    assert np.abs(a + b / 4096 - w.astype(np.float64) * up).max() <= 2.0**-13
    assert np.mean(b[:6] != 0) > 0.99  # the second digit carries the first's rounding (rows 6, 7: zero, tiny)


def _integer_reference(w, states):
    """The product as the module defines it, from exact int64 sums of the digits: what every GPU
    algorithm, chunking and order of the additions must give, bit for bit."""
    a, b, up = (np.asarray(x) for x in jax.jit(float16_digits)(jnp.asarray(w)))
    s = states.astype(np.int64)
    first, second = (np.float32(d.astype(np.int64) @ s) for d in (a, b))
    return (first + second * np.float32(1 / 4096)) / up


@pytest.mark.parametrize("depth,values", [(784, (-1, 1)), (784, (0, 1)), (DEPTH_CHUNK + 904, (-1, 1))],
                         ids=["spins", "indicators", "deeper than a chunk"])
def test_float16_digits_give_the_same_field_bits_for_any_chains(depth, values):
    """The field is a fixed function of w and the states (exact integer sums), so a chain's field has
    the same bits whichever chains share the product: what makes a chain's samples independent of
    the number of chains and devices where cuBLAS picks its algorithm by shape."""
    rng = np.random.default_rng(9)
    w = (rng.normal(0, 0.05, (96, depth)) * 10.0 ** rng.uniform(-3, 0, (96, 1))).astype(np.float32)
    states = rng.choice(np.array(values, np.int8), (depth, 300))
    product = jax.jit(float16_parts_product)
    full = np.asarray(product(jnp.asarray(w), jnp.asarray(states)))
    np.testing.assert_array_equal(full, _integer_reference(w, states))
    for chains in (slice(0, 1), slice(3, 10), slice(41, 241)):
        np.testing.assert_array_equal(np.asarray(product(jnp.asarray(w), jnp.asarray(states[:, chains]))),
                                      full[:, chains])


def test_sums_beyond_float32s_integers_are_made_exactly_in_chunks():
    """The worst case for a float32 accumulator: 9,001 couplings whose digits are all 2047, all states
    +1. The exact sum, 18,425,047, is odd and above 2^24; the chunks' int32 sum rounds it once, to
    the nearest float32. A float32 sum of all 9,001 terms would round at every step past 2^24 (which
    XLA:CPU's float16 product happens not to do, so without the chunks this fails on GPUs only)."""
    w = np.full((4, 9001), 2047.0, np.float32) * np.array([1.0, -1.0, 2.0**-40, 2.0**30], np.float32)[:, None]
    states = np.ones((9001, 3), np.int8)
    field = np.asarray(jax.jit(float16_parts_product)(jnp.asarray(w), jnp.asarray(states)), np.float64)
    exact = np.float32(2047 * 9001) * np.array([1.0, -1.0, 2.0**-40, 2.0**30])
    np.testing.assert_array_equal(field, np.broadcast_to(exact[:, None], field.shape))


def test_a_nan_or_inf_coupling_gives_its_row_a_nan_field_on_every_route():
    """A diverged training's NaN must reach the sampler's field, not vanish in an int32 chunk sum."""
    w = np.ones((3, DEPTH_CHUNK + 10), np.float32)
    w[0, 0], w[1, 5] = np.nan, np.inf
    states = np.ones((w.shape[1], 2), np.int8)
    for depth in (w.shape[1], 100):
        field = np.asarray(jax.jit(float16_parts_product)(jnp.asarray(w[:, :depth]), jnp.asarray(states[:depth])))
        assert np.isnan(field[:2]).all() and np.isfinite(field[2]).all(), (depth, field)


def test_a_chains_rbm_samples_do_not_depend_on_how_many_chains_share_the_products(monkeypatch):
    """An RBM (both layers read as matrix products through the GPUs' float16 digits, forced here on
    any platform): three chains sampled alone and among 2,000 give the same samples, where the
    products' shapes, and so cuBLAS's algorithms, differ. (XLA:CPU's float32 product, the CPU route,
    rounds differently for other numbers of columns: README.)"""
    from forced_routes import force_float16_parts
    from heatbath import Block, SamplingSchedule, SpinNode
    from heatbath.kernels.batched import sample_states_batched
    from heatbath.kernels.pairwise_tables import pairwise_tables
    from heatbath.models import IsingEBM, IsingSamplingProgram

    rng = np.random.default_rng(10)
    n_v, n_h = 48, 64
    visible, hidden = [SpinNode() for _ in range(n_v)], [SpinNode() for _ in range(n_h)]
    edges = [(v, h) for v in visible for h in hidden]
    ebm = IsingEBM(visible + hidden, edges, jnp.asarray(rng.normal(0, 0.5, n_v + n_h), jnp.float32),
                   jnp.asarray(rng.normal(0, 0.2, len(edges)), jnp.float32), jnp.asarray(1.0))
    blocks = [Block(visible), Block(hidden)]
    program = IsingSamplingProgram(ebm, blocks, [])
    assert pairwise_tables(program).dense == ((True,), (True,))
    init = [jnp.asarray(rng.random((2000, n)) < 0.5) for n in (n_v, n_h)]
    run = lambda states: sample_states_batched(jax.random.key(4), program, SamplingSchedule(5, 4, 3), states, [],  # noqa: E731
                                               blocks)
    traced = force_float16_parts(monkeypatch)
    many, few = run(init), run([x[:3] for x in init])
    for m, f in zip(many, few):
        np.testing.assert_array_equal(np.asarray(m[:3]), np.asarray(f))
    assert traced  # the forced product really ran
