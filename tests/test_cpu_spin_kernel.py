"""The compiled CPU kernel (`kernels.cpu_spin`) takes the same steps as the pattern-table kernels'
jax.numpy twin (`method="table-jnp"`), so it samples the same distribution; the exact-enumeration
tests of `test_pairwise_kernels` run through it on the CPU, and the tests here check it against the
jax.numpy path step for step, on every instruction set its table lookup has a version for."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import Block, BlockGibbsSpec, FactorSamplingProgram, SamplingSchedule
from heatbath.graphs import color_blocks
from heatbath.kernels import cpu_spin, pairwise_sweep
from heatbath.kernels.batched import chain_words_from_key
from heatbath.models import SpinGibbsConditional
from test_exact_agreement import _program
from test_pairwise_kernels import pairwise_spin_model

pytestmark = pytest.mark.skipif(not cpu_spin.cpu_kernel_available(), reason="numba is not installed")


def _both_paths(program, schedule, chains: int, observed_nodes, clamp=(), seed=3, reference="table-jnp"):
    """Samples of the same chains from the compiled kernel and from the jax.numpy path `reference`
    (None: the kernel's alone)."""
    rng = np.random.default_rng(seed)
    spec = program.gibbs_spec
    free = [jnp.asarray(rng.random((chains, len(b))) < 0.5) for b in spec.free_blocks]
    states = free + [jnp.broadcast_to(c, (chains, c.shape[0])) for c in clamp]
    observed = [np.asarray(spec.node_ids(nodes), np.int32) for nodes in observed_nodes]
    words = chain_words_from_key(jax.random.key(seed), chains)

    def run(cpu_kernel: bool):
        out = pairwise_sweep.run_pairwise(program, schedule, words, states, observed, devices=jax.devices("cpu")[:1],
                                          cpu_kernel=cpu_kernel, method="auto" if cpu_kernel else reference)
        return [np.asarray(x) for x in out]

    return run(True), None if reference is None else run(False)


@pytest.mark.parametrize("chains", [1, 2, 5, 13, 64, 150])
def test_same_steps_as_jax_numpy(chains):
    """Any chain count (one chain at a time, a partial group, full groups of MAX_GROUP, several
    groups): identical samples."""
    spins, _, ebm = pairwise_spin_model(np.random.default_rng(5), 30)
    program = _program(ebm, color_blocks(ebm), [], 2)
    compiled, reference = _both_paths(program, SamplingSchedule(5, 7, 3), chains, [spins, spins[3:9]])
    assert compiled[0].shape == (chains, 7, 30) and compiled[1].shape == (chains, 7, 6)
    assert compiled[0].dtype == np.bool_
    for a, b in zip(compiled, reference):
        np.testing.assert_array_equal(a, b)
    assert 0.2 < compiled[0].mean() < 0.8  # the chains move


def test_same_steps_with_clamped_nodes_and_superblocks():
    """Clamped nodes enter the field, and the blocks of a superblock read the states from before it;
    still identical to jax.numpy."""
    spins, _, ebm = pairwise_spin_model(np.random.default_rng(9), 14)
    clamped = Block(spins[:3])
    colours = color_blocks(ebm, nodes=spins[3:])
    halves = [Block(colours[0].nodes[::2]), Block(colours[0].nodes[1::2])]  # one colour: they never interact
    spec = BlockGibbsSpec([tuple(halves), *colours[1:]], [clamped], ebm.node_shape_dtypes)
    program = FactorSamplingProgram(spec, [SpinGibbsConditional() for _ in spec.free_blocks], ebm.factors, [])
    assert len(spec.sampling_order[0]) == 2
    clamp = [jnp.asarray([True, False, True])]
    compiled, reference = _both_paths(program, SamplingSchedule(3, 5, 2), 40, [spins], clamp=clamp)
    np.testing.assert_array_equal(compiled[0], reference[0])
    np.testing.assert_array_equal(compiled[0][:, :, :3], np.broadcast_to([True, False, True], (40, 5, 3)))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the default devices are not CPUs")
def test_groups_apart_or_sharing_each_update_give_the_same_samples(monkeypatch):
    """Each thread running whole groups (`run_groups_apart`) or all threads sharing every block update
    (`run_schedule`): the same arithmetic per chain, so the same samples, for either group width."""
    spins, _, ebm = pairwise_spin_model(np.random.default_rng(8), 30)
    program = _program(ebm, color_blocks(ebm), [], 2)
    for chains, threads in ((64, 2), (256, 1)):
        monkeypatch.setattr(cpu_spin, "_kernel_threads", lambda threads=threads: threads)
        runs = []
        for apart in (False, True):
            monkeypatch.setattr(cpu_spin, "_groups_apart", lambda groups, threads, apart=apart: apart)
            runs.append(_both_paths(program, SamplingSchedule(3, 4, 2), chains, [spins]))
        np.testing.assert_array_equal(runs[0][0][0], runs[1][0][0])
        np.testing.assert_array_equal(runs[0][0][0], runs[0][1][0])


def test_blocks_of_different_widths_take_the_same_steps():
    """Hubs of 12 or 23 neighbours (three and five tables) beside leaves of one or two (one table):
    each block reads its own number of tables, flat, and the chains step as on the jax.numpy path."""
    from heatbath import SpinNode
    from heatbath.models import IsingEBM, IsingSamplingProgram

    rng = np.random.default_rng(17)
    hubs, leaves = [SpinNode() for _ in range(3)], [SpinNode() for _ in range(100)]  # sparse: no dense layer
    edges = [(hubs[0], leaf) for leaf in leaves[:12]] + [(hubs[1], leaf) for leaf in leaves[10:33]]
    edges += [(hubs[2], leaf) for leaf in leaves[30:40]]
    ebm = IsingEBM(hubs + leaves, edges, jnp.asarray(rng.normal(0, 0.5, 103), jnp.float32),
                   jnp.asarray(rng.normal(0, 0.6, len(edges)), jnp.float32), jnp.asarray(1.0))
    program = IsingSamplingProgram(ebm, [Block(hubs), Block(leaves)], [])
    groups = [layout.groups for layout in cpu_spin.cpu_layouts(pairwise_sweep.pairwise_tables(program))]
    assert groups == [5, 1]
    compiled, reference = _both_paths(program, SamplingSchedule(3, 6, 2), 40, [hubs + leaves])
    np.testing.assert_array_equal(compiled[0], reference[0])
    assert 0.2 < compiled[0].mean() < 0.8


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the default devices are not CPUs")
def test_thrml_style_call_uses_the_compiled_kernel_on_cpu(monkeypatch):
    """`jit(vmap(sample_states))` on the CPU reaches the compiled kernel (and gives what it gives)."""
    from heatbath import sample_states

    calls = []
    original = cpu_spin._compiled

    def counting():
        calls.append(1)
        return original()

    monkeypatch.setattr(cpu_spin, "_compiled", counting)
    spins, _, ebm = pairwise_spin_model(np.random.default_rng(11), 8)
    blocks = color_blocks(ebm)
    program = _program(ebm, blocks, [], 2)
    init = [jnp.zeros(len(b), bool) for b in blocks]
    run = jax.jit(jax.vmap(lambda k: sample_states(k, program, SamplingSchedule(2, 3, 1), init, [], [Block(spins)])))
    out = run(jax.random.split(jax.random.key(0), 5))[0]
    assert out.shape == (5, 3, 8) and calls


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the default devices are not CPUs")
def test_a_second_eager_call_compiles_nothing():
    """An eager `sample_states` (outside `jit`, as THRML's first example calls it) reaches the kernel
    through a `pure_callback`, which JAX compiles once per callback object: the second call with the
    same program and schedule must find it compiled (a new closure per call cost 20 ms a call)."""
    from jax import monitoring

    from heatbath import sample_states

    spins, _, ebm = pairwise_spin_model(np.random.default_rng(5), 8)
    blocks = color_blocks(ebm)
    program = _program(ebm, blocks, [], 2)
    init = [jnp.zeros(len(b), bool) for b in blocks]
    call = lambda seed: sample_states(jax.random.key(seed), program, SamplingSchedule(2, 3, 1), init, [], [Block(spins)])  # noqa: E731
    first = jax.block_until_ready(call(0))
    compiles = []

    def listen(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(seconds)

    monitoring.register_event_duration_secs_listener(listen)
    try:
        second = jax.block_until_ready(call(0))
        jax.block_until_ready(call(1))
    finally:
        monitoring.unregister_event_duration_listener(listen)
    assert compiles == []
    np.testing.assert_array_equal(np.asarray(second[0]), np.asarray(first[0]))


def test_a_map_around_the_kernel_is_one_call_of_all_its_chains(monkeypatch):
    """A `jax.vmap` around the traced kernel call (as the positive phase of a gradient maps over data
    rows, each with its own clamped values) reaches the host as leading axes: one kernel call of all
    the mapped chains, each chain with the samples of its own call. Mapped weights run one call per
    element, with the same samples as separate calls."""
    from heatbath.kernels.pairwise_sweep import all_sweep_params
    from heatbath.kernels.pairwise_tables import pairwise_tables

    calls = []
    original = cpu_spin._compiled
    monkeypatch.setattr(cpu_spin, "_compiled", lambda: calls.append(1) or original())
    rng = np.random.default_rng(12)
    spins, _, ebm = pairwise_spin_model(rng, 14)
    clamped = Block(spins[:3])
    program = _program(ebm, color_blocks(ebm, nodes=spins[3:]), [clamped], 2)
    tables = pairwise_tables(program)
    bias, couplings = zip(*all_sweep_params(program, tables))
    order = tuple(tuple(members) for members in program.gibbs_spec.sampling_order)
    schedule, chains = SamplingSchedule(3, 4, 2), 10
    free = [jnp.asarray(rng.random((chains, len(b))) < 0.5) for b in program.gibbs_spec.free_blocks]
    observed = [np.asarray(program.gibbs_spec.node_ids(spins), np.int32)]

    def run(clamp_row, words, bias):
        states = free + [jnp.broadcast_to(clamp_row, (chains, 3))]
        return cpu_spin.run_spin_on_cpu(tables, order, schedule, list(bias), list(couplings), words, states, observed)[0]

    rows = jnp.asarray(rng.random((4, 3)) < 0.5)
    words = jnp.stack([chain_words_from_key(jax.random.key(r), chains) for r in range(4)])
    separate = [np.asarray(run(rows[r], words[r], bias)) for r in range(4)]
    calls.clear()
    mapped = jax.jit(jax.vmap(run, in_axes=(0, 0, None)))(rows, words, bias)
    assert len(calls) == 1  # 4 x 10 chains in one kernel call
    for r in range(4):
        np.testing.assert_array_equal(np.asarray(mapped[r]), separate[r])
    nested = jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, 0, None)), in_axes=(0, None, None)))(rows[:2], words, bias)
    assert nested.shape == (2, 4, chains, 4, 14) and len(calls) == 2
    np.testing.assert_array_equal(np.asarray(nested[1, 3]), np.asarray(run(rows[1], words[3], bias)))

    shifted = [tuple(b + shift for b in bias) for shift in (-1.0, 1.0)]
    calls.clear()
    per_weight = jax.jit(jax.vmap(run, in_axes=(None, None, 0)))(rows[0], words[0], jax.tree.map(lambda *x: jnp.stack(x), *shifted))
    assert len(calls) == 2  # one call per mapped weight
    for w, b in enumerate(shifted):
        np.testing.assert_array_equal(np.asarray(per_weight[w]), np.asarray(run(rows[0], words[0], b)))
    assert np.asarray(per_weight[0]).mean() < np.asarray(per_weight[1]).mean()  # the weights reached the kernel


def test_every_call_runs_on_the_one_kernel_thread(monkeypatch):
    """Calls from the main thread and from another thread (as an XLA worker makes them) all run on
    the same kernel thread, so numba keeps one OpenMP team (see `cpu_spin._KernelThread`)."""
    import threading

    threads = []
    original = cpu_spin._compiled

    def recording():
        run = original()

        def run_and_record(*args):
            threads.append(threading.current_thread())
            return run(*args)

        return run_and_record

    monkeypatch.setattr(cpu_spin, "_compiled", recording)
    spins, _, ebm = pairwise_spin_model(np.random.default_rng(4), 10)
    program = _program(ebm, color_blocks(ebm), [], 2)
    main_thread, _ = _both_paths(program, SamplingSchedule(2, 2, 1), 16, [spins])
    other = {}
    caller = threading.Thread(target=lambda: other.update(out=_both_paths(program, SamplingSchedule(2, 2, 1), 16, [spins])))
    caller.start()
    caller.join()
    np.testing.assert_array_equal(other["out"][0][0], main_thread[0])
    assert len(threads) == 2 and threads[0] is threads[1]
    assert threads[0] is not threading.main_thread() and threads[0].name.startswith("heatbath-cpu-kernel")


def test_without_numba_the_jax_numpy_sweep_runs(monkeypatch):
    spins, _, ebm = pairwise_spin_model(np.random.default_rng(5), 10)
    program = _program(ebm, color_blocks(ebm), [], 2)
    _, reference = _both_paths(program, SamplingSchedule(2, 2, 1), 16, [spins], reference="gather")
    monkeypatch.setattr(pairwise_sweep, "cpu_kernel_runs_on", lambda devices: False)
    fallback, _ = _both_paths(program, SamplingSchedule(2, 2, 1), 16, [spins])
    np.testing.assert_array_equal(fallback[0], reference[0])


def test_exp2_polynomial_matches_exp2_to_float_precision():
    """The kernel's 2^s (nearest-integer reduction, degree-7 polynomial, exponent bits) over the whole
    range that decides a spin, against float64: within 4 float32 ulps."""
    from heatbath.kernels.cpu_spin_numba import exp2_parts

    s = np.linspace(-126.0, 126.0, 40001).astype(np.float32)
    got = np.asarray([float(p) * float(two_k) for p, two_k in map(exp2_parts, s)])
    want = np.exp2(s.astype(np.float64))
    assert np.max(np.abs(got / want - 1)) < 4 * 2.0**-23


_ISA_SCRIPT = """
import sys
import numpy as np
from numba.core import config
from heatbath.kernels.cpu_table_lookup import instruction_set
from test_cpu_spin_kernel import _isa_samples
np.save(sys.argv[1], _isa_samples())
print(instruction_set(config.CPU_FEATURES))
"""


def _isa_samples():
    """The kernel's samples of a fixed model (one chain at a time, groups of every width)."""
    spins, _, ebm = pairwise_spin_model(np.random.default_rng(21), 30)
    program = _program(ebm, color_blocks(ebm), [], 2)
    return np.concatenate([_both_paths(program, SamplingSchedule(4, 3, 2), chains, [spins], reference=None)[0][0].reshape(-1)
                           for chains in (1, 24, 40, 128)])


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_every_instruction_set_draws_the_same_samples(isa, tmp_path):
    """The table lookup has a version per instruction set (`cpu_table_lookup`). Each compiles in a
    process of its own (numba fixes its target features at import) and must give this process's
    samples bit for bit, which `test_same_steps_as_jax_numpy` ties to the jax.numpy table path."""
    import os
    import subprocess
    import sys

    import llvmlite.binding as llvm

    host = llvm.get_host_cpu_features()
    if not host.get("avx2", False):
        pytest.skip("the host is not an x86-64 CPU with AVX2")
    off = ("avx512",) if isa == "avx2" else ("avx", "fma", "f16c", "xop", "vaes", "vpclmulqdq", "gfni")
    features = ",".join(("-" if k.startswith(off) else "+" if on else "-") + k for k, on in host.items())
    path = os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")]))
    # One kernel thread: only `run_schedule` compiles there (both runners hold the same lookup, and the
    # samples do not depend on the runner), about 8 s less of the subprocess's compiling.
    env = dict(os.environ, NUMBA_CPU_FEATURES=features, NUMBA_CACHE_DIR=str(tmp_path), JAX_PLATFORMS="cpu",
               PYTHONPATH=path, NUMBA_NUM_THREADS="1")
    out = tmp_path / "samples.npy"
    done = subprocess.run([sys.executable, "-c", _ISA_SCRIPT, str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == isa
    mine = _isa_samples()
    np.testing.assert_array_equal(np.load(out), mine)
    assert 0.2 < mine.mean() < 0.8


def test_wide_vector_attribute_reaches_the_machine_code():
    """`prefer_wide_vectors` marks a prange body for 512-bit vectors (the CPU kernel's 1.2-1.35x on
    AVX-512 hosts): a chain loop compiled with it uses zmm registers there."""
    import llvmlite.binding as llvm
    from numba import njit, prange

    from heatbath.kernels.cpu_spin_numba import prefer_wide_vectors

    if "+avx512f" not in llvm.get_host_cpu_features().flatten():
        pytest.skip("the host has no AVX-512")

    def chain_loop(wide: bool):
        @njit(parallel=True)
        def scale(x, out):
            for t in prange(x.shape[0]):
                if wide:
                    prefer_wide_vectors()
                for c in range(x.shape[1]):
                    out[t, c] = x[t, c] * np.float32(3.0) + np.float32(1.0)

        x = np.ones((2, 64), np.float32)
        scale(x, np.empty_like(x))
        return "\n".join(scale.inspect_asm().values())

    assert "zmm" in chain_loop(True)
    # (Without the attribute LLVM keeps to 256 bits on the Intel CPUs it tunes that way, which is the
    # point; on a CPU tuned for 512-bit vectors it would use zmm either way.)


def test_a_group_other_than_the_compiled_widths_is_refused():
    """The kernel's vector loops run over one of GROUP_WIDTHS chains (its per-row scratch on the
    stack holds the widest); any other group wider than PER_CHAIN_GROUP must raise, never read or
    write past a row."""
    from heatbath.kernels.cpu_spin_numba import run_schedule

    def run(chains):
        i64 = lambda *v: np.asarray(v, np.int64)  # noqa: E731
        state = np.ones((1, 3, chains), np.uint8)
        out = np.empty((1, 1, 2, chains), np.bool_)
        keys = np.zeros((1, chains), np.uint32)
        neighbours = np.asarray([[1, 2, 2, 2, 2], [0, 2, 2, 2, 2]], np.uint32)
        run_schedule(state, neighbours, np.full(64, 0.5, np.float32), np.asarray([0, 32], np.uint64), i64(1, 1),
                     np.arange(2, dtype=np.uint32), i64(0, 1), i64(0, 1), i64(0, 1, 2), i64(0, 1), i64(0, 1, 2), keys, keys,
                     2, 3, 1, 1, i64(0, 1), out)
        return out

    for chains in (cpu_spin.PER_CHAIN_GROUP, *cpu_spin.GROUP_WIDTHS):
        assert run(chains).shape == (1, 1, 2, chains)
    for chains in (cpu_spin.PER_CHAIN_GROUP + 1, 16, 48, cpu_spin.MAX_GROUP + 1):
        with pytest.raises(ValueError, match="GROUP_WIDTHS"):
            run(chains)
