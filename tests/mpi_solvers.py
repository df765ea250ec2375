"""Run under ``mpirun -n 2``: the spinodal problem stepped with the direct and the iterative preset.

``python tests/mpi_solvers.py OUT.json``: the 2-D spinodal problem (analytic ψ, mesh 12) with a
smooth initial displacement (so that the u block is not trivially zero: u = 0 is an
equilibrium of the unperturbed case), three backward-Euler steps of Δt = 2e-3 with each preset
from the same state. Rank 0 writes the largest difference of the two solutions relative to
their size, per field, the Krylov and Newton iterations, and whether the u block of the
fieldsplit has the rigid-body near-nullspace attached.
"""

import json
import sys

import numpy as np
from lse_material.fem_cases import spinodal
from mpi4py import MPI

from lse_material.fem.solvers import split_index_sets

STEPS, DT = 3, 2e-3


def _run(comm, solver: str) -> dict:
    p = spinodal._problem(comm, 2, 12, DT, None, solver, {})
    p.w.sub(0).interpolate(
        lambda x: np.vstack([0.01 * np.sin(np.pi * x[0]) * x[1], 0.02 * x[0] * (1 - x[1])])
    )
    p.w.sub(1).interpolate(spinodal._initial_concentration(2, 0))
    p.w.x.scatter_forward()
    p.w_n.x.array[:] = p.w.x.array
    newton, krylov, converged = 0, 0, True
    for _ in range(STEPS):
        result = p.solver.solve()
        converged &= result.converged
        newton, krylov = newton + result.iterations, krylov + result.linear_iterations
        p.w_n.x.array[:] = p.w.x.array
    nullspace = None
    if solver == "iterative":
        sub = p.solver.problem.solver.getKSP().getPC().getFieldSplitSubKSP()[0]
        space = sub.getOperators()[0].getNearNullSpace()
        nullspace = len(space.getVecs()) if space.handle else 0
    return {
        "w": p.w,
        "converged": converged,
        "newton": newton,
        "krylov": krylov,
        "nullspace": nullspace,
    }


def main(path: str) -> None:
    comm = MPI.COMM_WORLD
    direct, iterative = _run(comm, "direct"), _run(comm, "iterative")
    W = direct["w"].function_space
    is_u, is_ch, _ = split_index_sets(W)
    start = W.dofmap.index_map.local_range[0]
    difference = {}
    for name, index_set, step, offset in (
        ("u", is_u, 1, 0),
        ("c", is_ch, 2, 0),
        ("mu", is_ch, 2, 1),
    ):
        local = index_set.getIndices()[offset::step] - start
        a, b = direct["w"].x.array[local], iterative["w"].x.array[local]
        size = comm.allreduce(float(np.abs(a).max(initial=0)), op=MPI.MAX)
        diff = comm.allreduce(float(np.abs(a - b).max(initial=0)), op=MPI.MAX)
        difference[name] = {"relative": diff / size, "size": size}
    if comm.rank == 0:
        out = {
            "ranks": comm.size,
            "difference": difference,
            **{
                f"{k}_{name}": run[k]
                for name, run in (("direct", direct), ("iterative", iterative))
                for k in ("converged", "newton", "krylov", "nullspace")
            },
        }
        with open(path, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
