"""The DOLFINx bridge: laws at quadrature points, a Newton driver that refreshes them.

Imported explicitly (``import lse_material.fem``); needs DOLFINx 0.11 (the ``fem`` extra, or
your own DOLFINx from conda/Docker).
"""

from lse_material.fem.newton import LawNewtonSolver, NewtonResult
from lse_material.fem.quadrature import QuadratureLaw

__all__ = ["LawNewtonSolver", "NewtonResult", "QuadratureLaw"]
