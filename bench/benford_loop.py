"""The Benford experiment's sampling step, heatbath vs THRML: build the model again, then sample eagerly.

The seed experiment (`experiment-benford-categorical-ebm.md`) trains nine logits of one categorical
node and, on every training step, builds the model, spec and program afresh around the same node and
calls `sample_states` without `jit` for one chain of `--samples` samples, one sweep apart. Both
libraries build it through THRML's public API (a bias-only `CategoricalEBMFactor`,
`CategoricalGibbsConditional(9)`, `FactorSamplingProgram`), with new logits on every call.
Milliseconds per step: the median of `--repeats` steps after one compiling step.

    .venv-bench/bin/python bench/benford_loop.py [--samples 100000] [--repeats 10] [--no-thrml]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from timing import median_ms  # noqa: E402


def _library(name: str):
    if name == "thrml":
        from thrml import Block, BlockGibbsSpec, CategoricalNode, FactorSamplingProgram, SamplingSchedule, sample_states
        from thrml.models.discrete_ebm import CategoricalEBMFactor, CategoricalGibbsConditional
    else:
        from heatbath import Block, BlockGibbsSpec, CategoricalNode, FactorSamplingProgram, SamplingSchedule, sample_states
        from heatbath.models.discrete_ebm import CategoricalEBMFactor, CategoricalGibbsConditional
    return (Block, BlockGibbsSpec, CategoricalNode, FactorSamplingProgram, SamplingSchedule, sample_states,
            CategoricalEBMFactor, CategoricalGibbsConditional)


def step_ms(lib: str, n_samples: int, repeats: int) -> float:
    """Median milliseconds of one step: build the one-node program with new logits, sample eagerly."""
    Block, Spec, Node, Program, Schedule, sample_states, Factor, Conditional = _library(lib)
    node = Node()
    schedule = Schedule(n_warmup=0, n_samples=n_samples, steps_per_sample=1)
    init = [jnp.zeros((1,), jnp.uint8)]

    def step(i: int):
        logits = jnp.asarray(np.log10(1 + 1 / np.arange(1, 10)) * (1 + 0.01 * i), jnp.float32)
        blocks = [Block([node])]
        program = Program(Spec(blocks, []), [Conditional(9)], [Factor(blocks, logits[None])], [])
        return sample_states(jax.random.key(i), program, schedule, init, [], blocks)

    return median_ms(step, repeats)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-thrml", action="store_true")
    args = parser.parse_args(argv)
    print(f"device {jax.devices()[0].device_kind}; one chain, {args.samples} samples a step, "
          f"median of {args.repeats} steps (ms)")
    ours = step_ms("heatbath", args.samples, args.repeats)
    line = f"heatbath {ours:9.2f}"
    if not args.no_thrml:
        theirs = step_ms("thrml", args.samples, max(3, args.repeats // 5))
        line += f"   THRML {theirs:9.2f}   ratio {theirs / ours:6.1f}x"
    print(line, flush=True)


if __name__ == "__main__":
    main()
