"""Ising models / Boltzmann machines: E(s) = -β (Σ_i b_i s_i + Σ_(i,j) J_ij s_i s_j), and their training moments."""

from __future__ import annotations

from itertools import repeat
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Key

from heatbath.block_management import DEFAULT_NODE_SHAPE_DTYPES, Block
from heatbath.block_sampling import (
    BlockGibbsSpec,
    BlockSamplingProgram,
    FactorSamplingProgram,
    SamplingSchedule,
    sample_with_observation,
)
from heatbath.errors import HeatbathError, StateError
from heatbath.models.discrete_ebm import SpinEBMFactor, SpinGibbsConditional, spin_values
from heatbath.models.ebm import AbstractPairwiseEBM, EBMFactor, pair_blocks, scaled
from heatbath.models.spin_moments import kernel_moments, moment_fold
from heatbath.observers import MomentAccumulatorObserver
from heatbath.pgm import AbstractNode
from heatbath.validation import check_finite

__all__ = [
    "IsingEBM",
    "IsingSamplingProgram",
    "IsingTrainingSpec",
    "hinton_init",
    "estimate_moments",
    "estimate_kl_grad",
]


class IsingEBM(AbstractPairwiseEBM):
    r"""An Ising model $\mathcal{E}(s) = -\beta(\sum_i b_i s_i + \sum_{(i,j)} J_{ij} s_i s_j)$.

    **Attributes:** `nodes` and `biases` (one bias per node), `edges` and `weights` (one per edge), `beta`.
    """

    biases: Float[Array, " nodes"]
    weights: Float[Array, " edges"]
    beta: Float[Array, ""]

    def __init__(
        self,
        nodes: Sequence[AbstractNode],
        edges: Sequence[tuple[AbstractNode, AbstractNode]],
        biases: Array,
        weights: Array,
        beta: Array | float = 1.0,
    ):
        nodes, edge_blocks = list(nodes), pair_blocks(edges, "IsingEBM")
        n_edges = len(edge_blocks[0]) if edge_blocks else 0
        biases, weights = jnp.asarray(biases), jnp.asarray(weights)
        if biases.shape != (len(nodes),):
            raise HeatbathError(f"IsingEBM biases have shape {tuple(biases.shape)}; expected ({len(nodes)},), one per node.")
        if weights.shape != (n_edges,):
            raise HeatbathError(f"IsingEBM weights have shape {tuple(weights.shape)}; expected ({n_edges},), one per edge.")
        for name, arr in (("biases", biases), ("weights", weights), ("beta", beta)):
            check_finite(arr, f"IsingEBM {name}")
        self._node_block = Block(nodes)
        self._edge_blocks = edge_blocks
        self.biases = biases if jnp.issubdtype(biases.dtype, jnp.floating) else biases.astype(jnp.float32)
        self.weights = weights if jnp.issubdtype(weights.dtype, jnp.floating) else weights.astype(jnp.float32)
        self.beta = jnp.asarray(beta, jnp.float32)
        self.node_shape_dtypes = DEFAULT_NODE_SHAPE_DTYPES

    @property
    def factors(self) -> list[EBMFactor]:
        factors: list[EBMFactor] = []
        if len(self._node_block):
            factors.append(SpinEBMFactor([self._node_block], scaled(self.beta, self.biases)))
        if self._edge_blocks:
            factors.append(SpinEBMFactor(list(self._edge_blocks), scaled(self.beta, self.weights)))
        return factors


class IsingSamplingProgram(FactorSamplingProgram):
    """Block Gibbs for an `IsingEBM`: a spin Gibbs conditional on every free block."""

    def __init__(self, ebm: IsingEBM, free_blocks, clamped_blocks):
        spec = BlockGibbsSpec(free_blocks, clamped_blocks, ebm.node_shape_dtypes)
        super().__init__(spec, [SpinGibbsConditional()] * len(spec.free_blocks), ebm.factors, [])


class IsingTrainingSpec(eqx.Module):
    """An Ising EBM with the two programs needed for KL gradients.

    The positive phase clamps `data_blocks` and `conditioning_blocks` and samples
    `positive_sampling_blocks`; the negative phase clamps only `conditioning_blocks`.
    """

    ebm: IsingEBM
    program_positive: BlockSamplingProgram
    program_negative: BlockSamplingProgram
    schedule_positive: SamplingSchedule
    schedule_negative: SamplingSchedule
    data_blocks: list[Block] = eqx.field(static=True)
    conditioning_blocks: list[Block] = eqx.field(static=True)

    def __init__(
        self,
        ebm: IsingEBM,
        data_blocks: Sequence[Block],
        conditioning_blocks: Sequence[Block],
        positive_sampling_blocks,
        negative_sampling_blocks,
        schedule_positive: SamplingSchedule,
        schedule_negative: SamplingSchedule,
    ):
        self.ebm = ebm
        self.data_blocks = [Block(b) for b in data_blocks]
        self.conditioning_blocks = [Block(b) for b in conditioning_blocks]
        self.program_positive = IsingSamplingProgram(
            ebm, positive_sampling_blocks, self.data_blocks + self.conditioning_blocks
        )
        self.program_negative = IsingSamplingProgram(ebm, negative_sampling_blocks, self.conditioning_blocks)
        self.schedule_positive = schedule_positive
        self.schedule_negative = schedule_negative


def hinton_init(
    key: Key[Array, ""], model: IsingEBM, blocks: Sequence[Block], batch_shape: tuple[int, ...]
) -> list[Bool[Array, "*batch block"]]:
    r"""Draw each spin independently from its marginal with no neighbours: $P(s_i = +1) = \sigma(2\beta b_i)$.

    (THRML documents σ(βb); the marginal of an isolated spin with P ∝ exp(βbs) is σ(2βb), used here.)
    Nodes without a bias in `model` start at P = 1/2.
    """
    model_nodes = model._node_block.nodes
    index = dict(zip(model_nodes, range(len(model_nodes))))
    keys = jax.random.split(key, max(len(blocks), 1))
    out = []
    for k, block in zip(keys, blocks):
        nodes = Block(block).nodes
        ids = np.fromiter(map(index.get, nodes, repeat(-1)), dtype=np.int64, count=len(nodes))
        known = jnp.asarray(ids >= 0)
        bias = jnp.where(known, model.biases[np.maximum(ids, 0)], 0.0) if model_nodes else jnp.zeros(len(ids))
        p = jax.nn.sigmoid(2.0 * model.beta * bias)
        out.append(jax.random.bernoulli(k, p, tuple(batch_shape) + (len(ids),)))
    return out


def _spin_transform(states, blocks):
    return [spin_values(s) if s.dtype == jnp.bool_ else s.astype(jnp.float32) for s in states]


def estimate_moments(
    key: Key[Array, ""],
    first_moment_nodes: Sequence[AbstractNode],
    second_moment_edges: Sequence[tuple[AbstractNode, AbstractNode]],
    program: BlockSamplingProgram,
    schedule: SamplingSchedule,
    init_state: list[Array],
    clamped_data: list[Array],
):
    """Sample averages ⟨s_i⟩ and ⟨s_i s_j⟩ (spins as ±1) from one chain; returns `(first [n], second [e])`."""
    return _moments(key, first_moment_nodes, second_moment_edges, program, schedule, init_state, clamped_data)


def _moments(key, first_moment_nodes, second_moment_edges, program, schedule, init_state, clamped_data,
             vmapped_chains: int | None = None):
    """`estimate_moments`, told how many chains the caller vmaps it over (sizes the kernels' pieces)."""
    spec = [[(n,) for n in first_moment_nodes], [tuple(e) for e in second_moment_edges]]
    present = [i for i, moments in enumerate(spec) if moments]
    if not present:
        return jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.float32)
    fast = kernel_moments(key, first_moment_nodes, second_moment_edges, program, schedule, init_state, clamped_data,
                          vmapped_chains)
    if fast is not None:
        return fast
    observer = MomentAccumulatorObserver([spec[i] for i in present], _spin_transform)
    sums, _ = sample_with_observation(key, program, schedule, init_state, clamped_data, observer.init(), observer)
    out = [jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.float32)]
    for i, total in zip(present, sums):
        out[i] = total / schedule.n_samples
    return out[0], out[1]


def _check_training_inputs(spec: IsingTrainingSpec, data, conditioning_values, init_pos, init_neg) -> int:
    data, conditioning_values = list(data), list(conditioning_values)
    if len(data) != len(spec.data_blocks):
        raise StateError(f"Got {len(data)} data arrays for {len(spec.data_blocks)} data blocks; give one per block.")
    if len(conditioning_values) != len(spec.conditioning_blocks):
        raise StateError(
            f"Got {len(conditioning_values)} conditioning arrays for {len(spec.conditioning_blocks)} conditioning blocks."
        )
    batch = None
    for i, (d, block) in enumerate(zip(data, spec.data_blocks)):
        if jnp.ndim(d) != 2 or jnp.shape(d)[1] != len(block):
            raise StateError(f"data[{i}] has shape {tuple(jnp.shape(d))}; expected [batch, {len(block)}].")
        if batch is not None and jnp.shape(d)[0] != batch:
            raise StateError("All data arrays must have the same batch size.")
        batch = jnp.shape(d)[0]
    for i, x in enumerate(jax.tree.leaves(init_pos)):
        if batch is not None and (jnp.ndim(x) != 3 or jnp.shape(x)[1] != batch):
            raise StateError(
                f"init_state_positive[{i}] has shape {tuple(jnp.shape(x))}; expected [n_chains, batch={batch}, nodes]."
            )
    for i, x in enumerate(jax.tree.leaves(init_neg)):
        if jnp.ndim(x) != 2:
            raise StateError(f"init_state_negative[{i}] has shape {tuple(jnp.shape(x))}; expected [n_chains, nodes].")
    return batch or 0


def _paired_moments(bias_nodes, weight_edges, spec: IsingTrainingSpec, keys_pos, init_pos, data, cond, keys_neg, init_neg):
    """Per-chain moments `((first, second) positive, (first, second) negative)` of both phases run in
    the same kernel launches (`paired_runs.fold_training_phases`, positive chains flattened), or None
    where the phases cannot run so (then each runs on its own)."""
    from heatbath.kernels.paired_runs import fold_training_phases

    folded = fold_training_phases((spec.program_positive, keys_pos, init_pos, data),
                                  (spec.program_negative, keys_neg, init_neg), cond,
                                  (spec.schedule_positive, spec.schedule_negative),
                                  lambda program: moment_fold(bias_nodes, weight_edges, program))
    return None if folded is None else tuple(moments for moments, _ in folded)


def estimate_kl_grad(
    key: Key[Array, ""],
    training_spec: IsingTrainingSpec,
    bias_nodes: Sequence[AbstractNode],
    weight_edges: Sequence[tuple[AbstractNode, AbstractNode]],
    data: list[Array],
    conditioning_values: list[Array],
    init_state_positive: list[Array],
    init_state_negative: list[Array],
):
    r"""Monte Carlo KL gradient of an Ising model: ΔW = -β(⟨s_i s_j⟩₊ - ⟨s_i s_j⟩₋), Δb = -β(⟨s_i⟩₊ - ⟨s_i⟩₋).

    The positive phase clamps each data row (with `n_chains` chains per row, from `init_state_positive`
    of shape [n_chains, batch, nodes]); the negative phase samples the model (`init_state_negative`
    [n_chains, nodes]). Returns `(weight_grads, bias_grads, positive_moments, negative_moments)`.
    On one CUDA GPU the two phases share their kernel launches (`kernels.paired_runs`), with the same
    samples as one phase after the other.
    """
    _check_training_inputs(training_spec, data, conditioning_values, init_state_positive, init_state_negative)
    data, cond = list(data), list(conditioning_values)
    key_pos, key_neg = jax.random.split(key)

    n_pos_chains = jax.tree.leaves(init_state_positive)[0].shape[0] if jax.tree.leaves(init_state_positive) else 1
    batch = data[0].shape[0] if data else 1
    n_neg_chains = jax.tree.leaves(init_state_negative)[0].shape[0]

    def positive(k, init, data_row):
        return _moments(k, bias_nodes, weight_edges, training_spec.program_positive, training_spec.schedule_positive,
                        init, data_row + cond, n_pos_chains * batch)

    def negative(k, init):
        return _moments(k, bias_nodes, weight_edges, training_spec.program_negative, training_spec.schedule_negative,
                        init, cond, n_neg_chains)

    keys_pos = jax.random.split(key_pos, (n_pos_chains, batch))
    keys_neg = jax.random.split(key_neg, n_neg_chains)
    paired = _paired_moments(bias_nodes, weight_edges, training_spec, keys_pos, init_state_positive, data, cond, keys_neg,
                             init_state_negative)
    if paired is not None:
        (pos_first, pos_second), (neg_first, neg_second) = paired
    else:
        over_batch = jax.vmap(positive, in_axes=(0, 0, 0))
        over_chains = jax.vmap(over_batch, in_axes=(0, 0, None))
        pos_first, pos_second = over_chains(keys_pos, list(init_state_positive), data)
        neg_first, neg_second = jax.vmap(negative)(keys_neg, list(init_state_negative))
    pos = (jnp.mean(pos_first.reshape(-1, pos_first.shape[-1]), axis=0),
           jnp.mean(pos_second.reshape(-1, pos_second.shape[-1]), axis=0))
    neg = (jnp.mean(neg_first, axis=0), jnp.mean(neg_second, axis=0))
    beta = training_spec.ebm.beta
    weight_grads = -beta * (pos[1] - neg[1])
    bias_grads = -beta * (pos[0] - neg[0])
    return weight_grads, bias_grads, pos, neg
