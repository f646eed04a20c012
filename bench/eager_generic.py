"""Cost of eager calls of the generic loop (no kernel runs the program), heatbath vs THRML.

THRML's documentation builds a Gaussian on a grid from user-written factors and a user-written
conditional sampler, then calls `sample_states` for one chain and `jax.vmap(sample_with_observation)`
over many chains, both without `jit`. This script writes such a model once against either library's
public API (a 5 × 5 open grid, precision 2 on the diagonal and -0.3 on every edge, a linear term
from a mean), and times in one process, per library:

- one eager `sample_states` call (one chain), and
- one eager `jax.vmap` of `sample_with_observation` with a `MomentAccumulatorObserver` of the edges,

milliseconds a call: the median of `--repeats` calls after a first one, each with new keys.

    .venv-bench/bin/python bench/eager_generic.py [--sweeps 10] [--chains 10] [--repeats 10] [--no-thrml]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from timing import median_ms  # noqa: E402

L = 5


def gaussian_model(lib: str):
    """(program, nodes, blocks, edges, api) of the grid Gaussian in library `lib` ("thrml" or "heatbath")."""
    api = importlib.import_module(lib)
    Block, AbstractNode = api.Block, api.AbstractNode
    from_lib = {name: importlib.import_module(f"{lib}.{module}") for name, module in
                (("factor", "factor"), ("interaction", "interaction"), ("samplers", "conditional_samplers"))}
    AbstractFactor = from_lib["factor"].AbstractFactor
    InteractionGroup = from_lib["interaction"].InteractionGroup

    class Node(AbstractNode):
        pass

    class Quadratic(eqx.Module):  # a_i x_i² / 2 on the head
        a: jax.Array

    class Linear(eqx.Module):  # w x_head x_tail (or w x_head with no tail)
        w: jax.Array

    class NodeFactor(AbstractFactor):  # one interaction on every node of a block, nothing read
        interaction: eqx.Module

        def __init__(self, interaction, block):
            super().__init__([block])
            self.interaction = interaction

        def to_interaction_groups(self):
            return [InteractionGroup(self.interaction, self.node_groups[0], [])]

    class EdgeFactor(AbstractFactor):
        w: jax.Array

        def __init__(self, w, blocks):
            super().__init__(list(blocks))
            self.w = w

        def to_interaction_groups(self):
            first, second = self.node_groups
            return [InteractionGroup(Linear(self.w), first, [second]), InteractionGroup(Linear(self.w), second, [first])]

    class GaussianConditional(from_lib["samplers"].AbstractConditionalSampler):
        """x ~ N(-h / a, 1 / a), a the quadratic terms' sum, h the linear terms'."""

        def sample(self, key, interactions, active_flags, states, sampler_state, output_sd):
            a = jnp.zeros(output_sd.shape, output_sd.dtype)
            h = jnp.zeros(output_sd.shape, output_sd.dtype)
            for interaction, active, state in zip(interactions, active_flags, states):
                if isinstance(interaction, Quadratic):
                    a = a + jnp.sum(jnp.where(active, interaction.a, 0.0), axis=-1)
                else:
                    term = interaction.w * (state[0] if state else 1.0)
                    h = h + jnp.sum(jnp.where(active, term, 0.0), axis=-1)
            noise = jax.random.normal(key, output_sd.shape, output_sd.dtype)
            return -h / a + noise / jnp.sqrt(a), sampler_state

        def init(self):
            return None

    grid = [[Node() for _ in range(L)] for _ in range(L)]
    nodes = [n for row in grid for n in row]
    colour = [[(i + j) % 2 for j in range(L)] for i in range(L)]
    blocks = [Block([grid[i][j] for i in range(L) for j in range(L) if colour[i][j] == c]) for c in (0, 1)]
    pairs = [(grid[i][j], grid[i][j + 1]) for i in range(L) for j in range(L - 1)]
    pairs += [(grid[i][j], grid[i + 1][j]) for i in range(L - 1) for j in range(L)]
    pairs = [(u, v) if u in blocks[0].nodes else (v, u) for u, v in pairs]  # first end in block 0
    mean_field = np.random.default_rng(0).normal(0, 1, L * L).astype(np.float32)
    factors = [NodeFactor(Quadratic(jnp.full((L * L,), 2.0)), Block(nodes)), NodeFactor(Linear(jnp.asarray(mean_field)), Block(nodes)),
               EdgeFactor(jnp.full((len(pairs),), -0.3), (Block([u for u, _ in pairs]), Block([v for _, v in pairs])))]
    spec = api.BlockGibbsSpec(blocks, [], {Node: jax.ShapeDtypeStruct((), jnp.float32)})
    program = from_lib["factor"].FactorSamplingProgram(spec, [GaussianConditional(), GaussianConditional()], factors, [])
    return program, nodes, blocks, pairs, api


def timings(lib: str, sweeps: int, chains: int, repeats: int) -> tuple[float, float]:
    program, nodes, blocks, pairs, api = gaussian_model(lib)
    schedule = api.SamplingSchedule(sweeps, 1, 1)
    one = [jnp.zeros((len(b.nodes),), jnp.float32) for b in blocks]

    def single(i):
        return api.sample_states(jax.random.key(i), program, schedule, one, [], list(blocks))

    observer = api.MomentAccumulatorObserver([[(u,) for u, _ in pairs], pairs])
    many = [jnp.zeros((chains, len(b.nodes)), jnp.float32) for b in blocks]
    moments = api.SamplingSchedule(sweeps, sweeps, 1)

    def batched(i):
        keys = jax.random.split(jax.random.key(i), chains)
        run = jax.vmap(lambda k, s: api.sample_with_observation(k, program, moments, s, [], observer.init(), observer))
        return run(keys, many)

    return median_ms(single, repeats), median_ms(batched, repeats)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--chains", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-thrml", action="store_true")
    args = parser.parse_args(argv)
    print(f"device {jax.devices()[0].device_kind}; {L}x{L} Gaussian with user-written factors and sampler; "
          f"{args.sweeps} sweeps; median of {args.repeats} calls (ms)")
    libs = ["heatbath"] + ([] if args.no_thrml else ["thrml"])
    results = {lib: timings(lib, args.sweeps, args.chains, args.repeats) for lib in libs}
    for index, name in enumerate(("eager sample_states, one chain", f"eager vmap of sample_with_observation, {args.chains} chains")):
        line = f"{name:>48}: heatbath {results['heatbath'][index]:9.2f}"
        if "thrml" in results:
            theirs = results["thrml"][index]
            line += f"   THRML {theirs:9.2f}   ratio {theirs / results['heatbath'][index]:7.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
