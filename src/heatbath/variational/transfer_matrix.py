r"""Row-to-row transfer matrix of a lattice strip, its stationary distribution, and a sampled fit of it.

**The model.** A strip of width $N$, periodic across the strip, is built row by row. Every site holds one
of $K$ states (one-hot $e_{x_i}$), and a $K\times K$ bond-weight matrix $W$ gives the Boltzmann weight
$W_{ab}$ of a bond joining a site in state $a$ to one in state $b$ (for the Ising model
$W_{ab} = e^{\beta s_a s_b}$, `ising_bond_weights`). The transfer weight from row $x'$ (below) to row $x$
(above) is

$$T(x, x') = \underbrace{\prod_{i=1}^N W_{x'_i x'_{i+1}}}_{h(x'):\ \text{bonds inside row } x'}\;
              \underbrace{\prod_{i=1}^N W_{x_i x'_i}}_{V(x, x'):\ \text{bonds between the rows}},
              \qquad x'_{N+1} = x'_1,$$

and its marginal over the upper row is $T(x') = \sum_x T(x, x') = h(x') \prod_i w_{x'_i}$ with the column
sums $w_b = \sum_a W_{ab}$. For a torus of $M$ rows $Z = \mathrm{Tr}\,T^M$ (as a matrix with rows
indexed by $x$ and columns by $x'$), so $\ln Z \approx M \ln\lambda_{\max}$ and the free energy per
site of the infinitely long strip is $f = -\ln\lambda_{\max} / (\beta N)$.

**The stationary distribution.** The update $p'(x) = \sum_{x'} T(x, x')\, p(x') / \sum_{x'} T(x') p(x')$
is power iteration: the denominator equals $\sum_x (Tp)(x)$, so it only normalises $Tp$. Its fixed point
is the Perron (right) eigenvector of $T$ normalised to sum one, and at the fixed point
$\sum_{x'} T(x') p(x') = \lambda_{\max}$. In words, $p(x)$ is the weight of the half-infinite strip
below row $x$, including the bonds from $x$ down but not the bonds inside $x$. With $T = V H$,
$H = \mathrm{diag}(h)$ and $V$ symmetric (when $W$ is), $S = H^{1/2} V H^{1/2}$ is symmetric with the
same spectrum; its top eigenvector $\psi$ gives $p \propto \psi / \sqrt h$, and $\psi^2$ is the law of one
row of the infinite strip. `exact_stationary` uses this for small $N$ (a $K^N \times K^N$ matrix).

**Why the fit is a projected power iteration.** Dividing $T(x,x')$ by $T(x')$ gives a probability kernel
that flips every site independently, $k(x \mid x') = \prod_i W_{x_i x'_i} / w_{x'_i}$, so

$$p'(x) = \sum_{x'} r(x')\, k(x \mid x'), \qquad r(x') = \frac{T(x')\, p(x')}{\sum_{y} T(y)\, p(y)}.$$

Samples of $p'$ therefore cost one sample $x' \sim q$, a weight $T(x')$ and one independent flip per
site: no sum over configurations. `fit_stationary` takes the current model $q$ as $p$, and does a
gradient step on the cross-entropy $-\mathbb E_{p'}[\ln q_\theta(x)]$ (rows $x'$ resampled in proportion
to $T(x')$, target held fixed), i.e. it moves $q$ toward one power-iteration step of itself. A fixed point satisfies
$q = p'$ when the model can express $p'$, which is the stationary distribution. Compared with the
seed's recipe (minimise $\mathrm{KL}(p \| p')$ with $\ln\sum_{x'\sim p} T(x,x')$ estimated from a batch
and gradients through Gumbel-relaxed samples) this has no logarithm of a Monte-Carlo sum (whose bias
does not vanish with the learning rate), needs no relaxation of the discrete samples (whose gradient
bias we show in `heatbath.relax`), and it is mass-covering with respect to its target. The target
$p'$ is resampled from the $x'$ draws (systematic resampling in proportion to $T(x')$) rather than
weighted: same cost, and in our runs a lower noise floor than self-normalised weights.

Convergence is that of power iteration, geometric with ratio $\lambda_2/\lambda_1$ of the sector the
model lives in. That is why, for a Z2-symmetric $W$ ($K = 2$, $W_{00} = W_{11}$), the model is
symmetrised, $q(x) = \tfrac12(q_\theta(x) + q_\theta(\bar x))$ with $\bar x$ the globally flipped row:
in the ordered phase the odd (tunnelling) eigenvalue is within $e^{-O(N)}$ of $\lambda_{\max}$, so an
asymmetry picked up from noise is passed on by $p' = Tq$ almost undamped and the unsymmetrised fit
ends in one ordered state (at $N = 10$, $\beta = 0.6$ we measured KL$(p\|q) \approx 1.6$ nats without,
$0.002$ with symmetrisation). With it, $p$'s symmetry holds exactly and the slow mode is gone.

**Free energy.** $\lambda_{\max} = \sum_{x'} T(x') p(x')$; `log_lambda_estimate` estimates it from the
learned $q$ by sequential importance sampling over rows: start from $x' \sim q$, and at each row
average the weights $T(x')$, resample by them and flip. The first row alone gives
$\ln\mathbb E_q[T(x')]$, exact when $q = p$ but first order in $q$'s error and noisy ($T(x')$ is
heavy-tailed under $p$); later rows are power-iteration corrections, and their average is the estimate.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from heatbath.errors import HeatbathError
from heatbath.variational.estimators import Z2Symmetric
from heatbath.variational.made import MADE, check_n_samples, check_states

__all__ = [
    "ExactStationary",
    "LambdaEstimate",
    "StationaryFit",
    "TransferMatrix",
    "enumerate_rows",
    "exact_stationary",
    "fit_stationary",
    "free_energy_per_site",
    "ising_bond_weights",
    "log_lambda_estimate",
    "power_iteration",
]

MAX_EXACT_WIDTH = 14  # at most 2^14 rows: the largest dense row-to-row matrix we build


def ising_bond_weights(beta: float, J: float = 1.0) -> Float[Array, "2 2"]:
    r"""The Ising bond weight $W_{ab} = e^{\beta J s_a s_b}$ with state 0 = spin -1, state 1 = spin +1."""
    beta = float(beta)
    if not (math.isfinite(beta) and beta >= 0):
        raise HeatbathError(f"beta must be a finite number >= 0, got {beta!r}.")
    s = np.array([-1.0, 1.0])
    return jnp.asarray(np.exp(beta * float(J) * np.outer(s, s)), jnp.float32)


class TransferMatrix(eqx.Module):
    r"""$T(x, x') = \prod_i W_{x'_i x'_{i+1}} \prod_i W_{x_i x'_i}$ for rows of `width` sites (periodic).

    `bond_weight` is the positive $K \times K$ matrix $W$. Rows are integer states [batch, width] in
    $0..K-1$ (the MADE convention; for Ising, state 1 = spin +1). All weights are returned as logarithms.
    """

    log_bond: Float[Array, "k k"]
    width: int = eqx.field(static=True)
    n_states: int = eqx.field(static=True)

    def __init__(self, bond_weight: Float[ArrayLike, "k k"], width: int):
        w = np.asarray(bond_weight, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 2:
            raise HeatbathError(f"bond_weight must be a square K x K matrix with K >= 2, got shape {w.shape}.")
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise HeatbathError("bond_weight must hold positive finite Boltzmann weights (exp(-beta * bond energy)).")
        if isinstance(width, (bool, np.bool_)) or not isinstance(width, (int, np.integer)) or width < 2:
            raise HeatbathError(f"width must be an integer >= 2 (sites across the periodic strip), got {width!r}.")
        self.log_bond = jnp.asarray(np.log(w), jnp.float32)
        self.width = int(width)
        self.n_states = int(w.shape[0])

    @property
    def bond_weight(self) -> Float[Array, "k k"]:
        return jnp.exp(self.log_bond)

    @property
    def log_column_sums(self) -> Float[Array, " k"]:
        r"""$\ln w_b = \ln \sum_a W_{ab}$."""
        return jax.nn.logsumexp(self.log_bond, axis=0)

    @property
    def is_flip_symmetric(self) -> bool:
        """True for K = 2 and $W$ invariant under exchanging the two states (Z2-symmetric, e.g. Ising at zero field)."""
        w = np.asarray(self.log_bond)
        return self.n_states == 2 and bool(np.allclose(w, w[::-1, ::-1], rtol=1e-6, atol=1e-6))

    def _rows(self, x, what: str) -> Int[Array, "batch width"]:
        return check_states(x, self.width, self.n_states, what)

    def log_row_weight(self, x_prime: Int[ArrayLike, "batch width"]) -> Float[Array, " batch"]:
        r"""$\ln h(x') = \sum_i \ln W_{x'_i x'_{i+1}}$: the bonds inside row $x'$."""
        x_prime = self._rows(x_prime, "x_prime")
        return self.log_bond[x_prime, jnp.roll(x_prime, -1, axis=1)].sum(axis=1)

    def log_weight(
        self, x: Int[ArrayLike, "batch width"], x_prime: Int[ArrayLike, "batch width"]
    ) -> Float[Array, " batch"]:
        r"""$\ln T(x, x')$ for matching rows of `x` (upper) and `x_prime` (lower)."""
        x, x_prime = self._rows(x, "x"), self._rows(x_prime, "x_prime")
        return self.log_row_weight(x_prime) + self.log_bond[x, x_prime].sum(axis=1)

    def log_marginal(self, x_prime: Int[ArrayLike, "batch width"]) -> Float[Array, " batch"]:
        r"""$\ln T(x') = \ln \sum_x T(x, x') = \ln h(x') + \sum_i \ln w_{x'_i}$."""
        x_prime = self._rows(x_prime, "x_prime")
        return self.log_row_weight(x_prime) + self.log_column_sums[x_prime].sum(axis=1)

    def sample_next_row(
        self, x_prime: Int[ArrayLike, "batch width"], *, key: PRNGKeyArray
    ) -> Int[Array, "batch width"]:
        r"""Draw $x \sim k(x \mid x') = T(x, x') / T(x')$: every site independently, $P(x_i = a) = W_{a x'_i} / w_{x'_i}$."""
        x_prime = self._rows(x_prime, "x_prime")
        # inverse CDF with one uniform per site: cdf[b, a] = P(x_i <= a | x'_i = b)
        cdf = jnp.cumsum(jax.nn.softmax(self.log_bond.T, axis=1), axis=1)
        u = jax.random.uniform(key, x_prime.shape)
        return jnp.minimum((u[..., None] >= cdf[x_prime]).sum(axis=-1), self.n_states - 1).astype(jnp.int32)

    def dense(self) -> Float[Array, "rows rows"]:
        r"""The $K^N \times K^N$ matrix $T[x, x']$ (rows in `enumerate_rows` order); small widths only."""
        rows = enumerate_rows(self)
        n = rows.shape[0]
        upper = jnp.repeat(rows, n, axis=0)
        lower = jnp.tile(rows, (n, 1))
        return jnp.exp(self.log_weight(upper, lower)).reshape(n, n)


def enumerate_rows(tm: TransferMatrix) -> Int[Array, "rows width"]:
    """All $K^N$ rows, site 0 most significant (row index = the row read as a base-K number)."""
    if tm.n_states**tm.width > 2**MAX_EXACT_WIDTH:
        raise HeatbathError(
            f"{tm.n_states}^{tm.width} rows is too many to enumerate (at most 2^{MAX_EXACT_WIDTH}); "
            "use fit_stationary and log_lambda_estimate for wide strips."
        )
    idx = np.arange(tm.n_states**tm.width)
    digits = (idx[:, None] // tm.n_states ** np.arange(tm.width - 1, -1, -1)[None, :]) % tm.n_states
    return jnp.asarray(digits, jnp.int32)


class ExactStationary(NamedTuple):
    """Exact transfer-matrix quantities of a narrow strip (rows in `enumerate_rows` order)."""

    log_lambda: float
    r"""$\ln\lambda_{\max}$."""
    stationary: np.ndarray
    r"""$p$: the Perron right eigenvector of $T[x, x']$, summing to one (the fixed point of $p' = Tp/\sum T(x')p$)."""
    row_marginal: np.ndarray
    r"""$\psi^2$: the law of one row of the infinitely long strip."""
    rows: np.ndarray
    """The rows [K^N, N] the vectors are indexed by."""


def _row_arrays(tm: TransferMatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Rows, $\ln h$ and $\ln W$ in float64 numpy (exact references are computed on the host)."""
    rows = np.asarray(enumerate_rows(tm))
    log_w = np.asarray(tm.log_bond, np.float64)
    log_h = log_w[rows, np.roll(rows, -1, axis=1)].sum(axis=1)
    return rows, log_h, log_w


def _apply_v(w: np.ndarray, v: np.ndarray, width: int) -> np.ndarray:
    r"""$(Vv)(x) = \sum_{x'} \prod_i W_{x_i x'_i} v(x')$: $V = W^{\otimes N}$, applied one site at a time."""
    k = w.shape[0]
    t = v.reshape((k,) * width)
    for axis in range(width):
        t = np.moveaxis(np.tensordot(w, t, axes=([1], [axis])), 0, axis)
    return t.reshape(-1)


def exact_stationary(tm: TransferMatrix, *, tol: float = 1e-13, max_iterations: int = 100_000) -> ExactStationary:
    r"""Dominant eigenpair of $T$ for a symmetric $W$, without building the $K^N \times K^N$ matrix.

    Power iteration on the symmetric $S = H^{1/2} V H^{1/2}$ with $V = W^{\otimes N}$ applied site by site
    ($O(N K^{N+1})$ per product), started from the uniform vector and run until the vector changes by less
    than `tol`; $\lambda_{\max}$ is the Rayleigh quotient. The uniform start has every symmetry of a
    uniform strip (translation, and the state exchange for Ising), so the iteration never feeds the
    slow odd (tunnelling) mode of the ordered phase. Raises if it has not converged.
    """
    if not np.allclose(np.asarray(tm.log_bond), np.asarray(tm.log_bond).T, atol=1e-6):
        raise HeatbathError("exact_stationary needs a symmetric bond_weight; use power_iteration for a general W.")
    rows, log_h, log_w = _row_arrays(tm)
    w = np.exp(log_w - log_w.max())
    root_h = np.exp(0.5 * (log_h - log_h.max()))
    psi = np.full(rows.shape[0], 1.0 / math.sqrt(rows.shape[0]))
    for _ in range(int(max_iterations)):
        s_psi = root_h * _apply_v(w, root_h * psi, tm.width)
        rayleigh = float(psi @ s_psi)
        new = s_psi / np.linalg.norm(s_psi)
        change = float(np.linalg.norm(new - psi))
        psi = new
        if change < tol:
            break
    else:
        raise HeatbathError(
            f"exact_stationary: power iteration did not converge in {max_iterations} products (last change "
            f"{change:.1e}); raise max_iterations or loosen tol."
        )
    log_lambda = math.log(rayleigh) + tm.width * log_w.max() + log_h.max()
    p = psi / root_h
    return ExactStationary(log_lambda, p / p.sum(), psi**2 / np.sum(psi**2), rows)


def power_iteration(
    tm: TransferMatrix, n_iterations: int, p0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    r"""Iterate the seed's update $p \leftarrow Tp / \sum_{x'} T(x')p(x')$ exactly (small widths).

    Returns the final $p$ and $\ln \sum_{x'} T(x') p(x')$ at every iteration (it tends to $\ln\lambda_{\max}$).
    Starts from the uniform distribution unless `p0` is given. $T p = V(h \odot p)$ is applied site by
    site, so any $W$ (symmetric or not) works.
    """
    rows, log_h, log_w = _row_arrays(tm)
    log_marginal = log_h + np.log(np.exp(log_w).sum(axis=0))[rows].sum(axis=1)  # ln T(x')
    shift = log_marginal.max()
    marginal = np.exp(log_marginal - shift)
    h = np.exp(log_h - log_h.max())
    w = np.exp(log_w)
    p = np.full(rows.shape[0], 1.0 / rows.shape[0]) if p0 is None else np.asarray(p0, np.float64) / np.sum(p0)
    log_norms = []
    for _ in range(int(n_iterations)):
        norm = marginal @ p
        tp = _apply_v(w, h * p, tm.width)
        p = tp / tp.sum()
        log_norms.append(math.log(norm) + shift)
    return p, np.asarray(log_norms)


def free_energy_per_site(log_lambda: float, beta: float, width: int) -> float:
    r"""$f = -\ln\lambda_{\max} / (\beta N)$ for the infinitely long strip of width $N$."""
    return -float(log_lambda) / (float(beta) * int(width))


class StationaryFit(NamedTuple):
    model: MADE | Z2Symmetric
    """The learned stationary distribution q (symmetrised when W is Z2-symmetric)."""
    losses: np.ndarray
    r"""Cross-entropy $-\mathbb E_{p'}[\ln q]$ estimate per step (tends to the entropy of $p$)."""


def _systematic_resample(key: PRNGKeyArray, log_weights: Float[Array, " m"], n: int | None = None) -> Int[Array, " n"]:
    """n (default m) indices drawn in proportion to the weights with one shared uniform offset (low variance)."""
    n = log_weights.shape[0] if n is None else n
    # particle i is copied (number of points u + j, j = 0..n-1, in [n cdf_{i-1}, n cdf_i)) times
    edges = jnp.floor(n * jnp.cumsum(jax.nn.softmax(log_weights)) - jax.random.uniform(key, ()))
    edges = jnp.clip(edges, -1, n - 1).at[-1].set(n - 1)  # rounding must not lose the last points
    copies = jnp.diff(edges, prepend=-1.0).astype(jnp.int32)
    return jnp.repeat(jnp.arange(log_weights.shape[0]), copies, total_repeat_length=n)


def _cross_entropy(
    model: MADE | Z2Symmetric,
    target: MADE | Z2Symmetric,
    tm: TransferMatrix,
    n: int,
    n_proposals: int,
    key,
) -> Array:
    r"""$-\frac1n\sum_j \ln q(x_j)$ with $x_j \sim k(\cdot \mid x'_j)$ and the $x'_j$ resampled by $T(x')$ from draws of the target."""
    key_rows, key_pick, key_flip = jax.random.split(key, 3)
    proposals = target.sample(n_proposals, key=key_rows)
    pick = _systematic_resample(key_pick, tm.log_marginal(proposals), n)
    x = tm.sample_next_row(proposals[pick], key=key_flip)
    return -jnp.mean(model.log_prob(x))


_ADAM = optax.scale_by_adam()


@eqx.filter_jit
def _fit_step(
    model: MADE | Z2Symmetric,
    opt_state,
    tm: TransferMatrix,
    key,
    rate,
    batch_size: int,
    n_proposals: int,
):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    target = jax.lax.stop_gradient(model)
    loss, grads = jax.value_and_grad(
        lambda p: _cross_entropy(eqx.combine(p, static), target, tm, batch_size, n_proposals, key)
    )(params)
    updates, opt_state = _ADAM.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: -rate * u, updates)
    return eqx.apply_updates(model, updates), opt_state, loss


def fit_stationary(
    tm: TransferMatrix,
    model: MADE,
    *,
    key: PRNGKeyArray,
    n_steps: int = 400,
    batch_size: int = 1024,
    n_proposals: int | None = None,
    learning_rate: float = 1e-2,
    symmetrize: bool | None = None,
) -> StationaryFit:
    r"""Train `model` to be the stationary distribution of `tm` by projected power iteration (see the module docstring).

    Every step draws `n_proposals` (default `batch_size`) rows $x' \sim q$, resamples `batch_size` of
    them in proportion to $T(x')$, flips every site by $k(x \mid x')$ and takes an Adam step on
    $-\frac1n\sum_j \ln q_\theta(x_j)$ with the $q$ inside the target held fixed. The learning rate follows
    a cosine decay to 1% so the fit settles. `symmetrize` (default: when `tm` is flip-symmetric) applies
    the Z2 symmetrisation of `Z2Symmetric`; without it the ordered phase collapses to one state.
    `model` is the `MADE` to train (its output starts uniform); the result holds the trained copy.
    """
    if model.n_units != tm.width or model.n_states != tm.n_states:
        raise HeatbathError(
            f"model has {model.n_units} units x {model.n_states} states but the strip is {tm.width} x {tm.n_states}; "
            f"build MADE({tm.width}, n_states={tm.n_states}, ...)."
        )
    n_steps, batch_size = (
        check_n_samples(n_steps, "n_steps"),
        check_n_samples(batch_size, "batch_size"),
    )
    n_proposals = batch_size if n_proposals is None else check_n_samples(n_proposals, "n_proposals")
    if symmetrize is None:
        symmetrize = tm.is_flip_symmetric
    if symmetrize and not tm.is_flip_symmetric:
        raise HeatbathError("symmetrize=True needs a two-state bond_weight invariant under exchanging the states.")
    sym = Z2Symmetric(model) if symmetrize else model
    opt_state = _ADAM.init(eqx.filter(sym, eqx.is_inexact_array))
    # cosine decay to 1% of the initial rate, computed here so every fit reuses one compiled step
    rates = learning_rate * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * np.arange(n_steps) / n_steps)))
    losses = []
    for rate, k in zip(rates, jax.random.split(key, n_steps)):
        sym, opt_state, loss = _fit_step(sym, opt_state, tm, k, jnp.float32(rate), batch_size, n_proposals)
        losses.append(loss)
    return StationaryFit(sym, np.asarray(jax.device_get(losses)))


class LambdaEstimate(NamedTuple):
    r"""Estimates of $\ln\lambda_{\max}$ from a learned stationary distribution (see `log_lambda_estimate`)."""

    log_lambda: float
    """Average of the per-row estimates after `n_burn` rows (the power-iteration-corrected estimate)."""
    first_row: float
    r"""$\ln$ of the mean of $T(x')$ over $x' \sim q$: the model alone (first order in the error of q)."""
    per_row: np.ndarray
    r"""$\ln$ of the mean weight at every row."""


@eqx.filter_jit
def _log_mean_weights(tm: TransferMatrix, model, key, n_samples: int, n_rows: int) -> Float[Array, " rows"]:
    key_first, key_rows = jax.random.split(key)
    rows = model.sample(n_samples, key=key_first)

    def next_row(rows, k):
        log_t = tm.log_marginal(rows)
        k_pick, k_flip = jax.random.split(k)
        new = tm.sample_next_row(rows[_systematic_resample(k_pick, log_t)], key=k_flip)
        return new, jax.nn.logsumexp(log_t) - math.log(n_samples)

    return jax.lax.scan(next_row, rows, jax.random.split(key_rows, n_rows))[1]


def log_lambda_estimate(
    tm: TransferMatrix,
    model,
    *,
    key: PRNGKeyArray,
    n_samples: int = 65_536,
    n_rows: int = 40,
    n_burn: int = 4,
) -> LambdaEstimate:
    r"""Estimate $\ln\lambda_{\max}$ by sequential importance sampling over rows, started from the learned q.

    Row 1 draws $x' \sim q$ and records $\ln$ of the mean of $T(x')$ ($=\ln\sum_{x'} T(x')q(x')$, which is
    $\ln\lambda_{\max}$ when $q = p$). Every further row resamples the rows in proportion to $T(x')$
    (systematic resampling), flips them by $k(x\mid x')$ and records the log mean weight of the new rows:
    it estimates $\ln(Z_{r+1}/Z_r)$ with $Z_r = \mathbf 1^\top T^r q$, which tends to $\ln\lambda_{\max}$
    geometrically in $r$. Averaging the rows after `n_burn` reduces the variance, which is large for one
    row ($T(x')$ is heavy-tailed under $p$: $p$ leaves out the bonds inside its row). The better $q$, the
    shorter the transient; the per-row values are returned so the transient can be checked.
    `model` needs a `sample(n, key=...)` method (a `MADE` or `Z2Symmetric`).
    """
    n_samples = check_n_samples(n_samples, "n_samples")
    n_rows = check_n_samples(n_rows, "n_rows")
    if isinstance(n_burn, bool) or not isinstance(n_burn, (int, np.integer)) or not 0 <= n_burn < n_rows:
        raise HeatbathError(f"n_burn must be an integer in 0..n_rows-1 = 0..{n_rows - 1}, got {n_burn!r}.")

    per_row = np.asarray(_log_mean_weights(tm, model, key, n_samples, n_rows), np.float64)
    return LambdaEstimate(float(per_row[n_burn:].mean()), float(per_row[0]), per_row)
