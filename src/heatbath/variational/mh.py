r"""Exact sampling with a learned proposal: independent Metropolis–Hastings mixed with block Gibbs sweeps.

A trained autoregressive $q$ is a cheap global proposal: draw $x' \sim q$ independently of the current
state $x$ and accept it with probability

$$\alpha(x \to x') = \min\Big(1, \frac{p(x')\,q(x)}{p(x)\,q(x')}\Big)
= \min\big(1, \exp[\ln w(x') - \ln w(x)]\big), \qquad \ln w = -\beta E - \ln q .$$

This kernel satisfies detailed balance with respect to $p$ for any $q$ that is positive wherever $p$ is
(a softmax always is), so the chains sample $p$ exactly however imperfectly $q$ was trained; a poor $q$
only lowers the acceptance rate. Regions that $q$ under-weights are reached by interleaving local
heat-bath (block Gibbs) sweeps of a heatbath model of the same target, which also leave $p$ invariant:
the composition of the two kernels does too, and it mixes faster than either alone.

Many chains run in parallel (the leading axis); the whole run is one compiled `lax.scan`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from heatbath.block_sampling import (
    BlockSamplingProgram,
    SamplingSchedule,
    sample_states,
)
from heatbath.errors import HeatbathError
from heatbath.graphs.coloring import color_blocks
from heatbath.kernels.batched import sample_states_batched, supports_batched
from heatbath.models.ising import IsingEBM, IsingSamplingProgram
from heatbath.variational.estimators import EnergyFn, _checked_energy, check_beta
from heatbath.variational.made import check_n_samples, check_states

__all__ = ["IndependentMHState", "ProposalMHResult", "GibbsKernel", "independent_mh_step", "sample_with_proposal"]


class IndependentMHState(NamedTuple):
    """The chains' current states with their log target density (up to a constant) and log proposal density."""

    states: Int[Array, "chains units"]
    log_p: Float[Array, " chains"]
    log_q: Float[Array, " chains"]


class ProposalMHResult(NamedTuple):
    """Samples [chains, n_samples, units] (integer states) and the fraction of accepted proposals."""

    samples: Int[Array, "chains n_samples units"]
    acceptance_rate: Float[Array, ""]
    acceptance_per_chain: Float[Array, " chains"]


def _mh_state(proposal, energy: EnergyFn, beta, x: Array) -> IndependentMHState:
    return IndependentMHState(x, -beta * _checked_energy(energy, x), proposal.log_prob(x))


def independent_mh_step(
    proposal, energy: EnergyFn, beta, state: IndependentMHState, *, key: PRNGKeyArray
) -> tuple[IndependentMHState, Bool[Array, " chains"]]:
    """One independent-proposal MH update of every chain; returns the new state and which chains accepted."""
    key_prop, key_acc = jax.random.split(key)
    n = state.states.shape[0]
    x_new, log_q_new = proposal.sample_and_log_prob(n, key=key_prop)
    log_p_new = -beta * _checked_energy(energy, x_new)
    log_ratio = (log_p_new - log_q_new) - (state.log_p - state.log_q)
    accept = jnp.log(jax.random.uniform(key_acc, (n,), minval=1e-38)) < log_ratio
    pick = lambda new, old: jnp.where(accept.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    return IndependentMHState(
        pick(x_new, state.states), pick(log_p_new, state.log_p), pick(log_q_new, state.log_q)
    ), accept


class GibbsKernel(eqx.Module):
    """`n_sweeps` block Gibbs sweeps of a heatbath program, applied to integer states [chains, units].

    Unit `i` of the states is `nodes[i]`; the program's free blocks must cover exactly these nodes (spin
    nodes: state 1 = True). Programs of built-in discrete conditionals run on the batched fast path
    (`heatbath.kernels.sample_states_batched`); others on `jax.vmap(sample_states)`.
    Build one from an `IsingEBM` with `GibbsKernel.for_ising(ebm, nodes)`.
    """

    program: BlockSamplingProgram
    schedule: SamplingSchedule
    positions: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    dtypes: tuple = eqx.field(static=True)
    fast: bool = eqx.field(static=True)

    def __init__(self, program: BlockSamplingProgram, nodes: Sequence, *, n_sweeps: int = 1):
        n_sweeps = check_n_samples(n_sweeps, "n_sweeps")
        spec = program.gibbs_spec
        if spec.clamped_blocks:
            raise HeatbathError("GibbsKernel needs a program without clamped blocks (every node is a unit of q).")
        index = {node: i for i, node in enumerate(nodes)}
        covered = [n for b in spec.free_blocks for n in b.nodes]
        if len(covered) != len(index) or set(covered) != set(index):
            raise HeatbathError("The program's free blocks must hold each of `nodes` exactly once, and nothing else.")
        self.program = program
        self.schedule = SamplingSchedule(n_sweeps, 1, 1)
        self.positions = tuple(tuple(index[n] for n in b.nodes) for b in spec.free_blocks)
        self.dtypes = tuple(
            np.dtype(jax.tree.leaves(spec.sd_struct(int(spec.block_sd_index[b])))[0].dtype)
            for b in range(len(spec.free_blocks))
        )
        self.fast = supports_batched(program) is None

    @classmethod
    def for_ising(cls, ebm: IsingEBM, nodes: Sequence | None = None, *, n_sweeps: int = 1) -> GibbsKernel:
        """Heat-bath sweeps of an `IsingEBM` over a proper colouring of its graph (units = `nodes`, default all)."""
        nodes = list(ebm.nodes) if nodes is None else list(nodes)
        program = IsingSamplingProgram(ebm, color_blocks(ebm, nodes=nodes), [])
        return cls(program, nodes, n_sweeps=n_sweeps)

    def __call__(self, states: Int[Array, "chains units"], *, key: PRNGKeyArray) -> Int[Array, "chains units"]:
        positions = [np.asarray(pos, np.int32) for pos in self.positions]
        init = [states[:, pos].astype(dtype) for pos, dtype in zip(positions, self.dtypes)]
        blocks = list(self.program.gibbs_spec.free_blocks)
        if self.fast:
            out = sample_states_batched(key, self.program, self.schedule, init, [], blocks)
        else:
            run = jax.vmap(lambda k, s: sample_states(k, self.program, self.schedule, s, [], blocks))
            out = run(jax.random.split(key, states.shape[0]), init)
        for pos, block_samples in zip(positions, out):
            states = states.at[:, pos].set(block_samples[:, 0].astype(states.dtype))
        return states


def sample_with_proposal(
    proposal,
    energy: EnergyFn,
    beta: float,
    *,
    key: PRNGKeyArray,
    n_chains: int,
    n_samples: int,
    n_warmup: int = 10,
    gibbs: GibbsKernel | Callable | None = None,
    init_states: Int[Array, "chains units"] | None = None,
) -> ProposalMHResult:
    r"""Sample $p \propto e^{-\beta E}$ exactly: each iteration is one independent MH step proposing from
    `proposal` (anything with `sample_and_log_prob` and `log_prob`, e.g. a trained `MADE`), then, if given,
    the `gibbs` kernel (e.g. `GibbsKernel.for_ising(ebm)`; it must leave the same $p$ invariant, i.e. the
    EBM's energy must equal $\beta E$).

    Chains start from `init_states` or from draws of the proposal; `n_warmup` iterations are discarded,
    then every iteration is recorded. Consecutive samples of a chain are correlated; chains are independent.
    """
    check_beta(beta)
    n_chains = check_n_samples(n_chains, "n_chains")
    n_samples = check_n_samples(n_samples, "n_samples")
    if isinstance(n_warmup, bool) or not isinstance(n_warmup, (int, np.integer)) or n_warmup < 0:
        raise HeatbathError(f"n_warmup must be an integer >= 0, got {n_warmup!r}.")
    key_init, key_run = jax.random.split(key)
    if init_states is None:
        init_states = proposal.sample(n_chains, key=key_init)
    init_states = check_states(init_states, proposal.n_units, proposal.n_states, "init_states")
    if init_states.shape[0] != n_chains:
        raise HeatbathError(f"init_states has {init_states.shape[0]} chains; expected n_chains={n_chains}.")
    _checked_energy(energy, init_states[:1])  # validates the energy's output shape/values once, eagerly
    return _run(
        proposal,
        energy,
        jnp.asarray(beta, jnp.float32),
        key_run,
        init_states,
        gibbs,
        jnp.asarray(n_warmup, jnp.int32),
        n_samples,
    )


@eqx.filter_jit
def _run(proposal, energy, beta, key, init_states, gibbs, n_warmup, n_samples: int) -> ProposalMHResult:
    # One traced iteration serves warm-up and recording alike (tracing it twice dominated the run time):
    # record i is taken after iteration n_warmup + i, with iterations numbered from 0. `n_warmup` is traced,
    # so changing it does not recompile. The acceptance rate counts the recorded iterations only.
    def iteration(t, carry):
        state, accepted_sum = carry
        key_mh, key_gibbs = jax.random.split(jax.random.fold_in(key, t))
        state, accepted = independent_mh_step(proposal, energy, beta, state, key=key_mh)
        if gibbs is not None:
            state = _mh_state(proposal, energy, beta, gibbs(state.states, key=key_gibbs))
        recorded = (t >= n_warmup).astype(jnp.float32)
        return state, accepted_sum + recorded * accepted.astype(jnp.float32)

    def record(carry, i):
        start = jnp.where(i == 0, 0, n_warmup + i)
        carry = jax.lax.fori_loop(start, n_warmup + i + 1, iteration, carry)
        return carry, carry[0].states

    state = _mh_state(proposal, energy, beta, init_states)
    zeros = jnp.zeros(init_states.shape[0], jnp.float32)
    (_, accepted_sum), samples = jax.lax.scan(record, (state, zeros), jnp.arange(n_samples))
    per_chain = accepted_sum / n_samples
    return ProposalMHResult(jnp.moveaxis(samples, 0, 1), jnp.mean(per_chain), per_chain)
