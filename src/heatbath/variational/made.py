r"""MADE: a masked autoregressive network over discrete variables, with exact log-probabilities and sampling.

The joint law of $n$ variables $x_1..x_n$, each taking one of $K$ states, is factorised in a fixed order,
$q(x) = \prod_i q(x_i \mid x_{<i})$, and every conditional is a softmax over $K$ logits produced by one
feed-forward network whose weights are masked (Germain et al., 2015) so that the logits of unit $i$ are
a function of $x_{<i}$ only. Then

* $\ln q(x)$ is exact and costs one forward pass (all conditionals at once), and
* an exact sample is drawn ancestrally, unit by unit.

Inputs are one-hot vectors (variable $j$ in state $k$ is feature $jK + k$), so any $K \ge 2$ works.
Masks come from "degrees": input unit $j$ has degree $j$, every hidden neuron a degree
$m \in \{0..n-2\}$; a connection into a hidden neuron of degree $m$ is kept from degree $\le m$, and
the logits of unit $i$ read hidden neurons of degree $< i$. A direct (skip) connection from the inputs
of units $j < i$ to the logits of unit $i$ is included: for pairwise models it is the dominant term.

Sampling reuses work: the first layer's pre-activation is linear in the one-hot input, so after unit $i$
is drawn the masked weight column of its state is added to it (a `lax.scan` over units), and the same
is done for the direct connection. The whole first layer then costs one forward pass over a sample,
instead of $n$ passes. Deeper layers are recomputed at each step (their inputs change everywhere).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from heatbath.errors import HeatbathError
from heatbath.relax import straight_through_categorical
from heatbath.validation import is_concrete

__all__ = ["MADE", "states_to_spins", "spins_to_states", "check_states", "check_n_samples"]


# ------------------------------------------------------------------------------------------- inputs


def check_n_samples(n: int, what: str = "n") -> int:
    """Validate a number of samples: a Python integer >= 1."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise HeatbathError(f"{what} must be a positive integer (a number of samples), got {n!r}.")
    if n <= 0:
        raise HeatbathError(f"{what} must be >= 1, got {n}; ask for at least one sample.")
    return int(n)


def check_states(x, n_units: int, n_states: int, what: str = "x") -> Int[Array, "batch units"]:
    """Validate a batch of integer states [batch, n_units] with values in 0..n_states-1 (values checked when concrete)."""
    arr = jnp.asarray(x)
    if arr.dtype == jnp.bool_:
        arr = arr.astype(jnp.int32)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise HeatbathError(
            f"{what} must hold integer states 0..{n_states - 1}, got dtype {arr.dtype}; "
            "for ±1 spins use spins_to_states(s)."
        )
    if arr.ndim != 2 or arr.shape[1] != n_units:
        raise HeatbathError(
            f"{what} has shape {tuple(arr.shape)}; expected (batch, {n_units}) = one row of {n_units} unit states "
            "per sample (add a leading axis for a single sample)."
        )
    if is_concrete(x) and arr.size:
        values = np.asarray(arr)
        if values.min() < 0 or values.max() >= n_states:
            raise HeatbathError(
                f"{what} holds states outside 0..{n_states - 1} (found {values.min()}..{values.max()}); "
                "for ±1 spins use spins_to_states(s)."
            )
    return arr.astype(jnp.int32)


def spins_to_states(s: Int[ArrayLike, "*shape"]) -> Int[Array, "*shape"]:
    """±1 spins (or booleans, True = +1) to states {0, 1}, state 1 meaning spin +1."""
    arr = jnp.asarray(s)
    if arr.dtype == jnp.bool_:
        return arr.astype(jnp.int32)
    if is_concrete(s) and arr.size and not np.all(np.abs(np.asarray(arr)) == 1):
        raise HeatbathError("spins_to_states expects spins equal to -1 or +1 (or booleans).")
    return (arr > 0).astype(jnp.int32)


def states_to_spins(x: Int[ArrayLike, "*shape"]) -> Int[Array, "*shape"]:
    """States {0, 1} to ±1 spins (state 1 is spin +1), as int32."""
    arr = jnp.asarray(x)
    if is_concrete(x) and arr.size and not np.all(np.isin(np.asarray(arr), (0, 1))):
        raise HeatbathError("states_to_spins expects states 0 or 1 (a two-state model).")
    return 2 * arr.astype(jnp.int32) - 1


# -------------------------------------------------------------------------------------------- masks


def _matmul(a: Float[Array, "... k"], b: Float[Array, "k m"]) -> Float[Array, "... m"]:
    """a @ b in full float32 precision. JAX's default on GPUs rounds float32 products to TF32 (10-bit
    mantissas), which moved ln q by up to 2e-3 between a forward pass and ancestral sampling on an
    H200: log-likelihoods, importance weights and the reverse-KL estimators need float32's."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _hidden_degrees(n_units: int, width: int) -> np.ndarray:
    # Spread degrees 0..n-2 evenly; a neuron of degree n-1 could feed no output, so none is made.
    return np.arange(width) % max(n_units - 1, 1)


def _masks(n_units: int, n_states: int, hidden: Sequence[int]):
    unit_of_feature = np.repeat(np.arange(n_units), n_states)  # degree of each one-hot input / output logit
    degrees = [_hidden_degrees(n_units, h) for h in hidden]
    masks = []
    previous = unit_of_feature
    for d in degrees:
        masks.append(d[:, None] >= previous[None, :])  # [out, in]
        previous = d
    # without hidden layers the direct connection is the whole model: no separate output weights
    output_mask = unit_of_feature[:, None] > (previous if degrees else np.zeros(0, np.int64))[None, :]
    direct_mask = unit_of_feature[:, None] > unit_of_feature[None, :]
    return masks, output_mask, direct_mask


# --------------------------------------------------------------------------------------------- model


class MADE(eqx.Module):
    r"""Autoregressive distribution $q(x) = \prod_i \mathrm{softmax}(\ell_i(x_{<i}))_{x_i}$ over `n_units` variables.

    `MADE(n_units, n_states=2, hidden=(64, 64), *, key)` builds the network; `hidden=()` gives the
    masked linear (logistic) model. The output weights start at zero, so a new model is the uniform
    distribution (maximum entropy: a safe start for reverse-KL training).

    **Methods:** `logits(x)` [batch, units, states], `log_prob(x)` [batch], `sample(n, key=...)`
    [n, units] and `sample_and_log_prob(n, key=...)`. States are integers 0..n_states-1; for ±1 spins
    use `spins_to_states` / `states_to_spins` (state 1 = spin +1).
    """

    hidden_weights: list[Float[Array, "out in"]]
    hidden_biases: list[Float[Array, " out"]]
    output_weight: Float[Array, "units_states last"]
    direct_weight: Float[Array, "units_states units_states"]
    output_bias: Float[Array, " units_states"]
    hidden_masks: list[Bool[Array, "out in"]]
    output_mask: Bool[Array, "units_states last"]
    direct_mask: Bool[Array, "units_states units_states"]
    n_units: int = eqx.field(static=True)
    n_states: int = eqx.field(static=True)
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        n_units: int,
        n_states: int = 2,
        hidden: Sequence[int] = (64, 64),
        *,
        key: PRNGKeyArray,
        activation: Callable[[Array], Array] = jax.nn.tanh,
    ):
        for value, name, low in ((n_units, "n_units", 1), (n_states, "n_states", 2)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
                raise HeatbathError(f"MADE {name} must be an integer >= {low}, got {value!r}.")
        hidden = tuple(hidden)
        if any(isinstance(h, (bool, np.bool_)) or not isinstance(h, (int, np.integer)) or h < 1 for h in hidden):
            raise HeatbathError(f"MADE hidden must be a sequence of positive layer widths, got {hidden!r}.")
        self.n_units, self.n_states, self.activation = int(n_units), int(n_states), activation
        masks, output_mask, direct_mask = _masks(self.n_units, self.n_states, hidden)
        keys = jax.random.split(key, len(hidden) + 1)
        weights, biases = [], []
        for k, mask in zip(keys, masks):
            fan_in = np.maximum(mask.sum(axis=1, keepdims=True), 1)  # scale by the connections a neuron really has
            w = jax.random.normal(k, mask.shape, jnp.float32) / jnp.asarray(np.sqrt(fan_in), jnp.float32)
            weights.append(jnp.where(jnp.asarray(mask), w, 0.0))
            biases.append(jnp.zeros(mask.shape[0], jnp.float32))
        self.hidden_weights, self.hidden_biases = weights, biases
        self.hidden_masks = [jnp.asarray(m) for m in masks]
        features = self.n_units * self.n_states
        self.output_weight = jnp.zeros(output_mask.shape, jnp.float32)
        self.direct_weight = jnp.zeros((features, features), jnp.float32)
        self.output_bias = jnp.zeros(features, jnp.float32)
        self.output_mask = jnp.asarray(output_mask)
        self.direct_mask = jnp.asarray(direct_mask)

    # -- masked parameters (the mask is applied on every use, so gradients of masked entries are zero)

    def _hidden(self, layer: int) -> Array:
        return jnp.where(self.hidden_masks[layer], self.hidden_weights[layer], 0.0)

    def _output(self) -> Array:
        return jnp.where(self.output_mask, self.output_weight, 0.0)

    def _direct(self) -> Array:
        return jnp.where(self.direct_mask, self.direct_weight, 0.0)

    def logits_from_one_hot(self, y: Float[Array, "batch units states"]) -> Float[Array, "batch units states"]:
        """Logits for (possibly relaxed) one-hot inputs [batch, units, states]; row i depends on rows < i only."""
        flat = y.reshape(y.shape[0], -1)
        out = _matmul(flat, self._direct().T) + self.output_bias
        if self.hidden_weights:
            h = flat
            for layer in range(len(self.hidden_weights)):
                h = self.activation(_matmul(h, self._hidden(layer).T) + self.hidden_biases[layer])
            out = out + _matmul(h, self._output().T)
        return out.reshape(y.shape[0], self.n_units, self.n_states)

    def logits(self, x: Int[ArrayLike, "batch units"]) -> Float[Array, "batch units states"]:
        """Logits of every conditional $q(x_i \\mid x_{<i})$ for each row of `x` (one forward pass)."""
        return _logits(self, check_states(x, self.n_units, self.n_states))

    def log_prob(self, x: Int[ArrayLike, "batch units"]) -> Float[Array, " batch"]:
        """Exact $\\ln q(x)$ for each row of integer states `x` [batch, units]."""
        return _log_prob(self, check_states(x, self.n_units, self.n_states))

    # -- ancestral sampling with incremental first layer

    def _step_logits(self, first_pre: Array, direct_pre: Array, i) -> Array:
        """Logits [batch, states] of unit i from the running first-layer / direct pre-activations."""
        k = self.n_states
        rows = jax.lax.dynamic_slice_in_dim(self._output(), i * k, k, axis=0)  # [K, last]
        direct = jax.lax.dynamic_slice_in_dim(direct_pre, i * k, k, axis=1)
        bias = jax.lax.dynamic_slice_in_dim(self.output_bias, i * k, k)
        if self.hidden_weights:
            h = self.activation(first_pre)
            for layer in range(1, len(self.hidden_weights)):
                h = self.activation(_matmul(h, self._hidden(layer).T) + self.hidden_biases[layer])
            return _matmul(h, rows.T) + direct + bias
        return direct + bias

    def _scan_units(self, n: int, key: PRNGKeyArray, draw):
        """One ancestral pass over the units, reusing computation: after unit i is drawn, its one-hot
        vector's columns are added to the first layer's and the direct connection's pre-activations,
        so no unit recomputes the inputs of the units before it.

        `draw(logits [n, K], key) -> (one-hot [n, K], output, ln q_i [n])`; returns the outputs stacked
        as [n, units, ...] and ln q [n]. The one-hot products add exactly the weight columns
        (`_matmul`'s full float32 precision).
        """
        k = self.n_states
        first_t = self._hidden(0).T.reshape(self.n_units, k, -1) if self.hidden_weights else None
        direct_t = self._direct().T.reshape(self.n_units, k, -1)
        first0 = (
            jnp.broadcast_to(self.hidden_biases[0], (n, first_t.shape[-1]))
            if first_t is not None
            else jnp.zeros((n, 0))
        )
        direct0 = jnp.zeros((n, self.n_units * k), jnp.float32)

        def body(carry, inputs):
            first_pre, direct_pre = carry
            i, step_key = inputs
            y, out, log_p = draw(self._step_logits(first_pre, direct_pre, i), step_key)
            if first_t is not None:
                first_pre = first_pre + _matmul(y, first_t[i])
            direct_pre = direct_pre + _matmul(y, direct_t[i])
            return (first_pre, direct_pre), (out, log_p)

        steps = (jnp.arange(self.n_units), jax.random.split(key, self.n_units))
        _, (outs, log_ps) = jax.lax.scan(body, (first0, direct0), steps)
        return jnp.moveaxis(outs, 0, 1), log_ps.sum(axis=0)

    def _ancestral(self, n: int, key: PRNGKeyArray):
        """Draw n samples; returns (states [n, units], log q [n])."""

        def draw(logits, step_key):
            value = jax.random.categorical(step_key, logits, axis=-1).astype(jnp.int32)
            log_p = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), value[:, None], axis=-1)[:, 0]
            return jax.nn.one_hot(value, self.n_states, dtype=jnp.float32), value, log_p

        return self._scan_units(n, key, draw)

    def sample(self, n: int, *, key: PRNGKeyArray) -> Int[Array, "n units"]:
        """`n` exact samples from q (integer states), drawn unit by unit; not differentiable."""
        n = check_n_samples(n)
        return jax.lax.stop_gradient(_ancestral(self, n, key)[0])

    def sample_and_log_prob(self, n: int, *, key: PRNGKeyArray) -> tuple[Int[Array, "n units"], Float[Array, " n"]]:
        """`n` exact samples and their $\\ln q$, computed in the same pass (no extra forward pass)."""
        n = check_n_samples(n)
        x, log_q = _ancestral(self, n, key)
        return jax.lax.stop_gradient(x), log_q

    def sample_straight_through(
        self, n: int, temperature: float = 1.0, *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "n units states"], Float[Array, " n"]]:
        r"""Reparameterised ancestral samples: straight-through one-hot vectors and their $\ln q$.

        Each unit is drawn by Gumbel-max (exact, one-hot in the forward pass) and carries the gradient
        of its Gumbel-softmax relaxation at `temperature` (`heatbath.relax.straight_through_categorical`),
        which flows into the logits of later units and into $\ln q$. Biased for the discrete objective;
        the bias shrinks with `temperature`. Costs a differentiable scan over units.
        """
        return _straight_through(self, check_n_samples(n), temperature, key)

    def _straight_through(self, n: int, temperature, key: PRNGKeyArray):
        def draw(logits, step_key):
            y = straight_through_categorical(logits, temperature, key=step_key)
            return y, y, jnp.sum(y * jax.nn.log_softmax(logits, axis=-1), axis=-1)

        return self._scan_units(n, key, draw)

    def sample_naive(self, n: int, *, key: PRNGKeyArray) -> Int[Array, "n units"]:
        """Reference sampler: a full forward pass per unit (cost O(units) passes). Same keys as `sample`.

        Kept for testing the incremental sampler; use `sample` in practice.
        """
        return _sample_naive(self, check_n_samples(n), key)

    @property
    def n_parameters(self) -> int:
        """Number of free (unmasked) parameters."""
        masked = (
            sum(int(m.sum()) for m in self.hidden_masks) + int(self.output_mask.sum()) + int(self.direct_mask.sum())
        )
        return masked + sum(int(b.size) for b in self.hidden_biases) + int(self.output_bias.size)


# Compiled entry points: eager calls (tests, evaluation) would otherwise re-trace every time; inside an
# outer jit they are simply inlined. Inputs are validated by the public methods before they get here.


@eqx.filter_jit
def _logits(model: MADE, x: Array) -> Array:
    return model.logits_from_one_hot(jax.nn.one_hot(x, model.n_states, dtype=jnp.float32))


@eqx.filter_jit
def _log_prob(model: MADE, x: Array) -> Array:
    log_cond = jax.nn.log_softmax(_logits(model, x), axis=-1)
    return jnp.take_along_axis(log_cond, x[..., None], axis=-1)[..., 0].sum(axis=-1)


@eqx.filter_jit
def _sample_naive(model: MADE, n: int, key: PRNGKeyArray) -> Array:
    keys = jax.random.split(key, model.n_units)
    x = jnp.zeros((n, model.n_units), jnp.int32)
    for i in range(model.n_units):
        logits = _logits(model, x)[:, i]
        x = x.at[:, i].set(jax.random.categorical(keys[i], logits, axis=-1).astype(jnp.int32))
    return x


@eqx.filter_jit
def _straight_through(model: MADE, n: int, temperature, key: PRNGKeyArray):
    return model._straight_through(n, temperature, key)


@eqx.filter_jit
def _ancestral(model: MADE, n: int, key: PRNGKeyArray):
    return model._ancestral(n, key)
