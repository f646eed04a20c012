"""KL gradients of any factorised EBM by autodiff of its energy over sampled states.

For p(x) ∝ exp(-E_θ(x)) with data on the visible nodes v, the gradient of KL(data ‖ model) is

    ∂KL/∂θ = E_data E_{h|v}[∂E/∂θ] − E_model[∂E/∂θ]      (positive phase − negative phase).

Each phase runs block Gibbs chains; at every recorded sample an observer adds ∂E/∂θ at the current
state (`jax.grad` of the model's energy with the state held fixed) to a running sum, so samples are
never stored. The gradient has the model's own PyTree structure, whatever its factors are.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Key, PyTree

from heatbath.block_management import Block, lookup_node_sd
from heatbath.block_sampling import sample_with_observation
from heatbath.errors import StateError
from heatbath.kernels.pieces import fold_kernel_samples
from heatbath.models.ebm import AbstractEBM
from heatbath.observers import AbstractObserver
from heatbath.train.moment_grads import moment_grad_sums
from heatbath.train.spec import TrainingSpec, _state_count
from heatbath.validation import is_concrete

__all__ = ["PhaseStats", "EnergyGradObserver", "energy_grad", "estimate_kl_grad"]


class PhaseStats(NamedTuple):
    """What one phase measured.

    - `grad`: the average of ∂E/∂θ over the phase's samples (same PyTree as the model; None for
      non-float leaves).
    - `grad_stderr`: its Monte Carlo standard error, from the spread between independent chains (NaN
      with a single chain; 0 where nothing is sampled, e.g. a fully visible positive phase).
    - `energy`: the average energy.
    - `final_state`: the free-block states at the last sample, shaped like the initial states (feed
      them back as the next initial state for persistent chains).
    """

    grad: PyTree
    grad_stderr: PyTree
    energy: Float[Array, ""]
    final_state: list[Array]


def energy_grad(ebm: AbstractEBM, state: list, blocks: Sequence[Block]) -> tuple[Float[Array, ""], PyTree]:
    """`(E(x), ∂E/∂θ)` at one state, gradients with respect to the model's float arrays only."""
    return eqx.filter_value_and_grad(lambda m: m.energy(list(state), list(blocks)))(ebm)


def grad_summer(ebm: AbstractEBM, blocks: Sequence[Block]):
    """`add((grad_sum, energy_sum), samples, clamped)`: the sums plus Σ_t ∂E/∂θ(x_t) and Σ_t E(x_t) over
    `samples` (per free block, a leading axis of samples) with the `clamped` values. From the samples'
    moments for discrete models (`moment_grads`), else by autodiff of the energy at each sample."""
    from_moments = moment_grad_sums(ebm, blocks)

    def add(sums, samples: list, clamped: list):
        if from_moments is not None:
            grad, energy = from_moments(list(samples), list(clamped))
            return jax.tree.map(jnp.add, sums[0], grad), sums[1] + energy

        def one(carry, free):
            grad_sum, energy_sum = carry
            energy, grad = energy_grad(ebm, list(free) + list(clamped), blocks)
            return (jax.tree.map(jnp.add, grad_sum, grad), energy_sum + energy.astype(jnp.float32)), None

        return jax.lax.scan(one, sums, list(samples))[0]

    return add


class EnergyGradObserver(AbstractObserver):
    """Accumulates Σ_t ∂E/∂θ(x_t) and Σ_t E(x_t) (`grad_summer`), and keeps the latest free state (for
    persistent chains)."""

    ebm: AbstractEBM

    def init_from(self, init_free_state) -> tuple:
        zeros = jax.tree.map(jnp.zeros_like, eqx.filter(self.ebm, eqx.is_inexact_array))
        return zeros, jnp.zeros((), jnp.float32), list(init_free_state)

    def __call__(self, program, state_free, state_clamped, carry, iteration):
        spec = program.gibbs_spec
        blocks = list(spec.free_blocks) + list(spec.clamped_blocks)
        one_sample = jax.tree.map(lambda x: jnp.asarray(x)[None], list(state_free))
        sums = grad_summer(self.ebm, blocks)(carry[:2], one_sample, list(state_clamped))
        return (*sums, list(state_free)), None


def _run_phase(key, ebm, program, schedule, init_state, clamped, vmapped_chains: int):
    """One chain: (mean ∂E/∂θ, mean energy, final free state).

    Programs the pairwise kernels run (Ising and Potts models, Boltzmann machines, pairwise
    categorical EBMs) sample on the kernels a piece at a time (`kernels.pieces`), and ∂E/∂θ is summed
    over each piece's samples (`grad_summer`); other programs run `EnergyGradObserver` on the generic
    loop, which adds each sample the same way. Both take the same samples of the chain: after the
    warm-up, then every `steps_per_sample` sweeps. `vmapped_chains`: how many chains the caller vmaps
    this over (sizes the pieces)."""
    observer = EnergyGradObserver(ebm)
    spec = program.gibbs_spec
    add = grad_summer(ebm, list(spec.free_blocks) + list(spec.clamped_blocks))
    carry_init = observer.init_from(init_state)  # (zero gradient sums, zero energy sum, the state)
    folded = fold_kernel_samples(key, program, schedule, list(init_state), list(clamped), add, carry_init[:2],
                                 vmapped_chains)
    if folded is None:
        carry, _ = sample_with_observation(key, program, schedule, list(init_state), list(clamped), carry_init, observer)
        grad_sum, energy_sum, final = carry
    else:
        (grad_sum, energy_sum), final = folded
    n = schedule.n_samples
    return jax.tree.map(lambda g: g / n, grad_sum), energy_sum / n, final


def _paired_phases(spec: TrainingSpec, ebm, positive: tuple, negative: tuple, cond: list):
    """Per-chain `(mean ∂E/∂θ, mean energy, final free state)` of both phases run in the same kernel
    launches (`paired_runs.fold_training_phases`, positive chains flattened); or None where they
    cannot run so (then each phase runs on its own, `_run_phase`)."""
    from heatbath.kernels.paired_runs import fold_training_phases

    def fold_of(program):
        blocks = list(program.gibbs_spec.free_blocks) + list(program.gibbs_spec.clamped_blocks)
        return grad_summer(ebm, blocks), EnergyGradObserver(ebm).init_from([])[:2]

    folded = fold_training_phases(positive, negative, cond, (spec.schedule_positive, spec.schedule_negative), fold_of)
    return None if folded is None else tuple((grad, energy, final) for (grad, energy), final in folded)


def _chain_mean_and_stderr(per_chain, has_batch_axis: bool):
    """Mean and standard error of per-chain averages: leaves [chains, (batch,) ...]."""

    def mean(g):
        return jnp.mean(g, axis=(0, 1) if has_batch_axis else 0)

    def stderr(g):
        n = g.shape[0]
        if n < 2:
            return jnp.full(g.shape[2:] if has_batch_axis else g.shape[1:], jnp.nan, g.dtype)
        var = jnp.var(g, axis=0, ddof=1)  # spread between independent chains (per data row)
        if has_batch_axis:
            return jnp.sqrt(jnp.mean(var, axis=0) / (n * var.shape[0]))
        return jnp.sqrt(var / n)

    return jax.tree.map(mean, per_chain), jax.tree.map(stderr, per_chain)


def _check_array_dtype(x, block: Block, ebm, what: str):
    """`x` in the storage dtype of `block`'s nodes; raises StateError for another kind of dtype and, where
    `x` is concrete, for a category outside the nodes' range (the sampler would fail deep inside XLA)."""
    sd = lookup_node_sd(block.node_type, ebm.node_shape_dtypes)
    want = np.dtype(jax.tree.leaves(sd)[0].dtype)
    have = np.dtype(jnp.result_type(x))
    ok = have == want or (want.kind in "iu" and have.kind in "iu") or (want.kind == "f" and have.kind == "f")
    if not ok:
        hint = " (spins are stored as bool: True is +1)" if want == np.bool_ else ""
        raise StateError(
            f"{what} has dtype {have}, but {block.node_type.__name__} nodes are stored as {want}{hint}; convert it."
        )
    if want.kind in "iu" and is_concrete(x) and np.size(x):
        _check_category_range(np.asarray(x), block, ebm, what)
    return jnp.asarray(x).astype(want)


def _check_category_range(x: np.ndarray, block: Block, ebm, what: str) -> None:
    count = _state_count(ebm, block, strict=False)
    low, high = int(x.min()), int(x.max())
    if count is not None and (low < 0 or high >= count):
        bad = low if low < 0 else high
        raise StateError(f"{what} holds the category {bad}, but {block.node_type.__name__} nodes of this model take "
                         f"0..{count - 1}; fix the data or give the nodes {bad + 1} or more categories.")


def check_block_counts(spec: TrainingSpec, data, conditioning_values, who: str = "") -> tuple[list, list]:
    """One data array per data block and one conditioning array per conditioning block, as lists."""
    data, cond = list(data), list(conditioning_values)
    if len(data) != len(spec.data_blocks):
        raise StateError(
            f"{who}Got {len(data)} data arrays for {len(spec.data_blocks)} data blocks; give one [batch, nodes] "
            "array per block."
        )
    if len(cond) != len(spec.conditioning_blocks):
        raise StateError(
            f"{who}Got {len(cond)} conditioning arrays for {len(spec.conditioning_blocks)} conditioning blocks; give "
            "one [nodes] array per block."
        )
    return data, cond


def _check_inputs(spec: TrainingSpec, data, conditioning_values, init_pos, init_neg):
    ebm = spec.ebm
    data, cond = check_block_counts(spec, data, conditioning_values)
    batch = None
    for i, (d, block) in enumerate(zip(data, spec.data_blocks)):
        shape = tuple(jnp.shape(d))
        if len(shape) != 2 or shape[1] != len(block):
            raise StateError(f"data[{i}] has shape {shape}; expected [batch, {len(block)}] (one row per example).")
        if batch is not None and shape[0] != batch:
            raise StateError(
                f"data[{i}] has {shape[0]} rows but data[0] has {batch}; all data arrays need the same batch."
            )
        batch = shape[0]
    if not batch:
        raise StateError("The data batch is empty; give at least one example.")
    for i, (c, block) in enumerate(zip(cond, spec.conditioning_blocks)):
        if tuple(jnp.shape(c)) != (len(block),):
            raise StateError(f"conditioning_values[{i}] has shape {tuple(jnp.shape(c))}; expected ({len(block)},).")
    data = [_check_array_dtype(d, b, ebm, f"data[{i}]") for i, (d, b) in enumerate(zip(data, spec.data_blocks))]
    cond = [
        _check_array_dtype(c, b, ebm, f"conditioning_values[{i}]")
        for i, (c, b) in enumerate(zip(cond, spec.conditioning_blocks))
    ]

    pos_blocks, neg_blocks = spec.positive_free_blocks, spec.negative_free_blocks
    init_pos = [] if init_pos is None else list(init_pos)
    if len(init_pos) != len(pos_blocks):
        raise StateError(
            f"init_state_positive has {len(init_pos)} arrays for {len(pos_blocks)} positive-phase free blocks."
        )
    n_pos = None
    for i, (x, block) in enumerate(zip(init_pos, pos_blocks)):
        shape = tuple(jnp.shape(x))
        if len(shape) != 3 or shape[1:] != (batch, len(block)) or (n_pos is not None and shape[0] != n_pos):
            raise StateError(
                f"init_state_positive[{i}] has shape {shape}; expected [n_chains, batch={batch}, {len(block)}]."
            )
        n_pos = shape[0]
    init_pos = [
        _check_array_dtype(x, b, ebm, f"init_state_positive[{i}]") for i, (x, b) in enumerate(zip(init_pos, pos_blocks))
    ]
    init_neg = list(init_neg)
    if len(init_neg) != len(neg_blocks):
        raise StateError(
            f"init_state_negative has {len(init_neg)} arrays for {len(neg_blocks)} negative-phase free blocks."
        )
    n_neg = None
    for i, (x, block) in enumerate(zip(init_neg, neg_blocks)):
        shape = tuple(jnp.shape(x))
        if len(shape) != 2 or shape[1] != len(block) or shape[0] < 1 or (n_neg is not None and shape[0] != n_neg):
            raise StateError(f"init_state_negative[{i}] has shape {shape}; expected [n_chains, {len(block)}].")
        n_neg = shape[0]
    init_neg = [
        _check_array_dtype(x, b, ebm, f"init_state_negative[{i}]") for i, (x, b) in enumerate(zip(init_neg, neg_blocks))
    ]
    return data, cond, init_pos, init_neg


def estimate_kl_grad(
    key: Key[Array, ""],
    spec: TrainingSpec,
    data: Sequence[Array],
    conditioning_values: Sequence[Array],
    init_state_positive: Sequence[Array] | None,
    init_state_negative: Sequence[Array],
) -> tuple[PyTree, PhaseStats, PhaseStats]:
    r"""Monte Carlo gradient of KL(data ‖ model) with respect to every float array of `spec.ebm`.

    **Arguments:**

    - `data`: one array [batch, nodes] per data block (the node storage dtype: bool spins, integer categories).
    - `conditioning_values`: one array [nodes] per conditioning block, clamped in both phases.
    - `init_state_positive`: one array [n_chains, batch, nodes] per positive free block (`n_chains`
      chains per data row); `None` or `[]` when the positive phase has nothing to sample.
    - `init_state_negative`: one array [n_chains, nodes] per negative free block.

    **Returns:** `(grads, positive_stats, negative_stats)`: `grads` has the PyTree structure of
    `spec.ebm` (e.g. `grads.biases`, `grads.factors[i].weights`) and equals
    `positive_stats.grad − negative_stats.grad` = E_data[∂E/∂θ] − E_model[∂E/∂θ]; descend along it.
    Works under `jit`: the programs are built from the (possibly traced) model here. On one CUDA GPU
    the two phases of a spin, categorical or mixed model share their kernel launches
    (`kernels.paired_runs`), with the same samples as one phase after the other.
    """
    data, cond, init_pos, init_neg = _check_inputs(
        spec, data, conditioning_values, init_state_positive, init_state_negative
    )
    ebm = spec.ebm
    key_pos, key_neg = jax.random.split(key)

    program_pos, program_neg = spec.program_positive(ebm), spec.program_negative(ebm)
    n_neg = init_neg[0].shape[0]
    keys_neg = jax.random.split(key_neg, n_neg)
    paired = None
    if program_pos is None:
        # Fully visible: the positive phase is an average over the data rows, with no sampling.
        blocks = list(spec.data_blocks) + list(spec.conditioning_blocks)
        energies, grads = jax.vmap(lambda row: energy_grad(ebm, list(row) + cond, blocks))(data)
        pos = PhaseStats(
            jax.tree.map(lambda g: jnp.mean(g, axis=0), grads),
            jax.tree.map(lambda g: jnp.zeros(g.shape[1:], g.dtype), grads),
            jnp.mean(energies),
            [],
        )
    else:
        n_chains, batch = init_pos[0].shape[:2]
        keys_pos = jax.random.split(key_pos, (n_chains, batch))
        # Both phases in the same kernel launches where they can (GPUs); else one after the other.
        paired = _paired_phases(spec, ebm, (program_pos, keys_pos, init_pos, data), (program_neg, keys_neg, init_neg), cond)

        def positive(k, init, row):
            return _run_phase(k, ebm, program_pos, spec.schedule_positive, init, list(row) + cond, n_chains * batch)

        if paired is None:
            over_batch = jax.vmap(positive, in_axes=(0, 0, 0))
            grads, energies, final = jax.vmap(over_batch, in_axes=(0, 0, None))(keys_pos, init_pos, data)
        else:
            grads, energies, final = jax.tree.map(lambda x: x.reshape((n_chains, batch) + x.shape[1:]), paired[0])
        mean, stderr = _chain_mean_and_stderr(grads, has_batch_axis=True)
        pos = PhaseStats(mean, stderr, jnp.mean(energies), final)

    def negative(k, init):
        return _run_phase(k, ebm, program_neg, spec.schedule_negative, init, cond, n_neg)

    grads, energies, final = jax.vmap(negative)(keys_neg, init_neg) if paired is None else paired[1]
    mean, stderr = _chain_mean_and_stderr(grads, has_batch_axis=False)
    neg = PhaseStats(mean, stderr, jnp.mean(energies), final)
    kl_grad = jax.tree.map(jnp.subtract, pos.grad, neg.grad)
    return kl_grad, pos, neg
