"""Values worked out from particular objects, remembered while those very objects are alive.

Several costs of a call depend only on objects a user hands in again and again: the neighbour tables
of a program's structure, the lattice layout of a torus, what concrete weights show (Potts forms, a
uniform Ising torus), the ids of a sampled block. A loop that calls `sample_states_batched` or an
eager `sample_states` with one program should pay them once. Keys are the objects' identities, so
nothing needs to be hashable, and a hit is confirmed by identity (an id can be reused once its object
is gone): objects that take weak references (jax and numpy arrays, most classes) are held weakly, and
an entry is dropped as soon as one of them is collected, so neither its key objects nor its value
(which may hold the dead object's arrays) keep memory alive; others (tuples) are held, which keeps
their ids unique.
"""

from __future__ import annotations

import weakref
from typing import Callable, Generic, Hashable, Sequence, TypeVar

import jax

from heatbath.validation import is_concrete

__all__ = ["IdentityCache", "immutable_arrays"]

V = TypeVar("V")


def _reference(x: object, on_death: Callable[[object], None]) -> Callable[[], object]:
    try:
        return weakref.ref(x, on_death)
    except TypeError:  # no weak references (tuples, ints): hold it
        return lambda: x


class IdentityCache(Generic[V]):
    """At most `size` values, each keyed by the identities of the objects it was worked out from
    (plus an optional hashable `extra`); the oldest entry goes first when full."""

    def __init__(self, size: int):
        self.size = size
        self._entries: dict[tuple, tuple[list[Callable[[], object]], V, object]] = {}

    def get(self, held: Sequence[object], compute: Callable[[], V], extra: Hashable = None,
            remember: Callable[[V], bool] | None = None) -> V:
        """The value remembered for exactly these objects (and `extra`), else `compute()`, remembered
        unless `remember(value)` says not (a value holding tracers must not outlive its trace)."""
        key = (extra, *map(id, held))
        hit = self._entries.get(key)
        if hit is not None and all(ref() is x for ref, x in zip(hit[0], held)):
            return hit[1]
        value = compute()
        self._entries.pop(key, None)
        if remember is not None and not remember(value):
            return value
        while len(self._entries) >= self.size:
            self._entries.pop(next(iter(self._entries)))
        token = object()  # marks this entry; the callbacks hold it, not the entry (no reference cycle)
        cache = weakref.ref(self)  # nor the cache

        def drop(_dead) -> None:  # one of the held objects was collected: its entry can never hit again
            live = cache()
            if live is not None and live._entries.get(key, (None, None, None))[2] is token:
                del live._entries[key]

        self._entries[key] = ([_reference(x, drop) for x in held], value, token)
        return value

    def read(self, owner: object, arrays: Sequence[object], compute: Callable[[], V]) -> V:
        """`compute()`, which reads what the concrete `arrays` show (e.g. a copy from the GPU),
        remembered per (owner, arrays) when they are all jax Arrays (`immutable_arrays`); read afresh
        on every call otherwise, since numpy arrays can change in place."""
        if not immutable_arrays(arrays):
            return compute()
        return self.get((owner, *arrays), compute)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def immutable_arrays(arrays: Sequence[object]) -> bool:
    """Whether every one of `arrays` is a concrete jax Array: those cannot change, so what they show
    can be remembered per identity. numpy arrays can change in place and must be read every time."""
    return all(isinstance(x, jax.Array) and is_concrete(x) for x in arrays)
