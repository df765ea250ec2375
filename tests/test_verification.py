"""The verification block (``lse-material simulate verification``): the law against pure UFL,
quadratic Newton, a 3-D block with a prescribed c field marked fixed, reactions, errors from
inside Newton, serial = MPI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import ufl
from lse_material.fem_cases.verification import solve_block
from lse_material.training.data import mechanochemical as mc

from lse_material.fem import ReactionForce, convergence_orders
from lse_material.potential import AnalyticPotential

pytestmark = pytest.mark.fem
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MPIRUN, LSE = str(BIN / "mpirun"), str(BIN / "lse-material")
EPS = np.finfo(np.float64).eps


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


def test_non_finite_law_output_inside_newton_raises_a_value_error_not_a_petsc_error():
    def broken(x):
        return torch.where(x[:, 0] > 0.15, torch.nan, mc.energy(x))

    with pytest.raises(ValueError, match=r"the law returned non-finite values at .* in energy"):
        solve_block(AnalyticPotential(broken, mc.INPUT_NAMES), mesh_n=4, stretch=0.2)


@pytest.mark.mpi
@pytest.mark.parametrize("mode", [["--ufl-reference"], [], ["--dim", "3", "--mesh", "3"]])
def test_serial_and_two_ranks_agree(tmp_path, mode):
    results = []
    for ranks in (1, 2):
        out = tmp_path / f"r{ranks}.json"
        cmd = [MPIRUN, "-n", str(ranks), LSE, "simulate", "verification", "--mesh", "6"]
        subprocess.run([*cmd, "--out", str(out), *mode], check=True, cwd=ROOT, timeout=300)
        results.append(json.loads(out.read_text()))
    serial, parallel = results
    assert parallel["ranks"] == 2 and serial["converged"] and parallel["converged"]
    assert abs(parallel["reaction"] - serial["reaction"]) <= 1e-8 * abs(serial["reaction"])
    assert abs(parallel["u_norm"] - serial["u_norm"]) <= 1e-8 * serial["u_norm"]
    assert parallel["iterations"] == serial["iterations"]


def test_3d_newton_with_a_prescribed_c_field_marked_fixed():
    """c = 0.3 x (a UFL expression) is fixed: H is 6×6 on the strains, Newton is quadratic and
    the solution is the pure-UFL one; the tangent's smallest eigenvalue is the strain one."""
    law_run = solve_block(mc.potential(), dim=3, mesh_n=3, degree=1)
    ufl_run = solve_block(None, dim=3, mesh_n=3, degree=1)
    law = law_run.law
    assert law.live == (0, 1, 2, 3, 4, 5) and law.fixed == ("c",)
    assert law.H.function_space.value_shape == (6, 6)
    norms = law_run.newton.residual_norms
    assert law_run.newton.converged and norms[-1] < 1e-9 * norms[0]
    above_floor = [n for n in norms if n > 1e3 * EPS * norms[0]]
    assert convergence_orders(above_floor)[-1] > 1.8, norms
    assert abs(law_run.reaction - ufl_run.reaction) < 1e-9 * abs(ufl_run.reaction)
    du = law_run.u.x.array - ufl_run.u.x.array
    assert np.linalg.norm(du) < 1e-9 * np.linalg.norm(ufl_run.u.x.array)
    c_values = law.point_values(law.x0)[:, 6]
    # c was evaluated (0.3 x over the cube; this rule has points on cell faces), not frozen
    assert c_values.min() >= 0 and c_values.max() <= 0.3 + EPS and np.ptp(c_values) > 0.25
    law.update_diagnostics()
    x = torch.from_numpy(law.point_values(law.x0))
    strain_block = mc.potential().derivatives(x, wrt=law.live).hessian
    expected = torch.linalg.eigvalsh(strain_block)[:, 0].numpy()
    assert np.allclose(law.point_values(law.min_eigenvalue)[:, 0], expected, rtol=1e-10, atol=1e-12)


def test_reaction_forces_balance_across_the_block():
    """No body force: the reactions on the faces x = 0 and x = 1 are equal and opposite."""
    result = solve_block(mc.potential(), mesh_n=4)
    V = result.u.function_space
    F = ufl.derivative(result.law.energy_density() * result.law.dx, result.u, ufl.TestFunction(V))
    right = ReactionForce(F, result.u, lambda x: np.isclose(x[0], 1.0), component=0)()
    left = ReactionForce(F, result.u, lambda x: np.isclose(x[0], 0.0), component=0)()
    assert right == pytest.approx(result.reaction, rel=1e-12) and right > 0
    assert abs(left + right) < 1e-8 * right
