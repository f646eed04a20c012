"""Neighbour tables of a pairwise program (spin or categorical), split by the block each neighbour is in.

A pairwise program has only biases and couplings between two nodes of one kind: Ising models,
Boltzmann machines and RBMs (spins), Potts and pairwise categorical EBMs (categories).

The fastest sweep keeps one `[nodes, chains]` array per block (free or clamped) instead of one
global array: writing a block back then never copies the rest of the state, which on XLA:CPU costs
as much as the update itself. A free block b therefore reads each source block b' through its own
padded table `[n_b, D_bb']` of local indices into b' and a matching coupling table.

Only the index tables are static (numpy, built once per program structure); the couplings and biases
are taken from the program's interaction weights on every call, so training with new weights reuses
the compiled sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from heatbath.block_sampling import BlockSamplingProgram
from heatbath.kernels.identity_cache import IdentityCache
from heatbath.kernels.program_structure import remembered, split_program
from heatbath.models.discrete_ebm import CategoricalGibbsConditional, DiscreteEBMInteraction, SpinGibbsConditional

__all__ = ["NeighbourTables", "pairwise_tables", "pairwise_kind", "block_couplings", "flat_neighbours", "real_slots"]

MAX_CATEGORIES = 16  # the categorical update unrolls K x K_tail selects per neighbour
DENSE_MIN_SOURCE = 32  # below this a gather of the padded table is as cheap as a matrix product


@dataclass(frozen=True, eq=False)
class NeighbourTables:
    """Static structure of a pairwise program (hashed by identity, cached per program tables).

    - `sources[b]`: the blocks free block b reads, each with `neighbours` `[n_b, D]` (local indices
      into that block, 0 on padding) and `columns` `[n_b, D]` (which column of b's concatenated
      coupling table feeds that slot; the last, all-zero column on padding).
    - `bias_interactions[b]`, `pair_interactions[b]`: which interactions of b are biases (no tails)
      and which are pairwise couplings (one tail), in the column order of the coupling table.
    - `node_ids[b]`: spec-wide ids of the nodes of block b, used to key their random words.
    - `dense[b][i]`: whether free block b reads its i-th source through a dense coupling matrix and
      matrix products (dense bipartite layers, as in RBMs) instead of a gather: `[n_b, n_source]`
      for spins, `[n_b, n_source, K, K_tail]` in categorical programs (`block_couplings`). Sparse
      graphs (a Potts lattice) have no dense source and keep their gathers (the GPUs' Pallas kernel).
    - `categories[b]`, `tail_widths[b][i]`: in a categorical program, the category counts of free block
      b and of what its i-th source's coupling table indexes (2 for spin blocks, which run as
      categories 0 = down and 1 = up).
    - `dense_columns[b][i]`: for a dense source, which columns of the coupling table make its matrix
      (`_dense_columns`); None for gathered sources.
    """

    sources: tuple[tuple[tuple[int, np.ndarray, np.ndarray], ...], ...]
    bias_interactions: tuple[tuple[int, ...], ...]
    pair_interactions: tuple[tuple[int, ...], ...]
    node_ids: tuple[np.ndarray, ...]
    block_sizes: tuple[int, ...]
    kind: str  # "spin" or "categorical"
    n_categories: int  # 2 for spins; for categories the count of every free block, or 0 where they differ
    dense: tuple[tuple[bool, ...], ...] = ()  # per free block and source: couplings as a dense matrix
    zero_columns: tuple[int, ...] = ()  # per free block: the all-zero column padding slots point at
    spin_blocks: tuple[bool, ...] = ()  # per block (free, then clamped): whether it holds spins
    categories: tuple[int, ...] = ()  # per free block: its category count (2 for spins)
    tail_widths: tuple[tuple[int, ...], ...] = ()  # per free block and source: the source's categories in the tables
    dense_columns: tuple[tuple[np.ndarray | int | None, ...], ...] = ()  # per free block and dense source


def pairwise_kind(program: BlockSamplingProgram) -> tuple[str | None, str]:
    """("spin" or "categorical", "") if a pairwise kernel can run `program`, else (None, why not).

    Every free block uses the built-in SpinGibbsConditional (scalar boolean states) or
    CategoricalGibbsConditional (scalar unsigned integer states, at most MAX_CATEGORIES categories),
    and every interaction is a bias or a coupling to one node. Spin: every block holds spins.
    Categorical: any other mix, category counts free to differ from block to block; spins then run
    as two categories, 0 for down and 1 for up (`block_couplings` writes their weights so).
    The answer rests on types and shapes alone, so it is remembered per program (a loop of batched
    calls asks it every call: 0.1-0.2 ms).
    """
    return _KINDS.get((program,), lambda: _pairwise_kind(program))


def _pairwise_kind(program: BlockSamplingProgram) -> tuple[str | None, str]:
    spec = program.gibbs_spec
    kinds = {type(sampler) for sampler in program.samplers}
    if not kinds <= {SpinGibbsConditional, CategoricalGibbsConditional}:
        return None, "the free blocks do not all use SpinGibbsConditional or CategoricalGibbsConditional"
    too_many = [s.n_categories for s in program.samplers if isinstance(s, CategoricalGibbsConditional)
                and s.n_categories > MAX_CATEGORIES]
    if too_many:
        return None, f"{too_many[0]} categories, more than {MAX_CATEGORIES} (the kernel unrolls K x K selects)"
    spins = []
    for b in range(len(spec.blocks)):
        leaves = _state_leaves(spec, b)
        state_kind = np.dtype(leaves[0].dtype).kind if len(leaves) == 1 and leaves[0].shape == () else None
        sampler = program.samplers[b] if b < len(spec.free_blocks) else None
        want = {SpinGibbsConditional: "b", CategoricalGibbsConditional: "u"}.get(type(sampler), "bu")
        if state_kind is None or state_kind not in want:
            return None, f"block {b} does not hold scalar {'boolean spins' if want == 'b' else 'unsigned categories'}"
        spins.append(state_kind == "b")
    kind = "spin" if all(spins) else "categorical"  # spins among categories are categories 0 (down) and 1 (up)
    sd_is_spin = {int(spec.block_sd_index[b]): spin for b, spin in enumerate(spins)}
    for b in range(len(spec.free_blocks)):
        head_axes = 0 if spins[b] else 1
        for interaction, entry in zip(program.per_block_interactions[b], program.tables.per_block[b]):
            if not isinstance(interaction, DiscreteEBMInteraction):
                return None, f"free block {b} has a {type(interaction).__name__} interaction"
            tails = len(entry.tail_sd)
            tail_spin = tails == 1 and sd_is_spin[int(entry.tail_sd[0])]
            tail_axes = 1 if tails == 1 and not tail_spin else 0
            if tails > 1 or np.ndim(interaction.weights) != 2 + head_axes + tail_axes:
                return None, f"free block {b} has a higher-order interaction"
            if tails and interaction.n_spin != int(tail_spin):
                return None, f"free block {b} has an interaction whose spin tails are not the spin blocks it reads"
            if not spins[b] and np.shape(interaction.weights)[2] != program.samplers[b].n_categories:
                return None, f"free block {b} has weights for another category count (the generic path explains)"
            if tail_axes and np.shape(interaction.weights)[-1] > MAX_CATEGORIES:
                return None, f"free block {b} reads neighbours with more than {MAX_CATEGORIES} categories"
    return kind, ""


def _source_hits(tail_block: np.ndarray, active: np.ndarray):
    """For each source block that a free block's slots `[n, D]` read: (source, which slots read it
    `[n, D]`, and the widest node's count of them: the width of that source's padded table)."""
    for source in np.unique(tail_block[active]):
        hit = active & (tail_block == source)
        yield int(source), hit, int(hit.sum(1).max())


def _state_leaves(spec, b: int) -> list:
    """The shape-dtype leaves of one node's state in block b."""
    return jax.tree.leaves(spec.sd_struct(int(spec.block_sd_index[b])))


_KINDS: IdentityCache[tuple[str | None, str]] = IdentityCache(32)
_TABLES: IdentityCache[NeighbourTables] = IdentityCache(32)


def pairwise_tables(program: BlockSamplingProgram) -> NeighbourTables:
    """The static tables of `program` (which `pairwise_kind` must accept), remembered per structure:
    per `program.tables` object, and for a new one per program structure and weight shapes, so that a
    program rebuilt from the same nodes gets its twin's tables, and with them everything remembered
    per tables object (a torus' layout, the kernels' layouts)."""
    return _TABLES.get((program.tables,), lambda: _tables_of_structure(program))


_TABLES_BY_STRUCTURE: dict[tuple, NeighbourTables] = {}


def _tables_of_structure(program: BlockSamplingProgram) -> NeighbourTables:
    structure, arrays = split_program(program)
    key = (structure, tuple((np.shape(a), np.dtype(a.dtype)) for a in arrays))
    found = remembered(_TABLES_BY_STRUCTURE, key, lambda: _build(program), _TABLES.size)
    return _build(program) if found is None else found


def _owners(spec) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For every global-list entry: the block and the local index of each position."""
    owners = {}
    for sd, members in enumerate(spec.block_to_global_slice_spec):
        size = sum(len(spec.blocks[b]) for b in members)
        block, local = np.zeros(size, np.int64), np.zeros(size, np.int64)
        for b in members:
            start, n = int(spec.block_offsets[b]), len(spec.blocks[b])
            block[start : start + n], local[start : start + n] = b, np.arange(n)
        owners[sd] = (block, local)
    return owners


def _build(program: BlockSamplingProgram) -> NeighbourTables:
    spec = program.gibbs_spec
    kind, _ = pairwise_kind(program)
    owners = _owners(spec)
    starts = np.cumsum([0] + [len(block) for block in spec.blocks])
    spins = tuple(np.dtype(_state_leaves(spec, b)[0].dtype).kind == "b" for b in range(len(spec.blocks)))
    sources, biases, pairs, dense, zero_columns, tail_widths, dense_columns = [], [], [], [], [], [], []
    for b in range(len(spec.free_blocks)):
        tail_block, tail_local, active, bias_j, pair_j, column_width = [], [], [], [], [], []
        for j, entry in enumerate(program.tables.per_block[b]):
            if not entry.tail_sd:
                bias_j.append(j)
                continue
            pair_j.append(j)
            block, local = owners[entry.tail_sd[0]]
            tail_block.append(block[entry.tail_positions[0]])
            tail_local.append(local[entry.tail_positions[0]])
            active.append(np.asarray(entry.active, bool))
            width = 2 if spins[int(block[0])] else int(np.shape(program.per_block_interactions[b][j].weights)[-1])
            column_width += [width] * active[-1].shape[1]
        per_source, zero_column, widths = [], 0, []
        if pair_j:
            tail_block, tail_local = np.concatenate(tail_block, 1), np.concatenate(tail_local, 1)
            active = np.concatenate(active, 1)
            zero_column = tail_block.shape[1]
            for source, hit, width in _source_hits(tail_block, active):
                order = np.argsort(~hit, axis=1, kind="stable")[:, :width]
                used = np.take_along_axis(hit, order, 1)
                neighbours = np.where(used, np.take_along_axis(tail_local, order, 1), 0).astype(np.int32)
                columns = np.where(used, order, zero_column).astype(np.int32)
                per_source.append((source, neighbours, columns))
                widths.append(int(np.max(np.asarray(column_width)[np.any(hit, axis=0)])))
        sources.append(tuple(per_source))
        tail_widths.append(tuple(widths))
        dense.append(tuple(_is_dense(nb.shape[1], len(spec.blocks[src])) for src, nb, _ in per_source))
        dense_columns.append(tuple(_dense_columns(nb, cols, len(spec.blocks[src]), zero_column) if is_dense else None
                                   for (src, nb, cols), is_dense in zip(per_source, dense[-1])))
        biases.append(tuple(bias_j))
        pairs.append(tuple(pair_j))
        zero_columns.append(zero_column)
    node_ids = tuple(np.arange(starts[b], starts[b + 1], dtype=np.uint32) for b in range(len(spec.blocks)))
    categories = tuple(2 if spins[b] else program.samplers[b].n_categories for b in range(len(spec.free_blocks)))
    n_categories = 2 if kind == "spin" else (categories[0] if len(set(categories)) == 1 and not any(spins) else 0)
    return NeighbourTables(
        tuple(sources), tuple(biases), tuple(pairs), node_ids, tuple(len(block) for block in spec.blocks),
        kind, n_categories, tuple(dense), tuple(zero_columns), spins, categories, tuple(tail_widths),
        tuple(dense_columns),
    )


def _dense_columns(neighbours: np.ndarray, columns: np.ndarray, n_source: int, zero_column: int) -> np.ndarray | int:
    """The coupling-table columns that make a dense source's matrix, `[L, n, n_source]` (int32):
    entry (i, k) is the sum over l of column `[l, i, k]` of row i, the zero column where fewer than
    l + 1 of row i's slots read node k (L is the most slots any row has on one node, 1 unless a
    program couples a pair twice). Or an int c where every row's slots read the source in order from
    column c (an RBM layer listed pair by pair): the matrix is then the columns c to c + n_source.

    Built once per structure, so each call makes the matrix by a slice or L gathers of the weights
    (a scatter-add cost seconds of constant folding for a 784 x 500 layer with concrete weights;
    with traced ones, the gathers cost about 15 ms a call on a 2-core CPU where the slice is free)."""
    n = neighbours.shape[0]
    real = columns != zero_column
    rows, slots = np.nonzero(real)
    targets = rows * n_source + neighbours[rows, slots].astype(np.int64)
    order = np.argsort(targets, kind="stable")
    targets, picked = targets[order], columns[rows, slots][order]
    starts = np.searchsorted(targets, targets, side="left")
    layer = np.arange(len(targets)) - starts  # 0 for a target's first slot, 1 for its second, ...
    out = np.full((int(layer.max(initial=0)) + 1, n * n_source), zero_column, np.int32)
    out[layer, targets] = picked
    out = out.reshape(-1, n, n_source)
    in_order = out.shape[0] == 1 and bool(np.all(out[0] == out[0, 0, 0] + np.arange(n_source)))
    return int(out[0, 0, 0]) if in_order else out


def _is_dense(width: int, n_source: int) -> bool:
    """A padded table at least half as wide as its source is cheaper as a matrix product."""
    return n_source >= DENSE_MIN_SOURCE and 2 * width >= n_source


def flat_neighbours(tables: NeighbourTables, b: int) -> np.ndarray:
    """Free block b's neighbour slots `[n_b, D]` (int64) as rows of every block stacked (free, then
    clamped, in block order): the per-source tables side by side in `tables.sources[b]` order, so
    slot d matches column d of `block_couplings`' tables concatenated along axis 1; padding slots
    point at their source's row 0. b must read at least one source."""
    starts = np.cumsum([0, *tables.block_sizes])
    return np.concatenate([starts[src] + nb.astype(np.int64) for src, nb, _ in tables.sources[b]], axis=1)


def real_slots(tables: NeighbourTables, b: int) -> np.ndarray:
    """Which slots of `flat_neighbours(tables, b)` `[n_b, D]` are couplings (True), not padding."""
    return np.concatenate([cols != tables.zero_columns[b] for _, _, cols in tables.sources[b]], axis=1)


def block_couplings(program: BlockSamplingProgram, tables: NeighbourTables, b: int) -> tuple[Array, list[Array]]:
    """The field of free block b as (bias, one coupling table per source block).

    Spins: bias `[n]`, couplings `[n, D]`. Categories: bias `[n, K]`, couplings `[n, D, K, K_tail]`
    (the head's categories, then the neighbour's; K_tail is `tables.tail_widths[b][i]`). A dense
    source (`tables.dense`) has its couplings laid over the whole source block instead, D being the
    source's size. Spins of a categorical program are categories 0 (down, σ = -1) and 1 (up, σ = +1).
    As a neighbour, a spin's coupling w gets the tail axis w σ(t). As the head, a spin block needs
    only Δ = θ_1 − θ_0 (`categorical_draw.draw_spin`), so its head axis has one entry, σ(1) − σ(0) =
    2 times the weight: bias `[n, 1]` = 2h, couplings `[n, D, 1, K_tail]` = 2w σ(t) or 2w[t] (exact
    in float32). Taken from the program's (possibly traced) weights, so new weights need no new tables."""
    n = tables.block_sizes[b]
    weights = program.per_block_interactions[b]
    active = program.per_block_interaction_active[b]
    categorical = tables.kind == "categorical"
    head_spin = categorical and tables.spin_blocks[b]

    def masked(j):
        w = weights[j].weights.astype(jnp.float32)
        mask = active[j].reshape(active[j].shape + (1,) * (w.ndim - 2))
        w = jnp.where(mask, w, 0)
        if head_spin:  # the head's axis, one entry: σ(1) w − σ(0) w
            w = 2 * w[:, :, None]
        if categorical and weights[j].n_spin:  # a spin tail's category axis: w σ(t)
            w = jnp.stack([-w, w], axis=-1)
        return w

    bias = jnp.zeros((n, 1 if head_spin else tables.categories[b]) if categorical else (n,), jnp.float32)
    for j in tables.bias_interactions[b]:
        bias = bias + masked(j).sum(1)
    if not tables.pair_interactions[b]:
        return bias, []
    pairs = [masked(j) for j in tables.pair_interactions[b]]
    if categorical:  # tails of different category counts: pad to the widest (padding is never read)
        widest = max(p.shape[-1] for p in pairs)
        pairs = [jnp.pad(p, ((0, 0),) * 3 + ((0, widest - p.shape[-1]),)) for p in pairs]
    concatenated = jnp.concatenate(pairs + [jnp.zeros_like(pairs[0][:, :1])], axis=1)
    extra = (1,) * (concatenated.ndim - 2)
    out = []
    for i, ((source, _, columns), dense) in enumerate(zip(tables.sources[b], tables.dense[b])):
        layout = tables.dense_columns[b][i] if dense else None
        if isinstance(layout, int):  # [n, n_source (, K, K_tail)]: the columns in order (`_dense_columns`)
            w = concatenated[:, layout : layout + tables.block_sizes[source]]
        elif dense:  # by gathers of whole columns
            layers = [jnp.take_along_axis(concatenated, jnp.asarray(c).reshape(c.shape + extra), 1) for c in layout]
            w = sum(layers[1:], layers[0])
        else:
            w = jnp.take_along_axis(concatenated, jnp.asarray(columns).reshape(columns.shape + extra), 1)
        if categorical:
            w = w[..., : tables.tail_widths[b][i]]
        out.append(w)
    return bias, out
