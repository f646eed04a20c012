"""THRML's three documented examples run on heatbath with only their imports changed (sizes reduced for CI).

The example scripts live in tests/thrml_examples/ as near-verbatim copies of the documentation's code.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from heatbath.models import SpinEBMFactor

EXAMPLES = Path(__file__).parent / "thrml_examples"


def test_probabilistic_computing_potts_example():
    ns = runpy.run_path(str(EXAMPLES / "potts_example.py"))
    samples = np.asarray(ns["samples"][0])
    assert samples.shape == (8, 100, 144) and samples.dtype == np.uint8
    assert samples.max() < 5
    # Domain formation: at beta=1 neighbours agree far more often than the 1/5 of independent sites
    # (0.2 +- 0.01 for these 2112 pairs at beta=0).
    grid = samples[:, -1].reshape(8, 12, 12)
    agree = np.mean(np.r_[(grid[:, 1:] == grid[:, :-1]).ravel(), (grid[:, :, 1:] == grid[:, :, :-1]).ravel()])
    assert agree > 0.3


def test_all_of_thrml_gaussian_and_mixed_examples():
    ns = runpy.run_path(str(EXAMPLES / "all_of_thrml_gaussian.py"))
    assert ns["error"] < 0.01  # the docs' own covariance check (also asserted inside the script)
    mixed = runpy.run_path(str(EXAMPLES / "all_of_thrml_mixed.py"), init_globals=ns)
    samples = mixed["samples"]
    assert samples[0].shape[:2] == (8, 40) and samples[0].dtype == jnp.bool_
    assert samples[1].shape[:2] == (8, 40) and samples[1].dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(samples[1])))
    assert mixed["transformed_data"].shape == (8 * 40, 3)
    assert mixed["padding_example"].dtype == jnp.bool_


def test_spin_models_example_with_kl_gradients():
    ns = runpy.run_path(str(EXAMPLES / "spin_models.py"))
    assert ns["factor_classes"] == [SpinEBMFactor, SpinEBMFactor]
    w, b = np.asarray(ns["weight_grads"]), np.asarray(ns["bias_grads"])
    assert w.shape == (len(ns["edges"]),) and b.shape == (len(ns["nodes"]),)
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(b))
    # Gradients are differences of moments in [-1, 1], scaled by beta = 1.
    assert np.abs(w).max() <= 2 and np.abs(b).max() <= 2 and np.abs(w).max() > 0
    assert len(ns["cubic"].spin_node_groups) == 3
