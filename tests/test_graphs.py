"""Graph builders and colouring: edge counts, proper colourings, Pegasus, and blocks that programs accept."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

from heatbath import Block, BlockGibbsSpec, CategoricalNode, InteractionGroup, SpinNode
from heatbath.block_sampling import FactorSamplingProgram
from heatbath.errors import HeatbathError, IndependenceError
from heatbath.graphs import (
    PEGASUS_SIZES,
    color_blocks,
    color_graph,
    from_networkx,
    hypercubic_lattice,
    interaction_graph,
    is_proper_coloring,
    lattice_2d,
    lattice_3d,
    pegasus,
    pegasus_edge_index,
    pegasus_graph,
)
from heatbath.models import (
    CategoricalGibbsConditional,
    DiscreteEBMFactor,
    DiscreteEBMInteraction,
    FactorizedEBM,
    IsingEBM,
    IsingSamplingProgram,
    SpinGibbsConditional,
)


def _edge_set(edge_index):
    return {tuple(sorted(e)) for e in np.asarray(edge_index).tolist()}


def _assert_simple(edge_index):
    e = np.asarray(edge_index)
    assert np.all(e[:, 0] != e[:, 1]), "self-loop"
    assert len(_edge_set(e)) == len(e), "duplicate edge"


def _ising(nodes, edges, seed=0):
    key_b, key_w = jax.random.split(jax.random.key(seed))
    biases = jax.random.normal(key_b, (len(nodes),))
    weights = jax.random.normal(key_w, (len(edges),))
    return IsingEBM(nodes, edges, biases, weights, 0.5)


# ------------------------------------------------------------------------------------------ lattices


@pytest.mark.parametrize(
    "shape, periodic, n_edges",
    [
        ((5, 5), True, 2 * 25),
        ((6, 6), True, 2 * 36),
        ((5, 5), False, 2 * 5 * 4),
        ((4, 7), False, 4 * 6 + 3 * 7),
        ((2, 2), True, 4),  # a periodic side of 2 must not double its edges
        ((2, 5), True, 5 + 10),
        ((1, 5), True, 5),  # a side of 1 has no edges along it
        ((1, 1), True, 0),
        ((4, 4, 4), True, 3 * 64),
        ((3, 3, 3), False, 3 * 9 * 2),
        ((2, 2, 2), True, 12),
        ((3, 4, 5), True, 3 * 60),
    ],
)
def test_lattice_edge_counts(shape, periodic, n_edges):
    lat = lattice_2d(*shape, periodic=periodic) if len(shape) == 2 else lattice_3d(*shape, periodic=periodic)
    assert len(lat.nodes) == int(np.prod(shape))
    assert lat.edge_index.shape == (n_edges, 2) and lat.edge_index.dtype == np.int64
    assert len(lat.edges) == n_edges
    if n_edges:
        _assert_simple(lat.edge_index)
    assert lat.coords.shape == (len(lat.nodes), len(shape))


def test_lattice_nodes_edges_and_coords_agree():
    lat = lattice_2d(3, 4, periodic=True)
    assert [n.name for n in lat.nodes] == [(r, c) for r in range(3) for c in range(4)]
    assert all(isinstance(n, SpinNode) for n in lat.nodes)
    np.testing.assert_array_equal(lat.coords, np.array([n.name for n in lat.nodes]))
    for (a, b), (i, j) in zip(lat.edges, lat.edge_index.tolist()):
        assert a is lat.nodes[i] and b is lat.nodes[j]
    # Every edge joins nearest neighbours on the torus.
    diff = np.abs(lat.coords[lat.edge_index[:, 0]] - lat.coords[lat.edge_index[:, 1]])
    diff = np.minimum(diff, np.array(lat.shape) - diff)
    assert np.all(diff.sum(axis=1) == 1)
    assert lattice_3d(2).nodes[-1].name == (1, 1, 1)
    cat = lattice_2d(2, node_type=CategoricalNode)
    assert all(isinstance(n, CategoricalNode) for n in cat.nodes)


def test_lattice_rejects_bad_shapes():
    with pytest.raises(HeatbathError):
        lattice_2d(0)
    with pytest.raises(HeatbathError):
        hypercubic_lattice((3, 3), periodic=(True,))


@pytest.mark.parametrize("shape, periodic", [((6, 6), True), ((5, 7), False), ((4, 6, 8), True), ((2, 4), True), ((1, 4), True)])
def test_lattice_checkerboard_has_two_colours(shape, periodic):
    lat = hypercubic_lattice(shape, periodic=periodic)
    assert lat.is_checkerboard
    colour = lat.colors()
    assert colour.max() == 1 and is_proper_coloring(colour, lat.edge_index)
    blocks = lat.blocks()
    assert len(blocks) == 2 and sum(map(len, blocks)) == len(lat.nodes)
    np.testing.assert_array_equal(colour, lat.coords.sum(axis=1) % 2)


@pytest.mark.parametrize("shape", [(5, 5), (3, 4), (7, 3, 4)])
def test_odd_periodic_lattice_falls_back_to_general_colouring(shape):
    lat = hypercubic_lattice(shape, periodic=True)
    assert not lat.is_checkerboard
    colour = lat.colors()
    assert is_proper_coloring(colour, lat.edge_index) and 3 <= colour.max() + 1 <= 5
    blocks = lat.blocks()
    assert len(blocks) == colour.max() + 1 and sum(map(len, blocks)) == len(lat.nodes)


def test_odd_periodic_lattice_blocks_build_a_program():
    lat = lattice_2d(5)
    program = IsingSamplingProgram(_ising(lat.nodes, lat.edges), lat.blocks(), [])
    assert len(program.gibbs_spec.free_blocks) >= 3


# ------------------------------------------------------------------------------------------ colouring


def _graphs():
    yield "odd cycle", nx.cycle_graph(9)
    yield "even cycle", nx.cycle_graph(10)
    yield "complete", nx.complete_graph(12)
    yield "petersen", nx.petersen_graph()
    yield "random", nx.gnp_random_graph(600, 0.02, seed=3)
    yield "random sparse", nx.gnm_random_graph(3000, 4000, seed=1)
    yield "tree", nx.random_labeled_tree(500, seed=2)
    yield "empty", nx.empty_graph(7)
    yield "two components", nx.disjoint_union(nx.cycle_graph(5), nx.path_graph(6))


@pytest.mark.parametrize("name, graph", list(_graphs()))
def test_color_graph_is_proper(name, graph):
    edges = np.array(list(graph.edges()), dtype=np.int64).reshape(-1, 2)
    colour = color_graph(graph.number_of_nodes(), edges)
    assert colour.shape == (graph.number_of_nodes(),) and colour.dtype == np.int64
    assert is_proper_coloring(colour, edges)
    k = int(colour.max()) + 1
    assert set(np.unique(colour).tolist()) == set(range(k)), "colours are not contiguous"
    if graph.number_of_edges() == 0:
        assert k == 1
    elif nx.is_bipartite(graph):
        assert k == 2
    else:
        assert 3 <= k <= max(d for _, d in graph.degree()) + 1


def test_color_graph_tolerates_duplicates_both_directions_and_self_loops():
    edges = np.array([[0, 1], [1, 0], [1, 2], [2, 2], [0, 1], [2, 0]])
    colour = color_graph(3, edges)
    assert is_proper_coloring(colour, edges) and colour.max() == 2
    assert color_graph(0, np.zeros((0, 2), int)).shape == (0,)
    with pytest.raises(HeatbathError):
        color_graph(3, np.array([[0, 3]]))
    with pytest.raises(HeatbathError):
        color_graph(3, np.array([0, 1, 2]))


def test_color_graph_is_deterministic():
    edges = np.array(list(nx.gnp_random_graph(300, 0.05, seed=0).edges()))
    np.testing.assert_array_equal(color_graph(300, edges), color_graph(300, edges))


# ------------------------------------------------------------------------------------------ Pegasus


@pytest.mark.parametrize("m, n_nodes, n_edges", [(6, 680, 4484), (14, 4264, 30404), (16, 5640, 40484)])
def test_pegasus_sizes(m, n_nodes, n_edges):
    n, edge_index = pegasus_edge_index(m)
    assert (n, edge_index.shape) == (n_nodes, (n_edges, 2))
    _assert_simple(edge_index)
    graph = pegasus_graph(m)
    assert isinstance(graph, nx.Graph)
    assert (graph.number_of_nodes(), graph.number_of_edges()) == (n_nodes, n_edges)
    assert sorted(graph.nodes) == list(range(n_nodes))
    nodes, edge_index2, edges = pegasus(m)
    assert len(nodes) == n_nodes and len(edges) == n_edges and edges[0][0] is nodes[edge_index2[0, 0]]
    assert max(d for _, d in graph.degree()) == 15


def test_pegasus_unknown_size_lists_available_sizes():
    with pytest.raises(HeatbathError, match="6, 14, 16"):
        pegasus_graph(7)
    assert PEGASUS_SIZES == (6, 14, 16)


def test_pegasus_p14_gets_four_colours():
    n, edge_index = pegasus_edge_index(14)
    colour = color_graph(n, edge_index)
    assert is_proper_coloring(colour, edge_index)
    assert colour.max() + 1 <= 4  # smallest-last greedy; largest-degree-first would give 8 to 10


def test_pegasus_graph_relabel_workflow_as_in_thrml_example():
    graph = pegasus_graph(6)
    nx.relabel_nodes(graph, {i: SpinNode() for i in graph.nodes}, copy=False)
    nodes, edges = list(graph.nodes), list(graph.edges)
    model = _ising(nodes, edges)
    blocks = color_blocks(graph)
    assert len(blocks) <= 4
    IsingSamplingProgram(model, blocks, [])


# ------------------------------------------------------------------------------------------ color_blocks


def test_color_blocks_on_ising_model_builds_a_program():
    nodes, _, edges = pegasus(6)
    model = _ising(nodes, edges)
    blocks = color_blocks(model)
    assert 2 <= len(blocks) <= 4
    assert sorted(id(n) for b in blocks for n in b) == sorted(map(id, nodes))
    program = IsingSamplingProgram(model, blocks, [])
    assert len(program.gibbs_spec.free_blocks) == len(blocks)


def test_a_block_holding_two_coupled_spins_raises_independence_error():
    lat = lattice_2d(4)
    model = _ising(lat.nodes, lat.edges)
    even, odd = lat.blocks()
    bad = [Block(even.nodes + odd.nodes[:1]), Block(odd.nodes[1:])]
    with pytest.raises(IndependenceError):
        IsingSamplingProgram(model, bad, [])


def test_color_blocks_with_clamped_nodes_left_out():
    nodes, _, edges = pegasus(6)
    model = _ising(nodes, edges)
    rng = np.random.default_rng(0)
    clamped_ids = set(rng.choice(len(nodes), 100, replace=False).tolist())
    free = [n for i, n in enumerate(nodes) if i not in clamped_ids]
    clamped = [nodes[i] for i in sorted(clamped_ids)]
    blocks = color_blocks(model, nodes=free)
    assert sum(map(len, blocks)) == len(free)
    assert not {id(n) for n in clamped} & {id(n) for b in blocks for n in b}
    IsingSamplingProgram(model, blocks, [Block(clamped)])


def test_color_blocks_accepts_graph_pairs_groups_and_factors():
    lat = lattice_2d(5, 6, periodic=False)
    model = _ising(lat.nodes, lat.edges)
    by_pairs = color_blocks((lat.nodes, lat.edges))
    by_index = color_blocks((lat.nodes, lat.edge_index))
    graph = nx.Graph()
    graph.add_nodes_from(lat.nodes)
    graph.add_edges_from(lat.edges)
    by_graph = color_blocks(graph)
    groups = [g for f in model.factors for g in f.to_interaction_groups()]
    by_groups = color_blocks(groups)
    by_factors = color_blocks(model.factors)
    for blocks in (by_pairs, by_index, by_graph, by_groups, by_factors):
        assert len(blocks) == 2
        assert [set(map(id, b)) for b in blocks] == [set(map(id, b)) for b in lat.blocks()]
    with pytest.raises(HeatbathError, match="from_networkx"):
        color_blocks(nx.path_graph(3))
    with pytest.raises(HeatbathError):
        color_blocks(42)


def test_color_blocks_handles_hyperedges_and_self_pairs():
    a, b, c, d = (SpinNode(x) for x in "abcd")
    blocks = color_blocks(([a, b, c, d], [(a, b, c), (c, d), (d, d)]))
    colour = {n: i for i, blk in enumerate(blocks) for n in blk}
    assert len({colour[a], colour[b], colour[c]}) == 3 and colour[c] != colour[d]
    nodes, pairs = interaction_graph(([a, b, c, d], [(a, b, c), (c, d), (d, d)]))
    assert nodes == [a, b, c, d] and _edge_set(pairs) == {(0, 1), (0, 2), (1, 2), (2, 3)}


def _mixed_triples(n=8, seed=0):
    """A ring of spins s_i and 3-state categorical nodes c_i with order-3 terms s_i s_(i+1) W[c_i] and
    s_i W[c_i, c_(i+1)], as (spins, cats, spin groups, categorical groups, weights) per term."""
    spins = [SpinNode(("s", i)) for i in range(n)]
    cats = [CategoricalNode(("c", i)) for i in range(n)]
    rng = np.random.default_rng(seed)
    nxt = [(i + 1) % n for i in range(n)]
    terms = [
        ([Block(spins), Block([spins[j] for j in nxt])], [Block(cats)], rng.normal(size=(n, 3))),
        ([Block(spins)], [Block(cats), Block([cats[j] for j in nxt])], rng.normal(size=(n, 3, 3))),
    ]
    return spins, cats, [(sg, cg, jnp.asarray(w, jnp.float32)) for sg, cg, w in terms]


def _groups_of_term(spin_groups, cat_groups, w):
    """The interaction groups of s_1..s_M W[c_1..c_N] (every node reads all the others), built by hand."""
    groups = []
    for p, head in enumerate(spin_groups):
        tails = spin_groups[:p] + spin_groups[p + 1 :] + cat_groups
        groups.append(InteractionGroup(DiscreteEBMInteraction(len(spin_groups) - 1, w), head, tails))
    for q, head in enumerate(cat_groups):
        tails = spin_groups + cat_groups[:q] + cat_groups[q + 1 :]
        groups.append(InteractionGroup(DiscreteEBMInteraction(len(spin_groups), jnp.moveaxis(w, 1 + q, 1)), head, tails))
    return groups


def _check_mixed_blocks(spins, cats, supers, blocks):
    assert all(len({type(x) for x in blk}) == 1 for blk in blocks)
    assert sum(map(len, blocks)) == len(spins) + len(cats)
    assert all(isinstance(s, tuple) for s in supers)
    assert [b for s in supers for b in s] == blocks
    for s in supers:
        assert len({blk.node_type for blk in s}) == len(s)
    # No two nodes of one term share a colour.
    colour = {n: i for i, s in enumerate(supers) for blk in s for n in blk}
    for i in range(len(spins)):
        j = (i + 1) % len(spins)
        assert len({colour[spins[i]], colour[spins[j]], colour[cats[i]]}) == 3
        assert len({colour[spins[i]], colour[cats[i]], colour[cats[j]]}) == 3


def _mixed_program(supers, factors, groups):
    spec = BlockGibbsSpec(supers, [])
    samplers = [
        SpinGibbsConditional() if blk.node_type is SpinNode else CategoricalGibbsConditional(3)
        for blk in spec.free_blocks
    ]
    return spec, FactorSamplingProgram(spec, samplers, factors, groups)


def test_color_blocks_separates_node_types_for_order_three_interactions():
    spins, cats, terms = _mixed_triples()
    groups = [g for term in terms for g in _groups_of_term(*term)]
    blocks = color_blocks(groups)
    supers = color_blocks(groups, superblocks=True)
    _check_mixed_blocks(spins, cats, supers, blocks)
    spec, program = _mixed_program(supers, [], groups)  # construction checks every block is independent
    assert len(spec.free_blocks) == len(blocks)


def test_color_blocks_on_mixed_discrete_ebm_factors():
    spins, cats, terms = _mixed_triples()
    model = FactorizedEBM([DiscreteEBMFactor(*term) for term in terms])
    blocks = color_blocks(model)
    supers = color_blocks(model, superblocks=True)
    _check_mixed_blocks(spins, cats, supers, blocks)
    _mixed_program(supers, model.factors, [])


def test_color_blocks_of_lattice_pairs_matches_checkerboard_for_even_torus():
    lat = lattice_2d(8)
    blocks = color_blocks((lat.nodes, lat.edge_index))
    assert [set(map(id, b)) for b in blocks] == [set(map(id, b)) for b in lat.blocks()]


# ------------------------------------------------------------------------------------------ networkx


def test_from_networkx_names_nodes_by_label():
    graph = nx.grid_2d_graph(3, 4)
    nodes, edges, mapping = from_networkx(graph)
    assert [n.name for n in nodes] == list(graph.nodes)
    assert [(u.name, v.name) for u, v in edges] == list(graph.edges)
    assert all(mapping[label] is node for label, node in zip(graph.nodes, nodes))
    cats, _, _ = from_networkx(graph, node_type=CategoricalNode)
    assert isinstance(cats[0], CategoricalNode)
    graph.add_edge((0, 0), (0, 0))
    with pytest.raises(HeatbathError, match="self-loop"):
        from_networkx(graph)


# ------------------------------------------------------------------------------------------ scale


def test_million_node_lattices_colour_quickly():
    for rows, cols in ((1000, 1000), (999, 1001)):
        lat = hypercubic_lattice((rows, cols), periodic=True)
        start = time.perf_counter()
        colour = color_graph(len(lat.nodes), lat.edge_index)
        elapsed = time.perf_counter() - start
        assert is_proper_coloring(colour, lat.edge_index)
        assert colour.max() + 1 == (2 if lat.is_checkerboard else colour.max() + 1)
        assert colour.max() + 1 <= 5
        assert elapsed < 10.0, f"{rows}x{cols}: colouring took {elapsed:.1f} s"
