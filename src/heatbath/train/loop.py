"""`fit`: persistent-contrastive-divergence training of a factorised EBM with an optax optimiser.

Each step draws a minibatch, runs the positive phase from fresh random chains and the negative phase
from the persistent chains of the previous step, and applies the optimiser to the KL gradient. The
step is one `eqx.filter_jit` function whose arguments keep the same structure from step to step (the
model's arrays change, its blocks and the programs' index tables do not), so it compiles once.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Key, PyTree
from tqdm.auto import tqdm

from heatbath.errors import HeatbathError
from heatbath.kernels.pairwise_sweep import runs_spin_kernel_on_cpu
from heatbath.train.gradients import _check_array_dtype, check_block_counts, estimate_kl_grad
from heatbath.train.metrics import ExactKL, exact_kl, exact_kl_table, pseudo_log_likelihood
from heatbath.train.spec import TrainingSpec

__all__ = ["FitResult", "fit", "default_trainable", "train_step"]

_TRACES = {"train_step": 0}  # how many times the step was traced (tests check it stays at 1)


class FitResult(NamedTuple):
    """The trained model, the optimiser state, the persistent negative chains and the per-step log."""

    ebm: PyTree
    opt_state: PyTree
    negative_state: list[Array]
    history: dict[str, np.ndarray]


def default_trainable(ebm: PyTree) -> PyTree:
    """Train every float array except an inverse temperature `beta` (it only rescales the other parameters)."""
    mask = jax.tree.map(eqx.is_inexact_array, ebm)
    if isinstance(getattr(ebm, "beta", None), jax.Array):
        mask = eqx.tree_at(lambda m: m.beta, mask, False)
    return mask


@eqx.filter_jit
def train_step(
    spec: TrainingSpec,
    opt_state: PyTree,
    optimizer: optax.GradientTransformation,
    trainable: PyTree,
    key: Key[Array, ""],
    data: list[Array],
    conditioning_values: list[Array],
    negative_state: list[Array],
    n_chains_positive: int,
    kl_table: ExactKL | None,
    pll_counts: tuple[int, ...] | None,
    layout: "StepLayout | None" = None,
):
    """One PCD step; returns `(new spec, new optimiser state, negative chains, metrics)`.

    `layout` (`StepLayout.of`, with several devices): the shardings the step's arguments were given,
    which its results are given too, so that every step's arguments match the first one's and `fit`
    compiles the step once. (With four devices the sampler returned its chains split over them and
    the updated parameters replicated on all four; against arguments on one device, the second step
    compiled again: 3 s of a digits RBM's fit on a 2-core CPU.)"""
    _TRACES["train_step"] += 1
    key_init, key_grad = jax.random.split(key)
    batch = data[0].shape[0]
    init_pos = spec.random_positive_state(key_init, n_chains_positive, batch) if spec.gibbs_positive else None
    grads, pos, neg = estimate_kl_grad(key_grad, spec, data, conditioning_values, init_pos, negative_state)
    params = eqx.filter(spec.ebm, trainable)
    grads = eqx.filter(grads, trainable)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    metrics = {
        "grad_norm": _global_norm(grads),
        "energy_positive": pos.energy,
        "energy_negative": neg.energy,
    }
    if pll_counts is not None:
        metrics["pseudo_log_likelihood"] = pseudo_log_likelihood(
            spec.ebm, spec.data_blocks, data, pll_counts, spec.conditioning_blocks, conditioning_values
        )
    if kl_table is not None:
        metrics["exact_kl"] = exact_kl(spec.ebm, kl_table, conditioning_values)
    new_ebm = eqx.apply_updates(spec.ebm, updates)
    final = neg.final_state
    if layout is not None:
        new_ebm, opt_state = layout.replicated(new_ebm, opt_state, inside_jit=True)
        final = [jax.lax.with_sharding_constraint(x, s) for x, s in zip(final, layout.chains, strict=True)]
    return spec.with_ebm(new_ebm), opt_state, final, metrics


class StepLayout(NamedTuple):
    """Where `fit` keeps a step's arrays when there are several devices: the model and optimiser
    state replicated on every default device (`everywhere`), and each negative-chain array split
    along its chains as the pairwise sampler splits them (`chains`; replicated where the devices do
    not divide the chains)."""

    everywhere: NamedSharding
    chains: tuple

    @classmethod
    def of(cls, negative_state: Sequence[Array], spec: TrainingSpec) -> tuple["StepLayout | None", list[Array]]:
        """The layout for these chains and the chains placed in it; (None, the chains) on one device,
        and where one of `spec`'s sampling programs runs the CPU spin kernel: that host callback
        takes every chain on one device, and inside a step spread over four CPU devices it waited for
        the others' chains while they waited for it (XLA ended the process after 40 s; 40 spins,
        4,096 chains). That route returns its chains where it got them, so it compiles once anyway."""
        devices = jax.devices()
        if len(devices) == 1:  # (decided before the programs are built: one device needs none of this)
            return None, list(negative_state)
        programs = (spec.program_positive(), spec.program_negative())
        if any(runs_spin_kernel_on_cpu(p, devices) for p in programs if p is not None):
            return None, list(negative_state)
        mesh = Mesh(np.asarray(devices), ("chains",))
        states = [jnp.asarray(x) for x in negative_state]
        split = all(x.ndim and x.shape[0] % len(devices) == 0 for x in states)  # else replicated, as the parameters
        states = [jax.device_put(x, NamedSharding(mesh, PartitionSpec("chains") if split else PartitionSpec())) for x in states]
        return cls(NamedSharding(mesh, PartitionSpec()), tuple(x.sharding for x in states)), states

    def replicated(self, *trees: PyTree, inside_jit: bool = False) -> tuple:
        """Every array leaf of `trees` on every device (a sharding constraint under `jit`)."""
        put = jax.lax.with_sharding_constraint if inside_jit else jax.device_put
        return tuple(jax.tree.map(lambda x: put(x, self.everywhere) if eqx.is_array(x) else x, t) for t in trees)


def fit(
    spec: TrainingSpec,
    data: Sequence[Array],
    *,
    key: Key[Array, ""],
    optimizer: optax.GradientTransformation,
    n_steps: int,
    batch_size: int,
    n_chains_negative: int = 256,
    n_chains_positive: int = 1,
    conditioning_values: Sequence[Array] = (),
    init_state_negative: Sequence[Array] | None = None,
    trainable: PyTree | None = None,
    callback: Callable[[int, PyTree, dict], None] | None = None,
    progress: bool = True,
    exact_kl_max_states: int = 1 << 16,
    metrics: bool = True,
) -> FitResult:
    """Train `spec.ebm` on `data` (one array [n_examples, nodes] per data block) by persistent contrastive divergence.

    **Arguments:**

    - `optimizer`: any optax transformation (e.g. `optax.adam(1e-2)`); it minimises KL(data ‖ model).
    - `n_steps` optimiser steps over minibatches of `batch_size` rows (reshuffled each epoch; a last
      partial minibatch is dropped so that every step has the same shapes).
    - `n_chains_negative` persistent model chains (or `init_state_negative`, leaves [n_chains, nodes]);
      `n_chains_positive` fresh chains per data row for models with latent nodes.
    - `trainable`: a PyTree of bools like the model saying what to train (default: every float array
      except `beta`, see `default_trainable`).
    - `callback(step, ebm, log)`: called after every step (checkpointing, early inspection).
    - `metrics`: log the pseudo-log-likelihood of each minibatch (fully observed discrete models) and
      the exact KL(data ‖ model) on all of `data` (models with at most `exact_kl_max_states` joint
      states), besides the gradient norm and the phases' mean energies.

    **Returns:** a `FitResult` whose `history` maps each logged quantity to an array over steps.
    """
    for name, value in (
        ("n_steps", n_steps),
        ("batch_size", batch_size),
        ("n_chains_negative", n_chains_negative),
        ("n_chains_positive", n_chains_positive),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise HeatbathError(f"fit: {name} must be a positive integer, got {value!r}.")
    data, conditioning_values = check_block_counts(spec, data, conditioning_values, who="fit: ")
    data = [
        np.asarray(_check_array_dtype(d, b, spec.ebm, f"data[{i}]"))
        for i, (d, b) in enumerate(zip(data, spec.data_blocks))
    ]
    for i, (d, b) in enumerate(zip(data, spec.data_blocks)):
        if d.ndim != 2 or d.shape[1] != len(b) or d.shape[0] != data[0].shape[0]:
            raise HeatbathError(
                f"fit: data[{i}] has shape {d.shape}; expected [n_examples, {len(b)}] with the same rows for every block."
            )
    n_examples = data[0].shape[0]
    if n_examples == 0:
        raise HeatbathError("fit: the data set is empty; give at least one example.")
    if batch_size > n_examples:
        raise HeatbathError(f"fit: batch_size={batch_size} exceeds the {n_examples} examples; use a smaller batch.")
    cond = [
        jnp.asarray(_check_array_dtype(c, b, spec.ebm, f"conditioning_values[{i}]"))
        for i, (c, b) in enumerate(zip(conditioning_values, spec.conditioning_blocks))
    ]
    key, key_init = jax.random.split(key)
    negative_state = (
        list(init_state_negative)
        if init_state_negative is not None
        else spec.random_negative_state(key_init, n_chains_negative)
    )
    layout, negative_state = StepLayout.of(negative_state, spec)
    trainable = default_trainable(spec.ebm) if trainable is None else trainable
    opt_state = optimizer.init(eqx.filter(spec.ebm, trainable))
    if layout is not None:
        ebm, opt_state = layout.replicated(spec.ebm, opt_state)
        spec = spec.with_ebm(ebm)

    kl_table = exact_kl_table(spec, data, exact_kl_max_states) if metrics else None
    pll_counts = None
    if metrics and spec.gibbs_positive is None and all(c is not None for c in _data_counts(spec)):
        pll_counts = tuple(_data_counts(spec))

    key, key_shuffle = jax.random.split(key)
    rng = np.random.default_rng(int(jax.random.randint(key_shuffle, (), 0, np.iinfo(np.int32).max)))
    per_epoch = n_examples // batch_size
    order = rng.permutation(n_examples)
    history: dict[str, list] = {}
    bar = tqdm(range(n_steps), disable=not progress, desc="fit")
    for step in bar:
        j = step % per_epoch
        if j == 0 and step > 0:
            order = rng.permutation(n_examples)
        rows = order[j * batch_size : (j + 1) * batch_size]
        key, key_step = jax.random.split(key)
        spec, opt_state, negative_state, log = train_step(
            spec,
            opt_state,
            optimizer,
            trainable,
            key_step,
            [jnp.asarray(d[rows]) for d in data],
            cond,
            negative_state,
            n_chains_positive,
            kl_table,
            pll_counts,
            layout,
        )
        log = {k: float(v) for k, v in log.items()}
        for k, v in log.items():
            history.setdefault(k, []).append(v)
        if progress:
            bar.set_postfix(
                {k: f"{v:.4g}" for k, v in log.items() if k in ("grad_norm", "exact_kl", "pseudo_log_likelihood")},
                refresh=False,
            )
        if callback is not None:
            callback(step, spec.ebm, log)
    return FitResult(spec.ebm, opt_state, negative_state, {k: np.asarray(v) for k, v in history.items()})


def _global_norm(tree) -> Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def _data_counts(spec: TrainingSpec) -> list[int | None]:
    from heatbath.train.spec import _state_count

    return [_state_count(spec.ebm, b, strict=False) for b in spec.data_blocks]
