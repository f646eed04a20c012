"""Block Gibbs programs and the sampling loop.

`BlockGibbsSpec` says which blocks are free (and which are updated at the same algorithmic time, as
superblocks) and which are clamped. `BlockSamplingProgram` adds a conditional sampler per free block
and the interactions, compiled once into static gather tables. The loop (`sample_with_observation`)
is a `lax.scan` over sweeps that carries the *global* state and writes each updated block back in
place with a static slice, so a sweep never re-concatenates the whole state.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Key, PyTree

from heatbath.block_management import (
    DEFAULT_NODE_SHAPE_DTYPES,
    Block,
    BlockSpec,
    _State,
    block_state_to_global,
    block_states_list,
    verify_block_state,
)
from heatbath.compile import GatherTables, compile_gather_tables
from heatbath.conditional_samplers import AbstractConditionalSampler
from heatbath.errors import HeatbathError, StateError
from heatbath.interaction import InteractionGroup
from heatbath.pgm import AbstractNode
from heatbath.validation import array_namespace

__all__ = [
    "BlockGibbsSpec",
    "BlockSamplingProgram",
    "FactorSamplingProgram",
    "SamplingSchedule",
    "sample_blocks",
    "sample_single_block",
    "sample_with_observation",
    "sample_states",
]


class BlockGibbsSpec(BlockSpec):
    """Free blocks (optionally grouped into superblocks) and clamped blocks of a Gibbs program.

    A superblock is a tuple of blocks that read the same state and are updated at the same
    algorithmic time (e.g. the spin and continuous nodes of one colour), though by different samplers.

    **Attributes:** `free_blocks`, `clamped_blocks`, `superblocks` (tuples of free blocks) and
    `sampling_order` (for each superblock, the indices of its blocks in `free_blocks`).
    """

    def __init__(
        self,
        free_super_blocks: Sequence[tuple[Block, ...] | Block],
        clamped_blocks: Sequence[Block],
        node_shape_dtypes: Mapping[type[AbstractNode], PyTree[jax.ShapeDtypeStruct]] = DEFAULT_NODE_SHAPE_DTYPES,
    ):
        superblocks, free_blocks, order = [], [], []
        for item in free_super_blocks:
            members = tuple(item) if isinstance(item, (tuple, list)) else (item,)
            members = tuple(Block(m) for m in members)
            if not members:
                raise HeatbathError("A superblock must contain at least one block; remove the empty tuple.")
            order.append(list(range(len(free_blocks), len(free_blocks) + len(members))))
            free_blocks.extend(members)
            superblocks.append(members)
        if not free_blocks:
            raise HeatbathError("A Gibbs spec needs at least one free block to sample.")
        self.free_blocks = free_blocks
        self.clamped_blocks = [Block(b) for b in clamped_blocks]
        self.superblocks = superblocks
        self.sampling_order = order
        super().__init__(free_blocks + self.clamped_blocks, node_shape_dtypes)

    def _content(self) -> tuple:
        return (*super()._content(), tuple(map(len, self.superblocks)), len(self.clamped_blocks))

    def _block_label(self, b: int) -> str:
        n = len(self.free_blocks)
        return f"free block {b}" if b < n else f"clamped block {b - n}"


class SamplingSchedule(eqx.Module):
    """How long to run: `n_warmup` sweeps, then `n_samples` samples `steps_per_sample` sweeps apart.

    The first sample is the state right after warm-up, so a run does
    `n_warmup + (n_samples - 1) * steps_per_sample` sweeps.
    """

    n_warmup: int = eqx.field(static=True)
    n_samples: int = eqx.field(static=True)
    steps_per_sample: int = eqx.field(static=True)

    def __init__(self, n_warmup: int, n_samples: int, steps_per_sample: int):
        for name, value, low in (("n_warmup", n_warmup, 0), ("n_samples", n_samples, 1), ("steps_per_sample", steps_per_sample, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                hint = " (a schedule must record at least one sample)" if name == "n_samples" else ""
                raise HeatbathError(f"SamplingSchedule {name} must be an integer >= {low}, got {value!r}{hint}.")
        self.n_warmup = int(n_warmup)
        self.n_samples = int(n_samples)
        self.steps_per_sample = int(steps_per_sample)

    @property
    def n_sweeps(self) -> int:
        return self.n_warmup + (self.n_samples - 1) * self.steps_per_sample


class BlockSamplingProgram(eqx.Module):
    """Everything needed to run block Gibbs: the spec, one sampler per free block, and compiled interactions.

    `per_block_interactions[b]` and `per_block_interaction_active[b]` are the padded parameters and
    masks handed to the sampler of free block b; `per_block_interaction_global_inds[b]` and
    `per_block_interaction_global_slices[b]` say where each tail state lives in the global state.
    Parameters are PyTree leaves (so a program can be differentiated or passed through `jit`); the
    index tables are static and shared, so programs that differ only in weights share compiled code.
    """

    gibbs_spec: BlockGibbsSpec = eqx.field(static=True)
    samplers: list[AbstractConditionalSampler]
    per_block_interactions: list[list[PyTree]]
    per_block_interaction_active: list[list[Array]]
    interaction_groups: list[InteractionGroup] = eqx.field(repr=False)
    tables: GatherTables = eqx.field(static=True, repr=False)

    def __init__(
        self,
        gibbs_spec: BlockGibbsSpec,
        samplers: Sequence[AbstractConditionalSampler],
        interaction_groups: Sequence[InteractionGroup],
    ):
        if not isinstance(gibbs_spec, BlockGibbsSpec):
            raise HeatbathError(f"gibbs_spec must be a BlockGibbsSpec, got {type(gibbs_spec).__name__}.")
        samplers = list(samplers)
        if len(samplers) != len(gibbs_spec.free_blocks):
            raise HeatbathError(
                f"Got {len(samplers)} samplers for {len(gibbs_spec.free_blocks)} free blocks; pass exactly one "
                "conditional sampler per free block (in the order of gibbs_spec.free_blocks)."
            )
        for i, s in enumerate(samplers):
            if not callable(getattr(s, "sample", None)):
                raise HeatbathError(
                    f"Sampler {i} ({type(s).__name__}) has no sample(...) method; samplers must subclass "
                    "AbstractConditionalSampler."
                )
        groups = list(interaction_groups)
        for i, g in enumerate(groups):
            if not isinstance(g, InteractionGroup):
                raise HeatbathError(f"interaction_groups[{i}] is a {type(g).__name__}, not an InteractionGroup.")
        tables = compile_gather_tables(gibbs_spec, groups, samplers)
        self.gibbs_spec = gibbs_spec
        self.samplers = samplers
        self.interaction_groups = groups
        self.tables = tables
        self.per_block_interactions = [
            [jax.tree.map(lambda w, ix=e.index: _take_padded(w, ix), groups[e.group].interaction) for e in entries]
            for entries in tables.per_block
        ]
        self.per_block_interaction_active = [[jnp.asarray(e.active) for e in entries] for entries in tables.per_block]

    @property
    def per_block_interaction_global_inds(self) -> list[list[list[int]]]:
        return [[list(e.tail_sd) for e in entries] for entries in self.tables.per_block]

    @property
    def per_block_interaction_global_slices(self) -> list[list[list[np.ndarray]]]:
        return [[list(e.tail_positions) for e in entries] for entries in self.tables.per_block]


class FactorSamplingProgram(BlockSamplingProgram):
    """A `BlockSamplingProgram` whose interactions come from factors (plus any extra interaction groups)."""

    def __init__(self, gibbs_spec: BlockGibbsSpec, samplers, factors, other_interaction_groups=()):
        groups = []
        for factor in factors:
            groups.extend(factor.to_interaction_groups())
        super().__init__(gibbs_spec, samplers, groups + list(other_interaction_groups))


def _take_padded(w, index: np.ndarray):
    """`w[index]`: the padded [n, k, ...] parameters of one block (on the host when `w` is concrete)."""
    xp = array_namespace(w)
    return jnp.asarray(xp.asarray(w)[index])


# ---------------------------------------------------------------------------------------------
# The sweep, on the global state
# ---------------------------------------------------------------------------------------------


def _block_output_sd(spec: BlockGibbsSpec, b: int):
    n = len(spec.blocks[b])
    sd = spec.sd_struct(int(spec.block_sd_index[b]))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct((n,) + tuple(s.shape), s.dtype), sd)


def _gather_inputs(program: BlockSamplingProgram, b: int, global_state):
    states = []
    for entry in program.tables.per_block[b]:
        states.append(
            [
                jax.tree.map(lambda leaf, p=pos: leaf[p], global_state[sd])
                for sd, pos in zip(entry.tail_sd, entry.tail_positions)
            ]
        )
    return program.per_block_interactions[b], program.per_block_interaction_active[b], states


def _sample_block_from_global(key, program: BlockSamplingProgram, b: int, global_state, sampler_state):
    interactions, active, states = _gather_inputs(program, b, global_state)
    output_sd = _block_output_sd(program.gibbs_spec, b)
    new_state, sampler_state = program.samplers[b].sample(key, interactions, active, states, sampler_state, output_sd)
    new_state = _conform(new_state, output_sd, b, program.samplers[b])
    return new_state, sampler_state


def _conform(state, output_sd, b, sampler):
    """Check a sampler's output against the block's template.

    A different dtype of the same kind (float64 for float32) is cast; another kind (float for bool)
    would silently corrupt the state, so it is an error.
    """
    out_leaves, out_tree = jax.tree.flatten(state)
    sd_leaves, sd_tree = jax.tree.flatten(output_sd)
    if out_tree != sd_tree:
        raise HeatbathError(
            f"Sampler {type(sampler).__name__} for free block {b} returned a state with structure {out_tree}, "
            f"expected {sd_tree}."
        )
    fixed = []
    for leaf, sd in zip(out_leaves, sd_leaves):
        if tuple(jnp.shape(leaf)) != tuple(sd.shape):
            raise HeatbathError(
                f"Sampler {type(sampler).__name__} for free block {b} returned shape {tuple(jnp.shape(leaf))}, "
                f"expected {tuple(sd.shape)} (output_sd.shape)."
            )
        if np.dtype(leaf.dtype).kind != np.dtype(sd.dtype).kind:
            raise HeatbathError(
                f"Sampler {type(sampler).__name__} for free block {b} returned dtype {leaf.dtype}, but the block is "
                f"stored as {np.dtype(sd.dtype)}; return output_sd.dtype (e.g. draw.astype(output_sd.dtype))."
            )
        fixed.append(leaf if leaf.dtype == sd.dtype else leaf.astype(sd.dtype))  # e.g. float64 -> float32
    return jax.tree.unflatten(sd_tree, fixed)


def _write_block(global_state, spec: BlockGibbsSpec, b: int, new_state):
    sd = int(spec.block_sd_index[b])
    offset = int(spec.block_offsets[b])
    entry = jax.tree.map(
        lambda leaf, new: jax.lax.dynamic_update_slice_in_dim(leaf, new, offset, axis=0), global_state[sd], new_state
    )
    return global_state[:sd] + [entry] + global_state[sd + 1 :]


def _read_block(global_state, spec: BlockGibbsSpec, b: int):
    sd = int(spec.block_sd_index[b])
    start = int(spec.block_offsets[b])
    n = len(spec.blocks[b])
    return jax.tree.map(lambda leaf: jax.lax.slice_in_dim(leaf, start, start + n, axis=0), global_state[sd])


def _sweep(key, program: BlockSamplingProgram, global_state, sampler_states):
    """One Gibbs sweep: every superblock in order, each reading the state as it was before the superblock."""
    spec = program.gibbs_spec
    keys = jax.random.split(key, len(spec.free_blocks))
    sampler_states = list(sampler_states)
    for members in spec.sampling_order:
        updates = []
        for b in members:
            new, sampler_states[b] = _sample_block_from_global(keys[b], program, b, global_state, sampler_states[b])
            updates.append((b, new))
        for b, new in updates:
            global_state = _write_block(global_state, spec, b, new)
    return global_state, sampler_states


def _free_state(global_state, spec: BlockGibbsSpec):
    return [_read_block(global_state, spec, b) for b in range(len(spec.free_blocks))]


def _init_sampler_states(program: BlockSamplingProgram):
    return [s.init() for s in program.samplers]


# ---------------------------------------------------------------------------------------------
# Public THRML-compatible entry points (all per chain: vmap over chains)
# ---------------------------------------------------------------------------------------------


def _check_per_chain_shapes(spec: BlockGibbsSpec, state_free, state_clamp) -> None:
    """Sampling functions work on one chain; a batched state must go through jax.vmap."""
    for kind, offset, states in (("free", 0, state_free), ("clamped", len(spec.free_blocks), state_clamp)):
        for i, state in enumerate(states):
            sd = _block_output_sd(spec, offset + i)
            for leaf, s in zip(jax.tree.leaves(state), jax.tree.leaves(sd)):
                if tuple(jnp.shape(leaf)) != tuple(s.shape):
                    raise StateError(
                        f"The {kind}-block state {i} has shape {tuple(jnp.shape(leaf))} but one chain's state for this "
                        f"block has shape {tuple(s.shape)}. Sampling functions run one chain; for many chains use "
                        "jax.vmap over the leading axis (e.g. jax.vmap(lambda k, s: sample_states(k, prog, schedule, "
                        "s, clamp, blocks))(keys, init_state))."
                    )


CATEGORY_RANGE_MESSAGE = (
    "a categorical state is outside [0, K): some node's state is >= its number of categories K (or "
    "negative). Initial, clamped and data states must hold categories 0..K-1."
)


def _check_category_ranges(program: BlockSamplingProgram, global_state):
    """Raise at run time if an integer state is outside [0, K) for a node that indexes K-sized weights."""
    out = []
    for sd, (entry, limit) in enumerate(zip(global_state, program.tables.category_limits)):
        if limit is not None:
            lim = jnp.asarray(np.minimum(limit, np.iinfo(np.int32).max).astype(np.int32))
            leaves = jax.tree.leaves(entry)
            bad = jnp.zeros((), bool)
            for leaf in leaves:
                if jnp.issubdtype(leaf.dtype, jnp.integer):
                    vals = leaf.astype(jnp.int32).reshape(leaf.shape[0], -1)
                    bad = bad | jnp.any((vals >= lim[:, None]) | (vals < 0))
            entry = eqx.error_if(entry, bad, CATEGORY_RANGE_MESSAGE)
        out.append(entry)
    return out


def _initial_global(program: BlockSamplingProgram, state_free, state_clamp):
    _verify_states(program, state_free, state_clamp)
    global_state = block_state_to_global(list(state_free) + list(state_clamp), program.gibbs_spec)
    return _check_category_ranges(program, global_state)


def _as_lists(program: BlockSamplingProgram, state_free, state_clamp) -> tuple[list, list]:
    """Free and clamped states as lists, a single array read as its rows (`block_states_list`), as THRML does."""
    spec = program.gibbs_spec
    return (block_states_list(state_free, len(spec.free_blocks), what="free-block state"),
            block_states_list(state_clamp, len(spec.clamped_blocks), what="clamped-block state"))


def _verify_states(program: BlockSamplingProgram, state_free, state_clamp) -> None:
    """One chain's free and clamped states match the program's blocks, shapes and dtypes."""
    verify_block_state(
        program.gibbs_spec.free_blocks, state_free, program.gibbs_spec.node_shape_dtypes, what="free-block state"
    )
    verify_block_state(
        program.gibbs_spec.clamped_blocks, state_clamp, program.gibbs_spec.node_shape_dtypes, what="clamped-block state"
    )
    _check_per_chain_shapes(program.gibbs_spec, list(state_free), list(state_clamp))


def sample_single_block(
    key: Key[Array, ""],
    state_free: list[_State],
    clamp_state: list[_State],
    program: BlockSamplingProgram,
    block: int,
    sampler_state,
    global_state: list[PyTree] | None = None,
):
    """Draw a new state for free block `block` given everything else; returns `(block state, sampler state)`."""
    state_free, clamp_state = _as_lists(program, state_free, clamp_state)
    if global_state is None:
        global_state = _initial_global(program, state_free, clamp_state)
    return _sample_block_from_global(key, program, block, global_state, sampler_state)


def sample_blocks(
    key: Key[Array, ""],
    state_free: list[_State],
    clamp_state: list[_State],
    program: BlockSamplingProgram,
    sampler_state: list,
):
    """One sweep over every free block (superblocks in order); returns `(free state, sampler states)`."""
    state_free, clamp_state = _as_lists(program, state_free, clamp_state)
    global_state = _initial_global(program, state_free, clamp_state)
    global_state, sampler_state = _sweep(key, program, global_state, sampler_state)
    return _free_state(global_state, program.gibbs_spec), sampler_state


def _run_sweeps(key, program, global_state, sampler_states, n: int):
    if n == 0:
        return global_state, sampler_states

    def body(carry, k):
        g, s = carry
        return _sweep(k, program, g, s), None

    (global_state, sampler_states), _ = jax.lax.scan(body, (global_state, sampler_states), jax.random.split(key, n))
    return global_state, sampler_states


def sample_with_observation(
    key: Key[Array, ""],
    program: BlockSamplingProgram,
    schedule: SamplingSchedule,
    init_chain_state: list[_State],
    state_clamp: list[_State],
    observation_carry_init,
    f_observe,
):
    """Run one chain by `schedule`, calling `f_observe` at each recorded sample.

    Returns `(final observer carry, observations stacked along a leading n_samples axis)`. Called
    eagerly (alone or under an eager `jax.vmap`), the loop runs as one compiled call kept per
    program structure, schedule and observer (`heatbath.kernels.dispatch.eager_observation_call`).
    """
    from heatbath.kernels.dispatch import eager_observation_call

    init_chain_state, state_clamp = _as_lists(program, init_chain_state, state_clamp)
    free, clamp = list(init_chain_state), list(state_clamp)
    compiled = eager_observation_call(program, schedule, _sample_with_observation_generic, key, free, clamp,
                                      observation_carry_init, f_observe)
    if compiled is not None:
        return compiled()
    return _sample_with_observation_generic(key, program, schedule, init_chain_state, state_clamp,
                                            observation_carry_init, f_observe)


def _sample_with_observation_generic(key, program, schedule, init_chain_state, state_clamp, observation_carry_init,
                                     f_observe):
    """`sample_with_observation`'s loop, op by op unless traced."""
    if not isinstance(schedule, SamplingSchedule):
        raise HeatbathError(f"schedule must be a SamplingSchedule, got {type(schedule).__name__}.")
    spec = program.gibbs_spec
    global_state = _initial_global(program, init_chain_state, state_clamp)
    state_clamp = list(state_clamp)
    sampler_states = _init_sampler_states(program)
    key_warmup, key_samples = jax.random.split(key)
    global_state, sampler_states = _run_sweeps(key_warmup, program, global_state, sampler_states, schedule.n_warmup)

    def observe(g, carry, iteration):
        return f_observe(program, _free_state(g, spec), state_clamp, carry, iteration)

    carry, first = observe(global_state, observation_carry_init, jnp.asarray(schedule.n_warmup))
    if schedule.n_samples == 1:
        return carry, jax.tree.map(lambda x: jnp.asarray(x)[None], first)

    def body(state, xs):
        g, s, c = state
        k, iteration = xs
        g, s = _run_sweeps(k, program, g, s, schedule.steps_per_sample)
        c, obs = observe(g, c, iteration)
        return (g, s, c), obs

    iterations = schedule.n_warmup + schedule.steps_per_sample * jnp.arange(1, schedule.n_samples)
    keys = jax.random.split(key_samples, schedule.n_samples - 1)
    (_, _, carry), rest = jax.lax.scan(body, (global_state, sampler_states, carry), (keys, iterations))
    observations = jax.tree.map(lambda a, b: jnp.concatenate([jnp.asarray(a)[None], b], axis=0), first, rest)
    return carry, observations


def sample_states(
    key: Key[Array, ""],
    program: BlockSamplingProgram,
    schedule: SamplingSchedule,
    init_state_free: list[_State],
    state_clamp: list[_State],
    nodes_to_sample: list[Block],
):
    """Record the states of `nodes_to_sample` at every sample: a list of arrays `[n_samples, len(block), ...]`.

    Programs of built-in spin or categorical conditionals with biases and pairwise couplings run the
    pairwise kernels, also under `jax.vmap` (which then becomes one kernel call over all chains, see
    `heatbath.kernels.dispatch`); every other program runs the generic loop, which an eager call
    (alone or under an eager `jax.vmap`) runs as one compiled call kept per program structure.
    """
    from heatbath.kernels.dispatch import eager_generic_call, fast_sample_states

    init_state_free, state_clamp = _as_lists(program, init_state_free, state_clamp)
    fast = fast_sample_states(
        program, schedule, nodes_to_sample, lambda k, p, f, c: _sample_states_generic(k, p, schedule, f, c, nodes_to_sample)
    )
    if fast is None:  # the generic loop checks the states itself
        free, clamp = list(init_state_free), list(state_clamp)
        compiled = eager_generic_call(program, schedule, nodes_to_sample, _sample_states_generic, key, free, clamp)
        if compiled is not None:
            return compiled()
        return _sample_states_generic(key, program, schedule, init_state_free, state_clamp, nodes_to_sample)
    _verify_states(program, init_state_free, state_clamp)
    return fast(key, init_state_free, state_clamp)


def _sample_states_generic(key, program, schedule, init_state_free, state_clamp, nodes_to_sample):
    from heatbath.observers import StateObserver

    observer = StateObserver(nodes_to_sample)
    _, samples = _sample_with_observation_generic(
        key, program, schedule, init_state_free, state_clamp, observer.init(), observer
    )
    return samples
