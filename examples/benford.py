"""Fit a one-node, nine-state categorical EBM to Benford's law, P(d) = log10(1 + 1/d), then sample it.

The data set holds first digits in exact Benford proportions; `heatbath.train.fit` learns the nine
biases by persistent contrastive divergence, and 10^6 samples of the trained model are compared with
the law. Run: python examples/benford.py
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

import heatbath.train as ht
from heatbath import Block, CategoricalNode, SamplingSchedule, sample_states
from heatbath.models import CategoricalEBM
from heatbath.sampling_programs import CategoricalSamplingProgram

BENFORD = np.log10(1 + 1 / np.arange(1, 10))  # P(first digit = d), d = 1..9 (category d - 1)


def main(
    n_steps: int = 300, n_samples: int = 1_000_000, n_chains: int = 20_000, seed: int = 0, progress: bool = True
) -> float:
    node = CategoricalNode("first digit", num_states=9)
    model = CategoricalEBM([node], np.zeros((1, 9), np.float32))
    counts = np.round(BENFORD * 10_000).astype(int)  # exact proportions, to 1e-4
    data = np.repeat(np.arange(9, dtype=np.uint8), counts)[:, None]  # [examples, 1]
    one_sweep = SamplingSchedule(1, 1, 1)  # a lone node's Gibbs update is an exact draw
    spec = ht.TrainingSpec(model, [Block([node])], [], [], [Block([node])], one_sweep, one_sweep)
    key_fit, key_init, key_sample = jax.random.split(jax.random.key(seed), 3)
    result = ht.fit(
        spec,
        [data],
        key=key_fit,
        optimizer=optax.adam(optax.cosine_decay_schedule(0.1, n_steps, alpha=0.01)),
        n_steps=n_steps,
        batch_size=len(data),
        n_chains_negative=n_chains,
        progress=progress,
    )

    program = CategoricalSamplingProgram(result.ebm, [Block([node])], [])
    n_runs = 1000
    schedule = SamplingSchedule(1, n_samples // n_runs, 1)
    init = jax.random.randint(key_init, (n_runs, 1), 0, 9).astype(np.uint8)
    run = jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, [s], [], [Block([node])])[0]))
    samples = np.asarray(run(jax.random.split(key_sample, n_runs), init)).ravel()
    freq = np.bincount(samples, minlength=9) / samples.size
    error = float(np.abs(freq - BENFORD).max())
    for d in range(9):
        print(f"digit {d + 1}: sampled {freq[d]:.4f}  Benford {BENFORD[d]:.4f}")
    print(f"largest per-digit error: {error:.5f} ({samples.size} samples)")
    return error


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=1_000_000)
    args = parser.parse_args()
    main(args.steps, args.samples)
