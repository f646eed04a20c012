"""The uniform Ising torus inside a THRML-style program: recognised, and sampled by the multispin kernel.

On CUDA GPUs `sample_states` (alone or under `jax.vmap`) runs a program that is the uniform Ising
model on an L × L torus through the one-bit lattice kernel. Here (CPU) the route is forced onto the
kernel's jax.numpy twin (and its interpreted Pallas kernel), which gives identical words. Error bars:
each chain's time average is one sample and chains are independent, so the standard error over
chains is honest whatever the autocorrelation within a chain.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import Block, SamplingSchedule, sample_states
from heatbath.exact.ising2d import exact_finite_lattice
from heatbath.graphs import lattice_2d
from heatbath.kernels import dispatch
from heatbath.kernels.ising_torus import find_torus, ising_torus
from heatbath.kernels.pairwise_tables import pairwise_tables
from heatbath.kernels.pallas_backend import pallas_available
from heatbath.models import IsingEBM, IsingSamplingProgram

Z_LIMIT = 4.0


def _torus_neighbours(L: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Neighbour table `[L², 4]` of the L × L torus, nodes relabelled by `labels` (site -> node id)."""
    sites = np.arange(L * L).reshape(L, L) if labels is None else labels.reshape(L, L)
    table = np.stack([np.roll(sites, s, axis=a) for a in (0, 1) for s in (1, -1)], axis=-1).reshape(-1, 4)
    out = np.empty_like(table)
    out[sites.ravel()] = table
    return out


def test_find_torus_places_shuffled_nodes_and_rejects_look_alikes():
    L = 8
    labels = np.random.default_rng(0).permutation(L * L)
    neighbours = _torus_neighbours(L, labels)
    sites = find_torus(neighbours, L)
    assert sites is not None
    for i in range(L):
        for j in range(L):
            expected = {sites[(i + 1) % L, j], sites[i - 1, j], sites[i, (j + 1) % L], sites[i, j - 1]}
            assert set(neighbours[sites[i, j]]) == expected
    # One pair of edges rewired (a-b, c-d -> a-c, b-d): still 4-regular, no longer a torus.
    a, b = 0, int(neighbours[0, 0])
    c = int(sites.ravel()[L * L // 2 + 3])
    d = int(neighbours[c, 0])
    rewired = neighbours.copy()
    for x, old, new in ((a, b, c), (b, a, d), (c, d, a), (d, c, b)):
        rewired[x][rewired[x] == old] = new
    assert find_torus(rewired, L) is None
    # An 8 x 8 torus is not a 4 x 16 one, and a 4-regular random graph is no torus.
    assert find_torus(_torus_neighbours(L), 16) is None
    assert find_torus(np.random.default_rng(1).integers(0, L * L, (L * L, 4)), L) is None


def _program(L: int, J: float, h: float, *, swap_blocks=False, coupling_noise=0.0):
    """A THRML-style Ising program on heatbath's periodic L × L lattice (row-major nodes), the two
    checkerboard blocks, β = 1 (so J and h are the program's weights)."""
    lattice = lattice_2d(L, periodic=True)
    nodes = lattice.nodes
    weights = J + coupling_noise * np.random.default_rng(2).normal(size=len(lattice.edges))
    model = IsingEBM(nodes, lattice.edges, jnp.full(len(nodes), h, jnp.float32), jnp.asarray(weights, jnp.float32),
                     jnp.asarray(1.0, jnp.float32))
    colours = lattice.colors()
    members = [np.flatnonzero(colours == c) for c in ((1, 0) if swap_blocks else (0, 1))]
    blocks = [Block([nodes[i] for i in m]) for m in members]
    program = IsingSamplingProgram(model, blocks, [])
    return program, nodes, blocks, members


def test_ising_torus_recognises_the_uniform_model_only():
    program, *_ = _program(64, 0.3, -0.1)
    torus = ising_torus(program, pairwise_tables(program))
    assert torus is not None and torus.L == 64
    assert torus.J == pytest.approx(0.3) and torus.h == pytest.approx(-0.1)
    swapped, *_ = _program(64, 0.3, -0.1, swap_blocks=True)  # the first block sampled is the other colour
    assert ising_torus(swapped, pairwise_tables(swapped)) is not None
    noisy, *_ = _program(64, 0.3, 0.0, coupling_noise=0.01)
    assert ising_torus(noisy, pairwise_tables(noisy)) is None
    small, *_ = _program(32, 0.3, 0.0)  # the kernel packs rows of L/2 sites into 32-bit words
    assert ising_torus(small, pairwise_tables(small)) is None
    seen = []
    tables = pairwise_tables(program)
    jax.jit(lambda p: seen.append(ising_torus(p, tables)) or 0)(program)
    assert seen == [None]  # traced weights cannot be compared


def test_the_lattice_layout_is_found_once_per_structure(monkeypatch):
    """Every trace of a call reads the weights again, but walks the torus only once per program (per
    tables object of `pairwise_tables`): an eager loop over one program traces every call."""
    from heatbath.kernels import ising_torus as module

    walks = []
    find = module.find_torus
    monkeypatch.setattr(module, "find_torus", lambda *a: walks.append(1) or find(*a))
    module._SITES.clear()
    program, *_ = _program(64, 0.3, 0.0)
    tables = pairwise_tables(program)
    first, again = ising_torus(program, tables), ising_torus(program, tables)
    assert len(walks) == 1 and np.array_equal(first.sites, again.sites)
    assert not first.sites.flags.writeable  # the remembered layout cannot be changed through a result
    swapped, *_ = _program(64, 0.3, 0.0, swap_blocks=True)  # other tables: walked anew
    assert ising_torus(swapped, pairwise_tables(swapped)) is not None and len(walks) == 2


def _force_route(monkeypatch, backend: str) -> list:
    """Send THRML-style calls of a recognised torus to the lattice kernel on `backend`; the returned
    list gets an entry each time the route is traced, so a test can check that it was taken."""
    taken = []
    run = dispatch.run_ising_torus
    monkeypatch.setattr(dispatch, "torus_backend", lambda: backend)
    monkeypatch.setattr(dispatch, "run_ising_torus", lambda *a, **k: taken.append(a[0].L) or run(*a, **k))
    return taken


@pytest.fixture(params=["jnp", "interpret"])
def torus_route(request, monkeypatch):
    """Force THRML-style calls of a recognised torus onto the lattice kernel (jax.numpy or interpreted)."""
    return request.param, _force_route(monkeypatch, request.param)


def _thrml_style(program, blocks, schedule, init):
    keys = jax.random.split(jax.random.key(7), init[0].shape[0])
    call = jax.jit(jax.vmap(lambda k, a, b: sample_states(k, program, schedule, [a, b], [], blocks)))
    return call(keys, *init), keys


def _random_init(blocks, chains: int):
    return [jax.random.bernoulli(jax.random.key(10 + b), 0.5, (chains, len(block))) for b, block in enumerate(blocks)]


@pytest.mark.parametrize("swap", [False, True])
def test_routed_call_starts_from_the_given_states_and_batches_chain_by_chain(swap, torus_route):
    """The first sample (no warm-up) is the initial state node for node; later samples of a vmapped
    call are those of each chain run alone with its key."""
    backend, taken = torus_route
    program, _, blocks, _ = _program(64, 0.4, 0.05, swap_blocks=swap)
    init = _random_init(blocks, 3)
    (first, _), _ = _thrml_style(program, blocks, SamplingSchedule(0, 1, 1), init)
    np.testing.assert_array_equal(np.asarray(first[:, 0]), np.asarray(init[0]))
    assert set(taken) == {64}
    if backend == "interpret":
        return  # the identity below is the same code path; interpreted sweeps are slow
    schedule = SamplingSchedule(3, 2, 2)
    (batched, other), keys = _thrml_style(program, blocks, schedule, init)
    before = len(taken)
    alone = sample_states(keys[1], program, schedule, [init[0][1], init[1][1]], [], blocks)
    assert len(taken) > before  # one chain alone takes the route too
    np.testing.assert_array_equal(np.asarray(batched[1]), np.asarray(alone[0]))
    np.testing.assert_array_equal(np.asarray(other[1]), np.asarray(alone[1]))
    assert not np.array_equal(np.asarray(batched[0]), np.asarray(batched[1]))  # chains get their own keys



def test_eager_calls_compile_the_route_once(monkeypatch):
    """An eager call of a recognised torus runs one compiled call found by the program's structure: a
    second eager call with another key, or with new weights (J and h are arguments), traces nothing,
    and each gives the samples of the same call under `jax.jit`."""
    from heatbath.kernels import torus_run

    monkeypatch.setattr(dispatch, "_TORUS_CALLS", {})
    taken = _force_route(monkeypatch, "jnp")
    traced = []
    run_local = torus_run._run_local
    monkeypatch.setattr(torus_run, "_run_local", lambda *a, **k: traced.append(1) or run_local(*a, **k))
    program, _, blocks, _ = _program(64, 0.44, 0.0)
    init = [x[0] for x in _random_init(blocks, 1)]
    schedule = SamplingSchedule(2, 2, 1)
    eager = [sample_states(jax.random.key(seed), program, schedule, init, [], blocks) for seed in (0, 1)]
    assert len(taken) == 1 and len(traced) == 1
    jitted = jax.jit(lambda k: sample_states(k, program, schedule, init, [], blocks))(jax.random.key(1))
    for a, b in zip(eager[1], jitted):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(*eager))  # keys matter
    anti = jax.tree.map(lambda w: -w if isinstance(w, jax.Array) and w.dtype == jnp.float32 else w, program)
    traces = len(taken) + len(traced)
    flipped = sample_states(jax.random.key(1), anti, schedule, init, [], blocks)  # J = -0.44: still a torus
    assert len(taken) + len(traced) == traces and len(dispatch._TORUS_CALLS) == 1
    jitted = jax.jit(lambda k: sample_states(k, anti, schedule, init, [], blocks))(jax.random.key(1))
    for a, b in zip(flipped, jitted):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(flipped, eager[1]))  # J matters
    other, _, other_blocks, _ = _program(64, 0.3, 0.0)  # other nodes: another structure
    sample_states(jax.random.key(0), other, schedule, init, [], other_blocks)
    assert len(dispatch._TORUS_CALLS) == 2


def _assert_backends_agree(monkeypatch, backends, L: int, h: float, chains: int, schedule):
    """The routed THRML-style call on an L × L torus gives identical samples on every backend."""
    program, _, blocks, _ = _program(L, 0.44, h)
    init = _random_init(blocks, chains)
    runs = []
    for backend in backends:
        with monkeypatch.context() as patch:
            taken = _force_route(patch, backend)
            runs.append(_thrml_style(program, blocks, schedule, init)[0])
            assert set(taken) == {L}
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_interpreted_kernel_takes_the_jax_numpy_steps(monkeypatch):
    _assert_backends_agree(monkeypatch, ("jnp", "interpret"), 64, 0.0, 2, SamplingSchedule(2, 2, 1))


@pytest.mark.parametrize("beta", [0.3, 0.6])
def test_routed_call_matches_kaufman(beta, monkeypatch):
    """The THRML-style call on the 64 × 64 torus (weights β·J, J = 1, h = 0): the mean energy per site
    over 64 chains, samples every 5 sweeps after 300 warm-up sweeps, against the exact finite lattice."""
    taken = _force_route(monkeypatch, "jnp")
    L, chains = 64, 64
    program, _, blocks, members = _program(L, beta, 0.0)
    assert ising_torus(program, pairwise_tables(program)) is not None
    init = [jnp.ones((chains, len(block)), bool) for block in blocks]  # ordered start
    samples, _ = _thrml_style(program, blocks, SamplingSchedule(300, 200, 5), init)
    assert set(taken) == {L}
    spins = np.zeros((chains, 200, L * L), np.int8)
    for s, m in zip(samples, members):
        spins[:, :, m] = np.where(np.asarray(s), 1, -1)
    spins = spins.reshape(chains, 200, L, L).astype(np.float64)
    bonds = spins * np.roll(spins, -1, axis=2) + spins * np.roll(spins, -1, axis=3)
    per_chain = -bonds.sum(axis=(2, 3)).mean(1) / (L * L)
    se = per_chain.std(ddof=1) / np.sqrt(chains)
    exact = exact_finite_lattice(L, beta).energy_per_site
    z = (per_chain.mean() - exact) / se
    assert se < 4e-3
    assert abs(z) < Z_LIMIT, f"beta={beta}: {per_chain.mean():.5f} ± {se:.5f}, exact {exact:.5f} (z = {z:.2f})"


def test_same_samples_on_any_number_of_devices():
    """Chains split over 1, 2 or 4 devices (forced host devices on CPU) give identical samples."""
    from heatbath.kernels.torus_run import run_ising_torus, torus_index

    program, _, blocks, _ = _program(64, 0.44, 0.0)
    torus = ising_torus(program, pairwise_tables(program))
    states = _random_init(blocks, 4)
    words = jnp.stack([jnp.arange(4, dtype=jnp.uint32), jnp.full((4,), 9, jnp.uint32)], axis=1)
    ids = [np.asarray(program.gibbs_spec.node_ids(blocks[0].nodes))]
    counts = [n for n in (1, 2, 4) if n <= len(jax.devices())]
    index = torus_index(torus, ids)
    runs = [run_ising_torus(torus, SamplingSchedule(2, 2, 1), words, states, index, "jnp", jax.devices()[:n])[0]
            for n in counts]
    for run in runs[1:]:
        np.testing.assert_array_equal(np.asarray(run), np.asarray(runs[0]))


def _force_batched_route(monkeypatch, backend: str) -> list:
    """Send `sample_states_batched` calls of a recognised torus to the lattice kernel on `backend`; the
    returned list gets the lattice size each time the route is taken."""
    from heatbath.kernels import batched

    taken = []
    route = batched._torus_route
    monkeypatch.setattr(batched, "torus_backend", lambda devices=None: backend)
    monkeypatch.setattr(batched, "_torus_route", lambda *a: (lambda r: r and taken.append(r[0].L) or r)(route(*a)))
    return taken


def test_batched_call_takes_the_route_and_follows_the_thrml_style_chains(monkeypatch):
    """`sample_states_batched` on a torus runs the lattice kernel, and given the chain words of the
    THRML-style call's keys it gives that call's samples: the batched route samples what the routed
    THRML-style call samples, which the Kaufman test checks. An explicit method keeps its kernel."""
    from heatbath.kernels import batched

    taken = _force_batched_route(monkeypatch, "jnp")
    _force_route(monkeypatch, "jnp")
    program, _, blocks, _ = _program(64, 0.44, -0.2)
    init = _random_init(blocks, 4)
    schedule = SamplingSchedule(3, 3, 2)
    keys = jax.random.split(jax.random.key(5), 4)
    monkeypatch.setattr(batched, "chain_words_from_key", lambda key, chains: jax.vmap(dispatch.key_words_of)(keys))
    routed = batched.sample_states_batched(jax.random.key(0), program, schedule, init, [], blocks)
    assert taken == [64]
    call = jax.jit(jax.vmap(lambda k, a, b: sample_states(k, program, schedule, [a, b], [], blocks)))
    for a, b in zip(routed, call(keys, *init)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    pairwise = batched.sample_states_batched(jax.random.key(0), program, schedule, init, [], blocks, method="gather")
    assert taken == [64] and pairwise[0].shape == routed[0].shape


def test_batched_route_reads_weights_once_and_compiles_once_per_size(monkeypatch):
    """A loop of batched calls reads one program's weights once, and a temperature scan (new weights,
    same structure) reuses the compiled run: J and h are arguments."""
    from heatbath.kernels.batched import sample_states_batched
    from heatbath.kernels import ising_torus as module
    from heatbath.kernels import torus_run

    taken = _force_batched_route(monkeypatch, "jnp")
    reads, traced = [], []
    read, run_local = module._read_uniform_weights, torus_run._run_local
    monkeypatch.setattr(module, "_read_uniform_weights", lambda *a: reads.append(1) or read(*a))
    monkeypatch.setattr(torus_run, "_run_local", lambda *a, **k: traced.append(1) or run_local(*a, **k))
    schedule = SamplingSchedule(2, 2, 1)
    runs = []
    for J in (0.3, 0.3, 0.5):
        program, _, blocks, _ = _program(64, J, 0.0)
        init = _random_init(blocks, 2)
        for seed in (0, 1):
            runs.append(sample_states_batched(jax.random.key(seed), program, schedule, init, [], blocks)[0])
    assert taken == [64] * 6
    assert len(reads) == 3  # once per program (each _program call builds new weight arrays)
    assert len(traced) == 1
    assert not np.array_equal(np.asarray(runs[0]), np.asarray(runs[1]))  # the key matters
    np.testing.assert_array_equal(np.asarray(runs[0]), np.asarray(runs[2]))  # same key, same J: same samples


def test_batched_route_splits_whole_chains_only(monkeypatch):
    """Chains split over devices as the lattice kernel can (whole chains per device), with the samples
    of one device; a device count that does not divide the chains leaves the call on the pairwise path."""
    from heatbath.kernels.batched import sample_states_batched

    taken = _force_batched_route(monkeypatch, "jnp")
    program, _, blocks, _ = _program(64, 0.44, 0.0)
    init = _random_init(blocks, 4)
    schedule = SamplingSchedule(2, 2, 1)
    key = jax.random.key(3)
    counts = [n for n in (1, 2, 4) if n <= len(jax.devices())]
    runs = [sample_states_batched(key, program, schedule, init, [], blocks, devices=jax.devices()[:n])[1] for n in counts]
    assert taken == [64] * len(counts)
    for run in runs[1:]:
        np.testing.assert_array_equal(np.asarray(run), np.asarray(runs[0]))
    if len(jax.devices()) >= 3:
        sample_states_batched(key, program, schedule, init, [], blocks, devices=jax.devices()[:3])
        assert len(taken) == len(counts)


@pytest.mark.skipif(not pallas_available(), reason="the native kernel runs on a CUDA GPU")
def test_native_route_is_the_default_on_gpus_and_takes_the_jax_numpy_steps(monkeypatch):
    assert dispatch.torus_backend() == "pallas"
    _assert_backends_agree(monkeypatch, ("pallas", "jnp"), 128, 0.1, 64, SamplingSchedule(5, 3, 2))


def test_an_unknown_torus_backend_is_refused_with_the_fix():
    from heatbath.errors import HeatbathError
    from heatbath.kernels.torus_run import check_backend

    with pytest.raises(HeatbathError, match="backend must be one of .*'jnp' anywhere"):
        check_backend("cuda")
    check_backend("jnp")
