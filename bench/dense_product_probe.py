"""Probe: the dense RBM layer's product (500 × 784 couplings times ±1 states) at several of XLA's dot
algorithms, and two exact-input splits, on a GPU: microseconds per jitted call (a Python loop of 50
calls, so small sizes include the dispatch) and the largest error against float64.

The splits use that the states are ±1, exact in any format: "fp16 parts x 2" is the library's GPU
product (`dense_product.float16_parts_product`: two integer float16 digits of each row, scaled by a
power of two) and "fp16 2K deep" the same digits in one product twice as deep; "int8 digits" multiplies the
couplings' three fixed-point int8 digits (`tensor_tables.fixed_point_digits`) by the int8 states,
exactly in int32 (three products, or one of 3n rows); "bf16 parts" multiplies three bfloat16 parts
of the couplings by bfloat16 states (three products, or one three times as deep), accumulating in
float32. All take the states as the sweep holds them (int8).

    PYTHONPATH=src python3 bench/dense_product_probe.py [--chains 100 1000 10000]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.lax import DotAlgorithmPreset

from heatbath.kernels.dense_product import SECOND_DIGIT_SCALE, float16_digits, float16_parts_product
from heatbath.kernels.tensor_tables import combine_digits, fixed_point_digits

ALGORITHMS = {"HIGHEST (float32)": jax.lax.Precision.HIGHEST, "TF32_TF32_F32_X3": DotAlgorithmPreset.TF32_TF32_F32_X3,
              "BF16_BF16_F32_X6": DotAlgorithmPreset.BF16_BF16_F32_X6, "TF32_TF32_F32": DotAlgorithmPreset.TF32_TF32_F32}


def _int8_digits(w):
    digits, scale = fixed_point_digits(w)
    return lambda s: combine_digits([jnp.matmul(d, s, preferred_element_type=jnp.int32) for d in digits]).astype(
        jnp.float32) * scale[:, None]


def _bf16_parts(w):
    parts, rest = [], w
    for _ in range(3):
        parts.append(rest.astype(jnp.bfloat16))
        rest = rest - parts[-1].astype(jnp.float32)
    def product(s):
        s16 = s.astype(jnp.bfloat16)
        return sum(jnp.matmul(p, s16, preferred_element_type=jnp.float32) for p in parts)
    return product


def _int8_stacked(w):  # the three digits' products as one product of 3n rows
    digits, scale = fixed_point_digits(w)
    stacked = digits.reshape(-1, w.shape[1])
    def product(s):
        acc = jnp.matmul(stacked, s, preferred_element_type=jnp.int32).reshape(3, w.shape[0], -1)
        return combine_digits(list(acc)).astype(jnp.float32) * scale[:, None]
    return product


def _bf16_concatenated(w):  # the three parts side by side, the states three times: one product sums them
    parts, rest = [], w
    for _ in range(3):
        parts.append(rest.astype(jnp.bfloat16))
        rest = rest - parts[-1].astype(jnp.float32)
    wide = jnp.concatenate(parts, axis=1)
    return lambda s: jnp.matmul(wide, jnp.tile(s.astype(jnp.bfloat16), (3, 1)), preferred_element_type=jnp.float32)


def _fp16_parts(w):  # the library's GPU product (`dense_product.float16_parts_product`)
    return lambda s: float16_parts_product(w, s)


def _fp16_deep(w):  # its two digits side by side, the states twice: one product sums them (less accurate)
    a, b, up = float16_digits(w)
    wide = jnp.concatenate([a, b * jnp.float16(1 / SECOND_DIGIT_SCALE)], axis=1)  # b / 4096: exact in float16
    return lambda s: jnp.matmul(wide, jnp.tile(s.astype(jnp.float16), (2, 1)), preferred_element_type=jnp.float32) / up


SPLITS = {"fp16 parts x 2": _fp16_parts, "fp16 2K deep": _fp16_deep, "int8 digits x 3": _int8_digits, "int8 3n rows": _int8_stacked, "bf16 parts x 3": _bf16_parts,
          "bf16 3K deep": _bf16_concatenated}


def _time(product, args, calls):
    out = product(*args).block_until_ready()
    start = time.perf_counter()
    for _ in range(calls):
        out = product(*args)
    out.block_until_ready()
    return out, (time.perf_counter() - start) / calls


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    w64 = rng.normal(0, 0.05, (500, 784))
    print(f"device {jax.devices()[0].device_kind}")
    for chains in args.chains:
        s64 = rng.choice([-1.0, 1.0], (784, chains))
        exact = w64 @ s64
        w, s = jnp.asarray(w64, jnp.float32), jnp.asarray(s64, jnp.float32)
        for name, algorithm in ALGORITHMS.items():
            product = jax.jit(lambda w, s, a=algorithm: jnp.matmul(w, s, precision=a, preferred_element_type=jnp.float32))
            try:
                out, seconds = _time(product, (w, s), args.calls)
            except ValueError as err:  # some algorithms exist on GPUs only
                print(f"chains {chains:>6} {name:>18}: not run ({str(err).splitlines()[0]})")
                continue
            error = np.abs(np.asarray(out, np.float64) - exact).max()
            print(f"chains {chains:>6} {name:>18}: {seconds * 1e6:8.1f} us   max |error| {error:.2e}", flush=True)
        s8 = s.astype(jnp.int8)
        for name, split in SPLITS.items():
            out, seconds = _time(jax.jit(split(w)), (s8,), args.calls)
            error = np.abs(np.asarray(out, np.float64) - exact).max()
            print(f"chains {chains:>6} {name:>18}: {seconds * 1e6:8.1f} us   max |error| {error:.2e}", flush=True)


if __name__ == "__main__":
    main()
