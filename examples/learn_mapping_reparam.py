"""Learn the random 16 -> 8 probabilistic mapping by gradient descent through reparameterised samples.

Same data as examples/learn_mapping.py (its `mapping_data` is imported, so the
true p(y|x) and the 20,000 pairs are identical), different route: instead of an EBM trained by positive
and negative phases, the conditional model q(y|x) = softmax(θ[x]) is fitted by comparing *samples* of
it with the data, gradients flowing through the sampler by `heatbath.relax`.

The loss. With one-hot codes e_y, the squared maximum mean discrepancy between q(·|x) and the data's
conditional for the delta kernel k(y, y') = [y = y'] (characteristic on a finite set, so it vanishes
only when the two laws are equal) is

    MMD²_x = ‖E_{y~q(·|x)}[e_y] − p̂(·|x)‖²,   loss(θ) = Σ_x (n_x / N) MMD²_x,

where p̂(·|x) is the data's one-hot mean for that x (all the data enter through these 16 means). The
model's mean is estimated from S reparameterised samples per x and the loss is differentiated through
them:

* ``straight-through`` (default): the samples are exact one-hot draws (forward), the gradient is that
  of the Gumbel-softmax sample with the same noise. The gradient is biased, but the forward residual
  r = mean − p̂ is unbiased and the surrogate Jacobian J is non-degenerate on the simplex, so descent
  on rᵀJ stops only where E[r] = 0, i.e. q = p̂ (up to an O(1/S) correlation between r and J);
* ``gumbel-softmax``: relaxed samples forward and backward, the temperature annealed from 1 to 0.05.
  At a fixed temperature its fixed point matches the *relaxed* mean to p̂, which is biased; annealing
  shrinks that bias.

Maximum likelihood (fitting θ[x] to the log-frequencies) needs no sampling at all and is the best one can
do from 20,000 pairs; its TV to the truth is printed as the reference both routes should approach, with
the EBM route's figure (0.025 in learn_mapping.py). Run: python examples/learn_mapping_reparam.py
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from heatbath.relax import gumbel_softmax, straight_through_categorical

EBM_ROUTE_TV = 0.025  # mean TV printed by examples/learn_mapping.py (default settings)


def _load_ebm_example():
    path = pathlib.Path(__file__).resolve().parent / "learn_mapping.py"
    spec = importlib.util.spec_from_file_location("learn_mapping_ebm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ebm = _load_ebm_example()
N_X, N_Y = _ebm.N_X, _ebm.N_Y
mapping_data, mean_tv, report_tv = _ebm.mapping_data, _ebm.mean_tv, _ebm.report_tv

ESTIMATORS = ("straight-through", "gumbel-softmax")


def make_step(optimizer, n_samples: int, estimator: str, n_steps: int):
    """One jitted optax step on the sample-based MMD loss (see the module docstring)."""

    def temperature(step):
        if estimator == "straight-through":
            return jnp.float32(1.0)
        # geometric anneal 1 -> 0.05 over the run
        return jnp.float32(0.05) ** (step.astype(jnp.float32) / n_steps)

    def loss(theta, key, target, weights, tau):
        logits = jnp.broadcast_to(theta[:, None, :], (N_X, n_samples, N_Y))
        if estimator == "straight-through":
            y = straight_through_categorical(logits, tau, key=key)
        else:
            y = gumbel_softmax(logits, tau, key=key)
        residual = y.mean(axis=1) - target  # [x, y]
        return jnp.sum(weights * jnp.sum(residual**2, axis=1))

    @jax.jit
    def step(theta, opt_state, key, target, weights, i):
        value, grads = jax.value_and_grad(loss)(theta, key, target, weights, temperature(i))
        updates, opt_state = optimizer.update(grads, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, value

    return step


def main(
    n_data: int = 20_000,
    n_steps: int = 1500,
    n_samples: int = 1024,
    learning_rate: float = 0.3,
    estimator: str = "straight-through",
    seed: int = 0,
    progress: bool = True,
) -> float:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    start = time.perf_counter()
    p_true, _, _, counts = mapping_data(n_data, seed)
    n_per_x = counts.sum(axis=1)
    empirical = counts / n_per_x[:, None]

    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, n_steps, alpha=0.01))
    theta = jnp.zeros((N_X, N_Y), jnp.float32)
    opt_state = optimizer.init(theta)
    step = make_step(optimizer, n_samples, estimator, n_steps)
    target = jnp.asarray(empirical, jnp.float32)
    weights = jnp.asarray(n_per_x / n_data, jnp.float32)
    key = jax.random.key(seed)
    for i in range(n_steps):
        key, key_step = jax.random.split(key)
        theta, opt_state, value = step(theta, opt_state, key_step, target, weights, jnp.int32(i))
        if progress and (i + 1) % max(1, n_steps // 5) == 0:
            print(f"step {i + 1}: loss {float(value):.2e}")

    learned = np.asarray(jax.nn.softmax(theta, axis=1), np.float64)
    tv = mean_tv(learned, p_true)
    print(
        f"{n_data} pairs, {n_steps} steps x {n_samples} samples per x, {estimator}, {time.perf_counter() - start:.1f} s"
    )
    print(f"EBM route (examples/learn_mapping.py) TV: {EBM_ROUTE_TV:.3f}")
    report_tv(learned, empirical, p_true)
    return tv


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--estimator", choices=ESTIMATORS, default="straight-through")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.data, args.steps, args.samples, estimator=args.estimator, seed=args.seed)
