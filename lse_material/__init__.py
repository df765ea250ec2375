"""lse-material: multi-well neural free energies (LSE-ICNN) as constitutive laws.

The core imports torch only; the DOLFINx bridge is ``lse_material.fem`` (imported explicitly).
"""

from lse_material.icnn import ICNNStack
from lse_material.lse import ACTIVE_GATE_THRESHOLD, LSEICNN
from lse_material.modelfile import ModelFileError, load, read_metadata, save
from lse_material.potential import AnalyticPotential, EnergyDerivatives, Potential

__version__ = "0.1.0"
__all__ = [
    "ACTIVE_GATE_THRESHOLD",
    "AnalyticPotential",
    "EnergyDerivatives",
    "ICNNStack",
    "LSEICNN",
    "ModelFileError",
    "Potential",
    "__version__",
    "load",
    "read_metadata",
    "save",
]
