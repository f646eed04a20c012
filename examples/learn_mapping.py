"""Learn a random probabilistic mapping x -> y (16 inputs, 8 outputs) as a conditional categorical EBM.

A "true" mapping p(y|x) is drawn at random (each of the 16 rows from a Dirichlet over the 8 outputs,
fixed seed), 20,000 pairs (x, y) are sampled from it with x uniform, and the model

    E(x, y) = -(W[x, y] + b[y]),   so   p(y|x) = softmax(W[x, :] + b)

is learned from the pairs alone. The two nodes take different numbers of values (x: 16, y: 8), which
`CategoricalEBM` cannot express (it uses one K for every node), so the model is a `FactorizedEBM` of
two `CategoricalEBMFactor`s: the x-y coupling W [1, 16, 8] and the y bias b [1, 8]. A bias on x is
left out: x is clamped in both phases below, so any term depending on x alone cancels from the
gradient (and from p(y|x)).

The objective is the conditional log-likelihood (1/N) Σ_i log p(y_i|x_i), whose gradient (with the
usual sign, E_data − E_model of ∂E/∂θ) is

    Σ_g (n_g / N) (E_{y ~ data | x=g}[∂E/∂θ] − E_{y ~ model(y|x=g)}[∂E/∂θ]),

where g runs over the 16 x-values and n_g counts the pairs with x = g. In `heatbath.train` terms, x
is a *conditioning* block (clamped in both phases), y is the data block (clamped in the positive
phase, sampled in the negative one). `TrainingSpec` takes conditioning values that are shared by a
whole batch ([nodes] arrays, not [batch, nodes]), so `fit`, which passes one conditioning value for
the whole run, cannot express a different x per example. Instead the data are grouped by x, and
one training step calls `estimate_kl_grad` once per x-value (`jax.vmap` over the 16 groups: each
with its own conditioning value, minibatch of y's and persistent negative chains), weights the 16
gradients by n_g / N and takes an optax step; the step is one jitted function. The alternative of
putting x among the data blocks and sampling it in the negative phase would fit the joint p(x, y)
instead: the same answer here only because this model happens to be able to represent any joint.

The learned p(y|x) is computed exactly from the weights and compared with the true one by the total
variation distance, averaged over x. From 20,000 pairs that distance cannot go to zero: the printed
reference is the distance of the empirical conditional frequencies (the maximum-likelihood answer),
which the trained model should approach. Run: python examples/learn_mapping.py
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import heatbath.train as ht
from heatbath import Block, CategoricalNode, SamplingSchedule
from heatbath.models import FactorizedEBM
from heatbath.models.discrete_ebm import CategoricalEBMFactor

N_X, N_Y = 16, 8


def true_mapping(seed: int, alpha: float = 0.5) -> np.ndarray:
    """A random conditional distribution p(y|x): [16, 8], each row a Dirichlet(alpha) draw."""
    return np.random.default_rng(seed).dirichlet(np.full(N_Y, alpha), N_X)


def sample_pairs(p_y_given_x: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` pairs (x, y): x uniform over the rows, y ~ p(y|x) (both uint8, the categorical storage dtype)."""
    rng = np.random.default_rng(seed + 1)
    x = rng.integers(0, N_X, n)
    y = (rng.random(n)[:, None] > np.cumsum(p_y_given_x[x], axis=1)).sum(axis=1).clip(max=N_Y - 1)
    return x.astype(np.uint8), y.astype(np.uint8)


def conditional(ebm: FactorizedEBM) -> np.ndarray:
    """The model's exact p(y|x) [16, 8]: softmax over y of W[x, :] + b (the energy is -(W[x, y] + b[y]))."""
    coupling, bias = ebm.factors
    return np.asarray(jax.nn.softmax(coupling.weights[0] + bias.weights[0], axis=1))


def mean_tv(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance between the rows of two conditionals, averaged over x."""
    return float(0.5 * np.abs(p - q).sum(axis=1).mean())


@eqx.filter_jit
def _step(spec, opt_state, optimizer, key, x_values, weights, y_batches, negative_state):
    """One step: a KL gradient per x-value (vmapped), weighted by that x's share of the data, then optax."""

    def one_group(k, x, ys, neg):
        grads, _, negative = ht.estimate_kl_grad(k, spec, [ys], [x], None, [neg])
        return grads, negative.final_state[0]

    keys = jax.random.split(key, x_values.shape[0])
    grads, negative_state = jax.vmap(one_group)(keys, x_values, y_batches, negative_state)
    grads = jax.tree.map(lambda g: jnp.tensordot(weights, g, axes=1), grads)
    updates, opt_state = optimizer.update(grads, opt_state, spec.ebm)
    return spec.with_ebm(eqx.apply_updates(spec.ebm, updates)), opt_state, negative_state


def mapping_data(n_data: int, seed: int):
    """The seed's problem: the true mapping, `n_data` (x, y) pairs drawn from it, and their counts [x, y]."""
    p_true = true_mapping(seed)
    xs, ys = sample_pairs(p_true, n_data, seed)
    counts = np.zeros((N_X, N_Y))
    np.add.at(counts, (xs, ys), 1)
    if (counts.sum(axis=1) == 0).any():
        raise ValueError(f"n_data={n_data} leaves some x-value without examples; use more data.")
    return p_true, xs, ys, counts


def report_tv(learned: np.ndarray, empirical: np.ndarray, p_true: np.ndarray) -> None:
    """Print the learned mapping's mean TV from the truth beside the data's own (the best a fit can expect)."""
    print(f"empirical-frequency TV (maximum-likelihood reference): {mean_tv(empirical, p_true):.4f}")
    print(f"learned vs empirical frequencies TV: {mean_tv(learned, empirical):.4f}")
    print(f"mean total-variation distance: {mean_tv(learned, p_true):.4f}")


def main(
    n_data: int = 20_000,
    n_steps: int = 400,
    batch_per_x: int = 512,
    n_chains: int = 512,
    learning_rate: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> float:
    start = time.perf_counter()
    p_true, xs, ys, counts = mapping_data(n_data, seed)
    n_per_x = counts.sum(axis=1)
    groups = [ys[xs == g] for g in range(N_X)]

    x_node, y_node = CategoricalNode("x", num_states=N_X), CategoricalNode("y", num_states=N_Y)
    x_block, y_block = Block([x_node]), Block([y_node])
    model = FactorizedEBM(
        [
            CategoricalEBMFactor([x_block, y_block], jnp.zeros((1, N_X, N_Y), jnp.float32)),  # W[x, y]
            CategoricalEBMFactor([y_block], jnp.zeros((1, N_Y), jnp.float32)),  # b[y]
        ]
    )
    # Given x, y is a single node: one Gibbs update is an exact draw from the model's p(y|x), so a few
    # recorded sweeps per chain and step give an unbiased negative phase.
    negative = SamplingSchedule(0, 4, 1)
    spec = ht.TrainingSpec(
        model,
        data_blocks=[y_block],
        conditioning_blocks=[x_block],
        positive_sampling_blocks=[],  # y observed, x clamped: nothing to sample in the positive phase
        negative_sampling_blocks=[y_block],
        schedule_positive=SamplingSchedule(0, 1, 1),
        schedule_negative=negative,
    )
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, n_steps, alpha=0.01))
    opt_state = optimizer.init(spec.ebm)

    key = jax.random.key(seed)
    key, key_init = jax.random.split(key)
    negative_state = jax.vmap(lambda k: spec.random_negative_state(k, n_chains)[0])(jax.random.split(key_init, N_X))
    x_values = jnp.arange(N_X, dtype=jnp.uint8)[:, None]  # one conditioning value [1] per group
    weights = jnp.asarray(n_per_x / n_data, jnp.float32)
    # Each step takes the next `batch_per_x` examples of every x-value, going through each x's examples
    # in a fresh random order every pass (so all examples are used equally often).
    rng = np.random.default_rng(seed + 2)
    streams = [
        np.concatenate([g[rng.permutation(len(g))] for _ in range(n_steps * batch_per_x // len(g) + 1)])
        for g in groups
    ]
    for step in tqdm(range(n_steps), disable=not progress, desc="fit"):
        rows = slice(step * batch_per_x, (step + 1) * batch_per_x)
        batch = np.stack([stream[rows] for stream in streams])[:, :, None]  # [x-values, batch, 1]
        key, key_step = jax.random.split(key)
        spec, opt_state, negative_state = _step(
            spec, opt_state, optimizer, key_step, x_values, weights, jnp.asarray(batch), negative_state
        )

    learned = conditional(spec.ebm)
    tv = mean_tv(learned, p_true)
    print(f"{n_data} pairs, {n_steps} steps, {time.perf_counter() - start:.1f} s")
    report_tv(learned, counts / n_per_x[:, None], p_true)
    return tv


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.data, args.steps, seed=args.seed)
