"""The DOLFINx bridge: oracle against pure UFL, Taylor test, Newton, bad input, serial = MPI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from fem_cases.verification import mechanochemical_inputs, solve_block
from lse_material.fem._dolfinx import dolfinx
from lse_material.fem.quadrature import QuadratureLaw
from training.data import mechanochemical as mc

pytestmark = pytest.mark.fem
ROOT = Path(__file__).resolve().parents[1]


def _block(n=4):
    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, n, n)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 2, (2,)))
    u = dolfinx.fem.Function(V)
    c = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("DG", 0)))
    c.interpolate(lambda x: (x[0] > 0.5).astype(np.float64))
    rng = np.random.default_rng(0)
    u.x.array[:] = 0.03 * rng.standard_normal(u.x.array.size)
    u.x.scatter_forward()
    return mesh, V, u, c


def _vector(form):
    b = dolfinx.fem.petsc.assemble_vector(dolfinx.fem.form(form))
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    return b


def _matrix(form):
    A = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(form))
    A.assemble()
    return A


def _forms(u, V, law, E, c):
    v, du = ufl.TestFunction(V), ufl.TrialFunction(V)
    F_law = ufl.derivative(law.energy_density() * law.dx, u, v)
    F_ufl = ufl.derivative(mc.energy_ufl(E, c) * law.dx, u, v)
    return F_law, ufl.derivative(F_law, u, du), F_ufl, ufl.derivative(F_ufl, u, du)


def test_law_with_the_analytic_energy_assembles_the_pure_ufl_forms():
    mesh, V, u, c = _block()
    inputs, E = mechanochemical_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh, quadrature_degree=4)
    law.update()
    F_law, J_law, F_ufl, J_ufl = _forms(u, V, law, E, c)
    b_law, b_ufl = _vector(F_law), _vector(F_ufl)
    A_law, A_ufl = _matrix(J_law), _matrix(J_ufl)
    b_law.axpy(-1.0, b_ufl)
    A_law.axpy(-1.0, A_ufl)
    assert b_law.norm() / b_ufl.norm() < 1e-10
    assert A_law.norm() / A_ufl.norm() < 1e-10


def test_taylor_test_of_the_jacobian():
    mesh, V, u, c = _block()
    inputs, E = mechanochemical_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh, quadrature_degree=4)
    F_law, J_law, _, _ = _forms(u, V, law, E, c)
    u0 = u.x.array.copy()
    direction = dolfinx.fem.Function(V)
    direction.x.array[:] = np.random.default_rng(1).standard_normal(u0.size)
    law.update()
    F0, J0 = _vector(F_law), _matrix(J_law)
    Jd = F0.duplicate()
    dvec = dolfinx.fem.petsc.create_vector(V)
    dvec.array[:] = direction.x.petsc_vec.array
    J0.mult(dvec, Jd)
    errors = []
    for h in (2e-3, 1e-3, 5e-4):
        u.x.array[:] = u0 + h * direction.x.array
        u.x.scatter_forward()
        law.update()
        r = _vector(F_law)
        r.axpy(-1.0, F0)
        r.axpy(-h, Jd)
        errors.append(r.norm())
    slopes = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(slopes > 1.9) and np.all(slopes < 2.1), slopes  # O(h²): the Jacobian is exact


@pytest.mark.parametrize("use_law", [False, True])
def test_newton_converges_quadratically(use_law):
    result = solve_block(mc.potential() if use_law else None, mesh_n=6)
    norms = result.newton.residual_norms
    assert result.newton.converged and norms[-1] < 1e-9 * norms[0]
    # Order of convergence from the last three norms above the round-off floor.
    r = np.array([n for n in norms if n > 1e-11 * norms[0]][-3:])
    order = np.log(r[2] / r[1]) / np.log(r[1] / r[0])
    assert order > 1.8, (order, norms)


def test_the_trained_model_and_the_analytic_law_agree_in_the_block():
    """Same block, same mesh: the analytic law vs pure UFL to solver tolerance."""
    ufl_result = solve_block(None, mesh_n=6)
    law_result = solve_block(mc.potential(), mesh_n=6)
    assert abs(law_result.reaction - ufl_result.reaction) < 1e-8 * abs(ufl_result.reaction)


def test_non_finite_inputs_raise_naming_the_cells():
    mesh, V, u, c = _block()
    c.x.array[3] = np.nan
    inputs, _ = mechanochemical_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh, quadrature_degree=2)
    with pytest.raises(
        ValueError, match=r"non-finite inputs .* in 1 cells \(global cell indices \[3\]\)"
    ):
        law.update()


def test_points_outside_the_training_box_warn_or_raise():
    class Boxed:
        input_names = mc.INPUT_NAMES
        training_box = {n: (-0.01, 0.01) for n in mc.INPUT_NAMES[:6]} | {"c": (0.0, 1.0)}

        def derivatives(self, x, *, hessian=True):
            return mc.potential().derivatives(x, hessian=hessian)

    mesh, V, u, c = _block()
    inputs, _ = mechanochemical_inputs(u, c)
    law = QuadratureLaw(Boxed(), inputs, mesh, quadrature_degree=2, on_outside="raise")
    with pytest.raises(ValueError, match="outside the model's training box"):
        law.update()
    law.on_outside = "ignore"
    law.update()
    assert 0.5 < law.fraction_outside_box() <= 1.0


def test_minimum_tangent_eigenvalue_field():
    mesh, V, u, c = _block()
    u.x.array[:] = 0.0
    inputs, _ = mechanochemical_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh, quadrature_degree=2)
    law.update()
    law.update_diagnostics()
    x = torch.zeros(1, 7, dtype=torch.float64)
    x[0, 6] = 1.0  # at E = 0, c = 1 the strain energy is concave: negative eigenvalue
    expected = float(torch.linalg.eigvalsh(mc.potential().derivatives(x).hessian)[0, 0])
    values = law.min_eigenvalue.x.array
    assert np.isclose(values.min(), expected) and values.max() > 0


@pytest.mark.mpi
@pytest.mark.parametrize("mode", [["--ufl"], []])
def test_serial_and_two_ranks_agree(tmp_path, mode):
    results = []
    for ranks in (1, 2):
        out = tmp_path / f"r{ranks}.json"
        cmd = [
            str(Path(sys.executable).parent / "mpirun"),
            "-n",
            str(ranks),
            sys.executable,
            "-m",
            "fem_cases.verification",
            "--mesh",
            "6",
            "--out",
            str(out),
            *mode,
        ]
        subprocess.run(cmd, check=True, cwd=ROOT, timeout=300)
        results.append(json.loads(out.read_text()))
    serial, parallel = results
    assert parallel["ranks"] == 2 and serial["converged"] and parallel["converged"]
    assert abs(parallel["reaction"] - serial["reaction"]) <= 1e-8 * abs(serial["reaction"])
    assert abs(parallel["u_norm"] - serial["u_norm"]) <= 1e-8 * serial["u_norm"]
