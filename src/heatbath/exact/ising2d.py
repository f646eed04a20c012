r"""Exact results for the ferromagnetic 2D Ising model on the square lattice.

Conventions (used by every function here):

* energy $E(s) = -J \sum_{\langle ij \rangle} s_i s_j$ over nearest-neighbour pairs, $s_i = \pm 1$, zero
  field, $k_B = 1$, inverse temperature $\beta$, coupling $K = \beta J$ (ferromagnetic, $J > 0$);
* the finite lattice has $M$ rows and $L$ columns with periodic boundaries in both directions, so it has
  $N = ML$ sites and $2N$ bonds (on a side of length 2 the two bonds between a pair both count);
* "per site" means divided by $N$; the specific heat per site is $C/N = \beta^2 \mathrm{Var}(E) / N
  = \beta^2 \partial_\beta^2 \ln Z / N$.

Sources (formulas re-derived and implemented here from the mathematics):

* L. Onsager, Phys. Rev. 65, 117 (1944): free energy of the infinite lattice,
  $\ln Z/N = \ln(2\cosh 2K) + \frac{1}{2\pi}\int_0^\pi \ln\frac{1 + \sqrt{1 - k^2\sin^2\phi}}{2}\,d\phi$
  with $k = 2\sinh 2K / \cosh^2 2K$; critical point $\sinh 2K_c = 1$.
* B. Kaufman, Phys. Rev. 76, 1232 (1949), "Crystal statistics II": partition function of the finite
  torus, $Z = \tfrac12 (2\sinh 2K)^{N/2} \sum_{i=1}^4 Z_i$ with
  $Z_{1,2} = \prod_{r=0}^{L-1} 2\cosh, 2\sinh(\tfrac M2 \gamma_{2r+1})$,
  $Z_{3,4} = \prod_{r=0}^{L-1} 2\cosh, 2\sinh(\tfrac M2 \gamma_{2r})$,
  $\cosh\gamma_q = \cosh 2K \coth 2K - \cos(\pi q / L)$, $\gamma_q > 0$ for $q \ne 0$ and the signed
  $\gamma_0 = 2K + \ln\tanh K$ (negative above $T_c$, which makes $Z_4$ negative there).
* A. E. Ferdinand and M. E. Fisher, Phys. Rev. 185, 832 (1969): energy and specific heat of the torus
  from term-by-term $K$-derivatives of Kaufman's products, done here analytically.
* C. N. Yang, Phys. Rev. 85, 808 (1952): spontaneous magnetisation $(1 - \sinh^{-4} 2K)^{1/8}$.

Complete elliptic integrals come from the arithmetic-geometric mean (no scipy).
"""

from __future__ import annotations

import functools
import math
import operator
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from heatbath.errors import HeatbathError

__all__ = [
    "BETA_CRITICAL",
    "FiniteLatticeExact",
    "exact_finite_lattice",
    "kaufman_energy_per_site",
    "kaufman_log_z",
    "kaufman_specific_heat",
    "onsager_energy_per_site",
    "onsager_free_energy",
    "onsager_magnetization",
    "onsager_specific_heat",
]

BETA_CRITICAL: float = 0.5 * math.log1p(math.sqrt(2.0))
"""Critical inverse temperature for $J = 1$: $\\sinh 2\\beta_c = 1$, $\\beta_c = \\ln(1+\\sqrt2)/2$."""

# Kaufman's products lose no precision up to K ~ 350 (then sinh(gamma_0) overflows); long before that the
# lattice sits in its two ground states to double precision (corrections are ~ N exp(-8K)).
_K_GROUND_STATE = 200.0
# Near K ~ 1e-100 the mode derivatives (~ 1/K^3) overflow; the lattice is at infinite temperature long before.
_K_MIN = 1e-60
_N_SERIES = 40  # terms of the small-modulus series; enough for k <= 0.5 to double precision
_SERIES_MAX_MODULUS = 0.5


class FiniteLatticeExact(NamedTuple):
    """Exact thermodynamics of a periodic M x L lattice at one inverse temperature."""

    log_z: float
    """$\\ln Z$ of the whole lattice."""
    energy_per_site: float
    """$\\langle E \\rangle / N$."""
    specific_heat_per_site: float
    """$C/N = \\beta^2 (\\langle E^2\\rangle - \\langle E\\rangle^2) / N$."""


# ----------------------------------------------------------------------------------------------- inputs


def _real_scalar(value, name: str) -> float:
    if isinstance(value, (str, bytes)):
        raise HeatbathError(f"{name} must be a real number, got the string {value!r}; pass float({value!r}).")
    if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0:
        raise HeatbathError(f"{name} must be one real number, got {value!r}; call once per value.")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise HeatbathError(f"{name} must be a real number, got {value!r}.") from None


def _coupling(beta, J) -> float:
    """Validate beta and J and return K = beta * J."""
    beta = _real_scalar(beta, "beta")
    J = _real_scalar(J, "J")
    if not (math.isfinite(beta) and beta > 0):
        raise HeatbathError(f"beta must be positive and finite, got {beta!r}; pass an inverse temperature > 0.")
    if not (math.isfinite(J) and J > 0):
        raise HeatbathError(
            f"J must be positive and finite (these results are for the ferromagnet), got {J!r}. "
            "For an antiferromagnet on a bipartite lattice (infinite, or M and L even) use |J|: "
            "flipping one sublattice maps it onto the ferromagnet with the same Z."
        )
    K = beta * J
    if not math.isfinite(K):
        raise HeatbathError(f"beta * J overflows ({beta!r} * {J!r}); pass smaller values.")
    return K


def _size(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise HeatbathError(f"{name} must be an integer >= 2, got {value!r}.")
    try:
        size = operator.index(value)
    except TypeError:
        raise HeatbathError(
            f"{name} must be an integer >= 2 (a number of lattice sites), got {value!r}; pass e.g. int({value!r})."
        ) from None
    if size < 2:
        raise HeatbathError(f"{name} must be >= 2 for a periodic lattice, got {size}.")
    return size


def _is_critical(K: float) -> bool:
    # beta_c is irrational: treat values within rounding of it as the critical point itself.
    return abs(K - BETA_CRITICAL) <= 4 * np.finfo(float).eps * BETA_CRITICAL


# ------------------------------------------------------------------------------------ elliptic integrals


def _elliptic_k_e(k: float, kp: float) -> tuple[float, float]:
    r"""Return $(2K(k)/\pi,\; (K(k) - E(k))/K(k))$ for modulus $k$, complementary modulus $k' > 0$.

    $K(k) = \pi / (2\,\mathrm{AGM}(1, k'))$ and $E/K = 1 - \sum_{n \ge 0} 2^{n-1} c_n^2$ with the AGM
    sequence $a_0 = 1, b_0 = k', c_0 = k$, $c_{n+1} = (a_n - b_n)/2$ (Abramowitz & Stegun 17.6).
    The second entry is returned directly because K - E suffers cancellation when formed as a difference.
    """
    a, b = 1.0, kp
    total, weight = 0.5 * k * k, 0.5
    for _ in range(64):
        if a - b <= 2 * np.finfo(float).eps * a:
            break
        c = 0.5 * (a - b)
        a, b = 0.5 * (a + b), math.sqrt(a * b)
        weight *= 2.0
        total += weight * c * c
    return 1.0 / a, total


@functools.cache
def _small_modulus_series() -> dict[str, tuple[float, ...]]:
    r"""Power series in $k^2$ (exact rational coefficients) for combinations that cancel at small $k$.

    With $\kappa = 2K(k)/\pi = \sum a_n^2 k^{2n}$, $a_n = \binom{2n}{n}/4^n$, $\mathcal{E} = 2E(k)/\pi =
    \sum a_n^2 k^{2n}/(1-2n)$ and $k' = \sum p_n k^{2n}$, $p_n = (-1)^n\binom{1/2}{n}$:

    * ``energy_high_t``: $1 - k'\kappa$ (the energy bracket above $T_c$, $\sim k^2/4$);
    * ``heat_low_t`` / ``heat_high_t``: the specific-heat bracket $B/\pi$ (see `onsager_specific_heat`)
      with $\epsilon = \pm 1$, which starts at order $k^4$ / $k^2$ although its pieces are of order 1.
    """
    n = _N_SERIES
    a2 = [Fraction(1)]
    for i in range(1, n):
        a2.append(a2[-1] * Fraction(2 * i - 1, 2 * i) ** 2)
    kappa = a2
    ecal = [c / (1 - 2 * i) for i, c in enumerate(a2)]
    kp = [Fraction(1)]
    for i in range(1, n):
        kp.append(kp[-1] * Fraction(2 * i - 3, 2 * i))

    def mul(x, y):
        return [sum(x[j] * y[i - j] for j in range(i + 1)) for i in range(n)]

    one = [Fraction(1)] + [Fraction(0)] * (n - 1)
    one_minus_k2 = [Fraction(1), Fraction(-1)] + [Fraction(0)] * (n - 2)
    kp_kappa = mul(kp, kappa)
    kp2_kappa = mul(one_minus_k2, kappa)

    def heat(eps: int):
        return [
            (kappa[i] - ecal[i]) / 2 - one[i] / 4 + eps * kp[i] / 4 - eps * kp_kappa[i] / 4 + kp2_kappa[i] / 4
            for i in range(n)
        ]

    series = {
        "energy_high_t": [one[i] - kp_kappa[i] for i in range(n)],
        "heat_low_t": heat(+1),
        "heat_high_t": heat(-1),
    }
    assert series["energy_high_t"][0] == 0 and series["heat_high_t"][0] == 0
    assert series["heat_low_t"][:2] == [0, 0]
    return {name: tuple(float(c) for c in coeffs) for name, coeffs in series.items()}


def _eval_series(name: str, k: float) -> float:
    return float(np.polynomial.polynomial.polyval(k * k, _small_modulus_series()[name]))


# --------------------------------------------------------------------------------------------- Onsager


class _Moduli(NamedTuple):
    r: float  # min(sinh 2K, 1/sinh 2K), computed without overflow
    k: float  # 2 sinh 2K / cosh^2 2K
    kp: float  # |1 - sinh^2 2K| / cosh^2 2K = sqrt(1 - k^2)
    sign: int  # +1 below T_c (K > K_c), -1 above, 0 at T_c; 2 tanh^2 2K - 1 = sign * kp


def _moduli(K: float) -> _Moduli:
    if _is_critical(K):
        return _Moduli(1.0, 1.0, 0.0, 0)
    if K < BETA_CRITICAL:
        r, sign = math.sinh(2 * K), -1
    else:
        r, sign = 2 * math.exp(-2 * K) / -math.expm1(-4 * K), 1
    return _Moduli(r, 2 * r / (1 + r * r), (1 - r) * (1 + r) / (1 + r * r), sign)


@functools.cache
def _gauss_legendre(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _composite_gauss(f, lo: float, hi: float, panels: int) -> float:
    x, w = _gauss_legendre()
    edges = np.linspace(lo, hi, panels + 1)
    half = 0.5 * np.diff(edges)[:, None]
    nodes = 0.5 * (edges[:-1] + edges[1:])[:, None] + half * x
    return float(np.sum(half * w * f(nodes)))


def onsager_free_energy(beta, J: float = 1.0) -> float:
    r"""Log partition function per site, $\ln Z / N = -\beta f$, of the infinite square lattice (Onsager 1944).

    $\ln Z/N = \ln(2\cosh 2K) + \frac1\pi \int_0^{\pi/2} \ln\frac{1 + \sqrt{k'^2 + k^2\sin^2\psi}}{2}\,d\psi$,
    $K = \beta J$, $k = 2\sinh 2K/\cosh^2 2K$, $k'^2 = 1 - k^2$ (Onsager's integral folded about $\pi/2$).
    Near $T_c$ the integrand has a near-kink of width $k'/k$ at $\psi = 0$, resolved by the substitution
    $\psi = (k'/k)\sinh u$ and panelled Gauss-Legendre quadrature; accurate to ~1e-15 at every $\beta$.
    """
    K = _coupling(beta, J)
    m = _moduli(K)
    k, kp = m.k, m.kp

    def integrand(psi):
        root = np.sqrt(kp * kp + (k * np.sin(psi)) ** 2)
        return np.log1p(-((k * np.cos(psi)) ** 2) / (2 * (1 + root)))

    if k == 0.0 or kp == 0.0 or kp >= k:
        integral = _composite_gauss(integrand, 0.0, 0.5 * math.pi, 4)
    else:
        alpha = kp / k
        u_max = math.asinh(0.5 * math.pi / alpha)
        integral = _composite_gauss(
            lambda u: integrand(alpha * np.sinh(u)) * alpha * np.cosh(u), 0.0, u_max, math.ceil(u_max)
        )
    return 2 * K + math.log1p(math.exp(-4 * K)) + integral / math.pi


def onsager_energy_per_site(beta, J: float = 1.0) -> float:
    r"""Internal energy per site $u = \langle E\rangle/N$ of the infinite lattice (Onsager 1944).

    $u = -J\coth 2K\,[1 + \tfrac2\pi(2\tanh^2 2K - 1)K(k)]$ with $K(k)$ the complete elliptic integral of
    the first kind and $k = 2\sinh 2K/\cosh^2 2K$. Since $2\tanh^2 2K - 1 = \pm k'$ and $k'K(k) \to 0$,
    $u(\beta_c) = -\sqrt2 J$. Above $T_c$ at small $k$ the bracket is summed as a series to avoid cancellation.
    """
    K = _coupling(beta, J)
    m = _moduli(K)
    if m.sign == 0:
        return -J * math.sqrt(2.0)
    coth = 1.0 / math.tanh(2 * K)
    if m.sign < 0 and m.k <= _SERIES_MAX_MODULUS:
        bracket = _eval_series("energy_high_t", m.k)
    else:
        kappa, _ = _elliptic_k_e(m.k, m.kp)
        bracket = 1.0 + m.sign * m.kp * kappa
    return -J * coth * bracket


def onsager_specific_heat(beta, J: float = 1.0) -> float:
    r"""Specific heat per site $C/N = \beta^2\,\partial_\beta^2 (\ln Z/N)$ of the infinite lattice; inf at $\beta_c$.

    Differentiating `onsager_energy_per_site` (with $dK(k)/dk = E/(kk'^2) - K/k$) gives
    $C/N = \frac4\pi (K\coth 2K)^2 \{K(k) - E(k) - \mathrm{sech}^2 2K\,[\tfrac\pi2 + (2\tanh^2 2K - 1)K(k)]\}$,
    $K = \beta J$, with $K(k), E(k)$ the complete elliptic integrals. The brace vanishes like $k^4$ at low
    and $k^2$ at high temperature, so for $k \le 1/2$ it is summed from its exact power series instead.
    """
    K = _coupling(beta, J)
    m = _moduli(K)
    if m.sign == 0:
        return math.inf
    if m.k <= _SERIES_MAX_MODULUS:
        brace = _eval_series("heat_low_t" if m.sign > 0 else "heat_high_t", m.k)
    else:
        kappa, k_minus_e = _elliptic_k_e(m.k, m.kp)
        sech2 = (m.r * m.r if m.sign > 0 else 1.0) / (1 + m.r * m.r)
        brace = 0.5 * kappa * k_minus_e - sech2 * 0.5 * (1 + m.sign * m.kp * kappa)
    if brace == 0.0:  # underflowed deep in the ordered phase, where K^2 may overflow
        return 0.0
    return 4 * (K / math.tanh(2 * K)) ** 2 * brace


def onsager_magnetization(beta, J: float = 1.0) -> float:
    r"""Spontaneous magnetisation per site of the infinite lattice (Onsager 1949, Yang 1952).

    $m = (1 - \sinh^{-4} 2K)^{1/8}$ for $K = \beta J > K_c$, and 0 for $K \le K_c$.
    """
    K = _coupling(beta, J)
    m = _moduli(K)
    if m.sign <= 0:
        return 0.0
    r = m.r  # 1/sinh 2K
    return ((1 - r) * (1 + r) * (1 + r * r)) ** 0.125


# --------------------------------------------------------------------------------------------- Kaufman


class _Exponents(NamedTuple):
    """Per-q data for q = 0 .. 2L-1: lam = ln(2 sinh 2K) + |gamma_q|, the signed gamma_q, K-derivatives."""

    lam: np.ndarray
    lam1: np.ndarray
    lam2: np.ndarray
    gamma: np.ndarray
    gamma1: np.ndarray
    gamma2: np.ndarray
    sign: np.ndarray  # sign of gamma_q (+1 at gamma_0 = 0, matching the branch used for lam_0)


def _kaufman_exponents(L: int, K: float) -> _Exponents:
    r"""Kaufman's $\gamma_q$ with $\cosh\gamma_q = \cosh\gamma_0 + 1 - \cos(\pi q/L)$, $\gamma_0 = 2K + \ln\tanh K$.

    Factors are carried as $\lambda_q = \ln(2\sinh 2K) + |\gamma_q|$, which absorbs the prefactor
    $(2\sinh 2K)^{N/2}$ and stays finite as $K \to 0$, where $\ln\sinh 2K$ and $|\gamma_q|$ each diverge;
    differentiating them separately would cancel to relative precision $\epsilon/K^2$.
    Closed forms: $\lambda_0 = 2\ln(e^{2K} - 1)$ for $\gamma_0 \ge 0$ and $2\ln(1 + e^{-2K})$ otherwise; for
    $q \ne 0$ and $K \le K_c$, $\lambda_q = \ln 2(X + Y)$ with $X = \sinh 2K\cosh\gamma_q
    = \cosh^2 2K - \sinh 2K\cos\theta_q$, $Y = \sqrt{X^2 - \sinh^2 2K}$; above $K_c$ the direct sum is exact.
    $\gamma_q' = \sinh\gamma_0\,\gamma_0'/\sinh\gamma_q$ and $\gamma_q'' = [\gamma_0'^2 (1 - \cos\theta_q)
    (\cosh\gamma_0\cosh\gamma_q + 1)/\sinh^2\gamma_q + \sinh\gamma_0\,\gamma_0''] / \sinh\gamma_q$ follow
    from differentiating $\cosh\gamma_q - \cosh\gamma_0 = $ const, and are free of cancellation.
    """
    sigma, ch = math.sinh(2 * K), math.cosh(2 * K)
    mu1, mu2 = 2 / math.tanh(2 * K), -4 / sigma / sigma  # derivatives of ln(2 sinh 2K)
    g0 = 2 * K + math.log(math.tanh(K))
    g0_1, g0_2 = 2 * (1 + 1 / sigma), -4 / (sigma * math.tanh(2 * K))
    if g0 >= 0:
        s0, em = 1.0, -math.expm1(-2 * K)  # 1 - e^{-2K}
        lam0 = 2 * (2 * K + math.log(em))  # 2 ln(e^{2K} - 1)
        lam0_1, lam0_2 = 4 / em, -8 * math.exp(-2 * K) / em**2
    else:
        s0, e = -1.0, math.exp(-2 * K)
        lam0, lam0_1, lam0_2 = 2 * math.log1p(e), -4 * e / (1 + e), 8 * e / (1 + e) ** 2

    one_minus_cos = 2 * np.sin(0.5 * math.pi * np.arange(1, 2 * L) / L) ** 2
    eps = 2 * math.sinh(0.5 * g0) ** 2 + one_minus_cos  # cosh(gamma_q) - 1
    sinh_g = np.sqrt(eps) * np.sqrt(eps + 2)
    g = np.log1p(eps + sinh_g)
    sinh_g0 = math.sinh(g0)
    g1 = sinh_g0 * g0_1 / sinh_g
    # (cosh g0 cosh gq + 1) / sinh^2 gq, grouped so that nothing overflows at large K
    ratio = (1 + eps - one_minus_cos) / sinh_g * ((1 + eps) / sinh_g) + (1 / sinh_g) ** 2
    g2 = (g0_1**2 * one_minus_cos * ratio + sinh_g0 * g0_2) / sinh_g
    if sigma > 1:
        lam = 2 * K + math.log(-math.expm1(-4 * K)) + g
        lam1, lam2 = mu1 + g1, mu2 + g2
    else:
        d = one_minus_cos
        x_minus_sigma = (1 - sigma) ** 2 + sigma * d
        x = x_minus_sigma + sigma
        y = np.sqrt(x_minus_sigma) * np.sqrt(x + sigma)
        x1 = 2 * ch * (2 * sigma - 1 + d)
        # y y' = x x' - sigma sigma', expanded about the critical point sigma = 1, cos = 1
        yy1 = (sigma - 1) * (2 * sigma**2 - sigma + 1) + d * (3 * sigma**2 - 2 * sigma + 1) + d * d * sigma
        y1 = 2 * ch * yy1 / y
        x2 = 4 * sigma * (2 * sigma - 1 + d) + 8 * ch**2
        y2 = (x1**2 + x * x2 - 4 * ch**2 - 4 * sigma**2 - y1**2) / y
        lam = math.log(2.0) + np.log(x + y)
        lam1 = (x1 + y1) / (x + y)
        lam2 = (x2 + y2) / (x + y) - lam1**2
    return _Exponents(
        np.concatenate([[lam0], lam]),
        np.concatenate([[lam0_1], lam1]),
        np.concatenate([[lam0_2], lam2]),
        np.concatenate([[g0], g]),
        np.concatenate([[g0_1], g1]),
        np.concatenate([[g0_2], g2]),
        np.concatenate([[s0], np.ones(2 * L - 1)]),
    )


def _log_product(a: float, x: _Exponents, hyperbolic: str) -> tuple[float, float, float]:
    r"""$\sum_q \ln F_q$ and its first two K-derivatives, $F_q = (2\sinh 2K)^a\, 2\cosh(a\gamma_q)$ or $2\sinh$.

    $\ln F_q = a\lambda_q + \ln(1 \pm e)$, $e = e^{-2a|\gamma_q|}$; the $\pm e$ parts are small
    corrections except near $T_c$, where everything is of order one.
    """
    e = np.exp(-2 * a * np.abs(x.gamma))
    if hyperbolic == "cosh":
        w = e / (1 + e)
        log_f = a * x.lam + np.log1p(e)
        d1 = a * x.lam1 - 2 * a * x.sign * x.gamma1 * w
        d2 = a * x.lam2 - 2 * a * x.sign * x.gamma2 * w + 4 * a * a * x.gamma1**2 * w / (1 + e)
    else:  # all gamma > 0 here
        one_minus_e = -np.expm1(-2 * a * x.gamma)
        w = e / one_minus_e
        log_f = a * x.lam + np.log(one_minus_e)
        d1 = a * x.lam1 + 2 * a * x.gamma1 * w
        d2 = a * x.lam2 + 2 * a * x.gamma2 * w - 4 * a * a * x.gamma1**2 * w / one_minus_e
    return float(np.sum(log_f)), float(np.sum(d1)), float(np.sum(d2))


def _kaufman_log_z_derivatives(M: int, L: int, K: float) -> tuple[float, float, float]:
    r"""$\ln Z$, $d\ln Z/dK$ and $d^2\ln Z/dK^2$ of the periodic M x L lattice (Kaufman 1949).

    $Z = \tfrac12 \sum_{i=1}^4 Z_i$ with the prefactor $(2\sinh 2K)^{N/2}$ spread over the $L$ factors of
    each product. The $q = 0$ factor of $Z_4$, $2\sinh(\tfrac M2\gamma_0)$, changes sign at $T_c$ and vanishes
    there, so it is kept as a value (scaled by $e^{-a\lambda_0}$) with its derivatives rather than a log.
    """
    N = M * L
    if K > _K_GROUND_STATE:
        return 2 * N * K + math.log(2.0), 2.0 * N, 0.0
    a = 0.5 * M
    x = _kaufman_exponents(L, K)
    odd = _Exponents(*(v[1::2] for v in x))
    even = _Exponents(*(v[0::2] for v in x))
    even_nonzero = _Exponents(*(v[2::2] for v in x))

    # Scaled q = 0 factor of Z_4: v = 2 sinh(a g0) (2 sinh 2K)^a e^{-a lam0}, and v', v'' likewise scaled.
    s0, g0, g0_1, g0_2 = (float(v[0]) for v in (x.sign, x.gamma, x.gamma1, x.gamma2))
    lam0, lam0_1, lam0_2 = float(x.lam[0]), float(x.lam1[0]), float(x.lam2[0])
    sigma = math.sinh(2 * K)
    mu1, mu2 = 2 / math.tanh(2 * K), -4 / sigma / sigma  # derivatives of ln(2 sinh 2K)
    e0 = math.exp(-2 * a * abs(g0))
    v = s0 * -math.expm1(-2 * a * abs(g0))
    v1 = a * (s0 * lam0_1 + e0 * (g0_1 - s0 * mu1))
    v2 = s0 * a * (a * lam0_1**2 + lam0_2) - s0 * a * a * e0 * (mu1 - s0 * g0_1) ** 2 + a * e0 * (g0_2 - s0 * mu2)

    # Each term: (log scale, d log/dK, d^2 log/dK^2 of its regular part, scaled special factor and derivatives)
    c4, d4, h4 = _log_product(a, even_nonzero, "sinh")
    terms = [
        (*_log_product(a, odd, "cosh"), 1.0, 0.0, 0.0),
        (*_log_product(a, odd, "sinh"), 1.0, 0.0, 0.0),
        (*_log_product(a, even, "cosh"), 1.0, 0.0, 0.0),
        (c4 + a * lam0, d4, h4, v, v1, v2),
    ]
    # Sum of the four terms and its derivatives, centred on the first term's log-derivative so that the
    # O(N^2) squares cancel analytically rather than numerically.
    c_max = max(t[0] for t in terms)
    centre = terms[0][1]
    s_0 = s_1 = s_2 = 0.0
    for c, d, h, u, u1, u2 in terms:
        w = math.exp(c - c_max)
        dev = d - centre
        s_0 += w * u
        s_1 += w * (u1 + u * dev)
        s_2 += w * (u2 + 2 * u1 * dev + u * (h + dev * dev))
    log_z = -math.log(2.0) + c_max + math.log(s_0)
    return log_z, centre + s_1 / s_0, s_2 / s_0 - (s_1 / s_0) ** 2


def exact_finite_lattice(L, beta, J: float = 1.0, M=None) -> FiniteLatticeExact:
    r"""Exact $\ln Z$, energy per site and specific heat per site of the periodic M x L lattice.

    Kaufman's four-term formula (Kaufman 1949) evaluated in logarithms, so any size works (L = 512 and
    far beyond, in O(L) time), with analytic K-derivatives in the manner of Ferdinand & Fisher (1969):
    $\langle E\rangle/N = -J\,\partial_K \ln Z/N$ and $C/N = K^2 \partial_K^2 \ln Z / N$, $K = \beta J$.
    `M` (rows) defaults to `L` (columns); Z is symmetric in M and L.

    Accuracy: $\ln Z$ to ~1e-15 relative; energy per site and specific heat per site to ~1e-15 absolute,
    i.e. ~1e-13 relative for 0.01 <~ beta J <~ 1.5. Deep in the ordered phase the specific heat,
    ~64 K^2 exp(-8K), is a sum over modes that cancels to ~eps exp(6K) relative (1e-11 at beta J = 2,
    1e-7 at 3); it is clipped at 0. For beta J > 200 the ground-state values (2 N beta J + ln 2, -2J, 0)
    are returned, exact in double precision there.
    """
    L = _size(L, "L")
    M = L if M is None else _size(M, "M")
    K = _coupling(beta, J)
    if K < _K_MIN:
        raise HeatbathError(
            f"beta * J = {K!r} is below {_K_MIN}, where Kaufman's products overflow; the lattice is at infinite "
            "temperature to double precision there (ln Z = N ln 2, energy -2 J (beta J) and specific heat "
            "2 (beta J)^2 per site), so use those values or pass a larger beta."
        )
    log_z, d1, d2 = _kaufman_log_z_derivatives(M, L, K)
    N = M * L
    # C is a variance: rounding can push its last digits below zero when it is ~1e-20 deep in the ordered phase.
    return FiniteLatticeExact(float(log_z), float(-J * d1 / N), max(float(K * K * d2 / N), 0.0))


def kaufman_log_z(L, beta, J: float = 1.0, M=None) -> float:
    """Exact $\\ln Z$ of the periodic M x L lattice (M defaults to L); see `exact_finite_lattice`."""
    return exact_finite_lattice(L, beta, J, M).log_z


def kaufman_energy_per_site(L, beta, J: float = 1.0, M=None) -> float:
    """Exact $\\langle E\\rangle / N$ of the periodic M x L lattice; see `exact_finite_lattice`."""
    return exact_finite_lattice(L, beta, J, M).energy_per_site


def kaufman_specific_heat(L, beta, J: float = 1.0, M=None) -> float:
    """Exact $C/N = \\beta^2 \\mathrm{Var}(E)/N$ of the periodic M x L lattice; see `exact_finite_lattice`."""
    return exact_finite_lattice(L, beta, J, M).specific_heat_per_site
