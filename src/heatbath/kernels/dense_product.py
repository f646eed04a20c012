"""The field of a dense layer: a coupling matrix times its source block's states, ±1 spins or the
0/1 indicators of a category (`pairwise_sweep._dense_logits`).

Dense bipartite layers (an RBM's visible–hidden couplings, `pairwise_tables.DENSE_MIN_SOURCE`) read
their source through a matrix product, about 2 · n_source multiply-adds per flip, so on a GPU the
product sets the speed of a sweep. A float32 product runs at the GPU's non-tensor float32 rate
(TF32 tensor cores would round the couplings to 11 bits and change the conditional probabilities).

The states are small integers, exact in float16, so only the couplings need care. On CUDA GPUs
`float16_parts_product` writes each row of `w`, scaled by a power of two `up_i` so that its largest
entry lies in (2^13, 2^14], as two float16 parts,

    w_ij · up_i = a_ij + b_ij / 2048,   a = w · up rounded to 11 bits,   b = fp16((w · up − a) · 2048),

and takes two float16 tensor-core products with float32 accumulation: Σ_j w_ij s_j =
(Σ_j a_ij s_j + Σ_j b_ij s_j / 2048) / up_i. The products of parts and states are exact, the
scalings are powers of two, and each coupling is represented to within 2^-23 of its row's largest
|w_ij| (b keeps 11 bits of a residual of at most half a unit of a's last place; tiny couplings lose
relative precision, never absolute, as in `tensor_tables`). So the field carries float32-sized
errors: measured against float64 on the 784 × 500 RBM layer, 2.2e-6 to 2.4e-6 at worst against
3.4e-6 to 1.1e-5 for XLA's float32 product. On an H200 the two products took 2.4–3.1× less time than
the float32 one at 10,000–40,000 chains, and RBM sampling ran 1.9–2.5× faster
(`bench/dense_product_probe.py`, `bench/flips_rbm.py`, BENCHMARKS.md). On CPUs the float32 product
is faster and stays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int8

__all__ = ["TOP_EXPONENT", "RESIDUAL_SCALE", "dense_field", "float32_product", "float16_parts_product",
           "row_scale", "float16_head"]

TOP_EXPONENT = 14  # a row's largest |w| · up lies in (2^13, 2^14]: float16 holds up to 65,504
RESIDUAL_SCALE = 2048.0  # 2^11: a's rounding residual (at most 4) scaled into float16's normal range
HEAD_MASK = np.uint32(0xFFFFE000)  # sign, exponent and the top 10 of float32's 23 fraction bits
HALF_UNIT = np.uint32(0x1000)  # half a unit of the last bit kept


def dense_field(w: Float[Array, "n m"], states: Int8[Array, "m chains"]) -> Float[Array, "n chains"]:
    """w @ states for int8 states (±1 or 0/1): two float16 parts on CUDA GPUs, a float32 product elsewhere.

    The choice is made when the computation is lowered for its devices (`jax.lax.platform_dependent`),
    so a program placed on CPU devices of a machine with a GPU takes the CPU product."""
    return jax.lax.platform_dependent(w, states, default=float32_product, cuda=float16_parts_product)


def float32_product(w: Float[Array, "n m"], states: Int8[Array, "m chains"]) -> Float[Array, "n chains"]:
    """w @ states at full float32 precision."""
    return jnp.matmul(w, states.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)


def float16_parts_product(w: Float[Array, "n m"], states: Int8[Array, "m chains"]) -> Float[Array, "n chains"]:
    """w @ states from two float16 parts of each row of w (module docstring), accumulated in float32."""
    up = row_scale(w)
    scaled = w * up
    head = float16_head(scaled)
    first = head.astype(jnp.float16)
    second = ((scaled - head) * RESIDUAL_SCALE).astype(jnp.float16)
    values = states.astype(jnp.float16)  # exact: small integers
    a = jnp.matmul(first, values, preferred_element_type=jnp.float32)
    b = jnp.matmul(second, values, preferred_element_type=jnp.float32)
    return (a + b * (1.0 / RESIDUAL_SCALE)) / up


def row_scale(w: Float[Array, "n m"]) -> Float[Array, "n 1"]:
    """Per row of w, the power of two `up` that puts its largest |w| in (2^13, 2^14] (1 for a zero row)."""
    top = jnp.max(jnp.abs(w), axis=1, keepdims=True)
    exponent = TOP_EXPONENT - jnp.ceil(jnp.log2(jnp.where(top > 0, top, 1.0)))
    return jnp.exp2(jnp.clip(exponent, -120.0, 120.0))  # float32 holds 2^±126: extreme rows stay finite


def float16_head(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """x rounded to float16's 11 significant bits, by integer operations on its float32 bits.

    Not `x.astype(float16).astype(float32)`: XLA may drop such a round trip of conversions (its
    excess-precision rewrite does on GPUs), which made the residual x − head zero and the product
    float16-accurate only (seen on an H200). Adding half a unit of the 12th bit to the bits rounds
    the magnitude to nearest (ties away from zero); a carry into the exponent is still right."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.bitcast_convert_type((bits + HALF_UNIT) & HEAD_MASK, jnp.float32)
