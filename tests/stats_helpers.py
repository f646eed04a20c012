"""Shared statistical checks: samples against exact enumeration, with error bars from the sample count.

Samples come from independent chains (one final state per chain), so they are i.i.d. draws from the
sampler's distribution after warm-up and the number of effective samples is the number of chains.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from heatbath import Block, SamplingSchedule, sample_states
from heatbath.exact import ExactDistribution, marginals
from optimised import OPTIMISED

Z_LIMIT = 5.0  # one-sided tail 3e-7 per check: fixed seeds, so a failure means a real discrepancy


def final_states(program, init_state, blocks, *, n_warmup: int, seed: int, clamp=()):
    """The state of `blocks` after `n_warmup` sweeps, for each chain in `init_state` (leading axis = chains).

    Compiled at XLA's default optimisation (optimised.py): tens of thousands of chains for tens of
    sweeps run for seconds, and at level 0 they ran about 30 s longer in the eight tests of
    test_exact_agreement.py than the default level takes to compile (15 s more): 79 s before, 63 s
    after, one process on the 2-core AMD VM."""
    n_chains = jax.tree.leaves(init_state)[0].shape[0]
    schedule = SamplingSchedule(n_warmup, 1, 1)
    keys = jax.random.split(jax.random.key(seed), n_chains)
    sample = jax.vmap(lambda k, s: sample_states(k, program, schedule, s, list(clamp), blocks))
    run = jax.jit(sample, compiler_options=OPTIMISED)
    return [np.asarray(x[:, 0]) for x in run(keys, init_state)]


def state_indices(states: list[np.ndarray], n_states: list[int]) -> np.ndarray:
    """Index of each joint sample in the enumeration order of `heatbath.exact` (row-major over nodes)."""
    cols = np.concatenate([s.astype(np.int64).reshape(s.shape[0], -1) for s in states], axis=1)
    sizes = [k for s, k in zip(states, n_states) for _ in range(s.shape[1])]
    return np.ravel_multi_index(cols.T, sizes)


def chi_square_z(counts: np.ndarray, probs: np.ndarray) -> float:
    """Goodness of fit of counts to probs as a z-score (Wilson–Hilferty), pooling bins expecting < 5."""
    n = counts.sum()
    expected = n * probs
    small = expected < 5
    obs = np.r_[counts[~small], counts[small].sum()]
    exp = np.r_[expected[~small], expected[small].sum()]
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    dof = len(exp) - 1
    chi2 = float(np.sum((obs - exp) ** 2 / exp))
    return ((chi2 / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / np.sqrt(2 / (9 * dof))


def assert_matches_exact(samples: list[np.ndarray], dist: ExactDistribution) -> None:
    """Joint chi-square and every single-node marginal must agree with the exact distribution."""
    n = samples[0].shape[0]
    idx = state_indices(samples, dist.n_states)
    counts = np.bincount(idx, minlength=dist.probs.size)
    z = chi_square_z(counts, dist.probs)
    assert z < Z_LIMIT, f"joint distribution differs from exact: chi-square z = {z:.2f} ({n} samples)"
    for b, (s, exact) in enumerate(zip(samples, marginals(dist))):
        for v in range(exact.shape[1]):
            p = exact[:, v]
            p_hat = (s.astype(np.int64) == v).mean(axis=0)
            se = np.sqrt(np.maximum(p * (1 - p), 1e-12) / n)
            worst = np.max(np.abs(p_hat - p) / se)
            assert worst < Z_LIMIT, f"block {b} value {v}: marginal off by {worst:.2f} standard errors"


def random_init(key, blocks, n_chains: int, n_states: list[int], dtypes) -> list[jnp.ndarray]:
    """Uniformly random initial states for each block (bool spins, integer categories)."""
    out = []
    for k, block, n_s, dtype in zip(jax.random.split(key, len(blocks)), blocks, n_states, dtypes):
        x = jax.random.randint(k, (n_chains, len(Block(block))), 0, n_s)
        out.append(x.astype(bool) if dtype == jnp.bool_ else x.astype(dtype))
    return out
