"""Conditional samplers: the rule that draws a new state for a block given its neighbours.

The calling convention is `sample(key, interactions, active_flags, states, sampler_state, output_sd)`:
`interactions[g]` is a PyTree whose arrays have shape [n, k, ...] (n nodes in the block, k the most
times any of them is the head of group g), `active_flags[g]` is a bool [n, k] mask that is False on
padding, and `states[g]` is a list, one per tail block of group g, of neighbour states of shape [n, k].
"""

from __future__ import annotations

import abc
from typing import TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Key, PyTree, Shaped

__all__ = [
    "AbstractConditionalSampler",
    "AbstractParametricConditionalSampler",
    "BernoulliConditional",
    "SoftmaxConditional",
    "spin_output",
]

_State = PyTree[Shaped[Array, "nodes ?*state"], "State"]
_SamplerState = TypeVar("_SamplerState")


class AbstractConditionalSampler(eqx.Module):
    """Draws a block's new state from its conditional distribution given its neighbours' states."""

    @abc.abstractmethod
    def sample(
        self,
        key: Key[Array, ""],
        interactions: list[PyTree],
        active_flags: list[Array],
        states: list[list[_State]],
        sampler_state: _SamplerState,
        output_sd: PyTree[jax.ShapeDtypeStruct],
    ) -> tuple[_State, _SamplerState]:
        """Return `(new block state matching output_sd, new sampler state)`."""

    def init(self) -> PyTree:
        """The sampler's state before the first update (None for memoryless samplers)."""
        return None


class AbstractParametricConditionalSampler(AbstractConditionalSampler):
    """A sampler that first computes distribution parameters, then draws from that distribution."""

    @abc.abstractmethod
    def compute_parameters(
        self,
        key: Key[Array, ""],
        interactions: list[PyTree],
        active_flags: list[Array],
        states: list[list[_State]],
        sampler_state: PyTree,
        output_sd: PyTree[jax.ShapeDtypeStruct],
    ) -> tuple[PyTree, PyTree]:
        """Return `(parameters, sampler_state)`."""

    @abc.abstractmethod
    def sample_given_parameters(
        self, key: Key[Array, ""], parameters: PyTree, sampler_state: _SamplerState, output_sd: PyTree
    ) -> tuple[_State, _SamplerState]:
        """Draw from the distribution described by `parameters`."""

    def sample(self, key, interactions, active_flags, states, sampler_state, output_sd):
        key_params, key_draw = jax.random.split(key)
        parameters, sampler_state = self.compute_parameters(
            key_params, interactions, active_flags, states, sampler_state, output_sd
        )
        return self.sample_given_parameters(key_draw, parameters, sampler_state, output_sd)


def spin_output(is_up: Array, output_sd: jax.ShapeDtypeStruct) -> Array:
    """Encode spins for storage: `bool` stores True for +1; any other dtype stores the values -1 and +1."""
    dtype = output_sd.dtype
    if dtype == jnp.bool_:
        return is_up
    return jnp.where(is_up, 1, -1).astype(dtype)


class BernoulliConditional(AbstractParametricConditionalSampler):
    r"""Samples spins with $P(S=s) \propto e^{\gamma s}$, $s \in \{-1, +1\}$, i.e. $P(S=+1) = \sigma(2\gamma)$.

    Subclasses compute $\gamma$ (shape [n]) in `compute_parameters`.
    """

    def sample_given_parameters(self, key, parameters, sampler_state, output_sd):
        gamma = parameters
        # P(+1) = sigmoid(2 gamma); comparing a uniform to it is exact and cheap.
        u = jax.random.uniform(key, jnp.shape(gamma), dtype=jnp.result_type(gamma, jnp.float32))
        return spin_output(u < jax.nn.sigmoid(2 * gamma), output_sd), sampler_state


class SoftmaxConditional(AbstractParametricConditionalSampler):
    r"""Samples categories with $P(X=k) \propto e^{\theta_k}$; subclasses compute $\theta$ (shape [n, K])."""

    def sample_given_parameters(self, key, parameters, sampler_state, output_sd):
        draw = jax.random.categorical(key, parameters, axis=-1)
        return draw.astype(output_sd.dtype), sampler_state
