"""The compiled loops of `cpu_spin` (numba; imported on first use, so that importing heatbath does not
import numba). Every function here is one update rule of `pairwise_sweep` written for one row of
chains at a time; see `cpu_spin` for the layout and the reasons.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from heatbath.kernels.counter_rng import GOLDEN, KEY_PARITY, MIX_MULTIPLIERS, ROTATIONS, STREAM_TAG
from heatbath.kernels.cpu_spin import MAX_GROUP, PER_CHAIN_GROUP

__all__ = ["run_schedule", "ROWS_PER_TILE"]

ROWS_PER_TILE = 32  # rows one thread updates before taking the next tile
_ROTATIONS = np.asarray(ROTATIONS, np.uint32)
# No bounds checks (the tables are built in range), numpy's error model (no Python exception paths in
# the loops) and fused multiply-adds (every product here is exact or inside the exp polynomial).
_OPTIONS = dict(boundscheck=False, error_model="numpy", fastmath={"contract"})
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
def update_word(a, seed):
    """counter_rng.update_words for one (node, chain): mix32(golden·node ^ seed)."""
    x = u32(a ^ seed)
    x = u32(x ^ (x >> u32(16)))
    x = u32(x * u32(MIX_MULTIPLIERS[0]))
    x = u32(x ^ (x >> u32(15)))
    x = u32(x * u32(MIX_MULTIPLIERS[1]))
    return u32(x ^ (x >> u32(16)))


@njit(inline="always", cache=True, **_OPTIONS)
def exp_minus_twice(a):
    """e^{-2a} as (p, 2^k) with e^{-2a} = p · 2^k: range reduction, a degree-7 polynomial p(r), and 2^k
    assembled from exponent bits. Written without calls, so that the chain loops vectorise."""
    x = min(max(f32(-2.0) * a, f32(-87.0)), f32(88.0))
    k = f32(np.floor(x * f32(1.4426950408889634) + f32(0.5)))
    r = x - k * f32(0.693359375) - k * f32(-2.1219444005469057e-4)
    p = f32(1.0 / 5040.0)
    p = p * r + f32(1.0 / 720.0)
    p = p * r + f32(1.0 / 120.0)
    p = p * r + f32(1.0 / 24.0)
    p = p * r + f32(1.0 / 6.0)
    p = p * r + f32(0.5)
    p = p * r + f32(1.0)
    return p * r + f32(1.0), np.int32((np.int32(k) + np.int32(127)) << np.int32(23)).view(np.float32)


@njit(inline="always", cache=True, **_OPTIONS)
def spin_up(node_hash, seed, p, two_k):
    """The heat-bath decision: +1 where u · (1 + e^{-2·field}) < 1, u from the update word."""
    u = (f32(update_word(node_hash, seed) >> u32(8)) + f32(0.5)) * f32(2.0**-24)
    return 1 if u * (f32(1.0) + p * two_k) < f32(1.0) else -1


@njit(inline="always", cache=True, **_OPTIONS)
def update_row_per_chain(st, i, neighbours, couplings, bias, node_ids, seeds, target):
    """`update_row` for groups of at most `PER_CHAIN_GROUP` chains, one chain at a time: too few to
    fill a vector, and rows overlap better in the CPU than the vector loops' setup does (one chain
    about 2.4x faster than padded to a vector of 8, measured in BENCHMARKS.md). Same operations in the same order, so the
    same spins."""
    node_hash = u32(node_ids[i] * u32(GOLDEN))
    for c in range(st.shape[1]):
        a = bias[i]
        for d in range(neighbours.shape[1]):
            a = a + couplings[i, d] * f32(st[neighbours[i, d], c])
        p, two_k = exp_minus_twice(a)
        target[c] = spin_up(node_hash, seeds[c], p, two_k)


@njit(inline="always", cache=True, **_OPTIONS)
def update_row(st, i, neighbours, couplings, bias, node_ids, seeds, acc, scale, target):
    """New spins of global row i of one group's chains (their state `st`) into `target`; `acc` and
    `scale` are scratch of one item per chain."""
    chains = st.shape[1]
    for c in range(chains):
        acc[c] = bias[i]
    row = u64(i)  # unsigned indices (here and in the table): numba adds no negative-index wraparound
    for n in range(neighbours.shape[1] // 4):  # four neighbours a pass, summed in table order
        d = u64(4) * u64(n)
        j0, j1 = neighbours[row, d], neighbours[row, d + u64(1)]
        j2, j3 = neighbours[row, d + u64(2)], neighbours[row, d + u64(3)]
        w0, w1 = couplings[row, d], couplings[row, d + u64(1)]
        w2, w3 = couplings[row, d + u64(2)], couplings[row, d + u64(3)]
        for c in range(chains):  # J·s is exact for s = ±1, so fused multiply-adds round as adds do
            a = acc[c] + w0 * f32(st[j0, c])
            a = a + w1 * f32(st[j1, c])
            a = a + w2 * f32(st[j2, c])
            acc[c] = a + w3 * f32(st[j3, c])
    for c in range(chains):
        acc[c], scale[c] = exp_minus_twice(acc[c])
    node_hash = u32(node_ids[i] * u32(GOLDEN))
    for c in range(chains):
        target[c] = spin_up(node_hash, seeds[c], acc[c], scale[c])


@njit(parallel=True, nogil=True, cache=True, **_OPTIONS)
def run_schedule(state, neighbours, couplings, bias, node_ids, row_block, order_blocks, order_splits,
                 rows, row_splits, key0, key1, n_free, n_warmup, n_samples, steps, observed, out):
    """Run a schedule on `state` `[groups, rows, chains]` (±1, updated in place) and write the observed
    rows of every sample into `out` `[groups, n_samples, observed, chains]`.

    Sampling group g (the blocks `order_blocks[order_splits[g]:order_splits[g + 1]]`) updates the
    global rows `rows[row_splits[g]:row_splits[g + 1]]` in place: the blocks of one group never
    interact (the spec rejects it), so none reads a row that another writes. Sweep t of free block b
    draws its words from the stream `t · n_free + b`, as `pairwise_sweep` does."""
    groups, _, chains = state.shape
    if chains > MAX_GROUP:  # the scratch of `stack_buffer` holds MAX_GROUP chains
        raise ValueError("run_schedule: a group holds at most MAX_GROUP chains")
    seeds = np.empty((groups, n_free, chains), np.uint32)
    sweep = 0
    for sample in range(n_samples):
        for _ in range(n_warmup if sample == 0 else steps):
            for g in range(order_splits.shape[0] - 1):
                for h in prange(groups):
                    prefer_wide_vectors()
                    for m in range(order_splits[g], order_splits[g + 1]):
                        b = order_blocks[m]
                        stream = u32(u32(sweep) * u32(n_free) + u32(b))
                        for c in range(chains):
                            seeds[h, b, c] = stream_seed(key0[h, c], key1[h, c], stream)
                first, last = row_splits[g], row_splits[g + 1]
                tiles = -(-(last - first) // ROWS_PER_TILE)
                for t in prange(groups * tiles):
                    prefer_wide_vectors()
                    h, tile = t // tiles, t % tiles
                    st = state[h]
                    acc = carray(stack_buffer(np.float32), chains)
                    scale = carray(stack_buffer(np.float32), chains)
                    for q in range(first + tile * ROWS_PER_TILE, min(first + (tile + 1) * ROWS_PER_TILE, last)):
                        i = rows[q]
                        if chains <= PER_CHAIN_GROUP:
                            update_row_per_chain(st, i, neighbours, couplings, bias, node_ids, seeds[h, row_block[i]], st[i])
                        else:
                            update_row(st, i, neighbours, couplings, bias, node_ids, seeds[h, row_block[i]], acc, scale,
                                       st[i])
            sweep += 1
        for h in prange(groups):
            for o in range(observed.shape[0]):
                for c in range(chains):
                    out[h, sample, o, c] = state[h, observed[o], c] > 0
