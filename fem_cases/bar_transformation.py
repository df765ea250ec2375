"""FE case: a bar of the mechanochemical law at c = s_c pulled from one variant well to another.

Plane strain on the rectangle [0, L] × [0, H(x)] (Green–Lagrange strain embedded in 3×3, E33 =
E13 = E23 = 0), P1 displacement, one quadrature point per cell. The concentration is held at
c = s_c (a Constant, marked ``fixed`` for a law), where ψ has its three tetragonal strain
variants (docs/science.md §3). Loading by the end displacement u_x(L) = Λ L (Λ the nominal
strain, the arc-length load parameter), from Λ = ``start`` to ``end``:

- u_x = 0 on x = 0 and u_y = 0 at the corner (0, 0) (rolling ends: no lateral constraint), so
  the perfect bar would deform homogeneously in uniaxial stress;
- the default start Λ = -0.09 lies in the variant contracted along x (E11 ≈ -0.09, E22 ≈
  0.03, the stress-free state of that variant in plane strain); pulling to Λ = 0.06 crosses to
  the variant contracted along y (stress-free near E11 ≈ 0.03, E22 ≈ -0.09). The homogeneous
  uniaxial response goes up, down (past the force peak, S11 ≈ 0.82 at E11 ≈ -0.035), then
  back (a fold) and up again in the second well.

Choices [ours], documented:

- Imperfection: the height is reduced smoothly near mid-length, H(x) = H (1 - δ exp(-((x -
  0.45 L)/(0.1 L))²)), δ = ``imperfection`` (10 % by default; off-centre, with right-diagonal
  triangles, so that no exact symmetry leaves a pitchfork on the path): the transformation
  nucleates there. With δ = 2 % the limit point and a second eigenvalue crossing lie within
  one default step of each other, and which snap-back branch the path takes there depends
  on where the steps fall; with 10 % the second crossing comes only at the valley of the
  snap-back (README, the bar's measurements).
- Regularisation, used in both runs: ψ has no gradient term, so a discrete strain gradient
  (``_regularisation``, ℓ = ``length_scale``) widens the nucleus over a few cells; without
  it the second variant forms in one row of cells (a mesh-dependent snap-back; compare
  meshes with ``mesh``). The same mesh, imperfection and settings serve the learned law and
  the analytic ψ (``--analytic``, pure UFL).
- Arc-length continuation (``lse_material.fem.ArcLengthSolver``: PETSc SNESNEWTONAL, exact
  correction, cylindrical constraint ψ² = 0), the first step ΔΛ = ``step``, at most
  ``max_step`` (the default: no growth), quarter steps near the force peak (``near_peak``).

Outputs in ``out``: ``summary.json`` (the path as equal-length lists ``displacement``
(u_x(L)), ``force`` (the reaction on x = L per unit thickness), ``lambda``, ``energy`` (∫ψ
dx), ``min_eigenvalue`` (smallest ω of K φ = ω M φ), ``negative_eigenvalues``,
``iterations``, ``variant_fractions`` (per point, the fraction of cells nearest to each
variant); ``limit_points`` [{displacement, force, kind}] (sign changes of the smallest
eigenvalue); ``peak_force`` (the nucleation peak, up to the first limit point),
``max_force``, ``failed_steps``, ``steps_to_first_limit``, ...),
``force_displacement.png`` (unstable branches dashed, limit points marked; with
``reference``, the other run's curve too and their distance in ``comparison``), and
``phase.bp`` (VTX for ParaView, one frame per point: the nearest variant in the (e2, e3) plane
per cell, 0/1/2 = contracted along x/y/z, and with a law the dominant mode of the LSE mixture).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import ufl
from lse_material.training.data import mechanochemical as mc
from mpi4py import MPI

from lse_material.fem import ArcLengthSolver, QuadratureLaw, ReactionForce, dolfinx
from lse_material.jsonio import write_json
from lse_material.plotting import save_figure, subplots

__all__ = ["BarResult", "curve_distance", "simulate_bar_transformation"]

# (e2, e3) directions of the variants contracted along x, y, z (angles 210°, 330°, 90°).
VARIANT_ANGLES = np.deg2rad([210.0, 330.0, 90.0])


class BarResult(NamedTuple):
    summary: dict
    out: Path


def simulate_bar_transformation(
    *,
    out: str | Path,
    model: str | Path | None = None,
    analytic: bool = False,
    mesh: int = 40,
    aspect: int = 10,
    imperfection: float = 0.10,
    length_scale: float = 0.05,
    start: float = -0.09,
    end: float = 0.06,
    step: float = 0.005,
    max_step: float = 0.005,
    max_steps: int = 300,
    near_peak: float = 0.2,
    reference: str | Path | None = None,
) -> BarResult:
    """Trace the bar's equilibrium path; write summary.json, the PNG and the VTX phase field.

    Works under mpirun.

    Parameters
    ----------
    out
        output folder.
    model
        a trained mechanochemical model file (or give ``analytic``).
    analytic
        use the data model's ψ in pure UFL instead of a model (the reference run).
    mesh
        cells along the bar (its height gets mesh/aspect, at least 1; crossed triangles).
    aspect
        length / height of the bar.
    imperfection
        relative height reduction δ near mid-length (0: a perfect bar).
    length_scale
        ℓ of the strain-gradient regularisation (0: none; see the module docstring).
    start
        the nominal strain Λ = u_x(L)/L of the first point (solved by Newton).
    end
        the nominal strain where the path ends.
    step
        the first continuation step, in units of Λ.
    max_step
        the largest step (the step grows after easy steps up to it; larger steps let the
        path jump between the many branches of the transformation).
    max_steps
        stop after this many continuation steps.
    near_peak
        quarter steps while the path is stable and the force's slope dF/du is below this
        fraction of the first step's (near the nucleation peak; 0: off): with 0.2 the
        path passes the first limit point with no failed step and locates it within a
        quarter step.
    reference
        another run's summary.json to plot with this one and compare (``comparison``).
    """
    comm = MPI.COMM_WORLD
    if not analytic and model is None:
        raise ValueError("give --model MODEL (a trained mechanochemical model file) or --analytic.")
    if mesh < 2 or aspect < 1 or not 0 <= imperfection < 0.5 or not start < end or step <= 0:
        raise ValueError(
            f"need mesh >= 2, aspect >= 1, 0 <= imperfection < 0.5, start < end, step > 0; got "
            f"mesh={mesh}, aspect={aspect}, imperfection={imperfection}, start={start}, "
            f"end={end}, step={step}."
        )
    other = None
    if reference is not None:
        other = json.loads(Path(reference).read_text())
    t0 = time.perf_counter()
    potential = None
    if not analytic:
        import lse_material

        potential = lse_material.load(model)  # before any output exists: a bad file leaves none
    out = Path(out)
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    p = _problem(comm, mesh, aspect, imperfection, length_scale, potential)
    p.solver.set_load(start)
    _initial_guess(p.u, start)
    first = p.solver.solve()
    if not first.converged:
        raise RuntimeError(
            f"Newton did not converge at the start load {start} (reason {first.reason})."
        )
    writer, fields = _writer(p, out, comm)

    def record(point) -> None:
        fractions.append(_write(p, fields, writer, len(points)))
        points.append(point)
        if comm.rank == 0:
            print(
                f"point {len(points) - 1:3d}  lambda = {point.load:+.5f}  force = "
                f"{point.measure:+.5f}  negative {point.negative_eigenvalues}  newton "
                f"{point.iterations:2d}",
                flush=True,
            )

    points: list = []
    fractions: list = []
    path = p.solver.trace(
        end=end,
        step=step,
        max_step=max_step,
        max_steps=max_steps,
        near_peak=near_peak,
        callback=record,
    )
    p.solver.close()  # collective; frees the solver (a loop of runs would otherwise leak them)
    writer.close()
    summary = _summary(path, p, mesh, aspect, imperfection, analytic, model)
    summary["near_peak"] = near_peak
    summary["variant_fractions"] = fractions
    summary["seconds"] = time.perf_counter() - t0
    if other is not None:
        summary["comparison"] = {
            "reference": str(reference),
            **curve_distance(summary, other),
        }
    if comm.rank == 0:
        write_json(out / "summary.json", summary)
        _plot(out / "force_displacement.png", summary, other)
    return BarResult(summary, out)


def _regularisation(u, length_scale: float):
    """(κ ℓ²/2) Σ_F ∫_F |[[∇u]]|²/h dS over interior facets: a discrete strain gradient.

    For P1 (constant strain per cell) it tends to (κ ℓ²/2) ∫ |∇∇u|² dx as h → 0 (a C0
    interior-penalty form of strain-gradient elasticity); κ = 3 d_e / s_e², the curvature of
    ψ's strain part at the origin. 0 for ℓ = 0.
    """
    params = mc.MechanochemicalParams()
    kappa = 3 * params.d_e / params.s_e**2
    h = ufl.CellDiameter(u.function_space.mesh)
    jump = ufl.jump(ufl.grad(u))
    dS = ufl.Measure("dS", domain=u.function_space.mesh, metadata={"quadrature_degree": 1})
    return 0.5 * kappa * length_scale**2 * ufl.inner(jump, jump) / ufl.avg(h) * dS


def _problem(
    comm, n: int, aspect: int, imperfection: float, length_scale: float, potential
) -> SimpleNamespace:
    """Mesh (with the imperfection), space, law (None: pure UFL), forms and the solver."""
    length, height = 1.0, 1.0 / aspect
    ny = max(1, round(n / aspect))
    domain = dolfinx.mesh.create_rectangle(
        comm,
        [np.array([0.0, 0.0]), np.array([length, height])],
        [n, ny],
        dolfinx.mesh.CellType.triangle,
        diagonal=dolfinx.mesh.DiagonalType.right,
    )
    x = domain.geometry.x
    x[:, 1] *= 1.0 - imperfection * np.exp(-(((x[:, 0] - 0.45 * length) / (0.1 * length)) ** 2))
    V = dolfinx.fem.functionspace(domain, ("Lagrange", 1, (2,)))
    u = dolfinx.fem.Function(V, name="u")
    c = dolfinx.fem.Constant(domain, mc.MechanochemicalParams().s_c)
    inputs, E = mc.ufl_inputs(u, c)
    law = None
    if potential is None:
        density = mc.energy_ufl(E, c)
        dx = ufl.Measure("dx", domain=domain, metadata={"quadrature_degree": 1})
    else:
        law = QuadratureLaw(
            potential, inputs, domain, fixed=["c"], quadrature_degree=1, on_outside="ignore"
        )
        density, dx = law.energy_density(), law.dx
    energy = density * dx + _regularisation(u, length_scale)
    F = ufl.derivative(energy, u, ufl.TestFunction(V))

    V0, _ = V.sub(0).collapse()
    left = dolfinx.mesh.locate_entities_boundary(domain, 1, lambda x: np.isclose(x[0], 0.0))
    right = dolfinx.mesh.locate_entities_boundary(domain, 1, lambda x: np.isclose(x[0], length))
    pull, unit = dolfinx.fem.Function(V0), dolfinx.fem.Function(V0)
    unit.x.array[:] = length
    corner = dolfinx.fem.locate_dofs_geometrical(
        (V.sub(1), V.sub(1).collapse()[0]), lambda x: np.isclose(x[0], 0.0) & np.isclose(x[1], 0.0)
    )
    bcs = [
        dolfinx.fem.dirichletbc(
            dolfinx.fem.Function(V0),
            dolfinx.fem.locate_dofs_topological((V.sub(0), V0), 1, left),
            V.sub(0),
        ),
        dolfinx.fem.dirichletbc(
            pull, dolfinx.fem.locate_dofs_topological((V.sub(0), V0), 1, right), V.sub(0)
        ),
        dolfinx.fem.dirichletbc(dolfinx.fem.Function(V.sub(1).collapse()[0]), corner, V.sub(1)),
    ]
    load = dolfinx.fem.Constant(domain, 0.0)
    reaction = ReactionForce(F, u, lambda x: np.isclose(x[0], length), component=0)
    solver = ArcLengthSolver(
        F,
        u,
        [law] if law else [],
        load=load,
        scaled=[(pull, unit)],
        bcs=bcs,
        energy=energy,
        measure=reaction,
        prefix=f"bar_{id(u)}_",
    )
    return SimpleNamespace(domain=domain, u=u, E=E, law=law, solver=solver, length=length)


def _initial_guess(u, strain: float) -> None:
    """The homogeneous uniaxial state of the start well: u = (Λ x, β y), β from E22 ≈ 0.03."""
    beta = math.sqrt(1 + 2 * 0.0277) - 1  # E22 of the x-contracted variant at E11 ≈ -0.09
    u.interpolate(lambda x: np.vstack([strain * x[0], beta * x[1]]))


def _writer(p: SimpleNamespace, out: Path, comm):
    """VTX writer of the phase fields (DG0): the nearest variant, and a law's dominant mode."""
    DG0 = dolfinx.fem.functionspace(p.domain, ("DG", 0))
    fields = {"variant": dolfinx.fem.Function(DG0, name="variant")}
    if p.law is not None:
        fields["dominant_mode"] = dolfinx.fem.Function(DG0, name="dominant_mode")
    E = p.E
    e2 = (E[0, 0] - E[1, 1]) / math.sqrt(2.0)
    e3 = (E[0, 0] + E[1, 1] - 2 * E[2, 2]) / math.sqrt(6.0)
    points = DG0.element.interpolation_points
    fields["_order"] = dolfinx.fem.Expression(ufl.as_vector([e2, e3]), points)
    writer = dolfinx.io.VTXWriter(
        comm,
        out / "phase.bp",
        [f for k, f in fields.items() if not k.startswith("_")],
        engine="BP4",
    )
    return writer, fields


def _write(p: SimpleNamespace, fields: dict, writer, index: int) -> list[float]:
    """One frame: the nearest variant per cell (and the dominant LSE mode with a law).

    Returns the fraction of the cells (all ranks) nearest to each variant.
    """
    DG0 = fields["variant"].function_space
    cells = np.arange(DG0.mesh.topology.index_map(2).size_local, dtype=np.int32)
    order = fields["_order"].eval(p.domain, cells).reshape(-1, 2)
    directions = np.stack([np.cos(VARIANT_ANGLES), np.sin(VARIANT_ANGLES)])  # (2, 3)
    dofs = DG0.dofmap.list[cells, 0]
    variant = np.argmax(order @ directions, axis=1)
    fields["variant"].x.array[dofs] = variant.astype(np.float64)
    fields["variant"].x.scatter_forward()
    counts = p.domain.comm.allreduce(np.bincount(variant, minlength=3), op=MPI.SUM)
    if p.law is not None and p.law.phase_weights is not None:
        points = p.law.quadrature
        modes = points.cell_means(p.law.phase_weights).argmax(axis=1).astype(np.float64)
        points.set_cells(fields["dominant_mode"], modes)
    writer.write(float(index))
    return (counts / counts.sum()).tolist()


def _summary(path, p, mesh, aspect, imperfection, analytic, model) -> dict:
    """The summary.json contents (the path lists, the limit points, the run's settings)."""
    lam = path.column("load")
    force = path.column("measure")
    limits = [
        {"displacement": c.load * p.length, "force": c.measure, "kind": c.kind, "index": c.index}
        for c in path.critical_points
    ]
    first = next((c.index for c in path.critical_points if c.kind == "limit"), None)
    cuts = path.column("cuts")
    return {
        "displacement": [v * p.length for v in lam],
        "force": force,
        "lambda": lam,
        "energy": path.column("energy"),
        "min_eigenvalue": path.column("min_eigenvalue"),
        "negative_eigenvalues": path.column("negative_eigenvalues"),
        "iterations": path.column("iterations"),
        "cuts": cuts,
        "limit_points": limits,
        "peak_force": max(force[: first + 2] if first is not None else force),
        "max_force": max(force),
        "failed_steps": path.failed_steps,
        "steps": len(lam) - 1,
        "steps_to_first_limit": first,
        "failed_steps_to_first_limit": None if first is None else sum(cuts[: first + 1]),
        "reached_end": path.reached_end,
        "stopped": path.stopped,
        "mesh": mesh,
        "aspect": aspect,
        "imperfection": imperfection,
        "analytic": analytic,
        "model": None if model is None else str(model),
        "ranks": MPI.COMM_WORLD.size,
        "fraction_outside_box": 0.0 if p.law is None else p.law.fraction_outside_box(),
    }


def curve_distance(a: dict, b: dict) -> dict:
    """How far run ``b``'s force–displacement path is from run ``a``'s, in units of a's peak.

    ``ascending``, ``descending``: the largest |F_b(u) - F_a(u)| over the displacements both
    runs cover on the stable branch from the start to the first limit point, and on the
    branch from there to the next limit point (the snap-back), F interpolated in u on each
    branch (monotone there). ``limit_force``, ``limit_displacement``, ``peak_force``: the
    differences of the first limit point's coordinates and of the peak (nucleation) force.
    ``ascending_normal``, ``descending_normal``: the same branches compared by distance in the
    plane (u / U, F / a's peak force), U = a's displacement from the start to its peak force:
    the largest distance from a point of one run's branch to the other's (the branch as a
    polyline in path order, one neighbour added at each end so that where a path sample
    falls does not count), both ways. Each branch ends at a fold, where F(u) has a vertical
    tangent (F - F* ∝ √|u - u*|), so a gap in F at equal u grows like the square root of a
    shift of the fold; the distance in the plane stays proportional to it.
    ``curve_distance``: the symmetric Hausdorff distance between the whole polylines in the
    plane (u / a's displacement range, F / a's peak force), which also sees a path that
    takes other branches later. NaN where a run lacks the limit points.
    """
    scale_f = abs(a["peak_force"]) or 1.0
    scale_u = np.ptp(a["displacement"]) or 1.0
    pa, pb = (np.column_stack([r["displacement"], r["force"]]) / [scale_u, scale_f] for r in (a, b))
    result = {"curve_distance": float(max(_to_polyline(pa, pb).max(), _to_polyline(pb, pa).max()))}
    ends_a, ends_b = _branch_ends(a), _branch_ends(b)
    plane = np.array([_displacement_to_peak(a) or 1.0, scale_f])
    for name, k in (("ascending", 0), ("descending", 1)):
        result[name] = result[f"{name}_normal"] = math.nan
        if len(ends_a) > k + 1 and len(ends_b) > k + 1:
            ua, fa = _branch(a, ends_a[k], ends_a[k + 1])
            ub, fb = _branch(b, ends_b[k], ends_b[k + 1])
            inside = (ua >= ub.min()) & (ua <= ub.max())
            if inside.any():
                result[name] = float(
                    np.abs(np.interp(ua[inside], ub, fb) - fa[inside]).max() / scale_f
                )
            branch_a = _path_points(a, ends_a[k], ends_a[k + 1], 0) / plane
            branch_b = _path_points(b, ends_b[k], ends_b[k + 1], 0) / plane
            padded_a = _path_points(a, ends_a[k], ends_a[k + 1], 1) / plane
            padded_b = _path_points(b, ends_b[k], ends_b[k + 1], 1) / plane
            result[f"{name}_normal"] = float(
                max(_to_polyline(branch_a, padded_b).max(), _to_polyline(branch_b, padded_a).max())
            )
    la, lb = a["limit_points"], b["limit_points"]
    both = bool(la and lb)
    result["limit_force"] = abs(la[0]["force"] - lb[0]["force"]) / scale_f if both else math.nan
    result["limit_displacement"] = (
        abs(la[0]["displacement"] - lb[0]["displacement"]) / scale_u if both else math.nan
    )
    result["peak_force"] = abs(a["peak_force"] - b["peak_force"]) / scale_f
    return {k: float(v) for k, v in result.items()}


def _branch_ends(run: dict) -> list[int]:
    """Point indices: the start, the first limit point, the next limit point after it."""
    limits = [c["index"] for c in run["limit_points"] if c["kind"] == "limit"]
    ends = [0] + limits[:1]
    ends += [i for i in limits[1:] if i > ends[-1] + 1][:1]
    return ends


def _branch(run: dict, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Displacement and force of points i..j, sorted by displacement."""
    u, f = np.asarray(run["displacement"][i : j + 1]), np.asarray(run["force"][i : j + 1])
    order = np.argsort(u)
    return u[order], f[order]


def _path_points(run: dict, i: int, j: int, pad: int) -> np.ndarray:
    """(u, F) of points i - pad .. j + pad (clipped to the path) in path order: (n, 2)."""
    i, j = max(i - pad, 0), min(j + pad, len(run["force"]) - 1)
    return np.column_stack([run["displacement"][i : j + 1], run["force"][i : j + 1]])


def _displacement_to_peak(run: dict) -> float:
    """|u at the peak force before the first limit point - u at the start|."""
    ends = _branch_ends(run)
    last = ends[1] if len(ends) > 1 else len(run["force"]) - 1
    peak = int(np.argmax(run["force"][: last + 2]))  # as the summary's peak_force
    return abs(run["displacement"][peak] - run["displacement"][0])


def _to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance of each of ``points (n, 2)`` to the polyline through ``line (m, 2)``."""
    start, seg = line[:-1], np.diff(line, axis=0)  # (m-1, 2)
    rel = points[:, None, :] - start[None]  # (n, m-1, 2)
    length2 = np.maximum((seg**2).sum(1), 1e-300)
    t = np.clip((rel * seg[None]).sum(2) / length2, 0.0, 1.0)
    nearest = start[None] + t[..., None] * seg[None]
    return np.sqrt(((points[:, None, :] - nearest) ** 2).sum(2)).min(1)


def _plot(path: Path, summary: dict, other: dict | None) -> None:
    """Force against displacement, unstable points (negative eigenvalues) dashed, limits marked."""
    fig, axes = subplots(size=(6.5, 4.5))
    ax = axes[0, 0]
    runs = [("this run", summary, "C0")] + ([("reference", other, "C1")] if other else [])
    for label, run, color in runs:
        u, f = np.asarray(run["displacement"]), np.asarray(run["force"])
        unstable = np.asarray(run["negative_eigenvalues"]) > 0
        name = "analytic ψ" if run.get("analytic") else "learned law"
        ax.plot(u, f, color=color, lw=1.0, alpha=0.35)
        stable = np.where(unstable, np.nan, f)
        ax.plot(u, stable, color=color, lw=1.8, label=f"{name} ({label}), stable")
        ax.plot(
            u,
            np.where(unstable, f, np.nan),
            color=color,
            lw=1.2,
            ls="--",
            label=f"{name}, unstable",
        )
        for point in run["limit_points"]:
            ax.plot(point["displacement"], point["force"], "o", color=color, ms=5, mfc="none")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlabel("end displacement u_x(L) (L = 1)")
    ax.set_ylabel("reaction force per unit thickness")
    ax.set_title("bar at c = s_c: variant to variant (circles: critical points)")
    ax.legend(fontsize=7)
    save_figure(fig, path)
