"""THRML's three documented examples run on heatbath with only their imports changed (sizes reduced for CI).

The example scripts live in tests/thrml_examples/ as near-verbatim copies of the documentation's code.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np

from heatbath.models import SpinEBMFactor
from optimised import run_optimised

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


_GAUSSIAN_AND_MIXED = """
import json, runpy
import numpy as np
ns = runpy.run_path('tests/thrml_examples/all_of_thrml_gaussian.py')
mixed = runpy.run_path('tests/thrml_examples/all_of_thrml_mixed.py', init_globals=ns)
samples = mixed['samples']
print(json.dumps({
    'error': float(ns['error']),
    'shapes': [list(s.shape[:2]) for s in samples[:2]],
    'dtypes': [str(s.dtype) for s in samples[:2]],
    'finite': bool(np.all(np.isfinite(np.asarray(samples[1])))),
    'transformed_shape': list(mixed['transformed_data'].shape),
    'padding_dtype': str(mixed['padding_example'].dtype),
}))
"""


def test_all_of_thrml_gaussian_and_mixed_examples():
    # 10,000 samples of 1,000 chains: at XLA's default optimisation, in a fresh process (optimised.py)
    _, result = run_optimised(_GAUSSIAN_AND_MIXED)
    assert result["error"] < 0.01  # the docs' own covariance check (also asserted inside the script)
    assert result["shapes"] == [[8, 40], [8, 40]]
    assert result["dtypes"] == ["bool", "float32"]
    assert result["finite"]
    assert result["transformed_shape"] == [8 * 40, 3]
    assert result["padding_dtype"] == "bool"


def test_spin_models_example_with_kl_gradients():
    ns = runpy.run_path(str(EXAMPLES / "spin_models.py"))
    assert ns["factor_classes"] == [SpinEBMFactor, SpinEBMFactor]
    w, b = np.asarray(ns["weight_grads"]), np.asarray(ns["bias_grads"])
    assert w.shape == (len(ns["edges"]),) and b.shape == (len(ns["nodes"]),)
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(b))
    # Gradients are differences of moments in [-1, 1], scaled by beta = 1.
    assert np.abs(w).max() <= 2 and np.abs(b).max() <= 2 and np.abs(w).max() > 0
    assert len(ns["cubic"].spin_node_groups) == 3
