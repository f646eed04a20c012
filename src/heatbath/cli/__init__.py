"""Command-line front door: `heatbath [COMMAND] [OPTIONS]` (see `heatbath --help`)."""

from heatbath.cli.main import main

__all__ = ["main"]
