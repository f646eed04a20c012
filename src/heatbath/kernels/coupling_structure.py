"""What is known of a categorical program's couplings, for the GPU kernel to exploit.

A Potts coupling W[k, t] = J·δ(k, t) is diagonal: neighbour d adds J_d to θ_k only for k = c_d. The
categorical kernel then needs one weight load per neighbour (W_d[c_d, c_d]) instead of K (W_d[k, c_d]
for every k), and none when one J serves every neighbour of the block. Each free block gets a form:

- None: nothing known (general K × K couplings, or weights that are traced);
- DIAGONAL: every coupling matrix the block reads is square and zero off its diagonal;
- a float J: diagonal with J on every diagonal, and every node has the same number of neighbours in
  each source block (no padding slots, which must add nothing).

Forms can only be read off concrete weights. A THRML-style call, `jax.jit(jax.vmap(lambda k:
sample_states(k, program, ...)))`, closes over its program, so its weights are concrete while the call
is traced and the check costs one look at them per compilation. `sample_states_batched` and eager
calls read them before their compiled call, once per set of (immutable) weight arrays
(`known_coupling_forms`), and take DIAGONAL for one J so that new weights need no new compilation
(`reusable_forms`). Traced weights (a training step, a program passed as a jit argument) give None,
the general update. Every form adds the same numbers
(the general update adds the zeros explicitly), so all give the same samples.
"""

from __future__ import annotations

from typing import Literal, Union

import jax
import jax.numpy as jnp
import numpy as np

from heatbath.block_sampling import BlockSamplingProgram
from heatbath.kernels.identity_cache import IdentityCache
from heatbath.kernels.pairwise_tables import NeighbourTables
from heatbath.kernels.pallas_backend import pallas_runs_on
from heatbath.validation import is_concrete

__all__ = [
    "CouplingForm", "DIAGONAL", "coupling_forms", "known_coupling_forms", "reusable_forms", "call_forms", "inside_jit",
    "single_value",
]

DIAGONAL = "diagonal"
CouplingForm = Union[None, Literal["diagonal"], float]


def coupling_forms(program: BlockSamplingProgram, tables: NeighbourTables) -> tuple[CouplingForm, ...]:
    """The form of each free block's couplings (see the module docstring); None for spin programs."""
    if tables.kind != "categorical":
        return (None,) * len(tables.sources)
    return tuple(_block_form(program, tables, b) for b in range(len(tables.sources)))


def reusable_forms(forms: tuple[CouplingForm, ...] | None) -> tuple[CouplingForm, ...] | None:
    """DIAGONAL in place of one J. One J is a compile-time constant, so a compiled call that should
    serve every weight value (a temperature scan through `sample_states_batched`, eager calls) takes
    these forms and reads J from the weights instead of compiling again for each J."""
    return forms and tuple(DIAGONAL if isinstance(form, float) else form for form in forms)


def call_forms(program: BlockSamplingProgram, tables: NeighbourTables, devices, *, keep_j: bool) -> tuple[CouplingForm, ...] | None:
    """The forms a call on `devices` hands the categorical kernel: None where the kernel does not run
    (not all CUDA GPUs with Pallas); else `known_coupling_forms`, with one J kept as a constant only
    when `keep_j` (a jit that closes over its program), DIAGONAL in its place otherwise."""
    if not pallas_runs_on(tuple(devices)):
        return None
    forms = known_coupling_forms(program, tables)
    return forms if keep_j else reusable_forms(forms)


def inside_jit() -> bool:
    """Whether the caller runs while `jax.jit` traces it (jax.numpy then stages operations instead of
    running them). A jit that closes over a program compiles again for new weights anyway, so one J
    costs no extra compilation there.

    JAX's own answer reads the trace stack; where it is missing, whether a new array is a tracer
    tells the same, but an eager array costs a device dispatch (about 0.5 ms on an H200 host: two of
    them were a fifth of an eager Benford step)."""
    if _UNDER_A_JIT is not None:
        return _UNDER_A_JIT()
    return isinstance(jnp.zeros(()), jax.core.Tracer)


try:  # private, so looked up once with a fallback (tests/test_inside_jit.py compares the two)
    from jax._src.core import unsafe_am_i_under_a_jit as _UNDER_A_JIT
except ImportError:  # pragma: no cover - another JAX layout
    _UNDER_A_JIT = None


_KNOWN: IdentityCache[tuple[CouplingForm, ...]] = IdentityCache(32)


def known_coupling_forms(program: BlockSamplingProgram, tables: NeighbourTables) -> tuple[CouplingForm, ...]:
    """`coupling_forms`, remembered per set of weight arrays when they are all jax Arrays (immutable),
    so a loop calling `sample_states_batched` with one program looks at its weights (a copy from the
    GPU) once, not on every call. numpy weights can change in place, so they are read every time."""
    if tables.kind != "categorical":
        return coupling_forms(program, tables)
    leaves = []
    for b in range(len(tables.sources)):
        for j in tables.pair_interactions[b]:
            leaves += [program.per_block_interactions[b][j].weights, program.per_block_interaction_active[b][j]]
    return _KNOWN.read(tables, leaves, lambda: coupling_forms(program, tables))


def _block_form(program: BlockSamplingProgram, tables: NeighbourTables, b: int) -> CouplingForm:
    if tables.spin_blocks[b] or any(program.per_block_interactions[b][j].n_spin for j in tables.pair_interactions[b]):
        return None  # spins among categories: their weights are not [n, m, K, K_tail] (`block_couplings` makes them so)
    diagonals = []
    for j in tables.pair_interactions[b]:
        weights = program.per_block_interactions[b][j].weights  # [n, m, K, K_tail]
        active = program.per_block_interaction_active[b][j]  # [n, m]
        if not (is_concrete(weights) and is_concrete(active)) or weights.shape[-1] != weights.shape[-2]:
            return None
        w = np.asarray(jax.device_get(weights), np.float32)  # the kernel's table is float32
        used = np.asarray(jax.device_get(active), bool)
        off_diagonal = ~np.eye(w.shape[-1], dtype=bool)
        if np.any((used[..., None, None] & off_diagonal) & (w != 0)):  # NaN counts as nonzero
            return None
        diagonals.append(np.diagonal(w, axis1=2, axis2=3)[used])
    values = np.concatenate(diagonals) if diagonals else np.zeros(0)
    if values.size == 0:  # no coupling in use: nothing to gain
        return None
    J = single_value(values)
    padded = any(np.any(columns == tables.zero_columns[b]) for _, _, columns in tables.sources[b])
    return J if J is not None and not padded else DIAGONAL


def single_value(values: np.ndarray) -> float | None:
    """The value every entry of `values` holds, when they are all finite and equal; else None (also
    for no entries). Min and max, not a sort: a 4096² torus has 33 million couplings."""
    if values.size == 0 or not np.all(np.isfinite(values)):
        return None
    first = values.flat[0]
    return float(first) if values.min() == first == values.max() else None
