"""LawNewtonSolver(energy=...): SNES's objective is the total energy (the line search works on it)."""

import gc
import weakref

import numpy as np
import pytest
from lse_material.fem_cases.verification import solve_block
from lse_material.training.data import mechanochemical as mc

pytestmark = pytest.mark.fem


@pytest.mark.parametrize("potential", [mc.potential(), None], ids=["law", "pure UFL"])
def test_energy_objective_converges_to_the_same_solution(potential):
    """The 2-D block (c = 1 in one half: non-convex there) stretched by 0.3: both line searches
    reach the same equilibrium; backtracking on the energy needs fewer Newton iterations."""
    plain = solve_block(potential, mesh_n=8, stretch=0.3)
    energy = solve_block(potential, mesh_n=8, stretch=0.3, energy_objective=True)
    assert plain.newton.converged and energy.newton.converged
    a, b = plain.u.x.array, energy.u.x.array
    assert np.linalg.norm(a - b) <= 1e-8 * np.linalg.norm(a)
    assert energy.reaction == pytest.approx(plain.reaction, rel=1e-8)
    assert energy.newton.iterations < plain.newton.iterations


def test_energy_objective_finishes_newton_where_the_energy_is_below_rounding():
    """ψ + 1e9: the same F and J, but ∫ψ dx rounds at about 1e-7, above the energy decrease
    of Newton's last steps. Backtracking on that energy stalls (measured without the guard:
    ‖F‖ frozen at 2.7e-4 until max_it, as the 3-D block with a learned law was at 1.8e-9);
    with it the last steps are taken in full and the solve converges like the plain one."""
    from lse_material.potential import AnalyticPotential

    shifted = AnalyticPotential(lambda x: mc.energy(x) + 1e9, mc.INPUT_NAMES)
    plain = solve_block(shifted, mesh_n=4, stretch=0.1)
    energy = solve_block(shifted, mesh_n=4, stretch=0.1, energy_objective=True)
    assert plain.newton.converged, plain.newton.residual_norms
    assert energy.newton.converged, energy.newton.residual_norms
    assert energy.newton.iterations <= plain.newton.iterations + 1
    assert energy.reaction == pytest.approx(plain.reaction, rel=1e-8)


def test_a_block_solve_frees_its_solver_and_mesh():
    """``solve_block`` closes its solver (``with LawNewtonSolver(...)``): once the result is
    dropped the mesh is freed. Unclosed, PETSc's hold on the callbacks (residual, Jacobian,
    monitor, objective) kept every solver alive, and about 100 solves in a loop ran out of
    MPI communicators."""
    result = solve_block(mc.potential(), mesh_n=2, stretch=0.1, energy_objective=True)
    assert result.newton.converged
    mesh = weakref.ref(result.u.function_space.mesh)
    del result
    gc.collect()
    assert mesh() is None
