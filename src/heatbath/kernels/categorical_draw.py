"""The draw of one categorical update, shared by the jax.numpy sweep and the Pallas kernel.

Both build the logits θ_k = bias_k + Σ_d W_d[k, c_d] by the same additions in the same order and
invert the CDF here, so they draw the same categories from the same uniforms (exactly when the
kernel is interpreted; natively up to the GPU's rounding of exp at a near-tie).

Everything is elementwise on `[nodes, chains]` arrays with K (small, static) kept as a Python list,
so XLA fuses a block's update into one loop and Triton keeps it in registers.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["draw_category"]


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
