"""Run under ``mpirun -n 1`` and ``-n 3``: 2 cells, so with 3 ranks one rank owns none.

``python tests/mpi_empty_rank.py OUT.json``: both laws (QuadratureLaw with a prescribed c marked
fixed, QuadratureStateLaw with the metamaterial reference) through update, the finite and
training-box checks, the diagnostics and a Newton solve; rank 0 writes the global numbers
(cell values ordered by cell midpoint, so they do not depend on the partition). A rank that
hangs instead is caught by the test's timeout.
"""

import json
import sys

import numpy as np
import ufl
from lse_material.training.data import mechanochemical as mc
from lse_material.training.data import metamaterial as mm
from mpi4py import MPI

from lse_material.fem import (
    LawNewtonSolver,
    QuadratureLaw,
    QuadratureStateLaw,
    ReactionForce,
    dolfinx,
)


class Boxed:
    """The analytic ψ with a tight training box, so that points fall outside it."""

    input_names = mc.INPUT_NAMES
    training_box = {n: (-0.01, 0.01) for n in mc.INPUT_NAMES[:6]} | {"c": (0.0, 1.0)}

    def derivatives(self, x, *, hessian=True, wrt=None):
        return mc.potential().derivatives(x, hessian=hessian, wrt=wrt)


def _gather_cells(points, values: np.ndarray):
    """Cell values ``(n_cells, k)`` of all ranks on rank 0, ordered by cell midpoint."""
    mesh = points.mesh
    mid = dolfinx.mesh.compute_midpoints(mesh, mesh.topology.dim, points.cells)
    rows = mesh.comm.gather(np.hstack([mid, values]), root=0)
    if mesh.comm.rank:
        return None
    rows = np.vstack(rows)
    return rows[np.lexsort(rows[:, :3].T[::-1])][:, 3:].tolist()


def _stretch_bcs(mesh, V, stretch):
    fdim = mesh.topology.dim - 1
    bcs = []
    for at, value in ((0.0, 0.0), (1.0, stretch)):
        facets = dolfinx.mesh.locate_entities_boundary(
            mesh, fdim, lambda x, a=at: np.isclose(x[0], a)
        )
        dofs = dolfinx.fem.locate_dofs_topological(V, fdim, facets)
        bcs.append(dolfinx.fem.dirichletbc(np.array([value, 0.0]), dofs, V))
    return bcs


def quadrature_law(mesh) -> dict:
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 2, (2,)))
    u = dolfinx.fem.Function(V)
    c = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("DG", 0)))
    c.interpolate(lambda x: (x[0] > x[1]).astype(np.float64))
    inputs, _ = mc.ufl_inputs(u, c)
    law = QuadratureLaw(
        Boxed(), inputs, mesh, fixed=["c"], quadrature_degree=2, on_outside="ignore"
    )
    F = ufl.derivative(law.energy_density() * law.dx, u, ufl.TestFunction(V))
    u.interpolate(lambda x: np.vstack([0.05 * x[0], 0 * x[0]]))
    result = LawNewtonSolver(
        F, u, [law], bcs=_stretch_bcs(mesh, V, 0.05), prefix="empty_q_"
    ).solve()
    law.update_diagnostics()
    q = law.quadrature
    law.on_outside = "raise"
    try:
        law.check_training_box()
        box_message = None
    except ValueError as error:
        box_message = str(error).split(" (on_outside")[0]
    return {
        "law_newton_norms": result.residual_norms,
        "law_reaction": ReactionForce(F, u, lambda x: np.isclose(x[0], 1.0))(),
        "law_fraction_outside": law.fraction_outside_box(),
        "law_box_message_length": len(box_message or ""),
        "law_cell_min_eigenvalue": _gather_cells(q, q.cell_means(law.min_eigenvalue)),
        "law_cell_energy": _gather_cells(q, q.cell_means(law.psi0)),
        "law_cell_inputs": _gather_cells(q, q.cell_means(law.x0)),
    }


def state_law(mesh) -> dict:
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (2,)))
    u = dolfinx.fem.Function(V)
    e = ufl.sym(ufl.grad(u))
    strain = {"eps11": e[0, 0], "eps22": e[1, 1], "eps33": 0.0, "2eps23": 0.0, "2eps13": 0.0}
    law = QuadratureStateLaw(mm.ReferenceLaw(), strain | {"2eps12": 2 * e[0, 1]}, mesh, dt=0.01)
    v = ufl.TestFunction(V)
    ev = ufl.sym(ufl.grad(v))
    F = ufl.dot(law.stress(), ufl.as_vector([ev[0, 0], ev[1, 1], 0, 0, 0, 2 * ev[0, 1]])) * law.dx
    solver = LawNewtonSolver(F, u, [law], bcs=_stretch_bcs(mesh, V, -0.12), prefix="empty_s_")
    result = solver.solve()
    law.commit()
    q = law.quadrature
    return {
        "state_newton_norms": result.residual_norms,
        "state_reaction": ReactionForce(F, u, lambda x: np.isclose(x[0], 1.0))(),
        "state_cell_indicator": _gather_cells(q, q.cell_means(law.indicator)),
        "state_cell_stress": _gather_cells(q, q.cell_means(law.sigma0)),
    }


def nan_everywhere(mesh) -> int:
    """A NaN in the cell of the last rank that owns one: how many ranks raised (all must)."""
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (2,)))
    u = dolfinx.fem.Function(V)
    c = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("DG", 0)))
    owner = mesh.comm.allreduce(
        mesh.comm.rank if mesh.topology.index_map(2).size_local else -1, op=MPI.MAX
    )
    if mesh.comm.rank == owner:
        c.x.array[0] = np.nan
    inputs, _ = mc.ufl_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh, fixed=["c"])
    try:
        law.update()
        raised = 0
    except ValueError:
        raised = 1
    return mesh.comm.allreduce(raised, op=MPI.SUM)


def main(out: str) -> None:
    comm = MPI.COMM_WORLD
    mesh = dolfinx.mesh.create_unit_square(comm, 1, 1)  # 2 triangles
    cells = comm.gather(mesh.topology.index_map(2).size_local, root=0)
    results = quadrature_law(mesh) | state_law(mesh)
    raised = nan_everywhere(mesh)
    if comm.rank == 0:
        results |= {"ranks": comm.size, "cells_per_rank": cells, "nan_raised_on_every_rank": raised}
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
