"""The spin block update with each node's field read from pattern tables, a CUDA C kernel.

A node with d ≤ 5·G neighbours splits them into G groups of five. For each group and each of the 32
patterns of its five neighbours' spins, the node's table holds that group's share of the field,

    T_g[p] = c · Σ_{k<5} J_{i,5g+k} · (2 p_k − 1)     (+ c · h_i in group 0),   c = −2 log2 e,

so that 2^(T_0[p_0] + … + T_{G−1}[p_{G−1}]) = exp(−2 · field). The kernel (`table_spin.cu`) keeps
one byte per spin and chain (UP = 4 for up, 0 for down, chains contiguous): five neighbour words
add into one word of four patterns (four chains, each byte 4p, the entry's byte offset), one byte
permute turns a chain's byte into a shared-memory address, one load reads its group's share. That
is two instructions per group and chain instead of three per neighbour and chain for a sum of J·s,
which is what bounds the gather kernels on Pegasus-like graphs. The draw is every spin kernel's:
word mix32(golden · id ^ seed), spin up where u · (1 + exp(−2 field)) < 1; the kernel takes hash and
seed already folded (`counter_rng.fold16`), which saves two of the mix's instructions per draw.

The tables are float32 sums of five terms, so the field rounds as a float32 sum does, in another
order than the gather sweep: a chain takes a different step from the gather sweep only where the
comparison is a near-tie. `table_block_update_jnp` is the same arithmetic in jax.numpy (the CPU
tests run it); the native kernel's exp2 is the hardware's approximate one (relative error about
2^-22) and it fuses the uniform's and the comparison's multiply-adds, so it agrees with the twin up
to such near-ties (agreement above 0.9999 in the tests, on the H200).

From BITS_FROM chains a device on, the flat state holds one bit per spin and chain instead
(`table_bits.cu`: uint32 words of 32 chains; `table_state(..., packed=True)`). A warp forms its
patterns by transposing the neighbour words' bits, and reads an eighth of the bytes per flip; the
tables, words and float arithmetic are the byte kernel's, so every chain takes exactly the same
steps whichever layout runs (on one H200, P(14), the kernel alone: 631 against 419 flips/ns at
10,016 chains, 809 against 523 at 65,536). Its seeds come in their own order (`bit_seed_order`), so
that a warp's seed loads are contiguous. With fewer chains a thread's 32 chains leave most of a warp
idle, so the byte layout stays. `table_block_update` and its twin read the layout from the
state's dtype (uint8 bytes, uint32 bits).

For large chain counts (BIT_LOOP_FROM words) the bit kernel adds its node's tables up in shared
memory first: nodes of three tables (15 neighbours, as in Pegasus) into one table of the whole
field for all 2^15 patterns (128 KB: one block of 32 warps an SM, a persistent grid), nodes of two
tables or more into one pair table of T_0 + T_1. Each entry is the byte kernel's float sum in its
order, so samples stay bit-identical; a chain reads one entry instead of three shares.

Index tables are static numpy, built once per program structure (`table_layouts`); the tables are
computed from the program's possibly traced weights on every call (`table_blocks`).
"""

from __future__ import annotations

import functools
import importlib.resources
import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int32, UInt8, UInt32

from heatbath.kernels.counter_rng import GOLDEN, fold16, mix32_tail, uniform_from_words
from heatbath.kernels.pairwise_tables import NeighbourTables, flat_neighbours, real_slots
from heatbath.kernels.tensor_tables import greedy_tiles

__all__ = ["GROUP", "MAX_GROUPS", "UP", "WARPS", "WORDS", "BITS_FROM", "TableLayout", "TableBlock", "table_layouts",
           "pattern_tables", "table_blocks", "node_hashes", "table_state", "packs", "chain_major_spins", "chain_multiple", "spins_up", "bit_seed_order", "side_by_side_bit_seeds",
           "fold_seeds", "table_block_update",
           "table_pair_update", "table_block_update_jnp"]

GROUP = 5  # neighbours per table: 32 entries, one per shared-memory bank
MAX_GROUPS = 8  # up to 40 neighbours; wider nodes keep the other kernels (registers per thread)
WARPS = 8  # nodes per thread block (4, 8 and 16 within 5% on an H200: bench/table_spin_probe.py)
WORDS = 4  # 32-bit words (4 chains each) per thread: 16-byte loads (from FEW_CHAINS chains on; see `words_for`)
FEW_CHAINS = (512, 2048)  # up to these chain counts a thread takes 1, then 2 words
ORDERED_NODES_LIMIT = 1 << 17  # larger blocks keep their node order (see _neighbour_sharing_order)
CHAIN_MULTIPLE = 4 * WORDS  # chains of a call are padded to this
UP = 4  # the state byte of an up spin: a pattern of five such bytes is its table entry's byte offset
BITS_FROM = 8192  # chains a device from which the state is one bit per spin (`table_bits.cu`)
BIT_CHAINS = 32  # chains per word of the bit state
SEED_LOADS, SEEDS_A_LOAD = 8, 4  # the bit kernel reads a word's 32 seeds in 8 uint4 loads (`bit_seed_order`)
BIT_WARPS = 4  # nodes per thread block of the bit kernel (2 / 4 / 8: 515 / 512 / 485 flips/ns, P(14), 10,016 chains, H200)
BIT_LOOP_FROM = 1024  # words (32,768 chains) from which a warp takes BIT_LOOP_TILES tiles of 32 words
BIT_LOOP_TILES = 8  # (P(14), 262,144 chains, H200: 847 / 855 / 860 flips/ns with 2 / 4 / 8, four-node blocks)
# From BIT_LOOP_FROM words on, nodes of two tables or more take the pair-table form of the bit kernel
# (PAIR in table_bits.cu, one node a block): P(14), 262,144 chains, H200, 8 tiles: 923 against 860 flips/ns.
# Nodes of FULL_GROUPS tables read their whole field from one table of 2^15 entries instead (FULL, a
# block of FULL_WARPS warps an SM): P(14), H200, the kernel alone: 978 against 911 flips/ns at 262,144
# chains, 1,066 against 943 at 1,048,576.
FULL_GROUPS, FULL_WARPS, FULL_TABLE_BYTES = 3, 32, 4 << 15
SCALE = -2.0 / math.log(2.0)  # c = −2 log2 e


@dataclass(frozen=True, eq=False)
class TableLayout:
    """Static layout of one free block, nodes in the kernel's order (neighbour-sharing runs).

    - `order` `[n]`: the block's local node indices in kernel order;
    - `neighbours` `[n, 5G]`: flat-state rows of each node's neighbours (padding: the scratch row);
    - `picks` `[n, 5G]`: which column of the block's concatenated coupling tables feeds each slot
      (padding: one past the last, an appended zero column)."""

    order: np.ndarray
    neighbours: np.ndarray
    picks: np.ndarray

    @property
    def groups(self) -> int:
        return self.neighbours.shape[1] // GROUP


class TableBlock(NamedTuple):
    """One free block's kernel inputs, built from the program's weights by `table_blocks`."""

    rows: Int32[Array, " n"]  # flat-state rows written
    neighbours: Int32[Array, "n S"]  # flat-state rows read, S = 5G
    tables: Float[Array, "n G 32"]  # scaled partial fields
    hashes: UInt32[Array, " n"]  # fold16(golden · spec-wide node id)


def _neighbour_sharing_order(neighbours: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Nodes in runs that share neighbours (`tensor_tables`' greedy tiles), so that the WARPS nodes of
    a thread block read many of the same rows; blocks over ORDERED_NODES_LIMIT keep their order
    (the greedy pass is Python, a few seconds per 10^5 nodes)."""
    n = neighbours.shape[0]
    if n > ORDERED_NODES_LIMIT:
        return np.arange(n, dtype=np.int64)
    lists = [neighbours[i, real[i]] for i in range(n)]
    return np.asarray([i for tile in greedy_tiles(lists) for i in tile], np.int64).reshape(n)


def _layout(neighbours: np.ndarray, real: np.ndarray, scratch: int, zero_column: int, max_groups: int | None,
            ordered: bool) -> TableLayout | None:
    groups = max(1, -(-int(real.sum(1).max(initial=0)) // GROUP))
    if max_groups is not None and groups > max_groups:
        return None
    width = groups * GROUP
    first = np.argsort(~real, axis=1, kind="stable")  # each node's real slots first, in slot order
    used = np.take_along_axis(real, first, 1)
    rows = np.where(used, np.take_along_axis(neighbours, first, 1), scratch)
    picks = np.where(used, first, zero_column)
    pad = max(0, width - rows.shape[1])
    rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=scratch)[:, :width]
    picks = np.pad(picks, ((0, 0), (0, pad)), constant_values=zero_column)[:, :width]
    order = _neighbour_sharing_order(neighbours, real) if ordered else np.arange(neighbours.shape[0], dtype=np.int64)
    return TableLayout(order, rows[order].astype(np.int32), picks[order].astype(np.int32))


@functools.lru_cache(maxsize=32)  # NeighbourTables hash by identity: one entry per program structure
def table_layouts(tables: NeighbourTables, max_groups: int | None = MAX_GROUPS,
                  ordered: bool = True) -> tuple[TableLayout | None, ...]:
    """The layout of every free block of a spin program, None where the kernel cannot take a block
    (dense layers, a block that reads itself, more than 5 · `max_groups` neighbours: the CUDA kernels
    hold a node's tables in registers; the CPU kernel of `cpu_spin` takes any number, `None`).
    `ordered`: nodes in neighbour-sharing runs (what a GPU thread block's loads gain from), else in
    block order."""
    scratch = sum(tables.block_sizes)
    out = []
    for b, sources in enumerate(tables.sources):
        n = tables.block_sizes[b]
        if any(tables.dense[b]) or any(src == b for src, _, _ in sources):
            out.append(None)
        elif not sources:
            out.append(_layout(np.zeros((n, 1), np.int64), np.zeros((n, 1), bool), scratch, 0, max_groups, ordered))
        else:
            real = real_slots(tables, b)
            out.append(_layout(flat_neighbours(tables, b), real, scratch, real.shape[1], max_groups, ordered))
    return tuple(out)


_PATTERN_SIGNS = np.asarray([[2 * ((p >> k) & 1) - 1 for k in range(GROUP)] for p in range(32)], np.float32)


def pattern_tables(layout: TableLayout, bias: Float[Array, " n"], couplings: Float[Array, "n D"]) -> Float[Array, "n G 32"]:
    """c · (each group's share of the field) for every pattern, the bias in group 0. Each entry is an
    explicit float32 sum in slot order (no matrix product, which may round in lower precision)."""
    n = layout.order.shape[0]
    padded = jnp.concatenate([couplings, jnp.zeros((couplings.shape[0], 1), jnp.float32)], axis=1)
    slots = padded[layout.order[:, None], layout.picks].reshape(n, layout.groups, GROUP)
    total = None
    for k in range(GROUP):
        term = slots[:, :, k, None] * _PATTERN_SIGNS[None, None, :, k]  # [n, G, 32]
        total = term if total is None else total + term
    total = total.at[:, 0, :].add(bias[layout.order][:, None])
    return total * jnp.float32(SCALE)


def table_blocks(
    tables: NeighbourTables, layouts: tuple[TableLayout, ...], params: list[tuple[Array, list[Array]]]
) -> list[TableBlock]:
    """Kernel inputs of every free block from `(bias, coupling tables)` of `block_couplings` (as
    `sweep_params` passes them: these blocks read no dense layer)."""
    offsets = np.cumsum([0] + list(tables.block_sizes))
    out = []
    for b, (layout, (bias, couplings)) in enumerate(zip(layouts, params)):
        n = tables.block_sizes[b]
        flat = jnp.concatenate(couplings, axis=1) if couplings else jnp.zeros((n, 0), jnp.float32)
        out.append(TableBlock(jnp.asarray((offsets[b] + layout.order).astype(np.int32)), jnp.asarray(layout.neighbours),
                              pattern_tables(layout, bias, flat), jnp.asarray(node_hashes(tables.node_ids[b][layout.order]))))
    return out


def node_hashes(ids: np.ndarray) -> np.ndarray:
    """fold16(golden · id) (uint32) for spec-wide node ids: the node half of each update word, folded
    once (`counter_rng.fold16`). Numpy, on the host."""
    return fold16((ids.astype(np.uint64) * GOLDEN % 2**32).astype(np.uint32))


def table_state(states: list[Array], packed: bool = False) -> UInt8[Array, "N1 chains"] | UInt32[Array, "N1 words"]:
    """The kernel's flat state from per-block ±1 (or boolean) states `[n_b, chains]`: UP or 0 per
    spin, every block stacked, then one scratch row (what padding slots read, with zero couplings).
    `packed`: one bit per spin instead, bit c of word w for chain 32 w + c (chains a multiple of 32)."""
    up = jnp.concatenate([s > 0 for s in states] + [jnp.zeros((1, states[0].shape[1]), bool)], axis=0)
    return _pack(up) if packed else jnp.where(up, UP, 0).astype(jnp.uint8)


def packs(chains: int, rows: int) -> bool:
    """Whether a call's flat state of `rows` rows and `chains` chains (of one device) is held one bit
    per spin: from BITS_FROM chains, in whole words, with every word offset below 2^32 (the bit
    kernel's offsets are 32-bit). Any number of tables a node: on random 20-, 30- and 40-regular
    graphs (4, 6 and 8 tables) the bit kernel ran 1.6–2.0× the byte kernel (H200, BENCHMARKS.md)."""
    whole = chains % BIT_CHAINS == 0 and rows * (chains // BIT_CHAINS) < 2**32
    return chains >= BITS_FROM and whole


def chain_multiple(chains: int) -> int:
    """What a device's `chains` are padded to for the table kernels: whole words of the bit state
    from BITS_FROM on, else whole threads of the byte kernel."""
    return BIT_CHAINS if chains >= BITS_FROM else CHAIN_MULTIPLE


def spins_up(state, ids: Int32[Array, " k"]) -> Bool[Array, "k chains"]:
    """Whether each spin of rows `ids` of the flat state (either layout) is up."""
    return _unpack(state[ids]) if state.dtype == jnp.uint32 else state[ids] > 0


def _pack(up: Bool[Array, "rows chains"]) -> UInt32[Array, "rows words"]:
    """Bit c of word w: chain 32 w + c. An or of 32 shifted slices, one elementwise pass: a sum over a
    `[rows, words, 32]` uint32 array made XLA materialise it (67 GB for P(14) at 4,194,304 chains)."""
    grouped = up.reshape(up.shape[0], -1, BIT_CHAINS)
    words = grouped[:, :, 0].astype(jnp.uint32)
    for c in range(1, BIT_CHAINS):
        words = words | (grouped[:, :, c].astype(jnp.uint32) << c)
    return words


def _unpack(words: UInt32[Array, "rows words"]) -> Bool[Array, "rows chains"]:
    bits = (words[:, :, None] >> jnp.arange(BIT_CHAINS, dtype=jnp.uint32)) & 1
    return bits.reshape(words.shape[0], -1) > 0


def chain_major_spins(words: UInt32[Array, "samples rows words"]) -> Bool[Array, "chains samples rows"]:
    """Samples of packed rows as the caller wants them, chain-major: whether spin r of chain 32 w + c
    is up in sample s, from bit c of `words[s, r, w]`.

    The words are transposed first (XLA's tiled transpose of 32-bit words), then each word's bits
    spread along a new axis, so that both passes read and write along the rows. Unpacked first,
    the transpose became one loop whose lanes each read a word 128 KB apart from the next lane's:
    on P(14) with 1,048,576 chains (a 4.5 GB sample) it took 22.8 ms of a 100-sweep call on an H200,
    the unpacking loop now 5.3 ms (profiler trace, BENCHMARKS.md)."""
    samples, rows, n_words = words.shape
    # [words, samples, rows], materialised: without the barrier XLA folds the transpose back into the
    # unpacking loop, which then reads across rows again
    by_chain = jax.lax.optimization_barrier(jnp.transpose(words, (2, 0, 1)))
    bits = (by_chain[:, None] >> jnp.arange(BIT_CHAINS, dtype=jnp.uint32)[None, :, None, None]) & 1
    return bits.reshape(n_words * BIT_CHAINS, samples, rows) > 0


def bit_seed_order(chains: int) -> np.ndarray:
    """The chain whose seed each position of a bit-state seed row holds: `table_bits.cu` reads chain
    32 w + 4 q + r's seed at (q · words + w) · 4 + r, so that a warp's 32 lanes (32 consecutive words)
    load 512 consecutive bytes. Seeds for a uint32 state are `seeds[:, bit_seed_order(chains)]`; the
    route permutes the chains' key words once instead, and the per-sweep seeds come out in this order."""
    if chains % BIT_CHAINS:
        raise ValueError(f"a bit state holds whole words of {BIT_CHAINS} chains; got {chains}")
    return np.arange(chains).reshape(chains // BIT_CHAINS, SEED_LOADS, SEEDS_A_LOAD).transpose(1, 0, 2).reshape(-1)


def side_by_side_bit_seeds(seeds: UInt32[Array, "m updates chains"]) -> UInt32[Array, "updates m_chains"]:
    """The seeds of m copies of a bit state laid side by side (copy i's chain c is chain i · chains + c
    of the tiled state), from each copy's seeds in `bit_seed_order`: within each of the SEED_LOADS groups
    of positions, the copies' words follow one another."""
    m, updates, chains = seeds.shape
    by_group = seeds.reshape(m, updates, SEED_LOADS, chains // BIT_CHAINS, SEEDS_A_LOAD).transpose(1, 2, 0, 3, 4)
    return by_group.reshape(updates, m * chains)


def fold_seeds(seeds: UInt32[Array, "*n"]) -> UInt32[Array, "*n"]:
    """Seeds as the kernel takes them (`fold16`)."""
    return fold16(seeds)


def words_for(chains: int) -> int:
    """Words per thread for a call of `chains` chains: with few chains most of a warp's lanes would
    have no chains to take, and each thread's chains run one after the other, so threads take fewer
    (one H200, the kernel alone on P(14), flips/ns for 1 / 4 words: 23.7 / 16.4 at 64 chains, 84.7 /
    67.5 at 256, 207 / 214 at 1,024, 322 / 389 at 4,096; 2 words: 392 at 4,096). A chain's arithmetic
    is the same whatever the mapping, so its samples are too."""
    small, medium = FEW_CHAINS
    return 1 if chains <= small else 2 if chains <= medium else WORDS


@functools.cache
def _source(name: str = "table_spin.cu") -> str:
    """Kernel `name`'s CUDA C, after the helpers both table kernels share (`table_common.cuh`)."""
    folder = importlib.resources.files("heatbath.kernels")
    return folder.joinpath("table_common.cuh").read_text() + "\n" + folder.joinpath(name).read_text()


def table_block_update(
    block: TableBlock, state: UInt8[Array, "N1 chains"], seeds: UInt32[Array, "updates chains"], row: int,
    *, warps: int | None = None, words: int | None = None, defines: tuple[tuple[str, int], ...] = (),
) -> UInt8[Array, "N1 chains"]:
    """The flat state (`table_state`) with one free block resampled by the CUDA kernel (in place).

    The chains' seeds are `seeds[row]`, folded (`fold_seeds`); the kernel reads that row of the whole
    array, so no slice is copied per update. `warps` nodes per thread block and `words` 4-chain words
    per thread (default WARPS, `words_for(chains)`); chains must be a multiple of 4 · `words`. `defines`: more `-D`
    switches (the diagnostics of bench/table_spin_probe.py). A uint32 state (one bit per spin) runs
    `table_bits.cu` instead (`warps` default BIT_WARPS; `words` does not apply), with its seeds in
    `bit_seed_order`."""
    from heatbath.kernels.cuda_runtime import compile_ptx, compute_capability, cuda_call

    if state.dtype == jnp.uint32:
        return _bits_update(block, state, seeds, row, warps or BIT_WARPS, defines)
    chains, n = state.shape[1], block.rows.shape[0]
    warps, words = warps or WARPS, words or words_for(chains)
    if chains % (4 * words):
        raise ValueError(f"chains ({chains}) must be a multiple of {4 * words}")
    if n == 0:
        return state
    groups = block.tables.shape[1]
    ptx = compile_ptx(_source(), "table_spin.cu", (("GROUPS", groups), ("WORDS", words), ("WARPS", warps), *defines),
                      compute_capability())
    grid = (-(-n // warps), -(-chains // (128 * words)), 1)
    (out,) = cuda_call(ptx, "table_spin_update", [block.rows, block.neighbours, block.tables, block.hashes, seeds, state],
                       [(state.shape, "uint8")], grid=grid, num_warps=warps, scalars=(chains, n, row), aliases={5: 0})
    return out


def _bits_update(block: TableBlock, state: UInt32[Array, "N1 words"], seeds: UInt32[Array, "updates chains"], row: int,
                 warps: int, defines: tuple[tuple[str, int], ...]) -> UInt32[Array, "N1 words"]:
    """`table_block_update` on a bit state. From BIT_LOOP_FROM words on a warp loops over
    BIT_LOOP_TILES tiles of 32 words; nodes of three tables read their whole field from one table of
    2^15 entries (`table_bits_full_update`, one block of FULL_WARPS warps an SM), nodes of two or more
    their first two tables as one pair table (one node a block). `("FULL", 0/1)` and `("PAIR", 0/1)`
    in `defines` override the choice."""
    from heatbath.kernels.cuda_runtime import (compile_ptx, compute_capability, cuda_call, multiprocessor_count,
                                               shared_bytes_limit)

    words, n, groups = state.shape[1], block.rows.shape[0], block.tables.shape[1]
    if seeds.shape[1] != BIT_CHAINS * words or state.shape[0] * words >= 2**32:
        raise ValueError(f"a bit state of {state.shape} needs {BIT_CHAINS * words} chains of seeds (got {seeds.shape[1]}) "
                         "and rows x words below 2^32")
    if n == 0:
        return state
    looping, chosen = words >= BIT_LOOP_FROM, dict(defines)
    fits = shared_bytes_limit() >= FULL_TABLE_BYTES  # not on GPUs of 99 KB a block or less (consumer Ampere, Ada)
    full = int(chosen.get("FULL", looping and groups == FULL_GROUPS and fits))
    if full and (groups != FULL_GROUPS or not fits):
        raise ValueError(f"the full-table bit kernel takes nodes of {FULL_GROUPS} tables, on a GPU whose blocks may hold "
                         f"{FULL_TABLE_BYTES} bytes of shared memory; this block's nodes have {groups} tables and the "
                         f"GPU allows {shared_bytes_limit()} bytes")
    pair = 0 if full else int(chosen.get("PAIR", looping and groups >= 2))
    warps = FULL_WARPS if full else 1 if pair else warps
    defines = (("GROUPS", groups), ("WARPS", warps), ("PAIR", pair), ("FULL", full), ("FULL_WARPS", FULL_WARPS),
               *(d for d in defines if d[0] not in ("PAIR", "FULL")))
    ptx = compile_ptx(_source("table_bits.cu"), "table_bits.cu", defines, compute_capability())
    operands = [block.rows, block.neighbours, block.tables, block.hashes, seeds, state]
    if full:  # a persistent grid: one block an SM, each taking an equal share of the (node, pass) items
        passes = -(-words // (32 * FULL_WARPS))  # a pass: one word a thread
        grid = (min(multiprocessor_count(), n * passes), 1, 1)
        (out,) = cuda_call(ptx, "table_bits_full_update", operands, [(state.shape, "uint32")], grid=grid,
                           num_warps=FULL_WARPS, scalars=(words, n, row), aliases={5: 0}, shared_bytes=FULL_TABLE_BYTES)
        return out
    tiles = -(-words // BIT_CHAINS)  # of 32 words, one per lane of a warp
    grid = (-(-n // warps), -(-tiles // (BIT_LOOP_TILES if looping else 1)), 1)
    (out,) = cuda_call(ptx, "table_bits_update", operands, [(state.shape, "uint32")], grid=grid, num_warps=warps,
                       scalars=(words, n, row), aliases={5: 0})
    return out


def table_pair_update(
    first: tuple[TableBlock, UInt8[Array, "N1 c1"], UInt32[Array, "u1 c1"], int],
    second: tuple[TableBlock, UInt8[Array, "N2 c2"], UInt32[Array, "u2 c2"], int],
    *, native: bool = True,
) -> tuple[UInt8[Array, "N1 c1"], UInt8[Array, "N2 c2"]]:
    """Two independent runs' block updates, each `(block, state, seeds, row)` as `table_block_update`
    takes them, in one launch of the CUDA kernel (`table_spin_update_pair`): every chain gets exactly
    the arithmetic of a launch of its own, so the samples are the same; the launch's latency is paid
    once. `native=False`: the jax.numpy twin, one run after the other."""
    if not native:
        return table_block_update_jnp(*first), table_block_update_jnp(*second)
    if first[1].dtype != jnp.uint8 or second[1].dtype != jnp.uint8:
        raise ValueError("the paired table kernel takes byte states (table_state without packed)")
    if first[0].rows.shape[0] == 0 or second[0].rows.shape[0] == 0:
        return table_block_update(*first), table_block_update(*second)
    from heatbath.kernels.cuda_runtime import compile_ptx, compute_capability, cuda_call

    (block_a, state_a, seeds_a, row_a), (block_b, state_b, seeds_b, row_b) = first, second
    chains_a, chains_b = state_a.shape[1], state_b.shape[1]
    words_a, words_b = words_for(chains_a), words_for(chains_b)
    for chains, words in ((chains_a, words_a), (chains_b, words_b)):
        if chains % (4 * words):
            raise ValueError(f"chains ({chains}) must be a multiple of {4 * words}")
    defines = (("GROUPS", block_a.tables.shape[1]), ("WORDS", words_a), ("WARPS", WARPS),
               ("PAIR_GROUPS", block_b.tables.shape[1]), ("PAIR_WORDS", words_b))
    ptx = compile_ptx(_source(), "table_spin.cu", defines, compute_capability())
    blocks_a, blocks_b = -(-block_a.rows.shape[0] // WARPS), -(-block_b.rows.shape[0] // WARPS)
    tiles = max(-(-chains_a // (128 * words_a)), -(-chains_b // (128 * words_b)))
    operands = [block_a.rows, block_a.neighbours, block_a.tables, block_a.hashes, seeds_a, state_a,
                block_b.rows, block_b.neighbours, block_b.tables, block_b.hashes, seeds_b, state_b]
    out_a, out_b = cuda_call(ptx, "table_spin_update_pair", operands, [(state_a.shape, "uint8"), (state_b.shape, "uint8")],
                             grid=(blocks_a + blocks_b, tiles, 1), num_warps=WARPS, aliases={5: 0, 11: 1},
                             scalars=(chains_a, block_a.rows.shape[0], row_a, chains_b, block_b.rows.shape[0], row_b,
                                      blocks_a))
    return out_a, out_b


def table_block_update_jnp(
    block: TableBlock, state: UInt8[Array, "N1 chains"], seeds: UInt32[Array, "updates chains"], row: int
) -> UInt8[Array, "N1 chains"]:
    """`table_block_update` in jax.numpy: the same patterns, table sums, words and comparison (a bit
    state is unpacked to bytes and packed again)."""
    if state.dtype == jnp.uint32:  # seeds in bit_seed_order: this update's row back in chain order
        in_chain_order = seeds[row][np.argsort(bit_seed_order(seeds.shape[1]))]
        bytes_ = jnp.where(_unpack(state), UP, 0).astype(jnp.uint8)
        return _pack(table_block_update_jnp(block, bytes_, in_chain_order[None], 0) == UP)
    seed = seeds[row]
    n, groups = block.tables.shape[:2]
    spins = state[block.neighbours].astype(jnp.uint32).reshape(n, groups, GROUP, -1)
    offsets = sum(spins[:, :, k] << k for k in range(GROUP))  # [n, G, chains]: 4 · pattern
    shares = jnp.take_along_axis(block.tables, (offsets // UP).astype(jnp.int32), axis=2)
    s = shares[:, 0]
    for g in range(1, groups):
        s = s + shares[:, g]
    u = uniform_from_words(mix32_tail(block.hashes[:, None] ^ seed[None, :]))
    new = jnp.where(u * (1 + jnp.exp2(s)) < 1, UP, 0).astype(jnp.uint8)
    return state.at[block.rows].set(new)
