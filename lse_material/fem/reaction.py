"""Reaction forces: the residual tested with the unit field of a boundary's constrained dofs.

``ReactionForce(residual, u, boundary, component=0)`` compiles once ``R = F(u; w)``, where
``w`` is 1 in ``component`` at the dofs of ``u`` on the boundary facets and 0 elsewhere: at a
converged solution the residual vanishes at the free dofs, so ``R`` is the total force
(per unit thickness in 2-D) that the Dirichlet condition on that boundary exerts, in the
direction of ``component``. Calling it is collective and returns the MPI-reduced float; the
laws in ``residual`` must be current (``LawNewtonSolver.solve`` leaves them so).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import ufl
from mpi4py import MPI

from lse_material.fem._dolfinx import dolfinx

__all__ = ["ReactionForce"]


class ReactionForce:
    """The reaction on a boundary (see the module docstring).

    Args:
        residual: the residual form ``F(u; v)`` (linear in the test function ``v``).
        u: the unknown Function (a vector space, or a scalar one with ``component=None``).
        boundary: a marker ``x (3, n) -> bool (n,)`` of the boundary facets (as for
            ``dolfinx.mesh.locate_entities_boundary``).
        component: the force component (index of the sub-space), or None for a scalar u.
    """

    def __init__(
        self,
        residual: ufl.Form,
        u: dolfinx.fem.Function,
        boundary: Callable[[np.ndarray], np.ndarray],
        *,
        component: int | None = 0,
    ):
        V = u.function_space
        mesh = V.mesh
        fdim = mesh.topology.dim - 1
        facets = dolfinx.mesh.locate_entities_boundary(mesh, fdim, boundary)
        sub = V if component is None else V.sub(component)
        dofs = dolfinx.fem.locate_dofs_topological(sub, fdim, facets)
        self.direction = dolfinx.fem.Function(V, name="reaction_direction")
        self.direction.x.array[dofs] = 1.0
        self.direction.x.scatter_forward()
        (test,) = residual.arguments()
        self._form = dolfinx.fem.form(ufl.replace(residual, {test: self.direction}))
        self._comm = mesh.comm

    def __call__(self) -> float:
        """Collective: the reaction at the current state of ``u`` and the laws."""
        local = dolfinx.fem.assemble_scalar(self._form)
        return float(self._comm.allreduce(local, op=MPI.SUM))
