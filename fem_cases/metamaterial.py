"""FE case: a phase-transforming metamaterial bar under cyclic displacement control (docs/science.md §5).

A bar ``[0, L] × [0, H]`` (2-D plane strain) or ``[0, L] × [0, H]²`` (3-D), small strain, P1
displacement, one quadrature point per simplex. The law is the trained hidden-state model
(``--model``) or the data model's return mapping (``--reference``), both through
``lse_material.fem.QuadratureStateLaw``: trial steps at quadrature points, the algorithmic
tangent, ``commit()`` after a converged step, ``revert()`` after a failed one (the step is then
cut in half and retried: ``lse_material.fem.solve_with_cuts``). The time step of the training
data and the uniaxial-strain modulus κ + 4μ/3 are read from the model file's card (the
reference: from ``MetamaterialParams``).

Choices [ours], documented:
- Boundary conditions: u_x = 0 at x = 0, u_x = U(t) at x = L, and rollers (zero normal
  displacement) on the lateral faces. The lateral constraint gives the uniaxial strain state
  ``ε = ε11 e1⊗e1`` of the training data (strain-controlled, docs/science.md §5): the trained model is used
  where it was trained, not extrapolated to lateral strains it never saw.
- Imperfection: all energies (ψ, Δψ, Y; equivalently stress and tangent) are scaled by
  ``s(x) = 1 - δ exp(-|x - x0|/ℓ)``, ``δ = 0.05``, ``x0 = 0.3 L``, ``ℓ = 0.2 L``: a locally
  softer material. Scaling the energies leaves the strain at which a point transforms
  unchanged, so the same factor applies to the model (its h evolution is strain-driven) and
  to the reference. The data model's transformation plateau is flat (σ11 = -0.12); with a
  strictly varying s(x), every point has its own onset stress ``-0.12 s(x)``: the
  transformation nucleates at x0 where s is smallest and runs outwards as two fronts while the
  force rises by a few per cent, instead of the tie of a perfect bar (where the plateau is
  neutral and the solution not unique).
- Regularisation: a strain-rate viscosity ``(η/Δt) ∫ ε(u - u_n) : ε(v)`` with
  ``η/Δt = 0.1 (κ + 4μ/3)`` at the nominal step, in both runs. On the reference's plateau the
  algorithmic tangent has no axial stiffness, so the Jacobian of a bar is singular without it.
- Loading: ε̄(t) = U/L follows sawtooth cycles 0 → a → 0 with amplitudes ``(-0.2, -0.12)``,
  40 steps per cycle, each step one time step of the training data (Δt = 1/99): strain
  increments of 0.006–0.01 per step, inside the range of the training histories (the model's
  ODE sees ε̇).
- Newton starts each step from the committed u plus the uniform strain increment
  ``ΔU (x/L) e1`` (it meets the new boundary values; a jump at the end nodes alone would feed
  the first trial a strain far outside the training range).
- Force: the reaction at x = L (``lse_material.fem.ReactionForce``: the residual tested with
  e1 on the dofs of that face; per unit thickness in 2-D), measured after the step is
  committed (u_n = u: the viscous part is then zero).

Progress: one line per load step on rank 0 (step, t = the step index, the mean strain
increment Δε̄ of its last sub-step, Newton iterations, reaction force; the bar's law has no
energy in flux form).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Literal, NamedTuple

import numpy as np
import ufl
from lse_material.training.data import metamaterial as mm
from mpi4py import MPI

from lse_material.fem import (
    LawNewtonSolver,
    QuadratureStateLaw,
    ReactionForce,
    dolfinx,
    solve_with_cuts,
)
from lse_material.fem.checkpoint import (
    CheckpointWriter,
    read_checkpoint,
    read_functions,
    read_state_law,
    run_figures,
    run_header,
)
from lse_material.fem.solvers import (
    SolverName,
    parse_petsc_options,
    solver_preset,
)
from lse_material.hidden_state import STRAIN_NAMES
from lse_material.jsonio import write_json
from lse_material.plotting import save_figure, subplots

__all__ = ["MetamaterialBarResult", "force_difference", "simulate_metamaterial"]


class MetamaterialBarResult(NamedTuple):
    summary: dict
    out: Path


def force_difference(a: dict, b: dict) -> float:
    """Normalised L2 difference ``‖F_a - F_b‖ / ‖F_b‖`` of two runs' force histories.

    Both runs must share the displacement schedule (the same options but the law).
    """
    da, db = np.asarray(a["displacement"]), np.asarray(b["displacement"])
    if da.shape != db.shape or not np.allclose(da, db, rtol=0, atol=1e-12):
        raise ValueError(
            "the two runs have different displacement schedules; rerun with the same options."
        )
    fa, fb = np.asarray(a["force"]), np.asarray(b["force"])
    return float(np.linalg.norm(fa - fb) / np.linalg.norm(fb))


def _schedule(amplitudes, steps_per_cycle: int) -> np.ndarray:
    """Mean strain ε̄ at the end of every step: sawtooth cycles 0 → a → 0."""
    half = steps_per_cycle // 2
    parts = [np.zeros(1)]
    for a in amplitudes:
        up = a * np.arange(1, half + 1) / half
        parts += [up, a * np.arange(half - 1, -1, -1) / half]
    return np.concatenate(parts)


def _voigt_strain(u, dim: int):
    e = ufl.sym(ufl.grad(u))
    if dim == 2:  # plane strain: ε33 = ε13 = ε23 = 0
        return ufl.as_vector([e[0, 0], e[1, 1], 0, 0, 0, 2 * e[0, 1]])
    return ufl.as_vector([e[0, 0], e[1, 1], e[2, 2], 2 * e[1, 2], 2 * e[0, 2], 2 * e[0, 1]])


class _Law(NamedTuple):
    """The bar's law, the time step of its training data and its uniaxial-strain modulus."""

    law: object
    dt: float
    modulus: float


def _load_law(model, reference: bool) -> _Law:
    """The reference (data model) or a trained model, with what its card knows."""
    if reference:
        law = mm.ReferenceLaw()
        return _Law(law, mm.data_time_step(), mm.uniaxial_modulus(law.params))
    if model is None:
        raise ValueError("give --model MODEL (a trained metamaterial model file) or --reference.")
    import lse_material
    from lse_material.hidden_state import HiddenStateMaterial

    law = lse_material.load(model)
    if not isinstance(law, HiddenStateMaterial) or tuple(law.input_names) != STRAIN_NAMES:
        raise ValueError(
            f"{model}: not a metamaterial model (a HiddenStateMaterial with inputs {STRAIN_NAMES}); "
            "train one with `lse-material train metamaterial`."
        )
    training = law.card.get("training", {})
    if "dt" not in training or "params" not in training:
        raise ValueError(
            f"{model}: the model card lacks training.dt or training.params (the time step and "
            "the material constants of the training data); retrain with this version."
        )
    params = mm.MetamaterialParams(**training["params"])
    return _Law(law, float(training["dt"]), mm.uniaxial_modulus(params))


def simulate_metamaterial(
    *,
    out: str | Path,
    model: str | Path | None = None,
    reference: bool = False,
    dim: Literal[2, 3] = 2,
    length: float = 10.0,
    height: float = 1.0,
    nx: int = 100,
    ny: int = 4,
    amplitudes: tuple[float, ...] = (-0.2, -0.12),
    steps_per_cycle: int = 40,
    imperfection: float = 0.05,
    viscosity: float = 0.1,
    max_cuts: int = 6,
    write_every: int = 2,
    compare: str | Path | None = None,
    solver: SolverName = "direct",
    petsc: Sequence[str] = (),
    checkpoint_every: int = 0,
    restart: str | Path | None = None,
) -> MetamaterialBarResult:
    """Run the bar; write VTX fields, the force–displacement plot and ``out/summary.json``.

    Works under mpirun. ``compare``: a folder with another run's summary.json (same options, the
    other law): its force curve is drawn too and the normalised L2 difference is stored.

    Parameters
    ----------
    out
        output folder.
    model
        a trained metamaterial model file (or give ``reference``).
    reference
        use the data model's law instead of a model (the reference run).
    dim
        2 (plane strain) or 3.
    length, height
        the bar's length L and height H.
    nx, ny
        cells along the bar and across it.
    amplitudes
        the mean strains U/L of the sawtooth cycles 0 → a → 0.
    steps_per_cycle
        load steps per cycle.
    imperfection
        the softening δ of the energies at x0 = 0.3 L.
    viscosity
        the strain-rate viscosity η/Δt in units of κ + 4μ/3 at the nominal step.
    max_cuts
        how many times a failed step may be halved.
    write_every
        write the VTX fields every this many steps.
    compare
        the folder of another run (same options, the other law) to compare forces with.
    solver
        linear-solver preset: direct (MUMPS) or iterative (GMRES with GAMG and the rigid-body
        near-nullspace; lse_material.fem.solvers).
    petsc
        a PETSc option over the preset's, KEY=VALUE without prefix (e.g. ksp_rtol=1e-6);
        repeat for several.
    checkpoint_every
        write a checkpoint (out/checkpoint: mesh, u, the law's state at the quadrature points,
        step state) every this many load steps and at the end; 0: none.
    restart
        the output folder of an interrupted run with checkpoints: continue from its latest
        checkpoint (same options and model file; any number of ranks) to the schedule's end.
    """
    comm = MPI.COMM_WORLD
    _check_options(dim, nx, ny, steps_per_cycle, imperfection, viscosity, amplitudes)
    user_options = parse_petsc_options(petsc)
    chosen = _load_law(model, reference)
    header = run_header(
        "metamaterial",
        None if reference else model,
        dim=dim,
        length=length,
        height=height,
        nx=nx,
        ny=ny,
        amplitudes=list(amplitudes),
        steps_per_cycle=steps_per_cycle,
        imperfection=imperfection,
        viscosity=viscosity,
        max_cuts=max_cuts,
    )
    resume = None if restart is None else read_checkpoint(restart, **header)
    out = Path(out)
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    bar = _bar(comm, dim, (length, height), (nx, ny), chosen, imperfection, viscosity)
    bar.solver = _solver(bar, solver, user_options)
    schedule = _schedule(amplitudes, steps_per_cycle)
    checkpoints = CheckpointWriter(
        out, bar.domain, {"u": bar.u}, every=checkpoint_every, state_law=bar.law, header=header
    )
    if resume is not None:
        _restore(resume, bar)
    loop_start = time.perf_counter()
    history, failures, cuts_used = _march(
        bar, schedule, chosen, viscosity, max_cuts, out, write_every, checkpoints, resume
    )
    bar.solver.close()  # collective; frees the solver (a loop of runs would otherwise leak them)
    restart_step = None if resume is None else resume.state["step"]
    summary = {
        **history,
        **run_figures(
            bar.u.function_space,
            history,
            checkpoints,
            seconds=time.perf_counter() - t_start,
            loop_seconds=time.perf_counter() - loop_start,
            steps_run=schedule.size - 1 - (restart_step or 0),
            solver=solver,
            petsc_options=bar.solver.petsc_options,
            restart=restart,
            restart_step=restart_step,
        ),
        "law": "reference" if reference else "model",
        "model": None if model is None else str(model),
        "dim": dim,
        "cells": int(bar.domain.topology.index_map(dim).size_global),
        "steps": int(schedule.size - 1),
        "failed_steps": failures,
        "max_cuts_used": cuts_used,
        "parameters": {
            "length": length,
            "height": height,
            "amplitudes": list(amplitudes),
            "steps_per_cycle": steps_per_cycle,
            "imperfection": imperfection,
            "imperfection_at": 0.3 * length,
            "imperfection_length": 0.2 * length,
            "viscosity": viscosity,
            "dt": chosen.dt,
            "uniaxial_modulus": chosen.modulus,
        },
    }
    other = None if compare is None else json.loads((Path(compare) / "summary.json").read_text())
    if other is not None:
        summary["force_difference_vs_compare"] = force_difference(summary, other)
    if comm.rank == 0:
        write_json(out / "summary.json", summary)
        _plots(out, summary, other)
    return MetamaterialBarResult(summary, out)


def _restore(resume, bar) -> None:
    """The bar's u and its law's committed state from the checkpoint ``resume``."""
    read_functions(resume, bar.domain, {"u": bar.u})
    read_state_law(resume, bar.law)
    bar.u_n.x.array[:] = bar.u.x.array


def _check_options(dim, nx, ny, steps_per_cycle, imperfection, viscosity, amplitudes) -> None:
    """Raise ValueError for a bad size, schedule, imperfection or viscosity."""
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}.")
    if nx < 2 or ny < 1 or steps_per_cycle < 4 or steps_per_cycle % 2:
        raise ValueError(
            f"need nx >= 2, ny >= 1 and an even steps_per_cycle >= 4; got nx={nx}, ny={ny}, "
            f"steps_per_cycle={steps_per_cycle}."
        )
    if not 0 <= imperfection < 1 or viscosity < 0 or not amplitudes:
        raise ValueError("need 0 <= imperfection < 1, viscosity >= 0 and at least one amplitude.")


def _march(
    bar,
    schedule,
    chosen: _Law,
    viscosity,
    max_cuts,
    out: Path,
    write_every: int,
    checkpoints,
    resume,
):
    """All load steps, with fields written and one progress line per step (rank 0).

    From the start, or after the checkpoint ``resume`` (its history and counters); writes
    ``checkpoints`` after steps. Returns (history of displacement, force, fraction, fronts,
    Newton iterations; failed solves; the deepest cut).
    """
    comm = bar.domain.comm
    writer, indicator_cells = _writer(bar.domain, bar.u, out, comm)
    keys = ("displacement", "force", "transformed_fraction", "front_left", "front_right")
    history = {k: [] for k in (*keys, "newton_iterations", "krylov_iterations")}

    def record(displacement, iterations, krylov=0):
        values = (displacement, *_measure(bar), iterations, krylov)
        for key, value in zip(history, values, strict=True):
            history[key].append(value)

    failures, cuts_used, first = 0, 0, 1
    if resume is not None:
        history, first = resume.state["history"], resume.state["step"] + 1
        failures, cuts_used = resume.state["failed_steps"], resume.state["max_cuts_used"]

    def state() -> dict:
        return {"failed_steps": failures, "max_cuts_used": cuts_used, "history": history}

    bar.law.update()  # a trial from the committed state: the indicator of the first write
    if resume is None:
        record(0.0, 0)
    _write(writer, bar.law, indicator_cells, float(first - 1))
    for step in range(first, schedule.size):
        iterations, cuts, used, krylov = _load_step(
            bar, schedule, step, chosen, viscosity, max_cuts
        )
        failures += cuts
        cuts_used = max(cuts_used, used)
        record(float(schedule[step] * bar.length), iterations, krylov)
        if comm.rank == 0:
            print(
                f"step {step:4d}  t = {step}  dε = {schedule[step] - schedule[step - 1]:+.4g}  "
                f"newton {iterations:2d}  force = {history['force'][-1]:.8g}",
                flush=True,
            )
        if step % write_every == 0 or step == schedule.size - 1:
            _write(writer, bar.law, indicator_cells, float(step))
        checkpoints(step, state())
    checkpoints(schedule.size - 1, state(), last=True)
    writer.close()
    return history, failures, cuts_used


def _bar(comm, dim, size, cells, chosen: _Law, imperfection, viscosity) -> SimpleNamespace:
    """Mesh, P1 displacement, the law, residual with viscosity, boundary conditions, solver."""
    (length, height), (nx, ny) = size, cells
    if dim == 2:
        domain = dolfinx.mesh.create_rectangle(
            comm, [[0.0, 0.0], [length, height]], [nx, ny], dolfinx.mesh.CellType.triangle
        )
    else:
        domain = dolfinx.mesh.create_box(
            comm,
            [[0.0, 0.0, 0.0], [length, height, height]],
            [nx, ny, ny],
            dolfinx.mesh.CellType.tetrahedron,
        )
    V = dolfinx.fem.functionspace(domain, ("Lagrange", 1, (dim,)))
    u, u_n = dolfinx.fem.Function(V, name="u"), dolfinx.fem.Function(V)
    v = ufl.TestFunction(V)
    law = QuadratureStateLaw(
        chosen.law, _voigt_strain(u, dim), domain, quadrature_degree=1, dt=chosen.dt
    )
    x = ufl.SpatialCoordinate(domain)
    s = 1.0 - imperfection * ufl.exp(-abs(x[0] - 0.3 * length) / (0.2 * length))
    eta_dt = dolfinx.fem.Constant(domain, viscosity * chosen.modulus)  # η/Δt, set per trial
    F = (
        s * ufl.dot(law.stress(), _voigt_strain(v, dim)) * law.dx
        + eta_dt * ufl.inner(ufl.sym(ufl.grad(u - u_n)), ufl.sym(ufl.grad(v))) * law.dx
    )
    fdim = dim - 1
    end_value = dolfinx.fem.Constant(domain, 0.0)
    bcs = []
    for value, at in ((dolfinx.fem.Constant(domain, 0.0), 0.0), (end_value, length)):
        facet = dolfinx.mesh.locate_entities_boundary(
            domain, fdim, lambda p, at=at: np.isclose(p[0], at)
        )
        dofs = dolfinx.fem.locate_dofs_topological(V.sub(0), fdim, facet)
        bcs.append(dolfinx.fem.dirichletbc(value, dofs, V.sub(0)))
    for axis in range(1, dim):  # rollers on the lateral faces
        lateral = dolfinx.mesh.locate_entities_boundary(
            domain,
            fdim,
            lambda p, a=axis: np.isclose(p[a], 0.0) | np.isclose(p[a], height),
        )
        dofs = dolfinx.fem.locate_dofs_topological(V.sub(axis), fdim, lateral)
        bcs.append(dolfinx.fem.dirichletbc(0.0, dofs, V.sub(axis)))
    ramp = dolfinx.fem.Function(V)  # the predictor's uniform strain: (x/L) e1
    ramp.interpolate(lambda p: np.vstack([p[0] / length] + [0 * p[0]] * (dim - 1)))
    n_cells = law.quadrature.n_cells
    cell_volume = ufl.TestFunction(dolfinx.fem.functionspace(domain, ("DG", 0))) * ufl.dx
    volumes = dolfinx.fem.assemble_vector(dolfinx.fem.form(cell_volume)).array[:n_cells]
    return SimpleNamespace(
        domain=domain,
        u=u,
        u_n=u_n,
        law=law,
        F=F,
        bcs=bcs,
        eta_dt=eta_dt,
        end_value=end_value,
        ramp=ramp,
        length=length,
        reaction=ReactionForce(F, u, lambda p: np.isclose(p[0], length), component=0),
        volumes=volumes,
        total_volume=comm.allreduce(volumes.sum(), op=MPI.SUM),
        centres=dolfinx.mesh.compute_midpoints(domain, dim, law.quadrature.cells)[:, 0],
    )


def _solver(bar, solver: SolverName, petsc: dict) -> LawNewtonSolver:
    """Newton for the bar with the linear-solver preset ``solver`` and the options ``petsc``."""
    u = bar.u
    return LawNewtonSolver(
        bar.F,
        u,
        [bar.law],
        bcs=bar.bcs,
        prefix=f"metamaterial_{id(u)}_",
        petsc_options={
            "snes_linesearch_type": "basic",
            "snes_max_it": 20,
            "snes_rtol": 1e-9,
            "snes_atol": 1e-11,
            **petsc,
        },
        preset=solver_preset(solver, u.function_space),
    )


def _load_step(bar, schedule, step: int, chosen: _Law, viscosity: float, max_cuts: int):
    """One load step, in sub-steps cut in half on failure: (Newton iterations, cuts, depth,
    Krylov iterations)."""
    full = (schedule[step] - schedule[step - 1]) * bar.length
    target, done = schedule[step] * bar.length, schedule[step - 1] * bar.length
    fraction, iterations, cuts, depth, krylov = 1.0, 0, 0, 0, 0
    trial = {}

    def prepare(part: float) -> None:
        end = target if abs(target - done) <= abs(part * full) * (1 + 1e-12) else done + part * full
        share = (end - done) / full
        bar.law.dt = chosen.dt * share
        bar.eta_dt.value = viscosity * chosen.modulus / share
        bar.end_value.value = end
        bar.u.x.array[:] += (end - done) * bar.ramp.x.array  # predictor: uniform strain increment
        bar.u.x.scatter_forward()
        trial["end"] = end

    while done != target:
        depth_left = max_cuts - depth
        what = f"step {step} (mean strain {schedule[step]:.4f})"
        cut = solve_with_cuts(bar.solver, prepare, fraction, max_cuts=depth_left, what=what)
        fraction, cuts = cut.size, cuts + cut.cuts
        depth = max(depth, int(round(-np.log2(fraction))))
        bar.u_n.x.array[:] = bar.u.x.array
        done = trial["end"]
        iterations += cut.result.iterations
        krylov += cut.result.linear_iterations
    return iterations, cuts, depth, krylov


def _measure(bar) -> tuple:
    """Reaction force, transformed volume fraction, left and right front (None: no front)."""
    comm = bar.domain.comm
    ind = bar.law.quadrature.cell_means(bar.law.indicator)[:, 0]
    fraction = comm.allreduce(float((bar.volumes * np.clip(ind, 0, 1)).sum()), op=MPI.SUM)
    hot = bar.centres[ind > 0.5]
    left = comm.allreduce(float(hot.min()) if hot.size else np.inf, op=MPI.MIN)
    right = comm.allreduce(float(hot.max()) if hot.size else -np.inf, op=MPI.MAX)
    return (
        bar.reaction(),
        fraction / bar.total_volume,
        left if np.isfinite(left) else None,
        right if np.isfinite(right) else None,
    )


def _writer(domain, u, out: Path, comm):
    """VTX time series fields.bp: u (P1) and the phase indicator (cell average, DG0)."""
    DG0 = dolfinx.fem.functionspace(domain, ("DG", 0))
    indicator = dolfinx.fem.Function(DG0, name="phase_indicator")
    writer = dolfinx.io.VTXWriter(comm, out / "fields.bp", [u, indicator], engine="BP4")
    return writer, indicator


def _write(writer, law, indicator, t: float) -> None:
    law.cell_average(law.indicator, out=indicator)
    writer.write(t)


def _plots(out: Path, summary: dict, other: dict | None) -> None:
    fig, axes = subplots(1, 2, size=(11, 4))
    axes = axes[0]
    label = summary["law"]
    axes[0].plot(
        summary["displacement"], summary["force"], "r-" if label == "model" else "k-", label=label
    )
    if other is not None:
        axes[0].plot(
            other["displacement"],
            other["force"],
            "k--" if label == "model" else "r--",
            label=other["law"],
        )
        axes[0].set_title(f"normalised L2 difference {summary['force_difference_vs_compare']:.3f}")
    axes[0].set_xlabel("end displacement U")
    axes[0].set_ylabel("reaction force")
    axes[0].legend()
    steps = np.arange(len(summary["force"]))
    axes[1].plot(steps, summary["transformed_fraction"], "b-", label="transformed fraction")
    left = [
        np.nan if v is None else v / summary["parameters"]["length"] for v in summary["front_left"]
    ]
    right = [
        np.nan if v is None else v / summary["parameters"]["length"] for v in summary["front_right"]
    ]
    axes[1].plot(steps, left, "g-", label="left front / L")
    axes[1].plot(steps, right, "m-", label="right front / L")
    if other is not None:
        axes[1].plot(
            np.arange(len(other["transformed_fraction"])),
            other["transformed_fraction"],
            "b:",
            label=f"transformed fraction ({other['law']})",
        )
    axes[1].set_title(f"{label}: transformation fronts (phase indicator > 1/2)")
    axes[1].set_xlabel("step")
    axes[1].legend()
    save_figure(fig, out / "force_displacement.png")
