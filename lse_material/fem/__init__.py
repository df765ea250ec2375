"""The DOLFINx bridge: laws at quadrature points, a Newton driver that refreshes them.

Imported explicitly (``import lse_material.fem``); needs DOLFINx 0.11 (the ``fem`` extra, or
your own DOLFINx from conda/Docker).

- ``QuadratureLaw``: a potential at the quadrature points of a mesh, exposed to UFL as the
  second-order Taylor surrogate of ψ at the current iterate (exact residual and Jacobian).
- ``LawNewtonSolver``: PETSc SNES Newton that updates the laws before every assembly;
  returns a ``NewtonResult`` with the residual history.
"""

from lse_material.fem.newton import LawNewtonSolver, NewtonResult, convergence_orders
from lse_material.fem.quadrature import QuadratureLaw, inputs_to_tensor

__all__ = [
    "LawNewtonSolver",
    "NewtonResult",
    "QuadratureLaw",
    "convergence_orders",
    "inputs_to_tensor",
]
