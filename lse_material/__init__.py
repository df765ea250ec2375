"""lse-material: multi-well neural free energies (LSE-ICNN) as constitutive laws.

The core imports torch only; the DOLFINx bridge is ``lse_material.fem`` (imported explicitly).
"""

from lse_material.potential import AnalyticPotential, EnergyDerivatives, Potential

__version__ = "0.1.0"
__all__ = ["AnalyticPotential", "EnergyDerivatives", "Potential", "__version__"]
