"""A run of the pairwise kernels folded into running sums a piece of samples at a time.

Observers (`sample_with_observation`) see every sample as it is made, but run the generic sweep loop.
Where the sums an observer would keep (moments, energy gradients) only need the samples, the
pairwise kernels can make them instead: `sample_states` records a piece of samples of the free blocks
(one kernel call over every vmapped chain), `fold` adds them to the sums, and the next piece starts
from the piece's last state. The pieces make up one chain with the schedule's sweeps between samples,
as the observer's run does. A chain holds at most PIECE_ELEMENTS sampled values at a time, or, where
the caller says how many chains it vmaps the fold over (the training gradients do),
max(PIECE_ELEMENTS, PIECE_TOTAL / chains): every piece restarts the sampler, a few hundred small
kernels on a GPU, so the chains of a training step run their whole schedule in one piece where it
fits (THRML's P(14) training example on an H200: 7.4 ms a phase in 7 pieces, 5.8 ms in one). Only
then can the two phases share their kernel launches (`paired_runs`).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import jax
from jaxtyping import Array, Key

from heatbath.block_management import Block
from heatbath.block_sampling import BlockSamplingProgram, SamplingSchedule, sample_states

__all__ = ["PIECE_ELEMENTS", "PIECE_TOTAL", "fold_kernel_samples", "samples_per_piece"]

PIECE_ELEMENTS = 1 << 16  # sampled free values a chain may always hold at a time (64 KiB of spins)
PIECE_TOTAL = 1 << 28  # ... and all the vmapped chains together, where their count is known (256 MiB of spins)

Sums = TypeVar("Sums")


def samples_per_piece(program: BlockSamplingProgram, schedule: SamplingSchedule, vmapped_chains: int | None = None) -> int:
    """How many of the schedule's samples a piece of `fold_kernel_samples` holds (module docstring)."""
    n_free = max(1, sum(len(b) for b in program.gibbs_spec.free_blocks))
    per_chain = PIECE_ELEMENTS if vmapped_chains is None else max(PIECE_ELEMENTS, PIECE_TOTAL // max(1, vmapped_chains))
    return max(1, min(schedule.n_samples, per_chain // n_free))


def fold_kernel_samples(
    key: Key[Array, ""],
    program: BlockSamplingProgram,
    schedule: SamplingSchedule,
    init_state: list[Array],
    clamped: list[Array],
    fold: Callable[[Sums, list[Array], list[Array]], Sums],
    sums: Sums,
    vmapped_chains: int | None = None,
) -> tuple[Sums, list[Array]] | None:
    """`(sums, last free state)` after `fold(sums, samples, clamped)` of every piece of the schedule's
    samples, where `samples[b]` is `[P, n_b]`, free block b at the piece's P samples, and `clamped` the
    clamped blocks' values (the same fold as `paired_runs.FoldedRun`'s); or None where no pairwise
    kernel runs `program` (the caller then runs its observer). `vmapped_chains`: how many chains the
    caller runs this for under `jax.vmap`, if it knows, which sizes the pieces (module docstring)."""
    from heatbath.kernels.pairwise_tables import pairwise_kind

    if pairwise_kind(program)[0] is None or schedule.n_samples < 1:
        return None
    free_blocks = [Block(b) for b in program.gibbs_spec.free_blocks]
    per_piece = samples_per_piece(program, schedule, vmapped_chains)
    steps = schedule.steps_per_sample

    def piece(key, sums, state, n_warmup: int, count: int):
        samples = sample_states(key, program, SamplingSchedule(n_warmup, count, steps), state, clamped, free_blocks)
        return fold(sums, samples, clamped), [x[-1] for x in samples]

    key_first, key_rest = jax.random.split(key)
    sums, state = piece(key_first, sums, list(init_state), schedule.n_warmup, per_piece)
    full, rest = divmod(schedule.n_samples - per_piece, per_piece)
    if full:
        def body(carry, k):
            return piece(k, *carry, steps, per_piece), None

        (sums, state), _ = jax.lax.scan(body, (sums, state), jax.random.split(key_rest, full))
    if rest:
        sums, state = piece(jax.random.fold_in(key_rest, full), sums, state, steps, rest)
    return sums, state
