"""Exact references: enumeration of small discrete models, the exact 2D Ising model (Onsager, Kaufman),
and the Potts model on small tori (transfer matrix)."""

from heatbath.exact.enumeration import (
    MAX_ENUMERATED_STATES,
    ExactDistribution,
    exact_distribution,
    expectation,
    infer_state_counts,
    log_partition_function,
    marginals,
    spin_moments,
)
from heatbath.exact.potts import MAX_ROW_CONFIGURATIONS, potts_energy_per_site_exact, potts_log_z
from heatbath.exact.ising2d import (
    BETA_CRITICAL,
    FiniteLatticeExact,
    exact_finite_lattice,
    kaufman_energy_per_site,
    kaufman_log_z,
    kaufman_specific_heat,
    onsager_energy_per_site,
    onsager_free_energy,
    onsager_magnetization,
    onsager_specific_heat,
)

__all__ = [
    "MAX_ENUMERATED_STATES",
    "ExactDistribution",
    "exact_distribution",
    "log_partition_function",
    "infer_state_counts",
    "marginals",
    "expectation",
    "spin_moments",
    "BETA_CRITICAL",
    "FiniteLatticeExact",
    "exact_finite_lattice",
    "kaufman_log_z",
    "kaufman_energy_per_site",
    "kaufman_specific_heat",
    "onsager_free_energy",
    "onsager_energy_per_site",
    "onsager_specific_heat",
    "onsager_magnetization",
    "MAX_ROW_CONFIGURATIONS",
    "potts_log_z",
    "potts_energy_per_site_exact",
]
