"""Newton's method (PETSc SNES) with laws refreshed before every residual and Jacobian assembly.

``LawNewtonSolver`` is ``dolfinx.fem.petsc.NonlinearProblem`` with its two SNES callbacks
wrapped: before DOLFINx assembles ``F`` or ``J`` at an iterate ``x``, the iterate is copied
into ``u`` and every law's ``update()`` runs (once per distinct ``x``). The problem object
stays available as ``solver.problem`` (its ``solver`` attribute is the SNES).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from mpi4py import MPI

from lse_material.fem._dolfinx import dolfinx

__all__ = ["LawNewtonSolver", "NewtonResult", "convergence_orders"]


def convergence_orders(residual_norms: Sequence[float]) -> list[float]:
    """Estimated orders ``log(r_{k+1}/r_k) / log(r_k/r_{k-1})`` of a residual history.

    One value per triple of consecutive norms (2 for quadratic, 1 for linear convergence).
    """
    r = [float(v) for v in residual_norms]
    orders = []
    for a, b, c in zip(r, r[1:], r[2:]):
        if min(a, b, c) <= 0 or a == b:
            orders.append(math.nan)
        else:
            orders.append(math.log(c / b) / math.log(b / a))
    return orders


class NewtonResult(NamedTuple):
    """converged; iterations; residual_norms (‖F‖ per iteration, from iteration 0); reason
    (SNES converged reason, > 0 converged); seconds (wall time of the solve)."""

    converged: bool
    iterations: int
    residual_norms: list[float]
    reason: int
    seconds: float

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations, 1)

    @property
    def convergence_orders(self) -> list[float]:
        """See ``convergence_orders`` (module function)."""
        return convergence_orders(self.residual_norms)


class LawNewtonSolver:
    """Solve ``F(u) = 0`` with SNES, calling ``law.update()`` for every law whenever ``u`` changes.

    Args:
        F: residual form (or a list of forms for a blocked problem); u: the unknown
            Function(s); laws: objects with ``update()`` (QuadratureLaws) whose inputs depend
            on u.
        J: Jacobian form (default ``derivative(F, u)``); bcs: Dirichlet conditions.
        petsc_options: SNES/KSP options, merged over ``DEFAULT_OPTIONS`` (Newton with
            backtracking line search, direct LU with MUMPS).
        prefix: PETSc options prefix (unique per solver).
        **problem_options: passed on to ``dolfinx.fem.petsc.NonlinearProblem`` (``kind``,
            ``P``, ``entity_maps``, ...).

    An exception in a law (non-finite values) stops the solve and is re-raised as itself from
    ``solve()``, not as a PETSc error code. The training-box check of laws that have one
    (``check_training_box``) runs once, after a converged solve, on the converged state:
    Newton's trial iterates may pass outside the box on the way.
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
        **problem_options,
    ):
        options = dict(self.DEFAULT_OPTIONS)
        options.update(petsc_options or {})
        self.u, self.laws = u, list(laws)
        for law in self.laws:
            if not callable(getattr(law, "update", None)):
                raise TypeError(f"laws must have an update() method; got {type(law).__name__}.")
        self.problem = dolfinx.fem.petsc.NonlinearProblem(
            F,
            u,
            J=J,
            bcs=list(bcs),
            petsc_options=options,
            petsc_options_prefix=prefix,
            **problem_options,
        )
        snes = self.problem.solver
        b, (assemble_f, f_args, f_kwargs) = snes.getFunction()
        A, P, (assemble_j, j_args, j_kwargs) = snes.getJacobian()

        def function(snes_, x, b_):
            self._refresh(x)
            assemble_f(snes_, x, b_, *f_args, **f_kwargs)

        def jacobian(snes_, x, A_, P_):
            self._refresh(x)
            assemble_j(snes_, x, A_, P_, *j_args, **j_kwargs)

        snes.setFunction(function, b)
        snes.setJacobian(jacobian, A, P)
        self._last_x: np.ndarray | None = None
        self._error: BaseException | None = None
        self.residual_norms: list[float] = []
        snes.setMonitor(lambda _snes, _it, norm: self.residual_norms.append(float(norm)))

    @property
    def comm(self):
        return self.problem.A.comm.tompi4py()

    def _refresh(self, x) -> None:
        """Copy x into u and update the laws, unless x is the iterate of the last update."""
        try:
            current = x.getArray(readonly=True)
            same = self._last_x is not None and np.array_equal(self._last_x, current)
            if self.comm.allreduce(same, op=MPI.LAND):  # a collective decision
                return
            self._last_x = None
            dolfinx.fem.petsc.assign(x, self.u)
            for function in self.u if isinstance(self.u, Sequence) else [self.u]:
                function.x.scatter_forward()
            for law in self.laws:
                if hasattr(law, "check_training_box"):  # checked on the converged state only
                    law.update(check_box=False)
                else:
                    law.update()
            self._last_x = current.copy()
        except Exception as error:  # handed to solve(), which re-raises it as itself
            self._error = error
            raise

    def solve(self) -> NewtonResult:
        """Run Newton from the current ``u``; ``u`` holds the result (also on failure: revert it yourself)."""
        self.residual_norms = []
        self._last_x, self._error = None, None
        t0 = time.perf_counter()
        try:
            self.problem.solve()
        except Exception as petsc_error:
            if self._error is not None:
                raise self._error from petsc_error
            raise
        seconds = time.perf_counter() - t0
        snes = self.problem.solver
        reason = snes.getConvergedReason()
        if reason > 0:  # trial iterates may wander outside the training box; the result may not
            for law in self.laws:
                if hasattr(law, "check_training_box"):
                    law.check_training_box()
        return NewtonResult(
            reason > 0, snes.getIterationNumber(), list(self.residual_norms), reason, seconds
        )
