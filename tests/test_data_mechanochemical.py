"""Physics of the mechanochemical data model (docs/science.md §3): wells, derivatives, sampling, backends."""

import math

import pytest
import torch
from lse_material.training.data import mechanochemical as mc

EPS = torch.finfo(torch.float64).eps
P = mc.MechanochemicalParams()


def x_from_order_parameters(e1, e2, e3, c, *, shears=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """Invert e1, e2, e3 (eq. 11, docs/science.md §3) to a row ``(1, 7)`` of INPUT_NAMES (tensor shears given)."""
    E11 = e1 / math.sqrt(3) + e2 / math.sqrt(2) + e3 / math.sqrt(6)
    E22 = e1 / math.sqrt(3) - e2 / math.sqrt(2) + e3 / math.sqrt(6)
    E33 = e1 / math.sqrt(3) - 2 * e3 / math.sqrt(6)
    g23, g13, g12 = (2 * s for s in shears)
    return torch.tensor([[E11, E22, E33, g23, g13, g12, c]], dtype=torch.float64)


def test_single_variant_well_by_hand():
    # Only e3 = s_e, c = s_c: 0 + 3d_e/2 - d_e - 3d_e/2 = -d_e.
    x = x_from_order_parameters(0.0, 0.0, P.s_e, P.s_c)
    assert float(mc.energy(x)) == pytest.approx(-P.d_e, rel=10 * EPS)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_three_tetragonal_wells_at_c_equal_s_c(k):
    theta = 2 * math.pi * k / 3
    x = x_from_order_parameters(0.0, P.s_e * math.sin(theta), P.s_e * math.cos(theta), P.s_c)
    d = mc.potential().derivatives(x)
    assert float(d.energy) == pytest.approx(-P.d_e, rel=1e-12)
    # A stationary point in strain, and a strict local minimum in strain.
    assert float(d.gradient[0, :6].abs().max()) < 1e-12
    assert float(torch.linalg.eigvalsh(d.hessian[0, :6, :6]).min()) > 0
    # Higher than the wells: the untransformed state (barrier) at the same c.
    assert float(mc.energy(x_from_order_parameters(0.0, 0.0, 0.0, P.s_c))) > -P.d_e


def test_wells_with_other_parameters():
    p = mc.MechanochemicalParams(d_c=0.5, s_c=0.8, d_e=0.3, s_e=0.05)
    x = x_from_order_parameters(0.0, 0.0, p.s_e, p.s_c)
    assert float(mc.energy(x, params=p)) == pytest.approx(-p.d_e, rel=1e-12)
    # The chemical part alone: 16 d_c c̃²(1 - c̃)², maximum d_c at c̃ = 1/2.
    x = x_from_order_parameters(0.0, 0.0, 0.0, p.s_c / 2)
    assert float(mc.energy(x, params=p)) == pytest.approx(p.d_c, rel=1e-12)


def test_strain_part_convex_with_minimum_at_zero_when_c_is_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(300, 7, dtype=torch.float64)
    x[:, :6] = 0.6 * (torch.rand(300, 6, generator=g, dtype=torch.float64) - 0.5)
    d = mc.potential().derivatives(x)
    assert float(torch.linalg.eigvalsh(d.hessian[:, :6, :6]).min()) > 0
    assert float(d.energy.min()) > 0.0
    zero = mc.potential().derivatives(torch.zeros(1, 7, dtype=torch.float64))
    assert float(zero.energy) == 0.0 and float(zero.gradient.abs().max()) == 0.0


def test_stress_and_mu_match_central_differences():
    data = mc.sample(16, seed=1)
    h = 1e-5
    fd = torch.empty(16, 7, dtype=torch.float64)
    for j in range(7):
        e = torch.zeros(7, dtype=torch.float64)
        e[j] = h
        fd[:, j] = (mc.energy(data.x + e) - mc.energy(data.x - e)) / (2 * h)
    exact = torch.cat([data.stress, data.mu[:, None]], dim=1)
    scale = float(exact.abs().max())
    torch.testing.assert_close(fd, exact, rtol=1e-7, atol=1e-7 * scale)


def test_hessian_is_symmetric_and_is_the_derivative_of_the_stress():
    x = mc.sample(8, seed=2).x
    hess = mc.potential().derivatives(x).hessian
    scale = float(hess.abs().max())
    torch.testing.assert_close(hess, hess.transpose(1, 2), rtol=0, atol=100 * EPS * scale)
    h = 1e-6
    for j in range(7):
        e = torch.zeros(7, dtype=torch.float64)
        e[j] = h
        sp, mp = mc.stress_mu(x + e)
        sm, mm = mc.stress_mu(x - e)
        column = torch.cat([sp - sm, (mp - mm)[:, None]], dim=1) / (2 * h)
        torch.testing.assert_close(column, hess[:, :, j], rtol=1e-6, atol=1e-6 * scale)


def test_voigt_stress_is_work_conjugate_to_the_tensor_strain():
    """dψ along a symmetric tensor increment dE equals S : dE (full double contraction)."""
    x = mc.sample(6, seed=3).x
    stress, _ = mc.stress_mu(x)
    g = torch.Generator().manual_seed(4)
    dv = torch.rand(6, 6, generator=g, dtype=torch.float64) - 0.5  # tensor components dE_IJ
    h = 1e-6

    def psi(sign):
        E = x[:, :6].clone()
        E[:, 3:] /= 2  # engineering -> tensor shears
        E = E + sign * h * dv
        return mc.psi_components(*E.unbind(1), x[:, 6])

    directional = (psi(1) - psi(-1)) / (2 * h)
    contraction = (stress[:, :3] * dv[:, :3]).sum(1) + 2 * (stress[:, 3:] * dv[:, 3:]).sum(1)
    torch.testing.assert_close(directional, contraction, rtol=1e-7, atol=1e-9)


def test_potential_stress_mu_and_sample_agree():
    data = mc.sample(10, seed=5)
    d = mc.potential().derivatives(data.x, hessian=False)
    torch.testing.assert_close(d.energy, data.energy, rtol=0, atol=0)
    torch.testing.assert_close(d.gradient[:, :6], data.stress, rtol=10 * EPS, atol=10 * EPS)
    torch.testing.assert_close(d.gradient[:, 6], data.mu, rtol=10 * EPS, atol=10 * EPS)
    assert mc.potential().input_names == mc.INPUT_NAMES
    assert len(mc.STRESS_NAMES) == 6 and mc.INPUT_NAMES[:3] == ("E11", "E22", "E33")


def test_sample_shapes_box_and_reproducibility():
    data = mc.sample(400, seed=6)
    assert data.x.shape == (400, 7) and data.stress.shape == (400, 6)
    assert data.mu.shape == (400,) and data.energy.shape == (400,)
    assert all(t.dtype == torch.float64 for t in data)
    box = mc.training_box()
    for j, name in enumerate(mc.INPUT_NAMES):
        lo, hi = box[name]
        assert float(data.x[:, j].min()) >= lo and float(data.x[:, j].max()) <= hi
    again = mc.sample(400, seed=6)
    assert all(torch.equal(a, b) for a, b in zip(data, again))
    assert not torch.equal(mc.sample(400, seed=7).x, data.x)


def test_sample_lies_in_order_parameter_space_around_the_wells():
    """(e2, e3) fill the disk of radius 1.3 s_e that holds the variants; the other order
    parameters stay within s_e/2; c is denser near both chemical wells; all scale with s_e, s_c."""
    for params in (P, mc.MechanochemicalParams(s_e=0.2, s_c=2.0)):
        data = mc.sample(4000, seed=1, params=params)
        e = mc.order_parameters(data.x)
        radius = e[:, 1:3].norm(dim=1) / params.s_e
        assert float(radius.max()) <= 1.3 + 1e-12 and float(radius.max()) > 1.25
        assert float(e[:, [0, 3, 4, 5]].abs().max()) <= 0.5 * params.s_e + 1e-12
        c = data.x[:, 6] / params.s_c
        assert float(c.min()) >= -0.05 - 1e-12 and float(c.max()) <= 1.05 + 1e-12
        ends = int(((c < 0.05) | (c > 0.95)).sum())
        middle = int(((c > 0.45) & (c < 0.55)).sum())
        assert ends > 2.5 * middle  # arcsine density: denser where the wells are
        torch.testing.assert_close(mc.from_order_parameters(e, data.x[:, 6]), data.x)


def test_true_wells_are_minima_of_the_data_model():
    for params in (P, mc.MechanochemicalParams(d_e=0.2, s_e=0.08)):
        law = mc.potential(params=params)
        for name, (x, psi) in mc.true_wells(params).items():
            d = law.derivatives(x)
            assert float(d.gradient[:, :6].abs().max()) < 1e-12, name
            assert float(torch.linalg.eigvalsh(d.hessian[:, :6, :6]).min()) > 0, name
            expected = 0.0 if name == "c=0" else -params.d_e
            torch.testing.assert_close(psi, torch.full_like(psi, expected), rtol=0, atol=1e-14)


def test_parse_params_names_the_bad_entry():
    assert mc.parse_params(["d_e=0.2", "s_e=0.05"]) == mc.MechanochemicalParams(d_e=0.2, s_e=0.05)
    assert mc.parse_params(None) == P
    with pytest.raises(ValueError, match="unknown data-model parameter"):
        mc.parse_params(["depth=1"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        mc.parse_params(["d_e"])
    with pytest.raises(ValueError, match="d_e='x'"):
        mc.parse_params(["d_e=x"])
    with pytest.raises(ValueError, match="s_e must be > 0"):
        mc.parse_params(["s_e=0"])


def test_first_box_sampler_is_kept_for_comparison():
    data = mc.sample_box(400, seed=6)
    for j, name in enumerate(mc.INPUT_NAMES):
        lo, hi = mc.TRAINING_BOX[name]
        col = data.x[:, j]
        assert float(col.min()) >= lo and float(col.max()) <= hi
        assert float(col.min()) < lo + 0.05 * (hi - lo) and float(col.max()) > hi - 0.05 * (hi - lo)


def test_extrapolation_path():
    t, x = mc.extrapolation_path()
    assert t.shape == (131,) and x.shape == (131, 7)
    assert float(t[0]) == 0.0 and float(t[-1]) == pytest.approx(1.3)
    e1 = (x[:, 0] + x[:, 1] + x[:, 2]) / math.sqrt(3)
    e2 = (x[:, 0] - x[:, 1]) / math.sqrt(2)
    e3 = (x[:, 0] + x[:, 1] - 2 * x[:, 2]) / math.sqrt(6)
    torch.testing.assert_close(e3, 0.1 * t)
    assert float(e1.abs().max()) < 1e-15 and float(e2.abs().max()) == 0.0
    torch.testing.assert_close(x[:, 6], t, rtol=0, atol=0)
    assert float(x[:, 3:6].abs().max()) == 0.0
    assert float(x[:, 6].max()) == pytest.approx(1.3)  # c = t s_c leaves the wells' c for t > 1
    # At t = 1 the path sits in the e3 variant well.
    t1, x1 = mc.extrapolation_path(3, t_max=2.0)
    assert float(mc.energy(x1[1:2])) == pytest.approx(-P.d_e, rel=1e-12)


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="n must be"):
        mc.sample(0, seed=0)
    with pytest.raises(ValueError, match="n_points"):
        mc.extrapolation_path(1)
    with pytest.raises(ValueError, match="t_max"):
        mc.extrapolation_path(t_max=-1.0)
    with pytest.raises(ValueError, match=r"shape \(n_points, 7\)"):
        mc.energy(torch.zeros(3, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        mc.stress_mu(torch.full((2, 7), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="s_e"):
        mc.MechanochemicalParams(s_e=0.0)
    with pytest.raises(TypeError):
        mc.energy(torch.zeros(1, 7, dtype=torch.float64), P)  # params is keyword-only


def test_energy_ufl_rejects_a_2d_strain():
    ufl = pytest.importorskip("ufl")
    E2 = ufl.as_matrix([[0.1, 0.0], [0.0, 0.2]])
    with pytest.raises(ValueError, match="3×3"):
        mc.energy_ufl(E2, 0.5)


@pytest.mark.fem
def test_ufl_backend_equals_torch_backend():
    """energy_ufl and sym(∂ψ/∂E) assembled over the unit square (area 1) match the torch values."""
    from lse_material.fem._dolfinx import dolfinx  # noqa: I001  (dolfinx_solver first)

    import numpy as np
    import ufl
    from mpi4py import MPI

    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_SELF, 1, 1)
    dx = ufl.dx(domain=mesh, metadata={"quadrature_degree": 0})
    E_const = dolfinx.fem.Constant(mesh, np.zeros((3, 3)))
    dE_const = dolfinx.fem.Constant(mesh, np.zeros((3, 3)))
    c_const = dolfinx.fem.Constant(mesh, 0.0)
    E = ufl.variable(ufl.as_tensor([[E_const[i, j] for j in range(3)] for i in range(3)]))
    c = ufl.as_ufl(c_const)
    psi = mc.energy_ufl(E, c)
    S = ufl.sym(ufl.diff(psi, E))
    energy_form = dolfinx.fem.form(psi * dx)
    work_form = dolfinx.fem.form(ufl.inner(S, dE_const) * dx)

    data = mc.sample(4, seed=8)
    g = np.random.default_rng(0)
    for row, stress in zip(data.x.numpy(), data.stress.numpy()):
        E11, E22, E33, g23, g13, g12, cv = row
        E_const.value[:] = [
            [E11, g12 / 2, g13 / 2],
            [g12 / 2, E22, g23 / 2],
            [g13 / 2, g23 / 2, E33],
        ]
        c_const.value = cv
        dE = g.uniform(-1, 1, (3, 3))
        dE_const.value[:] = dE + dE.T
        value = dolfinx.fem.assemble_scalar(energy_form)
        expected = float(mc.energy(torch.as_tensor(row[None])))
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-14)
        S11, S22, S33, S23, S13, S12 = stress
        S_tensor = np.array([[S11, S12, S13], [S12, S22, S23], [S13, S23, S33]])
        work = dolfinx.fem.assemble_scalar(work_form)
        assert work == pytest.approx(float((S_tensor * (dE + dE.T)).sum()), rel=1e-11)
