"""The DOLFINx bridge: oracle against pure UFL (2-D and 3-D), Taylor test, quadratic Newton,
clear errors (serial and on one of two ranks), diagnostics, serial = MPI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import ufl
from lse_material.fem_cases.verification import mechanochemical_inputs, solve_block
from lse_material.training.data import mechanochemical as mc
from mpi4py import MPI
from petsc4py import PETSc

from lse_material.fem import QuadratureLaw, convergence_orders
from lse_material.fem._dolfinx import dolfinx
from lse_material.lse import LSEICNN
from lse_material.potential import AnalyticPotential

pytestmark = pytest.mark.fem
ROOT = Path(__file__).resolve().parents[1]
MPIRUN = str(Path(sys.executable).parent / "mpirun")
EPS = np.finfo(np.float64).eps


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


def _cube(n=2):
    """3-D: all seven inputs (three shears) vary; c is a random P1 field in [0, 1]."""
    mesh = dolfinx.mesh.create_unit_cube(MPI.COMM_WORLD, n, n, n)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (3,)))
    u = dolfinx.fem.Function(V)
    c = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("Lagrange", 1)))
    rng = np.random.default_rng(2)
    u.x.array[:] = 0.05 * rng.standard_normal(u.x.array.size)
    c.x.array[:] = rng.uniform(0.0, 1.0, c.x.array.size)
    F = ufl.Identity(3) + ufl.grad(u)
    E = 0.5 * (F.T * F - ufl.Identity(3))
    inputs = ufl.as_vector([E[0, 0], E[1, 1], E[2, 2], 2 * E[1, 2], 2 * E[0, 2], 2 * E[0, 1], c])
    return mesh, V, u, c, inputs, E


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


def _oracle_differences(u, V, law, E, c):
    """Relative differences ‖F_law - F_ufl‖/‖F_ufl‖ and ‖J_law - J_ufl‖_F/‖J_ufl‖_F."""
    law.update()
    F_law, J_law, F_ufl, J_ufl = _forms(u, V, law, E, c)
    b_law, b_ufl = _vector(F_law), _vector(F_ufl)
    A_law, A_ufl = _matrix(J_law), _matrix(J_ufl)
    b_law.axpy(-1.0, b_ufl)
    A_law.axpy(-1.0, A_ufl)
    return b_law.norm() / b_ufl.norm(), A_law.norm() / A_ufl.norm()


def test_law_with_the_analytic_energy_assembles_the_pure_ufl_forms():
    mesh, V, u, c = _block()
    inputs, E = mechanochemical_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh, quadrature_degree=4)
    dF, dJ = _oracle_differences(u, V, law, E, c)
    assert dF < 1e-10 and dJ < 1e-10, (dF, dJ)


def test_oracle_in_3d_with_all_seven_inputs():
    """Engineering shears 2E23, 2E13 (zero in plane strain) enter here with the right factor."""
    mesh, V, u, c, inputs, E = _cube()
    law = QuadratureLaw(mc.potential(), inputs, mesh, quadrature_degree=2, chunk=100)
    dF, dJ = _oracle_differences(u, V, law, E, c)
    assert dF < 1e-10 and dJ < 1e-10, (dF, dJ)
    shears = law.point_values(law.x0)[:, 3:5]
    assert np.abs(shears).max() > 1e-2  # the test exercises the out-of-plane shears


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
    J0.mult(direction.x.petsc_vec, Jd)
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
    above_floor = [n for n in norms if n > 1e3 * EPS * norms[0]]
    order = convergence_orders(above_floor)[-1]
    assert order > 1.8, (order, norms)


def test_the_analytic_law_and_pure_ufl_agree_in_the_block():
    """Same block, same mesh: the analytic ψ at quadrature points vs in UFL, to solver tolerance."""
    ufl_result = solve_block(None, mesh_n=6)
    law_result = solve_block(mc.potential(), mesh_n=6)
    assert law_result.law is not None and ufl_result.law is None
    assert abs(law_result.reaction - ufl_result.reaction) < 1e-8 * abs(ufl_result.reaction)
    du = law_result.u.x.array - ufl_result.u.x.array
    assert np.linalg.norm(du) < 1e-8 * np.linalg.norm(ufl_result.u.x.array)


def test_non_finite_inputs_raise_naming_the_cells():
    mesh, V, u, c = _block()
    c.x.array[3] = np.nan
    inputs, _ = mechanochemical_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh, quadrature_degree=2)
    with pytest.raises(
        ValueError,
        match=r"non-finite inputs .* at 3 quadrature points .* in 1 cells \(global cell indices \[3\]; local \[3\]\)",
    ):
        law.update()
    assert law.evaluations == 0


def test_non_finite_law_output_inside_newton_raises_a_value_error_not_a_petsc_error():
    def broken(x):
        return torch.where(x[:, 0] > 0.15, torch.nan, mc.energy(x))

    with pytest.raises(ValueError, match="the law returned non-finite values at"):
        solve_block(AnalyticPotential(broken, mc.INPUT_NAMES), mesh_n=4, stretch=0.2)


def test_points_outside_the_training_box_warn_or_raise():
    class Boxed:
        input_names = mc.INPUT_NAMES
        training_box = {n: (-0.01, 0.01) for n in mc.INPUT_NAMES[:6]} | {"c": (0.0, 1.0)}

        def derivatives(self, x, *, hessian=True, wrt=None):
            return mc.potential().derivatives(x, hessian=hessian, wrt=wrt)

    mesh, V, u, c = _block()
    inputs, _ = mechanochemical_inputs(u, c)
    law = QuadratureLaw(Boxed(), inputs, mesh, quadrature_degree=2, on_outside="raise")
    with pytest.raises(ValueError, match="outside the model's training box"):
        law.update()
    law.update(check_box=False)  # what the Newton driver does on trial iterates
    with pytest.raises(ValueError, match="outside the model's training box"):
        law.check_training_box()  # ... and this, once, on the converged state
    law.on_outside = "warn"
    with pytest.warns(RuntimeWarning, match="outside the model's training box"):
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
    assert law.live == (0, 1, 5, 6)  # plane strain: E33, 2E23, 2E13 are fixed zeros
    x = torch.zeros(1, 7, dtype=torch.float64)
    x[0, 6] = 1.0  # at E = 0, c = 1 the strain energy is concave: negative eigenvalue
    tangent = mc.potential().derivatives(x, wrt=law.live).hessian  # on the live inputs
    expected = float(torch.linalg.eigvalsh(tangent)[0, 0])
    values = law.min_eigenvalue.x.array
    assert np.isclose(values.min(), expected) and values.max() > 0
    cells = law.cell_average(law.min_eigenvalue)  # DG0, for VTX output
    midpoints = dolfinx.mesh.compute_midpoints(
        mesh, 2, np.arange(cells.x.array.size, dtype=np.int32)
    )
    right = midpoints[:, 0] > 0.5
    assert np.allclose(cells.x.array[right], expected) and np.all(cells.x.array[~right] > 0)


def test_phase_weights_of_a_mixture_at_quadrature_points():
    model = LSEICNN(
        7, 3, (4,), input_names=mc.INPUT_NAMES, generator=torch.Generator().manual_seed(0)
    )
    mesh, V, u, c = _block(n=2)
    inputs, _ = mechanochemical_inputs(u, c)
    law = QuadratureLaw(model, inputs, mesh, quadrature_degree=2, chunk=7)
    law.update()
    weights = law.point_values(law.phase_weights)  # (n_points, 3)
    x = torch.from_numpy(law.point_values(law.x0))
    with torch.no_grad():
        expected = model.derivatives(x).phase_weights.numpy()
    assert weights.shape == (law.n_points, 3)
    assert np.allclose(weights, expected, rtol=0, atol=1e-14)
    assert np.allclose(weights.sum(1), 1.0)
    mean = law.cell_average(law.phase_weights)
    assert np.allclose(mean.x.array.reshape(-1, 3).sum(1), 1.0)


def test_bad_arguments_say_how_to_fix():
    mesh, V, u, c = _block(n=2)
    inputs, _ = mechanochemical_inputs(u, c)
    with pytest.raises(ValueError, match="length 7"):
        QuadratureLaw(mc.potential(), ufl.as_vector([inputs[0], inputs[1]]), mesh)
    with pytest.raises(ValueError, match="on_outside"):
        QuadratureLaw(mc.potential(), inputs, mesh, on_outside="sometimes")
    with pytest.raises(TypeError, match="AnalyticPotential"):
        QuadratureLaw(mc.energy, inputs, mesh)


@pytest.mark.mpi
def test_non_finite_values_on_one_rank_raise_on_both(tmp_path):
    prefix = tmp_path / "nan"
    cmd = [
        MPIRUN,
        "-n",
        "2",
        sys.executable,
        str(ROOT / "tests" / "mpi_non_finite.py"),
        str(prefix),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=300)
    seen = [json.loads(Path(f"{prefix}.{rank}.json").read_text()) for rank in (0, 1)]
    assert all(s["type"] == "ValueError" for s in seen), seen
    assert "on rank 0: 3 of them in 1 cells" in seen[0]["message"]
    assert "on rank 1: no such points on this rank" in seen[1]["message"]


@pytest.mark.mpi
@pytest.mark.parametrize("mode", [["--ufl"], []])
def test_serial_and_two_ranks_agree(tmp_path, mode):
    results = []
    for ranks in (1, 2):
        out = tmp_path / f"r{ranks}.json"
        cmd = [MPIRUN, "-n", str(ranks), sys.executable, "-m", "lse_material.fem_cases.verification"]
        subprocess.run(
            [*cmd, "--mesh", "6", "--out", str(out), *mode], check=True, cwd=ROOT, timeout=300
        )
        results.append(json.loads(out.read_text()))
    serial, parallel = results
    assert parallel["ranks"] == 2 and serial["converged"] and parallel["converged"]
    assert abs(parallel["reaction"] - serial["reaction"]) <= 1e-8 * abs(serial["reaction"])
    assert abs(parallel["u_norm"] - serial["u_norm"]) <= 1e-8 * serial["u_norm"]
    assert parallel["iterations"] == serial["iterations"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_law_on_the_gpu_fills_the_same_functions(tmp_path):
    """A trained LSE-ICNN (a short CUDA training, read back from its model file) fills the same
    quadrature functions on the GPU as on the CPU."""
    import warnings

    from lse_material.training.mechanochemical import train_mechanochemical

    import lse_material

    train_mechanochemical(out=tmp_path, samples=200, epochs=300, device="cuda", plots=False)
    model = lse_material.load(tmp_path / "model.safetensors")
    assert isinstance(model, LSEICNN) and model.card["training"]
    mesh, V, u, c = _block(n=2)
    inputs, _ = mechanochemical_inputs(u, c)
    cpu = QuadratureLaw(model, inputs, mesh, quadrature_degree=2)
    gpu = QuadratureLaw(model, inputs, mesh, quadrature_degree=2, device="cuda", chunk=5)
    with warnings.catch_warnings():  # extrapolation does not matter here: CPU = GPU does
        warnings.filterwarnings("ignore", message=".*training box")
        cpu.update()
        gpu.update()
    for name in ("psi0", "s", "H"):
        a, b = getattr(cpu, name).x.array, getattr(gpu, name).x.array
        assert np.isfinite(a).all() and np.abs(a).max() > 0, name
        assert np.allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(a).max()), name
