"""The draw of one categorical update, shared by the jax.numpy sweep and the Pallas kernel.

Both build the logits θ_k = bias_k + Σ_d W_d[k, c_d] by the same additions in the same order and
invert the CDF here, so they draw the same categories from the same uniforms (exactly when the
kernel is interpreted; natively up to the GPU's rounding of exp at a near-tie).

A spin of a mixed program (categories 0 = down and 1 = up) needs only Δ = θ_1 − θ_0, twice the
spin's field: `draw_spin` makes the spin kernels' comparison u · (1 + e^{−Δ}) < 1, one exp instead of
two, and the update sums one weight per neighbour instead of two.

Everything is elementwise on `[nodes, chains]` arrays with K (small, static) kept as a Python list,
so XLA fuses a block's update into one loop and Triton keeps it in registers.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["draw_category", "draw_spin"]


def draw_category(theta: list[Float[Array, "n chains"]], u: Float[Array, "n chains"], dtype) -> Array:
    """The category drawn from softmax(θ) by inverting its CDF at u (one uniform per node and chain)."""
    top = theta[0]
    for t in theta[1:]:
        top = jnp.maximum(top, t)
    cdf, total = [], jnp.zeros_like(top)
    for t in theta:
        total = total + jnp.exp(t - top)
        cdf.append(total)
    target = u * total
    below = sum((c < target).astype(jnp.int32) for c in cdf[:-1])
    return below.astype(dtype)


def draw_spin(delta: Float[Array, "n chains"], u: Float[Array, "n chains"], dtype) -> Array:
    """Category 1 (up) with probability 1 / (1 + e^{−Δ}), Δ = θ_1 − θ_0: softmax over two categories,
    drawn as every spin kernel draws (`u` is never 0, so an infinite e^{−Δ} gives 0)."""
    return (u * (1 + jnp.exp(-delta)) < 1).astype(dtype)
