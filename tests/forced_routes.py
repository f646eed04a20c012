"""Run a route of another platform where the test runs: the CUDA GPUs' dense product on any device."""

from __future__ import annotations


def force_float16_parts(monkeypatch) -> list:
    """Make the pairwise sweeps read dense layers through `dense_product.float16_parts_product` (the
    CUDA GPUs' product) on any platform; returns a list that records each trace of it, so a test can
    check that the forced product really ran (and was not served from a compiled call of another)."""
    from heatbath.kernels import dense_product, pairwise_sweep

    traced = []

    def parts(w, states):
        traced.append(w.shape)
        return dense_product.float16_parts_product(w, states)

    monkeypatch.setattr(pairwise_sweep, "dense_field", parts)
    return traced
