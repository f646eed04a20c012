"""Whole sweeps of the pattern-table spin update with the state resident on chip, for few chains.

With few chains a block update of `table_spin` is a kernel of 2–3 µs, most of it the launch and
the first loads, so a sweep of four colours costs about 10 µs however little work it holds (P(14),
64 chains: 27 flips/ns on an H200). Here one launch runs many sweeps. A thread-block cluster of
CLUSTER blocks (compute capability 9.0 on) takes a slice of the chains; its blocks split every free
block's nodes between them, each holding the state rows of its nodes in shared memory (one byte per
spin and chain, as `table_state`), and read their neighbours' rows from the other blocks'
shared memory. A cluster barrier separates sampling groups. Every update's tables, hashes and seeds
are copied in while the update before runs (`table_resident.cu`).

The per-chain arithmetic (patterns, table sums, random word, comparison) is `table_spin.cu`'s
on the same tables, hashes and seeds, so a chain takes exactly the steps it takes there, bit for
bit; only where the work runs differs.

The layout is static numpy, built once per program structure (`resident_layout`); the tables are
rearranged from `table_blocks` on every call, so new weights need no new layout.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, UInt8, UInt32

from heatbath.kernels.counter_rng import mix32_tail, uniform_from_words
from heatbath.kernels.table_spin import GROUP, UP, TableBlock, TableLayout

__all__ = ["CLUSTER", "ResidentLayout", "ResidentInputs", "resident_layout", "resident_inputs", "resident_config",
           "resident_sweeps", "resident_sweeps_jnp", "resident_loop", "resident_runs_here"]

CLUSTER = 8  # blocks of a cluster (the portable maximum): each holds an eighth of the nodes and tables
SHARED_BYTES_LIMIT = 227 * 1024  # dynamic shared memory of one block on compute capability 9.0 and 10.0
CHAIN_SLICES = (32, 16)  # chains per cluster, largest first (one H200, P(14): see BENCHMARKS.md)
PLAN_FIELDS = 5
SEED_WORDS_PER_CALL = 1 << 24  # seeds of one launch, [sweeps, free blocks, chains] words (64 MiB)


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


@dataclass(frozen=True, eq=False)
class ResidentLayout:
    """Where every node and row lives in a cluster (`CLUSTER` blocks), static.

    - `plan` `[U, 5]`: per update of a sweep, in sampling order: the free block (its seed row), the
      nodes each cluster block updates (a multiple of 4, with padding nodes), the first of them in the
      block's node list, whether a cluster barrier follows (last block of a sampling group), 0;
    - `home_rows` `[CLUSTER, local_rows]`: the flat-state row (`table_state`) each local row holds,
      -1 for padding; local rows are the block's nodes in node-list order, then its clamped rows;
    - `slots` `[CLUSTER, nodes, 5G]`: owner << 16 | local row of every neighbour slot's row;
    - `picks` `[CLUSTER, nodes]`: which node of the free blocks' concatenated table rows (in update
      order) each node-list entry is, -1 for padding."""

    plan: np.ndarray
    home_rows: np.ndarray
    slots: np.ndarray
    picks: np.ndarray
    groups: int
    updates: tuple[int, ...]  # free blocks in sampling order

    @property
    def nodes(self) -> int:
        return self.slots.shape[1]

    @property
    def local_rows(self) -> int:
        return self.home_rows.shape[1]

    @property
    def most_nodes(self) -> int:
        return int(self.plan[:, 1].max(initial=0))


class ResidentInputs(NamedTuple):
    """A layout's tables and hashes as the kernel reads them (`resident_inputs`)."""

    tables: Float[Array, "cluster pairs G 2 32"]  # node pairs' tables, [CLUSTER, nodes / 2, G, 2, 32]
    hashes: UInt32[Array, "cluster nodes"]


def _positions(layouts: tuple[TableLayout, ...], offsets: np.ndarray, n_rows: int) -> np.ndarray:
    """A position for every flat-state row such that rows close in position are mostly neighbours:
    the reverse Cuthill-McKee order of the graph the free nodes' neighbour rows make. Cutting each
    block's nodes into CLUSTER runs of positions then keeps most reads of a cluster block local
    (P(14): 27% of edges between blocks instead of 90% when nodes are dealt out in turn); remote
    reads cross the cluster's network, which is several times slower than a block's own memory."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(range(n_rows))
    for b, layout in enumerate(layouts):
        rows = offsets[b] + layout.order
        for row, reads in zip(rows.tolist(), layout.neighbours.tolist()):
            graph.add_edges_from((row, other) for other in reads if other != n_rows - 1)
    order = list(nx.utils.reverse_cuthill_mckee_ordering(graph))
    positions = np.empty(n_rows, np.int64)
    positions[np.asarray(order, np.int64)] = np.arange(n_rows)
    return positions


def _deal(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster block, index within it) of each of some rows: CLUSTER runs of consecutive positions."""
    ranked = np.empty(positions.size, np.int64)
    ranked[np.argsort(positions, kind="stable")] = np.arange(positions.size)
    per_block = -(-positions.size // CLUSTER)
    return ranked // max(per_block, 1), ranked % max(per_block, 1)


@functools.lru_cache(maxsize=32)  # table layouts hash by identity: one entry per program structure
def resident_layout(
    layouts: tuple[TableLayout, ...], block_sizes: tuple[int, ...], order: tuple[tuple[int, ...], ...],
    spread: str = "local",
) -> ResidentLayout | None:
    """The cluster layout of a spin program whose free blocks all have table layouts, or None where a
    free block is missing from the sampling order or appears twice. `block_sizes`: every block's size
    (free, then clamped), as the flat state stacks them; one scratch row follows. `spread`: "local"
    gives each cluster block runs of neighbouring nodes (`_positions`), "turns" deals them out in
    turn (for comparison)."""
    updates = tuple(b for members in order for b in members)
    if sorted(updates) != list(range(len(layouts))):
        return None
    groups = max(layout.groups for layout in layouts)
    offsets = np.cumsum([0, *block_sizes])
    n_rows = int(offsets[-1]) + 1  # the scratch row last
    positions = _positions(layouts, offsets, n_rows) if spread == "local" else np.arange(n_rows)
    owner = np.full(n_rows, -1, np.int64)
    local = np.full(n_rows, -1, np.int64)
    concat_first = np.cumsum([0] + [layout.order.shape[0] for layout in layouts])  # free blocks' rows, concatenated
    plan, first = [], 0
    picks_parts, slot_parts = [], []
    for b in updates:
        layout = layouts[b]
        n = layout.order.shape[0]
        rows = offsets[b] + layout.order
        k, t = _deal(positions[rows]) if spread == "local" else (np.arange(n) % CLUSTER, np.arange(n) // CLUSTER)
        per_block = max(4, _round_up(int(t.max(initial=0)) + 1, 4))
        owner[rows], local[rows] = k, first + t
        pick = np.full((CLUSTER, per_block), -1, np.int64)
        pick[k, t] = concat_first[b] + np.arange(n)
        picks_parts.append(pick)
        neighbours = np.full((CLUSTER, per_block, groups * GROUP), n_rows - 1, np.int64)
        neighbours[k, t, : layout.neighbours.shape[1]] = layout.neighbours
        slot_parts.append(neighbours)
        last_of_group = any(b == members[-1] for members in order)
        plan.append((b, per_block, first, int(last_of_group), 0))
        first += per_block
    rest = np.flatnonzero(owner < 0)  # clamped rows and the scratch row
    k, t = _deal(positions[rest])
    owner[rest], local[rest] = k, first + t
    local_rows = first + int(t.max(initial=-1)) + 1
    home = np.full((CLUSTER, local_rows), -1, np.int64)
    home[owner, local] = np.arange(n_rows)  # padding nodes' rows stay -1
    flat_rows = np.concatenate(slot_parts, axis=1)
    slots = (owner[flat_rows] << 16) | local[flat_rows]
    return ResidentLayout(np.asarray(plan, np.int32), home.astype(np.int32), slots.astype(np.uint32),
                          np.concatenate(picks_parts, axis=1), groups, updates)


def resident_inputs(layout: ResidentLayout, blocks: list[TableBlock]) -> ResidentInputs:
    """Every free block's tables and hashes (`table_blocks`) in the cluster's node lists."""
    g = layout.groups
    tables = [jnp.pad(block.tables, ((0, 0), (0, g - block.tables.shape[1]), (0, 0))) for block in blocks]
    tables = jnp.concatenate(tables + [jnp.zeros((1, g, 32), jnp.float32)], axis=0)  # a zero row for padding
    hashes = jnp.concatenate([block.hashes for block in blocks] + [jnp.zeros((1,), jnp.uint32)])
    picks = jnp.asarray(np.where(layout.picks < 0, tables.shape[0] - 1, layout.picks).astype(np.int32))
    paired = tables[picks].reshape(CLUSTER, layout.nodes // 2, 2, g, 32).transpose(0, 1, 3, 2, 4)
    return ResidentInputs(paired, hashes[picks])


@dataclass(frozen=True)
class ResidentConfig:
    """How a launch is shaped: chains per cluster, words per work item, threads per block, and the
    shared memory it needs."""

    chains: int
    words: int
    threads: int
    shared_bytes: int
    stage_bytes: int
    table_stage_bytes: int
    hash_stage_bytes: int


def resident_config(layout: ResidentLayout, chains: int, *, slice_chains: int | None = None, words: int = 1,
                    threads: int | None = None) -> ResidentConfig | None:
    """The launch shape for `chains` chains (a multiple of 16), or None where no chain slice fits in
    shared memory. The slice is the largest of CHAIN_SLICES that divides `chains` and fits, unless
    `slice_chains` is given; threads default to one pass of at most 1,024 over the largest update's
    work items, evenly split."""
    candidates = (slice_chains,) if slice_chains else CHAIN_SLICES
    for c in candidates:
        if chains % c or c % (4 * words):
            continue
        table_stage = layout.most_nodes // 2 * layout.groups * 256
        hash_stage = _round_up(layout.most_nodes * 4, 16)
        stage = _round_up(table_stage + hash_stage + 4 * c, 256)
        slot_stride = _round_up(layout.groups * GROUP, 4)
        shared = 2 * stage + layout.nodes * slot_stride * 4 + layout.local_rows * c
        if shared > SHARED_BYTES_LIMIT:
            continue
        items = layout.most_nodes * c // (4 * words)
        if threads is None:
            passes = -(-items // 1024)
            count = min(1024, _round_up(-(-items // passes), 32))
        else:
            count = threads
        return ResidentConfig(c, words, count, shared, stage, table_stage, hash_stage)
    return None


def resident_runs_here() -> bool:
    """Whether the first CUDA device runs thread-block clusters (compute capability 9.0 on)."""
    from heatbath.kernels.cuda_runtime import compute_capability

    return compute_capability() >= 90


@functools.cache
def _source() -> str:
    return importlib.resources.files("heatbath.kernels").joinpath("table_resident.cu").read_text()


def resident_sweeps(
    layout: ResidentLayout,
    inputs: ResidentInputs,
    config: ResidentConfig,
    state: UInt8[Array, "N1 chains"],
    seeds: UInt32[Array, "sweeps n_free chains"],
    defines: tuple[tuple[str, int], ...] = (),
) -> UInt8[Array, "N1 chains"]:
    """The flat state after `seeds.shape[0]` sweeps, sweep s updating free block b with the folded
    seeds `seeds[s, b]` (`table_spin.fold_seeds`), as `table_spin.table_block_update` in sampling order
    would; one launch (in place). `defines`: more `-D` switches (bench/table_resident_probe.py)."""
    from heatbath.kernels.cuda_runtime import compile_ptx, compute_capability, cuda_call

    sweeps, n_free, chains = seeds.shape
    if sweeps == 0:
        return state
    defines = (("GROUPS", layout.groups), ("WORDS", config.words), ("CHAINS", config.chains), ("CLUSTER", CLUSTER),
               ("THREADS", config.threads), ("NODES", layout.nodes), ("LOCAL_ROWS", layout.local_rows),
               ("UPDATES", len(layout.updates)), ("FREE_BLOCKS", n_free), ("STAGE_BYTES", config.stage_bytes),
               ("TABLE_STAGE_BYTES", config.table_stage_bytes), ("HASH_STAGE_BYTES", config.hash_stage_bytes), *defines)
    ptx = compile_ptx(_source(), "table_resident.cu", defines, compute_capability())
    tables, hashes = inputs
    args = [jnp.asarray(layout.plan), jnp.asarray(layout.home_rows), jnp.asarray(layout.slots), tables, hashes, seeds, state]
    (out,) = cuda_call(ptx, "table_resident_sweeps", args, [(state.shape, "uint8")], grid=(chains // config.chains, 1, 1),
                       num_warps=config.threads // 32, scalars=(chains, sweeps), aliases={6: 0}, cluster=CLUSTER,
                       shared_bytes=config.shared_bytes)
    return out


def resident_sweeps_jnp(
    layout: ResidentLayout,
    inputs: ResidentInputs,
    config: ResidentConfig | None,
    state: UInt8[Array, "N1 chains"],
    seeds: UInt32[Array, "sweeps n_free chains"],
) -> UInt8[Array, "N1 chains"]:
    """`resident_sweeps` in jax.numpy, reading the layout and inputs as the kernel does (each slot's
    row through its owner and local row, each node's table from its pair's chunks), with
    `table_spin.table_block_update_jnp`'s arithmetic: the CPU tests' check of the layout."""
    owner, local = layout.slots >> 16, layout.slots & 0xFFFF
    reads = layout.home_rows[owner, local].astype(np.int32)  # [CLUSTER, nodes, 5G] flat rows
    tables = inputs.tables.transpose(0, 1, 3, 2, 4).reshape(CLUSTER, layout.nodes, layout.groups, 32)
    n_rows = state.shape[0]
    for s in range(seeds.shape[0]):
        for b, nodes, first, _, _ in layout.plan:
            rows = slice(first, first + nodes)
            spins = state[reads[:, rows]].astype(jnp.uint32)  # [CLUSTER, nodes, 5G, chains]
            spins = spins.reshape(CLUSTER, nodes, layout.groups, GROUP, -1)
            offsets = sum(spins[:, :, :, k] << k for k in range(GROUP))  # 4 * pattern
            shares = jnp.take_along_axis(tables[:, rows], (offsets // UP).astype(jnp.int32), axis=3)
            field = shares[:, :, 0]
            for g in range(1, layout.groups):
                field = field + shares[:, :, g]
            words = mix32_tail(inputs.hashes[:, rows, None] ^ seeds[s, b][None, None, :])
            new = jnp.where(uniform_from_words(words) * (1 + jnp.exp2(field)) < 1, UP, 0).astype(jnp.uint8)
            home = layout.home_rows[:, rows]
            state = state.at[jnp.asarray(np.where(home < 0, n_rows, home))].set(new, mode="drop")  # padding: dropped
    return state


def resident_loop(layout: ResidentLayout, inputs: ResidentInputs, config: ResidentConfig | None, state, seeds_of,
                  start, count: int, twin: bool = False):
    """`count` sweeps from sweep `start` (traced), their seeds made by `seeds_of(sweep)` `[n_free, chains]`,
    in launches of at most SEED_WORDS_PER_CALL seed words; `twin`: `resident_sweeps_jnp` instead."""
    if count == 0:
        return state
    per_sweep = len(layout.updates) * state.shape[1]
    chunk = max(1, min(count, SEED_WORDS_PER_CALL // per_sweep))
    launch = resident_sweeps_jnp if twin else resident_sweeps

    def run(state, first, k: int):
        seeds = jax.vmap(seeds_of)(first + jnp.arange(k, dtype=jnp.uint32))
        return launch(layout, inputs, config, state, seeds)

    full, rest = divmod(count, chunk)
    if full == 1:
        state = run(state, start, chunk)
    elif full:
        state = jax.lax.fori_loop(0, full, lambda i, s: run(s, start + i.astype(jnp.uint32) * jnp.uint32(chunk), chunk), state)
    return run(state, start + jnp.uint32(full * chunk), rest) if rest else state
