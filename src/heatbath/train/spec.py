"""`TrainingSpec`: an EBM plus the two block Gibbs phases (positive: data clamped; negative: free) of its KL gradient.

The spec keeps the model as a PyTree leaf and everything else (blocks, Gibbs specs, schedules,
samplers) as static structure. Sampling programs are *not* stored: they are rebuilt from the current
(possibly traced) model inside the jitted training step, which is cheap (the gather tables are numpy
index arithmetic) and keeps the step's treedef identical from one set of weights to the next, so a
training loop compiles once.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Key

from heatbath.block_management import Block, lookup_node_sd
from heatbath.block_sampling import BlockGibbsSpec, BlockSamplingProgram, FactorSamplingProgram, SamplingSchedule
from heatbath.conditional_samplers import AbstractConditionalSampler
from heatbath.errors import HeatbathError
from heatbath.models.continuous import GaussianGibbsConditional, MixedSpinGibbsConditional, SpinContinuousFactor
from heatbath.models.discrete_ebm import CategoricalGibbsConditional, SpinGibbsConditional
from heatbath.models.ebm import AbstractFactorizedEBM

__all__ = ["TrainingSpec", "default_sampler", "random_block_states"]


def _node_dtype(ebm: AbstractFactorizedEBM, block: Block) -> np.dtype:
    sd = lookup_node_sd(block.node_type, ebm.node_shape_dtypes)
    return np.dtype(jax.tree.leaves(sd)[0].dtype)


def _state_count(ebm: AbstractFactorizedEBM, block: Block, strict: bool = True) -> int | None:
    """Values a node of `block` takes: 2 for spins, K for categorical nodes, None for continuous ones."""
    from heatbath.exact import infer_state_counts  # exact imports models; keep the import lazy

    if _node_dtype(ebm, block).kind == "f":
        return None
    try:
        return infer_state_counts(ebm, [block])[0]
    except HeatbathError:
        if strict:
            raise
        return None  # a user node type with its own sampler: start it at zero


def _has_spin_continuous_terms(ebm: AbstractFactorizedEBM) -> bool:
    return any(isinstance(f, SpinContinuousFactor) for f in ebm.factors)


def default_sampler(
    ebm: AbstractFactorizedEBM,
    block: Block,
    overrides: Mapping[type, AbstractConditionalSampler] | None = None,
) -> AbstractConditionalSampler:
    """The Gibbs conditional for a free block: `overrides[node type]` (or a base class) if given, else by storage.

    bool-stored nodes get `SpinGibbsConditional()` (`MixedSpinGibbsConditional()` when the model couples
    spins to continuous nodes), integer-stored ones `CategoricalGibbsConditional(K)` with K read from the
    model's discrete factors (`heatbath.exact.infer_state_counts`), float-stored ones the exact
    `GaussianGibbsConditional()` (use an override, e.g. `MetropolisGibbsConditional`, for non-Gaussian ones).
    """
    for cls in block.node_type.__mro__:
        if overrides and cls in overrides:
            return overrides[cls]
    dtype = _node_dtype(ebm, block)
    if dtype == np.bool_:
        # Spins coupled to continuous nodes also feel a field -W x; the mixed conditional adds it.
        return MixedSpinGibbsConditional() if _has_spin_continuous_terms(ebm) else SpinGibbsConditional()
    if dtype.kind in "iu":
        return CategoricalGibbsConditional(_state_count(ebm, block))
    if dtype.kind == "f":
        return GaussianGibbsConditional()
    raise HeatbathError(
        f"No default Gibbs sampler for {block.node_type.__name__} nodes stored as {dtype}; pass "
        f"samplers={{{block.node_type.__name__}: YourConditionalSampler(...)}} to TrainingSpec."
    )


def random_block_states(
    key: Key[Array, ""], blocks: Sequence[Block], batch_shape: tuple[int, ...], counts, dtypes
) -> list[Array]:
    """Independent uniform states (spins, categories in [0, K)); continuous nodes start from N(0, 1), other nodes of unknown range at 0."""
    out = []
    for k, block, count, dtype in zip(jax.random.split(key, max(len(blocks), 1)), blocks, counts, dtypes):
        shape = tuple(batch_shape) + (len(block),)
        if count is None and np.dtype(dtype).kind == "f":
            out.append(jax.random.normal(k, shape, jnp.float32).astype(dtype))
        elif count is None:
            out.append(jnp.zeros(shape, dtype))
        elif dtype == np.bool_:
            out.append(jax.random.bernoulli(k, 0.5, shape))
        else:
            out.append(jax.random.randint(k, shape, 0, count).astype(dtype))
    return out


def _as_superblocks(blocks) -> tuple:
    return tuple(tuple(Block(b) for b in item) if isinstance(item, (tuple, list)) else Block(item) for item in blocks)


class TrainingSpec(eqx.Module):
    """What `estimate_kl_grad` and `fit` need: a factorised EBM and how to sample its two phases.

    The positive phase clamps `data_blocks` (to the data) and `conditioning_blocks` and samples the
    latent nodes in `positive_sampling_blocks` (empty for a fully visible model: then no sampling is
    needed). The negative phase clamps only `conditioning_blocks` and samples `negative_sampling_blocks`.
    Sampling blocks may be superblocks (tuples of blocks), as in `BlockGibbsSpec`.

    Samplers are chosen per free block by node storage (see `default_sampler`); `samplers` maps node
    types to samplers to override that (needed for user node types that are not spins or categories).
    """

    ebm: AbstractFactorizedEBM
    schedule_positive: SamplingSchedule
    schedule_negative: SamplingSchedule
    samplers_positive: tuple[AbstractConditionalSampler, ...]
    samplers_negative: tuple[AbstractConditionalSampler, ...]
    data_blocks: tuple[Block, ...] = eqx.field(static=True)
    conditioning_blocks: tuple[Block, ...] = eqx.field(static=True)
    gibbs_positive: BlockGibbsSpec | None = eqx.field(static=True, repr=False)
    gibbs_negative: BlockGibbsSpec = eqx.field(static=True, repr=False)
    counts_positive: tuple[int | None, ...] = eqx.field(static=True, repr=False)
    counts_negative: tuple[int | None, ...] = eqx.field(static=True, repr=False)

    def __init__(
        self,
        ebm: AbstractFactorizedEBM,
        data_blocks: Sequence[Block],
        conditioning_blocks: Sequence[Block],
        positive_sampling_blocks: Sequence[Block | tuple[Block, ...]],
        negative_sampling_blocks: Sequence[Block | tuple[Block, ...]],
        schedule_positive: SamplingSchedule,
        schedule_negative: SamplingSchedule,
        *,
        samplers: Mapping[type, AbstractConditionalSampler] | None = None,
    ):
        if not isinstance(ebm, AbstractFactorizedEBM):
            raise HeatbathError(
                f"TrainingSpec needs an AbstractFactorizedEBM (a model with `factors`), got {type(ebm).__name__}."
            )
        for name, schedule in (("schedule_positive", schedule_positive), ("schedule_negative", schedule_negative)):
            if not isinstance(schedule, SamplingSchedule):
                raise HeatbathError(f"{name} must be a SamplingSchedule, got {type(schedule).__name__}.")
        data_blocks = tuple(Block(b) for b in data_blocks)
        conditioning_blocks = tuple(Block(b) for b in conditioning_blocks)
        if not data_blocks or not any(len(b) for b in data_blocks):
            raise HeatbathError("TrainingSpec needs at least one non-empty data block (the nodes the data observes).")
        positive = _as_superblocks(positive_sampling_blocks)
        negative = _as_superblocks(negative_sampling_blocks)
        if not negative:
            raise HeatbathError(
                "negative_sampling_blocks is empty: the negative phase must sample the model's free nodes."
            )
        nsd = ebm.node_shape_dtypes
        self.gibbs_positive = BlockGibbsSpec(positive, data_blocks + conditioning_blocks, nsd) if positive else None
        self.gibbs_negative = BlockGibbsSpec(negative, conditioning_blocks, nsd)
        self._check_phases(data_blocks, conditioning_blocks)
        self.ebm = ebm
        self.data_blocks = data_blocks
        self.conditioning_blocks = conditioning_blocks
        self.schedule_positive = schedule_positive
        self.schedule_negative = schedule_negative
        free_pos = self.gibbs_positive.free_blocks if self.gibbs_positive is not None else []
        free_neg = self.gibbs_negative.free_blocks
        self.samplers_positive = tuple(default_sampler(ebm, b, samplers) for b in free_pos)
        self.samplers_negative = tuple(default_sampler(ebm, b, samplers) for b in free_neg)
        self.counts_positive = tuple(_state_count(ebm, b, strict=False) for b in free_pos)
        self.counts_negative = tuple(_state_count(ebm, b, strict=False) for b in free_neg)
        # Build both programs once now, so that bad layouts (interacting nodes in one block, nodes that
        # are neither sampled nor clamped) fail here with the compiler's message, not inside jit.
        self.program_positive()
        self.program_negative()

    def _check_phases(self, data_blocks, conditioning_blocks) -> None:
        observed = {n for b in data_blocks for n in b.nodes}
        negative = set(self.gibbs_negative.all_nodes) - {n for b in conditioning_blocks for n in b.nodes}
        missing = observed - negative
        if missing:
            raise HeatbathError(
                f"{len(missing)} data node(s) (e.g. {next(iter(missing))!r}) are not sampled in the negative phase; "
                "negative_sampling_blocks must cover every data node (and every latent node)."
            )
        if self.gibbs_positive is not None:
            latent = set(self.gibbs_positive.all_nodes) - observed - {n for b in conditioning_blocks for n in b.nodes}
            if latent - negative:
                raise HeatbathError(
                    "Some latent nodes of positive_sampling_blocks are not sampled in the negative phase; "
                    "negative_sampling_blocks must cover them."
                )

    def program_positive(self, ebm: AbstractFactorizedEBM | None = None) -> BlockSamplingProgram | None:
        """The positive-phase program for `ebm` (default: this spec's model); None for fully visible models."""
        if self.gibbs_positive is None:
            return None
        ebm = self.ebm if ebm is None else ebm
        return FactorSamplingProgram(self.gibbs_positive, list(self.samplers_positive), ebm.factors)

    def program_negative(self, ebm: AbstractFactorizedEBM | None = None) -> BlockSamplingProgram:
        """The negative-phase program for `ebm` (default: this spec's model)."""
        ebm = self.ebm if ebm is None else ebm
        return FactorSamplingProgram(self.gibbs_negative, list(self.samplers_negative), ebm.factors)

    def with_ebm(self, ebm: AbstractFactorizedEBM) -> "TrainingSpec":
        """The same spec around new model parameters (same structure, so compiled steps are reused)."""
        return eqx.tree_at(lambda s: s.ebm, self, ebm)

    @property
    def positive_free_blocks(self) -> list[Block]:
        return [] if self.gibbs_positive is None else list(self.gibbs_positive.free_blocks)

    @property
    def negative_free_blocks(self) -> list[Block]:
        return list(self.gibbs_negative.free_blocks)

    def random_positive_state(self, key: Key[Array, ""], n_chains: int, batch: int) -> list[Array]:
        """Uniform initial positive-phase chains, leaves [n_chains, batch, nodes]."""
        blocks = self.positive_free_blocks
        dtypes = [_node_dtype(self.ebm, b) for b in blocks]
        return random_block_states(key, blocks, (n_chains, batch), self.counts_positive, dtypes)

    def random_negative_state(self, key: Key[Array, ""], n_chains: int) -> list[Array]:
        """Uniform initial negative-phase chains, leaves [n_chains, nodes]."""
        blocks = self.negative_free_blocks
        dtypes = [_node_dtype(self.ebm, b) for b in blocks]
        return random_block_states(key, blocks, (n_chains,), self.counts_negative, dtypes)
