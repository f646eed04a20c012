"""Every sampling program in one place (the module path the categorical-EBM users import from)."""

from heatbath.block_sampling import BlockSamplingProgram, FactorSamplingProgram
from heatbath.models.categorical import CategoricalSamplingProgram
from heatbath.models.ising import IsingSamplingProgram

__all__ = ["BlockSamplingProgram", "FactorSamplingProgram", "IsingSamplingProgram", "CategoricalSamplingProgram"]
