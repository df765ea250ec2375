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
  from the saved state (the failed trial leaves no trace).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import basix.ufl
import numpy as np
import ufl
from lse_material.training.data import mechanochemical as mc
from mpi4py import MPI

from lse_material.fem._dolfinx import dolfinx
from lse_material.fem.newton import LawNewtonSolver
from lse_material.fem.quadrature import QuadratureLaw
from lse_material.jsonio import write_json

__all__ = ["SpinodalResult", "simulate_spinodal", "register"]

KAPPA, MOBILITY, VISCOSITY = 1e-2, 1e-2, 1e-2  # [ours]


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


def _inputs(u, c, dim: int):
    """Voigt Green–Lagrange strain (engineering shears) and c, in mechanochemical.INPUT_NAMES order."""
    F = ufl.Identity(dim) + ufl.grad(u)
    Ed = 0.5 * (F.T * F - ufl.Identity(dim))
    if dim == 2:
        E = ufl.as_matrix([[Ed[0, 0], Ed[0, 1], 0], [Ed[1, 0], Ed[1, 1], 0], [0, 0, 0]])
    else:
        E = Ed
    return ufl.as_vector([E[0, 0], E[1, 1], E[2, 2], 2 * E[1, 2], 2 * E[0, 2], 2 * E[0, 1], c]), E


def simulate_spinodal(
    *,
    out: str | Path,
    model: str | Path | None = None,
    analytic: bool = False,
    dim: int = 2,
    mesh: int = 32,
    t_end: float = 0.3,
    seed: int = 0,
    dt: float = 1e-3,
    dt_max: float = 0.05,
    max_steps: int = 400,
    write_every: int = 5,
) -> SpinodalResult:
    """Run the case; write VTX fields, PNG plots and ``out/summary.json``. Works under mpirun."""
    comm = MPI.COMM_WORLD
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}.")
    if not analytic and model is None:
        raise ValueError("give --model MODEL (a trained mechanochemical model file) or --analytic.")
    if mesh < 2 or t_end <= 0 or dt <= 0:
        raise ValueError(
            f"need mesh >= 2, t_end > 0, dt > 0; got mesh={mesh}, t_end={t_end}, dt={dt}."
        )
    out = Path(out)
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

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

    inputs, E = _inputs(u, c, dim)
    law = None
    if analytic:
        density = mc.energy_ufl(E, c)
        dx = ufl.Measure("dx", domain=domain, metadata={"quadrature_degree": 2})
    else:
        import lse_material

        potential = lse_material.load(model)
        if tuple(potential.input_names) != mc.INPUT_NAMES:
            raise ValueError(
                f"{model}: inputs {potential.input_names}; this case needs {mc.INPUT_NAMES}."
            )
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
        petsc_options={"snes_max_it": 12, "snes_linesearch_type": "basic"},
    )

    w.sub(1).interpolate(_initial_concentration(dim, seed))
    w.x.scatter_forward()
    w_n.x.array[:] = w.x.array

    energy_form = dolfinx.fem.form(free_energy)
    mass_form = dolfinx.fem.form(c * dx)
    one = dolfinx.fem.form(dolfinx.fem.Constant(domain, 1.0) * dx)
    phase_form = dolfinx.fem.form(ufl.conditional(ufl.gt(c, 0.5), 1.0, 0.0) * dx)
    volume = comm.allreduce(dolfinx.fem.assemble_scalar(one), op=MPI.SUM)

    def measure(refresh_law: bool):
        # After a converged solve the law is current: SNES's last residual evaluation is at
        # the returned iterate. Only the initial state needs an explicit update.
        if law is not None and refresh_law:
            law.update()
        total = [
            comm.allreduce(dolfinx.fem.assemble_scalar(f), op=MPI.SUM)
            for f in (energy_form, mass_form, phase_form)
        ]
        return total[0], total[1], total[2] / volume

    writers, fields = _writers(domain, w, law, out, comm)
    history = {
        "time": [],
        "energy": [],
        "mass": [],
        "phase_fraction": [],
        "newton_iterations": [],
        "dt": [],
    }

    def record(t, iterations):
        e, m, pf = measure(refresh_law=iterations == 0)
        for key, value in zip(history, (t, e, m, pf, iterations, float(dt_c.value)), strict=True):
            history[key].append(value)

    t, step, failures = 0.0, 0, 0
    record(t, 0)
    loop_start = time.perf_counter()
    _write(writers, fields, w, law, t)
    while t < t_end - 1e-12 and step < max_steps:
        dt_step = min(float(dt_c.value), t_end - t)
        dt_c.value = dt_step
        saved = w.x.array.copy()
        result = solver.solve()
        if not result.converged:
            w.x.array[:] = saved  # the failed trial leaves no trace
            w.x.scatter_forward()
            dt_c.value = dt_step / 2
            failures += 1
            if dt_c.value < 1e-9:
                raise RuntimeError(
                    f"time step fell below 1e-9 at t = {t}: the solve keeps failing."
                )
            continue
        t += dt_step
        step += 1
        w_n.x.array[:] = w.x.array
        record(t, result.iterations)
        if step % write_every == 0:
            _write(writers, fields, w, law, t)
        if result.iterations <= 4:
            dt_c.value = min(dt_step * 1.5, dt_max)
    loop_seconds = time.perf_counter() - loop_start
    _write(writers, fields, w, law, t)
    for writer in writers:
        writer.close()
    peak_mb = comm.allreduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, op=MPI.MAX)

    dofs_global = W.dofmap.index_map.size_global * W.dofmap.index_map_bs
    summary = dict(history)
    summary.update(
        ranks=comm.size,
        dofs=int(dofs_global),
        seconds=time.perf_counter() - t_start,
        steps=step,
        loop_seconds=loop_seconds,
        seconds_per_step=loop_seconds / max(step, 1),
        peak_memory_mb_per_rank=peak_mb,
        failed_steps=failures,
        dim=dim,
        mesh=mesh,
        analytic=analytic,
        model=None if model is None else str(model),
        seed=seed,
        parameters={"kappa": KAPPA, "mobility": MOBILITY, "viscosity": VISCOSITY},
    )
    if comm.rank == 0:
        write_json(out / "summary.json", summary)
        _plots(out, summary)
    _snapshot(out, w, comm)
    return SpinodalResult(summary, out)


def _writers(domain, w, law, out: Path, comm):
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
        DG0 = dolfinx.fem.functionspace(domain, ("DG", 0))
        fields["dominant_well"] = dolfinx.fem.Function(DG0, name="dominant_well")
        fields["min_tangent_eigenvalue"] = dolfinx.fem.Function(DG0, name="min_tangent_eigenvalue")
        diagnostics = [fields["dominant_well"], fields["min_tangent_eigenvalue"]]
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
        n_cells = law.mesh.topology.index_map(law.mesh.topology.dim).size_local
        qp = law.points_per_cell
        weights = law.phase_weights.x.array[
            : n_cells * qp * law.phase_weights.function_space.dofmap.bs
        ]
        weights = weights.reshape(n_cells, qp, -1).mean(axis=1)
        eig = law.min_eigenvalue.x.array[: n_cells * qp].reshape(n_cells, qp).mean(axis=1)
        for name, cell_values in (
            ("dominant_well", weights.argmax(axis=1).astype(np.float64)),
            ("min_tangent_eigenvalue", eig),
        ):
            f = fields[name]
            ndofs = f.function_space.dofmap.dof_layout.num_dofs
            f.x.array[: n_cells * ndofs] = np.repeat(cell_values, ndofs)
            f.x.scatter_forward()
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
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        xy, values = np.concatenate(xs), np.concatenate(cs)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        im = ax.tricontourf(xy[:, 0], xy[:, 1], values, levels=30, cmap="viridis")
        fig.colorbar(im, ax=ax, label="c")
        ax.set_aspect("equal")
        ax.set_title("c at the final time")
        fig.tight_layout()
        fig.savefig(out / "concentration_final.png", dpi=110)
        plt.close(fig)


def _plots(out: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(summary["time"], summary["energy"])
    axes[0].set_ylabel("free energy")
    axes[1].plot(summary["time"], summary["phase_fraction"])
    axes[1].set_ylabel("volume fraction with c > 0.5")
    axes[2].semilogy(summary["time"][1:], summary["dt"][1:])
    axes[2].set_ylabel("Δt")
    for ax in axes:
        ax.set_xlabel("time")
    fig.tight_layout()
    fig.savefig(out / "energy_phase.png", dpi=110)
    plt.close(fig)


def bench_spinodal(*, model: str, out: str, mesh: int = 128, steps: int = 8) -> dict:
    """Time per step: model vs analytic (1 rank), and the model on 1 vs 2 ranks; peak memory.

    Each run is a separate ``mpirun`` process with a fixed number of steps (``--max-steps``) and
    the same mesh; the loop time excludes start-up and form compilation. Writes summary.json.
    Mesh 128 (66 k dofs) by default: about two thirds of a step is the direct (MUMPS) solve,
    whose 2-rank speed-up grows with the problem size (measured: 1.55–1.58 at mesh 96, 1.61–1.76
    at 128, 1.73 at 160).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    runs = {}
    for name, ranks, extra in (
        ("analytic_1", 1, ["--analytic"]),
        ("model_1", 1, ["--model", str(model)]),
        ("model_2", 2, ["--model", str(model)]),
    ):
        folder = out / name
        cmd = [
            str(bindir / "mpirun"),
            "-n",
            str(ranks),
            str(bindir / "lse-material"),
            "simulate",
            "spinodal",
            "--out",
            str(folder),
            "--mesh",
            str(mesh),
            "--t-end",
            "1e9",
            "--max-steps",
            str(steps),
            *extra,
        ]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        s = json.loads((folder / "summary.json").read_text())
        runs[name] = {
            k: s[k]
            for k in (
                "seconds_per_step",
                "loop_seconds",
                "steps",
                "dofs",
                "ranks",
                "peak_memory_mb_per_rank",
                "newton_iterations",
            )
        }
    result = {
        "mesh": mesh,
        "steps": steps,
        "runs": runs,
        "step_time_ratio_model_over_analytic": runs["model_1"]["seconds_per_step"]
        / runs["analytic_1"]["seconds_per_step"],
        "speedup_1_to_2_ranks": runs["model_1"]["seconds_per_step"]
        / runs["model_2"]["seconds_per_step"],
    }
    write_json(out / "summary.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return result


def register(groups) -> None:
    b = groups["bench"].add_parser(
        "spinodal", help="time per step: model vs analytic, 1 vs 2 ranks, memory"
    )
    b.add_argument("--model", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--mesh", type=int, default=128)
    b.add_argument("--steps", type=int, default=8)
    b.set_defaults(func=bench_spinodal)
    p = groups["simulate"].add_parser(
        "spinodal", help="Cahn–Hilliard + finite-strain elasticity (serial or mpirun)"
    )
    p.add_argument("--model", help="a trained mechanochemical model file")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--analytic", action="store_true", help="the data model's ψ in pure UFL (reference run)"
    )
    p.add_argument("--dim", type=int, default=2, choices=[2, 3])
    p.add_argument("--mesh", type=int, default=32)
    p.add_argument("--t-end", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=400)
    p.set_defaults(func=simulate_spinodal)
