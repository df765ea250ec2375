"""The internal-state law at quadrature points and the metamaterial bar (docs/science.md §5, issue 5)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import ufl
from lse_material.fem_cases.metamaterial import force_difference, simulate_metamaterial
from lse_material.training.data import metamaterial as mm
from lse_material.training.data.metamaterial import ReferenceLaw
from lse_material.training.metamaterial import build_model, train_metamaterial
from mpi4py import MPI

from lse_material.fem import LawNewtonSolver, NewtonResult, QuadratureStateLaw, dolfinx
from lse_material.hidden_state import tensor_to_voigt

pytestmark = pytest.mark.fem
ROOT = Path(__file__).resolve().parents[1]
SMALL = {"nx": 40, "ny": 2, "amplitudes": (-0.2,), "steps_per_cycle": 30}
DATA_DT = mm.data_time_step()


def _untrained_model():
    data = mm.sawtooth_histories(20, 100, seed=0)
    return build_model(tensor_to_voigt(data.strain), data.time, seed=0, stress_std=0.05)


def _bar_problem(law_model):
    mesh = dolfinx.mesh.create_rectangle(MPI.COMM_WORLD, [[0, 0], [2, 1]], [6, 3])
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (2,)))
    u, v = dolfinx.fem.Function(V), ufl.TestFunction(V)

    def voigt(w):
        e = ufl.sym(ufl.grad(w))
        return ufl.as_vector([e[0, 0], e[1, 1], 0, 0, 0, 2 * e[0, 1]])

    law = QuadratureStateLaw(law_model, voigt(u), mesh, quadrature_degree=1, dt=DATA_DT)
    F = ufl.dot(law.stress(), voigt(v)) * law.dx
    left = dolfinx.mesh.locate_entities_boundary(mesh, 1, lambda p: np.isclose(p[0], 0))
    right = dolfinx.mesh.locate_entities_boundary(mesh, 1, lambda p: np.isclose(p[0], 2))
    end = dolfinx.fem.Constant(mesh, 0.0)
    bcs = [
        dolfinx.fem.dirichletbc(np.zeros(2), dolfinx.fem.locate_dofs_topological(V, 1, left), V),
        dolfinx.fem.dirichletbc(
            end, dolfinx.fem.locate_dofs_topological(V.sub(0), 1, right), V.sub(0)
        ),
    ]
    return mesh, V, u, law, F, bcs, end


@pytest.mark.parametrize("which", ["reference", "model"])
def test_forced_failed_step_leaves_the_committed_state_bit_for_bit(which):
    law_model = ReferenceLaw() if which == "reference" else _untrained_model()
    mesh, V, u, law, F, bcs, end = _bar_problem(law_model)
    # Two committed steps of uniaxial compression into the transformation.
    for k in (1, 2):
        u.interpolate(lambda p, k=k: np.vstack([-0.06 * k * p[0] * (1 + 0.1 * p[1]), 0 * p[0]]))
        law.update()
        law.commit()
    strain, state = law.points.strain.clone(), law.points.state.clone()
    u_committed = u.x.array.copy()
    law.update()
    reference_values = (law.sigma0.x.array.copy(), law.C.x.array.copy())
    # A step that must fail: one Newton iteration towards a large end displacement.
    solver = LawNewtonSolver(
        F, u, [law], bcs=bcs, prefix=f"fail_{which}_", petsc_options={"snes_max_it": 1}
    )
    end.value = -1.5
    result = solver.solve()
    assert not result.converged
    law.revert()
    assert torch.equal(law.points.strain, strain) and torch.equal(law.points.state, state)
    u.x.array[:] = u_committed
    law.update()
    assert np.array_equal(law.sigma0.x.array, reference_values[0])
    assert np.array_equal(law.C.x.array, reference_values[1])


@pytest.mark.parametrize("which", ["reference", "model"])
def test_flux_linearisation_gives_the_algorithmic_jacobian(which):
    """Taylor test: ‖F(u + h d) - F(u) - h J d‖ = O(h²) with the law's trial at each u.

    (The reference is affine in the strain on its transformation branch: the error is
    round-off there.)
    """
    from petsc4py import PETSc

    law_model = ReferenceLaw() if which == "reference" else _untrained_model()
    mesh, V, u, law, F, bcs, _ = _bar_problem(law_model)
    u.interpolate(lambda p: np.vstack([-0.09 * p[0] + 0.01 * p[1] ** 2, 0.004 * p[0] * p[1]]))
    law.update()
    law.commit()
    u.interpolate(lambda p: np.vstack([-0.1 * p[0] + 0.012 * p[1] ** 2, 0.005 * p[0] * p[1]]))
    J = ufl.derivative(F, u, ufl.TrialFunction(V))
    u0 = u.x.array.copy()
    rng = np.random.default_rng(0)
    direction = 1e-3 * rng.standard_normal(u0.size)

    def residual():
        law.update()
        b = dolfinx.fem.petsc.assemble_vector(dolfinx.fem.form(F))
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        return b.array.copy()

    F0 = residual()
    A = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(J))
    A.assemble()
    d = A.createVecRight()
    d.array[:] = direction
    Jd = A.createVecLeft()
    A.mult(d, Jd)
    errors = []
    for h in (1e-1, 5e-2, 2.5e-2):
        u.x.array[:] = u0 + h * direction
        errors.append(np.linalg.norm(residual() - F0 - h * Jd.array))
    u.x.array[:] = u0
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert rates.min() > 1.8 or max(errors) < 1e-13, (errors, rates)


def test_reference_bar_fronts_run_from_the_imperfection(tmp_path):
    s = simulate_metamaterial(out=tmp_path, reference=True, **SMALL).summary
    left, right = s["front_left"], s["front_right"]
    first = next(i for i, v in enumerate(left) if v is not None)
    x0 = s["parameters"]["imperfection_at"]
    assert left[first] <= x0 <= right[first] and right[first] - left[first] < 2.0
    peak = int(np.argmin(s["displacement"]))
    loading = range(first, peak + 1)
    assert all(left[i + 1] <= left[i] + 1e-12 for i in loading if i + 1 <= peak)
    assert all(right[i + 1] >= right[i] - 1e-12 for i in loading if i + 1 <= peak)
    assert right[peak] - left[peak] > 0.9 * s["parameters"]["length"]  # ran through the bar
    # The plateau force is the onset stress -0.12 s(x) (per unit height) and the loop is open.
    force = np.array(s["force"])
    assert -0.125 < force[first] < -0.11
    u = np.array(s["displacement"])
    area = abs(np.sum(0.5 * (force[1:] + force[:-1]) * np.diff(u)))
    assert area > 0.05 * abs(force).max() * abs(u).max()
    assert (tmp_path / "fields.bp").exists() and (tmp_path / "force_displacement.png").exists()


def test_a_forced_failure_is_cut_and_retried(tmp_path, monkeypatch, capsys):
    """A failure injected from outside: the 12th Newton solve reports divergence (after really
    solving, so the laws hold a trial to revert); the step is cut, retried and completes."""
    plain = simulate_metamaterial(out=tmp_path / "a", reference=True, **SMALL).summary
    solve, calls = LawNewtonSolver.solve, []

    def failing_once(self) -> NewtonResult:
        result = solve(self)
        calls.append(result)
        return result._replace(converged=False) if len(calls) == 12 else result

    monkeypatch.setattr(LawNewtonSolver, "solve", failing_once)
    forced = simulate_metamaterial(out=tmp_path / "b", reference=True, **SMALL).summary
    assert plain["failed_steps"] == 0 and forced["failed_steps"] == 1
    assert forced["max_cuts_used"] == 1 and len(forced["force"]) == len(plain["force"])
    assert force_difference(forced, plain) < 1e-2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert len(lines) == 2 * forced["steps"] and "newton" in lines[-1] and "force" in lines[-1]


@pytest.mark.mpi
def test_serial_and_two_ranks_give_the_same_forces(tmp_path):
    runs = []
    for ranks in (1, 2):
        out = tmp_path / f"r{ranks}"
        cmd = [
            str(Path(sys.executable).parent / "mpirun"),
            "-n",
            str(ranks),
            str(Path(sys.executable).parent / "lse-material"),
            "simulate",
            "metamaterial",
            "--reference",
            "--out",
            str(out),
            "--nx",
            "40",
            "--ny",
            "2",
        ]
        subprocess.run(cmd, check=True, cwd=ROOT, timeout=600)
        runs.append(json.loads((out / "summary.json").read_text()))
    serial, parallel = runs
    assert parallel["ranks"] == 2 and serial["dofs"] == parallel["dofs"]
    assert np.allclose(parallel["force"], serial["force"], rtol=1e-8, atol=1e-12)


# A two-phase training small enough for CI, and the figures it must reach: measured on 1 thread
# (R² 0.86, force-curve difference 0.20 on the SMALL bar, about 80 s for training and both runs),
# loosened for margin. LSE_FULL=1 asserts issue 5's full figures (the slow tests).
CI_TRAINING = {"trajectories": 60, "epochs": 400}
CI_R2, CI_FORCE = 0.75, 0.30


def test_ci_sized_training_reaches_loosened_figures(tmp_path):
    """Issue 5's figures at CI size: held-out R² ≥ CI_R2, FE force curve within CI_FORCE."""
    result = train_metamaterial(out=tmp_path / "m", **CI_TRAINING)
    for name in ("model.safetensors", "summary.json", "parity.png", "loops.png", "history.json"):
        assert (tmp_path / "m" / name).exists(), name
    assert result.summary["test_r2_stress"] >= CI_R2, result.summary["test_r2_stress"]
    ref = simulate_metamaterial(out=tmp_path / "ref", reference=True, **SMALL)
    run = simulate_metamaterial(
        out=tmp_path / "fe",
        model=tmp_path / "m" / "model.safetensors",
        compare=tmp_path / "ref",
        **SMALL,
    )
    difference = run.summary["force_difference_vs_compare"]
    assert difference == force_difference(run.summary, ref.summary)
    assert difference <= CI_FORCE, difference


@pytest.mark.slow
def test_model_force_curve_within_ten_percent_of_the_reference(
    tmp_path, default_metamaterial_training
):
    """Issue 5's figure at full size (LSE_FULL=1): the CLI's default training, the full bar."""
    trained, _ = default_metamaterial_training
    ref = simulate_metamaterial(out=tmp_path / "ref", reference=True)
    run = simulate_metamaterial(
        out=tmp_path / "fe", model=trained / "model.safetensors", compare=tmp_path / "ref"
    )
    difference = run.summary["force_difference_vs_compare"]
    assert difference == force_difference(run.summary, ref.summary)
    assert difference <= 0.10


def test_bad_options_raise(tmp_path):
    with pytest.raises(ValueError, match="--model"):
        simulate_metamaterial(out=tmp_path)
    with pytest.raises(ValueError, match="dim"):
        simulate_metamaterial(out=tmp_path, reference=True, dim=4)
    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 2, 2)
    with pytest.raises(ValueError, match="length 6"):
        QuadratureStateLaw(ReferenceLaw(), ufl.as_vector([1.0, 2.0]), mesh)


def test_strain_by_name_and_list_errors():
    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 2, 2)
    u = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (2,))))
    e = ufl.sym(ufl.grad(u))
    named = {"eps11": e[0, 0], "eps22": e[1, 1], "eps33": 0, "2eps23": 0, "2eps13": 0}
    with pytest.raises(ValueError, match=r"engineering shear '2eps12' = 2·eps12"):
        QuadratureStateLaw(ReferenceLaw(), named | {"eps12": e[0, 1]}, mesh)
    with pytest.raises(TypeError, match="Python list of 6 items; pass ufl.as_vector"):
        QuadratureStateLaw(ReferenceLaw(), [e[0, 0], e[1, 1], 0, 0, 0, 2 * e[0, 1]], mesh)
    law = QuadratureStateLaw(ReferenceLaw(), named | {"2eps12": 2 * e[0, 1]}, mesh)
    u.interpolate(lambda p: np.vstack([-0.1 * p[0], 0.02 * p[0]]))
    law.update()
    strain = law.quadrature.read(law.eps0)
    assert np.allclose(strain[:, 0], -0.1) and np.allclose(strain[:, 5], 0.02)


def test_non_finite_strains_raise_naming_the_cells():
    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 2, 2)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (2,)))
    u = dolfinx.fem.Function(V)
    e = ufl.sym(ufl.grad(u))
    law = QuadratureStateLaw(
        ReferenceLaw(), ufl.as_vector([e[0, 0], e[1, 1], 0, 0, 0, 2 * e[0, 1]]), mesh
    )
    law.update()
    u.x.array[0] = np.nan
    u.x.scatter_forward()
    with pytest.raises(
        ValueError, match=r"non-finite strains .* in eps11 \(\d+ points\).*global cell"
    ):
        law.update()
