"""Nodes: the random variables of a probabilistic graphical model.

A node carries no state; it is an identity. Two nodes are the same variable only if they are the
same Python object, so nodes hash and compare by identity. A node may carry a human-readable
`name` (lattice builders set it to the node's coordinates) that error messages use to say which
variable is at fault.
"""

from __future__ import annotations

from typing import Hashable

__all__ = ["AbstractNode", "SpinNode", "CategoricalNode", "ContinuousNode", "describe_node"]


class AbstractNode:
    """A random variable in a PGM.

    Subclass it to introduce a new kind of variable (for example `class ContinuousNode(AbstractNode):
    pass`); every node type used in a program must be given a shape and dtype through
    `node_shape_dtypes`.
    """

    __slots__ = ("name", "__weakref__")

    def __init__(self, name: Hashable | None = None):
        self.name = name

    # Identity semantics, stated explicitly so that subclasses (e.g. dataclasses) keep them.
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        label = "" if self.name is None else repr(self.name)
        return f"{type(self).__name__}({label})"

    def __reduce__(self):
        raise TypeError(
            "heatbath nodes are identities and cannot be pickled; save models with "
            "heatbath's array-based formats instead."
        )


class SpinNode(AbstractNode):
    """A variable taking values in {-1, +1}; stored as `bool` (True means +1) by default."""

    __slots__ = ()


class CategoricalNode(AbstractNode):
    """A variable taking one of K values, stored as an unsigned integer in [0, K).

    `num_states` is optional; when given, sampling programs check it against the model's weights.
    """

    __slots__ = ("num_states",)

    def __init__(self, name: Hashable | None = None, *, num_states: int | None = None):
        super().__init__(name)
        if num_states is not None and (int(num_states) != num_states or num_states < 1):
            raise ValueError(f"CategoricalNode num_states must be a positive integer, got {num_states!r}.")
        self.num_states = None if num_states is None else int(num_states)


class ContinuousNode(AbstractNode):
    """A real-valued variable, stored as a float32 scalar by default (Gaussian and Metropolis samplers)."""

    __slots__ = ()


def describe_node(node: AbstractNode, index: int | None = None) -> str:
    """A short description of a node for error messages: its repr and, if known, its position."""
    where = "" if index is None else f" (node #{index})"
    return f"{node!r}{where}"
