"""The DOLFINx bridge: oracle against pure UFL (2-D and 3-D), Taylor test, quadratic Newton,
inputs by name, prescribed fields marked fixed, clear errors that name the input (serial and on
one of two ranks), diagnostics, serial = MPI, a rank without cells."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import ufl
from lse_material.training.data import mechanochemical as mc
from mpi4py import MPI
from petsc4py import PETSc

from lse_material.errors import TrainingBoxWarning
from lse_material.fem import (
    LawNewtonSolver,
    QuadratureLaw,
    dolfinx,
)
from lse_material.lse import LSEICNN

pytestmark = pytest.mark.fem
ROOT = Path(__file__).resolve().parents[1]
MPIRUN = str(Path(sys.executable).parent / "mpirun")
LSE = str(Path(sys.executable).parent / "lse-material")
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
    inputs, E = mc.ufl_inputs(u, c)
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
    inputs, E = mc.ufl_inputs(u, c)
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


def _relative_difference(a, b) -> float:
    """‖a - b‖ / ‖b‖ of two assembled PETSc vectors or matrices (a is overwritten)."""
    a.axpy(-1.0, b)
    return a.norm() / b.norm()


def test_forms_at_the_iterate_drop_the_increment_and_keep_f_and_j():
    """LawNewtonSolver assembles F and J with the law's increment x - x0 set to zero
    (``at_iterate``): neither form holds x0 any more, F not H either; right after update()
    both equal the full forms to rounding (finite strain: J drops (H·(x - x0))·∂²x/∂u², zero
    there); away from the update's iterate (u moved, no update) they differ."""
    from lse_material.fem.newton import at_iterate

    mesh, V, u, c, inputs, E = _cube()
    law = QuadratureLaw(mc.potential(), inputs, mesh, quadrature_degree=2, fixed=["c"])
    F_full, J_full = _forms(u, V, law, E, c)[:2]
    F_iterate, J_iterate = at_iterate([F_full, J_full], [law])
    assert law.H_upper in F_full.coefficients() and law.x0 in F_full.coefficients()
    assert law.H_upper not in F_iterate.coefficients() and law.x0 not in F_iterate.coefficients()
    assert law.H_upper in J_iterate.coefficients() and law.x0 not in J_iterate.coefficients()
    law.update()
    assert _relative_difference(_vector(F_iterate), _vector(F_full)) < 1e-13
    assert _relative_difference(_matrix(J_iterate), _matrix(J_full)) < 1e-13
    u.x.array[:] *= 1.1  # the law still holds the old iterate: the increment is not zero
    u.x.scatter_forward()
    assert _relative_difference(_vector(F_iterate), _vector(F_full)) > 1e-3
    assert _relative_difference(_matrix(J_iterate), _matrix(J_full)) > 1e-4


def test_state_law_forms_at_the_iterate_drop_the_increment():
    """The same for QuadratureStateLaw, under finite strain (Green–Lagrange strain as input)."""
    from lse_material.training.data.metamaterial import ReferenceLaw

    from lse_material.fem import QuadratureStateLaw
    from lse_material.fem.newton import at_iterate

    mesh, V, u, c, inputs, E = _cube()
    strain = [E[0, 0], E[1, 1], E[2, 2], 2 * E[1, 2], 2 * E[0, 2], 2 * E[0, 1]]
    law = QuadratureStateLaw(ReferenceLaw(), ufl.as_vector(strain), mesh, quadrature_degree=2)
    v, du = ufl.TestFunction(V), ufl.TrialFunction(V)
    F_full = ufl.inner(law.stress(), ufl.derivative(law.strain, u, v)) * law.dx
    J_full = ufl.derivative(F_full, u, du)
    F_iterate, J_iterate = at_iterate([F_full, J_full], [law])
    assert law.eps0 not in F_iterate.coefficients() and law.C not in F_iterate.coefficients()
    assert law.eps0 not in J_iterate.coefficients() and law.C in J_iterate.coefficients()
    law.update()
    assert _relative_difference(_vector(F_iterate), _vector(F_full)) < 1e-13
    assert _relative_difference(_matrix(J_iterate), _matrix(J_full)) < 1e-13


def test_taylor_test_of_the_jacobian():
    mesh, V, u, c = _block()
    inputs, E = mc.ufl_inputs(u, c)
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


def test_non_finite_inputs_raise_naming_the_cells():
    mesh, V, u, c = _block()
    c.x.array[3] = np.nan
    inputs, _ = mc.ufl_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh, quadrature_degree=2)
    with pytest.raises(
        ValueError,
        match=r"non-finite inputs .* at 3 quadrature points .*, in c \(3 points\); .* in 1 cells "
        r"\(global cell indices \[3\]; local \[3\]\)",
    ):
        law.update()
    assert law.evaluations == 0


def test_points_outside_the_training_box_warn_or_raise():
    class Boxed:
        input_names = mc.INPUT_NAMES
        training_box = {n: (-0.01, 0.01) for n in mc.INPUT_NAMES[:6]} | {"c": (0.0, 1.0)}

        def derivatives(self, x, *, hessian=True, wrt=None):
            return mc.potential().derivatives(x, hessian=hessian, wrt=wrt)

    mesh, V, u, c = _block()
    inputs, _ = mc.ufl_inputs(u, c)
    law = QuadratureLaw(Boxed(), inputs, mesh, quadrature_degree=2, on_outside="raise")
    with pytest.raises(ValueError, match="outside the model's training box"):
        law.update()
    law.update(check_box=False)  # what the Newton driver does on trial iterates
    with pytest.raises(ValueError, match="outside the model's training box") as raised:
        law.check_training_box()  # ... and this, once, on the converged state
    # The message names each input that left its interval, its range and by how much.
    E11 = law.point_values(law.x0)[:, 0]
    beyond = 100 * max(-0.01 - E11.min(), E11.max() - 0.01) / 0.02
    assert f"E11 in [{E11.min():.4g}, {E11.max():.4g}] (trained [-0.01, 0.01];" in str(raised.value)
    assert f"up to {beyond:.1f}% of the width beyond" in str(raised.value)
    assert "E33" not in str(raised.value) and "c in" not in str(raised.value)  # inside
    law.on_outside = "warn"
    with pytest.warns(TrainingBoxWarning, match=r"outside the model's training box.*2E12 in \["):
        law.update()
    law.on_outside = "ignore"
    law.update()
    assert 0.5 < law.fraction_outside_box() <= 1.0


def test_minimum_tangent_eigenvalue_field():
    mesh, V, u, c = _block()
    u.x.array[:] = 0.0
    inputs, _ = mc.ufl_inputs(u, c)
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
    inputs, _ = mc.ufl_inputs(u, c)
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
    inputs, _ = mc.ufl_inputs(u, c)
    with pytest.raises(ValueError, match="length 7"):
        QuadratureLaw(mc.potential(), ufl.as_vector([inputs["E11"], inputs["E22"]]), mesh)
    with pytest.raises(TypeError, match=r"Python list of 7 items; pass ufl.as_vector") as raised:
        QuadratureLaw(mc.potential(), list(inputs.values()), mesh)
    assert len(str(raised.value)) < 300  # not a page of the UFL expression tree
    with pytest.raises(ValueError, match=r"fixed must be a list of input names"):
        QuadratureLaw(mc.potential(), inputs, mesh, fixed=["concentration"])
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
def test_a_rank_without_cells_takes_part_and_changes_nothing(tmp_path):
    """3 ranks on 2 cells (one rank owns none): update, checks, diagnostics and Newton for
    QuadratureLaw and QuadratureStateLaw give the numbers of the run on 1 rank to 1e-12."""
    script = str(ROOT / "tests" / "mpi_empty_rank.py")
    runs = {}
    for ranks in (1, 3):
        out = tmp_path / f"r{ranks}.json"
        cmd = [MPIRUN, "-n", str(ranks), sys.executable, script, str(out)]
        subprocess.run(cmd, check=True, cwd=ROOT, timeout=300)
        runs[ranks] = json.loads(out.read_text())
    balanced, unbalanced = runs[1], runs[3]
    assert unbalanced["ranks"] == 3 and 0 in unbalanced["cells_per_rank"]
    assert balanced.keys() == unbalanced.keys()
    for key in balanced:
        if key in ("ranks", "cells_per_rank", "nan_raised_on_every_rank"):
            continue
        a, b = np.asarray(balanced[key], dtype=float), np.asarray(unbalanced[key], dtype=float)
        assert a.shape == b.shape and np.allclose(a, b, rtol=1e-12, atol=1e-12), (key, a, b)
    assert unbalanced["nan_raised_on_every_rank"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_law_on_the_gpu_fills_the_same_functions(tmp_path):
    """A trained LSE-ICNN (a short CUDA training, read back from its model file) fills the same
    quadrature functions on the GPU as on the CPU."""
    import warnings

    from lse_material.training.mechanochemical import train_mechanochemical

    import lse_material

    train_mechanochemical(
        out=tmp_path,
        samples=200,
        epochs=300,
        finetune_iterations=100,
        polish_iterations=100,
        device="cuda",
        plots=False,
    )
    model = lse_material.load(tmp_path / "model.safetensors")
    assert isinstance(model, LSEICNN) and model.card["training"]
    mesh, V, u, c = _block(n=2)
    inputs, _ = mc.ufl_inputs(u, c)
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


def test_inputs_by_name_in_any_order_give_the_vector_form():
    mesh, V, u, c = _block(n=2)
    inputs, _ = mc.ufl_inputs(u, c)
    vector = QuadratureLaw(mc.potential(), ufl.as_vector(list(inputs.values())), mesh)
    shuffled = dict(reversed(list(inputs.items())))  # c first, E11 last: names, not positions
    by_name = QuadratureLaw(mc.potential(), shuffled, mesh)
    vector.update()
    by_name.update()
    assert by_name.live == vector.live
    for name in ("x0", "psi0", "s", "H"):
        assert np.array_equal(getattr(by_name, name).x.array, getattr(vector, name).x.array)


def test_an_order_mistake_is_caught_by_name():
    """The tensor shear E12 passed where the engineering shear 2E12 belongs: named, not silent."""
    mesh, V, u, c = _block(n=2)
    inputs, E = mc.ufl_inputs(u, c)
    wrong = {k: v for k, v in inputs.items() if k != "2E12"} | {"E12": E[0, 1]}
    with pytest.raises(ValueError, match=r"unknown \['E12'\], missing \['2E12'\]") as raised:
        QuadratureLaw(mc.potential(), wrong, mesh)
    assert "engineering shear '2E12' = 2·E12" in str(raised.value)
    with pytest.raises(TypeError, match=r"input 'c': list is not a UFL expression"):
        QuadratureLaw(mc.potential(), inputs | {"c": [0.5]}, mesh)


def test_an_input_marked_fixed_that_depends_on_the_unknowns_is_refused():
    mesh, V, u, c = _block(n=2)
    inputs, _ = mc.ufl_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh, fixed=["E11"])
    F = ufl.derivative(law.energy_density() * law.dx, u, ufl.TestFunction(V))
    with pytest.raises(ValueError, match=r"input 'E11' is marked fixed but depends on the unknown"):
        LawNewtonSolver(F, u, [law], prefix="fixed_check_")


def test_another_snes_type_drops_the_default_line_search():
    mesh, V, u, c = _block(n=2)
    inputs, _ = mc.ufl_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh)
    F = ufl.derivative(law.energy_density() * law.dx, u, ufl.TestFunction(V))
    default = LawNewtonSolver(F, u, [law], prefix="ls_default_")
    trust = LawNewtonSolver(F, u, [law], prefix="ls_tr_", petsc_options={"snes_type": "newtontr"})
    assert default.petsc_options["snes_linesearch_type"] == "bt"
    assert "snes_linesearch_type" not in trust.petsc_options
    assert trust.problem.solver.getType() == "newtontr"


def test_the_driver_takes_laws_of_the_protocol_only():
    mesh, V, u, c = _block(n=2)
    inputs, _ = mc.ufl_inputs(u, c)
    law = QuadratureLaw(mc.potential(), inputs, mesh)
    F = ufl.derivative(law.energy_density() * law.dx, u, ufl.TestFunction(V))

    class UpdateOnly:  # the old duck type: update() alone
        def update(self):
            pass

    with pytest.raises(TypeError, match=r"UpdateOnly is not a law .* lacks \['check_training_box'"):
        LawNewtonSolver(F, u, [law, UpdateOnly()], prefix="protocol_")
