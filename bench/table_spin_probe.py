"""Probe: the pattern-table spin kernel (`heatbath.kernels.table_spin`) alone on Pegasus P(14), GPU.

Times whole sweeps of the kernel (four colour updates, in place, the same seeds every sweep) in one
jitted loop, without the sampling loop around them, for several shapes and diagnostic variants:

- `shipped`: the kernel as `method="table"` runs it;
- `same_rows`: every node reads node 0's neighbour rows (all loads hit L1): what memory traffic costs;
- `no_draw`: spin = sign of the field (no random word, no exp): what the draw costs;
- `half_draw`: one random word per two chains, 16 bits each (no tie fallback, so not exact): what
  halving the mixes would give;
- `float_uniform`: the uniform built from the word's bits as a float in [1, 2) instead of converted
  (no I2F): whether the conversion's throughput matters.

`--sass DIR` also writes each variant's SASS (`ptxas` and `cuobjdump` of the CUDA toolkit in
`--cuda`) and its register count.

    PYTHONPATH=src python3 bench/table_spin_probe.py [--chains 10240 65536] [--warps 4 8] [--words 4]
        [--variants shipped same_rows no_draw] [--sweeps 100] [--sass DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(__file__))
from flips_pegasus import build, pegasus_inputs  # noqa: E402
from timing import best_time  # noqa: E402

from heatbath.kernels import table_spin  # noqa: E402
from heatbath.kernels.pairwise_tables import block_couplings, pairwise_tables  # noqa: E402

VARIANTS = {"shipped": (), "same_rows": (("PROBE_SAME_ROWS", 1),), "no_draw": (("PROBE_NO_DRAW", 1),),
            "half_draw": (("PROBE_HALF_DRAW", 1),), "float_uniform": (("PROBE_FLOAT_UNIFORM", 1),)}


def p14_blocks():
    return tables_and_blocks(build("heatbath", *pegasus_inputs())[0])


def tables_and_blocks(program):
    """(program, its pairwise tables, the table kernel's blocks) of a pairwise spin program."""
    tables = pairwise_tables(program)
    params = [block_couplings(program, tables, b) for b in range(len(tables.sources))]
    blocks = table_spin.table_blocks(tables, table_spin.table_layouts(tables), params)
    return program, tables, blocks


def sweep_rate(blocks, n_spins: int, chains: int, sweeps: int, repeats: int, **options) -> float:
    rows = n_spins + 1
    state = jnp.where(jax.random.bernoulli(jax.random.key(0), 0.5, (rows, chains)), table_spin.UP, 0).astype(jnp.uint8)
    seeds = table_spin.fold_seeds(jax.random.bits(jax.random.key(1), (len(blocks), chains), jnp.uint32))

    @jax.jit
    def run(state):
        def body(_, state):
            for b, block in enumerate(blocks):
                state = table_spin.table_block_update(block, state, seeds, b, **options)
            return state

        return jax.lax.fori_loop(0, sweeps, body, state)

    seconds, _ = best_time(lambda i: run(state), repeats)
    return sweeps * n_spins * chains / seconds / 1e9


def write_sass(folder: str, cuda: str, name: str, groups: int, warps: int, words: int, defines) -> str:
    from heatbath.kernels.cuda_runtime import compile_ptx, compute_capability

    arch = compute_capability()
    ptx = compile_ptx(table_spin._source(), "table_spin.cu",
                      (("GROUPS", groups), ("WORDS", words), ("WARPS", warps), *defines), arch)
    base = os.path.join(folder, f"table_spin_{name}_w{warps}_v{words}")
    with open(base + ".ptx", "w") as f:
        f.write(ptx)
    done = subprocess.run([os.path.join(cuda, "bin", "ptxas"), f"-arch=sm_{arch}", "-v", base + ".ptx", "-o", base + ".cubin"],
                          capture_output=True, text=True)
    sass = subprocess.run([os.path.join(cuda, "bin", "cuobjdump"), "-sass", base + ".cubin"], capture_output=True, text=True)
    with open(base + ".sass", "w") as f:
        f.write(sass.stdout)
    lines = [line for line in sass.stdout.splitlines() if line.strip().startswith("/*") and ";" in line]
    usage = " ".join(line.strip() for line in done.stderr.splitlines() if "registers" in line)
    return f"{len(lines)} SASS instructions; {usage}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, nargs="+", default=[10240, 65536])
    parser.add_argument("--warps", type=int, nargs="+", default=[4])
    parser.add_argument("--words", type=int, nargs="+", default=[4])
    parser.add_argument("--variants", nargs="+", default=["shipped"], choices=sorted(VARIANTS))
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sass", default=None, help="write PTX, SASS and register counts here")
    parser.add_argument("--cuda", default="/usr/local/cuda")
    args = parser.parse_args(argv)

    program, tables, blocks = p14_blocks()
    n_spins = sum(tables.block_sizes)
    groups = blocks[0].tables.shape[1]
    print(f"P(14): {n_spins} spins, {len(blocks)} colours, {groups} tables of 32 per node; device {jax.devices()[0].device_kind}")
    for variant in args.variants:
        for warps in args.warps:
            for words in args.words:
                if args.sass:
                    print(f"{variant} warps={warps} words={words}: "
                          f"{write_sass(args.sass, args.cuda, variant, groups, warps, words, VARIANTS[variant])}")
                for chains in args.chains:
                    rate = sweep_rate(blocks, n_spins, chains, args.sweeps, args.repeats, warps=warps, words=words,
                                      defines=VARIANTS[variant])
                    print(f"{variant:>10} warps={warps:<2} words={words:<2} chains={chains:>6}: {rate:8.1f} flips/ns", flush=True)


if __name__ == "__main__":
    main()
