"""The `heatbath` command line. `heatbath` alone (or options without a command) runs `heatbath ising`."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from heatbath.cli import ising

__all__ = ["build_parser", "parse_args", "main"]

COMMANDS = {"ising": ising}


def build_parser() -> argparse.ArgumentParser:
    from heatbath import __version__

    parser = argparse.ArgumentParser(
        prog="heatbath",
        description="Block Gibbs (heat-bath) sampling of graphical models and energy-based models in JAX.",
        epilog="Without a command, `heatbath` runs `heatbath ising`.",
    )
    parser.add_argument("--version", action="version", version=f"heatbath {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(commands)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line (without the program name); bad options exit with status 2 and a message."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["ising", *argv]
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return COMMANDS[args.command].main(args)


if __name__ == "__main__":
    sys.exit(main())
