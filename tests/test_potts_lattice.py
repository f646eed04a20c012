"""The Potts lattice kernel against the exact 4x4 torus (transfer matrix), and its input checks.

Error bars: each chain's time average is one sample; chains are independent, so the standard error
over chains is honest whatever the autocorrelation within a chain.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath.errors import HeatbathError
from heatbath.exact import potts_energy_per_site_exact
from heatbath.kernels.potts_lattice import (
    PottsLatticeState,
    alias_table,
    draw_states,
    init_potts_lattice,
    potts_energy_per_site,
    run_potts_lattice,
)

Z_LIMIT = 4.0


@pytest.mark.parametrize("q", [2, 5, 8])
def test_alias_table_reproduces_the_probabilities(q):
    """Column k keeps state k with probability threshold/2**32 and gives its alias otherwise; averaged
    over the q equally likely columns that is the row's distribution, to the table's 2**-29 precision."""
    rng = np.random.default_rng(q)
    logits = rng.normal(0, 4, (200, q)).astype(np.float32)
    logits[0] = [0.0] * q  # uniform row
    logits[1, 0] = 30.0  # one near-certain state, the others ~1e-13
    probs = jax.nn.softmax(jnp.asarray(logits), axis=1)
    table = np.asarray(alias_table(probs)).astype(np.int64)
    keep, alias = (table & ~7) / 2.0**32, table & 7
    implied = np.zeros((200, q))
    rows = np.arange(200)[:, None]
    np.add.at(implied, (rows, np.arange(q)[None, :]), keep / q)
    np.add.at(implied, (rows, alias), (1 - keep) / q)
    np.testing.assert_allclose(implied, np.asarray(probs, np.float64), atol=5e-7)
    # draw_states on every 32-bit word of a fine grid gives the same frequencies.
    u = (np.arange(2**16, dtype=np.uint64) * 65537 + 12345).astype(np.uint32)
    flat = jnp.asarray(table.astype(np.uint32).reshape(-1))
    states = np.asarray(draw_states(jnp.asarray(u), jnp.full(u.shape, 2, jnp.int32), lambda i: flat[i], q))
    freq = np.bincount(states, minlength=q) / len(u)
    np.testing.assert_allclose(freq, np.asarray(probs[2]), atol=5 * np.sqrt(0.25 / len(u)))


def test_energy_function_matches_numpy():
    states = np.asarray(init_potts_lattice(jax.random.key(0), 6, 5, 4).states)
    field = np.array([0.3, -0.2, 0.0, 0.5])
    s = np.moveaxis(states, -1, 0)
    bonds = (s == np.roll(s, 1, 1)).sum((1, 2)) + (s == np.roll(s, 1, 2)).sum((1, 2))
    expected = -(1.3 * bonds + field[s].sum((1, 2))) / 36
    got = potts_energy_per_site(jnp.asarray(states), 1.3, jnp.asarray(field), q=4)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "q, beta, J, field",
    [
        (3, 0.8, 1.0, [0.0, 0.0, 0.0]),
        (5, 1.0, 1.0, [0.0] * 5),  # the benchmark's q = 5 model
        (4, 0.7, -0.8, [0.4, -0.3, 0.1, 0.0]),  # antiferromagnetic, in a field
    ],
)
def test_energy_matches_transfer_matrix(q, beta, J, field):
    L, chains = 4, 2000
    field = np.asarray(field)
    exact = potts_energy_per_site_exact(q, L, beta, J, field)
    state = init_potts_lattice(jax.random.key(1), L, chains, q)
    state, _ = run_potts_lattice(jax.random.key(2), state, beta, 200, q=q, J=J, field=field, measure_every=200)
    _, energy = run_potts_lattice(jax.random.key(3), state, beta, 1000, q=q, J=J, field=field, measure_every=2)
    per_chain = np.asarray(energy, np.float64).mean(0)
    se = per_chain.std(ddof=1) / np.sqrt(chains)
    z = (per_chain.mean() - exact) / se
    assert abs(z) < Z_LIMIT, f"q={q}: {per_chain.mean():.5f} ± {se:.5f}, exact {exact:.5f} (z = {z:.2f})"


def test_bad_input():
    good = init_potts_lattice(jax.random.key(0), 4, 2, 3)
    with pytest.raises(HeatbathError, match="must lie in 0..2"):
        run_potts_lattice(jax.random.key(0), PottsLatticeState(good.states + 3), 0.5, 2, q=3)
    with pytest.raises(HeatbathError, match="uint8"):
        run_potts_lattice(jax.random.key(0), PottsLatticeState(good.states.astype(jnp.int32)), 0.5, 2, q=3)
    with pytest.raises(HeatbathError, match="even lattice side"):
        run_potts_lattice(jax.random.key(0), PottsLatticeState(jnp.zeros((5, 5, 2), jnp.uint8)), 0.5, 2, q=3)
    with pytest.raises(HeatbathError, match="2 <= q"):
        run_potts_lattice(jax.random.key(0), good, 0.5, 2, q=9)
    with pytest.raises(HeatbathError, match="one value per state"):
        run_potts_lattice(jax.random.key(0), good, 0.5, 2, q=3, field=[0.0, 1.0])
    with pytest.raises(HeatbathError, match="Potts lattice beta contain 1 NaN or infinite"):
        run_potts_lattice(jax.random.key(0), good, float("nan"), 2, q=3)
    with pytest.raises(HeatbathError, match="Potts lattice field contain 1 NaN or infinite"):
        run_potts_lattice(jax.random.key(0), good, 0.5, 2, q=3, field=[0.0, float("inf"), 0.0])
    with pytest.raises(HeatbathError, match="n_chains"):
        init_potts_lattice(jax.random.key(0), 4, 0, 3)
    with pytest.raises(HeatbathError, match="multiple of measure_every"):
        run_potts_lattice(jax.random.key(0), good, 0.5, 10, q=3, measure_every=3)


@pytest.mark.parametrize("L, chains", [(4, 3), (6, 130)])
def test_pallas_kernel_equals_jnp_update(L, chains):
    """The Pallas kernel (interpreted on CPU; natively on GPU in the benchmark) gives identical states,
    including chains beyond a whole tile (130 = 128 + 2)."""
    state = init_potts_lattice(jax.random.key(4), L, chains, 5)
    kwargs = dict(q=5, J=0.9, field=[0.1, 0.0, -0.2, 0.3, 0.0], measure_every=2)
    jnp_final, jnp_energy = run_potts_lattice(jax.random.key(5), state, 1.1, 4, backend="jnp", **kwargs)
    kernel_final, kernel_energy = run_potts_lattice(jax.random.key(5), state, 1.1, 4, backend="interpret", **kwargs)
    np.testing.assert_array_equal(np.asarray(kernel_final.states), np.asarray(jnp_final.states))
    np.testing.assert_array_equal(np.asarray(kernel_energy), np.asarray(jnp_energy))
