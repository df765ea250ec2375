"""A material-point driver with mixed control (as MTest's or NEML2's drivers): one point, no mesh.

Along a path of steps each input of the law is either *prescribed* (its value given) or
*free* (its conjugate flux prescribed, usually 0). At every step Newton solves for the free
inputs on the law's flux and tangent, with a backtracking line search on the residual norm
and step cuts (the increment is halved, up to ``max_cuts`` times) when it fails.

Laws: stateless potentials (``Potential``: ``lse_material.load``'s LSEICNN, an
``AnalyticPotential``; fluxes = gradient, tangent = Hessian) and internal-state laws
(``InternalStateLaw``: HiddenStateMaterial, the metamaterial ReferenceLaw; driven through
``MaterialPoints``: trial evaluations during Newton, ``commit()`` after a converged step,
``revert()`` after a failed one). Both under full mixed control.

Flux names (``flux_name``): ``E11 .. 2E12 -> S11 .. S12`` and ``c -> mu`` (the
mechanochemical inputs), ``eps11 .. 2eps12 -> sigma11 .. sigma12`` (the state laws), any
other input ``x -> dpsi_dx``.

Stability measures at each converged point, from the tangent's strain block ``C`` (the six
Voigt strain inputs, engineering shears, symmetrised):

- ``min_eigenvalue``: the smallest eigenvalue of ``C`` (of the whole tangent when the law has
  no strain inputs). It changes sign where the point stops being a local minimum of ψ in the
  strains (a limit point or bifurcation of the homogeneous state). The eigenvalues are those
  of the Voigt matrix; their signs, not their values, are invariant.
- ``min_acoustic_det``: ``min over |n| = 1 of det A(n)``, ``A_ik = C_ijkl n_j n_l``, with
  ``C_ijkl`` read from the Voigt matrix (``C_ijkl = C[V(ij), V(kl)]``). It reaches 0 where
  strong ellipticity is lost (localization into bands with normal ``n`` can start). The
  minimum is found by sampling ``directions`` Fibonacci points on the half sphere and
  refining the 2 best by a shrinking compass search. [ours] The Voigt tangent is used as the
  ``C`` of the small-strain acoustic tensor for every law, also for the mechanochemical
  law's Lagrange strain (``dS/dE``); the geometric stress term of finite strain is left out,
  which is exact at small strain and an approximation of order |S| otherwise. Only laws
  with all six strain inputs get it (None otherwise).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from lse_material.atomic import atomic_write, save_figure, write_json
from lse_material.material_points import MaterialPoints
from lse_material.plotting import subplots

__all__ = [
    "DriveConvergenceError",
    "DrivePath",
    "DriveResult",
    "acoustic_minimum",
    "drive",
    "drive_law",
    "flux_name",
    "parse_path",
    "plot_response",
    "strain_columns",
    "write_csv",
]

_STRAINS = {
    ("E11", "E22", "E33", "2E23", "2E13", "2E12"): ("S11", "S22", "S33", "S23", "S13", "S12"),
    ("eps11", "eps22", "eps33", "2eps23", "2eps13", "2eps12"): (
        "sigma11",
        "sigma22",
        "sigma33",
        "sigma23",
        "sigma13",
        "sigma12",
    ),
}
_FLUX = {"c": "mu"} | {
    s: f for strains, fluxes in _STRAINS.items() for s, f in zip(strains, fluxes)
}
# Voigt index of the tensor index pair (i, j): 11 22 33 23 13 12.
_VOIGT = np.array([[0, 5, 4], [5, 1, 3], [4, 3, 2]])


FOLD_STIFFNESS = 0.25  # [ours] free-block eigenvalue / its first value below which a failed
# step is reported as a likely fold of the mixed-control path (``_fold_hint``)


class DriveConvergenceError(ValueError):
    """Newton did not converge at a step, even after the allowed step cuts.

    A ValueError: the path cannot be followed as given (smaller steps, or a reachable flux,
    fix it), and the CLI reports it in one line like other bad input. ``partial``: the
    ``DriveResult`` of the points solved before the failing step (None before the first),
    which ``drive`` still writes.
    """

    partial: DriveResult | None = None
    reached: _Evaluation | None = None  # the last converged sub-step of the failing step


def flux_name(name: str) -> str:
    """The name of the flux conjugate to input ``name`` (module docstring)."""
    return _FLUX.get(name, f"dpsi_d{name}")


def strain_columns(input_names: Sequence[str]) -> list[int] | None:
    """Indices of the six Voigt strain inputs (in Voigt order) when the law has them all, else None."""
    for strains in _STRAINS:
        if set(strains) <= set(input_names):
            return [list(input_names).index(s) for s in strains]
    return None


@dataclass(frozen=True)
class DrivePath:
    """A loading path over ``n_points`` points (the first is the start, solved too).

    ``prescribed``: input name -> values ``(n_points,)``; ``flux``: input name -> the values
    of its conjugate flux ``(n_points,)`` (the input is free). Every input of the law is in
    exactly one of them (``check``). ``time``: ``(n_points,)`` (state laws use the increments).
    """

    prescribed: Mapping[str, np.ndarray]
    flux: Mapping[str, np.ndarray]
    time: np.ndarray

    @property
    def n_points(self) -> int:
        return int(self.time.shape[0])

    def check(self, input_names: Sequence[str]) -> None:
        """Raise ValueError for unknown, doubly controlled, missing or non-finite components."""
        names = list(input_names)
        known = names + [flux_name(n) for n in names]
        for name in [*self.prescribed, *self.flux]:
            if name not in names:
                raise ValueError(f"path: unknown component {name!r}; the law's are {known}.")
        both = sorted(set(self.prescribed) & set(self.flux))
        if both:
            raise ValueError(
                f"path: {both} both prescribed and free (flux {[flux_name(n) for n in both]} "
                "given); control each input one way."
            )
        missing = [n for n in names if n not in self.prescribed and n not in self.flux]
        if missing:
            raise ValueError(
                f"path: inputs {missing} are neither prescribed nor free; give each a column "
                f"(or its flux {[flux_name(n) for n in missing]}), or --fix NAME=VALUE."
            )
        for kind, table in (("prescribed", self.prescribed), ("flux", self.flux)):
            for name, values in table.items():
                label = name if kind == "prescribed" else flux_name(name)
                if values.shape != (self.n_points,):
                    raise ValueError(
                        f"path: {label} has {values.shape} values for {self.n_points} points."
                    )
                if not np.isfinite(values).all():
                    bad = int(np.flatnonzero(~np.isfinite(values))[0])
                    raise ValueError(f"path: {label} is not finite at point {bad}: {values[bad]}.")
        if not (np.isfinite(self.time).all() and (np.diff(self.time) > 0).all()):
            raise ValueError("path: time must be finite and increasing.")


class DriveResult(NamedTuple):
    """The response along the path (``n`` converged points).

    inputs ``(n, d)`` and fluxes ``(n, d)`` in ``input_names`` / ``flux_names`` order; energy
    ``(n,)`` or None (a state law without ``energy``); min_eigenvalue ``(n,)``;
    min_acoustic_det ``(n,)`` and acoustic_normal ``(n, 3)`` or None (no six strain inputs);
    iterations ``(n,)`` Newton iterations per point (all cuts together); cuts ``(n,)``;
    free: the names of the free inputs.
    """

    input_names: tuple[str, ...]
    flux_names: tuple[str, ...]
    free: tuple[str, ...]
    time: np.ndarray
    inputs: np.ndarray
    fluxes: np.ndarray
    energy: np.ndarray | None
    min_eigenvalue: np.ndarray
    min_acoustic_det: np.ndarray | None
    acoustic_normal: np.ndarray | None
    iterations: np.ndarray
    cuts: np.ndarray

    def column(self, name: str) -> np.ndarray:
        """One input's or flux's values ``(n,)`` by name."""
        if name in self.input_names:
            return self.inputs[:, self.input_names.index(name)]
        if name in self.flux_names:
            return self.fluxes[:, self.flux_names.index(name)]
        raise ValueError(f"no column {name!r}; known: {[*self.input_names, *self.flux_names]}.")

    def sign_changes(self) -> list[dict[str, Any]]:
        """Where ``min_eigenvalue`` changes sign, linearly interpolated between points.

        Each: ``{"measure": "min_eigenvalue", "step": k (the point before), "fraction": t,
        NAME: value}`` for every input and flux (and ``min_acoustic_det`` likewise).
        """
        found = []
        series = {"min_eigenvalue": self.min_eigenvalue, "min_acoustic_det": self.min_acoustic_det}
        table = np.concatenate([self.inputs, self.fluxes], axis=1)
        names = [*self.input_names, *self.flux_names]
        for measure, values in series.items():
            if values is None:
                continue
            for k in np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0):
                t = values[k] / (values[k] - values[k + 1])
                row = (1 - t) * table[k] + t * table[k + 1]
                point = {"measure": measure, "step": int(k), "fraction": float(t)}
                found.append(point | dict(zip(names, map(float, row))))
        return found

    def to_json(self) -> dict[str, Any]:
        """Every column as a list (key = its name), the stability measures and the sign changes."""
        columns = {n: self.column(n).tolist() for n in (*self.input_names, *self.flux_names)}
        return {
            "input_names": list(self.input_names),
            "flux_names": list(self.flux_names),
            "free": list(self.free),
            "time": self.time.tolist(),
            **columns,
            "energy": None if self.energy is None else self.energy.tolist(),
            "min_eigenvalue": self.min_eigenvalue.tolist(),
            "min_acoustic_det": _list(self.min_acoustic_det),
            "acoustic_normal": _list(self.acoustic_normal),
            "iterations": self.iterations.tolist(),
            "cuts": self.cuts.tolist(),
            "sign_changes": self.sign_changes(),
        }


def _list(a: np.ndarray | None):
    return None if a is None else a.tolist()


# --------------------------------------------------------------------------- stability
def _fibonacci_half_sphere(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors with ``z >= 0`` (n and -n give the same A), ``(n, 3)``."""
    k = np.arange(n) + 0.5
    z = k / n
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(1.0 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _acoustic_det(C4: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """det A(n) for a 4th-order ``C4 (3, 3, 3, 3)`` at ``normals (m, 3)`` -> ``(m,)``."""
    return np.linalg.det(np.einsum("ijkl,mj,ml->mik", C4, normals, normals))


def acoustic_minimum(
    voigt: np.ndarray, *, directions: int = 2000, refine: int = 30
) -> tuple[float, np.ndarray]:
    """``min over |n| = 1 of det(n·C·n)`` of a Voigt tangent ``(6, 6)``, and its normal ``(3,)``.

    ``C_ijkl = voigt[V(ij), V(kl)]`` (Voigt order 11 22 33 23 13 12, engineering shears).
    Sampling on ``directions`` points of the half sphere, then a compass search on the sphere
    from the 2 best (steps halved ``refine`` times, from the sampling spacing).
    """
    C4 = voigt[_VOIGT[:, :, None, None], _VOIGT[None, None, :, :]]
    normals = _fibonacci_half_sphere(directions)
    values = _acoustic_det(C4, normals)
    best_value, best_n = math.inf, normals[0]
    for start in np.argsort(values)[:2]:
        n, value = normals[start], values[start]
        step = 2.0 * math.sqrt(4.0 * math.pi / directions)
        for _ in range(refine):
            # Two tangent directions at n, four trial moves along ±each.
            t1 = np.cross(n, [1.0, 0, 0] if abs(n[0]) < 0.9 else [0, 1.0, 0])
            t1 /= np.linalg.norm(t1)
            t2 = np.cross(n, t1)
            trial = n + step * np.array([t1, -t1, t2, -t2])
            trial /= np.linalg.norm(trial, axis=1, keepdims=True)
            det = _acoustic_det(C4, trial)
            j = int(np.argmin(det))
            if det[j] < value:
                n, value = trial[j], det[j]
            else:
                step /= 2
        if value < best_value:
            best_value, best_n = float(value), n
    return best_value, best_n


# --------------------------------------------------------------------------- laws
class _Evaluation(NamedTuple):
    flux: np.ndarray  # (d,)
    tangent: np.ndarray  # (d, d)
    energy: float | None


class _PotentialPoint:
    """A stateless potential at one point: flux = gradient, tangent = Hessian."""

    def __init__(self, potential):
        self.potential = potential
        self.input_names = tuple(potential.input_names)

    def trial(self, x: np.ndarray, dt: float) -> _Evaluation:
        del dt
        with torch.no_grad():
            d = self.potential.derivatives(torch.as_tensor(x[None], dtype=torch.float64))
        return _Evaluation(
            d.gradient[0].double().cpu().numpy(),
            d.hessian[0].double().cpu().numpy(),
            float(d.energy[0]),
        )

    def commit(self) -> None:
        pass

    def revert(self) -> None:
        pass


class _StatePoint:
    """An internal-state law at one point through ``MaterialPoints`` (trial, commit, revert)."""

    def __init__(self, law):
        self.points = MaterialPoints(law, 1)
        self.input_names = tuple(law.input_names)
        self.energy = getattr(law, "energy", None)

    def trial(self, x: np.ndarray, dt: float) -> _Evaluation:
        with torch.no_grad():
            strain = torch.as_tensor(x[None], dtype=torch.float64)
            r = self.points.trial(strain, dt=dt)
            energy = None if self.energy is None else float(self.energy(strain, r.state)[0])
        return _Evaluation(
            r.stress[0].double().cpu().numpy(), r.tangent[0].double().cpu().numpy(), energy
        )

    def commit(self) -> None:
        self.points.commit()

    def revert(self) -> None:
        self.points.revert()


def _point(law):
    if hasattr(law, "derivatives"):
        return _PotentialPoint(law)
    if hasattr(law, "step") and hasattr(law, "initial_state"):
        return _StatePoint(law)
    raise ValueError(
        f"a {type(law).__name__} is neither a potential (derivatives) nor an internal-state "
        "law (initial_state, step)."
    )


# --------------------------------------------------------------------------- Newton
class _Solve(NamedTuple):
    x: np.ndarray
    evaluation: _Evaluation
    iterations: int
    residual: float


def _newton(point, x0, target, free, *, dt, tolerance, max_iterations) -> _Solve:
    """Newton on ``flux[free] = target[free]`` from ``x0 (d,)``; backtracking on ``|r|``.

    Converged when ``|r| <= tolerance * max(1, |flux|)``. Returns the last iterate (the caller
    checks ``residual`` against the tolerance; a failed solve ends early).
    """
    x = x0.copy()
    e = point.trial(x, dt)
    r = e.flux[free] - target[free]
    norm = float(np.linalg.norm(r))
    for it in range(max_iterations + 1):
        if not np.isfinite(norm):
            break
        if norm <= tolerance * max(1.0, float(np.linalg.norm(e.flux))) or not free.any():
            return _Solve(x, e, it, norm)
        if it == max_iterations:
            break
        J = e.tangent[np.ix_(free, free)]
        delta = np.linalg.lstsq(J, -r, rcond=None)[0]
        alpha = 1.0
        for _ in range(12):  # backtracking (Armijo on |r|)
            trial = x.copy()
            trial[free] += alpha * delta
            et = point.trial(trial, dt)
            rt = et.flux[free] - target[free]
            nt = float(np.linalg.norm(rt))
            if np.isfinite(nt) and nt <= (1 - 1e-4 * alpha) * norm:
                break
            alpha /= 2
        else:
            break
        x, e, r, norm = trial, et, rt, nt
    return _Solve(x, e, max_iterations, norm)


class _Step(NamedTuple):
    x: np.ndarray
    evaluation: _Evaluation
    iterations: int
    cuts: int


def _advance(point, x, goal_x, goal_flux, prev_flux, free, *, dt, options, max_cuts, step):
    """From the converged ``x`` to the point ``goal_x`` / ``goal_flux``, cutting the increment.

    ``goal_x`` holds the prescribed values (free entries ignored), ``goal_flux`` the flux
    targets (prescribed entries ignored); ``prev_flux``: the targets at ``x``. Sub-steps are
    committed as they converge; a failed one is reverted and halved.
    """
    done, size, cuts, iterations, evaluation = 0.0, 1.0, 0, 0, None
    start = x.copy()
    while done < 1.0:
        s = min(1.0, done + size)
        x0 = x.copy()
        x0[~free] = (1 - s) * start[~free] + s * goal_x[~free]
        target = (1 - s) * prev_flux + s * goal_flux
        solve = _newton(point, x0, target, free, dt=dt * (s - done), **options)
        iterations += solve.iterations
        fluxes = float(np.linalg.norm(solve.evaluation.flux))
        if solve.residual <= options["tolerance"] * max(1.0, fluxes):
            point.commit()
            x, evaluation, done = solve.x, solve.evaluation, s
            size = min(2 * size, 1.0)
            continue
        point.revert()
        cuts += 1
        size /= 2
        if cuts > max_cuts:
            error = DriveConvergenceError(
                f"step {step}: Newton did not converge after {max_cuts} step cuts (increment "
                f"cut to {size * 2:.3g} of the step, {done:.3g} of it reached); free-flux "
                f"residual {solve.residual:.3e} > tolerance {options['tolerance']:.1e}."
            )
            error.reached = evaluation  # the last converged sub-step (None: none of them)
            raise error
    return _Step(x, evaluation, iterations, cuts)


def _free_stiffness(tangent: np.ndarray, free: np.ndarray) -> float:
    """Smallest eigenvalue of the free inputs' block of the (symmetrised) tangent."""
    block = tangent[np.ix_(free, free)]
    return float(np.linalg.eigvalsh(0.5 * (block + block.T))[0])


def _fold_hint(first: _Evaluation, last: _Evaluation, free: np.ndarray) -> str:
    """Why a step failed when the free inputs' stiffness is gone ("" while it is not).

    Newton solves the free inputs at the prescribed ones, on the free-free block of the
    tangent. Where that block turns singular, the free inputs' solution has a fold in the
    prescribed ones: beyond it no nearby solution exists, and no step cut can help.
    ``first``, ``last``: the evaluations at the path's first and last converged points.
    """
    start, end = _free_stiffness(first.tangent, free), _free_stiffness(last.tangent, free)
    if not (start > 0 and end <= FOLD_STIFFNESS * start):  # it started stable and lost it
        return ""
    return (
        f" The free inputs' stiffness has fallen: the smallest eigenvalue of their tangent "
        f"block is {end:.3g} at the last converged point, against {start:.3g} at the first. "
        "Under this mixed control the path likely has a limit point there (the free inputs "
        "fold back as the prescribed ones go on), so that no solution lies nearby beyond it: "
        "prescribe a component that keeps growing through the instability instead, or "
        "follow the structure by arc-length (lse_material.fem.ArcLengthSolver)."
    )


def _stability(tangent: np.ndarray, columns, directions: int):
    """Smallest eigenvalue of the symmetrised strain block, and the acoustic minimum."""
    block = tangent if columns is None else tangent[np.ix_(columns, columns)]
    block = 0.5 * (block + block.T)
    eig = float(np.linalg.eigvalsh(block)[0])
    if columns is None:
        return eig, None, None
    det, normal = acoustic_minimum(block, directions=directions)
    return eig, det, normal


def drive_law(
    law,
    path: DrivePath,
    *,
    tolerance: float = 1e-9,
    max_iterations: int = 25,
    max_cuts: int = 8,
    directions: int = 2000,
) -> DriveResult:
    """Drive one material point of ``law`` (a potential or an internal-state law) along ``path``.

    Raises ValueError for a bad path (``DrivePath.check``) and DriveConvergenceError naming
    the step and the residual when a step fails after ``max_cuts`` cuts. Options as ``drive``.
    """
    point = _point(law)
    names = point.input_names
    path.check(names)
    n, d = path.n_points, len(names)
    free = np.array([name in path.flux for name in names])
    goal_x = np.zeros((n, d))
    goal_flux = np.zeros((n, d))
    for j, name in enumerate(names):
        (goal_flux if free[j] else goal_x)[:, j] = (path.flux if free[j] else path.prescribed)[name]
    columns = strain_columns(names)
    options = {"tolerance": tolerance, "max_iterations": max_iterations}
    rows: list[tuple] = []
    x, prev_flux = np.zeros(d), goal_flux[0]
    dts = np.diff(path.time, prepend=path.time[0] - (path.time[1] - path.time[0] if n > 1 else 1))
    for k in range(n):
        try:
            s = _advance(
                point, x, goal_x[k], goal_flux[k], prev_flux, free,
                dt=float(dts[k]), options=options, max_cuts=max_cuts, step=k,
            )  # fmt: skip
        except DriveConvergenceError as error:
            error.partial = _result(names, free, path.time[:k], rows, columns) if rows else None
            hint = ""
            if rows and free.any():
                last = error.reached or rows[-1][0].evaluation
                hint = _fold_hint(rows[0][0].evaluation, last, free)
            advice = " Take smaller steps, or raise --max-iterations / --max-cuts."
            error.args = (str(error) + (hint or advice),)
            raise
        x, prev_flux = s.x, goal_flux[k]
        rows.append((s, *_stability(s.evaluation.tangent, columns, directions)))
    return _result(names, free, path.time, rows, columns)


def _result(names, free, time: np.ndarray, rows: list[tuple], columns) -> DriveResult:
    """The ``DriveResult`` of the solved points ``rows`` (step, eigenvalue, det, normal)."""
    energies = [r[0].evaluation.energy for r in rows]
    return DriveResult(
        input_names=names,
        flux_names=tuple(flux_name(m) for m in names),
        free=tuple(m for m, f in zip(names, free) if f),
        time=time.copy(),
        inputs=np.array([r[0].x for r in rows]),
        fluxes=np.array([r[0].evaluation.flux for r in rows]),
        energy=None if None in energies else np.array(energies),
        min_eigenvalue=np.array([r[1] for r in rows]),
        min_acoustic_det=None if columns is None else np.array([r[2] for r in rows]),
        acoustic_normal=None if columns is None else np.array([r[3] for r in rows]),
        iterations=np.array([r[0].iterations for r in rows]),
        cuts=np.array([r[0].cuts for r in rows]),
    )


# --------------------------------------------------------------------------- paths
PATH_KINDS = ("uniaxial-stress", "uniaxial-strain")


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise ValueError(f"{what} must be a number, got {text!r}.") from error
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {text!r}.")
    return value


def _ramp(text: str, what: str) -> np.ndarray:
    """``V0:V1:N1[:V2:N2 ...]`` -> the values ``(1 + N1 + N2 + ...,)``, linear on each segment."""
    parts = text.split(":")
    if len(parts) < 3 or len(parts) % 2 == 0:
        raise ValueError(f"{what}: give START:END:STEPS[:END2:STEPS2 ...], got {text!r}.")
    values = [_number(parts[0], f"{what} start")]
    for end, steps in zip(parts[1::2], parts[2::2]):
        if not steps.isdigit() or int(steps) < 1:
            raise ValueError(f"{what}: STEPS must be a positive integer, got {steps!r}.")
        b = _number(end, f"{what} end")
        values += np.linspace(values[-1], b, int(steps) + 1)[1:].tolist()
    return np.array(values)


def _by_flux(name: str, input_names: Sequence[str]) -> str | None:
    """The input whose flux is called ``name``, or None."""
    return next((n for n in input_names if flux_name(n) == name), None)


def _spec_path(spec: str, input_names: Sequence[str]) -> tuple[dict, dict]:
    kind, _, rest = spec.partition(":")
    name, sep, ramp = rest.partition("=")
    if kind not in PATH_KINDS or not sep:
        raise ValueError(
            f"path {spec!r}: a path spec is KIND:NAME=START:END:STEPS[:END2:STEPS2 ...] with KIND "
            f"in {list(PATH_KINDS)} (or give a .csv/.json file)."
        )
    if name not in input_names:
        raise ValueError(
            f"path {spec!r}: unknown input {name!r}; the law's are {list(input_names)}."
        )
    values = _ramp(ramp, f"path {name}")
    columns = strain_columns(input_names)
    others = [input_names[j] for j in columns] if columns else list(input_names)
    others = [o for o in others if o != name]
    zeros = np.zeros_like(values)
    if kind == "uniaxial-stress":
        return {name: values}, {o: zeros for o in others}
    return {name: values} | {o: zeros for o in others}, {}


def _table_path(columns: Mapping[str, Any], input_names: Sequence[str], source: str):
    prescribed, flux = {}, {}
    for key, values in columns.items():
        if key in input_names:
            prescribed[key] = values
        elif (owner := _by_flux(key, input_names)) is not None:
            flux[owner] = values
        else:
            known = [*input_names, *map(flux_name, input_names)]
            raise ValueError(f"{source}: unknown component {key!r}; the law's are {known}.")
    return prescribed, flux


def _array(values, what: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what}: values must be numbers, got {values!r}.") from error


def _json_path(file: Path, input_names: Sequence[str]):
    spec = json.loads(file.read_text())
    unknown = set(spec) - {"steps", "prescribe", "flux", "free", "time"}
    if not isinstance(spec, dict) or unknown:
        raise ValueError(
            f"{file}: a JSON path is an object with keys steps, prescribe, flux, free, time; "
            f"unknown {sorted(unknown)}."
        )
    steps = spec.get("steps")
    n = None if steps is None else int(steps) + 1

    def expand(values, what):
        a = _array(values, f"{file}: {what}")
        if a.size == 1 and n is not None:
            return np.full(n, a[0])
        if a.size == 2 and n is not None and n != 2:
            return np.linspace(a[0], a[1], n)
        return a

    columns = {
        k: expand(v, k) for k, v in {**spec.get("prescribe", {}), **spec.get("flux", {})}.items()
    }
    if dup := set(spec.get("prescribe", {})) & set(spec.get("flux", {})):
        raise ValueError(f"{file}: {sorted(dup)} in both prescribe and flux.")
    prescribed, flux = _table_path(columns, input_names, str(file))
    for name in spec.get("free", []):
        owner = name if name in input_names else _by_flux(name, input_names)
        if owner is None:
            raise ValueError(
                f"{file}: free: unknown input {name!r}; the law's are {list(input_names)}."
            )
        if owner in flux or owner in prescribed:
            raise ValueError(f"{file}: {owner!r} is listed as free and also given values.")
        flux[owner] = None  # zeros, once the length is known
    time = spec.get("time")
    return prescribed, flux, None if time is None else _array(time, f"{file}: time")


def _csv_path(file: Path, input_names: Sequence[str]):
    with file.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        rows = [r for r in reader if r]
    if not header or not rows:
        raise ValueError(f"{file}: a CSV path needs a header row and at least one data row.")
    if len(set(header)) != len(header):
        raise ValueError(f"{file}: repeated column names in {header}.")
    data = np.full((len(rows), len(header)), np.nan)
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(
                f"{file}: row {i + 2} has {len(row)} values for {len(header)} columns."
            )
        for j, value in enumerate(row):
            data[i, j] = _number(value.strip(), f"{file}: row {i + 2}, column {header[j]}")
    columns = {h: data[:, j] for j, h in enumerate(header) if h != "time"}
    time = data[:, header.index("time")] if "time" in header else None
    return (*_table_path(columns, input_names, str(file)), time)


def parse_path(
    path: str | Path,
    input_names: Sequence[str],
    *,
    fix: Mapping[str, float] | None = None,
    dt: float = 1.0,
) -> DrivePath:
    """A ``DrivePath`` from a path spec string or a ``.csv``/``.json`` file (the README's formats).

    ``fix``: inputs held at a value at every point (they must not be in the path otherwise);
    ``dt``: the time per step when the path gives no ``time``.
    """
    input_names = tuple(input_names)
    text = str(path)
    time = None
    if text.endswith((".csv", ".json")):
        file = Path(text)
        if not file.is_file():
            raise FileNotFoundError(f"path file {file} not found.")
        reader = _csv_path if text.endswith(".csv") else _json_path
        prescribed, flux, time = reader(file, input_names)
    else:
        prescribed, flux = _spec_path(text, input_names)
    lengths = {a.size for a in [*prescribed.values(), *flux.values()] if a is not None}
    if len(lengths) > 1:
        raise ValueError(f"path {text}: columns of different lengths {sorted(lengths)}.")
    n = lengths.pop() if lengths else (time.size if time is not None else 1)
    flux = {k: np.zeros(n) if v is None else v for k, v in flux.items()}
    for name, value in (fix or {}).items():
        if name not in input_names:
            raise ValueError(f"--fix {name}: unknown input; the law's are {list(input_names)}.")
        if name in prescribed:
            raise ValueError(f"--fix {name}: the path prescribes {name} already.")
        flux.pop(name, None)  # a fixed strain of a path spec is no longer free
        if not math.isfinite(value):
            raise ValueError(f"--fix {name}={value}: the value must be finite.")
        prescribed[name] = np.full(n, float(value))
    if not dt > 0:
        raise ValueError(f"dt must be positive, got {dt}.")
    time = dt * np.arange(n, dtype=np.float64) if time is None else time
    result = DrivePath(prescribed, flux, time)
    result.check(input_names)
    return result


# --------------------------------------------------------------------------- outputs
def write_csv(result: DriveResult, file: str | Path) -> Path:
    """One row per point: time, every input, every flux, energy and the stability measures."""
    names = ["time", *result.input_names, *result.flux_names, "energy", "min_eigenvalue"]
    columns = [result.time, *result.inputs.T, *result.fluxes.T]
    columns += [np.full(result.time.shape, np.nan) if result.energy is None else result.energy]
    columns += [result.min_eigenvalue]
    if result.min_acoustic_det is not None:
        names += ["min_acoustic_det", "n1", "n2", "n3"]
        columns += [result.min_acoustic_det, *result.acoustic_normal.T]
    with atomic_write(file, text=True) as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows(np.stack(columns, axis=1).tolist())
    return Path(file)


def plot_response(result: DriveResult, file: str | Path) -> Path:
    """Flux vs input for every component that varies (dashed where min_eigenvalue < 0), and
    the stability measures along the path."""
    fig, axes = subplots(1, 2, size=(11.0, 4.2))
    ax, bx = axes[0]
    unstable = result.min_eigenvalue < 0
    for j, name in enumerate(result.input_names):
        x, y = result.inputs[:, j], result.fluxes[:, j]
        if np.ptp(x) <= 1e-12 * max(1.0, np.abs(x).max()) or name in result.free:
            continue  # fixed, or free (its flux is the target)
        (line,) = ax.plot(x, np.where(unstable, np.nan, y), label=f"{result.flux_names[j]}({name})")
        ax.plot(x, np.where(unstable, y, np.nan), "--", color=line.get_color())
    for change in result.sign_changes():
        if change["measure"] == "min_eigenvalue":
            for j, name in enumerate(result.input_names):
                if name not in result.free and np.ptp(result.inputs[:, j]) > 0:
                    ax.plot(change[name], change[result.flux_names[j]], "kx")
    ax.axhline(0.0, color="0.7", lw=0.8)
    ax.set_xlabel("prescribed input")
    ax.set_ylabel("flux")
    ax.set_title("response (dashed: unstable, x: min eigenvalue = 0)")
    if any(not line.get_label().startswith("_") for line in ax.lines):
        ax.legend(fontsize=8)
    steps = np.arange(result.time.size)
    bx.plot(steps, result.min_eigenvalue, color="C0")
    bx.set_ylabel("min eigenvalue of the strain tangent", color="C0")
    bx.axhline(0.0, color="0.7", lw=0.8)
    if result.min_acoustic_det is not None:
        cx = bx.twinx()
        cx.plot(steps, result.min_acoustic_det, color="C1")
        cx.set_ylabel("min over n of det A(n)", color="C1")
        cx.axhline(0.0, color="C1", lw=0.5, ls=":")
    bx.set_xlabel("point")
    bx.set_title("stability along the path")
    return save_figure(fig, file)


def _load_law(model: str):
    """A model file, or the data models' laws by name (``mechanochemical``: the analytic ψ;
    ``metamaterial``: the reference return mapping)."""
    if model == "mechanochemical" and not Path(model).exists():
        from lse_material.training.data import mechanochemical

        return mechanochemical.potential()
    if model == "metamaterial" and not Path(model).exists():
        from lse_material.training.data import metamaterial

        return metamaterial.ReferenceLaw()
    from lse_material.modelfile import load

    return load(model)


def _fixes(items: Sequence[str] | None) -> dict[str, float]:
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--fix takes NAME=VALUE items, got {item!r}.")
        out[name.strip()] = _number(value.strip(), f"--fix {name.strip()}")
    return out


def _write_response(result: DriveResult, folder: Path, header: dict) -> None:
    write_csv(result, folder / "response.csv")
    write_json(folder / "response.json", header | result.to_json())
    plot_response(result, folder / "response.png")


def drive(
    model: str,
    *,
    path: str,
    out: str = "drive",
    fix: list[str] | None = None,
    dt: float = 1.0,
    tolerance: float = 1e-9,
    max_iterations: int = 25,
    max_cuts: int = 8,
    directions: int = 2000,
) -> DriveResult:
    """Drive one material point along a path under mixed control; response and stability.

    Writes ``OUT/response.csv`` and ``OUT/response.json`` (every input and flux per point,
    energy, smallest strain-tangent eigenvalue, minimum acoustic-tensor determinant and its
    normal; the JSON also lists the sign changes) and ``OUT/response.png``. When a step fails
    (DriveConvergenceError), the points before it are written, the JSON with ``failed``.

    Parameters
    ----------
    model
        a model file (.safetensors), or ``mechanochemical`` (the analytic ψ of docs/science.md §3) or
        ``metamaterial`` (the reference return mapping of docs/science.md §5).
    path
        a path spec ``KIND:NAME=START:END:STEPS[:END2:STEPS2 ...]`` (KIND uniaxial-stress: the
        other strain inputs (all other inputs for a law without the six Voigt strains) free
        at zero flux; uniaxial-strain: held at 0), or a .csv file
        (columns named by input: prescribed; by flux, e.g. S11: that input free; optional
        time) or a .json file ({"steps", "prescribe", "flux", "free", "time"}).
    out
        output folder.
    fix
        an input held at a value at every point, NAME=VALUE (e.g. c=1; repeat for several).
    dt
        time per step when the path gives no time column (state laws integrate over it).
    tolerance
        Newton converges when the free-flux residual <= tolerance * max(1, |flux|).
    max_iterations
        Newton iterations per (sub)step.
    max_cuts
        step cuts (halving the increment) allowed per step before giving up.
    directions
        sampled normals on the half sphere for the acoustic-tensor minimum.
    """
    law = _load_law(model)
    drive_path = parse_path(path, law.input_names, fix=_fixes(fix), dt=dt)
    folder = Path(out)
    try:
        result = drive_law(
            law,
            drive_path,
            tolerance=tolerance,
            max_iterations=max_iterations,
            max_cuts=max_cuts,
            directions=directions,
        )
    except DriveConvergenceError as error:  # the points before the failure are written
        if error.partial is not None:
            _write_response(
                error.partial, folder, {"model": model, "path": path, "failed": str(error)}
            )
        raise
    _write_response(result, folder, {"model": model, "path": path})
    for change in result.sign_changes():
        print(
            f"{change['measure']} changes sign between points {change['step']} and "
            f"{change['step'] + 1}"
        )
    print(
        f"wrote {folder / 'response.csv'}, response.json and response.png ({len(result.time)} points)"
    )
    return result
