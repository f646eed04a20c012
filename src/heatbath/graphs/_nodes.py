"""Helpers shared by the graph builders: create many nodes and pick many items, at C speed.

Creating 10^6 node objects is dominated not by `__init__` but by Python's cyclic garbage collector,
which the allocations trigger again and again while scanning every live object; pausing it for the
duration of a bulk build makes node creation about five times faster. Picking items by an index array
goes through a numpy object array, so that no Python-level loop runs per item.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Callable, Hashable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
from jaxtyping import Int

from heatbath.pgm import AbstractNode

__all__ = ["paused_gc", "make_nodes", "object_array", "take"]

T = TypeVar("T")


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Switch off the cyclic garbage collector inside the block (restored on exit, even on error)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def make_nodes(node_type: Callable[[Hashable], AbstractNode], names: Iterable[Hashable]) -> list[AbstractNode]:
    """One new node per name, `node_type(name)`, in order.

    `node_type` is a node class (or any callable taking the name) such as `SpinNode`.
    """
    with paused_gc():
        nodes = list(map(node_type, names))
    if nodes and not isinstance(nodes[0], AbstractNode):
        raise TypeError(
            f"node_type must create heatbath nodes (subclasses of AbstractNode), but it returned "
            f"{type(nodes[0]).__name__}. Pass e.g. node_type=SpinNode."
        )
    return nodes


def object_array(items: Sequence[T]) -> np.ndarray:
    """`items` as a 1-D numpy object array (no sequence sniffing of the items), for repeated `take`s."""
    return np.fromiter(items, dtype=object, count=len(items))


def take(items: Sequence[T] | np.ndarray, index: Int[np.ndarray, " k"]) -> list[T]:
    """`[items[i] for i in index]` as a list, without a Python loop per element.

    Goes through an object array (three times faster than `operator.itemgetter` for 10^6 items); pass
    `object_array(items)` when taking from the same long list many times.
    """
    index = np.asarray(index, dtype=np.int64).ravel()
    array = items if isinstance(items, np.ndarray) and items.dtype == object else object_array(items)
    return array[index].tolist()
