"""A fused GPU kernel (Pallas on Triton) for one block update of the pairwise categorical sweep.

One program owns `tile_nodes` nodes × `tile_chains` chains: it reads each neighbour's row of chains
from the source block's state (one coalesced gather per neighbour slot), builds the K logits in
registers with the jax.numpy sweep's operations (`categorical_draw`), draws the same counter-based
word per node and chain, inverts the CDF and writes the new categories. Nothing `[nodes, chains]`
sized goes to memory but the result.

Why a kernel here when the spin sweep does without one: with weights passed as arguments (as
training passes them) the jax.numpy update of q = 5 Potts runs 41.8 flips/ns on an H200 and this
kernel 97.6 (BENCHMARKS.md). With weights that are compile-time constants (a THRML-style call that
closes over its program) XLA folds the jax.numpy update's selects and both run about 105.

Potts couplings (W_d = J_d·I), when known from concrete weights (`coupling_structure`), need one
load per neighbour (W_d[c_d, c_d]) or none (one J for the whole block) instead of K: q = 5 Potts,
1,000 chains, one H200, THRML-style call: 126 (one load) and 147 (none) against 110 flips/ns.

In general the weight W_d[k, c_d] is one gather per (slot, k) from the flat weight table at the neighbour's
category, not the jax.numpy sweep's chain of K selects: q = 5 Potts, 1,000 chains, one H200, 97.6
against 66.3 flips/ns. (Loading a node's K weights as one vector and splitting it in registers
was slower still, 35-48: Triton moves the split through shared memory.) Sources of two categories
(spins in a mixed program) are the exception: their K·2 weights are loaded once per node and picked
per chain by a select, the same numbers as the gather (`SELECT_TAIL`): a torus of spins with 3- and
5-state nodes, 256², 1,000 chains, one H200, 183 against 163 flips/ns; selects for q = 5 sources
ran Potts at 68 against 109.

Chains must be a multiple of `tile_chains` (the caller pads); node counts need not be.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int32, UInt, UInt32

from heatbath.kernels.categorical_draw import draw_category, draw_spin
from heatbath.kernels.counter_rng import uniform_from_words, update_words
from heatbath.kernels.coupling_structure import DIAGONAL, CouplingForm

__all__ = ["categorical_block_update", "categorical_pair_update", "categorical_kernel_fits", "TILE_NODES", "TILE_CHAINS"]

# 8 nodes x 128 chains x 4 warps: the best of ten tiles (2-32 nodes, 64-256 chains, 2-8 warps) for q = 5
# Potts on an H200. Read at call time, so benchmarks can try others.
TILE_NODES = 8
TILE_CHAINS = 128
NUM_WARPS = 4
SELECT_TAIL = 2  # sources of up to this many categories (spins) are read by selects, not gathers
INDEX_LIMIT = 2**31  # the kernel indexes its weight table and states with int32
UNROLLED_SLOTS = 16  # a source's neighbour slots up to this many are unrolled
SLOT_CHUNK = 8  # beyond it, a loop over chunks of this many unrolled slots


def _kernel(widths, n, n_categories, tile_nodes, tile_chains, form, spin_headed, *refs):
    from jax.experimental import pallas as pl

    _tile(pl.program_id(0), pl.program_id(1), widths, n, n_categories, tile_nodes, tile_chains, form, spin_headed, *refs)


def _add_slots(add, width: int, theta: tuple) -> tuple:
    """θ after `add(d, θ)` for every slot d < `width`, in slot order. Up to UNROLLED_SLOTS slots are
    unrolled; wider tables loop over chunks of SLOT_CHUNK unrolled slots, then unroll the rest. The
    sums are the same either way (the same terms in the same order). Why: unrolled, a categorical RBM
    of 100 × 100 4-state nodes with 40 neighbours a node took 13–16 s to compile on an H200."""
    if width <= UNROLLED_SLOTS:
        for d in range(width):
            theta = add(d, theta)
        return theta

    def chunk(c, theta):
        for j in range(SLOT_CHUNK):
            theta = add(c * SLOT_CHUNK + j, theta)
        return theta

    theta = jax.lax.fori_loop(0, width // SLOT_CHUNK, chunk, theta)
    for d in range(width - width % SLOT_CHUNK, width):
        theta = add(d, theta)
    return theta


def _add_slot(safe, chains, state_ref, neighbour_ref, weight_ref, width, n_tail, form, d, theta: tuple) -> tuple:
    """θ_k + W[i, d, k, c_d] for neighbour slot `d` (static or traced) of one source, for the tile's
    rows `safe` and chain slice `chains`."""
    n_categories = len(theta)
    category = state_ref[neighbour_ref[safe, d], chains]
    if form is not None:  # Potts-like: W[c, c] goes to θ_c only, from the table or one constant
        if form == DIAGONAL:  # W[i, d, c] of the flat table of diagonals
            weight = weight_ref[((safe * width + d) * n_tail)[:, None] + category.astype(jnp.int32)]
        else:
            weight = jnp.float32(form)
        return tuple(t + jnp.where(category == k, weight, 0.0) for k, t in enumerate(theta))
    base = (safe * width + d) * n_categories * n_tail  # W[i, d, k, c] of the flat table
    if n_tail <= SELECT_TAIL:  # the node's K·T weights, one each per node, picked per chain by selects
        picks = [category == t for t in range(n_tail - 1)]
        out = []
        for k, t_k in enumerate(theta):
            row = [weight_ref[base + k * n_tail + t][:, None] for t in range(n_tail)]
            value = row[-1]
            for t in reversed(range(n_tail - 1)):
                value = jnp.where(picks[t], row[t], value)
            out.append(t_k + value)
        return tuple(out)
    index = base[:, None] + category.astype(jnp.int32)  # one index per element, then constant offsets k · K_tail
    return tuple(t + weight_ref[index + k * n_tail] for k, t in enumerate(theta))


def _tile(node_tile, chain_tile, widths, n, n_categories, tile_nodes, tile_chains, form, spin_headed, *refs):
    """One program's work: node tile `node_tile` × chain tile `chain_tile` of one block update;
    `spin_headed`: θ is the single Δ = θ_1 − θ_0 of a spin block (`draw_spin`)."""
    from jax.experimental import pallas as pl

    bias_ref, ids_ref, seed_ref = refs[:3]
    out_ref = refs[-1]
    sources = refs[3:-1]
    rows = node_tile * tile_nodes + jnp.arange(tile_nodes)
    safe = jnp.where(rows < n, rows, 0)  # rows past n (the last tile) compute node 0, written to padding
    chains = pl.ds(chain_tile * tile_chains, tile_chains)
    shape = (tile_nodes, tile_chains)
    theta = tuple(jnp.broadcast_to(bias_ref[safe, k][:, None], shape) for k in range(n_categories))
    for s, (width, n_tail) in enumerate(widths):
        add = functools.partial(_add_slot, safe, chains, *sources[3 * s : 3 * s + 3], width, n_tail, form)
        theta = _add_slots(add, width, theta)
    u = uniform_from_words(update_words(seed_ref[chains], ids_ref[safe]))
    out_ref[rows, chains] = draw_spin(theta[0], u, out_ref.dtype) if spin_headed else draw_category(theta, u, out_ref.dtype)


def categorical_kernel_fits(bias: Float[Array, "n K"], sources, chains: int) -> bool:
    """Whether the kernel's int32 indices reach every entry of a block's flat weight tables and of
    its source states at `chains` chains (else the block takes the jax.numpy update)."""
    sizes = [w.size for _, _, w in sources] + [state.shape[0] * chains for state, _, _ in sources]
    return max(sizes + [bias.shape[0] * chains]) < INDEX_LIMIT


def categorical_block_update(
    bias: Float[Array, "n K"],
    node_ids: UInt32[Array, " n"],
    seed: UInt32[Array, " chains"],
    sources: list[tuple[UInt[Array, "m chains"], Int32[Array, "n D"], Float[Array, "n D K T"]]],
    dtype,
    *,
    form: CouplingForm = None,
    spin_headed: bool = False,
    tile_nodes: int | None = None,
    tile_chains: int | None = None,
    interpret: bool = False,
) -> UInt[Array, "n chains"]:
    """New categories `[n, chains]` (of `dtype`) of one free block from its sources
    `(state, neighbours, weights)`; `weights[i, d, k, t]` couples category k of node i to category t
    of its d-th neighbour. `form` (`coupling_structure`) says what is known of those matrices: None
    (nothing: K loads per neighbour), DIAGONAL (zero off the diagonal: one load of `weights[i, d, t, t]`
    per neighbour) or a float J (J on every diagonal, no padding slot: no load). The sums, and so the
    samples, are the same for every form that holds. `spin_headed`: a spin block of a mixed program,
    whose operands are the single Δ = θ_1 − θ_0 (`pairwise_tables.block_couplings`), drawn by `draw_spin`."""
    from jax.experimental import pallas as pl

    update = _Update.of(bias, node_ids, seed, sources, dtype, spin_headed, form, tile_nodes, tile_chains)
    out = pl.pallas_call(
        functools.partial(_kernel, *update.statics),
        out_shape=update.out_shape,
        grid=(update.node_tiles, update.chain_tiles),
        **_options(interpret),
    )(*update.inputs)
    return update.trimmed(out)


def categorical_pair_update(first: tuple, second: tuple, *, interpret: bool = False) -> tuple[Array, Array]:
    """Two block updates of two independent runs in one launch: each of `first` and `second` is
    `(bias, node_ids, seed, sources, dtype, spin_headed)` as `categorical_block_update` takes them
    (general form, default tiles). Programs below the first run's node tiles compute its tiles with
    exactly the arithmetic of its own launch, the rest the second run's, so both results equal two
    single updates. With few chains a launch is a couple of microseconds of latency whatever its
    size: the two phases of a training gradient then cost about one."""
    from jax.experimental import pallas as pl

    a, b = (_Update.of(*run, None, None, None) for run in (first, second))

    def kernel(*refs):
        refs_a, refs_b = refs[: len(a.inputs)], refs[len(a.inputs) : len(a.inputs) + len(b.inputs)]
        out_a, out_b = refs[-2:]
        i, j = pl.program_id(0), pl.program_id(1)

        @pl.when((i < a.node_tiles) & (j < a.chain_tiles))
        def _():
            _tile(i, j, *a.statics, *refs_a, out_a)

        @pl.when((i >= a.node_tiles) & (j < b.chain_tiles))
        def _():
            _tile(i - a.node_tiles, j, *b.statics, *refs_b, out_b)

    out_a, out_b = pl.pallas_call(
        kernel,
        out_shape=(a.out_shape, b.out_shape),
        grid=(a.node_tiles + b.node_tiles, max(a.chain_tiles, b.chain_tiles)),
        **_options(interpret),
    )(*a.inputs, *b.inputs)
    return a.trimmed(out_a), b.trimmed(out_b)


def _options(interpret: bool) -> dict:
    from jax.experimental.pallas import triton as plgpu

    return {"interpret": True} if interpret else {"compiler_params": plgpu.CompilerParams(num_warps=NUM_WARPS)}


class _Update:
    """One block update's kernel inputs, static parameters and grid."""

    def __init__(self, inputs, statics, n, chains, dtype):
        self.inputs, self.statics = inputs, statics
        tile_nodes, tile_chains = statics[3], statics[4]  # (widths, n, K, tile_nodes, tile_chains, form, spin_headed)
        self.n, self.node_tiles, self.chain_tiles = n, -(-n // tile_nodes), chains // tile_chains
        self.out_shape = jax.ShapeDtypeStruct((self.node_tiles * tile_nodes, chains), dtype)  # padded to whole tiles

    @classmethod
    def of(cls, bias, node_ids, seed, sources, dtype, spin_headed, form, tile_nodes, tile_chains) -> "_Update":
        if spin_headed and form is not None:
            raise ValueError("a spin block's couplings have no Potts form: pass form=None")
        tile_nodes, tile_chains = tile_nodes or TILE_NODES, tile_chains or TILE_CHAINS
        n, n_categories = bias.shape
        chains = seed.shape[0]
        tile_chains = min(tile_chains, chains)
        if chains % tile_chains:
            raise ValueError(f"chains ({chains}) must be a multiple of {tile_chains}")
        widths = tuple((int(nb.shape[1]), int(w.shape[3])) for _, nb, w in sources)
        flat = []
        for state, neighbours, weights in sources:
            table = jnp.diagonal(weights, axis1=2, axis2=3) if form == DIAGONAL else weights
            flat += [state, neighbours.astype(jnp.int32), table.reshape(-1)]
        statics = (widths, n, n_categories, tile_nodes, tile_chains, form, bool(spin_headed))
        return cls([bias, node_ids, seed, *flat], statics, n, chains, dtype)

    def trimmed(self, out):
        return out[: self.n] if out.shape[0] != self.n else out
