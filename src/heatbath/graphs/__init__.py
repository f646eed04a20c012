"""Graph builders and automatic colouring into independent blocks.

- Lattices: `lattice_2d`, `lattice_3d`, `hypercubic_lattice` (→ `Lattice` with nodes, edges, blocks).
- Pegasus: `pegasus_graph(m)` (networkx, a stand-in for `dwave_networkx.pegasus_graph`), `pegasus(m)`.
- networkx import: `from_networkx`.
- Colouring: `color_graph` (numpy, any graph), `color_blocks` (free blocks of a model, per node type),
  `interaction_graph` (the pairs of nodes a model makes interact), `is_proper_coloring`.
"""

from heatbath.graphs.coloring import color_blocks, color_graph, is_proper_coloring
from heatbath.graphs.convert import from_networkx
from heatbath.graphs.interaction_graph import interaction_graph
from heatbath.graphs.lattice import Lattice, hypercubic_lattice, lattice_2d, lattice_3d
from heatbath.graphs.pegasus import PEGASUS_SIZES, pegasus, pegasus_edge_index, pegasus_graph

__all__ = [
    "Lattice",
    "hypercubic_lattice",
    "lattice_2d",
    "lattice_3d",
    "PEGASUS_SIZES",
    "pegasus",
    "pegasus_edge_index",
    "pegasus_graph",
    "from_networkx",
    "color_graph",
    "color_blocks",
    "interaction_graph",
    "is_proper_coloring",
]
