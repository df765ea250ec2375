"""Run under ``mpirun -n 2``: a NaN on one rank only must raise a ValueError on every rank.

``python tests/mpi_non_finite.py OUT_PREFIX`` writes ``OUT_PREFIX.<rank>.json`` with the
exception each rank saw (a rank that hangs instead is caught by the test's timeout).
"""

import json
import sys

import numpy as np
import ufl
from lse_material.training.data import mechanochemical as mc
from mpi4py import MPI

from lse_material.fem import LawNewtonSolver, QuadratureLaw, dolfinx


def main(prefix: str) -> None:
    comm = MPI.COMM_WORLD
    mesh = dolfinx.mesh.create_unit_square(comm, 4, 4)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (2,)))
    u = dolfinx.fem.Function(V)
    c = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("DG", 0)))
    if comm.rank == 0:
        c.x.array[0] = np.nan  # an owned cell of rank 0 only
    inputs, _ = mc.ufl_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh, quadrature_degree=2)
    F = ufl.derivative(law.energy_density() * law.dx, u, ufl.TestFunction(V))
    solver = LawNewtonSolver(F, u, [law], prefix="mpi_nan_")
    seen = {"rank": comm.rank, "type": None, "message": None}
    try:
        solver.solve()
    except ValueError as error:
        seen |= {"type": type(error).__name__, "message": str(error)}
    with open(f"{prefix}.{comm.rank}.json", "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":
    main(sys.argv[1])
