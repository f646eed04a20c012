"""Two independent spin runs in the same kernel launches: the two phases of a training gradient.

A training gradient samples a clamped (positive) phase and a free (negative) phase, each with a few
chains for hundreds of sweeps. On a GPU a colour update of a few chains is a launch of about two
microseconds whatever its size, so running the phases one after the other costs twice what one
costs. Where both phases run on the pattern-table kernel (`table_spin`), or both on the
categorical Pallas kernel (`pallas_categorical`), with the same schedule, `fold_paired_runs` runs
them in lockstep instead: the i-th block update of each phase's sweep goes into one launch
(`table_pair_update`, `categorical_pair_update`), each run with its own state, tables and seeds.

Each chain is driven exactly as `fold_kernel_samples` drives it when its whole schedule fits in one
piece (the only case taken here): the same key words, sweeps, seeds and arithmetic, so the samples,
and the sums folded from them, are the same as running the phases one after the other.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int8, Key, PyTree, UInt32

from heatbath.block_sampling import BlockSamplingProgram, SamplingSchedule
from heatbath.kernels.batched import chain_block_states
from heatbath.kernels.dispatch import key_words_of
from heatbath.kernels.pairwise_sweep import (all_sweep_params, as_stored, block_update, categorical_kernel_takes, chain_tile,
                                             chosen_method, kernel_operands, kernel_states, reads_no_free_block, spin_headed,
                                             sweep_seeds_of, table_path_applies)
from heatbath.kernels.pallas_categorical import TILE_CHAINS, categorical_pair_update
from heatbath.kernels.pairwise_tables import pairwise_kind, pairwise_tables
from heatbath.kernels.pieces import samples_per_piece
from heatbath.kernels.schedule_loop import run_schedule, seeded_sweeps
from heatbath.kernels.table_spin import (CHAIN_MULTIPLE, table_block_update, table_block_update_jnp,
                                         table_blocks, table_layouts, table_pair_update, table_state)

__all__ = ["PAIRED_METHOD", "FoldedRun", "fold_paired_runs", "fold_training_phases"]


class FoldedRun(NamedTuple):
    """One phase: its chains, program and per-chain fold.

    - `keys` `[chains]`: each chain's key, as `fold_kernel_samples` would get it under `jax.vmap`;
    - `init_state`: per free block `[chains, n_b]`; `clamped`: per clamped block `[chains, n_c]`, or
      `[n_c]` shared by every chain;
    - `fold(sums, samples, clamped)`: one chain's sums plus its samples (`[P, n_b]` per free block)
      with its clamped values; `sums`: the empty sums of one chain."""

    keys: Key[Array, " chains"]
    program: BlockSamplingProgram
    init_state: list[Array]
    clamped: list[Array]
    fold: Callable
    sums: PyTree


# What callers' pairs run on: "auto" (the kernels, on one CUDA GPU), or "table-jnp", which tests set to
# run the pairing on a CPU through the kernels' jax.numpy twins (the table kernel's for spins, the
# gather update for categories).
PAIRED_METHOD = "auto"


def fold_paired_runs(first: FoldedRun, second: FoldedRun, schedule: SamplingSchedule, method: str | None = None):
    """`((sums, final free state), (sums, final free state))` of the two runs, per chain (leading axis
    `chains`), as `jax.vmap` of `fold_kernel_samples` over each run's chains gives them; or None where
    the pair cannot run in lockstep (then run each phase on its own): the programs not both spin
    programs of the table kernel or both categorical programs of the categorical kernel ("auto": on
    one CUDA GPU, the table kernel with NVRTC; "table-jnp", the jax.numpy twins, anywhere, for tests),
    a run whose schedule needs more than one piece, or sweeps that do not read the free blocks (those
    already run side by side). `method` defaults to PAIRED_METHOD."""
    method = method or PAIRED_METHOD
    runs = (first, second)
    chains = [run.init_state[0].shape[0] if run.init_state else 0 for run in runs]
    kinds = {_pairable(run.program, schedule, n, method) for run, n in zip(runs, chains)}
    if None in kinds or len(kinds) > 1:
        return None
    spin, native = kinds == {"spin"}, method == "auto"
    words, states = [], []
    for run, n in zip(runs, chains):
        key_first = jax.vmap(lambda k: jax.random.split(k)[0])(run.keys)  # `fold_kernel_samples`' first piece
        words.append(jax.vmap(key_words_of)(key_first))
        block_states = chain_block_states(run.program, list(run.init_state), list(run.clamped), n)
        states.append(kernel_states(pairwise_tables(run.program), block_states))
    if spin:
        padded = [_pad_chains(w, s, CHAIN_MULTIPLE, 1) for w, s in zip(words, states)]
        samples = _paired_samples(first.program, second.program, schedule, native, *padded[0], *padded[1])
    else:  # padded as `run_pairwise` pads one device's chains for the kernel (none for the jax.numpy update)
        padded = [_pad_chains(w, s, chain_tile(n, 1, TILE_CHAINS) if native else 1, 0) for w, s, n in zip(words, states, chains)]
        samples = _paired_categorical_samples(first.program, second.program, schedule, native, *padded[0], *padded[1])
        samples = [as_stored(s, tuple(np.dtype(x.dtype) for x in run.init_state)) for s, run in zip(samples, runs)]
    out = []
    for run, n, run_samples in zip(runs, chains, samples):
        run_samples = [s[:n] for s in run_samples]  # [chains, P, n_b]
        clamp_axes = [0 if jnp.ndim(c) == 2 else None for c in run.clamped]
        sums = jax.vmap(run.fold, in_axes=(None, 0, clamp_axes))(run.sums, run_samples, list(run.clamped))
        out.append((sums, [s[:, -1] for s in run_samples]))
    return tuple(out)


def fold_training_phases(positive: tuple, negative: tuple, conditioning: list, schedules: tuple, fold_of: Callable):
    """A training gradient's two phases through `fold_paired_runs`: `((sums / n_samples, final free
    state), (the same))` per chain, or None where they cannot pair (or their schedules differ).

    `positive` is `(program, keys [n_chains, batch], init_state (per free block [n_chains, batch,
    nodes]), data (per data block [batch, nodes]))`, its chains flattened in the results (chain i,
    data row j at i · batch + j); `negative` is `(program, keys [chains], init_state)`; the
    `conditioning` values are clamped in both; `fold_of(program)` gives that phase's `(fold, sums)`."""
    (program_pos, keys_pos, init_pos, data), (program_neg, keys_neg, init_neg) = positive, negative
    if schedules[0] != schedules[1]:
        return None
    n_chains, batch = keys_pos.shape
    flat_init = [x.reshape((n_chains * batch,) + x.shape[2:]) for x in init_pos]
    clamped = [jnp.tile(d, (n_chains, 1)) for d in data] + list(conditioning)
    runs = (FoldedRun(keys_pos.reshape(-1), program_pos, flat_init, clamped, *fold_of(program_pos)),
            FoldedRun(keys_neg, program_neg, list(init_neg), list(conditioning), *fold_of(program_neg)))
    folded = fold_paired_runs(*runs, schedules[0])
    if folded is None:
        return None
    n = schedules[0].n_samples
    return tuple((jax.tree.map(lambda s: s / n, sums), final) for sums, final in folded)


def _pairable(program: BlockSamplingProgram, schedule: SamplingSchedule, chains: int, method: str) -> str | None:
    """The program's kind ("spin" or "categorical") where it can run in a pair, else None."""
    kind = pairwise_kind(program)[0]
    if chains < 1 or schedule.n_samples < 1 or kind is None:
        return None
    tables = pairwise_tables(program)
    if reads_no_free_block(tables) or samples_per_piece(program, schedule, chains) < schedule.n_samples:
        return None
    if method == "table-jnp":
        return kind if kind == "categorical" or table_path_applies(program, tables) else None
    devices = jax.devices()
    want = "table" if kind == "spin" else "pallas"
    ok = method == "auto" and len(devices) == 1 and chosen_method("auto", program, tables, devices, chains) == want
    return kind if ok else None


def _pad_chains(words: UInt32[Array, "chains 2"], states: list[Array], multiple: int, value: int):
    """Throw-away chains (state `value`) up to a multiple of `multiple`, as `run_pairwise` pads them."""
    pad = -words.shape[0] % multiple
    if not pad:
        return words, states
    words = jnp.concatenate([words, jnp.zeros((pad, 2), jnp.uint32)])
    return words, [jnp.pad(s, ((0, 0), (0, pad)), constant_values=value) for s in states]


class _Run(NamedTuple):
    """One run in the lockstep loop: its state in its updates' layout, its block updates in sweep order,
    its seeds of a sweep, `operands(state, seeds, b)` (what a paired launch takes of free block b) and
    `update(state, seeds, b)` (block b's update alone)."""

    state: PyTree
    updates: list[int]
    seeds_of: Callable
    operands: Callable
    update: Callable


def _sweep_order(program: BlockSamplingProgram) -> list[int]:
    return [b for members in program.gibbs_spec.sampling_order for b in members]


def _fields(program: BlockSamplingProgram):
    """The program's tables and each free block's field as the updates read it (`sweep_params`)."""
    tables = pairwise_tables(program)
    return tables, all_sweep_params(program, tables)


def _lockstep_samples(runs: tuple[_Run, _Run], pair: Callable, read: Callable, schedule: SamplingSchedule, backend: str,
                      programs) -> tuple:
    """Both runs' samples `[chains, P, n_b]` per free block: one sweep loop, the i-th update of each
    run's sweep in one launch, `pair(operands_a, operands_b)` (None where that pair must run as two
    updates); a run with more updates a sweep takes its last ones alone. `read(states)`: each run's
    free rows `[free nodes, chains]`, split into blocks after the loop."""

    def sweep(states, seeds):
        states = list(states)
        for i in range(max(len(run.updates) for run in runs)):
            todo = [(r, run.updates[i]) for r, run in enumerate(runs) if i < len(run.updates)]
            both = None
            if len(todo) == 2:
                both = pair(*(runs[r].operands(states[r], seeds[r], b) for r, b in todo))
            if both is not None:
                states = list(both)
                continue
            for r, b in todo:
                states[r] = runs[r].update(states[r], seeds[r], b)
        return tuple(states)

    sweeps = seeded_sweeps(sweep, lambda index: tuple(run.seeds_of(index) for run in runs), backend)
    first_seeds = tuple(run.seeds_of(jnp.uint32(0)) for run in runs)
    samples = run_schedule((tuple(run.state for run in runs), first_seeds), schedule, sweeps,
                           lambda carry: read(carry[0]), backend)
    sizes = [[len(b) for b in program.gibbs_spec.free_blocks] for program in programs]
    return tuple(jnp.split(jnp.transpose(s, (2, 0, 1)), np.cumsum(n)[:-1], axis=2) for s, n in zip(samples, sizes))


def _table_run(program: BlockSamplingProgram, words: UInt32[Array, "chains 2"], states: list[Int8[Array, "n chains"]],
               native: bool) -> _Run:
    tables, params = _fields(program)
    blocks = table_blocks(tables, table_layouts(tables), params)
    single = table_block_update if native else table_block_update_jnp
    return _Run(table_state(states), _sweep_order(program), sweep_seeds_of(words, len(params), folded=True),
                lambda state, seeds, b: (blocks[b], state, seeds, b),
                lambda state, seeds, b: single(blocks[b], state, seeds, b))


@eqx.filter_jit
def _paired_samples(program_a, program_b, schedule, native: bool, words_a, states_a, words_b, states_b):
    """Both spin runs' samples on the table kernel (`native`) or its jax.numpy twin, a pair of updates
    in one `table_pair_update`. The free blocks are the flat state's first rows (spec-wide node ids
    count the free blocks first), so a sample is one slice of rows."""
    programs = (program_a, program_b)
    runs = (_table_run(program_a, words_a, states_a, native), _table_run(program_b, words_b, states_b, native))
    n_free = [sum(len(b) for b in program.gibbs_spec.free_blocks) for program in programs]

    def read(flats):
        return tuple(flat[:n] > 0 for flat, n in zip(flats, n_free))

    pair = functools.partial(table_pair_update, native=native)
    return _lockstep_samples(runs, pair, read, schedule, "pallas" if native else "jnp", programs)


def _categorical_run(program: BlockSamplingProgram, words: UInt32[Array, "chains 2"], states: list, native: bool) -> _Run:
    tables, params = _fields(program)
    general = (None,) * len(params)  # training weights are traced: the general couplings, as `run_pairwise` takes

    def operands(states, seeds, b):
        """((bias, node ids, seeds, sources, dtype, spin-headed) of block b, the states, b); None in
        place of the first where the kernel does not take block b (`categorical_kernel_takes`)."""
        bias, node_ids, sources = kernel_operands(params, tables, b, states)
        if not categorical_kernel_takes(tables, b, bias, sources, seeds.shape[1]):
            return None, states, b
        return (bias, node_ids, seeds[b], sources, states[b].dtype, spin_headed(tables, b)), states, b

    def update(states, seeds, b):
        return _with_block(states, b, block_update(params, tables, b, states, seeds, native, general))

    return _Run(tuple(states), _sweep_order(program), sweep_seeds_of(words, len(params), folded=False), operands, update)


def _with_block(states: tuple, b: int, new: Array) -> tuple:
    return tuple(new if i == b else s for i, s in enumerate(states))


@eqx.filter_jit
def _paired_categorical_samples(program_a, program_b, schedule, native: bool, words_a, states_a, words_b, states_b):
    """Both categorical runs' samples (in the states' dtype) on the categorical kernel (`native`, a pair
    of updates in one `categorical_pair_update`) or, for tests, the gather update of each in turn.
    Every update is the one `run_pairwise` makes, so the samples are the same."""
    programs = (program_a, program_b)
    runs = (_categorical_run(program_a, words_a, states_a, native), _categorical_run(program_b, words_b, states_b, native))
    n_free = [len(program.gibbs_spec.free_blocks) for program in programs]

    def read(all_states):
        return tuple(jnp.concatenate(states[:n]) if n > 1 else states[0] for states, n in zip(all_states, n_free))

    def pair(first, second):
        kernel_first, kernel_second = first[0], second[0]
        if not native or kernel_first is None or kernel_second is None:
            return None  # each alone: the gather update, or a block the kernel does not take
        new_first, new_second = categorical_pair_update(kernel_first, kernel_second)
        return _with_block(*first[1:], new_first), _with_block(*second[1:], new_second)

    return _lockstep_samples(runs, pair, read, schedule, "pallas" if native else "jnp", programs)
