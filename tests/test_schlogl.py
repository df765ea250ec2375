"""Issue 6, Schlögl: the exact SSA, the KDE reference, LSE-ICNN densities (docs/science.md §4)."""

import json
import math

import numpy as np
import pytest
import torch
from lse_material.training.data.schlogl import OBSERVATION_TIMES, birth_death, simulate
from lse_material.training.data.statistics import cv_bandwidth, gaussian_kde, hellinger
from lse_material.training.schlogl import GRID, fit_densities, train_schlogl

from lse_material.cli import build_parser

DX = float(GRID[1] - GRID[0])


def _normal(x, mean, std):
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def test_ssa_matches_the_exact_birth_death_moments():
    # ∅ -> X at rate β, X -> ∅ at rate δX: mean and variance are known in closed form.
    beta, delta, x0, n = 10.0, 0.5, 5, 4000
    times = np.array([0.05, 0.5, 1.0, 3.0])
    states = birth_death(beta, delta, x0, n, times, seed=3).states
    assert states.shape == (n, times.size)
    for j, t in enumerate(times):
        e = math.exp(-delta * t)
        mean = x0 * e + beta / delta * (1 - e)
        var = x0 * e * (1 - e) + beta / delta * (1 - e)
        assert abs(states[:, j].mean() - mean) < 4 * math.sqrt(var / n)
        assert abs(states[:, j].var() - var) < 4 * var * math.sqrt(2 / n)


def test_ssa_records_the_state_before_the_first_event_after_each_time():
    # Pure death from 3 at rate 1 per molecule: P(X(t) = 3) = e^{-3t}; observation times that
    # fall between two events (or after extinction) must all see the right state.
    times = np.array([0.01, 0.02, 0.5, 5.0, 50.0])
    states = birth_death(0.0, 1.0, 3, 20000, times, seed=1).states
    assert abs((states[:, 0] == 3).mean() - math.exp(-0.03)) < 0.01
    assert abs((states[:, 2] == 3).mean() - math.exp(-1.5)) < 0.01
    assert (states[:, -1] == 0).all() and (np.diff(states, axis=1) <= 0).all()


def test_ssa_rejects_bad_input():
    with pytest.raises(ValueError, match="n_trajectories"):
        simulate(0)
    with pytest.raises(ValueError, match="increasing"):
        simulate(5, times=np.array([0.2, 0.1]))


def test_schlogl_trajectories_split_into_two_states():
    data = simulate(60, seed=1)
    assert data.states.shape == (60, 50) and np.allclose(data.times, OBSERVATION_TIMES)
    early, late = data.states[:, 0], data.states[:, -1]
    assert abs(early.mean() - 248) < 10 and early.std() < 30  # one mode at t = 0.1
    assert (late > 400).any() and (late < 150).any()  # both fates at t = 5


def test_reflected_kde_is_normalised_and_cv_bandwidth_is_sensible():
    g = torch.Generator().manual_seed(0)
    near_zero = (30 * torch.randn(2, 400, generator=g, dtype=torch.float64)).abs()
    density = gaussian_kde(near_zero, GRID, torch.tensor([10.0, 20.0]))
    mass = torch.trapezoid(density, GRID)  # the reflected kernels keep all mass on X >= 0
    assert torch.allclose(mass, torch.ones(2, dtype=torch.float64), atol=1e-6)
    gaussian = 300 + 40 * torch.randn(1, 400, generator=g, dtype=torch.float64)
    h = float(cv_bandwidth(gaussian))
    silverman = 1.06 * 40 * 400 ** (-0.2)
    assert 0.5 * silverman < h < 2 * silverman


def test_hellinger_bounds():
    p, q = _normal(GRID, 200, 20), _normal(GRID, 600, 20)
    assert float(hellinger(p, p, DX)) < 1e-7
    assert float(hellinger(p, q, DX)) > 0.999
    assert float(hellinger(p, q, DX)) == pytest.approx(float(hellinger(q, p, DX)))


def test_density_fit_counts_one_and_two_components():
    # Member 0: one Gaussian; member 1: two well-separated Gaussians (40 % high).
    g = torch.Generator().manual_seed(0)
    n = 300
    one = 250 + 20 * torch.randn(n, generator=g, dtype=torch.float64)
    high = torch.rand(n, generator=g) < 0.4
    two = torch.where(
        high,
        550 + 40 * torch.randn(n, generator=g, dtype=torch.float64),
        200 + 20 * torch.randn(n, generator=g, dtype=torch.float64),
    )
    samples = torch.stack([one, two])
    result = fit_densities(samples, epochs=1000, finetune_epochs=150)
    assert result.model.active_modes().tolist() == [1, 2]
    truth = torch.stack(
        [_normal(GRID, 250, 20), 0.6 * _normal(GRID, 200, 20) + 0.4 * _normal(GRID, 550, 40)]
    )
    density = result.log_density.exp()
    assert torch.allclose(density.sum(-1) * DX, torch.ones(2, dtype=torch.float64))
    fitted = hellinger(density, truth, DX)
    kde = hellinger(gaussian_kde(samples, GRID, cv_bandwidth(samples)), truth, DX)
    assert (fitted < 0.1).all() and (fitted < kde).all()  # closer to the truth than the KDE


def test_density_fit_rejects_samples_off_the_grid():
    with pytest.raises(ValueError, match="quadrature grid"):
        fit_densities(torch.tensor([[100.0, 900.0]]), epochs=1)


def test_train_schlogl_writes_summary_and_plots(tmp_path):
    summary = train_schlogl(
        out=tmp_path,
        trajectories=40,
        epochs=150,
        finetune_epochs=20,
        reference_trajectories=40,
        device="cpu",
    )
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["distance"] == "hellinger" and len(saved["times"]) == 50
    for key in ("active_modes", "distance_to_kde", "kde_train_test_distance"):
        assert len(saved[key]) == 50
    # docs/science.md §4: one mode before the split (t <= 0.5), two after it (t >= 4.1) ...
    assert summary["active_modes"][:5] == [1] * 5, summary["active_modes"]
    assert summary["active_modes"][-10:] == [2] * 10, summary["active_modes"]
    # ... and the fitted density is about as close to the held-out KDE as the training KDE is
    # (measured at this size: mean Hellinger distance 0.27 against 0.19).
    distance = np.mean(summary["distance_to_kde"])
    assert distance < 2.0 * np.mean(summary["kde_train_test_distance"]), distance
    for png in ("trajectories.png", "densities.png", "distances.png", "density_over_time.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_cli_registers_train_schlogl():
    args = build_parser().parse_args(["train", "schlogl", "--out", "x", "--epochs", "7"])
    assert args.func is train_schlogl and args.epochs == 7 and args.nll_tolerance is None
