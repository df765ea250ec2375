"""FE case: a phase-transforming metamaterial bar under cyclic displacement control (SPEC §5).

A bar ``[0, L] × [0, H]`` (2-D plane strain) or ``[0, L] × [0, H]²`` (3-D), small strain, P1
displacement, one quadrature point per simplex. The law is the trained hidden-state model
(``--model``) or the data model's return mapping (``--reference``), both through
``lse_material.fem.state_law.QuadratureStateLaw``: trial steps at quadrature points, the
algorithmic tangent, ``commit()`` after a converged step, ``revert()`` after a failed one (the
step is then cut in half and retried).

Choices [ours], documented:
- Boundary conditions: u_x = 0 at x = 0, u_x = U(t) at x = L, and rollers (zero normal
  displacement) on the lateral faces. The lateral constraint gives the uniaxial strain state
  ``ε = ε11 e1⊗e1`` of the training data (strain-controlled, SPEC §5): the trained model is used
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
- Force: the reaction at x = L, ``R = F(u; w)`` with ``w = (x/L) e1`` (per unit thickness in 2-D),
  measured after the step is committed (u_n = u: the viscous part is then zero).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import ufl
from mpi4py import MPI

from lse_material.fem._dolfinx import dolfinx
from lse_material.fem.newton import LawNewtonSolver
from lse_material.fem.state_law import QuadratureStateLaw
from lse_material.hidden_state import STRAIN_NAMES

__all__ = ["MetamaterialBarResult", "force_difference", "simulate_metamaterial", "register"]

DATA_DT = 1.0 / 99  # the training data's time step (100 steps on [0, 1])
C11 = 1.0 + 4.0 * 0.5 / 3.0  # κ + 4μ/3 of the data model: the uniaxial-strain modulus


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


def _load_law(model, reference: bool):
    if reference:
        from lse_material.training.metamaterial import ReferenceLaw

        return ReferenceLaw()
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
    return law


def simulate_metamaterial(
    *,
    out: str | Path,
    model: str | Path | None = None,
    reference: bool = False,
    dim: int = 2,
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
    fail_step: int | None = None,
) -> MetamaterialBarResult:
    """Run the bar; write VTX fields, the force–displacement plot and ``out/summary.json``.

    Works under mpirun. ``compare``: a folder with another run's summary.json (same options, the
    other law): its force curve is drawn too and the normalised L2 difference is stored.
    ``fail_step``: force Newton to fail once at that step (a test of commit/revert: the step is
    cut and retried).
    """
    comm = MPI.COMM_WORLD
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}.")
    if nx < 2 or ny < 1 or steps_per_cycle < 4 or steps_per_cycle % 2:
        raise ValueError(
            f"need nx >= 2, ny >= 1 and an even steps_per_cycle >= 4; got nx={nx}, ny={ny}, "
            f"steps_per_cycle={steps_per_cycle}."
        )
    if not 0 <= imperfection < 1 or viscosity < 0 or not amplitudes:
        raise ValueError("need 0 <= imperfection < 1, viscosity >= 0 and at least one amplitude.")
    law_model = _load_law(model, reference)
    out = Path(out)
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

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
    strain = _voigt_strain(u, dim)
    law = QuadratureStateLaw(law_model, strain, domain, quadrature_degree=1, dt=DATA_DT)
    x = ufl.SpatialCoordinate(domain)
    x0, ell = 0.3 * length, 0.2 * length
    s = 1.0 - imperfection * ufl.exp(-abs(x[0] - x0) / ell)
    eta_dt = dolfinx.fem.Constant(domain, viscosity * C11)  # η/Δt, updated on cut steps
    F = (
        s * ufl.dot(law.stress(), _voigt_strain(v, dim)) * law.dx
        + eta_dt * ufl.inner(ufl.sym(ufl.grad(u - u_n)), ufl.sym(ufl.grad(v))) * law.dx
    )

    fdim = dim - 1
    facets = {
        "left": dolfinx.mesh.locate_entities_boundary(
            domain, fdim, lambda p: np.isclose(p[0], 0.0)
        ),
        "right": dolfinx.mesh.locate_entities_boundary(
            domain, fdim, lambda p: np.isclose(p[0], length)
        ),
    }
    bcs = []
    for name, facet in facets.items():
        dofs = dolfinx.fem.locate_dofs_topological(V.sub(0), fdim, facet)
        value = dolfinx.fem.Constant(domain, 0.0)
        bcs.append(dolfinx.fem.dirichletbc(value, dofs, V.sub(0)))
        if name == "right":
            end_value = value
    for axis in range(1, dim):  # rollers on the lateral faces
        lateral = dolfinx.mesh.locate_entities_boundary(
            domain,
            fdim,
            lambda p, a=axis: np.isclose(p[a], 0.0) | np.isclose(p[a], height),
        )
        dofs = dolfinx.fem.locate_dofs_topological(V.sub(axis), fdim, lateral)
        bcs.append(dolfinx.fem.dirichletbc(0.0, dofs, V.sub(axis)))

    solver = LawNewtonSolver(
        F,
        u,
        [law],
        bcs=bcs,
        prefix=f"metamaterial_{id(u)}_",
        petsc_options={
            "snes_linesearch_type": "basic",
            "snes_max_it": 20,
            "snes_rtol": 1e-9,
            "snes_atol": 1e-11,
        },
    )
    w = dolfinx.fem.Function(V)  # reaction: F(u; w) with w = (x/L) e1
    w.interpolate(lambda p: np.vstack([p[0] / length] + [0 * p[0]] * (dim - 1)))
    reaction_form = dolfinx.fem.form(ufl.replace(F, {v: w}))
    cell_volume = dolfinx.fem.form(
        ufl.TestFunction(dolfinx.fem.functionspace(domain, ("DG", 0))) * ufl.dx
    )
    n_cells = domain.topology.index_map(dim).size_local
    volumes = dolfinx.fem.assemble_vector(cell_volume).array[:n_cells]
    centres = dolfinx.mesh.compute_midpoints(domain, dim, np.arange(n_cells, dtype=np.int32))[:, 0]
    total_volume = comm.allreduce(volumes.sum(), op=MPI.SUM)

    def measure():
        force = comm.allreduce(dolfinx.fem.assemble_scalar(reaction_form), op=MPI.SUM)
        ind = law.cell_average(law.indicator)
        fraction = comm.allreduce(float((volumes * np.clip(ind, 0, 1)).sum()), op=MPI.SUM)
        hot = centres[ind > 0.5]
        left = comm.allreduce(float(hot.min()) if hot.size else np.inf, op=MPI.MIN)
        right = comm.allreduce(float(hot.max()) if hot.size else -np.inf, op=MPI.MAX)
        return force, fraction / total_volume, left, right

    writer, indicator_cells = _writer(domain, u, out, comm)
    schedule = _schedule(amplitudes, steps_per_cycle)
    history = {
        k: []
        for k in (
            "displacement",
            "force",
            "transformed_fraction",
            "front_left",
            "front_right",
            "newton_iterations",
        )
    }

    def record(displacement, iterations):
        force, fraction, left, right = measure()
        for key, value in zip(
            history,
            (
                displacement,
                force,
                fraction,
                left if np.isfinite(left) else None,
                right if np.isfinite(right) else None,
                iterations,
            ),
        ):
            history[key].append(value)

    law.update()
    record(0.0, 0)
    _write(writer, law, indicator_cells, 0.0)
    failures, cuts_used = 0, 0
    loop_start = time.perf_counter()
    for step in range(1, schedule.size):
        target = schedule[step] * length
        done = schedule[step - 1] * length
        fraction, iterations, forced = 1.0, 0, fail_step == step
        while done != target:
            increment = min(fraction, 1.0) * (schedule[step] - schedule[step - 1]) * length
            trial = (
                target if abs(target - done) <= abs(increment) * (1 + 1e-12) else done + increment
            )
            part = (trial - done) / ((schedule[step] - schedule[step - 1]) * length)
            law.dt = DATA_DT * part
            eta_dt.value = viscosity * C11 / part
            end_value.value = trial
            saved = u.x.array.copy()
            u.x.array[:] += (trial - done) * w.x.array  # predictor: a uniform strain increment
            u.x.scatter_forward()
            result = solver.solve()
            if forced:  # a test hook: pretend Newton failed
                result = result._replace(converged=False)
                forced = False
            if not result.converged:
                law.revert()
                u.x.array[:] = saved
                u.x.scatter_forward()
                fraction /= 2
                failures += 1
                if fraction < 2.0**-max_cuts:
                    raise RuntimeError(
                        f"step {step}: Newton failed with the step cut {max_cuts} times "
                        f"(mean strain {schedule[step]:.4f}); reduce steps or check the law."
                    )
                cuts_used = max(cuts_used, int(round(-np.log2(fraction))))
                continue
            law.update()  # the trial at the converged u, then accept it
            law.commit()
            u_n.x.array[:] = u.x.array
            done = trial
            iterations += result.iterations
        record(float(target), iterations)
        if step % write_every == 0 or step == schedule.size - 1:
            _write(writer, law, indicator_cells, float(step))
    loop_seconds = time.perf_counter() - loop_start
    writer.close()

    n_dofs = V.dofmap.index_map.size_global * V.dofmap.index_map_bs
    summary = dict(history)
    summary.update(
        law="reference" if reference else "model",
        model=None if model is None else str(model),
        ranks=comm.size,
        dim=dim,
        dofs=int(n_dofs),
        cells=int(domain.topology.index_map(dim).size_global),
        steps=int(schedule.size - 1),
        failed_steps=failures,
        max_cuts_used=cuts_used,
        seconds=time.perf_counter() - t_start,
        loop_seconds=loop_seconds,
        parameters={
            "length": length,
            "height": height,
            "amplitudes": list(amplitudes),
            "steps_per_cycle": steps_per_cycle,
            "imperfection": imperfection,
            "imperfection_at": x0,
            "imperfection_length": ell,
            "viscosity": viscosity,
            "dt": DATA_DT,
        },
    )
    other = None
    if compare is not None:
        other = json.loads((Path(compare) / "summary.json").read_text())
        summary["force_difference_vs_compare"] = force_difference(summary, other)
    if comm.rank == 0:
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, out / "summary.json")
        _plots(out, summary, other)
    return MetamaterialBarResult(summary, out)


def _writer(domain, u, out: Path, comm):
    """VTX time series fields.bp: u (P1) and the phase indicator (cell average, DG0)."""
    DG0 = dolfinx.fem.functionspace(domain, ("DG", 0))
    indicator = dolfinx.fem.Function(DG0, name="phase_indicator")
    writer = dolfinx.io.VTXWriter(comm, out / "fields.bp", [u, indicator], engine="BP4")
    return writer, indicator


def _write(writer, law, indicator, t: float) -> None:
    values = law.cell_average(law.indicator)
    indicator.x.array[: values.size] = values
    indicator.x.scatter_forward()
    writer.write(t)


def _plots(out: Path, summary: dict, other: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
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
    fig.tight_layout()
    fig.savefig(out / "force_displacement.png", dpi=110)
    plt.close(fig)


def register(groups) -> None:
    p = groups["simulate"].add_parser(
        "metamaterial", help="metamaterial bar under cyclic displacement (serial or mpirun)"
    )
    p.add_argument("--model", help="a trained metamaterial model file")
    p.add_argument("--out", required=True)
    p.add_argument("--reference", action="store_true", help="the data model's law (reference run)")
    p.add_argument("--dim", type=int, default=2, choices=[2, 3])
    p.add_argument("--nx", type=int, default=100)
    p.add_argument("--ny", type=int, default=4)
    p.add_argument("--steps-per-cycle", type=int, default=40)
    p.add_argument("--compare", help="folder of another run (same options) to compare forces with")
    p.set_defaults(func=simulate_metamaterial)
