"""`IdentityCache`: values remembered per identity of the objects they came from, never for look-alikes."""

from __future__ import annotations

import gc
import weakref

import jax.numpy as jnp
import numpy as np

from heatbath.kernels.identity_cache import IdentityCache, immutable_arrays


def test_hits_only_for_the_very_same_objects():
    cache, calls = IdentityCache(4), []
    a, b = np.zeros(3), np.zeros(3)  # equal, not identical
    compute = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert cache.get((a,), compute) == 1
    assert cache.get((a,), compute) == 1
    assert cache.get((b,), compute) == 2
    assert cache.get((a,), compute, extra="other") == 3  # `extra` is part of the key
    nodes = (1, 2, 3)  # no weak references: held, so its id stays unique
    assert cache.get((nodes,), compute) == 4 and cache.get((nodes,), compute) == 4


def test_dead_objects_never_hit_and_are_not_kept_alive():
    cache = IdentityCache(4)
    x = np.arange(4)
    cache.get((x,), lambda: "x")
    alive = weakref.ref(x)
    del x
    gc.collect()
    assert alive() is None  # the entry did not keep the array alive
    for _ in range(20):  # new arrays, some reusing the dead one's id: none may hit its entry
        assert cache.get((np.arange(4),), lambda: "new") == "new"


def test_oldest_entry_goes_first():
    cache = IdentityCache(2)
    objs = [np.zeros(1) for _ in range(3)]
    for i, o in enumerate(objs):
        cache.get((o,), lambda i=i: i)
    assert len(cache) == 2
    assert cache.get((objs[0],), lambda: "again") == "again"  # evicted
    assert cache.get((objs[2],), lambda: "again") == 2


def test_only_concrete_jax_arrays_count_as_immutable():
    assert immutable_arrays([jnp.zeros(2), jnp.ones(())])
    assert not immutable_arrays([jnp.zeros(2), np.zeros(2)])


def test_read_remembers_jax_arrays_only():
    cache, reads = IdentityCache(4), []
    owner = np.zeros(1)
    for arrays in ([jnp.ones(2)], [np.ones(2)]):
        for _ in range(2):
            cache.read(owner, arrays, lambda: reads.append(1) or len(reads))
    assert len(reads) == 3  # jax arrays once, numpy arrays (mutable) on every call


def test_an_entry_goes_with_its_object_and_frees_its_value():
    cache = IdentityCache(4)
    x, value = np.arange(4), np.ones(1000)
    cache.get((x,), lambda: value)
    freed = weakref.ref(value)
    del x, value
    gc.collect()
    assert len(cache) == 0 and freed() is None  # the value (say, the dead program's arrays) is not kept
    y = np.arange(4)
    cache.get((y,), lambda: "first")
    assert cache.get((y,), lambda: "again") == "first"  # a live object's entry stays


def test_remember_can_refuse_a_value():
    cache, calls = IdentityCache(4), []
    x = np.zeros(1)
    for _ in range(2):
        cache.get((x,), lambda: calls.append(1) or "traced", remember=lambda v: v != "traced")
    assert len(calls) == 2 and len(cache) == 0


def test_program_splits_are_remembered_outside_traces_only():
    import equinox as eqx
    import jax

    from heatbath.kernels.program_structure import _SPLITS, split_program

    class Program(eqx.Module):
        w: jax.Array
        name: str

    program = Program(jnp.ones(3), "a")
    assert split_program(program) is split_program(program)
    assert split_program(Program(jnp.ones(3), "a")) is not split_program(program)  # another object
    held = len(_SPLITS)

    @jax.jit
    def traced(w):
        inner = Program(w, "a")
        first, second = split_program(inner), split_program(inner)
        assert first is not second  # a split holding tracers is never remembered
        return second[1][0]

    traced(jnp.ones(3))
    assert len(_SPLITS) == held
