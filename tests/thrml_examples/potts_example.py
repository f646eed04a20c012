# THRML docs example "Probabilistic Computing" (Potts model), run on heatbath.
# Only the imports changed (thrml -> heatbath); sizes reduced to fit CI (side_length 20 -> 12,
# n_batches 100 -> 8). The plotting code is kept and drawn off-screen.
import matplotlib

matplotlib.use("Agg")

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import networkx as nx

from heatbath.block_management import Block
from heatbath.block_sampling import BlockGibbsSpec, sample_states, SamplingSchedule
from heatbath.pgm import CategoricalNode
from heatbath.models.discrete_ebm import CategoricalEBMFactor, CategoricalGibbsConditional
from heatbath.factor import FactorSamplingProgram

side_length = 12

# in this simple example we will just use a basic grid, although THRML is capable of dealing with arbitrary graph topologies
G = nx.grid_graph(dim=(side_length, side_length), periodic=False)

# label the nodes with something THRML recognizes for convenience
coord_to_node = {coord: CategoricalNode() for coord in G.nodes}
nx.relabel_nodes(G, coord_to_node, copy=False)
for coord, node in coord_to_node.items():
    G.nodes[node]["coords"] = coord

# write down the color groups for later
bicol = nx.bipartite.color(G)
color0 = [n for n, c in bicol.items() if c == 0]
color1 = [n for n, c in bicol.items() if c == 1]

# write down the edges in a different format for later
u, v = map(list, zip(*G.edges()))

# plot the graph
pos = {n: G.nodes[n]["coords"][:2] for n in G.nodes}
colors = ["black", "orange"]
node_colors = [colors[bicol[n]] for n in G.nodes]

fig, axs = plt.subplots()

nx.draw(
    G,
    pos=pos,
    ax=axs,
    node_size=50.0,
    node_color=node_colors,
    edgecolors="k",
    with_labels=False,
)

# how many categories to use for each variable
n_cats = 5

# temperature parameter
beta = 1.0

# implements W^{2} for each edge
# in this case we are just using an identity matrix, but this could be anything
id_mat = jnp.eye(n_cats)
weights = beta * jnp.broadcast_to(jnp.expand_dims(id_mat, 0), (len(u), *id_mat.shape))
coupling_interaction = CategoricalEBMFactor([Block(u), Block(v)], weights)

interactions = [coupling_interaction]

blocks = [Block(color0), Block(color1)]

# our grouping of the graph into blocks
spec = BlockGibbsSpec(blocks, [])

sampler = CategoricalGibbsConditional(n_cats)

prog = FactorSamplingProgram(
    spec,  # our block decomposition of the graph
    [sampler for _ in spec.free_blocks],  # how to update the nodes in each block every iteration of Gibbs sampling
    interactions,  # the interactions present in our model
    [],
)

# rng seed
key = jax.random.key(4242)

n_batches = 8

# we need to initialize our Gibbs sampling instances
init_state = []
for block in spec.free_blocks:
    key, subkey = jax.random.split(key, 2)
    init_state.append(
        jax.random.randint(subkey, (n_batches, len(block.nodes)), minval=0, maxval=n_cats, dtype=jnp.uint8)
    )

# how we should schedule our sampling
schedule = SamplingSchedule(
    # how many iterations to do before drawing the first sample
    n_warmup=0,
    # how many samples to draw in total
    n_samples=100,
    # how many steps to take between samples
    steps_per_sample=5,
)

keys = jax.random.split(key, n_batches)

# now run sampling
samples = jax.jit(jax.vmap(lambda i, k: sample_states(k, prog, schedule, i, [], [Block(G.nodes)])))(init_state, keys)

to_plot = [0, 3, 7]

fig, axs = plt.subplots(nrows=1, ncols=len(to_plot))

for i, num in enumerate(to_plot):
    axs[i].imshow(samples[0][num, -1, :].reshape((side_length, side_length)))
plt.close("all")
