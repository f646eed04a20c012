"""Route THRML-style calls to the fast kernels without changing a line of user code.

`sample_states` runs one chain. Users batch it the THRML way, `jax.jit(jax.vmap(lambda k:
sample_states(k, ...)))(keys)`, and plain `vmap` would then add the chain axis in front of every
array of the generic path. For programs the pairwise spin kernel supports, `sample_states` instead
calls a `jax.custom_batching.custom_vmap` function: run alone it is the kernel with one chain, and
under `vmap` its rule runs the kernel once with every chain as the contiguous axis. Each chain is
driven by its own key, exactly as the unbatched call would be, so batching changes the speed and
nothing else. Batching over the model itself (vmapped weights) falls back to the generic path.

Concrete weights (a closed-over program) are read once, while the call is traced: on CUDA GPUs a
program that is the uniform Ising model on an L × L torus (`ising_torus`) runs the one-bit multispin
lattice kernel (`torus_run`), one that is the uniform Potts model on a torus (`potts_torus`) the Potts
lattice kernel, and other categorical blocks with Potts couplings tell the categorical kernel so
(`coupling_structure`).

Eager calls (no `jit` around them, as THRML's documentation often makes them) run compiled calls
kept per program structure instead of op by op: the kernels' one-chain call, a torus route's, and
for programs that no kernel runs the generic loop of `sample_states` and `sample_with_observation`,
alone or under an eager `jax.vmap` (`eager_generic_call`, `eager_observation_call`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from heatbath.block_management import Block
from heatbath.block_sampling import BlockSamplingProgram, SamplingSchedule
from heatbath.kernels.batched import chain_block_states, torus_weights
from heatbath.kernels.counter_rng import key_words
from heatbath.kernels.pairwise_sweep import check_concrete_categories, run_pairwise
from heatbath.kernels.coupling_structure import call_forms, inside_jit
from heatbath.kernels.pairwise_tables import pairwise_kind, pairwise_tables
from heatbath.kernels.program_structure import join_program, remembered, split_program
from heatbath.kernels.ising_torus import IsingTorus
from heatbath.kernels.potts_torus import run_potts_torus, torus_model
from heatbath.kernels.multispin_run import lattice_devices
from heatbath.kernels.torus_run import run_ising_torus, torus_backend, torus_index

__all__ = ["fast_sample_states", "eager_generic_call", "eager_observation_call"]


def fast_sample_states(
    program: BlockSamplingProgram,
    schedule: SamplingSchedule,
    nodes_to_sample: Sequence[Block],
    generic: Callable,
) -> Callable | None:
    """A `(key, init_state_free, state_clamp) -> samples` function on the fast kernel, or None when
    no kernel supports `program` (then the caller runs the generic path, `generic`)."""
    if schedule.n_samples < 1 or pairwise_kind(program)[0] is None:
        return None
    spec = program.gibbs_spec
    observed = [spec.node_ids(Block(block).nodes, "sampled node") for block in nodes_to_sample]
    structure, arrays = split_program(program)  # the arrays enter `one_chain` as arguments
    # What concrete weights tell (a closed-over program), read now: inside `one_chain` they are traced.
    # (One J as a constant only under jit: an eager call's compiled sweep is reused for new weights.)
    tables, backend = pairwise_tables(program), torus_backend()
    torus = torus_model(program, tables) if backend else None
    forms = call_forms(program, tables, jax.devices(), keep_j=inside_jit())
    # The torus' index arrays enter `one_chain` as arguments, like the weights: arrays made inside its
    # batching rule became constants that a second execution on an H200 did not pass ("Execution
    # supplied 3 arguments but compiled program expected 8").
    index = torus_index(torus, observed) if torus is not None else None

    def kernel(words, free, clamp, inputs, chains):
        arrays, index = inputs
        if torus is None:
            return _pairwise_samples(structure, arrays, schedule, words, free, clamp, chains, observed, forms)
        return _torus_samples(torus, structure, arrays, index, schedule, backend, words, free, clamp, chains)

    @jax.custom_batching.custom_vmap
    def one_chain(key, free, clamp, inputs):
        return _one_chain(lambda words, f, c: kernel(words, f, c, inputs, 1), key, free, clamp)

    @one_chain.def_vmap
    def many_chains(axis_size, in_batched, key, free, clamp, inputs):
        key_b, free_b, clamp_b, (arrays_b, _) = in_batched  # the index is made here, never batched
        if any(jax.tree.leaves(arrays_b)):  # a batch of models: not one kernel call
            axes = jax.tree.map(lambda b: 0 if b else None, tuple(in_batched[:3]) + (arrays_b,))
            out = jax.vmap(lambda k, f, c, a: generic(k, join_program(structure, a), f, c), in_axes=axes)(
                key, free, clamp, inputs[0]
            )
            return out, [True] * len(out)
        words = jax.vmap(key_words_of)(key) if key_b else jnp.broadcast_to(key_words_of(key), (axis_size, 2))
        free = [x if b else jnp.broadcast_to(x, (axis_size,) + x.shape) for x, b in zip(free, free_b)]
        clamp = [x if b else jnp.broadcast_to(x, (axis_size,) + x.shape) for x, b in zip(clamp, clamp_b)]
        return kernel(words, free, clamp, inputs, axis_size), [True] * len(observed)

    # An eager call (concrete key, states and weights, no trace around it) runs one compiled call
    # found by the program's structure instead of `one_chain` op by op
    # (15-24 ms a call on a CPU; 6-9 ms for a 64² or 128² torus on an H200).
    eager = not inside_jit()

    def run(key, init_state_free, state_clamp):
        free, clamp = list(init_state_free), list(state_clamp)
        concrete = not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((key, free, clamp, arrays)))
        call = None
        if eager and concrete:
            call = (_eager_call(structure, schedule, observed, forms) if torus is None
                    else _eager_torus_call(torus, structure, schedule, observed, backend))
        if call is None:
            return one_chain(key, free, clamp, (arrays, index))
        if tables.kind == "categorical":
            check_concrete_categories(program, free + clamp)
        if torus is None:
            return call(key, free, clamp, arrays)
        return call(key, free, clamp, arrays, index, *torus_weights(torus))

    return run


def _eager_call(structure, schedule: SamplingSchedule, observed: list[np.ndarray], forms) -> Callable | None:
    """The compiled one-chain call `(key, free, clamp, arrays) -> samples` for programs of `structure`
    (`program_structure`) on the default devices, or None where the structure cannot be hashed."""
    try:
        return _one_chain_call(structure, schedule, _ids_key(observed), forms, tuple(jax.devices()))
    except TypeError:  # an unhashable non-array leaf
        return None


def _ids_key(observed: Sequence[np.ndarray]) -> tuple[bytes, ...]:
    """The sampled blocks' node ids as part of a cache key: as bytes, a cheaper key than their values
    (4,264 of them for P(14))."""
    return tuple(ids.astype(np.int64).tobytes() for ids in observed)


@functools.lru_cache(maxsize=32)
def _one_chain_call(structure, schedule: SamplingSchedule, observed: tuple, forms, devices) -> Callable:
    """`jax.jit` of one chain's pairwise-kernel run (`_one_chain`) for programs of `structure`,
    remembered per call key."""
    observed = [np.frombuffer(ids, np.int64) for ids in observed]

    def call(key, free, clamp, arrays):
        return _one_chain(lambda words, free, clamp: _pairwise_samples(
            structure, arrays, schedule, words, free, clamp, 1, observed, forms, devices), key, free, clamp)

    return jax.jit(call)


EAGER_CALLS_KEPT = 32  # compiled eager calls kept per kind (torus routes, generic loops), oldest dropped first
_TORUS_CALLS: dict[tuple, Callable] = {}


def _eager_torus_call(torus, structure, schedule: SamplingSchedule, observed: list[np.ndarray], backend: str):
    """The compiled one-chain call `(key, free, clamp, arrays, index, J, h) -> samples` of a torus
    route for programs of `structure`, or None where the structure cannot be hashed. J and h are
    arguments (`batched.torus_weights`), so an eager temperature scan, or a model rebuilt with new
    weights, compiles once; the torus' sites follow from the structure, and its index arrays are
    arguments too."""
    key = (type(torus).__name__, torus.L, getattr(torus, "q", None), structure, schedule,
           _ids_key(observed), backend, tuple(jax.devices()))

    def one(key, free, clamp, arrays, index, J, h):
        traced = dataclasses.replace(torus, J=J, h=h)
        return _one_chain(lambda words, f, c: _torus_samples(traced, structure, arrays, index, schedule, backend,
                                                             words, f, c, 1), key, free, clamp)

    return _remembered(_TORUS_CALLS, key, lambda: jax.jit(one))


def _remembered(cache: dict, key, make: Callable):
    """`program_structure.remembered` with EAGER_CALLS_KEPT entries."""
    return remembered(cache, key, make, EAGER_CALLS_KEPT)


_GENERIC_CALLS: dict[tuple, tuple] = {}


def eager_generic_call(program: BlockSamplingProgram, schedule: SamplingSchedule, nodes_to_sample: Sequence[Block],
                       generic: Callable, key, free: list, clamp: list) -> Callable | None:
    """For an eager `sample_states` call of a program no kernel runs (continuous, mixed, higher-order
    or user-defined conditionals), alone or under an eager `jax.vmap` (THRML's documentation calls
    both): the generic loop `generic(key, program, schedule, free, clamp, blocks)` as one compiled
    call kept per program structure, schedule and sampled nodes, so a loop of such calls, or of calls
    with new weights of the same structure, compiles once. Run op by op, one call for THRML's 5 × 5
    Gaussian took 0.6 s on a CPU and an eager vmap of 10 chains 2.2 s, nearly all of it compiling
    the sweep loop again. Returns a function of nothing that runs the call, or None inside `jit` or a
    transformation other than one eager `vmap` (a gradient, say), or where the structure cannot be
    hashed: the caller then runs `generic` itself."""
    spec = program.gibbs_spec
    observed = _ids_key([spec.node_ids(Block(b).nodes, "sampled node") for b in nodes_to_sample])
    blocks = list(nodes_to_sample)
    return _eager_compiled(program, key, free, clamp, (), ("states", schedule, observed),
                           lambda k, p, f, c, _: generic(k, p, schedule, f, c, blocks))


def eager_observation_call(program: BlockSamplingProgram, schedule: SamplingSchedule, generic: Callable, key,
                           free: list, clamp: list, carry_init, f_observe) -> Callable | None:
    """`eager_generic_call` for `sample_with_observation`: `generic(key, program, schedule, free, clamp,
    carry_init, f_observe)` compiled once per program structure, schedule and observer structure. An
    observer holding a leaf that cannot be hashed is known by identity instead: the same object reuses
    the compiled call, and the cache keeps it alive so that its id is not reused."""
    observer, observer_arrays = split_program(f_observe)
    try:
        hash(observer)
        which, keep = observer, ()
    except TypeError:
        which, keep = ("object", id(f_observe)), (f_observe,)
    return _eager_compiled(program, key, free, clamp, (carry_init, observer_arrays), ("observe", schedule, which),
                           lambda k, p, f, c, extras: generic(k, p, schedule, f, c, extras[0],
                                                              join_program(observer, extras[1])), keep)


def _eager_compiled(program: BlockSamplingProgram, key, free: list, clamp: list, extras, call_key: tuple,
                    run: Callable, keep: tuple = ()) -> Callable | None:
    """The shared part of the two above: `run(key, program, free, clamp, extras)` compiled once per
    (program structure, `call_key`), alone or under one eager vmap; `keep` stays alive with it."""
    if inside_jit():
        return None
    structure, arrays = split_program(program)
    tracers = [x for x in jax.tree.leaves((key, free, clamp, extras, arrays)) if isinstance(x, jax.core.Tracer)]
    if not all(_eagerly_batched(x) for x in tracers):
        return None
    calls = _remembered(_GENERIC_CALLS, (structure, call_key, tuple(jax.devices())),
                        lambda: (*_generic_calls(structure, run), keep))
    if calls is None:
        return None
    if tracers:
        return lambda: calls[1](key, free, clamp, extras, arrays)
    if all(isinstance(x, (jax.Array, np.ndarray)) for x in free + clamp):  # (pytree states hold no categories)
        check_concrete_categories(program, free + clamp)  # a StateError now, not a runtime error
    return lambda: calls[0](key, free, clamp, extras, arrays)


def _eagerly_batched(x) -> bool:
    """Whether tracer x is only `jax.vmap`'s, over a concrete value (an eager vmap, no jit or grad)."""
    try:
        from jax._src.interpreters.batching import BatchTracer
    except ImportError:  # another JAX layout: take the generic loop
        return False
    return isinstance(x, BatchTracer) and not isinstance(x.val, jax.core.Tracer)


def _generic_calls(structure, run: Callable) -> tuple[Callable, Callable]:
    """(one chain's compiled call, a `custom_vmap` function whose batching rule runs a compiled
    `vmap` of it), both `(key, free, clamp, extras, arrays) -> run's result`."""

    def one(key, free, clamp, extras, arrays):
        return run(key, join_program(structure, arrays), free, clamp, extras)

    compiled = jax.jit(one)
    vmapped: dict[tuple, Callable] = {}  # compiled vmaps, per pattern of batched arguments

    @jax.custom_batching.custom_vmap
    def batchable(key, free, clamp, extras, arrays):  # traced on every call: through `compiled`, whose trace is kept
        return compiled(key, free, clamp, extras, arrays)

    @batchable.def_vmap
    def many(axis_size, in_batched, key, free, clamp, extras, arrays):
        axes = jax.tree.map(lambda b: 0 if b else None, tuple(in_batched))
        pattern = tuple(jax.tree.leaves(in_batched))
        if pattern not in vmapped:
            vmapped[pattern] = jax.jit(jax.vmap(compiled, in_axes=axes))  # batches its kept trace
        out = vmapped[pattern](key, free, clamp, extras, arrays)
        return out, jax.tree.map(lambda _: True, out)

    return compiled, batchable


def _torus_samples(torus, structure, arrays, index, schedule, backend: str, words, free, clamp, chains: int):
    """The lattice kernel's samples of `chains` chains of a recognised Ising or Potts torus."""
    states = chain_block_states(join_program(structure, arrays), free, clamp, chains)
    run = run_ising_torus if isinstance(torus, IsingTorus) else run_potts_torus
    return run(torus, schedule, words, states, index, backend, lattice_devices(chains))


def _pairwise_samples(structure, arrays, schedule, words, free, clamp, chains: int, observed, forms, devices=None):
    """The pairwise kernels' samples of `chains` chains of the program of `structure` holding `arrays`."""
    program = join_program(structure, arrays)
    states = chain_block_states(program, free, clamp, chains)
    return run_pairwise(program, schedule, words, states, observed, devices, forms=forms)


def _one_chain(run_chains: Callable, key, free, clamp) -> list:
    """One chain's samples through `run_chains(words [1, 2], free, clamp)`, which runs a batch of chains
    on its leading axis: the chain is driven by its key's own words, exactly as under `jax.vmap`."""
    out = run_chains(key_words_of(key)[None], [x[None] for x in free], [x[None] for x in clamp])
    return [o[0] for o in out]


def key_words_of(key) -> jax.Array:
    """The two key words `[2]` of one JAX key (typed or raw)."""
    return jnp.stack(key_words(key))
