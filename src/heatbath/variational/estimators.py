r"""Estimators for reverse-KL variational inference with an autoregressive $q$.

For a target $p(x) = e^{-\beta E(x)}/Z$ and a normalised $q$ the variational free energy is

$$F_q = \mathbb E_q[E(x)] + T\,\mathbb E_q[\ln q(x)] = F + T\,\mathrm{KL}(q\,\|\,p) \ge F = -T \ln Z,
\qquad T = 1/\beta,$$

so minimising $F_q$ minimises the reverse KL divergence. Its gradient is estimated from samples of $q$:

* score function (REINFORCE): with $f(x) = E(x) + T\ln q(x)$,
  $\nabla F_q = \mathbb E_q[(f(x) - b)\,\nabla \ln q(x)]$ for any constant $b$ (since $\mathbb E_q[\nabla\ln q] = 0$,
  which also removes the gradient of the $\ln q$ inside $f$). The leave-one-out baseline
  $b_i = \frac{1}{B-1}\sum_{j\ne i} f_j$ keeps the estimate unbiased and cuts its variance; it equals
  $\frac{1}{B-1}\sum_i (f_i - \bar f)\nabla\ln q(x_i)$;
* straight-through Gumbel-softmax: samples are made differentiable functions of the parameters and of
  fixed noise, and $\nabla$ of $E(y) + T\ln q(y)$ flows through them (biased, often lower variance).

`evaluate` reports $F_q$, the importance-weighted estimate $\ln \hat Z = \ln\frac1n\sum_i w_i$ with
$w_i = e^{-\beta E(x_i)}/q(x_i)$ (consistent whatever $q$, and an exact lower bound in expectation),
their standard errors, and the effective sample size $(\sum w)^2/\sum w^2$ of the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from heatbath.errors import HeatbathError
from heatbath.validation import is_concrete
from heatbath.variational.made import MADE, check_n_samples, check_states

__all__ = [
    "Z2Symmetric",
    "VariationalEstimate",
    "evaluate",
    "score_function_loss",
    "straight_through_loss",
    "free_energy_gradient",
    "exact_variational_free_energy",
    "check_beta",
]

EnergyFn = Callable[[Int[Array, "batch units"]], Float[Array, " batch"]]


def check_beta(beta, what: str = "beta") -> None:
    """Raise unless a concrete beta is one positive finite number."""
    if isinstance(beta, (str, bytes)):
        raise HeatbathError(f"{what} must be a positive number, got the string {beta!r}.")
    if is_concrete(beta):
        b = np.asarray(beta)
        if b.ndim != 0 or b.dtype.kind not in "fiu" or not np.isfinite(b) or b <= 0:
            raise HeatbathError(f"{what} must be one positive finite inverse temperature, got {beta!r}.")


class Z2Symmetric(eqx.Module):
    r"""$q_{\mathrm{sym}}(x) = \frac12[q(x) + q(\bar x)]$ with $\bar x = 1 - x$ (all spins flipped): a spin-flip
    symmetric model for targets with $E(x) = E(\bar x)$ (Ising models in zero field).

    Sampling draws from `base` and flips the whole configuration with probability 1/2; `log_prob` is
    exact. Training the wrapper trains `base`; below $T_c$ the base may then learn one ordered phase only.
    """

    base: MADE

    def __init__(self, base: MADE):
        if isinstance(base, Z2Symmetric):
            base = base.base
        if base.n_states != 2:
            raise HeatbathError(f"Z2Symmetric needs a two-state model (spins), got n_states={base.n_states}.")
        self.base = base

    @property
    def n_units(self) -> int:
        return self.base.n_units

    @property
    def n_states(self) -> int:
        return 2

    def log_prob(self, x: Int[ArrayLike, "batch units"]) -> Float[Array, " batch"]:
        x = check_states(x, self.n_units, 2)
        both = jnp.stack([self.base.log_prob(x), self.base.log_prob(1 - x)])
        return jax.nn.logsumexp(both, axis=0) - math.log(2.0)

    def sample(self, n: int, *, key: PRNGKeyArray) -> Int[Array, "n units"]:
        key_base, key_flip = jax.random.split(key)
        x = self.base.sample(n, key=key_base)
        flip = jax.random.bernoulli(key_flip, 0.5, (x.shape[0], 1))
        return jnp.where(flip, 1 - x, x)

    def sample_and_log_prob(self, n: int, *, key: PRNGKeyArray) -> tuple[Int[Array, "n units"], Float[Array, " n"]]:
        x = self.sample(n, key=key)
        return x, self.log_prob(x)


def _checked_energy(energy: EnergyFn, x: Array) -> Array:
    e = jnp.asarray(energy(x))
    if e.shape != (x.shape[0],):
        raise HeatbathError(
            f"energy(x) returned shape {tuple(e.shape)} for {x.shape[0]} states; it must return one energy per row, "
            f"shape ({x.shape[0]},)."
        )
    if is_concrete(e) and not np.all(np.isfinite(np.asarray(e))):
        raise HeatbathError("energy(x) returned NaN or infinity for some states; check the energy function / weights.")
    return e.astype(jnp.float32)


# --------------------------------------------------------------------------------------- gradients


def score_function_loss(
    model, energy: EnergyFn, beta, x: Int[Array, "batch units"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    r"""Surrogate loss whose gradient is the leave-one-out REINFORCE estimate of $\nabla F_q$ on samples `x` ~ q.

    Returns `(surrogate, F_estimate)`; `F_estimate` (the batch mean of $E + T\ln q$) carries no gradient.
    Needs at least two samples (the baseline of each sample is the mean of the others).
    """
    n = x.shape[0]
    if n < 2:
        raise HeatbathError(
            "The score-function estimator needs a batch of at least 2 samples (leave-one-out baseline)."
        )
    log_q = model.log_prob(x)
    f = jax.lax.stop_gradient(_checked_energy(energy, x) + log_q / beta)
    centred = (f - jnp.mean(f)) * (n / (n - 1.0))  # f_i - b_i with the leave-one-out mean b_i
    return jnp.mean(centred * log_q), jnp.mean(f)


def straight_through_loss(
    model, energy: EnergyFn, beta, n_samples: int, *, key: PRNGKeyArray, temperature: float = 1.0
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    r"""Pathwise (straight-through Gumbel-softmax) estimate of $F_q$, differentiable in the model.

    The energy must accept relaxed one-hot inputs through a `relaxed(y)` method (as `SpinGlassEnergy` does).
    Returns `(loss, F_estimate)`; both equal the batch mean of $E(x) + T\ln q(x)$ on exact samples.
    """
    if not isinstance(model, MADE):
        raise HeatbathError(
            f"The straight-through estimator needs a MADE model, got {type(model).__name__} "
            "(Z2 symmetrisation is supported by the score-function estimator only)."
        )
    relaxed = getattr(energy, "relaxed", None)
    if relaxed is None:
        raise HeatbathError(
            "The straight-through estimator needs an energy with a `relaxed(y)` method for one-hot inputs "
            "[batch, units, states] (e.g. SpinGlassEnergy); use estimator='score' for other energies."
        )
    y, log_q = model.sample_straight_through(n_samples, temperature, key=key)
    f = relaxed(y) + log_q / beta
    return jnp.mean(f), jax.lax.stop_gradient(jnp.mean(f))


def free_energy_gradient(
    model,
    energy: EnergyFn,
    beta,
    n_samples: int,
    *,
    key: PRNGKeyArray,
    estimator: str = "score",
    temperature: float = 1.0,
):
    """One Monte-Carlo estimate of $\\nabla F_q$ (a PyTree like `model`) and of $F_q$, from `n_samples` draws."""
    check_beta(beta)
    n_samples = check_n_samples(n_samples, "n_samples")
    if estimator == "score":
        x = model.sample(n_samples, key=key)

        def loss(m):
            return score_function_loss(m, energy, beta, x)

    elif estimator == "straight_through":

        def loss(m):
            return straight_through_loss(m, energy, beta, n_samples, key=key, temperature=temperature)

    else:
        raise HeatbathError(f"estimator must be 'score' or 'straight_through', got {estimator!r}.")
    (_, f_hat), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model)
    return grads, f_hat


def exact_variational_free_energy(model, energy: EnergyFn, beta) -> Float[Array, ""]:
    """$F_q$ by enumerating every state of q (small models only; differentiable in the model)."""
    n, k = model.n_units, model.n_states
    if k**n > 1 << 20:
        raise HeatbathError(f"Enumerating {k}^{n} states is too many; use evaluate() for a Monte-Carlo estimate.")
    x = jnp.asarray(np.indices((k,) * n).reshape(n, -1).T, jnp.int32)
    log_q = model.log_prob(x)
    return jnp.sum(jnp.exp(log_q) * (energy(x) + log_q / beta))


# --------------------------------------------------------------------------------------- evaluation


class VariationalEstimate(NamedTuple):
    """Diagnostics of a variational model against $p \\propto e^{-\\beta E}$ from `n_samples` draws of q."""

    free_energy: float
    """$F_q = E_q[E + T\\ln q]$, an upper bound on the true free energy $F = -T\\ln Z$."""
    free_energy_stderr: float
    log_z: float
    """Importance-weighted $\\ln\\hat Z = \\ln \\frac1n\\sum_i e^{-\\beta E_i}/q_i$."""
    log_z_stderr: float
    """Delta-method standard error of `log_z`: sd(w)/(mean(w) sqrt(n))."""
    iw_free_energy: float
    """$-T\\ln\\hat Z$, the importance-weighted free energy."""
    iw_free_energy_stderr: float
    ess: float
    """Effective sample size of the importance weights, $(\\sum w)^2/\\sum w^2$ (n for a perfect q)."""
    mean_energy: float
    entropy: float
    """$-E_q[\\ln q]$."""
    n_samples: int
    beta: float


@eqx.filter_jit
def _draw(model, energy: EnergyFn, key: PRNGKeyArray, size: int):
    x, log_q = model.sample_and_log_prob(size, key=key)
    return _checked_energy(energy, x), log_q


def evaluate(
    model, energy: EnergyFn, beta: float, n_samples: int, *, key: PRNGKeyArray, batch_size: int = 4096
) -> VariationalEstimate:
    """Estimate $F_q$, the importance-weighted $\\ln Z$ and the ESS from `n_samples` fresh samples of `model`.

    Samples are drawn in batches of `batch_size` (bounded memory, one compiled shape); statistics are in float64.
    """
    check_beta(beta)
    beta = float(beta)
    n_samples = check_n_samples(n_samples, "n_samples")
    batch_size = check_n_samples(batch_size, "batch_size")

    size = min(batch_size, n_samples)  # one compiled shape: the last batch is drawn in full and truncated
    energies, log_qs = [], []
    for i, k in enumerate(jax.random.split(key, -(-n_samples // size))):
        e, lq = _draw(model, energy, k, size)
        keep = min(size, n_samples - i * size)
        energies.append(np.asarray(e, np.float64)[:keep])
        log_qs.append(np.asarray(lq, np.float64)[:keep])
    e, log_q = np.concatenate(energies), np.concatenate(log_qs)
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(log_q))):
        raise HeatbathError("evaluate: energies or ln q are NaN/infinite for some samples; check the energy and model.")
    f = e + log_q / beta
    n = f.size
    se = (lambda v: float(np.std(v, ddof=1) / math.sqrt(n))) if n > 1 else (lambda v: math.nan)
    log_w = -beta * e - log_q
    shift = log_w.max()
    w = np.exp(log_w - shift)
    mean_w = w.mean()
    log_z = float(shift + math.log(mean_w))
    log_z_se = se(w / mean_w)
    return VariationalEstimate(
        free_energy=float(f.mean()),
        free_energy_stderr=se(f),
        log_z=log_z,
        log_z_stderr=log_z_se,
        iw_free_energy=-log_z / beta,
        iw_free_energy_stderr=log_z_se / beta,
        ess=float(w.sum() ** 2 / np.sum(w**2)),
        mean_energy=float(e.mean()),
        entropy=float(-log_q.mean()),
        n_samples=n,
        beta=beta,
    )
