"""heatbath: block Gibbs ("heat-bath") sampling and learning of PGMs and energy-based models in JAX.

The public API of THRML is available under the same names (replace `thrml` by `heatbath` in imports).
"""

from heatbath.block_management import (
    Block,
    BlockSpec,
    block_state_to_global,
    from_global_state,
    get_node_locations,
    make_empty_block_state,
    verify_block_state,
)
from heatbath.block_sampling import (
    BlockGibbsSpec,
    BlockSamplingProgram,
    FactorSamplingProgram,
    SamplingSchedule,
    sample_blocks,
    sample_single_block,
    sample_states,
    sample_with_observation,
)
from heatbath.conditional_samplers import (
    AbstractConditionalSampler,
    AbstractParametricConditionalSampler,
    BernoulliConditional,
    SoftmaxConditional,
)
from heatbath.errors import HeatbathError, IndependenceError, StateError
from heatbath.factor import AbstractFactor, WeightedFactor
from heatbath.interaction import InteractionGroup
from heatbath.observers import AbstractObserver, MomentAccumulatorObserver, StateObserver
from heatbath.pgm import AbstractNode, CategoricalNode, ContinuousNode, SpinNode

__version__ = "0.1.0"

__all__ = [
    "AbstractNode",
    "SpinNode",
    "CategoricalNode",
    "ContinuousNode",
    "Block",
    "BlockSpec",
    "block_state_to_global",
    "from_global_state",
    "get_node_locations",
    "make_empty_block_state",
    "verify_block_state",
    "InteractionGroup",
    "AbstractFactor",
    "WeightedFactor",
    "FactorSamplingProgram",
    "BlockSamplingProgram",
    "BlockGibbsSpec",
    "SamplingSchedule",
    "sample_blocks",
    "sample_single_block",
    "sample_with_observation",
    "sample_states",
    "AbstractConditionalSampler",
    "AbstractParametricConditionalSampler",
    "BernoulliConditional",
    "SoftmaxConditional",
    "AbstractObserver",
    "StateObserver",
    "MomentAccumulatorObserver",
    "HeatbathError",
    "StateError",
    "IndependenceError",
]
