"""Newton's method (PETSc SNES) with laws refreshed before every residual and Jacobian assembly.

``LawNewtonSolver`` is ``dolfinx.fem.petsc.NonlinearProblem`` with its two SNES callbacks
wrapped: before DOLFINx assembles ``F`` or ``J`` at an iterate ``x``, the iterate is copied
into ``u`` and every law's ``update(check_box=False)`` runs (once per distinct ``x``). The
laws follow ``lse_material.fem.protocol.Law``. The problem object stays available as
``solver.problem`` (its ``solver`` attribute is the SNES).

``solve_with_cuts`` is the step every time-stepping case shares: save the unknowns, solve,
and on failure restore them, ``revert()`` the laws and retry with half the step; on success
``commit()`` the laws.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import ufl
from mpi4py import MPI
from petsc4py import PETSc  # lse_material.fem imports dolfinx_solver first

from lse_material.fem._dolfinx import dolfinx
from lse_material.fem.protocol import check_laws
from lse_material.fem.solvers import SolverPreset

__all__ = [
    "CutSolve",
    "LawNewtonSolver",
    "NewtonResult",
    "SolveTimings",
    "convergence_orders",
    "solve_with_cuts",
]


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


class SolveTimings(NamedTuple):
    """Wall seconds of one solve by part, summed over its iterations: law_update (the laws'
    ``update()``), residual_assembly and jacobian_assembly (DOLFINx, coefficient packing
    included), other (the rest of the solve: the linear solves, the line search, PETSc)."""

    law_update: float
    residual_assembly: float
    jacobian_assembly: float
    other: float


class NewtonResult(NamedTuple):
    """converged; iterations; residual_norms (‖F‖ per iteration, from iteration 0); reason
    (SNES converged reason, > 0 converged); seconds (wall time of the solve);
    linear_iterations (Krylov iterations summed over the Newton iterations; a direct solve,
    ``preonly``, counts 1 per Newton iteration); timings (``SolveTimings``, the seconds by
    part)."""

    converged: bool
    iterations: int
    residual_norms: list[float]
    reason: int
    seconds: float
    linear_iterations: int = 0
    timings: SolveTimings | None = None

    @property
    def krylov_per_newton(self) -> float:
        """Krylov iterations per Newton iteration (0 when Newton took no iteration)."""
        return self.linear_iterations / self.iterations if self.iterations else 0.0

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations, 1)

    @property
    def convergence_orders(self) -> list[float]:
        """See ``convergence_orders`` (module function)."""
        return convergence_orders(self.residual_norms)


# The relative rounding of an assembled energy below which its changes are not trusted by the
# energy line search [ours]: about 4500 machine epsilons, for the sum over quadrature points.
ENERGY_ROUNDING = 1e-12


class LawNewtonSolver:
    """Solve ``F(u) = 0`` with SNES, calling ``law.update()`` for every law whenever ``u`` changes.

    Args:
        F: residual form (or a list of forms for a blocked problem); u: the unknown
            Function(s); laws: laws (``lse_material.fem.protocol.Law``: QuadratureLaw,
            QuadratureStateLaw) whose inputs depend on u.
        J: Jacobian form (default ``derivative(F, u)``); bcs: Dirichlet conditions. F, J
            and energy are assembled with the laws' increments set to zero (``at_iterate``),
            as they are where the solver assembles them.
        energy: the total energy (a UFL scalar form whose derivative is F), or None. Given,
            it is SNES's objective (``setObjective``, evaluated with the laws refreshed at the
            trial point), so the backtracking line search decreases the energy instead of
            ‖F‖: it cannot climb out of a well. Only for F that is an energy's gradient.
            Near convergence the energy decrease of a Newton step (∝ ‖F‖²) falls below the
            rounding of the assembled energy, and backtracking on it would stall; once the
            predicted decrease ``|ΔE_last|·(‖F_k‖/‖F_k-1‖)²`` is below
            ``ENERGY_ROUNDING·|E|`` [ours], the solve's remaining steps are full Newton steps
            (line search ``basic``).
        petsc_options: SNES/KSP options, merged over ``DEFAULT_OPTIONS`` (Newton with
            backtracking line search, direct LU with MUMPS) and the preset's; with another
            ``snes_type`` the default line search is left out (PETSc would warn that it is
            unused).
        preset: a linear-solver preset (``lse_material.fem.solvers.solver_preset``: its
            options, then its ``configure(problem)`` for index sets and near-nullspaces);
            None: the defaults (MUMPS).
        prefix: PETSc options prefix (unique per solver).
        **problem_options: passed on to ``dolfinx.fem.petsc.NonlinearProblem`` (``kind``,
            ``P``, ``entity_maps``, ...).

    An exception in a law (non-finite values) stops the solve and is re-raised as itself from
    ``solve()``, not as a PETSc error code. The training-box check of laws that have one
    (``check_training_box``) runs once, after a converged solve, on the converged state:
    Newton's trial iterates may pass outside the box on the way. After ``solve()`` the laws
    hold the trial at the returned ``u``.
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
        energy=None,
        petsc_options: dict | None = None,
        preset: SolverPreset | None = None,
        prefix: str = "lse_newton_",
        **problem_options,
    ):
        user = dict(petsc_options or {})
        options = dict(self.DEFAULT_OPTIONS)
        if user.get("snes_type", "newtonls") != "newtonls":
            del options["snes_linesearch_type"]  # only newtonls has a line search
        options.update(preset.options if preset is not None else {})
        options.update(user)
        self.petsc_options, self.prefix = options, prefix
        self.u, self.laws = u, check_laws(laws)
        for law in self.laws:
            law.check_fixed(u)
        if J is None:
            J = dolfinx.fem.forms.derivative_block(F, u)
        try:
            self.problem = dolfinx.fem.petsc.NonlinearProblem(
                at_iterate(F, self.laws),
                u,
                J=at_iterate(J, self.laws),
                bcs=list(bcs),
                petsc_options=options,
                petsc_options_prefix=prefix,
                **problem_options,
            )
        except PETSc.Error as error:  # an unknown type name, a value PETSc cannot parse
            PETSc.Options().prefixPop()  # NonlinearProblem pushed its prefix and left it
            _remove_options(options, prefix)
            reason = re.sub(r"^\[\d+\]\s*", "", str(error).strip().splitlines()[-1])
            raise ValueError(
                f"PETSc refused the solver options {user or options}: {reason}; check the "
                "--petsc KEY=VALUE items (type names, numbers) and the preset."
            ) from error
        _remove_options(options, prefix)  # NonlinearProblem's own tidy-up misses the prefix
        if preset is not None and preset.configure is not None:
            preset.configure(self.problem)
        snes = self.problem.solver
        b, self._dolfinx_residual = snes.getFunction()  # (function, args, kwargs)
        A, P, self._dolfinx_jacobian = snes.getJacobian()
        # PETSc holds the callbacks where Python's garbage collector cannot see them, so the
        # solver is freed only by ``close()`` (see there)
        snes.setFunction(self._snes_function, b)
        snes.setJacobian(self._snes_jacobian, A, P)
        self._last_x: np.ndarray | None = None
        self._error: BaseException | None = None
        self._seconds = dict.fromkeys(SolveTimings._fields[:3], 0.0)
        self.residual_norms: list[float] = []
        self._line_search = options.get("snes_linesearch_type") if energy is not None else None
        self._energies: list[float] = []  # the energy at each iterate (with an energy objective)
        snes.setMonitor(self._snes_monitor)
        self._objective_at = None
        self._closed = False
        if energy is not None:
            self._energy_form = dolfinx.fem.form(at_iterate(energy, self.laws))  # laws at x
            snes.setObjective(self._snes_objective)

    def _snes_function(self, snes, x, b) -> None:
        """SNES's residual: the laws refreshed at x, then DOLFINx's assembly."""
        assemble, args, kwargs = self._dolfinx_residual
        self._refresh(x)
        with self._timed("residual_assembly"):
            assemble(snes, x, b, *args, **kwargs)

    def _snes_jacobian(self, snes, x, A, P) -> None:
        """SNES's Jacobian: the laws refreshed at x, then DOLFINx's assembly."""
        assemble, args, kwargs = self._dolfinx_jacobian
        self._refresh(x)
        with self._timed("jacobian_assembly"):
            assemble(snes, x, A, P, *args, **kwargs)

    def _snes_monitor(self, snes, _it, norm) -> None:
        self.residual_norms.append(float(norm))
        if self._line_search is not None:
            self._finish_in_full_steps_below_rounding(snes)

    def _snes_objective(self, _snes, x) -> float:
        """The total energy at x (collective), the laws refreshed there."""
        # PETSc asks again at the accepted point of the last line search: reuse it
        current, known = x.getArray(readonly=True), self._objective_at
        same = known is not None and np.array_equal(known[0], current)
        if self.comm.allreduce(same, op=MPI.LAND):
            return known[1]
        self._refresh(x)
        x.ghostUpdate(addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)
        dolfinx.fem.petsc.assign(x, self.u)
        local = dolfinx.fem.assemble_scalar(self._energy_form)
        value = self.comm.allreduce(local, op=MPI.SUM)
        self._objective_at = (current.copy(), value)
        return value

    def _finish_in_full_steps_below_rounding(self, snes) -> None:
        """At an iterate (from the monitor): switch the line search to full steps when the
        next step's predicted energy decrease is below the energy's rounding (collective).
        The energy at the iterate is the value the line search asks for there anyway (cached)."""
        line_search = snes.getLineSearch()
        if line_search.getType() == "basic":  # switched already: no more energies needed
            return
        self._energies.append(self._snes_objective(snes, snes.getSolution()))
        if len(self._energies) < 2 or self.residual_norms[-2] == 0:
            return
        last_decrease = abs(self._energies[-2] - self._energies[-1])
        predicted = last_decrease * (self.residual_norms[-1] / self.residual_norms[-2]) ** 2
        if predicted <= ENERGY_ROUNDING * abs(self._energies[-1]):
            line_search.setType("basic")

    @property
    def comm(self):
        return self.problem.A.comm.tompi4py()

    def close(self) -> None:
        """Destroy the PETSc objects (the SNES with its KSP and factorization, the matrices
        and vectors). Collective: call it on every rank at the same point.

        Without it a solver is never freed: PETSc holds its callbacks, and they hold the
        solver, a cycle Python's garbage collector cannot see; a loop of a few hundred
        solvers in one process then runs MPI out of communicators. Freeing it from the
        garbage collector instead (weak callbacks, reverted in d45e477) ran the collective
        destroys at different moments on different ranks and hung a 2-rank run. After
        ``close()`` the cycle is broken and Python frees the rest. ``with LawNewtonSolver(...)
        as solver:`` closes it at the end of the block, unless the block raised (a rank with an
        error must not enter a collective the others may never reach).
        """
        if self._closed:
            return
        self._closed = True
        p = self.problem
        for obj in (p.solver, p.A, p.b, p.x, p.P_mat):
            if obj is not None:
                obj.destroy()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this solver was closed (close()); build a new one to solve again.")

    def __enter__(self):
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.close()

    @contextlib.contextmanager
    def _timed(self, part: str):
        """Add the wall time of the block to ``part`` of this solve's timings."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[part] += time.perf_counter() - t0

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
            for law in self.laws:  # the training box: checked on the converged state only
                with self._timed("law_update"):
                    law.update(check_box=False)
            self._last_x = current.copy()
        except Exception as error:  # handed to solve(), which re-raises it as itself
            self._error = error
            raise

    def solve(self) -> NewtonResult:
        """Run Newton from the current ``u``; ``u`` holds the result (also on failure: revert it yourself)."""
        self._check_open()
        self.residual_norms = []
        self._last_x, self._error = None, None
        self._objective_at = None  # (x, energy) of the last objective call; a solve starts afresh
        self._energies = []
        self._seconds = dict.fromkeys(self._seconds, 0.0)
        t0 = time.perf_counter()
        try:
            with _options_in_database(self.petsc_options, self.prefix):
                line_search = self.problem.solver.getLineSearch()
                if self._line_search is not None and line_search.getType() != self._line_search:
                    line_search.setType(self._line_search)  # the last solve finished in full steps
                    line_search.setFromOptions()
                self.problem.solve()
        except Exception as petsc_error:
            if self._error is not None:
                raise self._error from petsc_error
            raise
        seconds = time.perf_counter() - t0
        timings = SolveTimings(**self._seconds, other=seconds - sum(self._seconds.values()))
        snes = self.problem.solver
        reason = snes.getConvergedReason()
        if reason > 0:  # trial iterates may wander outside the training box; the result may not
            self._refresh(self.problem.x)  # the laws at the returned u (a no-op when they are)
            for law in self.laws:
                law.check_training_box()
        return NewtonResult(
            reason > 0,
            snes.getIterationNumber(),
            list(self.residual_norms),
            reason,
            seconds,
            snes.getLinearSolveIterations(),
            timings,
        )


def at_iterate(forms, laws: Sequence):
    """``forms`` (a form, a list, or a list of lists; None kept) with every law's
    ``increments()`` set to zero.

    An increment (inputs - inputs at the law's last update) is zero where ``LawNewtonSolver``
    assembles F and J: right after the update at the same iterate. So F and J there are the
    same (to rounding) without it, and their assembly skips reading and multiplying the
    tangent in F, and in J the term (H·increment)·∂²x/∂u² that second derivatives of the
    inputs bring (finite strain). J keeps H·∂x/∂u[du]·∂x/∂u[v], the increment differentiated.
    A form that would become empty is kept as it is.
    """
    zeros = {e: ufl.zero(*e.ufl_shape) for law in laws for e in law.increments()}
    if not zeros or forms is None:
        return forms
    if isinstance(forms, Sequence):
        return [at_iterate(form, laws) for form in forms]
    reduced = ufl.replace(forms, zeros)
    return forms if reduced.empty() else reduced


@contextlib.contextmanager
def _options_in_database(options: dict, prefix: str):
    """The solver's options in PETSc's options database (under its prefix) while it solves.

    They are out of it otherwise (no leftovers reported at exit, no leaks between solvers),
    but solvers created at the first set-up (fieldsplit blocks, their AMG) read theirs then.
    """
    database = PETSc.Options()
    for key, value in options.items():
        database[prefix + key] = value
    try:
        yield
    finally:
        _remove_options(options, prefix)


def _remove_options(options: dict, prefix: str) -> None:
    database = PETSc.Options()
    for key in options:
        database.delValue(prefix + key)


class CutSolve(NamedTuple):
    """result: the converged NewtonResult; size: the step size it converged with; cuts: how
    many times the step was halved (failed solves) before that."""

    result: NewtonResult
    size: float
    cuts: int


def solve_with_cuts(
    solver: LawNewtonSolver,
    prepare: Callable[[float], None],
    size: float,
    *,
    max_cuts: int,
    what: str = "step",
) -> CutSolve:
    """One step of size ``size``, halved and retried until Newton converges.

    ``prepare(size)`` sets up a trial of that size from the saved state (boundary values, Δt,
    a predictor); it runs after the unknowns are restored. On a failed solve the unknowns are
    restored and every law ``revert()``-ed (the failed trial leaves no trace); after a
    converged one every law is ``commit()``-ed. Raises RuntimeError after ``max_cuts`` cuts.
    Collective (every rank cuts together: convergence is a global decision of SNES).
    """
    unknowns = solver.u if isinstance(solver.u, Sequence) else [solver.u]
    saved = [u.x.array.copy() for u in unknowns]
    for cuts in range(max_cuts + 1):
        prepare(size)
        result = solver.solve()
        if result.converged:
            for law in solver.laws:
                law.commit()
            return CutSolve(result, size, cuts)
        for law in solver.laws:
            law.revert()
        for u, values in zip(unknowns, saved):
            u.x.array[:] = values
            u.x.scatter_forward()
        size /= 2
    raise RuntimeError(
        f"{what}: Newton failed with the step cut {max_cuts} times (last size {2 * size:.3g}, "
        f"SNES reason {result.reason}); reduce the step or check the law."
    )
