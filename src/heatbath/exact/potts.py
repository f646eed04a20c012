r"""Exact mean energy of the q-state Potts model on a small periodic L × L lattice (transfer matrix).

Energy $E(s) = -J \sum_{\langle ij \rangle} \delta(s_i, s_j) - \sum_i h_{s_i}$, $s_i \in \{0..q-1\}$, at
inverse temperature β. The row-to-row transfer matrix over the $q^L$ configurations of a row gives
$Z = \mathrm{Tr}\, T^L = \sum_k \lambda_k^L$ exactly; $\langle E \rangle = -\partial_\beta \ln Z$ by a
central difference. Feasible while $q^L$ is a few thousand (q = 3, L = 6: 729 rows).
"""

from __future__ import annotations

import itertools

import numpy as np

from heatbath.errors import HeatbathError

__all__ = ["potts_log_z", "potts_energy_per_site_exact", "MAX_ROW_CONFIGURATIONS"]

MAX_ROW_CONFIGURATIONS = 4096


def potts_log_z(q: int, L: int, beta: float, J: float, field) -> float:
    """ln Z of the Potts model on the L × L torus (see the module docstring)."""
    if q**L > MAX_ROW_CONFIGURATIONS:
        raise HeatbathError(f"The transfer matrix has q^L = {q**L} rows; at most {MAX_ROW_CONFIGURATIONS} are computed.")
    field = np.asarray(field, np.float64)
    rows = np.array(list(itertools.product(range(q), repeat=L)))  # [q^L, L]
    within = (rows == np.roll(rows, 1, axis=1)).sum(1)  # horizontal bonds of a row
    on_site = field[rows].sum(1)
    between = (rows[:, None, :] == rows[None, :, :]).sum(2)  # vertical bonds between consecutive rows
    log_t = beta * (J * (within[:, None] + between) + on_site[:, None])
    shift = log_t.max()
    eig = np.linalg.eigvals(np.exp(log_t - shift))
    return float(np.log(np.sum(eig**L).real) + L * shift)


def potts_energy_per_site_exact(q: int, L: int, beta: float, J: float, field, step: float = 1e-5) -> float:
    """⟨E⟩ / L² on the L × L torus, by a central difference of `potts_log_z` in β."""
    return -(potts_log_z(q, L, beta + step, J, field) - potts_log_z(q, L, beta - step, J, field)) / (2 * step) / L**2
