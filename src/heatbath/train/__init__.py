"""Learning: KL gradients of any factorised EBM (positive minus negative phase, by autodiff of the energy),
persistent-contrastive-divergence training with optax, diagnostics, and array-only model files."""

from heatbath.train.checkpoint import load_model, save_model
from heatbath.train.gradients import EnergyGradObserver, PhaseStats, energy_grad, estimate_kl_grad
from heatbath.train.loop import FitResult, default_trainable, fit, train_step
from heatbath.train.metrics import ExactKL, exact_kl, exact_kl_table, pseudo_log_likelihood
from heatbath.train.spec import TrainingSpec, default_sampler, random_block_states

__all__ = [
    "TrainingSpec",
    "default_sampler",
    "random_block_states",
    "estimate_kl_grad",
    "energy_grad",
    "EnergyGradObserver",
    "PhaseStats",
    "fit",
    "FitResult",
    "train_step",
    "default_trainable",
    "pseudo_log_likelihood",
    "ExactKL",
    "exact_kl_table",
    "exact_kl",
    "save_model",
    "load_model",
]
