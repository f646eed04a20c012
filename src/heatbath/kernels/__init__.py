"""Fast sampling kernels for special structures: batch-minor layout, fused updates, cheap counter-based bits."""

from heatbath.kernels.checkerboard import (
    LatticeIsingState,
    Measurements,
    energy_per_site,
    init_lattice,
    magnetization_per_site,
    run_lattice,
    sweep,
)
from heatbath.kernels.batched import sample_states_batched, supports_batched
from heatbath.kernels.potts_lattice import (
    PottsLatticeState,
    init_potts_lattice,
    potts_energy_per_site,
    run_potts_lattice,
)
from heatbath.kernels.counter_rng import key_words, random_bits, threefry2x32

__all__ = [
    "sample_states_batched",
    "supports_batched",
    "LatticeIsingState",
    "Measurements",
    "init_lattice",
    "sweep",
    "run_lattice",
    "energy_per_site",
    "magnetization_per_site",
    "PottsLatticeState",
    "init_potts_lattice",
    "run_potts_lattice",
    "potts_energy_per_site",
    "random_bits",
    "key_words",
    "threefry2x32",
]
