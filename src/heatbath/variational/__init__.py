"""Variational autoregressive models: MADE, reverse-KL training, and exact sampling with a learned proposal.

- `MADE`: masked autoregressive network over discrete units (exact `log_prob`, ancestral `sample`).
- `train_reverse_kl`: minimise the variational free energy F_q = E_q[E] + T E_q[ln q] (REINFORCE with a
  baseline, or straight-through Gumbel-softmax), with β annealing and Z2 symmetrisation.
- `evaluate`: F_q, importance-weighted ln Z with standard errors, effective sample size.
- `sample_with_proposal`: independent Metropolis–Hastings with q as proposal, mixed with Gibbs sweeps.
- `TransferMatrix`, `exact_stationary`, `fit_stationary`, `log_lambda_estimate`: the stationary row
  distribution of a 2D Ising strip's transfer matrix, exactly (small widths) and as a learned MADE.
"""

from heatbath.variational.energies import EBMEnergy, SpinGlassEnergy, energy_from_ebm
from heatbath.variational.estimators import (
    VariationalEstimate,
    Z2Symmetric,
    evaluate,
    exact_variational_free_energy,
    free_energy_gradient,
    score_function_loss,
    straight_through_loss,
)
from heatbath.variational.made import MADE, spins_to_states, states_to_spins
from heatbath.variational.mh import (
    GibbsKernel,
    IndependentMHState,
    ProposalMHResult,
    independent_mh_step,
    sample_with_proposal,
)
from heatbath.variational.reverse_kl import (
    ReverseKLHistory,
    annealed_beta,
    train_reverse_kl,
)
from heatbath.variational.transfer_matrix import (
    ExactStationary,
    LambdaEstimate,
    StationaryFit,
    TransferMatrix,
    exact_stationary,
    fit_stationary,
    free_energy_per_site,
    ising_bond_weights,
    log_lambda_estimate,
    power_iteration,
)

__all__ = [
    "MADE",
    "states_to_spins",
    "spins_to_states",
    "SpinGlassEnergy",
    "EBMEnergy",
    "energy_from_ebm",
    "Z2Symmetric",
    "VariationalEstimate",
    "evaluate",
    "score_function_loss",
    "straight_through_loss",
    "free_energy_gradient",
    "exact_variational_free_energy",
    "ReverseKLHistory",
    "annealed_beta",
    "train_reverse_kl",
    "IndependentMHState",
    "ProposalMHResult",
    "GibbsKernel",
    "independent_mh_step",
    "sample_with_proposal",
    "TransferMatrix",
    "ising_bond_weights",
    "ExactStationary",
    "exact_stationary",
    "power_iteration",
    "free_energy_per_site",
    "StationaryFit",
    "fit_stationary",
    "LambdaEstimate",
    "log_lambda_estimate",
]
