"""Continuous variables: energy factors that are at most quadratic in each continuous node, and their Gibbs updates.

Every factor here contributes to the energy a term that, seen from one continuous node x, is either
½ a x² (a quadratic interaction) or x · w · t_1 ⋯ t_M (a linear interaction whose coefficient is a weight
times the states of its tails: spins as ±1, continuous nodes as their values). The conditional of x is
then Gaussian,

    p(x | rest) ∝ exp(-½ a x² - h x),   a = Σ quadratic weights,   h = Σ w t_1 ⋯ t_M,

so x ~ N(-h / a, 1 / a). A spin s coupled to continuous nodes by w s x has the energy term s (w x), so
its Gibbs field gains γ -= w x (P(s) ∝ exp(γ s)).
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from heatbath.block_management import Block, BlockSpec, node_positions, take_nodes
from heatbath.conditional_samplers import AbstractParametricConditionalSampler
from heatbath.errors import HeatbathError
from heatbath.factor import WeightedFactor
from heatbath.interaction import InteractionGroup
from heatbath.models.discrete_ebm import SpinGibbsConditional, spin_values
from heatbath.models.ebm import EBMFactor
from heatbath.validation import is_concrete

__all__ = [
    "LinearInteraction",
    "QuadraticInteraction",
    "SpinFieldInteraction",
    "ContinuousLinearFactor",
    "ContinuousQuadraticFactor",
    "ContinuousCouplingFactor",
    "SpinContinuousFactor",
    "GaussianGibbsConditional",
    "MixedSpinGibbsConditional",
    "continuous_field",
]


class LinearInteraction(eqx.Module):
    """Energy x · w · t_1 ⋯ t_M for a continuous head x; the first `n_spin` tails are spins (±1), the rest continuous."""

    n_spin: int = eqx.field(static=True)
    weights: Array


class QuadraticInteraction(eqx.Module):
    """Energy ½ a x² for a continuous head x (a is a precision: it must be positive in total)."""

    weights: Array


class SpinFieldInteraction(eqx.Module):
    """Energy s · w · x_1 ⋯ x_M for a spin head s with continuous tails; its Gibbs field gains -w x_1 ⋯ x_M."""

    weights: Array


def _float_weights(weights, owner: str) -> Array:
    weights = jnp.asarray(weights) if not isinstance(weights, (jax.Array, np.ndarray)) else weights
    if not jnp.issubdtype(weights.dtype, jnp.floating):
        raise HeatbathError(
            f"{owner} weights must be floating point, got dtype {weights.dtype}; pass e.g. np.asarray(w, np.float32)."
        )
    if np.ndim(weights) != 1:
        raise HeatbathError(f"{owner} weights must have shape [n_factors], got {tuple(np.shape(weights))}.")
    return weights


def _values(global_state: list[Array], spec: BlockSpec, group: Block, dtype, spin: bool) -> Array:
    sd, pos = node_positions(group, spec)
    x = take_nodes(global_state[sd], pos)
    return spin_values(x, dtype) if spin else x.astype(dtype)


class ContinuousLinearFactor(EBMFactor, WeightedFactor):
    """Energy Σ_i b_i x_i over a block of continuous nodes."""

    def __init__(self, weights: Float[Array, " n"], block: Block):
        WeightedFactor.__init__(self, _float_weights(weights, type(self).__name__), [block])

    def energy(self, global_state, block_spec):
        w = self.weights
        return jnp.sum(w * _values(global_state, block_spec, self.node_groups[0], w.dtype, False))

    def to_interaction_groups(self) -> list[InteractionGroup]:
        return [InteractionGroup(LinearInteraction(0, self.weights), self.node_groups[0], [])]


class ContinuousQuadraticFactor(EBMFactor, WeightedFactor):
    """Energy Σ_i ½ a_i x_i² over a block of continuous nodes; a_i is the diagonal precision A_ii (> 0)."""

    def __init__(self, weights: Float[Array, " n"], block: Block):
        weights = _float_weights(weights, type(self).__name__)
        WeightedFactor.__init__(self, weights, [block])
        if is_concrete(weights) and np.any(np.asarray(weights) <= 0):
            bad = int(np.sum(np.asarray(weights) <= 0))
            raise HeatbathError(
                f"{type(self).__name__} has {bad} non-positive precision(s) A_ii; every diagonal precision (1/variance) "
                "must be > 0, otherwise the node's conditional is not normalisable. Pass positive values."
            )

    def energy(self, global_state, block_spec):
        w = self.weights
        x = _values(global_state, block_spec, self.node_groups[0], w.dtype, False)
        return 0.5 * jnp.sum(w * x * x)

    def to_interaction_groups(self) -> list[InteractionGroup]:
        return [InteractionGroup(QuadraticInteraction(self.weights), self.node_groups[0], [])]


class ContinuousCouplingFactor(EBMFactor, WeightedFactor):
    """Energy Σ_e A_e x_{u_e} x_{v_e} over pairs of continuous nodes (the off-diagonal precision, counted once)."""

    def __init__(self, weights: Float[Array, " n"], blocks: tuple[Block, Block]):
        if len(blocks) != 2:
            raise HeatbathError(f"{type(self).__name__} needs two parallel blocks (u, v), got {len(blocks)}.")
        WeightedFactor.__init__(self, _float_weights(weights, type(self).__name__), list(blocks))

    def energy(self, global_state, block_spec):
        w = self.weights
        u, v = (_values(global_state, block_spec, g, w.dtype, False) for g in self.node_groups)
        return jnp.sum(w * u * v)

    def to_interaction_groups(self) -> list[InteractionGroup]:
        u, v = self.node_groups
        return [
            InteractionGroup(LinearInteraction(0, self.weights), u, [v]),
            InteractionGroup(LinearInteraction(0, self.weights), v, [u]),
        ]


class SpinContinuousFactor(EBMFactor, WeightedFactor):
    """Energy Σ_e W_e s_e x_e between spins s (±1) and continuous nodes x."""

    def __init__(self, weights: Float[Array, " n"], spin_block: Block, continuous_block: Block):
        WeightedFactor.__init__(self, _float_weights(weights, type(self).__name__), [spin_block, continuous_block])

    def energy(self, global_state, block_spec):
        w = self.weights
        s = _values(global_state, block_spec, self.node_groups[0], w.dtype, True)
        x = _values(global_state, block_spec, self.node_groups[1], w.dtype, False)
        return jnp.sum(w * s * x)

    def to_interaction_groups(self) -> list[InteractionGroup]:
        s, x = self.node_groups
        return [
            InteractionGroup(LinearInteraction(1, self.weights), x, [s]),
            InteractionGroup(SpinFieldInteraction(self.weights), s, [x]),
        ]


def _unknown(sampler, interaction) -> HeatbathError:
    return HeatbathError(
        f"{type(sampler).__name__} does not know interactions of type {type(interaction).__name__}. Use the factors "
        "of heatbath.models.continuous, or subclass the sampler, handle that interaction in compute_parameters and "
        "pass the rest to super().compute_parameters."
    )


def continuous_field(sampler, interactions, active_flags, states, n: int, dtype=jnp.float32):
    """`(a, h)` of shape [n]: the total quadratic coefficient and linear coefficient of each continuous head.

    The conditional energy of head x is ½ a x² + h x. Raises for interactions other than linear/quadratic.
    """
    a = jnp.zeros((n,), dtype)
    h = jnp.zeros((n,), dtype)
    for interaction, active, state in zip(interactions, active_flags, states):
        if isinstance(interaction, QuadraticInteraction):
            a = a + jnp.sum(jnp.where(active, interaction.weights, 0), axis=-1).astype(dtype)
        elif isinstance(interaction, LinearInteraction):
            term = interaction.weights.astype(dtype)
            for j, t in enumerate(state):
                term = term * (spin_values(t, dtype) if j < interaction.n_spin else t.astype(dtype))
            h = h + jnp.sum(jnp.where(active, term, 0), axis=-1)
        else:
            raise _unknown(sampler, interaction)
    return a, h


class GaussianGibbsConditional(AbstractParametricConditionalSampler):
    r"""Exact Gibbs update of continuous nodes: $x \sim N(-h/a, 1/a)$ with $a = \sum A_{ii}$, $h = b + \sum A_{ij} x_j + \sum W s$.

    Raises at run time (through `equinox.error_if`) if some node's total quadratic coefficient is not positive.
    """

    def compute_parameters(self, key, interactions, active_flags, states, sampler_state, output_sd):
        a, h = continuous_field(self, interactions, active_flags, states, output_sd.shape[0])
        a = eqx.error_if(
            a,
            jnp.any(~(a > 0)),
            "GaussianGibbsConditional: a continuous node has total precision A_ii <= 0 (or NaN), so its conditional "
            "is not a Gaussian. Give every continuous node a ContinuousQuadraticFactor with a positive weight.",
        )
        return (-h / a, a), sampler_state

    def sample_given_parameters(self, key, parameters, sampler_state, output_sd):
        mean, precision = parameters
        noise = jax.random.normal(key, output_sd.shape, jnp.float32)
        return (mean + noise * jax.lax.rsqrt(precision)).astype(output_sd.dtype), sampler_state


class MixedSpinGibbsConditional(SpinGibbsConditional):
    r"""Gibbs update of spins coupled to both spins (discrete EBM factors) and continuous nodes.

    Spin–continuous interactions $W s x$ add $-W x$ to the field $\gamma$; every other interaction is handed
    to `SpinGibbsConditional`.
    """

    def compute_parameters(self, key, interactions, active_flags, states, sampler_state, output_sd):
        rest = ([], [], [])
        gamma = jnp.zeros(output_sd.shape, jnp.float32)
        for interaction, active, state in zip(interactions, active_flags, states):
            if isinstance(interaction, SpinFieldInteraction):
                term = interaction.weights.astype(jnp.float32)
                for t in state:
                    term = term * t.astype(jnp.float32)
                gamma = gamma - jnp.sum(jnp.where(active, term, 0), axis=-1)
            else:
                for lst, item in zip(rest, (interaction, active, state)):
                    lst.append(item)
        discrete, sampler_state = super().compute_parameters(key, *rest, sampler_state, output_sd)
        return gamma + discrete, sampler_state


def check_continuous_dtypes(spec: BlockSpec, blocks: Sequence[Block]) -> None:
    """Raise if a block of continuous nodes is not stored as floating point (e.g. a bool template by mistake)."""
    from heatbath.block_management import lookup_node_sd

    for block in blocks:
        if len(block):
            sd = lookup_node_sd(block.node_type, spec.node_shape_dtypes)
            for leaf in jax.tree.leaves(sd):
                if not jnp.issubdtype(leaf.dtype, jnp.floating) or tuple(leaf.shape) != ():
                    raise HeatbathError(
                        f"Continuous nodes of type {block.node_type.__name__} are stored as {leaf.dtype}{tuple(leaf.shape)};"
                        " they must be floating-point scalars: set node_shape_dtypes[type] = "
                        "jax.ShapeDtypeStruct((), jnp.float32)."
                    )
