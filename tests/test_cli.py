"""The `heatbath` command line: exact agreement of `heatbath ising`, the console script, and option errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from heatbath.cli.ising import _chunk_plan, jackknife, run_ising
from heatbath.cli.main import main, parse_args
from heatbath.exact.ising2d import BETA_CRITICAL, exact_finite_lattice

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("beta", [0.3, 0.6])
def test_ising_energy_matches_kaufman(beta):
    args = parse_args(
        ["ising", "--L", "32", "--beta", str(beta), "--chains", "32", "--warmup", "500", "--sweeps", "2000",
         "--seed", "3", "--quiet"]
    )  # fmt: skip
    results = run_ising(args)
    exact = exact_finite_lattice(32, beta)
    energy, heat = results["estimates"]["energy"], results["estimates"]["specific_heat"]
    assert results["exact"]["energy"][0] == pytest.approx(exact.energy_per_site)
    assert 0 < energy.error < 0.01  # small enough that the comparison below means something
    assert abs(energy.value - exact.energy_per_site) < 3 * energy.error, (energy, exact.energy_per_site)
    assert 0 < heat.error < 0.1 * exact.specific_heat_per_site
    assert abs(heat.value - exact.specific_heat_per_site) < 4 * heat.error, (heat, exact.specific_heat_per_site)
    assert results["sweeps"] == 2000 and results["warmup"] >= 500
    assert results["spin_flips_per_ns"] > 0


def test_console_script_end_to_end(tmp_path):
    script = Path(sys.executable).with_name("heatbath")
    plot = tmp_path / "tmp.png"
    proc = subprocess.run(
        [str(script), "ising", "--L", "16", "--sweeps", "200", "--plot", str(plot)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for text in ("energy per site", "|m|", "specific heat", "Binder cumulant", "Kaufman", "spin flips/ns"):
        assert text in proc.stdout
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    assert plot.stat().st_size > 10_000


def test_bare_command_runs_ising():
    args = parse_args([])
    assert args.command == "ising"
    assert args.L == 64 and args.beta == BETA_CRITICAL and args.field == 0 and args.J == 1
    assert parse_args(["--L", "8"]).L == 8


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--L", "5", "even integer >= 4"),
        ("--L", "2", "even integer >= 4"),
        ("--L", "many", "even integer >= 4"),
        ("--beta", "0", "positive, finite"),
        ("--beta", "-0.4", "positive, finite"),
        ("--beta", "inf", "positive, finite"),
        ("--chains", "1", "integer >= 2"),
        ("--sweeps", "0", "integer >= 1"),
        ("--warmup", "-1", "integer >= 0"),
        ("--field", "nan", "finite"),
    ],
)
def test_bad_options_are_argparse_errors(option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ising", option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and option in err


def test_jackknife():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=400)
    linear = jackknife(lambda a: a, x)
    assert linear.value == pytest.approx(x.mean())
    assert linear.error == pytest.approx(x.std(ddof=1) / np.sqrt(x.size))
    # Variance from first and second moments: the bias-corrected jackknife gives the unbiased variance.
    var = jackknife(lambda a, b: b - a * a, x, x * x)
    assert var.value == pytest.approx(x.var(ddof=1))
    assert var.error == pytest.approx(4.0 * np.sqrt(2 / x.size), rel=0.2)


def test_chunk_plan():
    assert _chunk_plan(64, 64, 3000, 5000) == (100, 30, 50)
    chunk, warm, measured = _chunk_plan(64, 64, 3000, 333)  # no good common divisor: round up
    assert warm * chunk >= 3000 and measured * chunk >= 333 and chunk >= 10
    assert _chunk_plan(16, 2, 0, 1) == (1, 0, 1)
    # A GPU takes longer chunks: a 4096² lattice with 4 chains runs 25 sweeps per call, not 1.
    assert _chunk_plan(4096, 4, 1000, 1000, "cpu")[0] == 1
    assert _chunk_plan(4096, 4, 1000, 1000, "gpu")[0] == 25
