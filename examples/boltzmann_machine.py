"""Learn the couplings of a 16-spin Boltzmann machine back from its samples.

A known Ising model with random couplings on a random sparse graph is sampled with heatbath (50,000
states); a model with the same graph and zero parameters is then fitted to those states alone with
`heatbath.train.fit` (persistent contrastive divergence), and its couplings are compared with the
true ones. Run: python examples/boltzmann_machine.py
"""

from __future__ import annotations

import argparse
import itertools

import jax
import numpy as np
import optax

import heatbath.train as ht
from heatbath import Block, SamplingSchedule, SpinNode, sample_states
from heatbath.graphs import color_blocks
from heatbath.models import IsingEBM, IsingSamplingProgram


def sample_model(model: IsingEBM, n_states: int, key) -> np.ndarray:
    """`n_states` states [n, nodes] of `model`: 1,000 chains, 200 warm-up sweeps, then a state every 5 sweeps."""
    nodes = model.nodes
    blocks = color_blocks(model)
    program = IsingSamplingProgram(model, blocks, [])
    n_chains = 1000
    schedule = SamplingSchedule(200, n_states // n_chains, 5)
    init = [
        jax.random.bernoulli(k, 0.5, (n_chains, len(b))) for k, b in zip(jax.random.split(key, len(blocks)), blocks)
    ]
    run = jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], [Block(nodes)])[0]))
    states = run(jax.random.split(jax.random.fold_in(key, 1), n_chains), init)
    return np.asarray(states).reshape(-1, len(nodes))


def main(n_data: int = 50_000, n_steps: int = 600, seed: int = 0, progress: bool = True) -> float:
    rng = np.random.default_rng(seed)
    nodes = [SpinNode(i) for i in range(16)]
    edges = [(nodes[i], nodes[j]) for i, j in itertools.combinations(range(16), 2) if rng.random() < 0.25]
    true = IsingEBM(
        nodes, edges, rng.normal(0, 0.2, 16).astype(np.float32), rng.normal(0, 0.5, len(edges)).astype(np.float32)
    )
    key_data, key_fit = jax.random.split(jax.random.key(seed))
    data = sample_model(true, n_data, key_data)

    start = IsingEBM(nodes, edges, np.zeros(16, np.float32), np.zeros(len(edges), np.float32))
    persistent = SamplingSchedule(2, 1, 1)  # PCD: a couple of sweeps per step from the previous step's chains
    spec = ht.TrainingSpec(start, [Block(nodes)], [], [], color_blocks(start), persistent, persistent)
    result = ht.fit(
        spec,
        [data],
        key=key_fit,
        optimizer=optax.adam(optax.cosine_decay_schedule(0.05, n_steps, alpha=0.05)),
        n_steps=n_steps,
        batch_size=min(5000, n_data),
        n_chains_negative=2000,
        progress=progress,
        metrics=False,
    )
    error = float(np.abs(np.asarray(result.ebm.weights) - np.asarray(true.weights)).max())
    print(f"{len(edges)} couplings learned from {len(data)} samples")
    print(f"max abs coupling error: {error:.4f}")
    return error


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    main(args.data, args.steps)
