"""Verification problem (issue 3): a finite-strain plane-strain block with a prescribed c field.

The unit square, c = 1 in the right half and 0 in the left (a DG0 field, not an unknown),
clamped on the left edge (u = 0) and stretched on the right edge (u = (stretch, 0)). The
plane-strain Green–Lagrange strain is embedded in 3×3 (E33 = E13 = E23 = 0). Solved with a
law at quadrature points (any potential with the mechanochemical inputs, trained or analytic)
or, with ``potential=None``, with the analytic ψ written in pure UFL (the reference).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import NamedTuple

import numpy as np
import ufl
from lse_material.training.data import mechanochemical as mc
from mpi4py import MPI

from lse_material.fem._dolfinx import dolfinx
from lse_material.fem.newton import LawNewtonSolver, NewtonResult
from lse_material.fem.quadrature import QuadratureLaw
from lse_material.jsonio import write_json

__all__ = ["BlockResult", "solve_block", "mechanochemical_inputs"]


class BlockResult(NamedTuple):
    """newton: the NewtonResult (residual history, iterations); reaction: x-force on the right
    edge (MPI-reduced); u_norm: ‖u‖_L2 (MPI-reduced); u: the displacement Function;
    seconds_per_iteration: wall time of the solve / Newton iterations; law: the QuadratureLaw
    (None for the pure-UFL solve), for its diagnostics."""

    newton: NewtonResult
    reaction: float
    u_norm: float
    u: object
    seconds_per_iteration: float
    law: QuadratureLaw | None = None


def mechanochemical_inputs(u, c):
    """The law's inputs (mechanochemical INPUT_NAMES order) of a 2-D displacement u and a field c.

    Returns (inputs UFL vector (7,), E as a 3×3 UFL tensor).
    """
    F = ufl.Identity(2) + ufl.grad(u)
    E2 = 0.5 * (F.T * F - ufl.Identity(2))
    E = ufl.as_matrix([[E2[0, 0], E2[0, 1], 0], [E2[1, 0], E2[1, 1], 0], [0, 0, 0]])
    inputs = ufl.as_vector([E[0, 0], E[1, 1], E[2, 2], 2 * E[1, 2], 2 * E[0, 2], 2 * E[0, 1], c])
    return inputs, E


def solve_block(
    potential=None,
    *,
    mesh_n: int = 8,
    stretch: float = 0.1,
    degree: int = 2,
    quadrature_degree: int = 4,
    comm=MPI.COMM_WORLD,
    on_outside: str = "ignore",
    device: str = "cpu",
    petsc_options: dict | None = None,
) -> BlockResult:
    """Solve the block with ``potential`` at quadrature points, or with pure UFL if None.

    ``mesh_n × mesh_n`` unit square (triangles), P``degree`` displacement, quadrature degree
    ``quadrature_degree``; one Newton solve from the homogeneous stretch ``u = (stretch·x, 0)``.
    ``potential`` must take the mechanochemical inputs (``mechanochemical_inputs``).
    """
    mesh = dolfinx.mesh.create_unit_square(
        comm, mesh_n, mesh_n, ghost_mode=dolfinx.mesh.GhostMode.shared_facet
    )
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree, (2,)))
    u = dolfinx.fem.Function(V, name="u")
    c = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("DG", 0)), name="c")
    c.interpolate(lambda x: (x[0] > 0.5).astype(np.float64))
    inputs, E = mechanochemical_inputs(u, c)
    dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": quadrature_degree})
    laws = []
    if potential is None:
        density = mc.energy_ufl(E, c)
    else:
        law = QuadratureLaw(
            potential,
            inputs,
            mesh,
            quadrature_degree=quadrature_degree,
            on_outside=on_outside,
            device=device,
        )
        laws.append(law)
        density = law.energy_density()
    F = ufl.derivative(density * dx, u, ufl.TestFunction(V))

    fdim = mesh.topology.dim - 1
    left = dolfinx.mesh.locate_entities_boundary(mesh, fdim, lambda x: np.isclose(x[0], 0.0))
    right = dolfinx.mesh.locate_entities_boundary(mesh, fdim, lambda x: np.isclose(x[0], 1.0))
    zero = dolfinx.fem.Constant(mesh, np.zeros(2))
    pull = dolfinx.fem.Constant(mesh, np.array([stretch, 0.0]))
    bcs = [
        dolfinx.fem.dirichletbc(zero, dolfinx.fem.locate_dofs_topological(V, fdim, left), V),
        dolfinx.fem.dirichletbc(pull, dolfinx.fem.locate_dofs_topological(V, fdim, right), V),
    ]
    u.interpolate(lambda x: np.vstack([stretch * x[0], np.zeros(x.shape[1])]))  # homogeneous start
    solver = LawNewtonSolver(
        F,
        u,
        laws,
        bcs=bcs,
        petsc_options=petsc_options,
        prefix=f"block_{'law' if laws else 'ufl'}_",
    )
    result = solver.solve()
    # Reaction: the residual's x-component tested with a function equal to 1 on the right edge.
    w = dolfinx.fem.Function(V)
    w.interpolate(
        lambda x: np.vstack([np.isclose(x[0], 1.0).astype(np.float64), np.zeros(x.shape[1])])
    )
    if laws:
        laws[0].update()
    reaction_form = dolfinx.fem.form(ufl.action(F, w))
    reaction = comm.allreduce(dolfinx.fem.assemble_scalar(reaction_form), op=MPI.SUM)
    u_norm = np.sqrt(
        comm.allreduce(
            dolfinx.fem.assemble_scalar(dolfinx.fem.form(ufl.inner(u, u) * dx)), op=MPI.SUM
        )
    )
    return BlockResult(
        result,
        float(reaction),
        float(u_norm),
        u,
        result.seconds_per_iteration,
        laws[0] if laws else None,
    )


def main(argv=None) -> int:
    """``python -m lse_material.fem_cases.verification [--ufl | --model FILE] --out FILE``: JSON of global numbers.

    Without ``--ufl`` or ``--model`` the analytic ψ runs through the law interface. Runs under
    ``mpirun -n N``; rank 0 writes the file.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model", help="model file; default: the analytic ψ through the law interface"
    )
    parser.add_argument(
        "--ufl", action="store_true", help="the pure-UFL reference instead of a law"
    )
    parser.add_argument("--mesh", type=int, default=8)
    parser.add_argument("--stretch", type=float, default=0.1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.ufl:
        potential = None
    elif args.model:
        import lse_material

        potential = lse_material.load(args.model)
    else:
        potential = mc.potential()
    t0 = time.perf_counter()
    r = solve_block(potential, mesh_n=args.mesh, stretch=args.stretch)
    if MPI.COMM_WORLD.rank == 0:
        with open(args.out, "w") as f:
            json.dump(
                {
                    "converged": r.newton.converged,
                    "iterations": r.newton.iterations,
                    "residual_norms": r.newton.residual_norms,
                    "convergence_orders": r.newton.convergence_orders,
                    "seconds_per_iteration": r.seconds_per_iteration,
                    "reaction": r.reaction,
                    "u_norm": r.u_norm,
                    "ranks": MPI.COMM_WORLD.size,
                    "seconds": time.perf_counter() - t0,
                },
                f,
            )
    return 0


def bench_bvp(
    *, model: str, out: str, mesh: int = 48, stretch: float = 0.1, threads: int = 1
) -> dict:
    """Time per Newton iteration of the verification block: the law vs the analytic-UFL form.

    Both solves use the same mesh, elements, quadrature and solver; the first (JIT-compiling)
    solve of each is discarded. Writes ``out/summary.json``.
    """
    from pathlib import Path

    import torch

    import lse_material

    torch.set_num_threads(threads)
    potential = lse_material.load(model)
    solve_block(potential, mesh_n=4)  # compile the forms once
    solve_block(None, mesh_n=4)
    law = solve_block(potential, mesh_n=mesh, stretch=stretch)
    reference = solve_block(None, mesh_n=mesh, stretch=stretch)
    diff = np.linalg.norm(law.u.x.array - reference.u.x.array) / np.linalg.norm(reference.u.x.array)
    result = {
        "mesh": mesh,
        "ranks": MPI.COMM_WORLD.size,
        "threads": threads,
        "law": {
            "seconds_per_iteration": law.seconds_per_iteration,
            "iterations": law.newton.iterations,
            "residual_norms": law.newton.residual_norms,
            "reaction": law.reaction,
        },
        "ufl": {
            "seconds_per_iteration": reference.seconds_per_iteration,
            "iterations": reference.newton.iterations,
            "residual_norms": reference.newton.residual_norms,
            "reaction": reference.reaction,
        },
        "newton_iteration_ratio_law_over_ufl": law.seconds_per_iteration
        / reference.seconds_per_iteration,
        "displacement_rel_difference": float(diff),
        "reaction_rel_difference": abs(law.reaction - reference.reaction) / abs(reference.reaction),
    }
    if MPI.COMM_WORLD.rank == 0:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "summary.json", result)
        print(
            json.dumps(
                {
                    k: result[k]
                    for k in (
                        "newton_iteration_ratio_law_over_ufl",
                        "displacement_rel_difference",
                        "reaction_rel_difference",
                    )
                },
                indent=2,
            )
        )
    return result


def register(groups) -> None:
    p = groups["bench"].add_parser(
        "bvp", help="Newton iteration time: law at quadrature points vs analytic UFL"
    )
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--mesh", type=int, default=48)
    p.add_argument("--stretch", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=bench_bvp)


if __name__ == "__main__":
    sys.exit(main())
