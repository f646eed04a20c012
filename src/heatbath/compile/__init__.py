"""Program compilation: turn a Gibbs spec and interaction groups into static gather tables."""

from heatbath.compile.gather_tables import BlockGather, GatherTables, compile_gather_tables

__all__ = ["BlockGather", "GatherTables", "compile_gather_tables"]
