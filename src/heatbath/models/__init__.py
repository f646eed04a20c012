"""Models: energy-based models with their sampling programs (THRML's `thrml.models`, and more)."""

from heatbath.models.categorical import CategoricalEBM, CategoricalSamplingProgram
from heatbath.models.discrete_ebm import (
    CategoricalEBMFactor,
    CategoricalGibbsConditional,
    DiscreteEBMFactor,
    DiscreteEBMInteraction,
    SpinEBMFactor,
    SpinGibbsConditional,
    SquareCategoricalEBMFactor,
    SquareDiscreteEBMFactor,
)
from heatbath.models.continuous import (
    ContinuousCouplingFactor,
    ContinuousLinearFactor,
    ContinuousQuadraticFactor,
    GaussianGibbsConditional,
    MixedSpinGibbsConditional,
    SpinContinuousFactor,
)
from heatbath.models.gaussian import ContinuousSamplingProgram, GaussianBernoulliEBM, GaussianEBM
from heatbath.models.metropolis import MetropolisGibbsConditional, current_state_groups
from heatbath.models.ebm import AbstractEBM, AbstractFactorizedEBM, EBMFactor, FactorizedEBM
from heatbath.models.ising import (
    IsingEBM,
    IsingSamplingProgram,
    IsingTrainingSpec,
    estimate_kl_grad,
    estimate_moments,
    hinton_init,
)

__all__ = [
    "AbstractEBM",
    "AbstractFactorizedEBM",
    "FactorizedEBM",
    "EBMFactor",
    "DiscreteEBMFactor",
    "DiscreteEBMInteraction",
    "SquareDiscreteEBMFactor",
    "SpinEBMFactor",
    "CategoricalEBMFactor",
    "SquareCategoricalEBMFactor",
    "SpinGibbsConditional",
    "CategoricalGibbsConditional",
    "CategoricalEBM",
    "CategoricalSamplingProgram",
    "IsingEBM",
    "IsingSamplingProgram",
    "IsingTrainingSpec",
    "hinton_init",
    "estimate_moments",
    "estimate_kl_grad",
    "ContinuousLinearFactor",
    "ContinuousQuadraticFactor",
    "ContinuousCouplingFactor",
    "SpinContinuousFactor",
    "GaussianGibbsConditional",
    "MixedSpinGibbsConditional",
    "MetropolisGibbsConditional",
    "current_state_groups",
    "GaussianEBM",
    "GaussianBernoulliEBM",
    "ContinuousSamplingProgram",
]
