"""Blocks and the global-state layout.

A *block* is an ordered group of nodes of one type. A *block state* is a list with one PyTree per
block whose leaves have the block's nodes on axis 0. The *global state* stacks every block that
shares a state structure (a PyTree of shapes and dtypes, an "SD") into one PyTree, so that a sampler
can gather any neighbour's state from a handful of flat arrays instead of looping over blocks.
`BlockSpec` owns the mapping between the two representations.
"""

from __future__ import annotations

import itertools
from functools import cached_property
from typing import Any, Generic, Hashable, Iterable, Iterator, Mapping, Sequence, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int, PyTree, Shaped

from heatbath.errors import HeatbathError, StateError
from heatbath.pgm import AbstractNode, CategoricalNode, ContinuousNode, SpinNode

__all__ = [
    "Block",
    "BlockSpec",
    "DEFAULT_NODE_SHAPE_DTYPES",
    "NodeShapeDtypes",
    "FrozenTypeMap",
    "block_state_to_global",
    "from_global_state",
    "get_node_locations",
    "make_empty_block_state",
    "verify_block_state",
    "sd_key",
    "node_positions",
    "take_nodes",
    "lookup_node_sd",
]

NodeT = TypeVar("NodeT", bound=AbstractNode)
_State = PyTree[Shaped[Array, "nodes ?*state"], "State"]
_GlobalState = PyTree[Shaped[Array, "nodes_global ?*state"], "_GlobalState"]



class FrozenTypeMap(Mapping):
    """An immutable, hashable mapping keyed by node types, opaque to JAX (a PyTree leaf).

    Models and programs keep such maps as static metadata: they must hash, and JAX must not try to
    sort their (type) keys as it would for a dict.
    """

    __slots__ = ("_items", "_key")

    def __init__(self, mapping: Mapping = ()):
        self._items = dict(mapping)
        self._key = tuple((k, self._value_key(v)) for k, v in self._items.items())

    @staticmethod
    def _value_key(value) -> Hashable:
        return value

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __or__(self, other: Mapping):
        return type(self)({**self._items, **dict(other)})

    def __ror__(self, other: Mapping):
        return type(self)({**dict(other), **self._items})

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrozenTypeMap) and self._key == other._key

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{getattr(k, '__name__', k)}: {v}" for k, v in self._items.items()) + "}"


class NodeShapeDtypes(FrozenTypeMap):
    """Node type -> state template (a PyTree of `ShapeDtypeStruct`), hashed by the templates' shapes and dtypes."""

    __slots__ = ()

    @staticmethod
    def _value_key(value) -> Hashable:
        return sd_key(value)


class Block(Generic[NodeT]):
    """An ordered group of nodes of a single type, updated (or clamped) together.

    Blocks are static metadata: as a JAX PyTree a block has no leaves, so models and programs that
    hold blocks can be passed through `jit`, `grad` and `vmap` freely.
    """

    __slots__ = ("nodes", "__weakref__")

    def __init__(self, nodes: Iterable[NodeT]):
        if isinstance(nodes, Block):
            self.nodes = nodes.nodes
            return
        nodes = tuple(nodes)
        types = set(map(type, nodes))  # one C-speed pass; the checks below are per type, not per node
        not_nodes = [t for t in types if not issubclass(t, AbstractNode)]
        if not_nodes:
            first = next(n for n in nodes if type(n) is not_nodes[0])
            raise HeatbathError(
                f"Block nodes must be heatbath nodes (subclasses of AbstractNode); got {type(first).__name__} "
                f"{first!r}. Create variables with e.g. SpinNode() or CategoricalNode()."
            )
        if len(types) > 1:
            names = ", ".join(sorted(t.__name__ for t in types))
            raise HeatbathError(
                f"A Block must hold nodes of a single type, but this one mixes {names}. Split it into one "
                "Block per node type; to update them at the same algorithmic time, pass the blocks as a tuple "
                "(a superblock) in BlockGibbsSpec's free blocks."
            )
        self.nodes: tuple[NodeT, ...] = nodes

    @property
    def node_type(self) -> type[AbstractNode] | None:
        """The type of the nodes in this block (None for an empty block)."""
        return type(self.nodes[0]) if self.nodes else None

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[NodeT]:
        return iter(self.nodes)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return Block(self.nodes[item])
        return self.nodes[item]

    def __add__(self, other: "Block") -> "Block":
        return Block(self.nodes + Block(other).nodes)

    def __contains__(self, node: object) -> bool:
        return any(n is node for n in self.nodes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and self.nodes == other.nodes

    def __hash__(self) -> int:
        return hash(self.nodes)

    def __repr__(self) -> str:
        if len(self.nodes) > 6:
            shown = ", ".join(map(repr, self.nodes[:3])) + f", ... ({len(self.nodes)} nodes)"
        else:
            shown = ", ".join(map(repr, self.nodes))
        return f"Block(nodes=({shown}))"


def _rebuilt_block(nodes: tuple, _children) -> Block:
    """A block rebuilt from its PyTree aux data: the nodes tuple of a block that was checked when it
    was made, so it is not checked again. Every tree operation on a program rebuilds all its blocks
    (`tree_map`, `eqx.partition`, a `jit` argument); checking a 30,000-edge block's node types each
    time made one `eqx.partition` of a Pegasus P(14) program take 9 ms."""
    block = object.__new__(Block)
    block.nodes = nodes
    return block


jax.tree_util.register_pytree_node(Block, lambda b: ((), b.nodes), _rebuilt_block)


def sd_key(sd: PyTree[jax.ShapeDtypeStruct]) -> Hashable:
    """A hashable key for a PyTree of `ShapeDtypeStruct`s (two node types with equal keys share storage)."""
    leaves, treedef = jax.tree.flatten(sd)
    return (treedef, tuple((tuple(leaf.shape), np.dtype(leaf.dtype)) for leaf in leaves))


DEFAULT_NODE_SHAPE_DTYPES = NodeShapeDtypes(
    {
        SpinNode: jax.ShapeDtypeStruct((), jnp.bool_),
        CategoricalNode: jax.ShapeDtypeStruct((), jnp.uint8),
        ContinuousNode: jax.ShapeDtypeStruct((), jnp.float32),
    }
)


def lookup_node_sd(node_type: type, node_shape_dtypes: Mapping[type, Any]):
    """The shape/dtype PyTree for a node type, falling back to its base classes; raises a clear error if absent."""
    for cls in node_type.__mro__:
        if cls in node_shape_dtypes:
            return node_shape_dtypes[cls]
    known = ", ".join(t.__name__ for t in node_shape_dtypes) or "none"
    raise HeatbathError(
        f"Node type {node_type.__name__} has no shape/dtype. Pass node_shape_dtypes with an entry for it, e.g. "
        f"{{{node_type.__name__}: jax.ShapeDtypeStruct((), jnp.float32)}} (known types: {known})."
    )


class BlockSpec:
    """The mapping between block states and the global state for a list of blocks.

    **Attributes:**

    - `blocks`: the blocks, in order.
    - `node_shape_dtypes`: node type -> PyTree of `jax.ShapeDtypeStruct`.
    - `node_shape_struct`: the same mapping (kept for THRML compatibility).
    - `all_block_sds`: the state-structure key of each block.
    - `global_sd_order`: the distinct structure keys, in the order of the global state list.
    - `sd_index_map`: structure key -> index in `global_sd_order`.
    - `block_to_global_slice_spec`: for each structure, the indices of the blocks stored in it.
    - `node_global_location_map`: node -> (index into the global list, position inside that entry).
    """

    def __init__(
        self,
        blocks: Sequence[Block],
        node_shape_dtypes: Mapping[type[AbstractNode], PyTree[jax.ShapeDtypeStruct]] = DEFAULT_NODE_SHAPE_DTYPES,
    ):
        blocks = [b if isinstance(b, Block) else Block(b) for b in blocks]
        self.blocks: list[Block] = blocks
        self.node_shape_dtypes = NodeShapeDtypes(node_shape_dtypes)
        self.node_shape_struct = self.node_shape_dtypes
        self.all_block_sds = []
        self._sd_structs = {}
        for i, block in enumerate(blocks):
            if len(block) == 0:
                raise HeatbathError(
                    f"Block {i} is empty. Remove empty blocks from the block list (an empty colour class or an "
                    "empty clamped set should simply be left out)."
                )
            sd = lookup_node_sd(block.node_type, self.node_shape_dtypes)
            key = sd_key(sd)
            self._sd_structs.setdefault(key, sd)
            self.all_block_sds.append(key)
        self.global_sd_order = list(dict.fromkeys(self.all_block_sds))
        self.sd_index_map = {key: i for i, key in enumerate(self.global_sd_order)}
        self.block_to_global_slice_spec = [
            [b for b, key in enumerate(self.all_block_sds) if key == sd] for sd in self.global_sd_order
        ]
        # Offset of each block inside its global entry: blocks of one structure are concatenated in order.
        self.block_sd_index = np.array([self.sd_index_map[k] for k in self.all_block_sds], dtype=np.int64)
        self.block_offsets = np.zeros(len(blocks), dtype=np.int64)
        self.global_sizes = []
        for members in self.block_to_global_slice_spec:
            offset = 0
            for b in members:
                self.block_offsets[b] = offset
                offset += len(blocks[b])
            self.global_sizes.append(offset)
        self._check_unique_nodes()

    # -- node lookup -------------------------------------------------------------------------
    @cached_property
    def all_nodes(self) -> tuple[AbstractNode, ...]:
        """Every node of the spec, blocks concatenated in order."""
        return tuple(itertools.chain.from_iterable(b.nodes for b in self.blocks))

    @cached_property
    def node_index(self) -> dict[AbstractNode, int]:
        """node -> its index in `all_nodes` (the spec-wide node id)."""
        return dict(zip(self.all_nodes, range(len(self.all_nodes))))

    @cached_property
    def _node_block(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.blocks)), [len(b) for b in self.blocks])

    @cached_property
    def node_sd(self) -> np.ndarray:
        """Global-list index of every node id."""
        return self.block_sd_index[self._node_block]

    @cached_property
    def node_position(self) -> np.ndarray:
        """Position inside its global entry of every node id."""
        starts = np.cumsum([0] + [len(b) for b in self.blocks])[:-1]
        within = np.arange(len(self.all_nodes)) - starts[self._node_block]
        return self.block_offsets[self._node_block] + within

    @property
    def node_global_location_map(self) -> dict[AbstractNode, tuple[int, int]]:
        sd, pos = self.node_sd.tolist(), self.node_position.tolist()
        return {node: (sd[i], pos[i]) for node, i in self.node_index.items()}

    def node_ids(self, nodes: Iterable[AbstractNode], what: str = "node") -> np.ndarray:
        """Spec-wide ids of `nodes`; a clear error names the first node that is not in this spec."""
        index = self.node_index
        nodes = tuple(nodes)
        try:
            return np.fromiter(map(index.__getitem__, nodes), dtype=np.int64, count=len(nodes))
        except KeyError as err:
            raise HeatbathError(
                f"{what} {err.args[0]!r} is not in any block of this program. Add it to a free or clamped block."
            ) from None

    def sd_struct(self, sd_index: int):
        return self._sd_structs[self.global_sd_order[sd_index]]

    # -- equality: by content, so that a rebuilt program finds the code compiled for its twin ------
    def _content(self) -> tuple:
        """What the spec is made of: its blocks (each a tuple of node identities) and node templates."""
        return (tuple(self.blocks), self.node_shape_dtypes)

    @cached_property
    def _content_hash(self) -> int:
        return hash((type(self), self._content()))

    def __eq__(self, other: object) -> bool:
        """Specs of the same blocks of the same nodes are equal. A spec is static metadata of every
        program that holds it (a `jit` cache key): comparing by identity made a program rebuilt from
        the same nodes (a training loop that builds its model each step) compile everything again."""
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented
        return self._content_hash == other._content_hash and self._content() == other._content()

    def __hash__(self) -> int:
        return self._content_hash

    def _block_label(self, b: int) -> str:
        return f"block {b}"

    def _check_unique_nodes(self) -> None:
        n_total = sum(len(b) for b in self.blocks)
        if len(self.node_index) != n_total:
            seen: dict[AbstractNode, int] = {}
            for b, block in enumerate(self.blocks):
                for node in block.nodes:
                    if node in seen:
                        first = seen[node]
                        raise HeatbathError(
                            f"Node {node!r} appears in {self._block_label(first)} and again in {self._block_label(b)}"
                            + (" (twice in the same block)" if first == b else "")
                            + ". Every node may belong to exactly one block; a node cannot be both free and clamped."
                        )
                    seen[node] = b


def _block_sd(spec: BlockSpec, block_index: int):
    return spec.sd_struct(int(spec.block_sd_index[block_index]))


def block_state_to_global(block_state: list[_State], spec: BlockSpec) -> list[_GlobalState]:
    """Concatenate a block state (one entry per `spec.blocks`) into the global state (one entry per structure)."""
    if len(block_state) != len(spec.blocks):
        raise StateError(
            f"Expected a block state with {len(spec.blocks)} entries (one per block), got {len(block_state)}."
        )
    out = []
    for members in spec.block_to_global_slice_spec:
        parts = [block_state[b] for b in members]
        out.append(jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=0), *parts))
    return out


def node_positions(nodes: Block, spec: BlockSpec) -> tuple[int, np.ndarray]:
    """Like `get_node_locations`, but the positions stay a static numpy array (for use while tracing)."""
    ids = spec.node_ids(nodes.nodes if isinstance(nodes, Block) else nodes)
    if ids.size == 0:
        raise HeatbathError("Cannot locate an empty block of nodes.")
    sds = spec.node_sd[ids]
    if np.any(sds != sds[0]):
        raise HeatbathError("All nodes passed to get_node_locations must share one state structure (node type).")
    return int(sds[0]), spec.node_position[ids]


def get_node_locations(nodes: Block, spec: BlockSpec) -> tuple[int, Int[Array, " nodes"]]:
    """Where a block of nodes lives in the global state: `(index into the global list, positions)`."""
    sd, pos = node_positions(nodes, spec)
    return sd, jnp.asarray(pos)


def take_nodes(leaf: Array, positions: np.ndarray) -> Array:
    """`leaf[positions]` along axis 0, as a static slice when the positions are contiguous."""
    n = positions.size
    if n and positions[-1] - positions[0] == n - 1 and np.all(np.diff(positions) == 1):
        start = int(positions[0])
        return jax.lax.slice_in_dim(leaf, start, start + n, axis=0)
    return jnp.take(leaf, jnp.asarray(positions), axis=0)


def from_global_state(
    global_state: list[_GlobalState], spec_from: BlockSpec, blocks_to_extract: Sequence[Block]
) -> list[_State]:
    """The states of `blocks_to_extract`, read out of a global state of `spec_from`."""
    out = []
    for block in blocks_to_extract:
        sd, pos = node_positions(block, spec_from)
        out.append(jax.tree.map(lambda leaf: take_nodes(leaf, pos), global_state[sd]))
    return out


def make_empty_block_state(
    blocks: Sequence[Block],
    node_shape_dtypes: Mapping[type[AbstractNode], PyTree[jax.ShapeDtypeStruct]],
    batch_shape: tuple | None = None,
) -> list[_State]:
    """Zero states for `blocks`, with leaves of shape `batch_shape + (len(block),) + leaf.shape`."""
    batch_shape = tuple(batch_shape or ())
    out = []
    for block in blocks:
        sd = lookup_node_sd(Block(block).node_type, node_shape_dtypes)
        out.append(jax.tree.map(lambda s: jnp.zeros(batch_shape + (len(block),) + tuple(s.shape), s.dtype), sd))
    return out


def block_states_list(states, n_blocks: int, *, what: str = "state") -> list:
    """`states` as a list with one entry per block. A single array is read as THRML reads it: its rows
    (leading axis) are the blocks' states, so `jnp.zeros((1, n), dtype)` is the state of one block of
    n nodes. Raises StateError when such an array has another number of rows than there are blocks."""
    if not isinstance(states, (jax.Array, np.ndarray)):
        return list(states)
    shape = tuple(np.shape(states))
    if not shape or shape[0] != n_blocks:
        raise StateError(
            f"The {what} is a single array of shape {shape}; its rows are read as the states of the blocks, but "
            f"there are {n_blocks} blocks. Pass a list with one array (or PyTree) per block: [state_0, state_1, ...]."
        )
    return [states[i] for i in range(n_blocks)]


def verify_block_state(
    blocks: Sequence[Block],
    states: Sequence[_State],
    node_shape_dtypes: Mapping[type[AbstractNode], PyTree[jax.ShapeDtypeStruct]],
    block_axis: int | None = None,
    *,
    what: str = "state",
) -> None:
    """Check that `states` fits `blocks`: one entry per block, the right PyTree structure, node count and dtype.

    `block_axis` is where the node axis sits among the leading (batch + node) axes; by default it is
    the first axis after any batch axes, i.e. the node axis directly precedes the node's own shape.
    Raises `StateError` (a `RuntimeError`) naming the block and the fix.
    """
    states = block_states_list(states, len(blocks), what=what)
    if len(states) != len(blocks):
        raise StateError(f"The {what} has {len(states)} entries but there are {len(blocks)} blocks; give one per block.")
    for i, (block, state) in enumerate(zip(blocks, states)):
        block = Block(block)
        sd = lookup_node_sd(block.node_type, node_shape_dtypes)
        sd_leaves, sd_tree = jax.tree.flatten(sd)
        leaves, tree = jax.tree.flatten(state)
        if tree != sd_tree:
            raise StateError(
                f"The {what} for block {i} ({block.node_type.__name__}) has structure {tree}, expected {sd_tree}."
            )
        for leaf, s in zip(leaves, sd_leaves):
            shape = tuple(np.shape(leaf))
            node_shape = tuple(s.shape)
            lead = shape[: len(shape) - len(node_shape)] if node_shape else shape
            if len(shape) < len(node_shape) + 1 or shape[len(shape) - len(node_shape) :] != node_shape:
                raise StateError(
                    f"The {what} for block {i} has shape {shape}; expected (..., {len(block)}"
                    f"{''.join(', ' + str(d) for d in node_shape)}) for {len(block)} {block.node_type.__name__} nodes."
                )
            axis = len(lead) - 1 if block_axis is None else block_axis
            if not (0 <= axis < len(lead)) or lead[axis] != len(block):
                raise StateError(
                    f"The {what} for block {i} has shape {shape}, but the block has {len(block)} nodes "
                    f"(expected {len(block)} along axis {axis})."
                )
            dtype = np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype)
            if dtype != np.dtype(s.dtype):
                raise StateError(
                    f"The {what} for block {i} ({block.node_type.__name__}) has dtype {dtype}, but these nodes are "
                    f"stored as {np.dtype(s.dtype)}. Cast it, e.g. state.astype(jnp.{np.dtype(s.dtype).name})."
                )
