"""Classify handwritten digits with a restricted Boltzmann machine over pixels, a categorical label and hidden spins.

scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) are binarised into 64 spin pixels; the
class is one `CategoricalNode` with 10 states. Both are visible units of a bipartite spin EBM whose
hidden side is `n_hidden` spins:

    E(v, y, h) = -Σ_i a_i v_i - b_y - Σ_j c_j h_j - Σ_ij W_ij v_i h_j - Σ_j U_j[y] h_j

(pixel biases, label biases, hidden biases, pixel-hidden couplings as `SpinEBMFactor` pairs, and
label-hidden couplings as one `DiscreteEBMFactor` with a spin group and a categorical group). It is
trained on 80% of the images with `heatbath.train.fit` (persistent contrastive divergence). Each
held-out image is then classified by clamping its pixels and Gibbs sampling the label and hidden
units alternately on many chains; the predicted class is the label seen most often. The exact
answer for an RBM, argmin_y of the free energy F(y, v) = -b_y - Σ_j log 2cosh(c_j + Σ_i W_ij v_i + U_j[y]),
is printed beside it. Run: python examples/digits_rbm.py
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import heatbath.train as ht
from heatbath import Block, BlockGibbsSpec, CategoricalNode, FactorSamplingProgram, SamplingSchedule, SpinNode
from heatbath.kernels.batched import sample_states_batched
from heatbath.models import CategoricalEBMFactor, DiscreteEBMFactor, FactorizedEBM, SpinEBMFactor
from heatbath.models.discrete_ebm import CategoricalGibbsConditional, SpinGibbsConditional

N_CLASSES = 10


def build_model(pixels, label, hidden, key, init_scale: float = 0.1, pixel_bias=None) -> FactorizedEBM:
    """The RBM's five factors; couplings start small and random, biases at zero (pixels: data log-odds / 2)."""
    n_v, n_h = len(pixels), len(hidden)
    k_w, k_u = jax.random.split(key)
    pixel_bias = np.zeros(n_v, np.float32) if pixel_bias is None else np.asarray(pixel_bias, np.float32)
    # pixel-hidden pairs, pixel-major: pair (i, j) is entry i * n_h + j
    pair_pixels = Block([p for p in pixels for _ in range(n_h)])
    pair_hidden = Block([h for _ in range(n_v) for h in hidden])
    return FactorizedEBM(
        [
            SpinEBMFactor([Block(pixels)], jnp.asarray(pixel_bias)),
            SpinEBMFactor([Block(hidden)], jnp.zeros(n_h, jnp.float32)),
            CategoricalEBMFactor([Block([label])], jnp.zeros((1, N_CLASSES), jnp.float32)),
            SpinEBMFactor([pair_pixels, pair_hidden], init_scale * jax.random.normal(k_w, (n_v * n_h,))),
            DiscreteEBMFactor(
                [Block(hidden)], [Block([label] * n_h)], init_scale * jax.random.normal(k_u, (n_h, N_CLASSES))
            ),
        ]
    )


def unpack(model: FactorizedEBM, n_v: int, n_h: int):
    """(pixel biases [n_v], hidden biases [n_h], label biases [10], W [n_v, n_h], U [n_h, 10]) as numpy."""
    a, c, b, w, u = (np.asarray(f.weights) for f in model.factors)
    return a, c, b[0], w.reshape(n_v, n_h), u


def free_energy_predict(model, pixels_pm1: np.ndarray, n_h: int) -> np.ndarray:
    """argmin_y F(y, v): the exact most probable label of each row given its pixels (±1)."""
    _, c, b, w, u = unpack(model, pixels_pm1.shape[1], n_h)
    field = pixels_pm1 @ w + c  # [rows, n_h]
    act = field[:, :, None] + u[None]  # [rows, n_h, 10]
    log2cosh = np.logaddexp(act, -act)
    return np.argmax(b[None] + log2cosh.sum(axis=1), axis=1)


def sample_predict(model, pixels, label, hidden, images: np.ndarray, key, n_chains: int, n_sweeps: int, burn_in: int):
    """Majority label of Gibbs chains over (hidden, label) with the pixels clamped to each image."""
    n_images = len(images)
    spec = BlockGibbsSpec([Block(hidden), Block([label])], [Block(pixels)], model.node_shape_dtypes)
    program = FactorSamplingProgram(
        spec, [SpinGibbsConditional(), CategoricalGibbsConditional(N_CLASSES)], model.factors
    )
    chains = n_images * n_chains
    clamp = np.repeat(images, n_chains, axis=0)  # [chains, 64], chain k belongs to image k // n_chains
    k_h, k_y, k_run = jax.random.split(key, 3)
    init = [
        jax.random.bernoulli(k_h, 0.5, (chains, len(hidden))),
        jax.random.randint(k_y, (chains, 1), 0, N_CLASSES).astype(jnp.uint8),
    ]
    schedule = SamplingSchedule(burn_in, n_sweeps, 1)
    (labels,) = sample_states_batched(k_run, program, schedule, init, [jnp.asarray(clamp)], [Block([label])])
    labels = np.asarray(labels).reshape(n_images, n_chains * n_sweeps)
    counts = np.stack([(labels == y).sum(axis=1) for y in range(N_CLASSES)], axis=1)
    return counts.argmax(axis=1)


def main(
    n_hidden: int = 100,
    n_steps: int = 1000,
    batch_size: int = 100,
    n_chains_negative: int = 100,
    n_sweeps_negative: int = 6,
    learning_rate: float = 0.006,
    init_scale: float = 0.1,
    n_test_chains: int = 10,
    n_test_sweeps: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> float:
    start = time.perf_counter()
    digits = load_digits()
    images = digits.images.reshape(len(digits.images), -1) >= 8  # binarised: ink is True (+1)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=seed, stratify=digits.target
    )

    pixels = [SpinNode(("pixel", i)) for i in range(64)]
    hidden = [SpinNode(("hidden", j)) for j in range(n_hidden)]
    label = CategoricalNode("label", num_states=N_CLASSES)
    key_model, key_fit, key_test = jax.random.split(jax.random.key(seed), 3)
    mean = np.clip(x_train.mean(axis=0), 0.01, 0.99)
    model = build_model(pixels, label, hidden, key_model, init_scale, pixel_bias=0.5 * np.log(mean / (1 - mean)))

    visible = (Block(pixels), Block([label]))  # no visible-visible couplings: updated together
    spec = ht.TrainingSpec(
        model,
        [Block(pixels), Block([label])],
        [],
        [Block(hidden)],  # positive phase: one exact draw of the hidden units given the data
        [visible, Block(hidden)],
        SamplingSchedule(1, 1, 1),
        SamplingSchedule(n_sweeps_negative, 1, 1),  # PCD-k: k sweeps per step from the persistent chains
    )
    result = ht.fit(
        spec,
        [x_train, y_train.astype(np.uint8)[:, None]],
        key=key_fit,
        optimizer=optax.adam(optax.cosine_decay_schedule(learning_rate, n_steps, alpha=0.05)),
        n_steps=n_steps,
        batch_size=batch_size,
        n_chains_negative=n_chains_negative,
        progress=progress,
        metrics=False,
    )
    trained = time.perf_counter()

    exact = free_energy_predict(result.ebm, np.where(x_test, 1.0, -1.0), n_hidden)
    sampled = sample_predict(
        result.ebm, pixels, label, hidden, x_test, key_test, n_test_chains, n_test_sweeps, burn_in=10
    )
    accuracy = float(np.mean(sampled == y_test))
    print(
        f"{len(x_train)} training and {len(x_test)} held-out digits, {n_hidden} hidden units, {n_steps} PCD-"
        f"{n_sweeps_negative} steps; {n_test_chains} chains x {n_test_sweeps} sweeps per held-out digit"
    )
    print(f"training time: {trained - start:.1f} s, total time: {time.perf_counter() - start:.1f} s")
    print(f"free-energy accuracy: {float(np.mean(exact == y_test)):.4f}")
    print(f"held-out accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    main(args.hidden, args.steps)
