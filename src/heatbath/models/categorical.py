"""`CategoricalEBM`: a Potts-style model with per-node biases and per-edge K×K couplings.

E(c) = -β (Σ_i b_i[c_i] + Σ_(u,v) W_uv[c_u, c_v]).
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from heatbath.block_management import Block, NodeShapeDtypes
from heatbath.block_sampling import BlockGibbsSpec, FactorSamplingProgram
from heatbath.errors import HeatbathError
from heatbath.models.ebm import AbstractPairwiseEBM, EBMFactor, pair_blocks, scaled
from heatbath.pgm import AbstractNode, CategoricalNode
from heatbath.validation import check_finite

__all__ = ["CategoricalEBM", "CategoricalSamplingProgram", "categorical_dtype"]


def categorical_dtype(n_categories: int):
    """The narrowest unsigned dtype that holds categories 0..K-1 (uint8 up to 256, then wider, never truncating)."""
    for dtype in (jnp.uint8, jnp.uint16, jnp.uint32):
        if n_categories - 1 <= np.iinfo(dtype).max:
            return dtype
    raise HeatbathError(f"{n_categories} categories do not fit in uint32.")


def _infer_k(nodes, biases, weights) -> int:
    candidates = set()
    if biases is not None:
        candidates.add(int(np.shape(biases)[-1]))
    if weights is not None and np.ndim(weights) == 3:
        candidates.update({int(np.shape(weights)[1]), int(np.shape(weights)[2])})
    candidates.update({n.num_states for n in nodes if getattr(n, "num_states", None) is not None})
    if not candidates:
        raise HeatbathError(
            "CategoricalEBM cannot tell the number of categories: pass biases of shape [n_nodes, K], weights of "
            "shape [n_edges, K, K], or nodes created with CategoricalNode(num_states=K)."
        )
    if len(candidates) > 1:
        raise HeatbathError(f"CategoricalEBM got inconsistent numbers of categories {sorted(candidates)} from "
                            "biases, weights and node num_states; make them agree.")
    return candidates.pop()


class CategoricalEBM(AbstractPairwiseEBM):
    """A categorical (Potts) EBM; mirrors `IsingEBM` with K-vectors for biases and K×K matrices for couplings.

    **Arguments:** `nodes` (categorical nodes), `biases` [n_nodes, K] (a single node may take [K];
    None means zero), `edges` (pairs of nodes), `weights` [n_edges, K, K], `beta` (inverse temperature).
    """

    biases: Float[Array, "nodes k"]
    weights: Float[Array, "edges k k"]
    beta: Float[Array, ""]
    n_categories: int = eqx.field(static=True)

    def __init__(
        self,
        nodes: Sequence[AbstractNode],
        biases: Array | None = None,
        edges: Sequence[tuple[AbstractNode, AbstractNode]] = (),
        weights: Array | None = None,
        beta: float | Array = 1.0,
    ):
        nodes, edge_blocks = list(nodes), pair_blocks(edges, "CategoricalEBM")
        if not nodes:
            raise HeatbathError("CategoricalEBM needs at least one node.")
        k = _infer_k(nodes, biases, weights)
        n, m = len(nodes), (len(edge_blocks[0]) if edge_blocks else 0)
        if biases is None:
            biases = jnp.zeros((n, k), jnp.float32)
        biases = jnp.asarray(biases)
        if biases.ndim == 1 and n == 1:
            biases = biases[None, :]
        if biases.shape != (n, k):
            raise HeatbathError(f"CategoricalEBM biases have shape {tuple(biases.shape)}; expected [n_nodes, K] = ({n}, {k}).")
        if weights is None:
            weights = jnp.zeros((m, k, k), jnp.float32)
        weights = jnp.asarray(weights)
        if weights.shape != (m, k, k):
            raise HeatbathError(
                f"CategoricalEBM weights have shape {tuple(weights.shape)}; expected [n_edges, K, K] = ({m}, {k}, {k})."
            )
        for name, arr in (("biases", biases), ("weights", weights), ("beta", beta)):
            check_finite(arr, f"CategoricalEBM {name}")
        self._node_block = Block(nodes)
        self._edge_blocks = edge_blocks
        self.biases = biases.astype(jnp.float32) if not jnp.issubdtype(biases.dtype, jnp.floating) else biases
        self.weights = weights.astype(jnp.float32) if not jnp.issubdtype(weights.dtype, jnp.floating) else weights
        self.beta = jnp.asarray(beta, jnp.float32)
        self.n_categories = k
        state_sd = jax.ShapeDtypeStruct((), categorical_dtype(k))
        self.node_shape_dtypes = NodeShapeDtypes({CategoricalNode: state_sd} | {t: state_sd for t in set(map(type, nodes))})

    @property
    def factors(self) -> list[EBMFactor]:
        from heatbath.models.discrete_ebm import CategoricalEBMFactor, SquareCategoricalEBMFactor

        factors: list[EBMFactor] = [CategoricalEBMFactor([self._node_block], scaled(self.beta, self.biases))]
        if self._edge_blocks:
            factors.append(SquareCategoricalEBMFactor(list(self._edge_blocks), scaled(self.beta, self.weights)))
        return factors


class CategoricalSamplingProgram(FactorSamplingProgram):
    """Block Gibbs for a `CategoricalEBM`: a softmax Gibbs conditional on every free block."""

    def __init__(self, ebm: CategoricalEBM, free_blocks, clamped_blocks):
        from heatbath.models.discrete_ebm import CategoricalGibbsConditional

        spec = BlockGibbsSpec(free_blocks, clamped_blocks, ebm.node_shape_dtypes)
        sampler = CategoricalGibbsConditional(ebm.n_categories)
        super().__init__(spec, [sampler] * len(spec.free_blocks), ebm.factors, [])
