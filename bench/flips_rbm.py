"""Sampling throughput of a dense RBM layer pair (block Gibbs on a complete bipartite Ising model).

Visible and hidden spins with every visible–hidden coupling (N(0, 0.05²)) and N(0, 0.5²) biases,
β = 1, two blocks (visible, hidden), built identically in THRML and heatbath with the model code of
`bench/flips_pegasus.py`; heatbath reads the dense layer through matrix products of float32 accuracy
(`kernels.dense_product`: float32 on CPUs, two float16 parts on CUDA GPUs). Flips/ns
= sweeps × (visible + hidden) × chains / seconds, best of `--repeats` after a compiling call.

    python3 bench/flips_rbm.py [--visible 784] [--hidden 500] [--chains 100 1000] [--sweeps 50]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))


def main(argv=None) -> None:
    from flips_pegasus import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visible", type=int, default=784)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--chains", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--sweeps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-thrml", action="store_true")
    args = parser.parse_args(argv)

    n_v, n_h = args.visible, args.hidden
    v, h = np.meshgrid(np.arange(n_v), n_v + np.arange(n_h), indexing="ij")
    edge_index = np.stack([v.ravel(), h.ravel()], axis=1)
    colours = np.concatenate([np.zeros(n_v, np.int64), np.ones(n_h, np.int64)])
    rng = np.random.default_rng(0)
    inputs = (edge_index, n_v + n_h, colours, rng.normal(0, 0.5, n_v + n_h).astype(np.float32),
              rng.normal(0, 0.05, len(edge_index)).astype(np.float32))
    print(f"RBM {n_v} x {n_h} ({len(edge_index)} couplings); {args.sweeps} sweeps; "
          f"device {jax.devices()[0].device_kind}; jax {jax.__version__}")
    print_table(inputs, args.chains, args.sweeps, args.repeats, args.no_thrml)


if __name__ == "__main__":
    main()
