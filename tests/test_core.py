"""Physics properties of the ICNN modes and the LSE-ICNN mixture (docs/science.md §1)."""

import math

import pytest
import torch

import lse_material
from lse_material import LSEICNN, ICNNStack, _native
from lse_material.potential import AnalyticPotential
from tests.conftest import EPS, autograd_derivatives


def random_model(d=3, n=4, hidden=(8, 6), rho=2.0, **kw):
    model = LSEICNN(d, n, hidden, rho=rho, generator=torch.Generator().manual_seed(1), **kw)
    with torch.no_grad():
        model.gate_weights.copy_(torch.linspace(0.3, 2.0, n))
    return model


def test_every_mode_is_convex_along_random_lines():
    stack = ICNNStack(4, 5, (10, 10), generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        a, b = torch.randn(2, 4, generator=g, dtype=torch.float64) * 3
        t = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None]
        w = stack((1 - t) * a + t * b).detach()  # (N, 101)
        second_difference = w[:, :-2] - 2 * w[:, 1:-1] + w[:, 2:]
        assert bool((second_difference >= -1e3 * EPS * w.abs().max()).all())


def test_mode_hessians_are_positive_semidefinite():
    stack = ICNNStack(3, 4, (8, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        h = stack.derivatives(torch.randn(50, 3, dtype=torch.float64) * 2).hessian
    assert float(torch.linalg.eigvalsh(h).min()) >= -1e-12


def test_lse_bounds_and_limit_of_large_rho():
    model = random_model()
    x = torch.randn(64, 3, dtype=torch.float64)
    with torch.no_grad():
        modes = model.modes(x)
        effective = (
            modes - torch.log(model.gates()).unsqueeze(-1) / model.rho()
        )  # raised wells (eq. 4)
        lower = effective.min(0).values - math.log(model.n_modes) / model.rho()
        w = model(x)
        assert bool((w <= effective.min(0).values + 1e-12).all()) and bool(
            (w >= lower - 1e-12).all()
        )
        gaps = []
        for rho in (1.0, 10.0, 100.0, 1000.0):
            model.rho_raw.fill_(math.log(rho))
            effective = modes - torch.log(model.gates()).unsqueeze(-1) / rho
            gaps.append(float((effective.min(0).values - model(x)).max()))
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False)) and gaps[-1] < 1e-2


@pytest.mark.parametrize("hidden", [(8, 6), (5, 6, 4)])
@pytest.mark.parametrize("ensemble", [None, 3])
def test_one_call_derivatives_equal_autograd(ensemble, hidden):
    model = random_model(ensemble=ensemble, hidden=hidden)
    model.set_normalization(
        input_shift=[0.1, -0.2, 0.3],
        input_scale=[2.0, 0.5, 1.5],
        energy_shift=1.0,
        energy_scale=3.0,
    )
    x = torch.randn(40, 3, dtype=torch.float64)
    d = model.derivatives(x)
    members = [model.member(i) for i in range(ensemble)] if ensemble else [model]
    for i, m in enumerate(members):
        energy, grad, hess = autograd_derivatives(m, x)
        sel = (lambda t, i=i: t[i]) if ensemble else (lambda t: t)
        assert torch.allclose(sel(d.energy), energy, rtol=1e-12, atol=0)
        assert float((sel(d.gradient) - grad).abs().max() / grad.abs().max()) < 1e-12
        assert (
            float((sel(d.hessian) - hess).abs().max() / hess.abs().max()) < 1e-10
        )  # issue 2 figure


def test_derivatives_match_finite_differences():
    model = random_model()
    x = torch.randn(10, 3, dtype=torch.float64)
    d = model.derivatives(x)
    h = 1e-5
    for j in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[j] = h
        plus, minus = model.derivatives(x + e), model.derivatives(x - e)
        fd_grad = (plus.energy - minus.energy) / (2 * h)
        fd_hess = (plus.gradient - minus.gradient) / (2 * h)
        assert torch.allclose(d.gradient[:, j], fd_grad, rtol=1e-7, atol=1e-8)
        assert torch.allclose(d.hessian[:, :, j], fd_hess, rtol=1e-6, atol=1e-7)


def test_phase_weights_sum_to_one_and_give_the_gradient():
    model = random_model()
    x = torch.randn(20, 3, dtype=torch.float64)
    d = model.derivatives(x)
    assert torch.allclose(d.phase_weights.sum(-1), torch.ones(20, dtype=torch.float64))
    modes = model.modes.derivatives(x)
    assert torch.allclose(d.gradient, torch.einsum("pn,npd->pd", d.phase_weights, modes.gradient))


def test_a_closed_gate_removes_its_mode_exactly():
    model = random_model(n=3)
    x = torch.randn(30, 3, dtype=torch.float64)
    with torch.no_grad():
        model.gate_weights[1] = 0.0
        full = model(x)
        modes = model.modes(x)[[0, 2]]
        log_g = torch.log(model.gates()[[0, 2]]).unsqueeze(-1)
        rho = model.rho()
        expected = -torch.logsumexp(log_g - rho * modes, dim=0) / rho
    assert torch.equal(full, expected)
    assert int(model.active_modes()) == 2
    assert float(model.derivatives(x).phase_weights[:, 1].abs().max()) == 0.0


def test_normalisation_round_trip():
    model = random_model()
    x = torch.randn(16, 3, dtype=torch.float64)
    before = model(x).detach()
    shift, scale = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.2, 7.0])
    model.set_normalization(
        input_shift=shift, input_scale=scale, energy_shift=-4.0, energy_scale=2.5
    )
    after = model(x * scale + shift).detach()
    assert torch.allclose(after, 2.5 * before - 4.0, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="input_scale"):
        model.set_normalization(input_shift=shift, input_scale=[1.0, 0.0, 1.0])


def test_bad_inputs_raise_clear_errors():
    model = random_model()
    with pytest.raises(ValueError, match=r"shape \(n_points, 3\)"):
        model.derivatives(torch.zeros(5, 2))
    x = torch.zeros(5, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        model.derivatives(x)
    with pytest.raises(ValueError, match="rho must be positive"):
        LSEICNN(2, 2, rho=0.0)


def test_derivatives_with_respect_to_a_subset_of_inputs():
    model = random_model(d=4, hidden=(6, 5, 4))
    model.set_normalization(input_shift=[0.1, 0.0, -0.3, 0.2], input_scale=[2.0, 0.5, 1.0, 3.0])
    x = torch.randn(30, 4, dtype=torch.float64)
    full = model.derivatives(x)
    wrt = [3, 0]
    part = model.derivatives(x, wrt=wrt)
    assert torch.equal(part.energy, full.energy)
    assert torch.allclose(part.gradient, full.gradient[:, wrt], rtol=1e-13, atol=1e-13)
    assert torch.allclose(part.hessian, full.hessian[:, wrt][:, :, wrt], rtol=1e-12, atol=1e-12)
    analytic = AnalyticPotential(lambda x: (x**3).sum(1) * x[:, 0], ["a", "b", "c", "d"])
    a_full, a_part = analytic.derivatives(x), analytic.derivatives(x, wrt=wrt)
    assert torch.equal(a_part.hessian, a_full.hessian[:, wrt][:, :, wrt])
    for bad in ([], [0, 0], [4], [-1]):
        with pytest.raises(ValueError, match="wrt must be distinct input indices"):
            model.derivatives(x, wrt=bad)


def test_the_fused_kernel_is_built():
    assert _native.available(), (
        "lse_material/_kernel*.so is missing: reinstall with a C compiler (make venv), or set "
        "LSE_MATERIAL_NATIVE=0 knowingly."
    )


@pytest.mark.parametrize("hidden", [(8,), (8, 6), (5, 6, 4)])
@pytest.mark.parametrize("wrt", [None, [3, 0, 2]])
def test_fused_kernel_equals_autograd_and_the_torch_path(hidden, wrt):
    model = random_model(d=4, n=4, hidden=hidden)
    with torch.no_grad():
        model.gate_weights[1] = 0.0  # a closed mode is skipped; its phase weight is exactly 0
    model.set_normalization(
        input_shift=[0.1, 0.0, -0.3, 0.2],
        input_scale=[2.0, 0.5, 1.0, 3.0],
        energy_shift=1.5,
        energy_scale=0.7,
    )
    x = torch.randn(77, 4, dtype=torch.float64)  # not a multiple of the kernel's block
    energy, grad, hess = autograd_derivatives(model, x)
    columns = list(range(4)) if wrt is None else wrt
    grad, hess = grad[:, columns], hess[:, columns][:, :, columns]
    model.requires_grad_(False)
    fused = model.derivatives(x, wrt=wrt)
    with _native.switched_off():
        reference = model.derivatives(x, wrt=wrt)
    for d in (fused, reference):
        assert torch.allclose(d.energy, energy, rtol=1e-12, atol=0)
        assert float((d.gradient - grad).abs().max() / grad.abs().max()) < 1e-12
        assert float((d.hessian - hess).abs().max() / hess.abs().max()) < 1e-10
    assert torch.allclose(fused.phase_weights, reference.phase_weights, rtol=0, atol=1e-13)
    assert float(fused.phase_weights[:, 1].abs().max()) == 0.0
    assert fused.hessian is not None and torch.equal(fused.hessian, fused.hessian.mT)


@pytest.mark.parametrize("wrt", [None, [3, 0, 2]])
def test_fused_kernel_computes_the_nested_lse_as_the_torch_path(wrt):
    """Groups with their own ρ_g in the kernel: energy, gradient, Hessian and phase weights equal
    the torch path's; a group whose modes are all closed (group 2) has weight exactly 0."""
    model = random_model(d=4, n=6, hidden=(6, 5), groups=[0, 1, 1, 0, 2, 1], group_rho=3.0)
    with torch.no_grad():
        model.group_rho_raw.add_(torch.tensor([0.4, -0.3, 0.0], dtype=torch.float64))
        model.gate_weights[4] = 0.0  # the only mode of group 2: an empty group
    model.set_normalization(input_shift=0.1, input_scale=1.5, energy_shift=0.3, energy_scale=2.0)
    model.requires_grad_(False)
    x = torch.randn(77, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    assert model._native_applies(x)
    fused = model.derivatives(x, wrt=wrt)
    energy_only = model.derivatives(x, wrt=wrt, hessian=False)
    with _native.switched_off():
        reference = model.derivatives(x, wrt=wrt)
    tol = 100 * torch.finfo(torch.float64).eps
    torch.testing.assert_close(fused.energy, reference.energy, rtol=tol, atol=tol)
    torch.testing.assert_close(fused.gradient, reference.gradient, rtol=tol, atol=tol)
    torch.testing.assert_close(fused.hessian, reference.hessian, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(fused.phase_weights, reference.phase_weights, rtol=0, atol=1e-14)
    assert torch.equal(energy_only.gradient, fused.gradient) and energy_only.hessian is None
    assert float(fused.phase_weights[:, 4].abs().max()) == 0.0
    assert torch.equal(fused.hessian, fused.hessian.mT)


def test_fused_kernel_on_one_point_and_on_none():
    model = random_model().requires_grad_(False)
    one = model.derivatives(torch.zeros(1, 3, dtype=torch.float64))
    assert one.hessian.shape == (1, 3, 3)
    none = model.derivatives(torch.zeros(0, 3, dtype=torch.float64))
    assert none.energy.shape == (0,) and none.hessian.shape == (0, 3, 3)


@pytest.mark.parametrize("ensemble", [None, 3])
def test_nested_lse_derivatives_match_autograd(ensemble):
    """A nested LSE (groups with their own ρ_g) in closed form vs autograd: energy, gradient,
    Hessian, phase weights summing to one; a closed gate and a subset of inputs included."""
    model = LSEICNN(
        4,
        5,
        (6, 5),
        groups=[0, 1, 1, 0, 1],
        rho=0.7,
        group_rho=3.0,
        ensemble=ensemble,
        generator=torch.Generator().manual_seed(1),
    )
    with torch.no_grad():
        model.gate_weights.uniform_(0.2, 2.0, generator=torch.Generator().manual_seed(2))
        model.group_rho_raw.add_(0.3 * torch.randn_like(model.group_rho_raw))
        if ensemble is None:
            model.gate_weights[2] = 0.0  # a closed mode drops out exactly
    model.set_normalization(input_shift=0.1, input_scale=1.5, energy_scale=2.0, energy_shift=0.3)
    lead = () if ensemble is None else (ensemble,)
    x = torch.randn(*lead, 7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        d = model.derivatives(x)
    xr = x.clone().requires_grad_(True)
    energy = model(xr)
    (grad,) = torch.autograd.grad(energy.sum(), xr, create_graph=True)
    hess = torch.stack(
        [torch.autograd.grad(grad[..., j].sum(), xr, retain_graph=True)[0] for j in range(4)], -2
    )
    tol = 100 * torch.finfo(torch.float64).eps
    torch.testing.assert_close(d.energy, energy.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(d.gradient, grad.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(d.hessian, hess, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.phase_weights.sum(-1), torch.ones_like(d.energy))
    if ensemble is None:
        assert float(d.phase_weights[:, 2].abs().max()) == 0.0
        part = model.derivatives(x, wrt=[1, 3])
        torch.testing.assert_close(part.hessian, hess[:, [1, 3]][:, :, [1, 3]])


def test_nested_lse_with_one_mode_per_group_is_the_smooth_minimum_of_the_groups():
    """Groups of one mode: the inner ρ_g only shifts a gate, and the outer LSE is the paper's."""
    nested = LSEICNN(
        3, 3, (4,), groups=[0, 1, 2], rho=0.5, generator=torch.Generator().manual_seed(4)
    )
    plain = LSEICNN(3, 3, (4,), rho=0.5, generator=torch.Generator().manual_seed(4))
    plain.load_state_dict({k: v for k, v in nested.state_dict().items() if k != "group_rho_raw"})
    with torch.no_grad():  # open gates of g = 1 so the inner shifts vanish
        nested.gate_weights.fill_(50.0)
        plain.gate_weights.fill_(50.0)
    x = torch.randn(9, 3, dtype=torch.float64)
    torch.testing.assert_close(nested(x), plain(x))


def test_place_modes_puts_each_mode_minimum_on_its_centre():
    for ensemble in (None, 2):
        model = LSEICNN(3, 4, (5, 5), ensemble=ensemble, generator=torch.Generator().manual_seed(0))
        model.set_normalization(input_shift=0.5, input_scale=2.0)
        centres = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        model.place_modes(centres)
        lead = () if ensemble is None else (ensemble,)
        modes = model.modes.derivatives(model._normalize(centres).expand(*lead, 4, 3))
        own = torch.diagonal(modes.gradient, dim1=-3, dim2=-2)
        assert float(own.abs().max()) < 1e-12  # stationary, and convex: the minimum


def test_groups_are_validated_and_saved(tmp_path):
    with pytest.raises(ValueError, match="groups must give each of the 3 modes"):
        LSEICNN(2, 3, (4,), groups=[0, 2, 2])
    model = LSEICNN(2, 3, (4,), groups=[0, 1, 1])
    path = lse_material.save(model, tmp_path / "nested.safetensors")
    loaded = lse_material.load(path)
    assert loaded.groups == (0, 1, 1)
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(loaded(x), model(x).detach())


def test_nested_lse_with_an_empty_group_has_finite_gradients():
    """Closing a group's last mode empties the group: energy and every gradient stay finite."""
    for groups in ([0, 1], [0, 0, 1]):
        model = LSEICNN(
            2, len(groups), (4,), groups=groups, generator=torch.Generator().manual_seed(6)
        )
        with torch.no_grad():
            model.gate_weights[-1] = 0.0
        x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
        d = model.derivatives(x, hessian=False)
        d.gradient.pow(2).sum().backward()
        assert bool(torch.isfinite(d.energy).all()) and bool(torch.isfinite(d.gradient).all())
        for name, p in model.named_parameters():
            assert p.grad is None or bool(torch.isfinite(p.grad).all()), name
        assert float(d.phase_weights[:, -1].abs().max()) == 0.0
