"""Physics of the metamaterial data model (docs/science.md §5): hysteresis, dissipation, return mapping."""

import pytest
import torch
from lse_material.training.data import metamaterial as mm

EPS = torch.finfo(torch.float64).eps
P = mm.MetamaterialParams()
M = P.kappa + 4 * P.mu / 3  # uniaxial-strain modulus, 5/3
ONSET_STRESS = -(P.Y + P.delta_psi) / abs(P.eps_t11)  # A→B: -0.12
REVERSE_STRESS = (P.Y - P.delta_psi) / abs(P.eps_t11)  # B→A: 0
TOL = 1e-12


def uniaxial(eps11: torch.Tensor) -> torch.Tensor:
    """``eps11 (..., )`` -> ε = eps11 e1⊗e1 ``(..., 3, 3)``."""
    eps = torch.zeros(*eps11.shape, 3, 3, dtype=torch.float64)
    eps[..., 0, 0] = eps11
    return eps


def loop(n=201, peak=-0.2):
    """0 → peak → 0 in 2(n - 1) equal steps, one trajectory: eps11 ``(2n - 1,)``."""
    down = torch.linspace(0.0, peak, n, dtype=torch.float64)
    return torch.cat([down, down.flip(0)[1:]])


def test_parameters_of_the_paper_and_analytic_thresholds():
    assert (P.kappa, P.mu, P.eps_t11, P.delta_psi, P.Y) == (1.0, 0.5, -0.1, 0.006, 0.006)
    assert ONSET_STRESS == pytest.approx(-0.12) and REVERSE_STRESS == 0.0
    assert P.transformation_modulus == pytest.approx(M * 0.01)


def test_energy_derivatives_are_stress_and_driving_force():
    g = torch.Generator().manual_seed(0)
    a = 0.2 * (torch.rand(8, 3, 3, generator=g, dtype=torch.float64) - 0.5)
    eps = (a + a.transpose(1, 2)).requires_grad_(True)
    xi = torch.rand(8, generator=g, dtype=torch.float64).requires_grad_(True)
    d_eps, d_xi = torch.autograd.grad(mm.energy(eps, xi).sum(), (eps, xi))
    torch.testing.assert_close(d_eps, mm.stress(eps, xi).detach(), rtol=0, atol=10 * EPS)
    torch.testing.assert_close(-d_xi, mm.driving_force(eps, xi).detach(), rtol=0, atol=10 * EPS)
    # A = σ : ε_t - Δψ = -0.1 σ11 - 0.006.
    sigma = mm.stress(eps, xi).detach()
    torch.testing.assert_close(
        mm.driving_force(eps, xi).detach(), -0.1 * sigma[:, 0, 0] - 0.006, rtol=0, atol=10 * EPS
    )


def test_monotone_compression_starts_transforming_at_the_analytic_onset():
    eps11 = torch.linspace(0.0, -0.2, 401, dtype=torch.float64)  # steps of 5e-4
    res = mm.simulate(uniaxial(eps11)[None])
    xi, s11 = res.xi[0], res.stress[0, :, 0, 0]
    first = int(torch.nonzero(xi > 0)[0])
    assert s11[first] == pytest.approx(ONSET_STRESS, rel=0.02)
    assert float(eps11[first]) == pytest.approx(ONSET_STRESS / M, abs=6e-4)  # ε11 ≈ -0.072
    # Elastic before, plateau at σ11 = -0.12 during, ξ = 1 and elastic hardening after.
    torch.testing.assert_close(s11[:first], M * eps11[:first], rtol=0, atol=TOL)
    inside = (xi > 0) & (xi < 1)
    assert int(inside.sum()) > 100
    torch.testing.assert_close(
        s11[inside], torch.full_like(s11[inside], ONSET_STRESS), rtol=0, atol=TOL
    )
    torch.testing.assert_close(
        xi[inside], (ONSET_STRESS / M - eps11[inside]) / abs(P.eps_t11), rtol=0, atol=TOL
    )
    done = eps11 < ONSET_STRESS / M + P.eps_t11 - 1e-9  # ε11 < -0.172
    assert bool((xi[done] == 1).all()) and bool(done.any())
    assert bool((torch.diff(xi) >= 0).all())


def test_unloading_needs_nonnegative_stress_to_transform_back():
    eps11 = loop()
    res = mm.simulate(uniaxial(eps11)[None])
    xi, s11 = res.xi[0], res.stress[0, :, 0, 0]
    peak = int(eps11.argmin())
    back = torch.diff(xi[peak:]) < 0
    first_back = peak + 1 + int(torch.nonzero(back)[0])
    # ξ stays at 1 until σ11 reaches 0 (ε11 = -0.1); then B→A on the σ11 = 0 plateau.
    assert bool((s11[peak:first_back] < REVERSE_STRESS + TOL).all())
    assert float(s11[first_back]) >= REVERSE_STRESS - TOL
    assert float(eps11[first_back]) == pytest.approx(P.eps_t11, abs=1.5e-3)  # one step
    assert bool((s11[first_back:] >= -TOL).all())
    assert float(xi[-1]) == pytest.approx(0.0, abs=TOL) and float(s11[-1]) == pytest.approx(
        0.0, abs=TOL
    )
    # Hysteresis: at the same strain the unloading stress lies above the loading stress.
    i = int(torch.argmin((eps11[:peak] + 0.12).abs()))
    j = peak + int(torch.argmin((eps11[peak:] + 0.12).abs()))
    assert float(eps11[i]) == pytest.approx(float(eps11[j]))
    assert float(s11[j] - s11[i]) > 0.01
    # Work over the closed loop = dissipation Y ∫|dξ| = 2 Y for a full A→B→A cycle.
    work = float((0.5 * (s11[1:] + s11[:-1]) * torch.diff(eps11)).sum())
    assert work == pytest.approx(2 * P.Y, rel=0.02)


def sawtooth(**kwargs):
    return mm.sawtooth_histories(24, 100, seed=3, **kwargs)


def test_dissipation_bounds_and_consistency_along_sawtooth_histories():
    data = sawtooth()
    xi = data.xi
    assert float(xi.min()) >= 0.0 and float(xi.max()) <= 1.0
    assert float(xi.max()) == 1.0 and bool(
        (xi[:, 0] == 0).all()
    )  # some trajectories transform fully
    a = mm.driving_force(data.strain, xi)
    dxi = torch.diff(xi, dim=1)
    assert float((a[:, 1:] * dxi).min()) >= 0.0  # A(ξ_new) Δξ ≥ 0
    interior = (xi > 0) & (xi < 1)
    assert float(a[interior].abs().max()) <= P.Y + TOL
    assert float(a[xi == 0].max()) <= P.Y + TOL and float(a[xi == 1].min()) >= -P.Y - TOL
    moved = torch.cat([torch.zeros_like(dxi[:, :1]), dxi], 1) != 0
    assert float((a[moved & interior].abs() - P.Y).abs().max()) <= TOL  # KKT: |A| = Y
    # Discrete energy balance (ψ quadratic: trapezoid is exact):
    # Σ ½(σ_k + σ_k+1):Δε = ψ_end - ψ_0 + Σ ½(A_k + A_k+1) Δξ, the dissipated part ≥ 0.
    psi = mm.energy(data.strain, xi)
    mid_sigma = 0.5 * (data.stress[:, 1:] + data.stress[:, :-1])
    work = (mid_sigma * torch.diff(data.strain, dim=1)).sum((1, 2, 3))
    dissipation = (0.5 * (a[:, 1:] + a[:, :-1]) * dxi).sum(1)
    torch.testing.assert_close(work, psi[:, -1] - psi[:, 0] + dissipation, rtol=0, atol=1e-14)
    assert float(dissipation.min()) >= 0.0 and float(dissipation.max()) > 0.0


def test_return_mapping_on_general_strains():
    g = torch.Generator().manual_seed(1)
    a = 0.4 * (torch.rand(500, 3, 3, generator=g, dtype=torch.float64) - 0.5)
    eps = a + a.transpose(1, 2)
    xi_old = torch.rand(500, generator=g, dtype=torch.float64)
    xi_new = mm.return_mapping(eps, xi_old)
    assert float(xi_new.min()) >= 0 and float(xi_new.max()) <= 1
    a_new = mm.driving_force(eps, xi_new)
    a_trial = mm.driving_force(eps, xi_old)
    assert float((a_new * (xi_new - xi_old)).min()) >= 0.0
    interior = (xi_new > 0) & (xi_new < 1)
    assert float(a_new[interior].abs().max()) <= P.Y + TOL
    elastic = a_trial.abs() <= P.Y
    assert bool(elastic.any()) and torch.equal(xi_new[elastic], xi_old[elastic])
    # A is affine in ξ with slope -ε_t:ℂ:ε_t.
    torch.testing.assert_close(
        a_new, a_trial - P.transformation_modulus * (xi_new - xi_old), rtol=0, atol=TOL
    )


def test_monotone_loading_is_step_size_independent():
    eps11 = torch.linspace(0.0, -0.15, 301, dtype=torch.float64)
    fine = mm.simulate(uniaxial(eps11)[None]).xi[0, -1]
    coarse = mm.simulate(uniaxial(eps11[::100])[None]).xi[0, -1]  # 3 steps
    one = mm.return_mapping(uniaxial(eps11[-1:]), torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(fine, coarse, rtol=0, atol=TOL)
    torch.testing.assert_close(one[0], fine, rtol=0, atol=TOL)


def test_fixed_phase_stress_is_linear_elastic():
    data = sawtooth(fixed_phase=True)
    assert bool((data.xi == 0).all())
    e11 = data.strain[..., 0, 0]
    torch.testing.assert_close(data.stress[..., 0, 0], M * e11, rtol=0, atol=TOL)
    lateral = (P.kappa - 2 * P.mu / 3) * e11
    torch.testing.assert_close(data.stress[..., 1, 1], lateral, rtol=0, atol=TOL)
    torch.testing.assert_close(data.stress[..., 2, 2], lateral, rtol=0, atol=TOL)
    off = data.stress.clone()
    for i in range(3):
        off[..., i, i] = 0
    assert float(off.abs().max()) == 0.0
    # Same strains as the transforming data set.
    assert torch.equal(data.strain, sawtooth().strain)


def test_sawtooth_loading_protocol():
    data = sawtooth()
    assert data.strain.shape == (24, 100, 3, 3) and data.stress.shape == (24, 100, 3, 3)
    assert data.xi.shape == (24, 100) and data.time.shape == (100,)
    assert all(t.dtype == torch.float64 for t in (data.strain, data.stress, data.xi, data.time))
    assert float(data.time[0]) == 0.0 and float(data.time[-1]) == pytest.approx(1.0)
    e11 = data.strain[..., 0, 0]
    assert bool((data.strain[:, 0] == 0).all())
    rest = data.strain.clone()
    rest[..., 0, 0] = 0
    assert float(rest.abs().max()) == 0.0  # uniaxial
    assert float(e11.max()) <= 0.0 and float(e11.min()) >= -0.2
    assert bool(((data.period >= 20) & (data.period <= 60)).all())
    assert int(data.period.unique().numel()) > 1
    amp = data.amplitude
    assert float(amp.min()) >= -0.2 and float(amp.max()) <= -0.05
    for n in range(24):
        p = int(data.period[n])
        # Back to zero at the start of every cycle; each cycle reaches (near) its amplitude.
        assert bool((e11[n, ::p] == 0).all())
        for c in range(amp.shape[1]):
            if c * p + p // 2 < 100:  # the peak of cycle c is inside the history
                peak = float(e11[n, c * p : (c + 1) * p].min())
                # exact for even p; an odd p misses the peak by a fraction 1/p
                assert peak == pytest.approx(float(amp[n, c]), rel=1.0 / p + 1e-12)
    # Reproducible by seed.
    again = sawtooth()
    assert all(torch.equal(x, y) for x, y in zip(data, again))
    assert not torch.equal(mm.sawtooth_histories(24, 100, seed=4).strain, data.strain)


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="n_trajectories"):
        mm.sawtooth_histories(0, seed=0)
    with pytest.raises(ValueError, match="n_steps"):
        mm.sawtooth_histories(2, 1, seed=0)
    with pytest.raises(ValueError, match="period_range"):
        mm.sawtooth_histories(2, 10, seed=0, period_range=(30, 20))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        mm.stress(torch.zeros(4, 6, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="xi must have shape"):
        mm.energy(torch.zeros(4, 3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mm.return_mapping(torch.zeros(1, 3, 3, dtype=torch.float64), torch.full((1,), 1.5))
    with pytest.raises(ValueError, match="mu"):
        mm.MetamaterialParams(mu=0.0)
    with pytest.raises(ValueError, match="n_traj, n_steps"):
        mm.simulate(torch.zeros(3, 3, 3, dtype=torch.float64))
