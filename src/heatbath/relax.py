r"""Reparameterised sampling of discrete variables: Gumbel-max, Gumbel-softmax and straight-through.

A categorical variable with logits $\theta_1..\theta_K$ can be drawn as $\arg\max_k(\theta_k + g_k)$
with $g_k$ i.i.d. standard Gumbel (Gumbel-max): the noise does not depend on $\theta$, so the sample is
a deterministic function of the parameters and of parameter-free noise. The argmax has zero gradient
almost everywhere, so it is replaced by its tempered relaxation, the Gumbel-softmax (concrete) sample
$y = \mathrm{softmax}((\theta + g)/\tau)$, a point of the simplex that tends to the one-hot argmax as
$\tau \to 0$. The pathwise gradient of $\mathbb E[f(y)]$ is unbiased for the relaxed objective but
biased for the discrete one $\mathbb E_{p}[f(\text{one-hot})]$; the bias shrinks as $\tau$ falls while
the variance grows (roughly as $1/\tau$).

The straight-through estimator returns the exact one-hot sample in the forward pass and the relaxed
sample's gradient in the backward pass (``hard + soft - stop_gradient(soft)``), so every forward
quantity is computed on genuine discrete samples.

Binary variables are the case $K = 2$ written with one logit $\ell = \theta_1 - \theta_0$: the
difference of two standard Gumbels is standard logistic noise $L = \ln u - \ln(1-u)$, so
$[\ell + L > 0]$ is an exact Bernoulli($\sigma(\ell)$) draw and $\sigma((\ell + L)/\tau)$ is the relaxed
Bernoulli (binary concrete) sample.

Every function takes the random key as a keyword-only argument ``key``, draws independent noise for every
element of ``logits`` (categories along ``axis``), and raises `HeatbathError` for a temperature that is
not a positive finite number or for logits holding NaN or $+\infty$ (values are checked when they are
concrete; inside ``jit`` they are not known and are not checked). A logit of $-\infty$ is allowed and
means "probability zero", but every row needs at least one finite logit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from heatbath.errors import HeatbathError
from heatbath.validation import is_concrete

__all__ = [
    "bernoulli_logistic",
    "gumbel_max",
    "gumbel_softmax",
    "relaxed_bernoulli",
    "straight_through_bernoulli",
    "straight_through_categorical",
]


def _as_float_logits(logits, what: str, axis: int | None) -> Array:
    x = jnp.asarray(logits)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        if jnp.issubdtype(x.dtype, jnp.complexfloating) or x.dtype == jnp.bool_:
            raise HeatbathError(f"{what} must be real numbers, got dtype {x.dtype}; pass a float array.")
        x = x.astype(jnp.float32)
    if axis is not None and x.ndim == 0:
        raise HeatbathError(f"{what} must have a category axis, got a scalar; pass an array of shape [..., K].")
    if is_concrete(logits):
        arr = np.asarray(x)
        if np.isnan(arr).any() or np.isposinf(arr).any():
            raise HeatbathError(f"{what} contain NaN or +inf; logits must be finite numbers (or -inf for 'never').")
        if axis is not None and arr.size and np.isneginf(arr).all(axis=axis).any():
            raise HeatbathError(
                f"{what} have a row whose logits are all -inf (no category has positive probability); "
                "give at least one category a finite logit."
            )
        if axis is None and np.isneginf(arr).any():
            raise HeatbathError(f"{what} contain -inf; a Bernoulli logit must be finite.")
    return x


def _check_temperature(temperature) -> None:
    if isinstance(temperature, (str, bytes)):
        raise HeatbathError(f"temperature must be a positive number, got the string {temperature!r}.")
    if is_concrete(temperature):
        t = np.asarray(temperature)
        if t.dtype.kind not in "fiu" or t.ndim != 0:
            raise HeatbathError(f"temperature must be one positive real number, got {temperature!r}.")
        if not (np.isfinite(t) and t > 0):
            raise HeatbathError(
                f"temperature must be positive and finite, got {float(t)!r}; for exact discrete samples use "
                "gumbel_max (the tau -> 0 limit) instead of temperature 0."
            )


def _gumbel_noise(key: PRNGKeyArray, x: Array) -> Array:
    return jax.random.gumbel(key, x.shape, x.dtype)


def gumbel_max(logits: Float[ArrayLike, "*batch k"], *, key: PRNGKeyArray, axis: int = -1) -> Int[Array, "*batch"]:
    """Exact categorical samples: ``argmax(logits + g)`` with i.i.d. standard Gumbel noise ``g``.

    Returns the index of the drawn category (int32) for every row of ``logits``; P(k) = softmax(logits)[k].
    Not differentiable (the argmax is piecewise constant); see `gumbel_softmax` for a relaxation.
    """
    x = _as_float_logits(logits, "gumbel_max logits", axis)
    return jnp.argmax(x + _gumbel_noise(key, x), axis=axis).astype(jnp.int32)


def gumbel_softmax(
    logits: Float[ArrayLike, "*batch k"],
    temperature: float | Float[ArrayLike, ""],
    *,
    key: PRNGKeyArray,
    axis: int = -1,
) -> Float[Array, "*batch k"]:
    r"""Relaxed one-hot samples ``softmax((logits + g) / temperature)`` (Gumbel-softmax / concrete).

    Differentiable in ``logits`` (and ``temperature``). As ``temperature -> 0`` the samples tend to the
    one-hot vector of `gumbel_max` with the same key; at any positive temperature they lie strictly
    inside the simplex, and the mean of a function of them differs from its mean over exact one-hot
    samples (the estimator's bias).
    """
    _check_temperature(temperature)
    x = _as_float_logits(logits, "gumbel_softmax logits", axis)
    return jax.nn.softmax((x + _gumbel_noise(key, x)) / temperature, axis=axis)


def straight_through_categorical(
    logits: Float[ArrayLike, "*batch k"],
    temperature: float | Float[ArrayLike, ""] = 1.0,
    *,
    key: PRNGKeyArray,
    axis: int = -1,
) -> Float[Array, "*batch k"]:
    """Exact one-hot categorical samples whose gradient is that of the Gumbel-softmax sample.

    The forward value is exactly one-hot (``argmax(logits + g)``, an exact draw from softmax(logits));
    the backward pass differentiates ``softmax((logits + g) / temperature)`` with the same noise ``g``.
    The gradient is biased (it is not the gradient of the discrete expectation), but forward quantities
    such as losses and sample means are computed on genuine discrete samples.
    """
    _check_temperature(temperature)
    x = _as_float_logits(logits, "straight_through_categorical logits", axis)
    perturbed = x + _gumbel_noise(key, x)
    soft = jax.nn.softmax(perturbed / temperature, axis=axis)
    hard = jax.nn.one_hot(jnp.argmax(perturbed, axis=axis), x.shape[axis], dtype=soft.dtype, axis=axis)
    return soft + jax.lax.stop_gradient(hard - soft)


def _logistic_noise(key: PRNGKeyArray, x: Array) -> Array:
    return jax.random.logistic(key, x.shape, x.dtype)


def bernoulli_logistic(logit: Float[ArrayLike, "*shape"], *, key: PRNGKeyArray) -> Float[Array, "*shape"]:
    """Exact Bernoulli(sigmoid(logit)) samples as 0.0/1.0: ``[logit + L > 0]`` with standard logistic ``L``.

    The binary case of `gumbel_max` (``L`` is the difference of two standard Gumbels).
    """
    x = _as_float_logits(logit, "bernoulli_logistic logit", None)
    return (x + _logistic_noise(key, x) > 0).astype(x.dtype)


def relaxed_bernoulli(
    logit: Float[ArrayLike, "*shape"],
    temperature: float | Float[ArrayLike, ""],
    *,
    key: PRNGKeyArray,
) -> Float[Array, "*shape"]:
    r"""Binary concrete samples ``sigmoid((logit + L) / temperature)`` in (0, 1), ``L`` standard logistic.

    The two-category Gumbel-softmax written with one logit: the first component of
    ``gumbel_softmax([0, logit], temperature)`` has this law. Tends to the exact Bernoulli sample of
    `bernoulli_logistic` as ``temperature -> 0``.
    """
    _check_temperature(temperature)
    x = _as_float_logits(logit, "relaxed_bernoulli logit", None)
    return jax.nn.sigmoid((x + _logistic_noise(key, x)) / temperature)


def straight_through_bernoulli(
    logit: Float[ArrayLike, "*shape"],
    temperature: float | Float[ArrayLike, ""] = 1.0,
    *,
    key: PRNGKeyArray,
) -> Float[Array, "*shape"]:
    """Exact Bernoulli(sigmoid(logit)) samples (0.0/1.0) with the gradient of `relaxed_bernoulli`.

    Forward: ``[logit + L > 0]``; backward: the derivative of ``sigmoid((logit + L) / temperature)``
    with the same logistic noise ``L``.
    """
    _check_temperature(temperature)
    x = _as_float_logits(logit, "straight_through_bernoulli logit", None)
    perturbed = x + _logistic_noise(key, x)
    soft = jax.nn.sigmoid(perturbed / temperature)
    hard = (perturbed > 0).astype(soft.dtype)
    return soft + jax.lax.stop_gradient(hard - soft)
