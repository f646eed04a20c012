"""Front ends for continuous models: Gaussian EBMs from a precision matrix, and Gaussian–Bernoulli (mixed) EBMs.

`GaussianEBM`:  E(x) = ½ (x - μ)ᵀ A (x - μ)  (up to a constant), i.e. ½ Σ A_ii x_i² + Σ_{i<j} A_ij x_i x_j - (Aμ)ᵀx.

`GaussianBernoulliEBM` over continuous x and spins s ∈ {-1, +1}:

    E(x, s) = ½ Σ d_i x_i² + Σ_e A_e x_u x_v + Σ b_i x_i - Σ c_k s_k - Σ_f J_f s_k s_l + Σ_g W_g s_k x_i

(spin terms with Ising signs, spin–continuous terms with the sign of the Gaussian linear term).
Both choose free blocks by colouring the interaction graph (`heatbath.graphs.color_blocks`).
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from heatbath.block_management import DEFAULT_NODE_SHAPE_DTYPES, Block, NodeShapeDtypes
from heatbath.block_sampling import BlockGibbsSpec, FactorSamplingProgram
from heatbath.errors import HeatbathError
from heatbath.models.continuous import (
    ContinuousCouplingFactor,
    ContinuousLinearFactor,
    ContinuousQuadraticFactor,
    GaussianGibbsConditional,
    MixedSpinGibbsConditional,
    SpinContinuousFactor,
    check_continuous_dtypes,
)
from heatbath.models.discrete_ebm import SpinEBMFactor
from heatbath.models.ebm import AbstractFactorizedEBM, EBMFactor
from heatbath.pgm import AbstractNode, SpinNode
from heatbath.validation import check_finite, is_concrete

__all__ = ["GaussianEBM", "GaussianBernoulliEBM", "ContinuousSamplingProgram"]

_PD_CHECK_LIMIT = 4096  # nodes up to which the precision matrix is checked by a dense Cholesky factorisation


def _vector(x, n: int, what: str) -> np.ndarray | Array:
    if x is None:
        return np.zeros(n, np.float32)
    check_finite(x, what)
    if np.shape(x) != (n,):
        raise HeatbathError(f"{what} must have shape ({n},), got {tuple(np.shape(x))}.")
    if not is_concrete(x):
        return jnp.asarray(x, jnp.float32)
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise HeatbathError(f"{what} must be numeric (float), got dtype {arr.dtype}.")
    return arr.astype(np.float32)


def _edge_arrays(edges, weights, index: dict, what: str):
    """Edges given as node pairs (or integer index pairs) -> two int arrays and float32 weights."""
    edges = list(edges) if edges is not None else []
    if not edges:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    if isinstance(edges[0][0], AbstractNode):
        try:
            u = np.fromiter((index[e[0]] for e in edges), np.int64, len(edges))
            v = np.fromiter((index[e[1]] for e in edges), np.int64, len(edges))
        except KeyError as err:
            raise HeatbathError(f"{what} mention node {err.args[0]!r}, which is not one of the model's nodes.") from None
    else:
        arr = np.asarray(edges)
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype.kind not in "iu":
            raise HeatbathError(f"{what} must be node pairs or an integer array [n_edges, 2].")
        u, v = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
        if arr.min() < 0 or arr.max() >= len(index):
            raise HeatbathError(f"{what} refer to node indices outside [0, {len(index)}).")
    w = _vector(weights, len(u), f"{what} weights")
    return u, v, w


def _check_precision(dense: np.ndarray, what: str) -> None:
    if dense.shape[0] > _PD_CHECK_LIMIT:
        return
    try:
        np.linalg.cholesky(dense.astype(np.float64))
    except np.linalg.LinAlgError:
        lo = float(np.linalg.eigvalsh(dense.astype(np.float64))[0])
        raise HeatbathError(
            f"{what} is not positive definite (smallest eigenvalue {lo:.3g}), so exp(-E) is not normalisable. Increase "
            "the diagonal (e.g. make it diagonally dominant: A_ii > Σ_j |A_ij|) or shrink the couplings."
        ) from None


def _scatter_sum(index: np.ndarray, values, n: int, xp):
    if xp is np:
        return np.bincount(index, weights=values, minlength=n)
    return jax.ops.segment_sum(values, jnp.asarray(index), num_segments=n)


class _ContinuousEBM(AbstractFactorizedEBM):
    _nodes: tuple[AbstractNode, ...] = eqx.field(static=True, repr=False)

    @property
    def nodes(self) -> list[AbstractNode]:
        return list(self._nodes)

    def free_blocks(self, nodes: Sequence[AbstractNode] | None = None, seed: int = 0) -> list[tuple[Block, ...]]:
        """Superblocks (one per colour) of independent nodes, for the free nodes `nodes` (default all)."""
        from heatbath.graphs.coloring import color_blocks

        return color_blocks(self, superblocks=True, nodes=nodes if nodes is not None else self.nodes, seed=seed)

    def sampling_program(
        self, free_blocks=None, clamped_blocks: Sequence[Block] = (), **samplers
    ) -> "ContinuousSamplingProgram":
        """A block Gibbs program; free blocks default to a colouring of the nodes not in `clamped_blocks`."""
        if free_blocks is None:
            clamped = {n for b in clamped_blocks for n in Block(b)}
            free_blocks = self.free_blocks([n for n in self._nodes if n not in clamped])
        return ContinuousSamplingProgram(self, free_blocks, clamped_blocks, **samplers)


class GaussianEBM(_ContinuousEBM):
    """A Gaussian over continuous nodes with precision matrix A and mean μ: E(x) = ½ (x-μ)ᵀA(x-μ).

    Give A densely (`precision`, a symmetric [n, n] array) or sparsely (`diagonal` plus `edges` and
    `edge_weights`, each off-diagonal pair listed once). Nodes default to fresh `ContinuousNode`s.
    """

    precision_diagonal: Array
    mean: Array
    edge_index: np.ndarray = eqx.field(repr=False)
    edge_weights: Array = eqx.field(repr=False)
    _edge_blocks: tuple[Block, ...] = eqx.field(static=True, repr=False)

    @property
    def factors(self) -> list[EBMFactor]:
        """½ A_ii x_i², A_ij x_i x_j and the linear term -(Aμ)·x, derived from the fields on every access
        (so a trained or edited model stays consistent: the fields are the parameters)."""
        diagonal, mean, w = self.precision_diagonal, self.mean, self.edge_weights
        n = len(self._nodes)
        u, v = self.edge_index[:, 0], self.edge_index[:, 1]
        xp = np if all(map(is_concrete, (diagonal, w, mean))) else jnp
        bias = -(xp.asarray(diagonal) * xp.asarray(mean))  # b = -Aμ
        if len(u):
            bias = bias - _scatter_sum(u, w * mean[v], n, xp) - _scatter_sum(v, w * mean[u], n, xp)
        block = Block(self._nodes)
        factors = [ContinuousQuadraticFactor(diagonal, block), ContinuousLinearFactor(xp.asarray(bias, np.float32), block)]
        if self._edge_blocks:
            factors.append(ContinuousCouplingFactor(w, self._edge_blocks))
        return factors

    def __init__(
        self,
        nodes: Sequence[AbstractNode],
        *,
        precision: Float[Array, "n n"] | None = None,
        diagonal: Float[Array, " n"] | None = None,
        edges=None,
        edge_weights=None,
        mean: Float[Array, " n"] | None = None,
        node_shape_dtypes=DEFAULT_NODE_SHAPE_DTYPES,
    ):
        nodes = tuple(nodes)
        n = len(nodes)
        index = {node: i for i, node in enumerate(nodes)}
        if len(index) != n:
            raise HeatbathError("GaussianEBM nodes must be distinct.")
        if precision is not None:
            if diagonal is not None or edges is not None:
                raise HeatbathError("Pass either precision= (dense) or diagonal=/edges= (sparse), not both.")
            check_finite(precision, "GaussianEBM precision matrix entries")
            a = np.asarray(precision, dtype=np.float64)
            if a.shape != (n, n):
                raise HeatbathError(f"precision must have shape ({n}, {n}), got {a.shape}.")
            if not np.allclose(a, a.T, rtol=1e-6, atol=1e-8):
                raise HeatbathError("precision must be symmetric; pass (A + A.T) / 2.")
            iu, ju = np.nonzero(np.triu(a, 1))
            diagonal, u, v, w = np.diag(a).astype(np.float32), iu, ju, a[iu, ju].astype(np.float32)
        else:
            if diagonal is None:
                raise HeatbathError("GaussianEBM needs the precision: pass precision=A or diagonal= (with edges=).")
            diagonal = _vector(diagonal, n, "GaussianEBM diagonal precisions")
            u, v, w = _edge_arrays(edges, edge_weights, index, "GaussianEBM edges")
            if np.any(u == v):
                raise HeatbathError("GaussianEBM edges must join two different nodes; put A_ii in diagonal=.")
        if is_concrete(diagonal) and np.any(np.asarray(diagonal) <= 0):
            raise HeatbathError(
                "GaussianEBM diagonal precisions A_ii must all be > 0 (each is 1 / conditional variance); got "
                f"{int(np.sum(np.asarray(diagonal) <= 0))} non-positive value(s)."
            )
        mean = _vector(mean, n, "GaussianEBM mean")
        if all(map(is_concrete, (diagonal, w))):
            dense = np.diag(np.asarray(diagonal, np.float64))
            np.add.at(dense, (u, v), np.asarray(w, np.float64))
            np.add.at(dense, (v, u), np.asarray(w, np.float64))
            _check_precision(dense, "The GaussianEBM precision matrix")
        node_array = np.empty(n, dtype=object)
        node_array[:] = nodes
        self._edge_blocks = (Block(node_array[u]), Block(node_array[v])) if len(u) else ()
        self._nodes = nodes
        self.precision_diagonal = diagonal
        self.mean = mean
        self.node_shape_dtypes = NodeShapeDtypes(node_shape_dtypes)
        self.edge_index = np.stack([u, v], axis=1)
        self.edge_weights = w

    def precision_matrix(self) -> np.ndarray:
        """The dense precision matrix A (for tests and small models)."""
        a = np.diag(np.asarray(self.precision_diagonal, np.float64))
        u, v = self.edge_index[:, 0], self.edge_index[:, 1]
        np.add.at(a, (u, v), np.asarray(self.edge_weights, np.float64))
        np.add.at(a, (v, u), np.asarray(self.edge_weights, np.float64))
        return a


class GaussianBernoulliEBM(_ContinuousEBM):
    """A mixed EBM over continuous nodes and spins (see the module docstring for the energy).

    Edges are node pairs: `continuous_edges` (x_u, x_v), `spin_edges` (s_k, s_l) and `mixed_edges`
    (s_k, x_i), each with a parallel weight vector. `quadratic` (d > 0) is required; the other terms
    default to zero.
    """

    _factors: list[EBMFactor]

    @property
    def factors(self) -> list[EBMFactor]:
        return self._factors

    def __init__(
        self,
        continuous_nodes: Sequence[AbstractNode],
        spin_nodes: Sequence[AbstractNode],
        *,
        quadratic: Float[Array, " n_x"],
        linear: Float[Array, " n_x"] | None = None,
        continuous_edges=None,
        continuous_weights=None,
        spin_biases: Float[Array, " n_s"] | None = None,
        spin_edges=None,
        spin_weights=None,
        mixed_edges=None,
        mixed_weights=None,
        node_shape_dtypes=DEFAULT_NODE_SHAPE_DTYPES,
    ):
        xs, ss = tuple(continuous_nodes), tuple(spin_nodes)
        if not xs:
            raise HeatbathError("GaussianBernoulliEBM needs at least one continuous node; for spins alone use IsingEBM.")
        x_index = {n: i for i, n in enumerate(xs)}
        s_index = {n: i for i, n in enumerate(ss)}
        if len(x_index) != len(xs) or len(s_index) != len(ss) or set(x_index) & set(s_index):
            raise HeatbathError("GaussianBernoulliEBM nodes must be distinct (no node both continuous and spin).")
        d = _vector(quadratic, len(xs), "GaussianBernoulliEBM quadratic (diagonal precision)")
        b = _vector(linear, len(xs), "GaussianBernoulliEBM linear")
        c = _vector(spin_biases, len(ss), "GaussianBernoulliEBM spin_biases")
        xu, xv, aw = _edge_arrays(continuous_edges, continuous_weights, x_index, "GaussianBernoulliEBM continuous_edges")
        su, sv, jw = _edge_arrays(spin_edges, spin_weights, s_index, "GaussianBernoulliEBM spin_edges")
        mixed = list(mixed_edges) if mixed_edges is not None else []
        if mixed and isinstance(mixed[0][0], AbstractNode) and mixed[0][0] in x_index:
            raise HeatbathError("mixed_edges are (spin, continuous) pairs; swap the two entries.")
        mk = [e[0] for e in mixed]
        mi = [e[1] for e in mixed]
        mk = _edge_arrays([(a, a) for a in mk], np.zeros(len(mk), np.float32), s_index, "GaussianBernoulliEBM mixed_edges")[0]
        mi = _edge_arrays([(a, a) for a in mi], np.zeros(len(mi), np.float32), x_index, "GaussianBernoulliEBM mixed_edges")[0]
        ww = _vector(mixed_weights, len(mk), "GaussianBernoulliEBM mixed_weights")
        if is_concrete(d) and np.any(np.asarray(d) <= 0):
            raise HeatbathError(
                "GaussianBernoulliEBM quadratic coefficients (diagonal precisions) must all be > 0; got "
                f"{int(np.sum(np.asarray(d) <= 0))} non-positive value(s)."
            )
        if is_concrete(d) and is_concrete(aw):
            dense = np.diag(np.asarray(d, np.float64))
            np.add.at(dense, (xu, xv), np.asarray(aw, np.float64))
            np.add.at(dense, (xv, xu), np.asarray(aw, np.float64))
            _check_precision(dense, "The continuous part's precision matrix (quadratic + continuous_weights)")
        xa, sa = np.empty(len(xs), object), np.empty(len(ss), object)
        xa[:], sa[:] = xs, ss
        xb = Block(xs)
        factors: list[EBMFactor] = [ContinuousQuadraticFactor(d, xb), ContinuousLinearFactor(b, xb)]
        if len(xu):
            factors.append(ContinuousCouplingFactor(aw, (Block(xa[xu]), Block(xa[xv]))))
        if ss:
            factors.append(SpinEBMFactor([Block(ss)], c))
        if len(su):
            factors.append(SpinEBMFactor([Block(sa[su]), Block(sa[sv])], jw))
        if len(mk):
            factors.append(SpinContinuousFactor(ww, Block(sa[mk]), Block(xa[mi])))
        self._factors = factors
        self._nodes = xs + ss
        self.node_shape_dtypes = NodeShapeDtypes(node_shape_dtypes)


class ContinuousSamplingProgram(FactorSamplingProgram):
    """Block Gibbs for a continuous or mixed EBM: a sampler per free block chosen by node type.

    Spin blocks get `MixedSpinGibbsConditional`; other blocks get `continuous_sampler` (default
    `GaussianGibbsConditional`, e.g. a `MetropolisGibbsConditional` for non-Gaussian terms).
    """

    def __init__(self, ebm: _ContinuousEBM, free_blocks, clamped_blocks=(), *, continuous_sampler=None, spin_sampler=None):
        spec = BlockGibbsSpec(free_blocks, clamped_blocks, ebm.node_shape_dtypes)
        continuous_sampler = continuous_sampler if continuous_sampler is not None else GaussianGibbsConditional()
        spin_sampler = spin_sampler if spin_sampler is not None else MixedSpinGibbsConditional()
        is_spin = [issubclass(b.node_type, SpinNode) for b in spec.free_blocks]
        check_continuous_dtypes(spec, [b for b, s in zip(spec.free_blocks, is_spin) if not s])
        samplers = [spin_sampler if s else continuous_sampler for s in is_spin]
        from heatbath.models.metropolis import MetropolisGibbsConditional, current_state_groups

        needs_self = [b for b, s in zip(spec.free_blocks, samplers) if isinstance(s, MetropolisGibbsConditional)]
        super().__init__(spec, samplers, ebm.factors, current_state_groups(needs_self))
