"""Discrete EBMs: factors s_1⋯s_M · W[c_1, …, c_N] over spin and categorical variables, and their Gibbs conditionals.

A factor's energy is  E = -Σ_b s_1 ⋯ s_M W_b[c_1, …, c_N]  (spins in {-1, +1}, categories in [0, K)).
For a spin head the conditional is P(s) ∝ exp(γ s) with γ = Σ (other spins) · W[categories]; for a
categorical head it is P(c) ∝ exp(θ_c) with θ = Σ (spins) · W[:, other categories].
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from heatbath.block_management import Block, BlockSpec, FrozenTypeMap, node_positions, take_nodes
from heatbath.conditional_samplers import BernoulliConditional, SoftmaxConditional
from heatbath.errors import HeatbathError
from heatbath.factor import WeightedFactor
from heatbath.interaction import InteractionGroup
from heatbath.models.ebm import EBMFactor
from heatbath.validation import array_namespace

__all__ = [
    "DiscreteEBMInteraction",
    "DiscreteEBMFactor",
    "SquareDiscreteEBMFactor",
    "SpinEBMFactor",
    "CategoricalEBMFactor",
    "SquareCategoricalEBMFactor",
    "SpinGibbsConditional",
    "CategoricalGibbsConditional",
    "CategoricalEBM",
    "spin_values",
    "merge_interaction_groups",
]


def spin_values(state: Array, dtype=jnp.float32) -> Array:
    """Spin states as ±1 numbers: bool True is +1, False is -1; other dtypes already hold ±1."""
    if state.dtype == jnp.bool_:
        return jnp.where(state, 1, -1).astype(dtype)
    return state.astype(dtype)


class DiscreteEBMInteraction(eqx.Module):
    """The interaction a discrete factor sends to one of its nodes.

    The first `n_spin` tails are spins, the rest categorical. `weights` has shape
    [b, (K_head,) c_1, …, c_N]: the head's own category axis (categorical heads only) followed by one
    axis per categorical tail.
    """

    n_spin: int = eqx.field(static=True)
    weights: Array

    def tail_state_bounds(self, n_tails: int) -> list[int | None]:
        """Categorical tails index the trailing weight axes, so their states must be below those sizes."""
        n_cat = n_tails - self.n_spin
        dims = list(np.shape(self.weights)[np.ndim(self.weights) - n_cat :]) if n_cat > 0 else []
        return [None] * self.n_spin + dims


class DiscreteEBMFactor(EBMFactor, WeightedFactor):
    """A batch of terms s_1⋯s_M · W[c_1, …, c_N]; `weights` has shape [b, x_1, …, x_N].

    No variable may appear twice in one term (w · s_1 · s_1 is not a valid factor); sampling programs
    reject such layouts because the two copies would sit in the same block.
    """

    spin_node_groups: list[Block]
    categorical_node_groups: list[Block]
    is_spin: FrozenTypeMap = eqx.field(static=True)

    def __init__(self, spin_node_groups: Sequence[Block], categorical_node_groups: Sequence[Block], weights: Array):
        spin_node_groups = [Block(g) for g in spin_node_groups]
        categorical_node_groups = [Block(g) for g in categorical_node_groups]
        if not spin_node_groups and not categorical_node_groups:
            raise HeatbathError(f"{type(self).__name__} needs at least one node group.")
        weights = jnp.asarray(weights) if not isinstance(weights, jax.Array) else weights
        expected_ndim = 1 + len(categorical_node_groups)
        if jnp.ndim(weights) != expected_ndim:
            raise HeatbathError(
                f"{type(self).__name__} weights have shape {tuple(jnp.shape(weights))} but must have {expected_ndim} "
                f"dimensions: [batch] plus one category axis per categorical node group "
                f"({len(categorical_node_groups)} here)."
            )
        if not jnp.issubdtype(weights.dtype, jnp.floating):
            raise HeatbathError(f"{type(self).__name__} weights must be floating point, got {weights.dtype}.")
        WeightedFactor.__init__(self, weights, spin_node_groups + categorical_node_groups)
        self.spin_node_groups = spin_node_groups
        self.categorical_node_groups = categorical_node_groups
        is_spin = {g.node_type: True for g in spin_node_groups if len(g)}
        for g in categorical_node_groups:
            if len(g) and is_spin.get(g.node_type, False):
                raise HeatbathError(
                    f"Node type {g.node_type.__name__} is used both as a spin and as a categorical variable."
                )
            if len(g):
                is_spin[g.node_type] = False
        self.is_spin = FrozenTypeMap(is_spin)
        self._check_categories()

    def _check_categories(self) -> None:
        for q, group in enumerate(self.categorical_node_groups):
            size = jnp.shape(self.weights)[1 + q]
            declared = {getattr(n, "num_states", None) for n in group.nodes[:1]}
            for k in declared - {None}:
                if k != size:
                    raise HeatbathError(
                        f"Categorical group {q} has nodes with num_states={k}, but the weights give it {size} "
                        f"categories (axis {1 + q}); make them agree."
                    )

    def energy(self, global_state: list[Array], block_spec: BlockSpec) -> Float[Array, ""]:
        """-Σ_b s_1⋯s_M W_b[c_1, …, c_N] over the batch of factors."""
        w = self.weights
        term = jnp.ones(jnp.shape(w)[:1], w.dtype)
        for group in self.spin_node_groups:
            sd, pos = node_positions(group, block_spec)
            term = term * spin_values(take_nodes(global_state[sd], pos), w.dtype)
        index = [jnp.arange(jnp.shape(w)[0])]
        for group in self.categorical_node_groups:
            sd, pos = node_positions(group, block_spec)
            index.append(take_nodes(global_state[sd], pos).astype(jnp.int32))
        return -jnp.sum(term * w[tuple(index)])

    def to_interaction_groups(self) -> list[InteractionGroup]:
        spins, cats, w = self.spin_node_groups, self.categorical_node_groups, self.weights
        groups = []
        for p, head in enumerate(spins):
            tails = spins[:p] + spins[p + 1 :] + cats
            groups.append(InteractionGroup(DiscreteEBMInteraction(len(spins) - 1, w), head, tails))
        for q, head in enumerate(cats):
            tails = spins + cats[:q] + cats[q + 1 :]
            wq = array_namespace(w).moveaxis(w, 1 + q, 1)
            groups.append(InteractionGroup(DiscreteEBMInteraction(len(spins), wq), head, tails))
        return groups


def merge_interaction_groups(groups: list[InteractionGroup]) -> list[InteractionGroup]:
    """Concatenate interaction groups that have identical layouts, giving fewer, larger gathers."""
    merged: dict[tuple, list[InteractionGroup]] = {}
    for g in groups:
        leaves, treedef = jax.tree.flatten(g.interaction)
        signature = (
            treedef,
            tuple((jnp.shape(x)[1:], jnp.result_type(x)) for x in leaves),
            g.head_nodes.node_type,
            tuple(t.node_type for t in g.tail_nodes),
        )
        merged.setdefault(signature, []).append(g)
    out = []
    for members in merged.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        # numpy for concrete weights (no compiled kernel per shape), stored as jax Arrays: a numpy leaf
        # of a program is copied to the GPU on every batched call (3 MB for a 784 x 500 RBM)
        interaction = jax.tree.map(
            lambda *xs: jnp.asarray(array_namespace(*xs).concatenate(xs, axis=0)), *[m.interaction for m in members]
        )
        head = Block(sum((m.head_nodes.nodes for m in members), ()))
        tails = [Block(sum((m.tail_nodes[t].nodes for m in members), ())) for t in range(len(members[0].tail_nodes))]
        out.append(InteractionGroup(interaction, head, tails))
    return out


class SquareDiscreteEBMFactor(DiscreteEBMFactor):
    """A discrete factor whose categorical axes all have the same size, so its interaction groups merge."""

    def __init__(self, spin_node_groups, categorical_node_groups, weights):
        super().__init__(spin_node_groups, categorical_node_groups, weights)
        sizes = set(jnp.shape(self.weights)[1:])
        if len(sizes) > 1:
            raise HeatbathError(
                f"{type(self).__name__} needs all category axes of equal size, got weights of shape "
                f"{tuple(jnp.shape(self.weights))}; use DiscreteEBMFactor / CategoricalEBMFactor instead."
            )

    def to_interaction_groups(self) -> list[InteractionGroup]:
        return merge_interaction_groups(super().to_interaction_groups())


class SpinEBMFactor(SquareDiscreteEBMFactor):
    """Spin-only terms W · s_1⋯s_M; `weights` has shape [b]."""

    def __init__(self, node_groups: Sequence[Block], weights: Array):
        super().__init__(node_groups, [], weights)


class CategoricalEBMFactor(DiscreteEBMFactor):
    """Categorical-only terms W[c_1, …, c_N]; `weights` has shape [b, x_1, …, x_N]."""

    def __init__(self, node_groups: Sequence[Block], weights: Array):
        super().__init__([], node_groups, weights)


class SquareCategoricalEBMFactor(SquareDiscreteEBMFactor):
    """Categorical-only terms with a square weight tensor [b, x, …, x]."""

    def __init__(self, node_groups: Sequence[Block], weights: Array):
        super().__init__([], node_groups, weights)


def _discrete_contributions(sampler, interactions, active_flags, states, head_axis: bool):
    """Yield, per DiscreteEBMInteraction, (spin product [n,k], selected weights [n,k] or [n,k,K], active)."""
    for interaction, active, state in zip(interactions, active_flags, states):
        if not isinstance(interaction, DiscreteEBMInteraction):
            raise HeatbathError(
                f"{type(sampler).__name__} does not know interactions of type {type(interaction).__name__}. "
                "Subclass it, handle that interaction in compute_parameters, and pass the rest to "
                "super().compute_parameters (see the 'All of THRML' example)."
            )
        w = interaction.weights
        n, k = active.shape
        spin_prod = jnp.ones((n, k), w.dtype)
        for s in state[: interaction.n_spin]:
            spin_prod = spin_prod * spin_values(s, w.dtype)
        if head_axis:
            w = jnp.moveaxis(w, 2, -1)  # [n, k, c..., K]
        index = (jnp.arange(n)[:, None], jnp.arange(k)[None, :]) + tuple(
            c.astype(jnp.int32) for c in state[interaction.n_spin :]
        )
        yield spin_prod, w[index], active


class SpinGibbsConditional(BernoulliConditional):
    r"""Gibbs update of spins under discrete EBM factors: γ = Σ_i s_1^i⋯s_K^i W^i[c_1^i, …, c_M^i].

    Extend it for new interaction types by overriding `compute_parameters`, adding their share of γ,
    and passing the remaining interactions to this method.
    """

    def compute_parameters(self, key, interactions, active_flags, states, sampler_state, output_sd):
        gamma = jnp.zeros(output_sd.shape, jnp.float32)
        for spin_prod, w, active in _discrete_contributions(self, interactions, active_flags, states, False):
            gamma = gamma + jnp.sum(jnp.where(active, spin_prod * w, 0), axis=-1).astype(gamma.dtype)
        return gamma, sampler_state


class CategoricalGibbsConditional(SoftmaxConditional):
    r"""Gibbs update of categorical nodes under discrete EBM factors: θ = Σ_i s_1^i⋯s_K^i W^i[:, c_1^i, …]."""

    n_categories: int = eqx.field(static=True)

    def __init__(self, n_categories: int):
        if isinstance(n_categories, bool) or int(n_categories) != n_categories or n_categories < 1:
            raise HeatbathError(f"n_categories must be a positive integer, got {n_categories!r}.")
        self.n_categories = int(n_categories)

    def compute_parameters(self, key, interactions, active_flags, states, sampler_state, output_sd):
        theta = jnp.zeros(tuple(output_sd.shape) + (self.n_categories,), jnp.float32)
        for spin_prod, w, active in _discrete_contributions(self, interactions, active_flags, states, True):
            if w.shape[-1] != self.n_categories:
                raise HeatbathError(
                    f"A factor gives these categorical nodes {w.shape[-1]} categories, but the sampler was built with "
                    f"CategoricalGibbsConditional({self.n_categories}); make them agree."
                )
            contrib = jnp.where(active[..., None], spin_prod[..., None] * w, 0)
            theta = theta + jnp.sum(contrib, axis=1).astype(theta.dtype)
        return theta, sampler_state


from heatbath.models.categorical import CategoricalEBM  # noqa: E402  (the Potts front end, at THRML-style path)
