"""A program split into its structure and its arrays, so compiled calls can be found by structure.

A compiled call that closes over a program's structure (its PyTree definition and non-array leaves)
and takes the program's arrays as arguments serves every program of that structure: a training loop
that replaces the weights compiles nothing new. Looking the call up costs a hash of the structure,
about a microsecond, where `eqx.filter_jit` flattens and hashes the whole program on every call.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax

__all__ = ["ProgramStructure", "split_program", "join_program", "remembered"]

ARRAY = object()  # marks a program leaf that a compiled call takes as an argument

ProgramStructure = tuple[Any, tuple]  # (treedef, non-array leaves with ARRAY in each array's place): hashable


def split_program(program) -> tuple[ProgramStructure, list]:
    """`(structure, arrays)` of `program`; `join_program` puts them back together. The structure is
    hashable when every non-array leaf is (`hash` raises TypeError otherwise)."""
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
