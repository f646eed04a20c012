"""A batched fast path for discrete EBM programs: many chains at once, chains as the contiguous axis.

`sample_states_batched` runs the same Markov chain as `jax.vmap(sample_states)` for programs whose
free blocks all use the built-in `SpinGibbsConditional` / `CategoricalGibbsConditional` and whose
interactions are all `DiscreteEBMInteraction`s (every spin, categorical and mixed discrete EBM,
Ising and Potts included). What differs is the layout and the random numbers:

- the global state is held as `[nodes, chains]` arrays, so gathering a neighbour's state reads one
  contiguous row of chains (under `vmap` the chain axis leads and every gather is strided);
- random numbers are counter-based (`kernels.counter_rng`): the word of (node, chain) at sweep t of
  block b is a pure function of the key and those counters, so results do not depend on how the
  chains are batched or split over devices.

It is a one-line change from the THRML-style call:

    jax.jit(jax.vmap(lambda k, s: sample_states(k, prog, schedule, s, clamp, blocks)))(keys, init)
    sample_states_batched(key, prog, schedule, init, clamp, blocks)           # same shapes out

Both return, per block of `blocks`, an array `[chains, n_samples, len(block)]`.
"""

from __future__ import annotations

import functools
from functools import partial
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Key

from heatbath.block_management import Block, node_positions
from heatbath.block_sampling import BlockSamplingProgram, SamplingSchedule
from heatbath.errors import HeatbathError, StateError
from heatbath.kernels.counter_rng import STREAM_TAG as _STREAM_TAG
from heatbath.kernels.counter_rng import key_words, threefry2x32
from heatbath.kernels.pairwise_sweep import (all_sweep_params, check_concrete_categories, check_method, observed_dtypes_of,
                                             run_pairwise)
from heatbath.kernels.coupling_structure import call_forms
from heatbath.kernels.identity_cache import IdentityCache, immutable_arrays
from heatbath.kernels.potts_torus import run_potts_torus_chains, torus_model
from heatbath.kernels.multispin_run import lattice_devices
from heatbath.kernels.torus_run import TorusIndex, run_torus_chains, torus_backend, torus_index
from heatbath.kernels.pairwise_tables import pairwise_kind, pairwise_tables
from heatbath.kernels.program_structure import ProgramStructure, join_program, split_program
from heatbath.models.discrete_ebm import (
    CategoricalGibbsConditional,
    DiscreteEBMInteraction,
    SpinGibbsConditional,
    spin_values,
)

__all__ = ["sample_states_batched", "supports_batched", "chain_block_states", "chain_words_from_key"]


def supports_batched(program: BlockSamplingProgram) -> str | None:
    """None if the fast path can run `program`, else the reason it cannot. The answer rests on types
    and shapes alone, so it is remembered per program object."""
    return _SUPPORT.get((program,), lambda: _unsupported_because(program))


_SUPPORT: IdentityCache[str | None] = IdentityCache(32)


def _unsupported_because(program: BlockSamplingProgram) -> str | None:
    for b, sampler in enumerate(program.samplers):
        if type(sampler) not in (SpinGibbsConditional, CategoricalGibbsConditional):
            return f"free block {b} uses {type(sampler).__name__}; the fast path runs the built-in Gibbs conditionals"
        for interaction in program.per_block_interactions[b]:
            if not isinstance(interaction, DiscreteEBMInteraction):
                return f"free block {b} has a {type(interaction).__name__} interaction"
    for sd in range(len(program.gibbs_spec.global_sd_order)):
        leaves = jax.tree.leaves(program.gibbs_spec.sd_struct(sd))
        if len(leaves) != 1 or leaves[0].shape != ():
            return "node states must be scalars"
    return None


def _uniform(bits: Array) -> Array:
    """Uniform floats in (0, 1) from 32-bit words (24 random bits, never exactly 0 or 1)."""
    return ((bits >> 8).astype(jnp.float32) + 0.5) * jnp.float32(2.0**-24)


def _words(words, shape: tuple[int, ...], stream) -> Array:
    """One 32-bit word per (node, chain[, category]) for this stream (sweep and block).

    The stream first derives its own key; the word of an element is then the cipher of the counter
    pair (node·K + category, chain). It depends on the chain's index, never on how many chains run
    together, so a chain's trajectory is the same in any batch (and on any device split).
    """
    k0, k1 = threefry2x32(words, jnp.asarray(stream, jnp.uint32), jnp.uint32(_STREAM_TAG))
    n, chains = shape[0], shape[1]
    per_node = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    row = jax.lax.broadcasted_iota(jnp.uint32, (n, chains, per_node), 0) * jnp.uint32(per_node)
    row = row + jax.lax.broadcasted_iota(jnp.uint32, (n, chains, per_node), 2)
    col = jax.lax.broadcasted_iota(jnp.uint32, (n, chains, per_node), 1)
    out, _ = threefry2x32((k0, k1), row, col)
    return out.reshape(shape)


def _contributions(program, b: int, global_state, head_is_categorical: bool):
    """Σ over interactions of (spin product) · W[categories], as [n, chains] (spin head) or [n, chains, K]."""
    total = None
    for entry, interaction, active in zip(
        program.tables.per_block[b], program.per_block_interactions[b], program.per_block_interaction_active[b]
    ):
        w = interaction.weights  # [n, k, (K,) c_1, ..., c_N]
        n, k = active.shape
        tails = [global_state[sd][pos] for sd, pos in zip(entry.tail_sd, entry.tail_positions)]  # [n, k, C]
        chains = global_state[0].shape[1]
        spin_prod = jnp.ones((n, k, chains), jnp.float32)
        for s in tails[: interaction.n_spin]:
            spin_prod = spin_prod * spin_values(s, jnp.float32)
        if head_is_categorical:
            w = jnp.moveaxis(w, 2, -1)  # [n, k, c..., K]
        rows = (jnp.arange(n)[:, None, None], jnp.arange(k)[None, :, None])
        cats = tuple(c.astype(jnp.int32) for c in tails[interaction.n_spin :])
        if cats:
            selected = w[rows + cats]  # [n, k, C(, K)]
        else:
            selected = w[:, :, None]  # [n, k, 1(, K)]
        mask = active[:, :, None]
        if head_is_categorical:
            term = jnp.where(mask[..., None], spin_prod[..., None] * selected, 0).sum(axis=1)
        else:
            term = jnp.where(mask, spin_prod * selected, 0).sum(axis=1)
        total = term if total is None else total + term
    return total


def _sample_block(program, b: int, global_state, words, stream):
    spec = program.gibbs_spec
    sampler = program.samplers[b]
    n = len(spec.blocks[b])
    chains = global_state[0].shape[1]
    dtype = jax.tree.leaves(spec.sd_struct(int(spec.block_sd_index[b])))[0].dtype
    if isinstance(sampler, CategoricalGibbsConditional):
        theta = _contributions(program, b, global_state, True)
        if theta is None:
            theta = jnp.zeros((n, chains, sampler.n_categories), jnp.float32)
        u = _uniform(_words(words, (n, chains, sampler.n_categories), stream))
        return jnp.argmax(theta - jnp.log(-jnp.log(u)), axis=-1).astype(dtype)  # Gumbel-max
    gamma = _contributions(program, b, global_state, False)
    if gamma is None:
        gamma = jnp.zeros((n, chains), jnp.float32)
    up = _uniform(_words(words, (n, chains), stream)) < jax.nn.sigmoid(2.0 * gamma)
    return up if dtype == jnp.bool_ else jnp.where(up, 1, -1).astype(dtype)


def _sweep(program, global_state, words, sweep_index):
    spec = program.gibbs_spec
    n_free = len(spec.free_blocks)
    for members in spec.sampling_order:
        updates = [(b, _sample_block(program, b, global_state, words, sweep_index * n_free + b)) for b in members]
        for b, new in updates:
            sd, offset = int(spec.block_sd_index[b]), int(spec.block_offsets[b])
            entry = jax.lax.dynamic_update_slice_in_dim(global_state[sd], new, offset, axis=0)
            global_state = global_state[:sd] + [entry] + global_state[sd + 1 :]
    return global_state


def chain_block_states(program, init_state_free, state_clamp, chains: int) -> list[Array]:
    """Every block's state as `[chains, n]` (free blocks, then clamped), checked against the spec.

    Free states must be `[chains, n]`; a clamped state may also be `[n]`, shared by every chain."""
    spec = program.gibbs_spec
    states = []
    for b, block in enumerate(spec.blocks):
        is_free = b < len(spec.free_blocks)
        x = (init_state_free if is_free else state_clamp)[b if is_free else b - len(spec.free_blocks)]
        x = x if isinstance(x, jax.Array) else jnp.asarray(x)  # asarray of a jax Array is an eager op (50 µs)
        want = np.dtype(jax.tree.leaves(spec.sd_struct(int(spec.block_sd_index[b])))[0].dtype)
        kind = "free" if is_free else "clamped"
        if x.dtype != want:
            raise StateError(f"The {kind} state for block {b} has dtype {x.dtype}; these nodes are stored as {want}.")
        if x.shape == (len(block),) and not is_free:
            x = jnp.broadcast_to(x, (chains, len(block)))
        if x.shape != (chains, len(block)):
            raise StateError(
                f"The {kind} state for {spec._block_label(b)} has shape {tuple(x.shape)}; expected "
                f"({chains}, {len(block)}) = (chains, nodes)" + ("" if is_free else f" or ({len(block)},)") + "."
            )
        states.append(x)
    return states


def _batched_global(program, block_states) -> list[Array]:
    """[nodes, chains] global state entries from per-block [chains, n] states."""
    parts = [x.T for x in block_states]
    return [jnp.concatenate([parts[b] for b in members], axis=0) for members in program.gibbs_spec.block_to_global_slice_spec]


def chain_words_from_key(key: Key[Array, ""], chains: int) -> Array:
    """Per-chain key words `[chains, 2]` derived from one key: the cipher of (chain index, tag).

    Chain c's words depend on c alone, never on how many chains run, so chain c has the same
    trajectory in a run of 10 chains as in a run of 10,000."""
    index = jnp.arange(chains, dtype=jnp.uint32)
    a, b = threefry2x32(key_words(key), index, jnp.full_like(index, _STREAM_TAG))
    return jnp.stack([a, b], axis=1)


def sample_states_batched(
    key: Key[Array, ""],
    program: BlockSamplingProgram,
    schedule: SamplingSchedule,
    init_state_free: Sequence[Array],
    state_clamp: Sequence[Array],
    nodes_to_sample: Sequence[Block],
    *,
    devices: Sequence[jax.Device] | None = None,
    method: str = "auto",
) -> list[Array]:
    """Run `chains` independent chains (the leading axis of each initial state) on the fast path.

    Returns, per block of `nodes_to_sample`, samples of shape `[chains, n_samples, len(block)]`, the
    layout of `jax.vmap(sample_states)`. Raises if the program is not a discrete EBM with built-in
    conditionals (see `supports_batched`); use `sample_states` for those.

    Pairwise programs (Ising models, Boltzmann machines, RBMs; Potts and pairwise categorical EBMs)
    run the pairwise kernels (`kernels.pairwise_sweep`), with the chains split over `devices`
    (default: every device of the default backend); chain c's samples are the same for any number
    of devices, and of chains (see `method`; on CPUs dense layers excepted, whose float32 product
    XLA:CPU rounds differently for other numbers of chains, which can change a step at a near-tie).
    Other discrete programs run a general batched sweep on one device.

    `method` chooses the pairwise update: "auto" (on CUDA GPUs the fused categorical kernel, and for
    spins the pattern-table CUDA kernel where NVRTC is found, else the tensor-core field from 4,096
    chains; on CPUs the compiled spin kernel), "gather" (the jax.numpy sweep everywhere), "pallas",
    "table" or "tensor"; `kernels.pairwise_sweep.run_pairwise` explains each. Without NVRTC the
    tensor-core field rounds differently from the others, so under "auto" a chain's samples match
    across chain counts on the same side of 4,096 chains; fix `method` to make them match across it.

    On CUDA GPUs, "auto" runs a program that is the uniform Ising model on an L × L torus (L a
    multiple of 64, checkerboard blocks; `kernels.ising_torus`) on the one-bit multispin lattice
    kernel, and one that is the uniform q-state Potts model on a torus (`kernels.potts_torus`) on
    the Potts lattice kernel, as THRML-style calls do, when the devices divide the chains. These
    draw other random numbers than the pairwise kernels (the same distribution; a chain's samples
    still depend on its key words alone, whatever the number of chains or devices). J and h are
    arguments of the compiled run, so a temperature scan compiles once.

    Categorical states ≥ K raise StateError before compiling when the states are on the host (numpy,
    CPU devices); states on GPUs are checked inside the compiled call, which raises a JAX runtime
    error with the same message.
    """
    check_method(method)  # before any path is chosen, so a bad method fails for every program
    reason = supports_batched(program)
    if reason is not None:
        raise HeatbathError(f"sample_states_batched cannot run this program: {reason}. Use sample_states instead.")
    if len(init_state_free) != len(program.gibbs_spec.free_blocks):
        raise StateError(f"Give one initial state per free block ({len(program.gibbs_spec.free_blocks)}).")
    if len(state_clamp) != len(program.gibbs_spec.clamped_blocks):
        raise StateError(f"Give one clamped state per clamped block ({len(program.gibbs_spec.clamped_blocks)}).")
    chains = int(jnp.shape(init_state_free[0])[0]) if jnp.ndim(init_state_free[0]) == 2 else -1
    if chains < 1:
        raise StateError("Initial states must have shape (chains, nodes) with at least one chain.")
    _check_host_categories(program, list(init_state_free) + list(state_clamp))
    if pairwise_kind(program)[0] is not None:
        observed = [_observed_ids(program.gibbs_spec, block) for block in nodes_to_sample]
        devices = None if devices is None else tuple(devices)
        tables = pairwise_tables(program)
        # Concrete weights can be read now, not inside the compiled call: a uniform Ising torus for the
        # lattice kernel, Potts forms for the GPU kernel, without one J as a constant (a temperature
        # scan would compile again for every J).
        route = _torus_route(program, tables, observed, chains, devices) if method == "auto" else None
        if route is not None:
            torus, index, backend, split = route
            # The states are checked here, so the compiled call takes arrays only (a program through
            # `eqx.filter_jit` cost 1 ms a call to flatten); J and h travel with the arguments.
            block_states = chain_block_states(program, list(init_state_free), list(state_clamp), chains)
            return _run_torus(key, block_states, index, *torus_weights(torus), L=torus.L, q=getattr(torus, "q", None),
                              schedule=schedule, backend=backend, devices=split)
        forms = call_forms(program, tables, jax.devices() if devices is None else devices, keep_j=False)
        dtypes = None  # spin programs' samples are bools already; categorical ones take their blocks' dtypes
        if tables.kind == "categorical":  # one node of each sampled block (no Block() copy of a large one)
            firsts = [(b.nodes if isinstance(b, Block) else tuple(b))[:1] for b in nodes_to_sample]
            dtypes = observed_dtypes_of(program, [program.gibbs_spec.node_ids(f)[0] if f else None for f in firsts])
        return _run_pairwise(key, program, schedule, list(init_state_free), list(state_clamp), observed, devices, method,
                             forms, dtypes)
    block_states = chain_block_states(program, list(init_state_free), list(state_clamp), chains)
    global_state = _batched_global(program, block_states)
    return _run(key, program, schedule, global_state, [Block(block) for block in nodes_to_sample])


def _check_host_categories(program: BlockSamplingProgram, states: list) -> None:
    """Raise StateError before compiling if a categorical state held on the host (numpy, or jax arrays
    on CPU devices) is out of range. States on GPUs, or traced, are checked inside the compiled call
    instead, where the error arrives as a JAX runtime error with the same message: reading them here
    would copy every chain's state to the host on every call."""
    on_host = [not isinstance(x, jax.core.Tracer) and (not isinstance(x, jax.Array)
                                                      or all(d.platform == "cpu" for d in x.devices())) for x in states]
    if all(on_host) and all(np.dtype(getattr(x, "dtype", np.int64)).kind in "ub" for x in states):
        check_concrete_categories(program, states)  # (other dtypes get the dtype check's error first)


_OBSERVED: IdentityCache[Array] = IdentityCache(64)


_OBSERVED_BY_NODES: IdentityCache[Array] = IdentityCache(16)  # keyed by the node tuple's contents


def _observed_ids(spec, block) -> Array:
    """Spec-wide ids of a sampled block's nodes, on device, remembered per (spec, block) so that a loop
    calling `sample_states_batched` with the same blocks does not look up 10^6 nodes every call; and
    per (spec, nodes), so that a loop that builds `[Block(nodes)]` anew for every call gets them (and
    the lattice routes' index arrays, remembered per ids array) by one hash of the node tuple (0.4 ms
    for 65,536 nodes) instead of a lookup per node (about 7 ms a call on an H200 host, measured)."""
    nodes = block.nodes if isinstance(block, Block) else tuple(block)

    def by_nodes():
        return _OBSERVED_BY_NODES.get((spec,), lambda: jnp.asarray(spec.node_ids(nodes, "sampled node"), jnp.int32),
                                      extra=nodes)

    return _OBSERVED.get((spec, nodes), by_nodes)


_TORUS_INDEX: IdentityCache[TorusIndex] = IdentityCache(4)  # 4 MB each at L = 1024, on device


def _torus_route(program, tables, observed, chains: int, devices) -> tuple | None:
    """(torus, index, backend, devices to split over) when the call runs a lattice kernel: a uniform
    Ising or Potts torus (`potts_torus.torus_model`) on CUDA GPUs whose number divides the chains;
    else None."""
    backend = torus_backend(devices)
    if backend is None:
        return None
    if devices is not None and chains % len(devices):
        return None  # the lattice kernel splits whole chains; the pairwise kernels pad instead
    torus = torus_model(program, tables)
    if torus is None:
        return None
    index = _TORUS_INDEX.get((torus.sites, *observed), lambda: torus_index(torus, [np.asarray(x) for x in observed]))
    return torus, index, backend, lattice_devices(chains, devices)


def torus_weights(torus) -> tuple[Array, Array]:
    """A recognised torus' J and h (an Ising or Potts torus) as float32 device arrays, for the lattice
    runs that take them as arguments."""
    return _device_weights(float(torus.J), np.shape(torus.h), tuple(np.ravel(torus.h).tolist()))


@functools.lru_cache(maxsize=64)
def _device_weights(J: float, h_shape: tuple, h_values: tuple) -> tuple[Array, Array]:
    """A lattice route's J and h as float32 device arrays, made once per value: numpy scalars were
    copied to the GPU on every call (0.12 ms of a 1.15 ms call with 64 lattices of 256² on an H200)."""
    return jnp.asarray(J, jnp.float32), jnp.asarray(np.reshape(np.asarray(h_values, np.float32), h_shape))


@partial(jax.jit, static_argnames=("L", "q", "schedule", "backend", "devices"))
def _run_torus(key, block_states, index, J, h, *, L: int, q: int | None, schedule, backend: str, devices: tuple):
    """Key to samples on a lattice kernel (the Ising torus' when q is None, else the Potts torus') in one
    compiled call; J and h traced, so a temperature scan compiles once."""
    words = chain_words_from_key(key, block_states[0].shape[0])
    options = dict(L=L, schedule=schedule, backend=backend, devices=devices)
    if q is None:
        return run_torus_chains(words, block_states, index, J, h, **options)
    return run_potts_torus_chains(words, block_states, index, J, h, q=q, **options)


def _run_pairwise(key, program, schedule, init_state_free, state_clamp, observed, devices, method: str, forms, dtypes):
    """Key to samples in one compiled call (eager set-up cost 10-25 ms a call, measured), found by
    the program's structure (`program_structure`): a new program of the same structure, as in
    training, compiles nothing new. (`eqx.filter_jit` flattened and hashed the whole program on every
    call, about 0.3 ms a call on an H200, a tenth of a 1,000-chain P(14) call.)"""
    structure, arrays = split_program(program)
    try:
        call = _pairwise_call(structure, schedule, devices, method, forms, dtypes)
    except TypeError:  # an unhashable non-array leaf: no cache key, so equinox's jit
        return _filter_jit_pairwise(key, program, schedule, init_state_free, state_clamp, observed, devices, method, forms,
                                    dtypes)
    return call(key, arrays, init_state_free, state_clamp, observed, _laid_out_weights(program, structure, arrays))


_PARAMS: IdentityCache[list] = IdentityCache(8)


def _laid_out_weights(program, structure: ProgramStructure, arrays: list) -> list | None:
    """Every free block's weights as the sweeps read them (`pairwise_sweep.all_sweep_params`), made by
    a compiled call of their own once per program whose weights are concrete jax Arrays (immutable),
    and remembered while it lives; None (made inside the sampling call, every call) otherwise. A
    THRML-style call gets this for free (XLA lays out constant weights when it compiles); without it a
    categorical RBM of 784 x 500 4-state nodes spent 23 ms a call on the 2-core VM re-laying them."""
    if not immutable_arrays(arrays):
        return None
    return _PARAMS.get((program,), lambda: _lay_out(structure)(arrays))


@functools.lru_cache(maxsize=32)
def _lay_out(structure: ProgramStructure):
    def lay_out(arrays):
        program = join_program(structure, arrays)
        return all_sweep_params(program, pairwise_tables(program))

    return jax.jit(lay_out)


@functools.lru_cache(maxsize=32)
def _pairwise_call(structure: ProgramStructure, schedule, devices, method: str, forms, dtypes):
    """The jitted key-to-samples call for programs of one `structure` (`program_structure`)."""

    def call(key, arrays, init_state_free, state_clamp, observed, params):
        program = join_program(structure, arrays)
        return _pairwise_body(key, program, schedule, init_state_free, state_clamp, observed, devices, method, forms, dtypes,
                              params)

    return jax.jit(call)


def _pairwise_body(key, program, schedule, init_state_free, state_clamp, observed, devices, method: str, forms, dtypes,
                   params=None):
    chains = init_state_free[0].shape[0]
    block_states = chain_block_states(program, init_state_free, state_clamp, chains)
    words = chain_words_from_key(key, chains)
    return run_pairwise(program, schedule, words, block_states, observed, devices, method, forms=forms, observed_dtypes=dtypes,
                        params=params)


_filter_jit_pairwise = eqx.filter_jit(_pairwise_body)


def _observe(global_state, where):
    return [global_state[sd][pos].T for sd, pos in where]  # [chains, len(block)]


@eqx.filter_jit
def _run(key, program, schedule, global_state, nodes_to_sample):
    """The whole schedule, compiled once per (program structure, schedule, chain count)."""
    words = key_words(key)
    where = [node_positions(block, program.gibbs_spec) for block in nodes_to_sample]

    def sweeps(g, start, count):
        def body(i, g):
            return _sweep(program, g, words, start + i.astype(jnp.uint32))

        return jax.lax.fori_loop(0, count, body, g) if count else g

    g = sweeps(global_state, jnp.uint32(0), schedule.n_warmup)
    first = _observe(g, where)

    def body(g, i):
        start = jnp.uint32(schedule.n_warmup) + i * jnp.uint32(schedule.steps_per_sample)
        g = sweeps(g, start, schedule.steps_per_sample)
        return g, _observe(g, where)

    _, rest = jax.lax.scan(body, g, jnp.arange(schedule.n_samples - 1, dtype=jnp.uint32))
    return [jnp.concatenate([f[:, None], jnp.moveaxis(r, 0, 1)], axis=1) for f, r in zip(first, rest)]
