"""Probe: the dense RBM layer's product (500 × 784 couplings times ±1 states) at several of XLA's dot
algorithms on a GPU: microseconds per jitted call (a Python loop of 50 calls, so small sizes include
the dispatch) and the largest error against float64.

    PYTHONPATH=src python3 bench/dense_product_probe.py [--chains 100 1000 10000]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.lax import DotAlgorithmPreset

ALGORITHMS = {"HIGHEST (float32)": jax.lax.Precision.HIGHEST, "TF32_TF32_F32_X3": DotAlgorithmPreset.TF32_TF32_F32_X3,
              "BF16_BF16_F32_X6": DotAlgorithmPreset.BF16_BF16_F32_X6, "TF32_TF32_F32": DotAlgorithmPreset.TF32_TF32_F32}


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
            out = product(w, s).block_until_ready()
            start = time.perf_counter()
            for _ in range(args.calls):
                out = product(w, s)
            out.block_until_ready()
            seconds = (time.perf_counter() - start) / args.calls
            error = np.abs(np.asarray(out, np.float64) - exact).max()
            print(f"chains {chains:>6} {name:>18}: {seconds * 1e6:8.1f} us   max |error| {error:.2e}", flush=True)


if __name__ == "__main__":
    main()
