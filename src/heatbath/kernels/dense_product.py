"""The field of a dense layer: a coupling matrix times its source block's states, ±1 spins or the
0/1 indicators of a category (`pairwise_sweep._dense_logits`).

Dense bipartite layers (an RBM's visible–hidden couplings, `pairwise_tables.DENSE_MIN_SOURCE`) read
their source through a matrix product, about 2 · n_source multiply-adds per flip, so on a GPU the
product sets the speed of a sweep. A float32 product runs at the GPU's non-tensor float32 rate
(TF32 tensor cores would round the couplings to 11 bits and change the conditional probabilities).

The states are small integers, exact in float16, so only the couplings need care. On CUDA GPUs
`float16_parts_product` writes each row of `w`, scaled by a power of two `up_i` so that its largest
entry lies in (2^10, 2^11], as two integer digits, each exact in float16 (|digit| ≤ 2048):

    w_ij · up_i ≈ a_ij + b_ij / 4096,   a = round(w · up),   b = round((w · up − a) · 4096),

and takes two float16 tensor-core products with float32 accumulation: Σ_j w_ij s_j ≈
(A_i + B_i / 4096) / up_i with A = a · s and B = b · s. Each coupling is represented to within
2^-23 of its row's largest |w_ij| (tiny couplings lose relative precision, never absolute, as in
`tensor_tables`), so the field carries float32-sized errors: measured against float64 on the 784 ×
500 RBM layer, about the float32 product's (tests/test_dense_product.py).

The sums A and B are integers, and are computed exactly: every partial sum of a product of depth at
most DEPTH_CHUNK is an integer of at most 2^23, exact in float32 whatever the order of the additions
(cuBLAS picks its order, and its split of the depth, by shape; tensor cores align the terms of a sum
to the largest, which drops no bit of an integer below 2^24). Deeper products add their chunks' sums
in int32 (sources of 2^20 nodes or more take the float32 product). So the field is a fixed function
of w and the states: the same bits for any number of chains, any split over devices and any GPU
algorithm, and a chain's samples do not depend on them.

On an H200 the two products took 2.4–3.1× less time than the float32 one at 10,000–40,000 chains,
and RBM sampling ran 1.9–2.5× faster (`bench/dense_product_probe.py`, `bench/flips_rbm.py`,
BENCHMARKS.md). On CPUs the float32 product is faster and stays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int8

__all__ = ["TOP_EXPONENT", "SECOND_DIGIT_SCALE", "DEPTH_CHUNK", "MAX_EXACT_DEPTH", "dense_field", "float32_product",
           "float16_parts_product", "float16_digits", "row_scale"]

TOP_EXPONENT = 11  # a row's largest |w| · up lies in (2^10, 2^11]: its rounding, at most 2048, is exact in float16
SECOND_DIGIT_SCALE = 4096.0  # 2^12: the first digit's rounding error (at most 1/2) as an integer of at most 2048
DEPTH_CHUNK = 4096  # |partial sums| ≤ 2048 · 4096 = 2^23: exact in float32 in any order
MAX_EXACT_DEPTH = 2**20  # the chunks' int32 sum, at most 2048 · depth, stays below 2^31


def dense_field(w: Float[Array, "n m"], states: Int8[Array, "m chains"]) -> Float[Array, "n chains"]:
    """w @ states for int8 states (±1 or 0/1): two float16 digits on CUDA GPUs, a float32 product elsewhere.

    The choice is made when the computation is lowered for its devices (`jax.lax.platform_dependent`),
    so a program placed on CPU devices of a machine with a GPU takes the CPU product. The digits are
    made inside the CUDA branch: made outside it, XLA:CPU constant-folded them for concrete weights
    although its branch never reads them (a 784 x 500 RBM's THRML-style call compiled in 3.0 s instead
    of 0.5 s). Inside a sweep loop they are loop-invariant: making them before the loop instead
    (12fe7e3) changed no speed measurable on an H200."""
    return jax.lax.platform_dependent(w, states, default=float32_product, cuda=float16_parts_product)


def float32_product(w: Float[Array, "n m"], states: Int8[Array, "m chains"]) -> Float[Array, "n chains"]:
    """w @ states at full float32 precision."""
    return jnp.matmul(w, states.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)


def float16_parts_product(w: Float[Array, "n m"], states: Int8[Array, "m chains"]) -> Float[Array, "n chains"]:
    """w @ states from two integer float16 digits of each row of w (module docstring), summed exactly.
    Sources of MAX_EXACT_DEPTH nodes or more, whose int32 sums could overflow, take the float32 product."""
    if w.shape[1] >= MAX_EXACT_DEPTH:
        return float32_product(w, states)
    a, b, up = float16_digits(w)
    values = states.astype(jnp.float16)  # exact: small integers
    first, second = _exact_integer_product(a, values), _exact_integer_product(b, values)
    return (first + second * (1.0 / SECOND_DIGIT_SCALE)) / up


def float16_digits(w: Float[Array, "n m"]) -> tuple[Float[Array, "n m"], Float[Array, "n m"], Float[Array, "n 1"]]:
    """(a, b, up): the rows of w as `w · up ≈ a + b / 4096`, a and b integers of at most 2048 in
    float16, up a power of two per row (`row_scale`). A row holding NaN or ±inf gets up = NaN, so its
    field is NaN whatever the route (int32 chunk sums would turn a NaN into a finite number)."""
    finite = jnp.all(jnp.isfinite(w), axis=1, keepdims=True)  # (XLA's max reduction may drop a NaN)
    up = jnp.where(finite, row_scale(w), jnp.nan)  # a NaN or inf coupling: its row's field is NaN
    scaled = w * up
    first = jnp.round(scaled)  # |scaled| ≤ 2048: an integer float16 holds exactly
    second = jnp.round((scaled - first) * SECOND_DIGIT_SCALE)  # scaled − first is exact in float32
    return first.astype(jnp.float16), second.astype(jnp.float16), up


def _exact_integer_product(digits: Float[Array, "n m"], values: Float[Array, "m chains"]) -> Float[Array, "n chains"]:
    """digits @ values for integer float16 operands, in float32 with no rounding: one product while
    its depth keeps every partial sum within 2^23, else chunks of DEPTH_CHUNK summed in int32."""
    n, m = digits.shape
    if m <= DEPTH_CHUNK:
        return jnp.matmul(digits, values, preferred_element_type=jnp.float32)
    chunks = -(-m // DEPTH_CHUNK)
    pad = chunks * DEPTH_CHUNK - m  # zero digits add nothing
    d = jnp.pad(digits, ((0, 0), (0, pad))).reshape(n, chunks, DEPTH_CHUNK)
    v = jnp.pad(values, ((0, pad), (0, 0))).reshape(chunks, DEPTH_CHUNK, values.shape[1])
    sums = jnp.einsum("nck,ckh->cnh", d, v, preferred_element_type=jnp.float32)
    return jnp.sum(sums.astype(jnp.int32), axis=0).astype(jnp.float32)  # |sum| ≤ 2048 m < 2^31


def row_scale(w: Float[Array, "n m"]) -> Float[Array, "n 1"]:
    """Per row of w, the power of two `up` that puts its largest |w| in (2^10, 2^11] (2^11 for a zero
    row, whose digits are 0). Clipped to 2^±120: rows whose largest |w| is below about 1e-33 keep
    only float32's own absolute accuracy, not 2^-23 of their largest."""
    top = jnp.max(jnp.abs(w), axis=1, keepdims=True)
    exponent = TOP_EXPONENT - jnp.ceil(jnp.log2(jnp.where(top > 0, top, 1.0)))
    exponent = jnp.clip(exponent, -120.0, 120.0).astype(jnp.int32)  # float32 holds 2^±126: extreme rows stay finite
    # made from its bits: XLA:CPU's exp2 of an integer is not always an exact power of two
    return jax.lax.bitcast_convert_type((exponent + 127) << 23, jnp.float32)
