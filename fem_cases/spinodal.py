"""FE case: mechanochemical phase transformation — Cahn–Hilliard + finite-strain elasticity.

Unknowns u (P1 vector), c and μ (P1), on the unit square (2-D plane strain) or cube (3-D).
Free energy Π = ∫ ψ(E, c) + (κ/2)|∇c|² dx with ψ the trained law (or, with ``analytic=True``,
the data model's ψ in pure UFL — the reference). Equations, backward Euler in time:

    (c - c_n)/Δt = ∇·(M ∇μ),    μ = ∂ψ/∂c - κΔc,    Div(F S) = 0,  S = ∂ψ/∂E

in the weak form  ∫ (c - c_n)/Δt q + M∇μ·∇q = 0,  ∫ μ r = ∂Π/∂c[r],  ∂Π/∂u[v] + viscous = 0.

Choices [ours], documented:
- Boundary conditions: u = 0 on the face x = 0 (clamped; removes rigid motions), all other
  faces traction-free; no flux of c (so ∫c is conserved exactly).
- The strain wells of ψ at c ≈ 1 are non-convex and have no gradient term: a static solve
  would form mesh-scale microstructure and Newton's tangent would be indefinite. We add an
  incremental viscous term (η/(2Δt)) ∫ |∇(u - u_n)|² dx (a strain-rate viscosity). It adds
  (η/Δt)·(gradient mass) to the mechanical tangent, so each step's problem is well posed
  for small enough Δt, and the strain patterns relax on the time scale η instead of jumping
  to the grid scale. It dissipates, so the free energy still decreases. The length scale of
  the pattern is that of c, set by κ.
- Initial c = 0.5 + 0.02·(a sum of 24 seeded random cosine modes of x), a deterministic
  function of the coordinates: identical for any number of ranks.
- Parameters: κ = 1e-2, M = 1e-2, η = 1e-2, Δt starts at 1e-3; Δt grows ×1.5 after a
  solve in ≤ 4 iterations (to at most ``dt_max``), and a failed solve is cut ×0.5 and retried
  from the saved state (``lse_material.fem.solve_with_cuts``: the failed trial leaves no trace).

Progress: one line per step on rank 0 (step, t, Δt, Newton iterations, free energy).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Literal, NamedTuple

import basix.ufl
import numpy as np
import ufl
from lse_material.training.data import mechanochemical as mc
from mpi4py import MPI

from lse_material.fem import LawNewtonSolver, QuadratureLaw, dolfinx, solve_with_cuts
from lse_material.fem.checkpoint import (
    CheckpointWriter,
    read_checkpoint,
    read_functions,
    run_figures,
    run_header,
)
from lse_material.fem.solvers import (
    SolverName,
    parse_petsc_options,
    solver_preset,
)
from lse_material.jsonio import write_json
from lse_material.plotting import save_figure, subplots

__all__ = ["SpinodalResult", "simulate_spinodal"]

KAPPA, MOBILITY, VISCOSITY = 1e-2, 1e-2, 1e-2  # [ours]
MIN_DT = 1e-9  # a step cut below this raises


class SpinodalResult(NamedTuple):
    summary: dict
    out: Path


def _initial_concentration(dim: int, seed: int):
    """c0(x) = 0.5 + 0.02 Σ_k a_k cos(2π k·x + φ_k): the same function on every rank."""
    rng = np.random.default_rng(seed)
    waves = rng.integers(1, 6, size=(24, dim)) * rng.choice([-1, 1], size=(24, dim))
    amplitude = rng.standard_normal(24) / np.sqrt(24)
    phase = rng.uniform(0, 2 * np.pi, 24)

    def c0(x):
        arg = 2 * np.pi * (waves @ x[:dim]) + phase[:, None]
        return 0.5 + 0.02 * (amplitude[:, None] * np.cos(arg)).sum(axis=0)

    return c0


def simulate_spinodal(
    *,
    out: str | Path,
    model: str | Path | None = None,
    analytic: bool = False,
    dim: Literal[2, 3] = 2,
    mesh: int = 32,
    t_end: float = 0.3,
    seed: int = 0,
    dt: float = 1e-3,
    dt_max: float = 0.05,
    max_steps: int = 400,
    write_every: int = 5,
    solver: SolverName = "direct",
    petsc: Sequence[str] = (),
    checkpoint_every: int = 0,
    restart: str | Path | None = None,
) -> SpinodalResult:
    """Run the case; write VTX fields, PNG plots and ``out/summary.json``. Works under mpirun.

    Parameters
    ----------
    out
        output folder.
    model
        a trained mechanochemical model file (or give ``analytic``).
    analytic
        use the data model's ψ in pure UFL instead of a model (the reference run).
    dim
        2 (plane strain, unit square) or 3 (unit cube).
    mesh
        cells per side.
    t_end
        end time.
    seed
        seed of the initial concentration's random cosine modes.
    dt
        the first time step.
    dt_max
        the largest time step (Δt grows ×1.5 after an easy solve).
    max_steps
        stop after this many steps even before ``t_end``.
    write_every
        write the VTX fields every this many steps.
    solver
        linear-solver preset: direct (MUMPS) or iterative (GMRES, fieldsplit u | (c, mu), GAMG
        blocks; lse_material.fem.solvers).
    petsc
        a PETSc option over the preset's, KEY=VALUE without prefix (e.g. ksp_rtol=1e-6);
        repeat for several.
    checkpoint_every
        write a checkpoint (out/checkpoint: mesh, fields, step state) every this many steps and
        at the end; 0: none.
    restart
        the output folder of an interrupted run with checkpoints: continue from its latest
        checkpoint (same options and model file; any number of ranks) to t_end.
    """
    comm = MPI.COMM_WORLD
    _check_options(dim, mesh, t_end, dt, model, analytic)
    user_options = parse_petsc_options(petsc)
    t_start = time.perf_counter()
    potential = None
    if not analytic:
        import lse_material

        potential = lse_material.load(model)  # before any output exists: a bad file leaves none
    header = run_header(
        "spinodal",
        None if analytic else model,
        analytic=analytic,
        dim=dim,
        mesh=mesh,
        seed=seed,
        dt=dt,
        dt_max=dt_max,
        t_end=t_end,
    )
    resume = None if restart is None else read_checkpoint(restart, **header)
    out = Path(out)
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    p = _problem(comm, dim, mesh, dt, potential, solver, user_options)
    if resume is None:
        p.w.sub(1).interpolate(_initial_concentration(dim, seed))
        p.w.x.scatter_forward()
    else:
        read_functions(resume, p.domain, {"w": p.w})
        p.dt.value = resume.state["dt"]
    p.w_n.x.array[:] = p.w.x.array
    checkpoints = CheckpointWriter(out, p.domain, {"w": p.w}, every=checkpoint_every, header=header)
    history, step, failures, loop_seconds = _march(
        p, out, t_end, dt_max, max_steps, write_every, checkpoints, resume
    )
    p.solver.close()  # collective; frees the solver (a loop of runs would otherwise leak them)
    restart_step = None if resume is None else resume.state["step"]
    peak_mb = comm.allreduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, op=MPI.MAX)
    summary = {
        **history,
        **run_figures(
            p.w.function_space,
            history,
            checkpoints,
            seconds=time.perf_counter() - t_start,
            loop_seconds=loop_seconds,
            steps_run=step - (restart_step or 0),
            solver=solver,
            petsc_options=p.solver.petsc_options,
            restart=restart,
            restart_step=restart_step,
        ),
        "steps": step,
        "peak_memory_mb_per_rank": peak_mb,
        "failed_steps": failures,
        "dim": dim,
        "mesh": mesh,
        "analytic": analytic,
        "model": None if model is None else str(model),
        "seed": seed,
        "parameters": {"kappa": KAPPA, "mobility": MOBILITY, "viscosity": VISCOSITY},
    }
    if comm.rank == 0:
        write_json(out / "summary.json", summary)
        _plots(out, summary)
    _snapshot(out, p.w, comm)
    return SpinodalResult(summary, out)


def _check_options(dim, mesh, t_end, dt, model, analytic) -> None:
    """Raise ValueError for a bad dimension, size or time step, or no law."""
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}.")
    if not analytic and model is None:
        raise ValueError("give --model MODEL (a trained mechanochemical model file) or --analytic.")
    if mesh < 2 or t_end <= 0 or dt <= 0:
        raise ValueError(
            f"need mesh >= 2, t_end > 0, dt > 0; got mesh={mesh}, t_end={t_end}, dt={dt}."
        )


def _march(
    p: SimpleNamespace,
    out: Path,
    t_end,
    dt_max,
    max_steps: int,
    write_every: int,
    checkpoints,
    resume,
):
    """Backward-Euler steps to ``t_end`` with adaptive Δt, fields written, one line per step.

    From t = 0, or from the checkpoint ``resume`` (its history, t and counters); writes
    ``checkpoints`` after steps. Returns (history, steps, failed solves, loop seconds).
    """
    comm = p.domain.comm
    keys = ("time", "energy", "mass", "phase_fraction", "newton_iterations", "dt")
    history = {k: [] for k in (*keys, "krylov_iterations")}
    t, step, failures = 0.0, 0, 0
    if resume is not None:
        history = resume.state["history"]
        t, step, failures = resume.state["t"], resume.state["step"], resume.state["failed_steps"]

    def record(t, iterations, krylov=0):
        e, m, pf = _measure(p, refresh_law=iterations == 0)
        values = (t, e, m, pf, iterations, float(p.dt.value), krylov)
        for key, value in zip(history, values, strict=True):
            history[key].append(value)
        return e

    writers, fields = _writers(p.domain, p.law, out, comm)
    if resume is None:
        record(0.0, 0)
    loop_start = time.perf_counter()
    _write(writers, fields, p.w, p.law, t)

    def state() -> dict:
        return {"t": t, "dt": float(p.dt.value), "failed_steps": failures, "history": history}

    max_cuts = int(np.floor(np.log2(dt_max / MIN_DT)))

    def prepare(size: float) -> None:
        p.dt.value = size

    while t < t_end - 1e-12 and step < max_steps:
        size = min(float(p.dt.value), t_end - t)
        cut = solve_with_cuts(p.solver, prepare, size, max_cuts=max_cuts, what=f"t = {t:.6g}")
        failures += cut.cuts
        t += cut.size
        step += 1
        p.w_n.x.array[:] = p.w.x.array
        energy = record(t, cut.result.iterations, cut.result.linear_iterations)
        if comm.rank == 0:
            print(
                f"step {step:4d}  t = {t:.5g}  dt = {cut.size:.3g}  newton "
                f"{cut.result.iterations:2d}  energy = {energy:.8g}",
                flush=True,
            )
        if step % write_every == 0:
            _write(writers, fields, p.w, p.law, t)
        if cut.result.iterations <= 4:
            p.dt.value = min(cut.size * 1.5, dt_max)
        checkpoints(step, state())
    checkpoints(step, state(), last=True)
    loop_seconds = time.perf_counter() - loop_start
    _write(writers, fields, p.w, p.law, t)
    for writer in writers:
        writer.close()
    return history, step, failures, loop_seconds


def _problem(
    comm, dim: int, mesh: int, dt: float, potential, solver: SolverName, petsc: dict
) -> SimpleNamespace:
    """Mesh, mixed space (u, c, μ), the law (None: the analytic ψ in UFL), forms and solver
    (the preset ``solver`` with the options ``petsc`` over it)."""
    if dim == 2:
        domain = dolfinx.mesh.create_unit_square(comm, mesh, mesh)
    else:
        domain = dolfinx.mesh.create_unit_cube(comm, mesh, mesh, mesh)
    cell = domain.basix_cell()
    P1 = basix.ufl.element("Lagrange", cell, 1)
    P1v = basix.ufl.element("Lagrange", cell, 1, shape=(dim,))
    W = dolfinx.fem.functionspace(domain, basix.ufl.mixed_element([P1v, P1, P1]))
    w, w_n = dolfinx.fem.Function(W), dolfinx.fem.Function(W)
    u, c, mu = ufl.split(w)
    u_n, c_n, _ = ufl.split(w_n)
    v, q, r = ufl.TestFunctions(W)
    dt_c = dolfinx.fem.Constant(domain, dt)

    inputs, E = mc.ufl_inputs(u, c)
    law = None
    if potential is None:
        density = mc.energy_ufl(E, c)
        dx = ufl.Measure("dx", domain=domain, metadata={"quadrature_degree": 2})
    else:
        law = QuadratureLaw(potential, inputs, domain, quadrature_degree=2)
        density = law.energy_density()
        dx = law.dx
    free_energy = density * dx + 0.5 * KAPPA * ufl.inner(ufl.grad(c), ufl.grad(c)) * dx
    viscous = 0.5 * VISCOSITY / dt_c * ufl.inner(ufl.grad(u - u_n), ufl.grad(u - u_n)) * dx
    residual = (
        ufl.derivative(
            free_energy + viscous, w, ufl.as_vector([*[v[i] for i in range(dim)], 0 * q, 0 * r])
        )
        + ((c - c_n) / dt_c * q + MOBILITY * ufl.inner(ufl.grad(mu), ufl.grad(q))) * dx
        + mu * r * dx
        - ufl.derivative(free_energy, w, ufl.as_vector([*[0 * v[i] for i in range(dim)], r, 0 * r]))
    )
    # Clamp x = 0.
    V0, _ = W.sub(0).collapse()
    facets = dolfinx.mesh.locate_entities_boundary(domain, dim - 1, lambda x: np.isclose(x[0], 0.0))
    dofs = dolfinx.fem.locate_dofs_topological((W.sub(0), V0), dim - 1, facets)
    bcs = [dolfinx.fem.dirichletbc(dolfinx.fem.Function(V0), dofs, W.sub(0))]
    solver = LawNewtonSolver(
        residual,
        w,
        [law] if law else [],
        bcs=bcs,
        prefix=f"spinodal_{id(w)}_",
        petsc_options={"snes_max_it": 12, "snes_linesearch_type": "basic", **petsc},
        preset=solver_preset(solver, W, kappa_over_mobility=KAPPA / MOBILITY),
    )
    one = dolfinx.fem.form(dolfinx.fem.Constant(domain, 1.0) * dx)
    return SimpleNamespace(
        domain=domain,
        w=w,
        w_n=w_n,
        dt=dt_c,
        law=law,
        solver=solver,
        forms=[
            dolfinx.fem.form(free_energy),
            dolfinx.fem.form(c * dx),
            dolfinx.fem.form(ufl.conditional(ufl.gt(c, 0.5), 1.0, 0.0) * dx),
        ],
        volume=comm.allreduce(dolfinx.fem.assemble_scalar(one), op=MPI.SUM),
    )


def _measure(p: SimpleNamespace, refresh_law: bool) -> tuple[float, float, float]:
    """Free energy, ∫c and the volume fraction with c > 1/2 (MPI-reduced).

    After a converged solve the law is current (``LawNewtonSolver.solve`` leaves it at the
    returned iterate); only the initial state needs an explicit update.
    """
    if p.law is not None and refresh_law:
        p.law.update()
    comm = p.domain.comm
    total = [comm.allreduce(dolfinx.fem.assemble_scalar(f), op=MPI.SUM) for f in p.forms]
    return total[0], total[1], total[2] / p.volume


def _writers(domain, law, out: Path, comm):
    """VTX time series: u, c, μ (P1) in fields.bp; for a law, the dominant well and the smallest
    tangent eigenvalue (cell averages, DG0) in diagnostics.bp."""
    dim = domain.topology.dim
    P1v = dolfinx.fem.functionspace(domain, ("Lagrange", 1, (dim,)))
    P1 = dolfinx.fem.functionspace(domain, ("Lagrange", 1))
    fields = {
        "u": dolfinx.fem.Function(P1v, name="u"),
        "c": dolfinx.fem.Function(P1, name="c"),
        "mu": dolfinx.fem.Function(P1, name="mu"),
    }
    writers = [dolfinx.io.VTXWriter(comm, out / "fields.bp", list(fields.values()), engine="BP4")]
    if law is not None:  # cell averages of the quadrature diagnostics
        diagnostics = [
            law.quadrature.dg0(name=n) for n in ("dominant_well", "min_tangent_eigenvalue")
        ]
        fields |= {f.name: f for f in diagnostics}
        writers.append(
            dolfinx.io.VTXWriter(comm, out / "diagnostics.bp", diagnostics, engine="BP4")
        )
    return writers, fields


def _write(writers, fields, w, law, t: float) -> None:
    fields["u"].interpolate(w.sub(0))
    fields["c"].interpolate(w.sub(1))
    fields["mu"].interpolate(w.sub(2))
    if law is not None:
        law.update()
        law.update_diagnostics()
        points = law.quadrature
        wells = points.cell_means(law.phase_weights).argmax(axis=1).astype(np.float64)
        points.set_cells(fields["dominant_well"], wells)
        law.cell_average(law.min_eigenvalue, out=fields["min_tangent_eigenvalue"])
    for writer in writers:
        writer.write(t)


def _snapshot(out: Path, w, comm) -> None:
    """PNG of the final c (2-D only), gathered to rank 0."""
    domain = w.function_space.mesh
    if domain.topology.dim != 2:
        return
    V1, _ = w.function_space.sub(1).collapse()
    c = dolfinx.fem.Function(V1)
    c.interpolate(w.sub(1))
    n = V1.dofmap.index_map.size_local
    xs = comm.gather(V1.tabulate_dof_coordinates()[:n, :2], root=0)
    cs = comm.gather(c.x.array[:n], root=0)
    if comm.rank == 0:
        xy, values = np.concatenate(xs), np.concatenate(cs)
        fig, axes = subplots(size=(4.5, 4))
        ax = axes[0, 0]
        im = ax.tricontourf(xy[:, 0], xy[:, 1], values, levels=30, cmap="viridis")
        fig.colorbar(im, ax=ax, label="c")
        ax.set_aspect("equal")
        ax.set_title("c at the final time")
        save_figure(fig, out / "concentration_final.png")


def _plots(out: Path, summary: dict) -> None:
    fig, axes = subplots(1, 3, size=(13, 3.6))
    axes = axes[0]
    axes[0].plot(summary["time"], summary["energy"])
    axes[0].set_ylabel("free energy")
    axes[1].plot(summary["time"], summary["phase_fraction"])
    axes[1].set_ylabel("volume fraction with c > 0.5")
    axes[2].semilogy(summary["time"][1:], summary["dt"][1:])
    axes[2].set_ylabel("Δt")
    for ax in axes:
        ax.set_xlabel("time")
    save_figure(fig, out / "energy_phase.png")
