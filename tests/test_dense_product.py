"""The dense layer's product from two float16 parts (`kernels.dense_product`, the CUDA GPU route)
carries float32-sized errors for rows of any scale, and the platform choice picks the float32
product on CPUs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from heatbath.kernels.dense_product import dense_field, float16_head, float16_parts_product, float32_product


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


def test_float16_head_keeps_eleven_significant_bits_and_rounds_to_nearest():
    """The head is exact in float16 (where float16 is normal) and within half its last unit of x, so
    the residual x − head is what the second part carries; under jit, where XLA could drop a
    float32 → float16 → float32 round trip."""
    rng = np.random.default_rng(8)
    x = (rng.normal(0, 1, 4096) * 2.0 ** rng.integers(-14, 15, 4096)).astype(np.float32)
    head = np.asarray(jax.jit(float16_head)(jnp.asarray(x)))
    normal = np.abs(head) >= 2.0**-14  # float16's smallest normal number
    np.testing.assert_array_equal(head[normal].astype(np.float16).astype(np.float32), head[normal])
    half_unit = 2.0 ** (np.floor(np.log2(np.abs(x.astype(np.float64)))) - 11)
    assert np.all(np.abs(head.astype(np.float64) - x) <= half_unit)
    assert np.mean(head != x) > 0.99  # the residual is not zero
