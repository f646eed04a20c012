"""A program split into its structure and its arrays, so compiled calls can be found by structure.

A compiled call that closes over a program's structure (its PyTree definition and non-array leaves)
and takes the program's arrays as arguments serves every program of that structure: a training loop
that replaces the weights compiles nothing new. Looking the call up costs a hash of the structure,
about a microsecond, where `eqx.filter_jit` flattens and hashes the whole program on every call.
The split itself is remembered per program object (`IdentityCache`): flattening a labelled RBM's
program took about 60 us a call on the 2-core VM, half of `sample_states_batched`'s own host time.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax

from heatbath.kernels.identity_cache import IdentityCache

__all__ = ["ProgramStructure", "split_program", "join_program", "remembered"]

ARRAY = object()  # marks a program leaf that a compiled call takes as an argument

ProgramStructure = tuple[Any, tuple]  # (treedef, non-array leaves with ARRAY in each array's place): hashable


_SPLITS: IdentityCache[tuple[ProgramStructure, list]] = IdentityCache(16)


def split_program(program) -> tuple[ProgramStructure, list]:
    """`(structure, arrays)` of `program`; `join_program` puts them back together. The structure is
    hashable when every non-array leaf is (`hash` raises TypeError otherwise).

    Remembered while `program` lives, for equinox modules (immutable, unlike other PyTrees a caller
    could change between calls) that hold no tracers: a split made inside a trace must not outlive it."""
    if not isinstance(program, eqx.Module):
        return _split(program)
    return _SPLITS.get((program,), lambda: _split(program), remember=_holds_no_tracer)


def _holds_no_tracer(split: tuple[ProgramStructure, list]) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in split[1])


def _split(program) -> tuple[ProgramStructure, list]:
    leaves, treedef = jax.tree.flatten(program)
    statics = tuple(ARRAY if eqx.is_array(x) else x for x in leaves)
    return (treedef, statics), [x for x, static in zip(leaves, statics) if static is ARRAY]


def join_program(structure: ProgramStructure, arrays):
    """The program of `structure` holding `arrays` (possibly traced) in its array leaves."""
    treedef, statics = structure
    supply = iter(arrays)
    return jax.tree.unflatten(treedef, [next(supply) if x is ARRAY else x for x in statics])


def remembered(cache: dict, key, make: Callable, size: int):
    """`cache[key]`, made by `make()` the first time (the oldest entry dropped past `size` entries),
    or None where the key cannot be hashed (a program with an unhashable non-array leaf)."""
    try:
        value = cache.get(key)
    except TypeError:
        return None
    if value is None:
        value = cache[key] = make()
        while len(cache) > size:
            cache.pop(next(iter(cache)))
    return value
