"""The law's Hessian at the points: the forms read its upper triangle (``H_upper``), and
``law.H`` is the full (k, k) Hessian of the last update; the training-box statistics follow
the last update (they are computed when asked for)."""

import numpy as np
import pytest
import torch
import ufl
from lse_material.training.data import mechanochemical as mc
from mpi4py import MPI
from ufl.algorithms import replace

from lse_material.fem import QuadratureLaw, dolfinx

pytestmark = pytest.mark.fem


def _law(**options):
    mesh = dolfinx.mesh.create_unit_cube(MPI.COMM_WORLD, 2, 2, 2)
    u = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (3,))))
    u.x.array[:] = 0.05 * np.random.default_rng(2).standard_normal(u.x.array.size)
    inputs, _ = mc.ufl_inputs(u, 0.3 * ufl.SpatialCoordinate(mesh)[0])
    return u, QuadratureLaw(mc.potential(), inputs, mesh, fixed=["c"], **options)


def _hessian_at_points(law):
    x = torch.from_numpy(law.point_values(law.x0).copy())
    return mc.potential().derivatives(x, wrt=law.live).hessian.numpy()


def test_H_is_the_hessian_of_the_last_update_and_H_upper_its_triangle():
    u, law = _law()
    k = len(law.live)
    assert law.H.function_space.value_shape == (k, k)
    assert law.H_upper.function_space.value_shape == (k * (k + 1) // 2,)
    for _ in range(2):  # the second update moves u: both are refilled
        law.update()
        expected = _hessian_at_points(law)
        H = law.point_values(law.H).reshape(-1, k, k)
        np.testing.assert_allclose(H, expected, rtol=1e-13, atol=1e-13 * np.abs(expected).max())
        rows, cols = np.triu_indices(k)
        assert np.array_equal(law.point_values(law.H_upper), H[:, rows, cols])
        u.x.array[:] *= 1.5
        u.x.scatter_forward()


def test_the_surrogate_hessian_form_is_the_law_hessian():
    """The second derivative of ∫ψ_T in the live inputs' directions is ∫ v·H w (the full
    symmetric H rebuilt from its triangle)."""
    u, law = _law()
    law.update()
    k = len(law.live)
    a, b = np.random.default_rng(3).standard_normal((2, k))
    density = law.energy_density()
    x = ufl.variable(law._live_inputs)  # the live inputs as a variable of the surrogate
    psi = replace(density, {law._live_inputs[i]: x[i] for i in range(k)})
    second = ufl.dot(ufl.dot(ufl.diff(ufl.diff(psi, x), x), ufl.as_vector(a)), ufl.as_vector(b))
    value = dolfinx.fem.assemble_scalar(dolfinx.fem.form(second * law.dx))
    H = law.point_values(law.H).reshape(-1, k, k)
    weights = np.tile(law.quadrature.weights, law.quadrature.n_cells) / law.quadrature.n_cells
    expected = np.einsum("p,pij,i,j->", weights, H, a, b)
    assert np.isclose(value, expected, rtol=1e-12)


def test_training_box_statistics_follow_the_last_update():
    analytic = mc.potential()

    class Boxed:  # the analytic law with a training box of strains within ±2
        input_names = analytic.input_names
        training_box = {name: (-2.0, 2.0) for name in input_names} | {"c": (0.0, 0.3)}
        derivatives = staticmethod(analytic.derivatives)

    u, law = _law()
    law = QuadratureLaw(Boxed(), law.inputs, law.mesh, fixed=["c"], box_tolerance=0.0)
    law.update()
    assert law.fraction_outside_box() == 0.0
    u.x.array[:] *= 100.0  # strains far beyond 2
    u.x.scatter_forward()
    law.update(check_box=False)
    assert law.fraction_outside_box() > 0.5
