"""`coupling_structure.inside_jit` (JAX's trace-stack answer) says what a new array being a tracer
says, in every context the dispatch meets: eager, jit, eager vmap, jit of vmap, grad, scan."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from heatbath.kernels.coupling_structure import inside_jit


def _both(record: list):
    record.append((inside_jit(), isinstance(jnp.zeros(()), jax.core.Tracer)))


def test_inside_jit_agrees_with_a_new_arrays_tracer_check():
    seen: list = []
    _both(seen)
    jax.jit(lambda: _both(seen) or 0)()
    jax.vmap(lambda x: _both(seen) or x)(jnp.ones(2))
    jax.jit(jax.vmap(lambda x: _both(seen) or x))(jnp.ones(2))
    jax.grad(lambda x: _both(seen) or x)(1.0)
    jax.jit(jax.grad(lambda x: _both(seen) or x))(1.0)
    jax.lax.scan(lambda c, x: (_both(seen) or c, x), 0.0, jnp.ones(2))
    assert [ours for ours, _ in seen] == [theirs for _, theirs in seen]
    assert [ours for ours, _ in seen] == [False, True, False, True, False, True, True]
