"""The pairwise kernels: block Gibbs sweeps of many chains with one small-integer array per block.

State is one `[n_b, chains]` array per block, chains contiguous: int8 ±1 for spins, the program's
unsigned dtype (uint8 below 256 categories) for categories, so at most one byte per node per chain
for both. Updating free block b reads each source block through a padded neighbour table (one
gather of whole chain rows) and sums the couplings into the field:

- spins: γ, then s = +1 with probability σ(2γ), written `u · (1 + e^{-2γ}) < 1` (no division);
- categories: θ_k = bias_k + Σ_d W_d[k, c_d], then the category is found by inverting the CDF of
  softmax(θ) with the same single uniform u (one random word per node, not one per category).

u comes from `counter_rng.update_words`: a pure function of the chain's own key, the sweep, the block
and the node, so a chain's trajectory is the same whatever else runs beside it and however chains
are split over devices.

XLA fuses the gather, the unrolled neighbour sum, the random words and the comparison of one block
into one loop; keeping blocks as separate arrays means writing a block back copies nothing else.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, Int8, UInt32

from heatbath.block_sampling import CATEGORY_RANGE_MESSAGE, BlockSamplingProgram, SamplingSchedule
from heatbath.kernels.counter_rng import signed_coupling, stream_seeds, uniform_from_words, update_words
from heatbath.kernels.cpu_spin import cpu_kernel_runs_on, run_spin_on_cpu
from heatbath.kernels.pairwise_tables import NeighbourTables, block_couplings, pairwise_tables
from heatbath.kernels.pallas_backend import pallas_runs_on
from heatbath.kernels.pallas_spin import TILE_CHAINS, pallas_block_update

__all__ = ["run_pairwise"]


def _gather_rows(state, neighbours: np.ndarray):
    """`state[neighbours]`: whole chain rows of a source block, `[n, D, chains]`.

    Every index is a valid local index by construction (padding points at row 0 with a zero
    coupling), so the gather skips XLA's default clamping: 1.4x faster sweeps on XLA:CPU (measured).
    """
    return state.at[jnp.asarray(neighbours)].get(mode="promise_in_bounds")


def _field(bias, couplings, sources, dense, states, chains: int):
    acc = jnp.broadcast_to(bias[:, None], (bias.shape[0], chains))
    for (source, neighbours, _), w, is_dense in zip(sources, couplings, dense):
        if is_dense:  # full float32 precision: TF32 would change the conditional probabilities
            acc = acc + jnp.matmul(w, states[source].astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
            continue
        gathered = _gather_rows(states[source], neighbours)
        for d in range(neighbours.shape[1]):
            acc = acc + signed_coupling(w[:, d, None], gathered[:, d, :])
    return acc


def _sweep_seeds(chain_words, sweep, n_free: int):
    """Seed words `[n_free, chains]` of every block update of one sweep."""
    streams = sweep * jnp.uint32(n_free) + jnp.arange(n_free, dtype=jnp.uint32)
    return jax.vmap(lambda stream: stream_seeds(chain_words, stream))(streams)


def _categories(bias, couplings, sources, states, u, dtype):
    """Categories `[n, chains]` drawn from softmax(θ) by inverting its CDF at u.

    θ is kept as K separate `[n, chains]` arrays (K is small and static) and every step is
    elementwise, so XLA fuses the neighbour gathers, the softmax and the CDF inversion of a block into
    one loop instead of materialising `[n, chains, K]` intermediates (which made the update bound by
    memory traffic: 24 flips/ns for q=5 Potts on an H200)."""
    n_categories = bias.shape[1]
    theta = [jnp.broadcast_to(bias[:, k, None], u.shape) for k in range(n_categories)]
    for (source, neighbours, _), w in zip(sources, couplings):  # w: [n, D, K, K_tail]
        gathered = _gather_rows(states[source], neighbours)
        for d in range(neighbours.shape[1]):
            # W_d[k, c] by a chain of selects over c: elementwise, so it fuses (a gather per k did not
            # on GPU, and each one wrote a [n, chains] array to memory).
            is_tail = [gathered[:, d, :] == t for t in range(1, w.shape[3])]
            for k in range(n_categories):
                value = jnp.broadcast_to(w[:, d, k, 0, None], u.shape)
                for t, hit in enumerate(is_tail, start=1):
                    value = jnp.where(hit, w[:, d, k, t, None], value)
                theta[k] = theta[k] + value
    top = theta[0]
    for t in theta[1:]:
        top = jnp.maximum(top, t)
    cdf, total = [], jnp.zeros_like(top)
    for t in theta:
        total = total + jnp.exp(t - top)
        cdf.append(total)
    target = u * total
    below = sum((c < target).astype(jnp.int32) for c in cdf[:-1])
    return below.astype(dtype)


def _update(params, tables: NeighbourTables, b: int, states, seeds, use_pallas: bool):
    """New states of free block b: the fused Pallas kernel on GPU (spins), else jax.numpy."""
    bias, couplings = params[b]
    node_ids = jnp.asarray(tables.node_ids[b])
    if tables.kind == "categorical":
        u = uniform_from_words(update_words(seeds[b], node_ids))
        return _categories(bias, couplings, tables.sources[b], states, u, states[b].dtype)
    if use_pallas and not any(tables.dense[b]):
        sources = [(states[src], jnp.asarray(nb), w) for (src, nb, _), w in zip(tables.sources[b], couplings)]
        return pallas_block_update(bias, node_ids, seeds[b], sources)
    field = _field(bias, couplings, tables.sources[b], tables.dense[b], states, seeds.shape[1])
    u = uniform_from_words(update_words(seeds[b], node_ids))
    return jnp.where(u * (1 + jnp.exp(-2 * field)) < 1, 1, -1).astype(jnp.int8)


def _sweep(params, tables: NeighbourTables, sampling_order, states, chain_words, sweep, seeds, use_pallas=False):
    """One sweep with this sweep's seeds; returns the new states and the next sweep's seeds.

    The seeds travel in the loop carry so that they are materialised: computed inside the sweep,
    XLA fuses the per-chain cipher into the per-(node, chain) loop and recomputes it for every
    element (measured 70x slower on XLA:CPU; an optimisation barrier does not survive to fusion).
    """
    for members in sampling_order:
        new = {b: _update(params, tables, b, states, seeds, use_pallas) for b in members}
        states = [new.get(i, s) for i, s in enumerate(states)]
    return states, _sweep_seeds(chain_words, sweep + jnp.uint32(1), len(params))


def _observe(states, observed, kind: str):
    flat = jnp.concatenate(states, axis=0) if len(states) > 1 else states[0]
    if kind == "spin":
        return [(flat[ids] > 0).T for ids in observed]  # [chains, len(block)] bool
    return [flat[ids].T for ids in observed]


def _run_local(program, schedule, tables, chain_words, states, observed, use_pallas=False):
    """The whole schedule for the chains held locally (one device's shard, or all of them)."""
    params = [block_couplings(program, tables, b) for b in range(len(program.gibbs_spec.free_blocks))]
    order = program.gibbs_spec.sampling_order

    def sweeps(carry, start, count):
        def body(i, carry):
            states, seeds = carry
            return _sweep(params, tables, order, states, chain_words, start + i.astype(jnp.uint32), seeds, use_pallas)

        return jax.lax.fori_loop(0, count, body, carry) if count else carry

    n_free = len(params)
    carry = (list(states), _sweep_seeds(chain_words, jnp.uint32(0), n_free))
    carry = sweeps(carry, jnp.uint32(0), schedule.n_warmup)
    first = _observe(carry[0], observed, tables.kind)

    def body(carry, i):
        carry = sweeps(carry, jnp.uint32(schedule.n_warmup) + i * jnp.uint32(schedule.steps_per_sample), schedule.steps_per_sample)
        return carry, _observe(carry[0], observed, tables.kind)

    _, rest = jax.lax.scan(body, carry, jnp.arange(schedule.n_samples - 1, dtype=jnp.uint32))
    return [jnp.concatenate([f[:, None], jnp.moveaxis(r, 0, 1)], axis=1) for f, r in zip(first, rest)]


@eqx.filter_jit
def _run(program, schedule, tables, devices, use_pallas, chain_words, states, observed):
    if len(devices) == 1:
        return _run_local(program, schedule, tables, chain_words, states, observed, use_pallas)
    mesh = Mesh(np.asarray(devices), ("chains",))
    chain_major, chain_minor = PartitionSpec("chains"), PartitionSpec(None, "chains")
    local = jax.shard_map(
        lambda p, w, s, o: _run_local(p, schedule, tables, w, s, o, use_pallas),
        mesh=mesh,
        in_specs=(PartitionSpec(), chain_major, [chain_minor] * len(states), PartitionSpec()),
        out_specs=chain_major,
        check_vma=False,
    )
    return local(program, chain_words, states, observed)


def _checked_categories(program: BlockSamplingProgram, states: list[Array]) -> list[Array]:
    """Raise at run time (as the generic path does) if a state is >= its node's category count."""
    spec = program.gibbs_spec
    bad = jnp.zeros((), bool)
    for b, state in enumerate(states):
        sd, start = int(spec.block_sd_index[b]), int(spec.block_offsets[b])
        limit = program.tables.category_limits[sd]
        if limit is None:
            continue
        limit = np.minimum(limit[start : start + state.shape[0]], np.iinfo(np.int32).max).astype(np.int32)
        bad = bad | jnp.any(state.astype(jnp.int32) >= jnp.asarray(limit)[:, None])
    return [eqx.error_if(s, bad, CATEGORY_RANGE_MESSAGE) for s in states]


def _chain_tile(chains: int, n_devices: int) -> int:
    """Chains per kernel tile: TILE_CHAINS, or the power of two covering a device's share if smaller."""
    per_device = -(-chains // n_devices)
    return min(TILE_CHAINS, 1 << max(per_device - 1, 0).bit_length())


def run_pairwise(
    program: BlockSamplingProgram,
    schedule: SamplingSchedule,
    chain_words: UInt32[Array, "chains 2"],
    block_states: list[Array],
    observed_ids: list[np.ndarray],
    devices=None,
    use_pallas: bool = False,
    cpu_kernel: bool = True,
) -> list[Array]:
    """Run `schedule` on every chain; `block_states` holds every block (free, then clamped).

    `observed_ids[i]` are the spec-wide ids of the nodes of the i-th observed block. Chains are split
    evenly over `devices` (default: every device of the default backend) and padded with throw-away
    chains to a multiple of their number; each chain's samples do not depend on the split.

    Spin programs without dense layers run on CPUs through the compiled kernel of `cpu_spin` (all
    chains, every host thread), unless `cpu_kernel=False`; it takes the same steps as jax.numpy.
    """
    tables = pairwise_tables(program)
    devices = tuple(jax.devices() if devices is None else devices)
    if cpu_kernel and tables.kind == "spin" and not any(map(any, tables.dense)) and cpu_kernel_runs_on(devices):
        fields = [block_couplings(program, tables, b) for b in range(len(tables.sources))]
        order = tuple(tuple(members) for members in program.gibbs_spec.sampling_order)
        return run_spin_on_cpu(tables, order, schedule, [f[0] for f in fields], [f[1] for f in fields],
                               chain_words, block_states, observed_ids)
    use_pallas = use_pallas and tables.kind == "spin" and pallas_runs_on(devices)
    chains = chain_words.shape[0]
    pad = -chains % (len(devices) * (_chain_tile(chains, len(devices)) if use_pallas else 1))
    if tables.kind == "spin":
        states: list[Int8[Array, "n c"]] = [jnp.where(s, 1, -1).astype(jnp.int8).T for s in block_states]
    else:
        states = _checked_categories(program, [s.T for s in block_states])
    if pad:
        chain_words = jnp.concatenate([chain_words, jnp.zeros((pad, 2), jnp.uint32)])
        states = [jnp.pad(s, ((0, 0), (0, pad)), constant_values=1 if tables.kind == "spin" else 0) for s in states]
    observed = [jnp.asarray(ids, jnp.int32) for ids in observed_ids]
    out = _run(program, schedule, tables, devices, use_pallas, chain_words, states, observed)
    return [o[:chains] for o in out] if pad else out
