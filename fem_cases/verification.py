"""Verification problem: a finite-strain block with a prescribed c field (2-D or 3-D).

The unit square (plane strain, the Green–Lagrange strain embedded in 3×3 with E33 = E13 =
E23 = 0) with c = 1 in the half x > 1/2 and 0 in the other (a DG0 Function), or the unit cube
with c = 0.3 x (a UFL expression of the coordinates; [ours]: c ≤ 0.3 keeps the strain energy
convex, so Newton converges from the homogeneous stretch). c is prescribed, not an unknown:
the law marks it ``fixed``. Clamped on the face x = 0 (u = 0) and stretched on the
face x = 1 (u = (stretch, 0[, 0])). Solved with a law at quadrature points (any potential with
the mechanochemical inputs, trained or analytic) or, with ``potential=None``, with the analytic
ψ written in pure UFL (the reference). ``lse-material simulate verification`` runs it and
writes the global numbers as JSON (serial or under mpirun).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import ufl
from lse_material.training.data import mechanochemical as mc
from mpi4py import MPI

from lse_material.fem import LawNewtonSolver, NewtonResult, QuadratureLaw, ReactionForce, dolfinx
from lse_material.jsonio import write_json

__all__ = ["BlockResult", "simulate_verification", "solve_block"]


class BlockResult(NamedTuple):
    """newton: the NewtonResult (residual history, iterations); reaction: x-force on the face
    x = 1 (MPI-reduced); u_norm: ‖u‖_L2 (MPI-reduced); u: the displacement Function;
    seconds_per_iteration: wall time of the solve / Newton iterations; law: the QuadratureLaw
    (None for the pure-UFL solve), for its diagnostics."""

    newton: NewtonResult
    reaction: float
    u_norm: float
    u: object
    seconds_per_iteration: float
    law: QuadratureLaw | None = None


def _mesh(comm, dim: int, n: int):
    ghosts = dolfinx.mesh.GhostMode.shared_facet
    if dim == 2:
        return dolfinx.mesh.create_unit_square(comm, n, n, ghost_mode=ghosts)
    return dolfinx.mesh.create_unit_cube(comm, n, n, n, ghost_mode=ghosts)


def solve_block(
    potential=None,
    *,
    dim: Literal[2, 3] = 2,
    mesh_n: int = 8,
    stretch: float = 0.1,
    degree: int = 2,
    quadrature_degree: int = 4,
    comm=MPI.COMM_WORLD,
    on_outside: str = "ignore",
    device: str = "cpu",
    petsc_options: dict | None = None,
    energy_objective: bool = False,
) -> BlockResult:
    """Solve the block with ``potential`` at quadrature points, or with pure UFL if None.

    ``mesh_n`` cells per side (simplices), P``degree`` displacement, quadrature degree
    ``quadrature_degree``; one Newton solve from the homogeneous stretch ``u = (stretch·x, 0…)``.
    ``potential`` must take the mechanochemical inputs (``mechanochemical.ufl_inputs``); its
    input c is marked fixed (the prescribed field), so the law differentiates the strains only.
    ``energy_objective``: the line search works on the energy ∫ψ dx (``LawNewtonSolver(energy=)``).
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}.")
    mesh = _mesh(comm, dim, mesh_n)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree, (dim,)))
    u = dolfinx.fem.Function(V, name="u")
    if dim == 2:
        c = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("DG", 0)), name="c")
        c.interpolate(lambda x: (x[0] > 0.5).astype(np.float64))
    else:  # a UFL expression of x, c in [0, 0.3]: the strain energy is convex there
        c = 0.3 * ufl.SpatialCoordinate(mesh)[0]
    inputs, E = mc.ufl_inputs(u, c)
    dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": quadrature_degree})
    laws = []
    if potential is None:
        density = mc.energy_ufl(E, c)
    else:
        law = QuadratureLaw(
            potential,
            inputs,
            mesh,
            fixed=["c"],
            quadrature_degree=quadrature_degree,
            on_outside=on_outside,
            device=device,
        )
        laws.append(law)
        density = law.energy_density()
    F = ufl.derivative(density * dx, u, ufl.TestFunction(V))

    fdim = dim - 1
    left = dolfinx.mesh.locate_entities_boundary(mesh, fdim, lambda x: np.isclose(x[0], 0.0))
    right = dolfinx.mesh.locate_entities_boundary(mesh, fdim, lambda x: np.isclose(x[0], 1.0))
    pull = np.zeros(dim)
    pull[0] = stretch
    bcs = [
        dolfinx.fem.dirichletbc(
            dolfinx.fem.Constant(mesh, value), dolfinx.fem.locate_dofs_topological(V, fdim, f), V
        )
        for value, f in ((np.zeros(dim), left), (pull, right))
    ]
    u.interpolate(lambda x: np.vstack([stretch * x[0]] + [np.zeros(x.shape[1])] * (dim - 1)))
    with LawNewtonSolver(  # closed after the solve: a loop of blocks frees its solvers
        F,
        u,
        laws,
        bcs=bcs,
        energy=density * dx if energy_objective else None,
        petsc_options=petsc_options,
        prefix=f"block{dim}_{'law' if laws else 'ufl'}_",
    ) as solver:
        result = solver.solve()
    reaction = ReactionForce(F, u, lambda x: np.isclose(x[0], 1.0), component=0)()
    u_norm = np.sqrt(
        comm.allreduce(
            dolfinx.fem.assemble_scalar(dolfinx.fem.form(ufl.inner(u, u) * dx)), op=MPI.SUM
        )
    )
    return BlockResult(
        result,
        reaction,
        float(u_norm),
        u,
        result.seconds_per_iteration,
        laws[0] if laws else None,
    )


def simulate_verification(
    *,
    out: str | Path,
    model: str | Path | None = None,
    ufl_reference: bool = False,
    dim: Literal[2, 3] = 2,
    mesh: int = 8,
    stretch: float = 0.1,
) -> dict:
    """The verification block: one Newton solve; its global numbers as JSON (rank 0 writes).

    Without ``model`` or ``ufl_reference`` the analytic ψ runs through the law interface.
    Works under mpirun. The JSON holds converged, iterations, residual_norms,
    convergence_orders, seconds_per_iteration, reaction, u_norm, ranks, seconds.

    Parameters
    ----------
    out
        the JSON file to write.
    model
        a trained mechanochemical model file (default: the analytic ψ through the law).
    ufl_reference
        solve with the analytic ψ in pure UFL instead of a law (the reference).
    dim
        2 (plane strain, unit square) or 3 (unit cube).
    mesh
        cells per side.
    stretch
        the displacement imposed on the face x = 1.
    """
    if ufl_reference and model is not None:
        raise ValueError("give either --model or --ufl-reference, not both.")
    if ufl_reference:
        potential = None
    elif model is not None:
        import lse_material

        potential = lse_material.load(model)
    else:
        potential = mc.potential()
    t0 = time.perf_counter()
    r = solve_block(potential, dim=dim, mesh_n=mesh, stretch=stretch)
    summary = {
        "converged": r.newton.converged,
        "iterations": r.newton.iterations,
        "residual_norms": r.newton.residual_norms,
        "convergence_orders": r.newton.convergence_orders,
        "seconds_per_iteration": r.seconds_per_iteration,
        "reaction": r.reaction,
        "u_norm": r.u_norm,
        "dim": dim,
        "ranks": MPI.COMM_WORLD.size,
        "seconds": time.perf_counter() - t0,
    }
    if MPI.COMM_WORLD.rank == 0:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), summary)
        print(
            f"converged {r.newton.converged} in {r.newton.iterations} iterations; "
            f"reaction {r.reaction:.10g}; ‖u‖ {r.u_norm:.10g}",
            flush=True,
        )
    return summary
