"""Arc-length continuation (PETSc SNESNEWTONAL) through a limit point known in closed form.

A chain of 1-D elements (P1 on [0, 1], u(0) = 0) with the non-convex energy ψ(ε) = ε²/2 -
ε³/2 + 0.15 ε⁴ (stress σ = ε - 1.5ε² + 0.6ε³: up, down, up) and a cross-section A(x) = 1 -
0.1 x (DG0), pulled by an end force Λ. Every element carries the same force, so equilibrium
needs Λ = A_i σ(ε_i) in each: the first limit load is A_min σ(ε₁) at σ'(ε₁) = 0 (the weakest
element), the load then falls as that element softens, and never below A_min σ(ε₂) before it
re-stiffens. The law is a QuadratureLaw on an AnalyticPotential (real DOLFINx, PETSc, SLEPc).
"""

import gc
import math
import weakref

import numpy as np
import pytest
import torch
import ufl
from mpi4py import MPI

from lse_material.fem import ArcLengthSolver, QuadratureLaw, dolfinx
from lse_material.potential import AnalyticPotential

pytestmark = pytest.mark.fem

CELLS = 8
E1, E2 = (3 - math.sqrt(1.8)) / 3.6, (3 + math.sqrt(1.8)) / 3.6  # σ'(ε) = 0


def stress(e: float) -> float:
    return e - 1.5 * e**2 + 0.6 * e**3


A_MIN = 1 - 0.1 * (1 - 0.5 / CELLS)  # the cell next to the loaded end
LIMIT, VALLEY = A_MIN * stress(E1), A_MIN * stress(E2)


def _chain(comm=MPI.COMM_WORLD):
    mesh = dolfinx.mesh.create_interval(comm, CELLS, [0.0, 1.0])
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u = dolfinx.fem.Function(V, name="u")
    area = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("DG", 0)))
    area.interpolate(lambda x: 1.0 - 0.1 * x[0])
    psi = AnalyticPotential(
        lambda x: 0.5 * x[:, 0] ** 2 - 0.5 * x[:, 0] ** 3 + 0.15 * x[:, 0] ** 4, ("eps",)
    )
    law = QuadratureLaw(psi, {"eps": u.dx(0)}, mesh, quadrature_degree=1)
    load = dolfinx.fem.Constant(mesh, 0.0)
    v = ufl.TestFunction(V)
    stored = area * law.energy_density() * law.dx
    F = ufl.derivative(stored, u, v) - load * v * ufl.ds  # ds: both ends; u(0) = 0 is fixed
    left = dolfinx.mesh.locate_entities_boundary(mesh, 0, lambda x: np.isclose(x[0], 0.0))
    bc = dolfinx.fem.dirichletbc(0.0, dolfinx.fem.locate_dofs_topological(V, 0, left), V)
    end = dolfinx.fem.form(u * ufl.ds)  # u(1), since u(0) = 0

    def end_displacement():
        return comm.allreduce(dolfinx.fem.assemble_scalar(end), op=MPI.SUM)

    solver = ArcLengthSolver(
        F,
        u,
        [law],
        load=load,
        bcs=[bc],
        energy=stored - load * u * ufl.ds,  # the total potential energy
        measure=end_displacement,
        prefix="chain_",
    )
    return solver, u


@pytest.fixture(scope="module")
def chain_path():
    torch.set_num_threads(1)
    solver, _ = _chain()
    solver.set_load(0.0)
    assert solver.solve().converged
    return solver.trace(end=0.3, step=0.02, max_steps=22)


def test_arc_length_passes_the_limit_point_and_finds_it_in_closed_form(chain_path):
    path = chain_path
    loads = np.array(path.column("load"))
    negative = np.array(path.column("negative_eigenvalues"))
    first = path.critical_points[0]
    assert first.kind == "limit"
    assert abs(first.load - LIMIT) <= 5e-3 * LIMIT, (first.load, LIMIT)
    # stable (no negative eigenvalue) up to the limit point, then one softening element
    assert (negative[: first.index] == 0).all() and negative[first.index] == 1
    # no equilibrium of the chain carries more than the limit load before an element
    # re-stiffens, and none on the softening branch less than the valley load
    until = next((c.index for c in path.critical_points[1:]), len(loads))
    assert loads[:until].max() <= LIMIT * (1 + 1e-9)
    assert loads[first.index : until].min() >= VALLEY * (1 - 1e-9)
    # the load turned back and followed the softening branch most of the way down to the
    # valley (force control could not pass the limit)
    assert loads[first.index : until].min() < VALLEY + 0.2 * (LIMIT - VALLEY)
    assert path.failed_steps >= 0 and len(path.points) == 23


def test_energy_measure_and_load_are_consistent_along_the_path(chain_path):
    """dΠ/dΛ = -u(1) on an equilibrium path (the envelope theorem): trapezoids between points."""
    p = chain_path.points
    for a, b in zip(p, p[1:]):
        if a.negative_eigenvalues or b.negative_eigenvalues:
            continue
        predicted = -0.5 * (a.measure + b.measure) * (b.load - a.load)
        assert abs((b.energy - a.energy) - predicted) <= 0.05 * abs(predicted) + 1e-12


def test_the_smallest_eigenvalue_is_the_tangent_s_at_the_start(chain_path):
    """At u = 0 every element has σ'(0) = 1: K = A/h stiffness, M = P1 mass; ω_min from numpy."""
    h = 1.0 / CELLS
    areas = 1.0 - 0.1 * (np.arange(CELLS) + 0.5) * h
    K, M = np.zeros((CELLS + 1,) * 2), np.zeros((CELLS + 1,) * 2)
    for i, a in enumerate(areas):
        K[i : i + 2, i : i + 2] += a / h * np.array([[1, -1], [-1, 1]])
        M[i : i + 2, i : i + 2] += h / 6 * np.array([[2, 1], [1, 2]])
    L = np.linalg.cholesky(M[1:, 1:])
    inv = np.linalg.inv(L)
    omega = np.linalg.eigvalsh(inv @ K[1:, 1:] @ inv.T).min()
    assert chain_path.points[0].min_eigenvalue == pytest.approx(omega, rel=1e-8)


def test_bad_arguments_raise_clearly():
    solver, u = _chain()
    with pytest.raises(ValueError, match="step must be finite"):
        solver.trace(end=1.0, step=0.0)
    with pytest.raises(ValueError, match="direction must be 1 or -1"):
        solver.trace(end=1.0, step=0.1, direction=2)
    with pytest.raises(ValueError, match="near_peak=1.5"):
        solver.trace(end=1.0, step=0.1, near_peak=1.5)
    with pytest.raises(TypeError, match="scalar dolfinx.fem.Constant"):
        ArcLengthSolver(solver.problem.F, u, [], load=1.0)


def test_a_closed_solver_is_freed_with_its_mesh():
    """PETSc holds the SNES callbacks, which hold the solver: ``close()`` (collective) breaks
    that cycle, and the solver, its mesh and communicators are freed; solving again raises."""
    solver, u = _chain()
    solver.set_load(0.0)
    assert solver.solve().converged
    solver.trace(end=0.3, step=0.02, max_steps=2)
    mesh = weakref.ref(u.function_space.mesh)
    solver.close()
    with pytest.raises(RuntimeError, match="closed"):
        solver.solve()
    del solver, u
    gc.collect()
    assert mesh() is None
