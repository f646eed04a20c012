"""Metropolis-within-Gibbs for continuous nodes whose conditional is not Gaussian.

Each node x of the block has the conditional energy  f(x, params) + ½ a x² + h x,  where f is the user's
per-node energy and (a, h) come from the block's linear/quadratic interactions (`continuous_field`).
One update makes `n_steps` Gaussian random-walk Metropolis–Hastings moves on every node at once (the
nodes of a block are conditionally independent, so this is a valid Gibbs-style update). During the
first `n_adapt` updates the step size follows a Robbins–Monro recursion towards `target_accept`; after
that it is frozen, so the chain is a fixed, reversible kernel again.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from heatbath.block_management import Block
from heatbath.conditional_samplers import AbstractConditionalSampler
from heatbath.errors import HeatbathError
from heatbath.interaction import InteractionGroup
from heatbath.models.continuous import continuous_field
from heatbath.validation import check_finite

__all__ = ["MetropolisGibbsConditional", "MetropolisState", "CurrentStateInteraction", "current_state_groups"]


class MetropolisState(NamedTuple):
    """Sampler state: log step size, update count, and acceptance totals (accepted / proposed moves)."""

    log_step: Float[Array, ""]
    n_updates: Int[Array, ""]
    n_accepted: Float[Array, ""]
    n_proposed: Float[Array, ""]


class MetropolisGibbsConditional(AbstractConditionalSampler):
    """Random-walk Metropolis–Hastings updates of continuous nodes under `energy_fn` plus the block's interactions.

    **Arguments:**

    - `energy_fn`: `f(x, params) -> energies`, applied to the whole block: `x` has shape [n] and the
      result must have shape [n] (write it with elementwise jnp operations).
    - `params`: any PyTree handed to `energy_fn` (scalars, or [n] arrays for per-node parameters).
    - `step_size`: initial proposal standard deviation; `n_steps`: MH moves per update.
    - `adapt`: adapt the step size during the first `n_adapt` updates (False freezes it throughout).
    - `target_accept`: the acceptance rate the adaptation aims for (0.44 is the 1D optimum).
    """

    energy_fn: Callable = eqx.field(static=True)
    params: PyTree
    step_size: float = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    adapt: bool = eqx.field(static=True)
    n_adapt: int = eqx.field(static=True)
    target_accept: float = eqx.field(static=True)

    def __init__(
        self,
        energy_fn: Callable,
        params: PyTree = None,
        *,
        step_size: float = 1.0,
        n_steps: int = 1,
        adapt: bool = True,
        n_adapt: int = 200,
        target_accept: float = 0.44,
    ):
        if not callable(energy_fn):
            raise HeatbathError(f"energy_fn must be a function f(x, params) -> energies, got {type(energy_fn).__name__}.")
        if not (step_size > 0) or not jnp.isfinite(step_size):
            raise HeatbathError(f"step_size must be a positive finite number, got {step_size!r}.")
        if int(n_steps) != n_steps or n_steps < 1 or int(n_adapt) != n_adapt or n_adapt < 0:
            raise HeatbathError(f"n_steps must be a positive and n_adapt a non-negative integer, got {n_steps}, {n_adapt}.")
        if not 0 < target_accept < 1:
            raise HeatbathError(f"target_accept must lie in (0, 1), got {target_accept!r}.")
        for leaf in jax.tree.leaves(params):
            check_finite(leaf, "MetropolisGibbsConditional params")
        self.energy_fn = energy_fn
        self.params = params
        self.step_size = float(step_size)
        self.n_steps = int(n_steps)
        self.adapt = bool(adapt)
        self.n_adapt = int(n_adapt)
        self.target_accept = float(target_accept)

    def init(self) -> MetropolisState:
        return MetropolisState(
            jnp.log(jnp.float32(self.step_size)), jnp.int32(0), jnp.float32(0), jnp.float32(0)
        )

    def conditional_energy(self, x, a, h):
        return self.energy_fn(x, self.params) + 0.5 * a * x * x + h * x

    def sample(self, key, interactions, active_flags, states, sampler_state: MetropolisState, output_sd):
        n = output_sd.shape[0]
        x, rest = None, ([], [], [])
        for interaction, active, state in zip(interactions, active_flags, states):
            if isinstance(interaction, CurrentStateInteraction):
                x = state[0][:, 0].astype(jnp.float32)
            else:
                for lst, item in zip(rest, (interaction, active, state)):
                    lst.append(item)
        if x is None:
            raise HeatbathError(
                "MetropolisGibbsConditional needs the block's current state: add current_state_groups(free_blocks) to "
                "the program's interaction groups (ContinuousSamplingProgram does this for you)."
            )
        a, h = continuous_field(self, *rest, n)

        def energy(y):
            return self.conditional_energy(y, a, h)

        def mh_step(carry, k):
            x, e, n_acc = carry
            k_prop, k_acc = jax.random.split(k)
            y = x + jnp.exp(sampler_state.log_step) * jax.random.normal(k_prop, (n,), jnp.float32)
            e_y = energy(y)
            accept = jnp.log(jax.random.uniform(k_acc, (n,), jnp.float32)) < e - e_y  # NaN energies reject
            return (jnp.where(accept, y, x), jnp.where(accept, e_y, e), n_acc + jnp.sum(accept)), None

        (x, _, n_acc), _ = jax.lax.scan(mh_step, (x, energy(x), jnp.float32(0)), jax.random.split(key, self.n_steps))
        n_prop = jnp.float32(n * self.n_steps)
        log_step = sampler_state.log_step
        if self.adapt:
            t = sampler_state.n_updates
            rate = (t + 1.0) ** -0.6  # Robbins-Monro gains: sum diverges, sum of squares converges
            moved = log_step + rate * (n_acc / n_prop - self.target_accept)
            log_step = jnp.where(t < self.n_adapt, moved, log_step)
        new_state = MetropolisState(
            log_step, sampler_state.n_updates + 1, sampler_state.n_accepted + n_acc, sampler_state.n_proposed + n_prop
        )
        return x.astype(output_sd.dtype), new_state


class CurrentStateInteraction(eqx.Module):
    """Marks a group whose single tail is the head itself: it hands a Metropolis sampler the block's current state."""


def current_state_groups(blocks) -> list[InteractionGroup]:
    """One self-reading interaction group per block (head i reads its own state), for Metropolis updates."""
    return [InteractionGroup(CurrentStateInteraction(), Block(b), [Block(b)]) for b in blocks if len(Block(b))]
