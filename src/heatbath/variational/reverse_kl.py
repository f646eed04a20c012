r"""Reverse-KL training of an autoregressive model $q$ against a Boltzmann target $p \propto e^{-\beta E}$.

`train_reverse_kl` minimises the variational free energy $F_q = E_q[E] + T E_q[\ln q]$ (see
`heatbath.variational.estimators`) with an optax optimiser, one compiled step reused for every
iteration. Options:

* `estimator="score"` (REINFORCE with a leave-one-out baseline, any energy) or `"straight_through"`
  (Gumbel-softmax pathwise gradient; needs an energy with `relaxed`);
* `beta_schedule`: a function step -> β_t used for training (annealing from high temperature avoids
  collapsing onto one mode early); `annealed_beta(beta, n_anneal)` is the usual choice;
* `symmetrize=True`: train the spin-flip symmetric `Z2Symmetric(model)` instead of `model`.

Reverse KL is mode-seeking: $q$ can miss modes without the loss noticing. Check a trained model with
`evaluate` (importance weights and their effective sample size), or remove its bias entirely by using
it as a proposal in `heatbath.variational.mh`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray
from tqdm.auto import tqdm

from heatbath.errors import HeatbathError
from heatbath.variational.estimators import (
    EnergyFn,
    Z2Symmetric,
    check_beta,
    free_energy_gradient,
)
from heatbath.variational.made import MADE, check_n_samples

__all__ = ["ReverseKLHistory", "annealed_beta", "train_reverse_kl"]


class ReverseKLHistory(NamedTuple):
    """Per training step: the batch estimate of $F_q$ at the training β_t, and β_t itself."""

    free_energy: Float[np.ndarray, " steps"]
    beta: Float[np.ndarray, " steps"]


def annealed_beta(beta: float, n_anneal: int, beta_start: float | None = None) -> Callable[[int], float]:
    """β_t rising linearly from `beta_start` (default beta/10) to `beta` over `n_anneal` steps, then constant."""
    check_beta(beta)
    start = 0.1 * float(beta) if beta_start is None else float(beta_start)
    check_beta(start, "beta_start")
    n_anneal = max(int(n_anneal), 1)

    def schedule(step: int) -> float:
        return float(beta) if step >= n_anneal else start + (float(beta) - start) * step / n_anneal

    return schedule


def _trainable(model):
    # Masks are boolean arrays and sizes are static: only float arrays are trained.
    return eqx.filter(model, eqx.is_inexact_array)


def train_reverse_kl(
    model,
    energy: EnergyFn,
    beta: float,
    *,
    key: PRNGKeyArray,
    n_steps: int = 1000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    estimator: str = "score",
    temperature: float = 1.0,
    beta_schedule: Callable[[int], float] | None = None,
    symmetrize: bool = False,
    progress: bool = True,
):
    """Fit `model` (a `MADE`, or a `Z2Symmetric` around one) to $p \\propto e^{-\\beta E}$ by minimising $F_q$.

    **Arguments:** `energy(x)` maps integer states [batch, units] to energies [batch] (see
    `heatbath.variational.energy_from_ebm` for heatbath models); `beta` the target inverse temperature;
    `n_steps` optimiser steps of `batch_size` fresh samples each; `optimizer` defaults to
    `optax.adam(learning_rate)`; `estimator`, `temperature`, `beta_schedule`, `symmetrize` as in the
    module docstring; `progress` shows a tqdm bar.

    **Returns:** `(trained_model, ReverseKLHistory)`; the model is wrapped in `Z2Symmetric` if `symmetrize`.
    """
    if not isinstance(model, (MADE, Z2Symmetric)):
        raise HeatbathError(f"train_reverse_kl trains a MADE (or Z2Symmetric) model, got {type(model).__name__}.")
    check_beta(beta)
    n_steps = check_n_samples(n_steps, "n_steps")
    batch_size = check_n_samples(batch_size, "batch_size")
    if estimator == "score" and batch_size < 2:
        raise HeatbathError("The score-function estimator needs batch_size >= 2 (leave-one-out baseline).")
    if estimator not in ("score", "straight_through"):
        raise HeatbathError(f"estimator must be 'score' or 'straight_through', got {estimator!r}.")
    if symmetrize:
        model = Z2Symmetric(model)
    if estimator == "straight_through" and isinstance(model, Z2Symmetric):
        raise HeatbathError("symmetrize=True works with estimator='score' only.")
    if getattr(energy, "n_units", model.n_units) != model.n_units:
        raise HeatbathError(f"The energy is for {energy.n_units} units but the model has {model.n_units}.")
    schedule = beta_schedule if beta_schedule is not None else (lambda step: float(beta))
    optimizer = optimizer if optimizer is not None else optax.adam(learning_rate)
    opt_state = optimizer.init(_trainable(model))

    @eqx.filter_jit
    def step(model, opt_state, key, beta_t):
        grads, f_hat = free_energy_gradient(
            model, energy, beta_t, batch_size, key=key, estimator=estimator, temperature=temperature
        )
        updates, opt_state = optimizer.update(_trainable(grads), opt_state, _trainable(model))
        return eqx.apply_updates(model, updates), opt_state, f_hat

    f_hist = np.empty(n_steps)
    b_hist = np.empty(n_steps)
    keys = jax.random.split(key, n_steps)
    bar = tqdm(range(n_steps), disable=not progress, desc="reverse KL", leave=False)
    pending: list[tuple[int, Array]] = []
    for t in bar:
        beta_t = schedule(t)
        check_beta(beta_t, f"beta_schedule({t})")
        model, opt_state, f_hat = step(model, opt_state, keys[t], jnp.asarray(beta_t, jnp.float32))
        b_hist[t] = beta_t
        pending.append((t, f_hat))
        if len(pending) >= 50 or t == n_steps - 1:  # read back in groups: no host sync on every step
            for i, value in pending:
                f_hist[i] = float(value)
            pending = []
            if not np.isfinite(f_hist[t]):
                raise HeatbathError(
                    f"Training diverged at step {t} (F_q estimate is {f_hist[t]}); lower the learning rate or "
                    "check the energy for NaN/inf."
                )
            bar.set_postfix(F=f"{f_hist[t]:.5g}", beta=f"{beta_t:.3g}")
    return model, ReverseKLHistory(f_hist, b_hist)
