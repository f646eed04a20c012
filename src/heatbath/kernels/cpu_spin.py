"""The pairwise spin kernel compiled for the CPU with numba: a whole schedule in one call.

On XLA:CPU the jax.numpy sweeps of `pairwise_sweep` are bound by XLA's gathers and fusion choices
(about 0.3 flips/ns on Pegasus P(14) with 64 chains on two cores, measured). Here the same Markov
chain runs as one compiled loop nest (`cpu_spin_numba`), called from the traced program through
`jax.pure_callback`:

- chains are split into groups of `MAX_GROUP` (the last padded; 32 chains or fewer are padded to
  32, `GROUP_WIDTHS`), each group one `[rows, chains]` uint8 array (one byte per spin, 1 up), and
  the innermost loops run over a group's chains, which LLVM vectorises (with 512-bit registers on
  AVX-512 CPUs: `cpu_spin_numba.prefer_wide_vectors`); one or two chains are updated one chain at a
  time instead (`PER_CHAIN_GROUP`);
- a block update is split into tiles of (group, `cpu_spin_numba.ROWS_PER_TILE` rows) shared among the threads, so
  64 chains keep two cores busy as well as 10,000 chains do;
- one update is the pattern-table kernels' update (`table_spin.table_block_update_jnp`, the GPU's
  arithmetic): a node's neighbours in groups of five, each group's up/down pattern the index of a
  32-entry table of its share of the scaled field (`table_spin.pattern_tables`), the shares summed in
  group order, the same counter-based word (the per-sweep seeds are the same Threefry outputs), and
  up where `u · (1 + 2^s) < 1`. Sixteen chains' lookups are one permute instruction on AVX-512
  (`cpu_table_lookup`), where the neighbour-by-neighbour sum took three instructions a neighbour:
  on P(14) with 64 chains the kernel ran 1.3-2.0x faster on an AVX-512 CPU (measured, BENCHMARKS.md).

`2^s` is evaluated by range reduction and a degree-7 Taylor polynomial (truncation error below
1e-8 relative), written so that it vectorises; a call to libm would not. It may differ from XLA's
`exp2` in the last bit, so the two paths take the same steps except where u falls within float
rounding of the threshold (about once in 10^7 updates at most; the tests see none).
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, UInt32

from heatbath.kernels.pairwise_tables import NeighbourTables
from heatbath.kernels.table_spin import GROUP, TableLayout, node_hashes, pattern_tables, table_layouts

__all__ = ["cpu_kernel_available", "cpu_kernel_runs_on", "cpu_layouts", "run_spin_on_cpu", "MAX_GROUP"]

MAX_GROUP = 64  # chains per group: the vectorised loops run over a group's chains
# What groups of more than PER_CHAIN_GROUP chains are padded to. P(14), one thread: 32 chains in a
# group of 32 ran at 0.91-0.93 flips/ns against 0.55-0.67 padded to 64; a width of 16 gained nothing
# over 64 (0.23 against 0.25-0.30 flips/ns: LLVM unrolled its loops into scalar code).
GROUP_WIDTHS = (32, MAX_GROUP)
PER_CHAIN_GROUP = 2  # up to this many chains the kernel updates one chain at a time (no vector)
TABLE_ENTRIES = 1 << GROUP  # entries of one neighbour group's table (a pattern of GROUP = 5 spins)
LANES = 16  # chains of one table lookup (`cpu_table_lookup`): sixteen float32 lanes of an AVX-512 register


@functools.cache
def cpu_kernel_available() -> bool:
    """True where numba imports (it is a dependency; a platform without its wheels falls back)."""
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the platform
        return False
    return True


def cpu_kernel_runs_on(devices) -> bool:
    """True when numba is available and every one of `devices` is a CPU of this process (the kernel
    runs on the host that calls it; chains spread over several hosts stay on the jax.numpy sweep)."""
    here = jax.process_index()
    return cpu_kernel_available() and all(d.platform == "cpu" and d.process_index == here for d in devices)


def _compiled():
    """The kernel, `run(*arguments, apart)`: `cpu_spin_numba.run_groups_apart` where `apart`, else
    `run_schedule` (same arguments, same samples). numba compiles both on first use and keeps the
    machine code on disk for later processes."""
    from heatbath.kernels.cpu_spin_numba import run_groups_apart, run_schedule

    def run(*arguments):
        *arguments, apart = arguments
        return (run_groups_apart if apart else run_schedule)(*arguments)

    return run


def _kernel_threads() -> int:
    """numba's thread count, a per-thread setting: called on the kernel thread."""
    import numba

    return numba.get_num_threads()


class _KernelThread:
    """One long-lived thread of this process that makes every kernel call.

    numba's OpenMP layer gives each calling thread its own team of worker threads, and GNU OpenMP
    stops its workers from spinning between parallel regions once the teams together hold more
    threads than there are cores. A schedule launches two regions per block update (hundreds per
    call), so a sleeping worker's wake-up dominated: calls slowed about 3x, in every later call of
    the process, as soon as one call had come from a second thread, for instance an XLA worker
    thread running the `pure_callback` (measured on the 2-core CI machine). Calls funnelled through
    this thread keep a single team; they also never overlap, which numba's thread pools require."""

    def __init__(self):
        self._lock = threading.Lock()
        self._executor = None
        self._pid = None

    def call(self, fn, *args):
        with self._lock:
            if self._executor is None or self._pid != os.getpid():  # (none survives a fork)
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="heatbath-cpu-kernel")
                self._pid = os.getpid()
            return self._executor.submit(fn, *args).result()


_KERNEL_THREAD = _KernelThread()


def cpu_layouts(tables: NeighbourTables) -> tuple[TableLayout | None, ...]:
    """Every free block's pattern-table layout as the CPU kernel reads it: any number of neighbour
    groups a node, nodes in block order (None where a block cannot take the table update)."""
    return table_layouts(tables, max_groups=None, ordered=False)


@functools.lru_cache(maxsize=32)
def _static_layout(tables: NeighbourTables, order: tuple[tuple[int, ...], ...]) -> dict[str, np.ndarray]:
    """The program's structure as the kernel reads it (numpy, built once per program structure).

    Rows are global (every block's nodes in block order, free blocks first, then one scratch row that
    padding slots read). `neighbours` `[free rows, 5 G]` holds each free row's neighbour rows in
    `table_spin` layout (groups of five, G the most groups of any block, padding at the scratch row);
    `groups[b]` is free block b's count, and `table_starts[i]` where row i's tables begin in
    `_row_tables`. The indices are unsigned, so numba compiles no negative-index wraparound into the
    kernel's loops."""
    layouts = cpu_layouts(tables)
    starts = np.cumsum([0, *tables.block_sizes])
    n_free = len(tables.sources)
    groups = np.asarray([layout.groups for layout in layouts], np.int64)
    neighbours = np.full((int(starts[n_free]), GROUP * int(groups.max())), starts[-1], np.uint32)
    for b, layout in enumerate(layouts):
        neighbours[starts[b] : starts[b + 1], : layout.neighbours.shape[1]] = layout.neighbours
    per_row = np.repeat(groups * TABLE_ENTRIES, tables.block_sizes[:n_free])
    return dict(
        neighbours=neighbours,
        groups=groups,
        table_starts=(np.cumsum(per_row) - per_row).astype(np.uint64),
        hashes=node_hashes(np.concatenate(tables.node_ids[:n_free])),
        row_block=np.repeat(np.arange(n_free), tables.block_sizes[:n_free]).astype(np.int64),
        order_blocks=np.asarray([b for members in order for b in members], np.int64),
        order_splits=np.cumsum([0, *(len(members) for members in order)]).astype(np.int64),
        rows=np.concatenate([np.arange(starts[b], starts[b + 1]) for members in order for b in members]).astype(np.int64),
        row_splits=np.cumsum([0, *(sum(tables.block_sizes[b] for b in members) for members in order)]).astype(np.int64),
    )


def _row_tables(tables: NeighbourTables, bias, couplings) -> Float[Array, " entries"]:
    """Every free row's pattern tables (`table_spin.pattern_tables`: scaled partial fields, the bias
    in group 0), row after row, each with its block's number of groups (`table_starts`)."""
    out = []
    for b, layout in enumerate(cpu_layouts(tables)):
        parts = couplings[b] if couplings[b] else [jnp.zeros((tables.block_sizes[b], 0), jnp.float32)]
        flat = jnp.concatenate(parts, axis=1).astype(jnp.float32)
        out.append(pattern_tables(layout, jnp.asarray(bias[b], jnp.float32), flat).reshape(-1))
    return jnp.concatenate(out)


def _group_size(chains: int, threads: int = 1) -> int:
    """Chains per group: the narrowest of GROUP_WIDTHS that holds them all, else MAX_GROUP (the padded
    chains thrown away), so that the kernel's loops have lengths known at compile time (P(14), one
    thread, `bench/cpu_spin_probe.py`: with loops of run-time length 16 chains ran at 0.18 flips/ns
    and 64 chains took 1.75x longer for their field, BENCHMARKS.md); but with several threads, up
    to MAX_GROUP chains take the narrowest width, so that each thread can take whole groups
    (`_groups_apart`). Up to PER_CHAIN_GROUP chains stay as they are: the kernel updates them one
    chain at a time."""
    if chains <= PER_CHAIN_GROUP:
        return int(chains)
    narrow, wide = GROUP_WIDTHS
    return narrow if chains <= (wide if threads > 1 else narrow) else wide


def _groups_apart(groups: int, threads: int) -> bool:
    """Whether each thread runs whole groups' schedules (`run_groups_apart`, no barriers) rather than
    sharing every block update: where the groups spread evenly over the threads, or there are so
    many that an uneven last round costs little."""
    return threads > 1 and (groups % threads == 0 or groups >= 4 * threads)


def run_spin_on_cpu(
    tables: NeighbourTables,
    order: tuple[tuple[int, ...], ...],
    schedule,
    bias: list[Float[Array, " n"]],
    couplings: list[list[Float[Array, "n d"]]],
    chain_words: UInt32[Array, "chains 2"],
    block_states: list[Bool[Array, "chains n"]],
    observed_ids: list[np.ndarray],
) -> list[Array]:
    """Samples `[chains, n_samples, len(block)]` (bool) of every observed block: the pairwise spin
    kernel's schedule run by the compiled CPU kernel. `bias[b]` and `couplings[b]` are free block
    b's field terms (`block_couplings`), `block_states` every block's spins (free, then clamped)."""
    if not observed_ids:
        return []
    row_tables = _row_tables(tables, bias, couplings)
    flat_state = jnp.concatenate(block_states, axis=1)
    observed = jnp.concatenate([jnp.asarray(ids, jnp.int32) for ids in observed_ids])
    chains = chain_words.shape[0]
    sizes = [int(ids.shape[0]) for ids in observed_ids]
    out_types = [jax.ShapeDtypeStruct((chains, schedule.n_samples, size), jnp.bool_) for size in sizes]

    host = _host_call(tables, order, schedule, tuple(sizes))
    return jax.pure_callback(host, out_types, row_tables, flat_state, chain_words, observed, vmap_method="expand_dims")


@functools.lru_cache(maxsize=32)  # NeighbourTables hash by identity; as many as _static_layout keeps
def _host_call(tables: NeighbourTables, order: tuple, schedule, sizes: tuple[int, ...]):
    """The host side of `run_spin_on_cpu` for one (structure, schedule, observed sizes).

    One function object per such call, not a new closure per call: an eager call (a `sample_states`
    outside `jit`) compiles its `pure_callback` once per callback object, which cost about 20 ms per
    call when every call made its own.

    A `jax.vmap` around the traced call (one that the kernel's own batching did not take, such as the
    positive phase of a gradient, mapped over data rows and then over chains) reaches the host as
    leading batch axes of its arrays (`vmap_method="expand_dims"`: size 1 where an argument is not
    mapped). Where only the states and chain words are mapped, every mapped chain is one more chain of
    a single kernel call, which gives each chain the samples of its own call (its stream is its chain
    words); mapped couplings run one kernel call per batch element. Sequential batching made one call
    per element instead: in the KL-gradient test (2,000 chains for each of 6 data rows) the positive
    phase made 2,000 calls of 6 chains, 72 s under a profiler on the 2-core VM; the two phases now take
    two calls, 3.5 s with the kernel's first load from numba's cache."""
    layout = _static_layout(tables, order)

    def run_on_kernel_thread(tables_np, state_np, words_np, observed_np):
        chains = state_np.shape[0]
        kernel = _compiled()
        threads = _kernel_threads()
        group = _group_size(chains, threads)
        groups = -(-chains // group)
        padded = groups * group
        state = np.zeros((state_np.shape[1] + 1, padded), np.uint8)  # and the scratch row
        state[:-1, :chains] = state_np.T
        state = np.ascontiguousarray(state.reshape(-1, groups, group).transpose(1, 0, 2))
        words = np.zeros((padded, 2), np.uint32)
        words[:chains] = words_np
        key0, key1 = (np.ascontiguousarray(words[:, k].reshape(groups, group)) for k in (0, 1))
        out = np.empty((groups, schedule.n_samples, len(observed_np), group), np.bool_)
        kernel(
            state, layout["neighbours"], np.ascontiguousarray(tables_np, np.float32), layout["table_starts"],
            layout["groups"], layout["hashes"], layout["row_block"], layout["order_blocks"], layout["order_splits"],
            layout["rows"], layout["row_splits"],
            key0, key1, len(tables.sources), schedule.n_warmup, schedule.n_samples, schedule.steps_per_sample,
            observed_np.astype(np.int64), out, _groups_apart(groups, threads),
        )
        return out.transpose(0, 3, 1, 2).reshape(padded, schedule.n_samples, len(observed_np))[:chains]

    def run(*arrays):  # the layout, the thread count and the kernel all on the kernel thread: one hop a call
        return _KERNEL_THREAD.call(run_on_kernel_thread, *arrays)

    def host(*arrays):
        row_tables, state, words, observed = (np.asarray(a) for a in arrays)
        batch = np.broadcast_shapes(row_tables.shape[:-1], state.shape[:-2], words.shape[:-2], observed.shape[:-1])
        chains = state.shape[-2]
        if math.prod(batch) == 0:  # a map over no elements
            return [np.zeros(batch + (chains, schedule.n_samples, size), np.bool_) for size in sizes]
        if all(math.prod(shape) == 1 for shape in (row_tables.shape[:-1], observed.shape[:-1])):
            samples = run(row_tables.reshape(-1),
                          np.broadcast_to(state, batch + state.shape[-2:]).reshape(-1, state.shape[-1]),
                          np.broadcast_to(words, batch + words.shape[-2:]).reshape(-1, 2), observed.reshape(-1))
        else:
            arrays = [np.broadcast_to(a, batch + a.shape[a.ndim - k:])
                      for a, k in ((row_tables, 1), (state, 2), (words, 2), (observed, 1))]
            samples = np.concatenate([run(*(a[index] for a in arrays)) for index in np.ndindex(*batch)])
        samples = samples.reshape(batch + (chains,) + samples.shape[1:])
        return [np.ascontiguousarray(part) for part in np.split(samples, np.cumsum(sizes)[:-1], axis=-1)]

    return host
