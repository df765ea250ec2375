"""Newton's method (PETSc SNES) with laws refreshed before every residual and Jacobian assembly."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from lse_material.fem._dolfinx import dolfinx

__all__ = ["LawNewtonSolver", "NewtonResult"]


class NewtonResult(NamedTuple):
    """converged; iterations; residual_norms (‖F‖ per iteration, from 0); reason (SNES code);
    seconds (wall time of the solve)."""

    converged: bool
    iterations: int
    residual_norms: list[float]
    reason: int
    seconds: float


class LawNewtonSolver:
    """Solve ``F(u) = 0`` with SNES, calling ``law.update()`` for every law whenever ``u`` changes.

    Args:
        F: residual form; u: the unknown Function; laws: QuadratureLaws whose inputs depend on u.
        J: Jacobian form (default ``derivative(F, u)``); bcs: Dirichlet conditions.
        petsc_options: SNES/KSP options (default: Newton with backtracking line search, LU).
        prefix: PETSc options prefix (unique per solver).
    """

    DEFAULT_OPTIONS = {
        "snes_type": "newtonls",
        "snes_linesearch_type": "bt",
        "snes_rtol": 1e-10,
        "snes_atol": 1e-10,
        "snes_stol": 0.0,
        "snes_max_it": 25,
        "ksp_type": "preonly",
        "pc_type": "lu",
        "pc_factor_mat_solver_type": "mumps",
    }

    def __init__(
        self,
        F,
        u,
        laws: Sequence,
        *,
        J=None,
        bcs=(),
        petsc_options: dict | None = None,
        prefix: str = "lse_newton_",
    ):
        options = dict(self.DEFAULT_OPTIONS)
        options.update(petsc_options or {})
        self.u, self.laws = u, list(laws)
        self.problem = dolfinx.fem.petsc.NonlinearProblem(
            F, u, J=J, bcs=list(bcs), petsc_options=options, petsc_options_prefix=prefix
        )
        snes = self.problem.solver
        from dolfinx.fem.petsc import assemble_jacobian, assemble_residual

        self._last_x = None
        fctx = {"u": u, "residual": self.problem.F, "jacobian": self.problem.J, "bcs": list(bcs)}
        jctx = {
            "u": u,
            "jacobian": self.problem.J,
            "preconditioner": self.problem.preconditioner,
            "bcs": list(bcs),
        }

        def function(snes_, x, b):
            self._refresh(x)
            assemble_residual(snes_, x, b, **fctx)

        def jacobian(snes_, x, A, P):
            self._refresh(x)
            assemble_jacobian(snes_, x, A, P, **jctx)

        snes.setFunction(function, self.problem.b)
        snes.setJacobian(jacobian, self.problem.A, self.problem.P_mat)
        self.residual_norms: list[float] = []
        snes.setMonitor(lambda _snes, _it, norm: self.residual_norms.append(float(norm)))

    def _refresh(self, x) -> None:
        """Copy x into u and update the laws, unless x is the state of the last update."""
        current = x.getArray(readonly=True)
        same = (
            self._last_x is not None
            and self._last_x.shape == current.shape
            and np.array_equal(self._last_x, current)
        )
        if self.u.function_space.mesh.comm.allreduce(same, op=_mpi_land()):  # collective decision
            return
        dolfinx.fem.petsc.assign(x, self.u)
        self.u.x.scatter_forward()
        for law in self.laws:
            law.update()
        self._last_x = current.copy()

    def solve(self) -> NewtonResult:
        """Run Newton from the current ``u``; ``u`` holds the result (also on failure: revert it yourself)."""
        self.residual_norms = []
        self._last_x = None
        t0 = time.perf_counter()
        self.problem.solve()
        seconds = time.perf_counter() - t0
        snes = self.problem.solver
        reason = snes.getConvergedReason()
        return NewtonResult(
            reason > 0, snes.getIterationNumber(), list(self.residual_norms), reason, seconds
        )


def _mpi_land():
    from mpi4py import MPI

    return MPI.LAND
