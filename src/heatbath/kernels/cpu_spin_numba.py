"""The compiled loops of `cpu_spin` (numba; imported on first use, so that importing heatbath does not
import numba). Every function here is the update rule of the pattern-table kernels
(`table_spin.table_block_update_jnp`) written for one row of chains at a time; see `cpu_spin` for
the layout and the reasons.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from heatbath.kernels.counter_rng import KEY_PARITY, MIX_MULTIPLIERS, ROTATIONS, STREAM_TAG
from heatbath.kernels.cpu_spin import GROUP_WIDTHS, MAX_GROUP, PER_CHAIN_GROUP, TABLE_ENTRIES
from heatbath.kernels.cpu_table_lookup import LANES, add_table_entries
from heatbath.kernels.table_spin import GROUP

__all__ = ["run_schedule", "run_groups_apart", "ROWS_PER_TILE"]

ROWS_PER_TILE = 32  # rows one thread updates before taking the next tile
_ROTATIONS = np.asarray(ROTATIONS, np.uint32)
# No bounds checks (the tables are built in range), numpy's error model (no Python exception paths in
# the loops) and fused multiply-adds (inside the 2^s polynomial; its last product, p · 2^k, is exact).
_OPTIONS = dict(boundscheck=False, error_model="numpy", fastmath={"contract"})
u8 = np.uint8
u32 = np.uint32
u64 = np.uint64
f32 = np.float32


@intrinsic
def prefer_wide_vectors(typingctx):
    """Let LLVM vectorise the calling function with 512-bit registers where the CPU has them.

    LLVM tunes AVX-512 CPUs to prefer 256-bit vectors, so the chain loops use half of the
    registers; this marks the enclosing function (a `prange` body) with the per-function
    `prefer-vector-width` attribute instead of changing numba's process-wide CPU features. The sweep
    ran 1.2-1.35x faster on the 2-core AVX-512 CI machine (measured, BENCHMARKS.md). CPUs without
    AVX-512 keep their widest vectors; other architectures ignore the attribute."""

    def codegen(context, builder, signature, args):
        try:  # llvmlite lists only its known attributes; an LLVM string attribute is added beside them
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except TypeError:  # pragma: no cover - a future llvmlite; the loops stay at the default width
            pass
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def stack_buffer(typingctx, dtype):
    """A pointer to `MAX_GROUP` items of `dtype` on the calling function's stack (for `numba.carray`).

    The per-row scratch (the fields, the powers of two) lives here rather than in a heap array: LLVM
    knows that a stack buffer which does not escape aliases no array argument, so the chain loops
    that read spins and write fields vectorise without run-time overlap checks. Those checks and
    their branches, four neighbour passes a row, cost as much as the 64 chains' arithmetic; without
    them a sweep of 64 chains ran 1.15-1.25x faster (measured, BENCHMARKS.md). One buffer per call
    site, allocated once in the function's entry block."""
    item = dtype.dtype

    def codegen(context, builder, signature, args):
        lltype = context.get_data_type(item)
        buffer = cgutils.alloca_once(builder, ir.ArrayType(lltype, MAX_GROUP))
        return builder.bitcast(buffer, lltype.as_pointer())

    return types.CPointer(item)(dtype), codegen


@njit(inline="always", cache=True)
def rotate_left(x, r):
    """Rotate the uint32 x left by r bits."""
    return u32((x << r) | (x >> (u32(32) - r)))


@njit(inline="always", cache=True)
def stream_seed(k0, k1, stream):
    """counter_rng.stream_seeds for one chain: Threefry-2x32-20 of (stream, tag), first word."""
    keys = (k0, k1, u32(k0 ^ k1 ^ u32(KEY_PARITY)))
    x0, x1 = u32(stream + k0), u32(u32(STREAM_TAG) + k1)
    for r in range(20):
        x0 = u32(x0 + x1)
        x1 = u32(rotate_left(x1, _ROTATIONS[r % 8]) ^ x0)
        if r % 4 == 3:
            s = r // 4 + 1
            x0 = u32(x0 + keys[s % 3])
            x1 = u32(x1 + keys[(s + 1) % 3] + u32(s))
    return x0


@njit(inline="always", cache=True)
def fold16(x):
    """counter_rng.fold16: x ^ (x >> 16)."""
    return u32(x ^ (x >> u32(16)))


@njit(inline="always", cache=True)
def mix32_tail(x):
    """counter_rng.mix32_tail: the update word of a (node, chain) from fold16(hash) ^ fold16(seed)."""
    x = u32(x * u32(MIX_MULTIPLIERS[0]))
    x = u32(x ^ (x >> u32(15)))
    x = u32(x * u32(MIX_MULTIPLIERS[1]))
    return u32(x ^ (x >> u32(16)))


@njit(inline="always", cache=True, **_OPTIONS)
def exp2_parts(s):
    """2^s as (p, 2^k) with 2^s = p · 2^k: k the integer nearest s, p = e^{(s - k) ln 2} by a degree-7
    Taylor polynomial (truncation below 1e-8 relative on |s - k| <= 1/2), 2^k assembled from exponent
    bits. Written without calls, so that the chain loops vectorise. s is clamped to ±126, where the
    draw's decision no longer depends on it."""
    x = min(max(s, f32(-126.0)), f32(126.0))
    k = f32(np.floor(x + f32(0.5)))
    r = (x - k) * f32(0.6931471805599453)
    p = f32(1.0 / 5040.0)
    p = p * r + f32(1.0 / 720.0)
    p = p * r + f32(1.0 / 120.0)
    p = p * r + f32(1.0 / 24.0)
    p = p * r + f32(1.0 / 6.0)
    p = p * r + f32(0.5)
    p = p * r + f32(1.0)
    return p * r + f32(1.0), np.int32((np.int32(k) + np.int32(127)) << np.int32(23)).view(np.float32)


@njit(inline="always", cache=True, **_OPTIONS)
def spin_up(hash_, seed, p, two_k):
    """The table kernels' heat-bath decision (`table_spin.table_block_update_jnp`): up (1) where
    u · (1 + 2^s) < 1 for the scaled field s = −2 log2(e) · field, u from the update word."""
    u = (f32(mix32_tail(u32(hash_ ^ seed)) >> u32(8)) + f32(0.5)) * f32(2.0**-24)
    return u8(1) if u * (f32(1.0) + p * two_k) < f32(1.0) else u8(0)


@njit(inline="always", cache=True)
def pattern(st, neighbours, row, g, c):
    """The five-bit up/down pattern of group g of row `row`'s neighbours in chain c (bit k: slot 5g + k)."""
    d = u64(GROUP) * u64(g)
    return u8(st[neighbours[row, d], c] | (st[neighbours[row, d + u64(1)], c] << 1)
              | (st[neighbours[row, d + u64(2)], c] << 2) | (st[neighbours[row, d + u64(3)], c] << 3)
              | (st[neighbours[row, d + u64(4)], c] << 4))


@njit(inline="always", cache=True, **_OPTIONS)
def update_row_per_chain(st, i, groups, neighbours, tables, table_starts, hashes, seeds, target):
    """`update_row` for groups of at most `PER_CHAIN_GROUP` chains, one chain at a time: too few to
    fill a vector (P(14), one thread: one chain 0.030-0.040 flips/ns, about 29 ns a row; three
    chains in a group of 32 0.055, about 55 ns a row, what two chains one at a time cost). Same table
    entries summed in the same order, so the same spins."""
    row = u64(i)
    base = table_starts[row]
    for c in range(st.shape[1]):
        s = tables[base + u64(pattern(st, neighbours, row, 0, c))]
        for g in range(1, groups):
            s = s + tables[base + u64(g) * u64(TABLE_ENTRIES) + u64(pattern(st, neighbours, row, g, c))]
        p, two_k = exp2_parts(s)
        target[c] = spin_up(hashes[row], seeds[c], p, two_k)


@njit(inline="always", cache=True, **_OPTIONS)
def update_row(st, i, groups, neighbours, tables, table_starts, hashes, seeds, width, patterns, sums, target):
    """New spins of global row i of one group's `width` chains (their state `st`) into `target`.

    For each group of five neighbours, every chain's pattern byte, then sixteen chains' table entries
    at a time (`add_table_entries`); then the draw. `patterns` and `sums` are stack scratch of
    MAX_GROUP items. The kernel passes `width` as a constant (one of GROUP_WIDTHS: groups are padded
    to one, `cpu_spin._group_size`), so every loop has a length known at compile time: with the
    length known only at run time the byte loop (64 chains a vector, unrolled four times) fell
    through to its 16-byte remainder loop and the row's field took 1.75x longer, and loops over
    blocks of 16 chains ran scalar (measured, BENCHMARKS.md)."""
    row = u64(i)
    pattern_bytes = carray(patterns, MAX_GROUP)
    base = table_starts[row]
    for g in range(groups):
        for c in range(width):
            pattern_bytes[c] = pattern(st, neighbours, row, g, c)
        for c in range(0, width, LANES):
            add_table_entries(tables, base + u64(g) * u64(TABLE_ENTRIES), patterns, sums, c, g == 0)
    field = carray(sums, MAX_GROUP)
    hash_ = hashes[row]
    for c in range(width):
        p, two_k = exp2_parts(field[c])
        target[c] = spin_up(hash_, seeds[c], p, two_k)


@njit(inline="always", cache=True, **_OPTIONS)
def update_any_row(st, i, b, groups, neighbours, tables, table_starts, hashes, seeds, patterns, sums):
    """Row i (of free block b) of one group, by its width: one chain at a time up to PER_CHAIN_GROUP
    chains, else `update_row` with the width as a constant (loops of known length)."""
    chains = st.shape[1]
    if chains <= PER_CHAIN_GROUP:
        update_row_per_chain(st, i, groups[b], neighbours, tables, table_starts, hashes, seeds, st[i])
    elif chains == GROUP_WIDTHS[0]:
        update_row(st, i, groups[b], neighbours, tables, table_starts, hashes, seeds, GROUP_WIDTHS[0], patterns, sums,
                   st[i])
    else:
        update_row(st, i, groups[b], neighbours, tables, table_starts, hashes, seeds, GROUP_WIDTHS[1], patterns, sums,
                   st[i])


@njit(inline="always", cache=True)
def sweep_seeds(seeds, key0, key1, order_blocks, first, last, sweep, n_free):
    """One group's seeds `[n_free, chains]` for the blocks `order_blocks[first:last]` of sweep `sweep`."""
    for m in range(first, last):
        b = order_blocks[m]
        stream = u32(u32(sweep) * u32(n_free) + u32(b))
        for c in range(seeds.shape[1]):
            seeds[b, c] = fold16(stream_seed(key0[c], key1[c], stream))


@njit(inline="always", cache=True)
def write_sample(out, st, observed):
    """One group's sample: `out[o, c]` whether observed row `observed[o]` of chain c is up."""
    for o in range(observed.shape[0]):
        for c in range(st.shape[1]):
            out[o, c] = st[observed[o], c] > 0


@njit(inline="always", cache=True)
def check_width(chains):
    if chains > PER_CHAIN_GROUP and chains not in GROUP_WIDTHS:  # update_row's loops (and its stack scratch)
        raise ValueError("the CPU spin kernel: a group holds at most PER_CHAIN_GROUP chains, or one of GROUP_WIDTHS")


@njit(parallel=True, nogil=True, cache=True, **_OPTIONS)
def run_schedule(state, neighbours, tables, table_starts, groups, hashes, row_block, order_blocks, order_splits,
                 rows, row_splits, key0, key1, n_free, n_warmup, n_samples, steps, observed, out):
    """Run a schedule on `state` `[groups, rows, chains]` (1 up, 0 down, updated in place) and write the
    observed rows of every sample into `out` `[groups, n_samples, observed, chains]`.

    Free row i reads its neighbours `neighbours[i]` (flat-state rows, five a table; padding slots
    read the last row, at zero coupling) through its `groups[block of i]` tables of 32 entries from
    `tables[table_starts[i]]` (float32, flat), with update-word hash `hashes[i]`
    (`table_spin.table_blocks`' layout with the nodes in block order).
    Sampling group g (the blocks `order_blocks[order_splits[g]:order_splits[g + 1]]`) updates the
    global rows `rows[row_splits[g]:row_splits[g + 1]]` in place: the blocks of one group never
    interact (the spec rejects it), so none reads a row that another writes. Sweep t of free block b
    draws its words from the stream `t · n_free + b`, as `pairwise_sweep` does.

    Every block update is shared among the threads in tiles of ROWS_PER_TILE rows, two parallel
    regions an update: for fewer groups than threads (`run_groups_apart` otherwise)."""
    n_groups, _, chains = state.shape
    check_width(chains)
    seeds = np.empty((n_groups, n_free, chains), np.uint32)
    sweep = 0
    for sample in range(n_samples):
        for _ in range(n_warmup if sample == 0 else steps):
            for g in range(order_splits.shape[0] - 1):
                for h in prange(n_groups):
                    prefer_wide_vectors()
                    sweep_seeds(seeds[h], key0[h], key1[h], order_blocks, order_splits[g], order_splits[g + 1], sweep,
                                n_free)
                first, last = row_splits[g], row_splits[g + 1]
                tiles = -(-(last - first) // ROWS_PER_TILE)
                for t in prange(n_groups * tiles):
                    prefer_wide_vectors()
                    h, tile = t // tiles, t % tiles
                    patterns = stack_buffer(np.uint8)
                    sums = stack_buffer(np.float32)
                    for q in range(first + tile * ROWS_PER_TILE, min(first + (tile + 1) * ROWS_PER_TILE, last)):
                        i = rows[q]
                        b = row_block[i]
                        update_any_row(state[h], i, b, groups, neighbours, tables, table_starts, hashes, seeds[h, b],
                                       patterns, sums)
            sweep += 1
        for h in prange(n_groups):
            write_sample(out[h, sample], state[h], observed)


@njit(parallel=True, nogil=True, cache=True, **_OPTIONS)
def run_groups_apart(state, neighbours, tables, table_starts, groups, hashes, row_block, order_blocks, order_splits,
                     rows, row_splits, key0, key1, n_free, n_warmup, n_samples, steps, observed, out):
    """`run_schedule` with each group's whole schedule on one thread: no parallel region, so no thread
    waits for another between block updates. The groups' chains are independent, so this is the
    same arithmetic in another order of groups, and the same samples. On the 2-core CI VM, 64 chains
    as two groups of 32 ran without the slow phases of the shared updates (a thread of another
    process or of XLA that takes a core stalls every barrier; measured, BENCHMARKS.md)."""
    n_groups, _, chains = state.shape
    check_width(chains)
    for h in prange(n_groups):
        prefer_wide_vectors()
        st = state[h]
        seeds = np.empty((n_free, chains), np.uint32)
        patterns = stack_buffer(np.uint8)
        sums = stack_buffer(np.float32)
        sweep = 0
        for sample in range(n_samples):
            for _ in range(n_warmup if sample == 0 else steps):
                for g in range(order_splits.shape[0] - 1):
                    sweep_seeds(seeds, key0[h], key1[h], order_blocks, order_splits[g], order_splits[g + 1], sweep, n_free)
                    for q in range(row_splits[g], row_splits[g + 1]):
                        i = rows[q]
                        b = row_block[i]
                        update_any_row(st, i, b, groups, neighbours, tables, table_starts, hashes, seeds[b], patterns,
                                       sums)
                sweep += 1
            write_sample(out[h, sample], st, observed)
