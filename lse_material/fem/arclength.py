"""Arc-length continuation (PETSc ``SNESNEWTONAL``) with laws refreshed at every iterate.

``ArcLengthSolver`` is a ``LawNewtonSolver`` whose SNES is ``newtonal``: the same residual and
Jacobian callbacks (every law ``update()``-d whenever the iterate changes, ``_refresh``), plus
PETSc's tangent-load callback. The load parameter Λ enters the problem in two ways, both
linear: a scalar ``dolfinx.fem.Constant`` ``load`` that the residual form uses (a traction
``Λ t̄``), and Dirichlet values ``g = Λ ū`` (``scaled=[(g, ū), ...]``: displacement control).
PETSc needs ``Q = -∂F/∂Λ``; since ``F`` is affine in Λ at fixed ``x`` it is computed exactly as
``F(x, Λ) - F(x, Λ + 1)`` (two assemblies, the laws refreshed once). For Dirichlet values this
includes DOLFINx's lifting, so ``J⁻¹Q`` is the exact tangent ``du/dΛ``.

One ``SNESSolve`` is one continuation step (``snes_newtonal_max_continuation_steps 1``); the
driver (``trace``) chains them. PETSc restarts its λ at 0 in every solve, so the driver keeps
the base load Λ₀ of the step and a direction σ = ±1, and the problem sees Λ = Λ₀ + σλ:

- σ follows the path through limit points: the sign of ``ΔX_prev·(J⁻¹Q) + ψ²ΔΛ_prev`` at the
  new point (PETSc's own predictor rule between increments, which it cannot apply across
  separate solves);
- the step is the arc length ``√(‖ΔX‖² + ψ²Δλ²)`` (``psisq`` = ψ², 0: cylindrical, the
  default [ours]) in units of the first predictor's, so ``step`` is the first step's ΔΛ;
- it grows ×``grow`` after a step that converged in ≤ ``easy_iterations`` Newton iterations
  and is cut ×½ and retried from the saved state (laws reverted) when a step fails.

Pitfalls handled (PETSc's manual page of SNESNEWTONAL and its source): the SNES type is set in
code before ``setNewtonALFunction`` (a later type change from the options database would drop
the callback); the correction type is set explicitly (``exact``: Ritto-Corrêa & Camotim's
quadratic constraint with partial corrections; ``normal``: Leon et al.'s); callbacks use the
vector they are given (PETSc may pass work vectors). The convergence test is the driver's own
(‖F‖ ≤ atol or ≤ rtol·‖F₀‖), because a converged single-increment solve ends with
``SNES_DIVERGED_MAX_IT`` in PETSc's bookkeeping.

Stability at every converged point, from the tangent K (Dirichlet rows and columns replaced by
the identity): the number of negative eigenvalues (the inertia of MUMPS' LDLᵀ factorization,
``INFOG(12)``; exact by Sylvester's law) and the smallest eigenvalue ω of ``K φ = ω M φ`` with
M the L² mass matrix of the unknowns (zero on the Dirichlet dofs), by SLEPc shift-and-invert
around 0 [ours: the mass matrix makes ω a mesh-independent curvature of the energy per unit
‖φ‖²_L2]. A change of the negative count between two points is a critical point: a *limit
point* where the load also turns back there (Λ extremal), a *bifurcation* otherwise; its load
and measure are interpolated linearly in ω.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import ufl
from mpi4py import MPI
from petsc4py import PETSc  # lse_material.fem imports dolfinx_solver first
from slepc4py import SLEPc

from lse_material.fem._dolfinx import dolfinx
from lse_material.fem.newton import LawNewtonSolver, NewtonResult

__all__ = ["ArcLengthPath", "ArcLengthPoint", "ArcLengthSolver", "CriticalPoint", "Stability"]

_BIG = 1e300  # PETSc's λ bounds when the driver does not clamp


class Stability(NamedTuple):
    """negative: eigenvalues of K below 0 (inertia); min_eigenvalue: smallest ω of K φ = ω M φ."""

    negative: int
    min_eigenvalue: float


class ArcLengthPoint(NamedTuple):
    """A converged point of the path.

    load: Λ; measure: the solver's ``measure()`` (e.g. a reaction force; NaN without one);
    energy: the ``energy`` form (NaN without one); min_eigenvalue, negative_eigenvalues: see
    ``Stability``; iterations: Newton iterations of the step (0 for the start); step: the arc
    length it converged with (units of the first predictor); direction: σ of the step; cuts:
    the failed tries (cut and retried) before it.
    """

    load: float
    measure: float
    energy: float
    min_eigenvalue: float
    negative_eigenvalues: int
    iterations: int
    step: float
    direction: int
    cuts: int = 0


class CriticalPoint(NamedTuple):
    """kind: "limit" or "bifurcation"; index: the first path point after the sign change; load,
    measure: interpolated linearly in the smallest eigenvalue between the two points."""

    kind: Literal["limit", "bifurcation"]
    index: int
    load: float
    measure: float


class ArcLengthPath(NamedTuple):
    """points (the start first); critical_points; failed_steps (cut and retried); reached_end
    (the load reached ``end``); stopped: why not ("" when it did: ``max_steps``, ``bounds``,
    or a step that failed at the smallest size)."""

    points: list[ArcLengthPoint]
    critical_points: list[CriticalPoint]
    failed_steps: int
    reached_end: bool
    stopped: str

    def column(self, name: str) -> list:
        """One field of every point, e.g. ``path.column("load")``."""
        return [getattr(p, name) for p in self.points]


class ArcLengthSolver(LawNewtonSolver):
    """Arc-length continuation of ``F(u; Λ) = 0`` (see the module docstring).

    Args:
        F, u, laws, J, bcs, prefix, **problem_options: as ``LawNewtonSolver`` (one Function u).
        load: a scalar ``dolfinx.fem.Constant`` holding Λ (used by F for tractions, or only
            carried when the load is a prescribed displacement).
        scaled: pairs ``(g, unit)`` of Functions: the Dirichlet value ``g`` (in ``bcs``) is set
            to ``Λ·unit`` before every assembly.
        energy: a UFL scalar form, recorded at every converged point (e.g. ∫ψ dx).
        measure: a collective callable (e.g. a ``ReactionForce``), recorded at every point.
        psisq: ψ² of the constraint (0: cylindrical arc length).
        correction: ``"exact"`` or ``"normal"`` (set explicitly, see the module docstring).
        petsc_options: merged over ``ARC_LENGTH_OPTIONS`` (Newton tolerances, MUMPS).
    """

    ARC_LENGTH_OPTIONS = {  # over LawNewtonSolver.DEFAULT_OPTIONS
        "snes_type": "newtonal",
        "snes_rtol": 1e-9,
        "snes_atol": 1e-10,
        "snes_max_it": 15,
        "snes_newtonal_max_continuation_steps": 1,
    }  # the linear solver (MUMPS LU) is LawNewtonSolver's

    def __init__(
        self,
        F,
        u,
        laws: Sequence,
        *,
        load: dolfinx.fem.Constant,
        scaled: Sequence[tuple[dolfinx.fem.Function, dolfinx.fem.Function]] = (),
        J=None,
        bcs=(),
        energy: ufl.Form | None = None,
        measure: Callable[[], float] | None = None,
        psisq: float = 0.0,
        correction: Literal["exact", "normal"] = "exact",
        petsc_options: dict | None = None,
        prefix: str = "lse_arclength_",
        **problem_options,
    ):
        if isinstance(u, Sequence):
            raise TypeError("ArcLengthSolver takes one unknown Function u (not a block list).")
        if not isinstance(load, dolfinx.fem.Constant) or np.asarray(load.value).shape != ():
            raise TypeError(f"load must be a scalar dolfinx.fem.Constant; got {load!r}.")
        if correction not in ("exact", "normal"):
            raise ValueError(f"correction must be 'exact' or 'normal'; got {correction!r}.")
        if not (math.isfinite(psisq) and psisq >= 0):
            raise ValueError(f"psisq must be finite and >= 0; got {psisq}.")
        options = dict(self.ARC_LENGTH_OPTIONS) | dict(petsc_options or {})
        if options["snes_type"] != "newtonal":
            raise ValueError(
                f"ArcLengthSolver needs snes_type newtonal; got {options['snes_type']!r}."
            )
        options |= {"snes_newtonal_psisq": psisq, "snes_newtonal_max_continuation_steps": 1}
        super().__init__(
            F, u, laws, J=J, bcs=bcs, petsc_options=options, prefix=prefix, **problem_options
        )
        self.load, self.psisq, self.prefix = load, float(psisq), prefix
        self._scaled = [(g, unit.x.array.copy()) for g, unit in scaled]
        self._energy = None if energy is None else dolfinx.fem.form(energy)
        self._measure = measure
        self._base, self._sign = float(load.value), 1
        self._converged, self._calls = False, 0
        self._rtol, self._atol = float(options["snes_rtol"]), float(options["snes_atol"])
        self._max_it = int(options["snes_max_it"])

        snes = self.problem.solver
        snes.setType(PETSc.SNES.Type.NEWTONAL)  # in code, before the AL function (see above)
        b, (law_function, _, _) = snes.getFunction()
        self._assemble = law_function  # LawNewtonSolver's: laws refreshed, then DOLFINx assembly
        snes.setFunction(self._al_function, b)
        snes.setNewtonALFunction(self._tangent_load)
        kind = PETSc.SNES.NewtonALCorrectionType
        self._correction = kind.EXACT if correction == "exact" else kind.NORMAL
        snes.setNewtonALCorrectionType(self._correction)
        snes.setConvergenceTest(self._convergence_test)
        self._work = b.duplicate()
        self._mass = self._mass_matrix(bcs)
        self._factor_ksp = self._ksp("cholesky", self.A)

    def close(self) -> None:
        """LawNewtonSolver's, and the stability measures' factorization and mass matrix."""
        if not self._closed:
            for obj in (self._factor_ksp, self._mass, self._work):
                obj.destroy()
        super().close()

    # ----------------------------------------------------------------- load and callbacks
    @property
    def A(self) -> PETSc.Mat:
        return self.problem.A

    @property
    def load_value(self) -> float:
        """The current Λ (at the last converged point, or as set by ``set_load``)."""
        return float(self.load.value)

    def set_load(self, value: float) -> None:
        """Set Λ (the Constant and the scaled Dirichlet values) for the start of a path."""
        self._base, self._sign = float(value), 1
        self._apply(float(value))

    def _apply(self, value: float) -> None:
        self.load.value = value
        for g, unit in self._scaled:
            g.x.array[:] = value * unit

    def _al_function(self, snes, x, b) -> None:
        """SNES's residual at Λ = Λ₀ + σλ (λ: PETSc's load parameter of the step)."""
        self._apply(self._base + self._sign * snes.getNewtonALLoadParameter())
        self._assemble(snes, x, b)

    def _tangent_load(self, snes, x, q) -> None:
        """PETSc's tangent load Q = -∂F/∂λ = -σ ∂F/∂Λ at x."""
        self._load_vector(snes, x, q, self._base + self._sign * snes.getNewtonALLoadParameter())
        q.scale(self._sign)

    def _load_vector(self, snes, x, q, value: float) -> None:
        """q = -∂F/∂Λ at (x, value) = F(x, value) - F(x, value + 1) (F is affine in Λ)."""
        self._apply(value + 1.0)
        self._assemble(snes, x, q)
        self._apply(value)
        self._assemble(snes, x, self._work)
        q.aypx(-1.0, self._work)

    def _convergence_test(self, snes, it, norms):
        """‖F‖ <= atol or <= rtol·‖F₀‖; counts its own calls (PETSc's ``it`` runs on across
        the increments of a solve)."""
        _, _, fnorm = norms
        self._calls += 1
        if self._calls == 1:
            self._converged, self._ttol = False, self._rtol * fnorm
        if not math.isfinite(fnorm):
            return PETSc.SNES.ConvergedReason.DIVERGED_FNORM_NAN
        if fnorm <= self._atol or (self._calls > 1 and fnorm <= self._ttol):
            self._converged = True
            return PETSc.SNES.ConvergedReason.CONVERGED_FNORM_ABS
        if self._calls > self._max_it:
            return PETSc.SNES.ConvergedReason.DIVERGED_MAX_IT
        return PETSc.SNES.ConvergedReason.ITERATING

    def _configure(self, step_size: float, lambda_min: float, lambda_max: float) -> None:
        """NEWTONAL's step size and λ bounds, which PETSc reads from the options database only."""
        database, prefix = PETSc.Options(), self.prefix
        values = {
            "snes_newtonal_step_size": step_size,
            "snes_newtonal_lambda_min": lambda_min,
            "snes_newtonal_lambda_max": lambda_max,
        }
        for key, value in values.items():
            database[prefix + key] = value
        try:
            self.problem.solver.setFromOptions()  # the type is set already: the callbacks stay
        finally:
            for key in values:
                database.delValue(prefix + key)

    # ----------------------------------------------------------------- solves
    def _run(self) -> NewtonResult:
        """One NEWTONAL solve from the current u; converged by the driver's own test."""
        self._calls, self._converged = 0, False
        result = super().solve()
        result = result._replace(iterations=max(self._calls - 1, 0))
        if not self._converged:
            return result._replace(converged=False)
        self._apply(self._base + self._sign * self.problem.solver.getNewtonALLoadParameter())
        self._refresh(self.problem.x)  # the laws at the returned u (a no-op when they are)
        for law in self.laws:
            law.check_training_box()
        return result._replace(converged=True)

    def solve(self) -> NewtonResult:
        """Newton at the fixed load Λ (λ clamped to 0): an equilibrium to start a path from.

        Uses the exact correction (the normal one divides by the step's own ΔX, 0 here).
        """
        self._check_open()
        self._base, self._sign = self.load_value, 1
        snes = self.problem.solver
        self._configure(1.0, 0.0, 0.0)
        snes.setNewtonALCorrectionType(PETSc.SNES.NewtonALCorrectionType.EXACT)
        try:
            return self._run()
        finally:
            snes.setNewtonALCorrectionType(self._correction)

    def step(self, size: float, direction: int, *, end: float | None = None) -> NewtonResult:
        """One continuation step of arc length ``size`` (PETSc units) in ``direction`` (σ = ±1).

        With ``end``, λ is clamped so that Λ does not pass it. u and the laws hold the result
        (on failure too: ``trace`` restores them).
        """
        self._check_open()
        self._base, self._sign = self.load_value, int(direction)
        stop = _BIG if end is None else (end - self._base) * self._sign
        self._configure(float(size), -_BIG, stop if stop > 0 else _BIG)
        return self._run()

    # ----------------------------------------------------------------- measures
    def _ksp(self, pc_type: str, A) -> PETSc.KSP:
        ksp = PETSc.KSP().create(self.comm)
        ksp.setOptionsPrefix(f"{self.prefix}stability_")
        ksp.setType("preonly")
        pc = ksp.getPC()
        pc.setType(pc_type)
        pc.setFactorSolverType("mumps")
        ksp.setOperators(A)
        return ksp

    def _mass_matrix(self, bcs) -> PETSc.Mat:
        V = self.u.function_space
        p = V.ufl_element().embedded_superdegree
        dx = ufl.Measure("dx", domain=V.mesh, metadata={"quadrature_degree": 2 * p})
        form = dolfinx.fem.form(ufl.inner(ufl.TrialFunction(V), ufl.TestFunction(V)) * dx)
        M = dolfinx.fem.petsc.assemble_matrix(form, bcs=list(bcs), diag=0.0)
        M.assemble()
        return M

    def _jacobian(self) -> None:
        """Assemble K at the current u into ``self.A`` (the laws refreshed if u changed)."""
        snes = self.problem.solver
        dolfinx.fem.petsc.assign(self.u, self.problem.x)
        _, _, (jacobian, args, kwargs) = snes.getJacobian()
        jacobian(snes, self.problem.x, self.A, self.problem.P_mat or self.A, *args, **kwargs)

    def stability(self) -> Stability:
        """Inertia and smallest eigenvalue of the tangent at the current u (collective)."""
        self._check_open()
        self._jacobian()
        self.A.setOption(PETSc.Mat.Option.SYMMETRIC, True)
        pc = self._factor_ksp.getPC()
        pc.setFactorSetUpSolverType()
        factor = pc.getFactorMatrix()
        factor.setMumpsIcntl(13, 1)  # the inertia of a distributed factor (PETSc requires it)
        factor.setMumpsIcntl(24, 1)  # null-pivot detection (PETSc requires it for the inertia)
        self._factor_ksp.setOperators(self.A)
        self._factor_ksp.setUp()
        negative, _, _ = factor.getInertia()
        return Stability(int(negative), self._smallest_eigenvalue(int(negative)))

    def _smallest_eigenvalue(self, negative: int) -> float:
        """Smallest ω of K φ = ω M φ: the ``negative + 1`` eigenvalues nearest 0 contain it."""
        eps = SLEPc.EPS().create(self.comm)
        eps.setOperators(self.A, self._mass)
        eps.setProblemType(SLEPc.EPS.ProblemType.GHEP)
        eps.setDimensions(negative + 1)
        eps.setTarget(0.0)
        eps.setWhichEigenpairs(SLEPc.EPS.Which.TARGET_MAGNITUDE)
        st = eps.getST()
        st.setType(SLEPc.ST.Type.SINVERT)
        ksp = st.getKSP()
        ksp.setType("preonly")
        ksp.getPC().setType("lu")
        ksp.getPC().setFactorSolverType("mumps")
        eps.setTolerances(1e-10, 200)
        eps.solve()
        values = [eps.getEigenvalue(i).real for i in range(eps.getConverged())]
        eps.destroy()
        if not values:
            raise RuntimeError(
                "SLEPc found no eigenvalue of the tangent near 0 (shift-and-invert); the tangent "
                "may be singular exactly at this point."
            )
        return float(min(values))

    def tangent(self) -> PETSc.Vec:
        """du/dΛ = K⁻¹(-∂F/∂Λ) at the current u (after ``stability()``, which factors K)."""
        snes, x = self.problem.solver, self.problem.x
        q, t = x.duplicate(), x.duplicate()
        self._load_vector(snes, x, q, self.load_value)
        self._factor_ksp.solve(q, t)
        return t

    def point(
        self, iterations: int, step: float, direction: int
    ) -> tuple[ArcLengthPoint, PETSc.Vec]:
        """Record the current state (collective); also returns the tangent du/dΛ."""
        stability = self.stability()
        tangent = self.tangent()
        measure = math.nan if self._measure is None else float(self._measure())
        energy = math.nan
        if self._energy is not None:
            energy = self.comm.allreduce(dolfinx.fem.assemble_scalar(self._energy), op=MPI.SUM)
        point = ArcLengthPoint(
            self.load_value,
            measure,
            float(energy),
            stability.min_eigenvalue,
            stability.negative,
            int(iterations),
            float(step),
            int(direction),
        )
        return point, tangent

    # ----------------------------------------------------------------- the path
    def trace(
        self,
        *,
        end: float,
        step: float,
        max_step: float | None = None,
        min_step: float | None = None,
        max_steps: int = 200,
        max_cuts: int = 8,
        grow: float = 1.5,
        easy_iterations: int = 4,
        near_peak: float = 0.0,
        near_peak_step: float = 0.25,
        bounds: tuple[float, float] | None = None,
        direction: int = 1,
        callback: Callable[[ArcLengthPoint], None] | None = None,
    ) -> ArcLengthPath:
        """Continue from the current equilibrium (u, Λ) until Λ reaches ``end``.

        ``step``: the first step's ΔΛ (the arc length is measured in units of the first
        predictor); it grows ×``grow`` up to ``max_step`` (default 4·step) after a step of at
        most ``easy_iterations`` Newton iterations that kept the number of negative
        eigenvalues, and is halved when Newton fails or when the number changes by more than
        one in one step (it jumped over critical points, or to another branch) or when its
        chord ΔX points against the previous one (it doubled back), at most ``max_cuts``
        times in a row and not below ``min_step`` (default step/2**max_cuts).
        ``near_peak`` (0: off) caps the steps at ``near_peak_step``·step while the path is
        stable (no negative eigenvalue) and the measure's current stiffness |Δm/ΔΛ| of the
        last step is below ``near_peak`` times the first step's (Bergan's current stiffness
        parameter): near a peak of the measure, where an instability follows [ours; meant
        for a prescribed displacement and a force ``measure``, whose |dm/dΛ| is then the
        structure's stiffness]. Stops after ``max_steps`` steps or when Λ leaves ``bounds``.
        ``callback(point)`` runs after every converged point (e.g. to write fields).
        ``direction``: the first step's σ. Collective. A step that fails at the smallest size ends the path (``stopped`` says so).
        """
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"step must be finite and > 0; got {step}.")
        if not (0 <= near_peak < 1 and 0 < near_peak_step <= 1):
            raise ValueError(
                f"need 0 <= near_peak < 1 and 0 < near_peak_step <= 1; got near_peak="
                f"{near_peak}, near_peak_step={near_peak_step}."
            )
        if direction not in (1, -1):
            raise ValueError(f"direction must be 1 or -1; got {direction}.")
        max_step = 4 * step if max_step is None else float(max_step)
        min_step = step / 2**max_cuts if min_step is None else float(min_step)
        first, tangent = self.point(0, 0.0, direction)
        points, failures = [first], 0
        if callback is not None:
            callback(first)
        # the arc length of a ΔΛ = 1 predictor: PETSc's step sizes are in these units
        self._scale = math.sqrt(tangent.norm() ** 2 + self.psisq)
        size, sign, chord, reached, stopped = step, direction, None, False, ""
        for _ in range(max_steps):
            base = self.load_value
            taken = self._step_with_cuts(size, sign, end, points[-1], chord, max_cuts, min_step)
            failures += taken.cuts
            if taken.point is None:
                stopped = f"the step from load {base:.6g} failed at the smallest size ({taken.why})"
                break
            for law in self.laws:
                law.commit()
            point, size, chord = taken.point._replace(cuts=taken.cuts), taken.size, taken.chord
            points.append(point)
            if callback is not None:
                callback(point)
            # σ of the next step: along the path (PETSc's predictor rule across increments)
            along = chord.dot(taken.tangent) + self.psisq * (self.load_value - base)
            sign = 1 if along >= 0 else -1
            easy = point.iterations <= easy_iterations
            if easy and point.negative_eigenvalues == points[-2].negative_eigenvalues:
                size = min(size * grow, max_step)
            if point.negative_eigenvalues == 0 and _stiffness(points) < near_peak:
                size = min(size, near_peak_step * step)
            if abs(self.load_value - end) <= 1e-12 * max(1.0, abs(end)):
                reached = True
                break
            if bounds is not None and not (bounds[0] <= self.load_value <= bounds[1]):
                break
        if not reached and not stopped:
            stopped = "max_steps or bounds reached"
        return ArcLengthPath(points, critical_points(points), failures, reached, stopped)

    def _step_with_cuts(self, size, sign, end, last, chord, max_cuts, min_step) -> _Taken:
        """One step, halved until it converges and passes the checks (see ``trace``)."""
        x = self.problem.x
        start, saved, base = x.copy(), self.u.x.array.copy(), self.load_value
        why = ""
        for cuts in range(max_cuts + 1):
            result = self.step(size * self._scale, sign, end=end)
            if result.converged:
                point, tangent = self.point(result.iterations, size, sign)
                new_chord = x.copy()
                new_chord.axpy(-1.0, start)
                if abs(point.negative_eigenvalues - last.negative_eigenvalues) > 1:
                    why = "it jumped over critical points or branches"
                elif chord is not None and new_chord.dot(chord) < 0:
                    why = "it doubled back"
                else:
                    return _Taken(point, tangent, new_chord, size, cuts)
            else:
                why = f"SNES reason {result.reason}"
            for law in self.laws:
                law.revert()
            self.u.x.array[:] = saved
            self.u.x.scatter_forward()
            dolfinx.fem.petsc.assign(self.u, x)
            self._apply(base)
            size /= 2
            if size < min_step:
                break
        return _Taken(None, None, None, size, cuts + 1, why)


def _stiffness(points: Sequence[ArcLengthPoint]) -> float:
    """|Δmeasure/Δload| of the last step over the first step's (NaN where undefined)."""
    if len(points) < 3:
        return math.nan
    a, b, y, z = points[0], points[1], points[-2], points[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.float64(b.measure - a.measure) / (b.load - a.load)
        last = np.float64(z.measure - y.measure) / (z.load - y.load)
        return float(abs(last / first))


class _Taken(NamedTuple):
    """A step of ``trace``: the point (None: failed at the smallest size), the tangent and
    the chord ΔX there, the size it converged with, the failed tries before, why the last
    try failed."""

    point: ArcLengthPoint | None
    tangent: PETSc.Vec | None
    chord: PETSc.Vec | None
    size: float
    cuts: int
    why: str = ""


def critical_points(points: Sequence[ArcLengthPoint]) -> list[CriticalPoint]:
    """Where an eigenvalue of the tangent crosses zero: the negative count changes.

    A change is a *limit point* when the load turns back within a step of it (the direction
    σ changes among the points i-1 .. i+2): located at the extremum of the load, the vertex
    of a parabola through the extreme point and its two neighbours in the path's arc length
    (the cumulative ``step``), with the measure interpolated linearly there. A second change
    at the same turn (a second eigenvalue crossing within a step of the fold) is not a
    second limit point. Otherwise a change is a *bifurcation*, located by linear
    interpolation to ω = 0 where the smallest eigenvalue changes sign, at the midpoint where
    it stays negative (a further eigenvalue crossing on an unstable branch).
    """
    found, turns = [], set()
    s = np.cumsum([p.step for p in points])
    for i in range(1, len(points)):
        a, b = points[i - 1], points[i]
        if a.negative_eigenvalues == b.negative_eigenvalues:
            continue
        near = {points[j].direction for j in range(i - 1, min(i + 3, len(points)))}
        turn = _turn_index(points, i) if len(near) > 1 else None  # the load turns back near
        if turn is not None and turn not in turns:
            turns.add(turn)
            load, measure = _turning_point(points, s, turn, a.direction)
            found.append(CriticalPoint("limit", i, load, measure))
            continue
        span = a.min_eigenvalue - b.min_eigenvalue
        crosses = a.min_eigenvalue * b.min_eigenvalue < 0
        t = min(max(a.min_eigenvalue / span, 0.0), 1.0) if crosses and span else 0.5
        found.append(
            CriticalPoint(
                "bifurcation",
                i,
                a.load + t * (b.load - a.load),
                a.measure + t * (b.measure - a.measure),
            )
        )
    return found


def _turn_index(points: Sequence[ArcLengthPoint], i: int) -> int:
    """The point of extreme load among i-2 .. i+1 (the load grows along σ of point i-1)."""
    window = [j for j in range(i - 2, i + 2) if 0 <= j < len(points)]
    return max(window, key=lambda j: points[i - 1].direction * points[j].load)


def _turning_point(
    points: Sequence[ArcLengthPoint], s: np.ndarray, k: int, up: int
) -> tuple[float, float]:
    """(load, measure) at the load's extremum, point k (the load grows along σ = ``up``
    before the turn; see ``critical_points``)."""
    near = [j for j in (k - 1, k, k + 1) if 0 <= j < len(points)]
    load = np.array([points[j].load for j in near])
    measure = np.array([points[j].measure for j in near])
    if len(near) < 3 or np.unique(s[near]).size < 3:
        return float(points[k].load), float(points[k].measure)
    c = np.polyfit(s[near], load, 2)
    vertex = -c[1] / (2 * c[0]) if c[0] * up < 0 else s[k]
    if not s[near[0]] <= vertex <= s[near[-1]]:
        vertex = s[k]
    value = float(np.polyval(c, vertex))
    return value, float(np.interp(vertex, s[near], measure))  # no parabola overshoot
