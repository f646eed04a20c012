"""The pairwise kernels: block Gibbs sweeps of many chains with one small-integer array per block.

State is one `[n_b, chains]` array per block, chains contiguous: int8 ±1 for spins, the program's
unsigned dtype (uint8 below 256 categories) for categories, so at most one byte per node per chain
for both. Updating free block b reads each source block through a padded neighbour table (one
gather of whole chain rows) and sums the couplings into the field:

- spins: γ, then s = +1 with probability σ(2γ), written `u · (1 + e^{-2γ}) < 1` (no division);
- categories: θ_k = bias_k + Σ_d W_d[k, c_d], then the category is found by inverting the CDF of
  softmax(θ) with the same single uniform u (one random word per node, not one per category); on
  CUDA GPUs the same update runs as one Pallas kernel per block (`pallas_categorical`), except for
  blocks that read dense layers (matrix products, `_dense_logits`);
- spins of a categorical program (a mix of spins and categories): categories 0 and 1, updated from
  the single Δ = θ_1 − θ_0 (`block_couplings`) with the spins' draw `u · (1 + e^{-Δ}) < 1`.

u comes from `counter_rng.update_words`: a pure function of the chain's own key, the sweep, the block
and the node, so a chain's trajectory is the same whatever else runs beside it and however chains
are split over devices.

XLA fuses the gather, the unrolled neighbour sum, the random words and the comparison of one block
into one loop; keeping blocks as separate arrays means writing a block back copies nothing else.
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, Float, UInt32

from heatbath.block_sampling import CATEGORY_RANGE_MESSAGE, BlockSamplingProgram, SamplingSchedule
from heatbath.errors import HeatbathError, StateError
from heatbath.kernels.categorical_draw import draw_category, draw_spin
from heatbath.kernels.coupling_structure import CouplingForm
from heatbath.kernels.counter_rng import signed_coupling, stream_seeds, uniform_from_words, update_words
from heatbath.kernels.cpu_spin import cpu_kernel_runs_on, cpu_layouts, run_spin_on_cpu
from heatbath.kernels.dense_product import dense_field
from heatbath.kernels.pairwise_tables import NeighbourTables, block_couplings, pairwise_kind, pairwise_tables
from heatbath.kernels.pallas_backend import pallas_runs_on
from heatbath.kernels.schedule_loop import run_schedule, seeded_sweeps
from heatbath.kernels import pallas_categorical
from heatbath.kernels.pallas_categorical import categorical_block_update, categorical_kernel_fits
from heatbath.kernels.pallas_spin import TILE_CHAINS, pallas_block_update
from heatbath.kernels.tensor_spin import TILE_CHAINS as TENSOR_TILE_CHAINS
from heatbath.kernels.tensor_spin import TensorBlock, tensor_block_update, tensor_block_update_jnp, tensor_blocks
from heatbath.kernels.tensor_tables import TILED_ROWS_LIMIT, tensor_tiles
from heatbath.kernels.table_spin import (bit_seed_order, chain_major_spins, chain_multiple, fold_seeds, packs, side_by_side_bit_seeds, spins_up,
                                         table_block_update, table_block_update_jnp, table_blocks, table_layouts, table_state)
from heatbath.kernels.cuda_runtime import nvrtc_available

__all__ = ["run_pairwise", "all_sweep_params", "chosen_method", "sweep_seeds", "sweep_seeds_of", "tensor_path_applies", "check_method", "check_concrete_categories", "METHODS"]


def _gather_rows(state, neighbours: np.ndarray):
    """`state[neighbours]`: whole chain rows of a source block, `[n, D, chains]`.

    Every index is a valid local index by construction (padding points at row 0 with a zero
    coupling), so the gather skips XLA's default clamping: 1.4x faster sweeps on XLA:CPU (measured).
    """
    return state.at[jnp.asarray(neighbours)].get(mode="promise_in_bounds")


def _field(bias, couplings, sources, dense, states, chains: int):
    acc = jnp.broadcast_to(bias[:, None], (bias.shape[0], chains))
    for (source, neighbours, _), w, is_dense in zip(sources, couplings, dense):
        if is_dense:  # float32 accuracy: TF32 would change the conditional probabilities
            acc = acc + dense_field(w, states[source])
            continue
        gathered = _gather_rows(states[source], neighbours)
        for d in range(neighbours.shape[1]):
            acc = acc + signed_coupling(w[:, d, None], gathered[:, d, :])
    return acc


def sweep_seeds(chain_words, sweep, n_free: int):
    """Seed words `[n_free, chains]` of every block update of one sweep."""
    streams = sweep * jnp.uint32(n_free) + jnp.arange(n_free, dtype=jnp.uint32)
    return jax.vmap(lambda stream: stream_seeds(chain_words, stream))(streams)


def sweep_seeds_of(chain_words, n_free: int, folded: bool):
    """`seeds_of(sweep)`: `sweep_seeds`, `folded` as the table kernel takes them (`fold_seeds`, where
    they are made, in the same fusion)."""
    if folded:
        return lambda sweep: fold_seeds(sweep_seeds(chain_words, sweep, n_free))
    return lambda sweep: sweep_seeds(chain_words, sweep, n_free)


def _select_weight(w: Float[Array, "n K_tail"], category: Array) -> Float[Array, "n chains"]:
    """w[i, c] for every node i and chain, as a chain of selects over the neighbour's categories:
    elementwise, so it fuses (a gather per k did not on GPU: each one wrote a `[n, chains]` array to
    memory), and with weights that are compile-time constants XLA folds the selects."""
    value = jnp.broadcast_to(w[:, 0, None], category.shape)
    for t in range(1, w.shape[1]):
        value = jnp.where(category == t, w[:, t, None], value)
    return value


UNROLLED_SLOTS = 16  # up to this many neighbour slots a source's terms are unrolled into one fusion
SLOT_CHUNK = 8  # beyond it, a loop over chunks of this many slots


def _add_gathered(theta: list[Array], state, neighbours, w: Float[Array, "n D K K_tail"]) -> list[Array]:
    """θ_k += Σ_d w[:, d, k, c_d] over a gathered source's D slots, in slot order. Up to
    UNROLLED_SLOTS slots are unrolled; wider tables (a node reading 20–50 nodes of a block that is not
    a dense layer) run a loop over chunks of SLOT_CHUNK slots, padded with zero couplings, which adds
    the same terms in the same order. Unrolled, a 100 × 100 categorical RBM with 40 neighbours a node
    compiled in 6.5–7 s on the 2-core VM and sampled 2.8–3× slower than the loop, which compiles in
    1.6–2.3 s (XLA:CPU's code for one long unrolled fusion is poor)."""
    width = neighbours.shape[1]
    if width <= UNROLLED_SLOTS:
        return list(_add_slots(theta, _gather_rows(state, neighbours), w))
    chunks = -(-width // SLOT_CHUNK)
    pad = chunks * SLOT_CHUNK - width  # padding slots read row 0 with a zero coupling, as the tables' own
    slots = jnp.pad(jnp.asarray(neighbours), ((0, 0), (0, pad))).reshape(-1, chunks, SLOT_CHUNK).transpose(1, 0, 2)
    weights = jnp.pad(w, ((0, 0), (0, pad), (0, 0), (0, 0)))
    weights = weights.reshape(weights.shape[0], chunks, SLOT_CHUNK, *weights.shape[2:]).transpose(1, 0, 2, 3, 4)
    chunk = lambda c, theta: _add_slots(theta, _gather_rows(state, slots[c]), weights[c])  # noqa: E731
    return list(jax.lax.fori_loop(0, chunks, chunk, tuple(theta)))


def _add_slots(theta, gathered: Array, w: Float[Array, "n D K K_tail"]) -> tuple[Array, ...]:
    """θ_k + Σ_d w[:, d, k, c_d] for the D slots of `gathered` `[n, D, chains]`, unrolled in slot order."""
    for d in range(gathered.shape[1]):
        theta = tuple(t + _select_weight(w[:, d, k], gathered[:, d, :]) for k, t in enumerate(theta))
    return tuple(theta)


def _categories(bias, sources, u, dtype, spin_headed: bool, dense: tuple[bool, ...] = ()):
    """Categories `[n, chains]` drawn from softmax(θ) by inverting its CDF at u; for a spin block of a
    mixed program (`spin_headed`), θ is the single Δ = θ_1 − θ_0 (`block_couplings`).

    θ is kept as K separate `[n, chains]` arrays (K is small and static) and every step is
    elementwise, so XLA fuses the neighbour gathers, the softmax and the CDF inversion of a block into
    one loop instead of materialising `[n, chains, K]` intermediates (which made the update bound by
    memory traffic: 24 flips/ns for q=5 Potts on an H200). Dense sources (`dense[i]`) add matrix
    products instead (`_dense_logits`)."""
    n_categories = bias.shape[1]
    theta = [jnp.broadcast_to(bias[:, k, None], u.shape) for k in range(n_categories)]
    for i, (state, neighbours, w) in enumerate(sources):  # w: [n, D, K, K_tail]
        if dense and dense[i]:
            theta = [t + term for t, term in zip(theta, _dense_logits(w, state))]
            continue
        theta = _add_gathered(theta, state, neighbours, w)
    return draw_spin(theta[0], u, dtype) if spin_headed else draw_category(theta, u, dtype)


class DenseLogits(eqx.Module):
    """A dense source of a categorical block as `_dense_logits` reads it: one matrix whose rows are the
    head's K categories stacked (`prepare_dense_logits`), and for a two-category source the mean part."""

    matrix: Float[Array, "Kn depth"]  # [(K n), m] for two-category sources, else [(K n), (T m)]
    mean: Float[Array, "n K"] | None
    n_categories: int = eqx.field(static=True)
    n_tail: int = eqx.field(static=True)


def prepare_dense_logits(w: Float[Array, "n m K T"]) -> DenseLogits:
    """The couplings of a dense source, `[n, m, K, T]`, laid out for one product per update (once per
    call, outside the sweep loop). A two-category source (spins, or binary categories) is read as
    σ = 2c − 1 = ±1: w[.., c] = mean + half-difference · σ. A wider one is read as its T 0/1
    indicators stacked along the product's depth."""
    n, m, n_categories, n_tail = w.shape
    if n_tail == 2:
        mean = jnp.sum(w[..., 0] + w[..., 1], axis=1) * 0.5  # [n, K]
        half = jnp.transpose(w[..., 1] - w[..., 0], (2, 0, 1)) * 0.5  # [K, n, m]
        return DenseLogits(half.reshape(n_categories * n, m), mean, n_categories, n_tail)
    wide = jnp.transpose(w, (2, 0, 3, 1)).reshape(n_categories * n, n_tail * m)  # [(k, i), (t, j)]
    return DenseLogits(wide, None, n_categories, n_tail)


def _dense_logits(source: DenseLogits, state: Array) -> list[Float[Array, "n chains"]]:
    """Σ_j w[i, j, k, c_j] for every head category k, from one matrix product over the whole source
    block (`dense_product.dense_field`)."""
    n_categories = source.n_categories
    if source.n_tail == 2:
        sigma = 2 * state.astype(jnp.int8) - 1
        stacked = dense_field(source.matrix, sigma).reshape(n_categories, -1, state.shape[1])
        return [source.mean[:, k, None] + stacked[k] for k in range(n_categories)]
    onehots = jnp.concatenate([(state == t).astype(jnp.int8) for t in range(source.n_tail)])  # [T m, chains]
    stacked = dense_field(source.matrix, onehots).reshape(n_categories, -1, state.shape[1])
    return [stacked[k] for k in range(n_categories)]


def all_sweep_params(program, tables: NeighbourTables) -> list[tuple]:
    """`sweep_params` of every free block: what the sweeps read of the weights."""
    return [sweep_params(program, tables, b) for b in range(len(program.gibbs_spec.free_blocks))]


def sweep_params(program, tables: NeighbourTables, b: int) -> tuple:
    """Free block b's (bias, couplings per source) as the updates read them: `block_couplings`, with
    each dense source of a categorical block laid out for one product (`prepare_dense_logits`), once
    per call before the sweep loop. (The float16 digits of GPUs' products are made in `dense_field`.)"""
    bias, couplings = block_couplings(program, tables, b)
    if tables.kind != "categorical":
        return bias, couplings
    return bias, [prepare_dense_logits(w) if dense else w for w, dense in zip(couplings, tables.dense[b])]


def spin_headed(tables: NeighbourTables, b: int) -> bool:
    """Whether free block b holds the spins of a categorical (mixed) program: its couplings are the
    single Δ = θ_1 − θ_0 (`block_couplings`), drawn by `categorical_draw.draw_spin`."""
    return tables.kind == "categorical" and bool(tables.spin_blocks[b])


def categorical_kernel_takes(tables: NeighbourTables, b: int, bias, sources, chains: int) -> bool:
    """Whether the categorical Pallas kernel can update free block b: it gathers, so not a block that
    reads dense layers, and its int32 indices must reach every table (`categorical_kernel_fits`)."""
    return not any(tables.dense[b]) and categorical_kernel_fits(bias, sources, chains)


def kernel_operands(params, tables: NeighbourTables, b: int, states) -> tuple:
    """What the updates read for free block b: `(bias, node ids, sources)`, a source being `(state,
    neighbour table, couplings)` of one source block (a spin block of a categorical program: the
    single Δ = θ_1 − θ_0 that `block_couplings` writes for it)."""
    bias, couplings = params[b]
    sources = [(states[src], jnp.asarray(nb), w) for (src, nb, _), w in zip(tables.sources[b], couplings)]
    return bias, jnp.asarray(tables.node_ids[b]), sources


def kernel_states(tables: NeighbourTables, block_states: list[Array]) -> list[Array]:
    """Every block's `[chains, n]` state as the pairwise updates hold it, `[n, chains]`: a spin
    program's spins as int8 ±1; categories as they are, spins among them as categories 0 and 1."""
    if tables.kind == "spin":
        return [jnp.where(s, 1, -1).astype(jnp.int8).T for s in block_states]
    return [(s.astype(jnp.uint8) if spin else s).T for s, spin in zip(block_states, tables.spin_blocks)]


def block_update(params, tables: NeighbourTables, b: int, states, seeds, use_pallas: bool, forms: tuple):
    """New states of free block b: the fused Pallas kernels on GPU, else jax.numpy. `forms[b]`: what
    is known of block b's couplings (`coupling_structure`), which the categorical kernel uses."""
    bias, node_ids, sources = kernel_operands(params, tables, b, states)
    if tables.kind == "categorical":
        spin = spin_headed(tables, b)
        if use_pallas and categorical_kernel_takes(tables, b, bias, sources, seeds.shape[1]):
            return categorical_block_update(bias, node_ids, seeds[b], sources, states[b].dtype, form=forms[b], spin_headed=spin)
        u = uniform_from_words(update_words(seeds[b], node_ids))
        return _categories(bias, sources, u, states[b].dtype, spin, tables.dense[b])
    couplings = params[b][1]
    if use_pallas and not any(tables.dense[b]):
        return pallas_block_update(bias, node_ids, seeds[b], sources)
    field = _field(bias, couplings, tables.sources[b], tables.dense[b], states, seeds.shape[1])
    u = uniform_from_words(update_words(seeds[b], node_ids))
    return jnp.where(u * (1 + jnp.exp(-2 * field)) < 1, 1, -1).astype(jnp.int8)


def _sweep(params, tables: NeighbourTables, sampling_order, states, seeds, use_pallas=False, forms=()):
    """One sweep over the per-block states with this sweep's seeds."""
    forms = forms or (None,) * len(params)
    for members in sampling_order:
        new = {b: block_update(params, tables, b, states, seeds, use_pallas, forms) for b in members}
        states = [new.get(i, s) for i, s in enumerate(states)]
    return states


def _tensor_sweep(blocks: list[TensorBlock], sampling_order, flat, seeds, interpret: bool | None):
    """One sweep over the flat state: the blocks of a group read none of each other (checked by
    `tensor_path_applies`), so updating them one after the other in place is the same as at once.
    `interpret`: False for the native kernel, True for the interpreted one, None for jax.numpy."""
    for members in sampling_order:
        for b in members:
            if interpret is None:
                flat = tensor_block_update_jnp(blocks[b], flat, seeds[b])
            else:
                flat = tensor_block_update(blocks[b], flat, seeds[b], interpret=interpret)
    return flat


def _table_sweep(blocks, sampling_order, flat, seeds, native: bool):
    """One sweep over the flat state (`table_state`) with the pattern-table kernel (or its jax.numpy
    twin), `seeds` folded (`fold_seeds`); the blocks of a group read none of each other, as for
    `_tensor_sweep`."""
    update = table_block_update if native else table_block_update_jnp
    for members in sampling_order:
        for b in members:
            flat = update(blocks[b], flat, seeds, b)
    return flat


def _observe(states, observed, kind: str):
    """Each observed block's rows `[len(block), chains]` (spins as bool): node-major, as the state
    is, so that a sample loop copies rows and the samples are transposed once after it."""
    flat = jnp.concatenate(states, axis=0) if len(states) > 1 else states[0]
    if kind == "spin":
        return [spins_up(flat, ids) for ids in observed]  # either layout of the table kernels' flat state
    return [flat[ids] for ids in observed]


def _run_local(program, schedule, tables, chain_words, states, observed, method="gather", forms=(), params=None):
    """The whole schedule for the chains held locally (one device's shard, or all of them).

    `method`: "gather" (jax.numpy), "pallas" (the fused gather kernels), or "tensor" / "tensor-jnp" /
    "tensor-interpret" (the tensor-core field on the flat state; its jax.numpy twin; interpreted).
    `forms`: per free block, what is known of its couplings (`coupling_structure`; the categorical
    kernel uses it). `params`: every free block's `sweep_params`, made by the caller, else here."""
    if params is None:
        params = all_sweep_params(program, tables)
    order = program.gibbs_spec.sampling_order
    packed = False
    if method.startswith("tensor"):
        blocks = tensor_blocks(tables, tensor_tiles(tables), params)
        interpret = {"tensor": False, "tensor-interpret": True, "tensor-jnp": None}[method]
        scratch = jnp.ones((1, states[0].shape[1]), jnp.int8)
        state = jnp.concatenate(list(states) + [scratch], axis=0)
        sweep = lambda state, seeds: _tensor_sweep(blocks, order, state, seeds, interpret)  # noqa: E731
        observe = lambda state: _observe([state], observed, tables.kind)  # noqa: E731
    elif method.startswith("table"):
        blocks = table_blocks(tables, table_layouts(tables), params)
        packed = packs(states[0].shape[1], sum(tables.block_sizes) + 1)
        state = table_state(states, packed=packed)
        if packed:  # the bit kernel reads seeds in its own order; permuted keys give every sweep's seeds in it
            chain_words = chain_words[bit_seed_order(chain_words.shape[0])]
        sweep = lambda state, seeds: _table_sweep(blocks, order, state, seeds, method == "table")  # noqa: E731
        observe = lambda state: _observe([state], observed, tables.kind)  # noqa: E731
    else:
        state = list(states)
        sweep = lambda state, seeds: _sweep(params, tables, order, state, seeds, method == "pallas", forms)  # noqa: E731
        observe = lambda state: _observe(state, observed, tables.kind)  # noqa: E731
    seeds_of = sweep_seeds_of(chain_words, len(params), folded=method.startswith("table"))

    if schedule.steps_per_sample >= 1 and reads_no_free_block(tables):
        chain_major = lambda state: [o.T for o in observe(state)]  # noqa: E731
        return _independent_samples(schedule, chain_words.shape[0], state, sweep, chain_major, seeds_of, packed)

    backend = "pallas" if method in NATIVE_GPU_METHODS else "jnp"
    sweeps = seeded_sweeps(sweep, seeds_of, backend)
    if packed:  # the samples stay packed in the loop (a byte per 8 spins) and are unpacked chain-major once
        words = run_schedule((state, seeds_of(jnp.uint32(0))), schedule, sweeps,
                             lambda carry: [carry[0][ids] for ids in observed], backend)
        return [chain_major_spins(w) for w in words]
    samples = run_schedule((state, seeds_of(jnp.uint32(0))), schedule, sweeps, lambda carry: observe(carry[0]), backend)
    return [jnp.transpose(s, (2, 0, 1)) for s in samples]  # [samples, nodes, chains] -> [chains, samples, nodes]


INDEPENDENT_BATCH_ELEMENTS = 1 << 22  # state elements (rows x chains) of one batch of side-by-side sweeps
CHAIN_GRANULE = 128  # sweeps per batch come in multiples of this: every kernel's chain tile divides it


def reads_no_free_block(tables: NeighbourTables) -> bool:
    """Whether no free block reads a free block, itself included. Then a sweep's new state depends on
    its own seeds and the clamped blocks only, so the sweeps of a run are independent of each other
    (a categorical node with a bias alone, as in the Benford experiment; hidden units given clamped
    visible units)."""
    n_free = len(tables.sources)
    return all(src >= n_free for sources in tables.sources for src, _, _ in sources)


def _sweeps_per_batch(n_sweeps: int, elements_per_sweep: int) -> int:
    """How many independent sweeps run side by side in one batch: all of them where they fit in
    INDEPENDENT_BATCH_ELEMENTS, else as many as fit, evenly split. The count is a power of two up to
    CHAIN_GRANULE and a multiple of it above, so that the batch's chains (sweeps x chains) divide into
    every kernel's chain tile as the call's own chains do."""
    fit = max(1, INDEPENDENT_BATCH_ELEMENTS // max(elements_per_sweep, 1))
    whole = 1 << max(n_sweeps - 1, 0).bit_length()  # a power of two covering every sweep
    if n_sweeps <= CHAIN_GRANULE and whole <= fit:
        return whole
    if n_sweeps <= CHAIN_GRANULE or fit < CHAIN_GRANULE:
        return 1 << (min(fit, n_sweeps).bit_length() - 1)  # the largest power of two that fits
    batches = -(-n_sweeps // (fit // CHAIN_GRANULE * CHAIN_GRANULE))
    per_batch = -(-n_sweeps // batches)
    return -(-per_batch // CHAIN_GRANULE) * CHAIN_GRANULE


def _independent_samples(schedule: SamplingSchedule, chains: int, state, sweep, observe, seeds_of,
                         bit_seeds: bool = False) -> list[Array]:
    """Every sample of a run whose sweeps are independent (`reads_no_free_block`), without the loop.

    Sample k >= 1 is what sweep n_warmup + k * steps_per_sample - 1 alone makes, and sample 0 what sweep
    n_warmup - 1 makes (the initial state when there is no warm-up): every other sweep is overwritten
    before anything reads it. So the observed sweeps run side by side, each as a copy of the chains
    with that sweep's seeds: the same arithmetic on the same random words as the loop, hence the same
    samples, but one kernel call per block for a whole batch of sweeps instead of a loop step per
    sweep (on a GPU, one chain of one node took about a microsecond a sample in the loop). `bit_seeds`:
    `seeds_of` gives seeds in `table_spin.bit_seed_order` (a bit state), so the copies' seeds interleave."""
    start = 0 if schedule.n_warmup else 1
    indices = (schedule.n_warmup - 1 + schedule.steps_per_sample * np.arange(start, schedule.n_samples)).astype(np.uint32)
    leaves = jax.tree.leaves(state)
    first = observe(state) if start else None
    if not len(indices):
        return [f[:, None] for f in first]
    per_batch = _sweeps_per_batch(len(indices), chains * sum(x.shape[0] for x in leaves))
    batches = -(-len(indices) // per_batch)
    padded = np.concatenate([indices, np.full(batches * per_batch - len(indices), indices[-1], np.uint32)])

    def batch(sweeps: UInt32[Array, " m"]) -> list[Array]:
        seeds = jax.vmap(seeds_of)(sweeps)  # [m, n_free, chains]
        if bit_seeds:  # each copy's seeds in table_spin.bit_seed_order
            seeds = side_by_side_bit_seeds(seeds)
        else:
            seeds = jnp.moveaxis(seeds, 0, 1).reshape(seeds.shape[1], per_batch * chains)  # sweep i, chain c: i * chains + c
        copies = jax.tree.map(lambda x: jnp.tile(x, (1, per_batch)), state)
        return [o.reshape(per_batch, chains, o.shape[-1]) for o in observe(sweep(copies, seeds))]

    if batches == 1:
        out = batch(jnp.asarray(padded))
    else:
        out = [o.reshape(batches * per_batch, chains, o.shape[-1])
               for o in jax.lax.map(batch, jnp.asarray(padded).reshape(batches, per_batch))]
    out = [jnp.moveaxis(o[: len(indices)], 0, 1) for o in out]  # [chains, samples, nodes]
    return [jnp.concatenate([f[:, None], o], axis=1) for f, o in zip(first, out)] if start else out


@eqx.filter_jit
def _run(program, schedule, tables, devices, method, forms, chain_words, states, observed, params):
    check = tables.kind == "categorical"
    if len(devices) == 1:
        states = _checked_categories(program, states, lambda bad: bad) if check else states
        return _run_local(program, schedule, tables, chain_words, states, observed, method, forms, params)
    mesh = Mesh(np.asarray(devices), ("chains",))
    chain_major, chain_minor = PartitionSpec("chains"), PartitionSpec(None, "chains")

    def local(p, w, s, o, prm):
        # Every device raises together: a device whose shard raised alone would leave the others
        # waiting in a later collective, and XLA aborts the process after 40 s (seen on CPU devices).
        s = _checked_categories(p, s, lambda bad: jax.lax.psum(bad.astype(jnp.int32), "chains") > 0) if check else s
        return _run_local(p, schedule, tables, w, s, o, method, forms, prm)

    run = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec(), chain_major, [chain_minor] * len(states), PartitionSpec(), PartitionSpec()),
        out_specs=chain_major,
        check_vma=False,
    )
    return run(program, chain_words, states, observed, params)


def _category_limits(program: BlockSamplingProgram, b: int, n: int) -> np.ndarray | None:
    """The category count of each of block b's `n` nodes (int32), or None where it is not bounded."""
    spec = program.gibbs_spec
    sd, start = int(spec.block_sd_index[b]), int(spec.block_offsets[b])
    limit = program.tables.category_limits[sd]
    if limit is None:
        return None
    return np.minimum(limit[start : start + n], np.iinfo(np.int32).max).astype(np.int32)


def _checked_categories(program: BlockSamplingProgram, states: list[Array], combine) -> list[Array]:
    """Raise at run time (as the generic path does) if a state `[n_b, chains]` is >= its node's
    category count; `combine` turns this shard's verdict into the one every shard raises on."""
    bad = jnp.zeros((), bool)
    for b, state in enumerate(states):
        limit = _category_limits(program, b, state.shape[0])
        if limit is not None:
            bad = bad | jnp.any(state.astype(jnp.int32) >= jnp.asarray(limit)[:, None])
    bad = combine(bad)
    return [eqx.error_if(s, bad, CATEGORY_RANGE_MESSAGE) for s in states]


def check_concrete_categories(program: BlockSamplingProgram, states: list) -> None:
    """Raise StateError now if a concrete state (every block, free then clamped, `[..., n_b]`) holds
    a category >= its node's count: the check `_checked_categories` makes inside a compiled call,
    for callers that hold the states before compiling (a clear error instead of a runtime one)."""
    for b, state in enumerate(states):
        limit = _category_limits(program, b, np.shape(state)[-1])
        if limit is not None and np.any(np.asarray(state).astype(np.int64) >= limit):  # only these are read
            raise StateError(CATEGORY_RANGE_MESSAGE)


def chain_tile(chains: int, n_devices: int, tile: int) -> int:
    """Chains per kernel tile: `tile`, or the power of two covering a device's share if smaller."""
    per_device = -(-chains // n_devices)
    return min(tile, 1 << max(per_device - 1, 0).bit_length())


METHODS = ("auto", "gather", "pallas", "tensor", "tensor-jnp", "tensor-interpret", "table", "table-jnp")
NATIVE_GPU_METHODS = ("pallas", "tensor", "table")  # compiled GPU kernels (their loops unroll)
TENSOR_MIN_CHAINS = 4096  # chains of a call; on an H200 the gather sweep is as fast or faster at 1,000


def check_method(method: str) -> None:
    """Raise unless `method` is one of METHODS."""
    if method not in METHODS:
        raise HeatbathError(f"method must be one of {METHODS}; got {method!r}.")


def tensor_path_applies(program: BlockSamplingProgram, tables: NeighbourTables) -> bool:
    """Whether the tensor-core update can run `program`: spins, every free block tiled (no dense
    layers, no block reading itself, neighbourhoods of a tile within MAX_UNION), and no block of a
    sampling group reading another block of that group (the flat state is updated in place)."""
    if tables.kind != "spin" or any(tiles is None for tiles in tensor_tiles(tables)):
        return False
    return _groups_read_none_of_their_own(program, tables)


def table_path_applies(program: BlockSamplingProgram, tables: NeighbourTables) -> bool:
    """Whether the pattern-table kernel can run `program`: spins, every free block laid out (no dense
    layers, no block reading itself, at most 5 · MAX_GROUPS neighbours a node), and no block of a
    sampling group reading another block of that group (the flat state is updated in place)."""
    if tables.kind != "spin" or any(layout is None for layout in table_layouts(tables)):
        return False
    return _groups_read_none_of_their_own(program, tables)


def _groups_read_none_of_their_own(program: BlockSamplingProgram, tables: NeighbourTables) -> bool:
    """No block of a sampling group reads a block of the same group: the flat-state kernels update
    a group's blocks one after the other in place, which is then the same as all at once."""
    return not any(src in members for members in program.gibbs_spec.sampling_order
                   for b in members for src, _, _ in tables.sources[b])


def chosen_method(method: str, program, tables: NeighbourTables, devices, chains: int) -> str:
    """The update a call runs. "auto" decides on the call's total chain count, never on how they are
    split, so a chain's samples are the same on any number of devices."""
    on_gpus = pallas_runs_on(devices)
    if method == "auto" and tables.kind == "categorical":
        return "pallas" if on_gpus else "gather"
    if method == "auto" and on_gpus and nvrtc_available() and table_path_applies(program, tables):
        return "table"
    if method == "auto":
        many = chains >= TENSOR_MIN_CHAINS
        return "tensor" if on_gpus and many and tensor_path_applies(program, tables) else "gather"
    if method.startswith(("tensor", "table")) and tables.kind != "spin":
        raise HeatbathError(f"method={method!r} runs spin programs only; this one is categorical. Use 'auto', 'gather' or 'pallas'.")
    if method in ("pallas", "tensor") and not on_gpus:
        raise HeatbathError(f"method={method!r} needs CUDA GPUs with Pallas; use 'auto' or 'gather'.")
    if method == "table" and not (on_gpus and nvrtc_available()):
        raise HeatbathError("method='table' needs CUDA GPUs and NVRTC (pip install nvidia-cuda-nvrtc-cu12); use 'auto'.")
    if method.startswith("table") and not table_path_applies(program, tables):
        raise HeatbathError(f"method={method!r} cannot run this program (dense layers, a block reading itself, a sampling "
                            "group whose blocks read each other, or a node with more than 40 neighbours); use 'auto'.")
    if method.startswith("tensor") and not tensor_path_applies(program, tables):
        raise HeatbathError(f"method={method!r} cannot run this program (dense layers, a block reading itself, "
                            "a sampling group whose blocks read each other, too wide neighbourhoods, or a block of more than "
                            f"{TILED_ROWS_LIMIT} nodes); use 'auto'.")
    return method


def run_pairwise(
    program: BlockSamplingProgram,
    schedule: SamplingSchedule,
    chain_words: UInt32[Array, "chains 2"],
    block_states: list[Array],
    observed_ids: list[np.ndarray],
    devices=None,
    method: str = "auto",
    cpu_kernel: bool = True,
    forms: tuple[CouplingForm, ...] | None = None,
    observed_dtypes: tuple | None = None,
    params: list[tuple] | None = None,
) -> list[Array]:
    """Run `schedule` on every chain; `block_states` holds every block (free, then clamped).

    `observed_ids[i]` are the spec-wide ids of the nodes of the i-th observed block. Chains are split
    evenly over `devices` (default: every device of the default backend) and padded with throw-away
    chains to a multiple of their number; each chain's samples do not depend on the split.

    Spin programs without dense layers run on CPUs through the compiled kernel of `cpu_spin` (all
    chains, every host thread) when `method="auto"`, unless `cpu_kernel=False`; it takes the same
    steps as the table kernels' jax.numpy twin ("table-jnp"), with the GPU table kernel's arithmetic.

    `method` picks the update: "auto" (on CUDA GPUs, categorical programs run the fused kernel of
    `pallas_categorical`; spin programs the pattern-table CUDA kernel of `table_spin` where NVRTC is
    found and `table_path_applies`, for any chain count, else the tensor-core field of `tensor_spin`
    where `tensor_path_applies` and the call has at least TENSOR_MIN_CHAINS chains, else the gather
    sweep; on CPUs the CPU kernel), "gather" (the jax.numpy sweep everywhere), "pallas" (the fused
    gather kernels: `pallas_spin` or `pallas_categorical`, the latter except for blocks too large
    for its int32 indices or reading dense layers), "table" (the pattern-table kernel), "tensor" (the tensor-core kernel),
    or for tests "table-jnp", "tensor-jnp" / "tensor-interpret". The categorical kernel takes the
    jax.numpy sweep's steps up to the GPU's rounding of exp at a near-tie. The table and tensor-core
    fields round differently from the gather sweep, so a chain can take a different step where a
    comparison is a near-tie: with "auto" its samples are the same for any number of devices and,
    where the table kernel runs, of chains; on the tensor path only on one side of
    TENSOR_MIN_CHAINS (fix `method` to make them match across it).

    `forms` (per free block) says what is known of each block's couplings (Potts-like or not,
    `coupling_structure.call_forms`), read by callers that see concrete weights before tracing
    (`dispatch`, `sample_states_batched`); by default nothing is known. It changes the speed only.

    A categorical program's samples come back in each observed block's storage dtype (spins among
    its categories as booleans): `observed_dtypes` (`observed_dtypes_of`), which callers whose
    `observed_ids` are traced must give.

    `params` (`all_sweep_params(program, tables)`) lets a caller that holds concrete weights lay them
    out once for many calls (`sample_states_batched` does): made inside the call, they cost a pass
    over the weights every call, which XLA does at compile time only for constant weights.
    """
    tables = pairwise_tables(program)
    devices = tuple(jax.devices() if devices is None else devices)
    check_method(method)
    if cpu_kernel and method == "auto" and _spin_kernel_on_cpu(tables, devices):
        fields = all_sweep_params(program, tables) if params is None else params
        order = tuple(tuple(members) for members in program.gibbs_spec.sampling_order)
        return run_spin_on_cpu(tables, order, schedule, [f[0] for f in fields], [f[1] for f in fields],
                               chain_words, block_states, observed_ids)
    chains = chain_words.shape[0]
    method = chosen_method(method, program, tables, devices, chains)
    if method == "gather":
        tile = 1
    elif method == "pallas":
        tile = chain_tile(chains, len(devices), TILE_CHAINS if tables.kind == "spin" else pallas_categorical.TILE_CHAINS)
    elif method.startswith("table"):
        tile = chain_multiple(-(-chains // len(devices)))  # whole words of the bit state where it applies
    else:  # the tensor kernel's products need at least 16 chains
        tile = max(16, chain_tile(chains, len(devices), TENSOR_TILE_CHAINS))
    pad = -chains % (len(devices) * tile)
    states = kernel_states(tables, block_states)  # categories checked in `_run`
    if pad:
        chain_words = jnp.concatenate([chain_words, jnp.zeros((pad, 2), jnp.uint32)])
        states = [jnp.pad(s, ((0, 0), (0, pad)), constant_values=1 if tables.kind == "spin" else 0) for s in states]
    observed = [jnp.asarray(ids, jnp.int32) for ids in observed_ids]
    out = _run(program, schedule, tables, devices, method, tuple(forms or ()), chain_words, states, observed, params)
    out = [o[:chains] for o in out] if pad else out
    if tables.kind == "spin":
        return out
    if observed_dtypes is None:  # the ids are concrete here (a caller passing traced ids gives the dtypes)
        observed_dtypes = observed_dtypes_of(program, [ids[0] if len(ids) else None for ids in map(np.asarray, observed_ids)])
    return as_stored(out, observed_dtypes)


def runs_spin_kernel_on_cpu(program: BlockSamplingProgram, devices: Sequence[jax.Device]) -> bool:
    """Whether `run_pairwise(method="auto")` samples `program` on `devices` with the CPU kernel of
    `cpu_spin` (a host callback that takes every chain on one device), not split over the devices."""
    return pairwise_kind(program)[0] == "spin" and _spin_kernel_on_cpu(pairwise_tables(program), tuple(devices))


def _spin_kernel_on_cpu(tables: NeighbourTables, devices: tuple) -> bool:
    return (tables.kind == "spin" and not any(map(any, tables.dense)) and cpu_kernel_runs_on(devices)
            and all(layout is not None for layout in cpu_layouts(tables)))


def observed_dtypes_of(program: BlockSamplingProgram, first_ids: Sequence[int | None]) -> tuple:
    """The storage dtype of the nodes of each observed block, from one node id of each (None for an
    empty block): what `run_pairwise` returns a categorical program's samples in."""
    spec = program.gibbs_spec
    return tuple(None if i is None else np.dtype(jax.tree.leaves(spec.sd_struct(int(spec.node_sd[int(i)])))[0].dtype)
                 for i in first_ids)


def as_stored(samples: list[Array], dtypes: tuple) -> list[Array]:
    """Categorical samples in the dtype of the nodes they observe (the flat state of a program whose
    blocks differ in dtype holds the widest), spins (categories 0 and 1) as booleans."""
    out = []
    for sample, dtype in zip(samples, dtypes):
        if dtype is not None and sample.dtype != dtype:
            sample = sample == 1 if dtype == np.bool_ else sample.astype(dtype)
        out.append(sample)
    return out
