"""Exceptions raised for bad input. Every message says what was wrong and how to fix it."""

__all__ = ["HeatbathError", "StateError", "IndependenceError"]


class HeatbathError(ValueError):
    """Bad input to heatbath: a wrong shape, dtype, block layout, weight or option."""


class StateError(HeatbathError, RuntimeError):
    """A state (initial, clamped or data) does not match the blocks it is meant for.

    Also a `RuntimeError`, which is what THRML's `verify_block_state` raises.
    """


class IndependenceError(HeatbathError):
    """Two nodes that are updated at the same time interact, so block Gibbs would sample the wrong law."""
