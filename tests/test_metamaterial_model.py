"""The hidden-state model (docs/science.md §5): stress = ∂ψ/∂ε, algorithmic tangent, commit/revert, training."""

import json

import pytest
import torch
from lse_material.training.data import metamaterial as mm
from lse_material.training.metamaterial import ReferenceLaw, build_model, train_metamaterial

import lse_material
from lse_material.hidden_state import (
    HiddenStateMaterial,
    MaterialPoints,
    strain_invariants,
    tensor_to_voigt,
    voigt_to_tensor,
)

DT = 1.0 / 99


def _model(seed=0):
    data = mm.sawtooth_histories(20, 100, seed=seed)
    strain = tensor_to_voigt(data.strain)
    return build_model(strain, data.time, seed=seed, stress_std=0.05)


def _points(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    eps_old = 0.05 * torch.randn(n, 6, dtype=torch.float64, generator=g)
    eps_new = eps_old + 0.01 * torch.randn(n, 6, dtype=torch.float64, generator=g)
    h_old = 0.5 * torch.randn(n, 6, dtype=torch.float64, generator=g)
    return eps_old, h_old, eps_new


def _fd_tangent(law, eps_old, state_old, eps_new, h=1e-6):
    cols = []
    for j in range(6):
        e = torch.zeros(6, dtype=torch.float64)
        e[j] = h
        plus = law.step(eps_old, state_old, eps_new + e, dt=DT, tangent=False).stress
        minus = law.step(eps_old, state_old, eps_new - e, dt=DT, tangent=False).stress
        cols.append((plus - minus) / (2 * h))
    return torch.stack(cols, dim=-1)


def test_voigt_round_trip_and_invariants():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, 3, dtype=torch.float64, generator=g)
    eps = a + a.transpose(-1, -2)
    assert torch.equal(voigt_to_tensor(tensor_to_voigt(eps)), eps)
    inv = strain_invariants(tensor_to_voigt(eps))
    tr = eps.diagonal(dim1=-2, dim2=-1).sum(-1)
    dev = eps - tr[:, None, None] * torch.eye(3, dtype=torch.float64) / 3
    assert torch.allclose(inv[:, 0], tr)
    assert torch.allclose(inv[:, 1], dev.pow(2).sum((-1, -2)))
    assert torch.allclose(inv[:, 2], eps[:, 0, 0])


def test_stress_is_the_strain_gradient_of_psi_at_fixed_h():
    model = _model()
    eps_old, h_old, eps_new = _points()
    result = model.step(eps_old, h_old, eps_new, dt=DT)
    e = eps_new.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.energy(e, result.state).sum(), e)
    assert torch.allclose(grad, result.stress, rtol=1e-12, atol=1e-14)


def test_every_mode_is_non_decreasing_in_I2_so_convex_in_strain():
    """∂W_i/∂I2 ≥ 0 for every mode (the I2 weights are softplus): ψ_i(I(ε), h) convex in ε."""
    model = _model()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 9, dtype=torch.float64, generator=g)
    modes = model.potential.modes.derivatives(model.potential._normalize(x), hessian=False)
    assert float(modes.gradient[..., 1].detach().min()) >= 0.0
    # And the Hessian in ε of each mode at fixed h is positive semi-definite.
    eps = 0.1 * torch.randn(30, 6, dtype=torch.float64, generator=g)
    h = torch.randn(30, 6, dtype=torch.float64, generator=g)
    for i in range(model.n_modes):

        def mode_energy(e, h=h, i=i):
            xn = model.potential._normalize(torch.cat([strain_invariants(e), h], -1))
            return model.potential.modes(xn)[i].sum()

        hess = torch.autograd.functional.hessian(mode_energy, eps)  # (30, 6, 30, 6)
        blocks = torch.stack([hess[p, :, p, :] for p in range(30)])
        assert float(torch.linalg.eigvalsh(blocks).min()) > -1e-10


@pytest.mark.parametrize("which", ["model", "reference"])
def test_algorithmic_tangent_matches_finite_differences(which):
    if which == "model":
        law = _model()
        eps_old, state_old, eps_new = _points()
    else:
        law = ReferenceLaw()
        eps_old, _, eps_new = _points()
        # uniaxial compression paths through the three branches (elastic, A->B, B->A)
        eps_new = torch.zeros(3, 6, dtype=torch.float64)
        eps_new[:, 0] = torch.tensor([-0.05, -0.1, -0.02], dtype=torch.float64)
        eps_new[:, 1] = 0.003
        eps_old = torch.zeros_like(eps_new)
        state_old = torch.tensor([[0.0], [0.1], [0.6]], dtype=torch.float64)
    result = law.step(eps_old, state_old, eps_new, dt=DT)
    fd = _fd_tangent(law, eps_old, state_old, eps_new)
    scale = float(result.tangent.abs().max())
    assert torch.allclose(result.tangent, fd, rtol=1e-6, atol=1e-7 * scale)
    if which == "reference":
        # by hand: σ11 = κ tr εe + 2μ dev εe_11 with εe = ε - ξ ε_t; A = -0.1 σ11 - Δψ;
        # Δξ = sign(A)(|A| - Y) / (0.01 (κ + 4μ/3)) -> 0.1 + 0.168 and 0.6 - 0.412
        expected = torch.tensor([0.0, 0.268, 0.188], dtype=torch.float64)
        assert torch.allclose(result.state[:, 0], expected, atol=1e-12)


def test_tangent_includes_the_state_dependence_on_strain():
    """Freezing h_{n+1} gives ψ_εε only; the algorithmic tangent differs from it."""
    model = _model()
    eps_old, h_old, eps_new = _points()
    full = model.step(eps_old, h_old, eps_new, dt=DT)
    e = eps_new.clone().requires_grad_(True)
    sigma, _ = model.stress(e, full.state, weights=False)
    frozen = torch.stack(
        [torch.autograd.grad(sigma[:, j].sum(), e, retain_graph=True)[0] for j in range(6)], 1
    )
    assert float((full.tangent - frozen).abs().max()) > 1e-6 * float(frozen.abs().max())


def test_rollout_equals_repeated_steps():
    model = _model()
    data = mm.sawtooth_histories(3, 30, seed=4)
    strain = tensor_to_voigt(data.strain)
    roll = model.rollout(strain, data.time)
    points = MaterialPoints(model, 3)
    for n in range(30):
        if n == 0:
            sigma, _ = model.stress(strain[:, 0], points.state, weights=False)
        else:
            step = points.trial(strain[:, n], dt=float(data.time[n] - data.time[n - 1]))
            points.commit()
            sigma = step.stress
        assert torch.allclose(roll.stress[:, n].detach(), sigma, rtol=1e-12, atol=1e-15)
    assert torch.allclose(roll.state[:, -1].detach(), points.state, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("which", ["model", "reference"])
def test_failed_step_leaves_the_committed_state_bit_for_bit(which):
    law = _model() if which == "model" else ReferenceLaw()
    points = MaterialPoints(law, 16)
    path = torch.zeros(16, 6, dtype=torch.float64)
    for k in range(1, 9):  # into the transformation and part way back
        path[:, 0] = -0.02 * k * torch.linspace(0.5, 1.0, 16, dtype=torch.float64)
        points.trial(path, dt=DT)
        points.commit()
    strain, state = points.strain.clone(), points.state.clone()
    before = points.trial(path * 0.9, dt=DT)
    points.revert()
    # A "failed" Newton step: several wild trials, then revert.
    for scale in (5.0, -3.0, 50.0):
        points.trial(path * scale, dt=DT / 7)
    points.revert()
    assert torch.equal(points.strain, strain) and torch.equal(points.state, state)
    after = points.trial(path * 0.9, dt=DT)
    assert torch.equal(after.stress, before.stress) and torch.equal(after.tangent, before.tangent)
    assert torch.equal(after.state, before.state)
    with pytest.raises(ValueError, match="commit"):
        points.revert()
        points.commit()


def test_model_file_round_trip(tmp_path):
    model = _model()
    path = lse_material.save(model, tmp_path / "m.safetensors", note="test")
    loaded = lse_material.load(path)
    assert isinstance(loaded, HiddenStateMaterial) and loaded.card["note"] == "test"
    eps_old, h_old, eps_new = _points()
    a = model.step(eps_old, h_old, eps_new, dt=DT)
    b = loaded.step(eps_old, h_old, eps_new, dt=DT)
    assert torch.equal(a.stress, b.stress) and torch.equal(a.tangent, b.tangent)


def test_bad_inputs_raise():
    model = _model()
    eps_old, h_old, eps_new = _points()
    with pytest.raises(ValueError, match="dt"):
        model.step(eps_old, h_old, eps_new, dt=0.0)
    with pytest.raises(ValueError, match="same number of points"):
        model.step(eps_old, h_old[:3], eps_new, dt=DT)
    with pytest.raises(ValueError, match="non-finite"):
        model.step(eps_old, h_old, eps_new * float("nan"), dt=DT)
    with pytest.raises(ValueError, match="epochs"):
        train_metamaterial(out="unused", epochs=0)


@pytest.mark.slow
@pytest.mark.parametrize("fixed_phase, target", [(True, 0.99), (False, 0.95)])
def test_held_out_stress_r2(tmp_path, fixed_phase, target, request):
    """The figures of issue 5 at full size (LSE_FULL=1, the CLI's default training): held-out
    R² ≥ 0.99 (fixed phase) and ≥ 0.95 (two-phase: the session's shared default training).
    The CI-sized training and its loosened figures:
    tests/test_fem_metamaterial.py::test_ci_sized_training_reaches_loosened_figures.
    """
    if fixed_phase:
        result = train_metamaterial(out=tmp_path, fixed_phase=True)
    else:
        tmp_path, result = request.getfixturevalue("default_metamaterial_training")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_r2_stress"] == result.summary["test_r2_stress"]
    for name in ("model.safetensors", "parity.png", "loops.png", "history.json"):
        assert (tmp_path / name).exists(), name
    assert summary["test_r2_stress"] >= target
