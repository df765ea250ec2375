"""Density statistics on a uniform grid: Gaussian KDEs, their cross-validated bandwidth, Hellinger.

Used as the reference of the Schlögl study (``lse_material.training.schlogl``), all [ours]:

- kernels reflected at a boundary (``reflect_at``; copy numbers are non-negative), so the KDE
  keeps its mass on ``x ≥ reflect_at``;
- the bandwidth per row by leave-one-out likelihood cross-validation over a log grid
  (``BANDWIDTHS``, 2–200): Scott's rule uses the total spread, which oversmooths two
  separated states;
- the Hellinger distance ``H(p, q)² = 1 - ∫ √(p q)``, in [0, 1], both densities renormalised
  on the grid.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BANDWIDTHS", "cv_bandwidth", "gaussian_kde", "hellinger"]

BANDWIDTHS = torch.logspace(math.log10(2.0), math.log10(200.0), 41, dtype=torch.float64)


def _kernel_sum(
    samples: torch.Tensor, points: torch.Tensor, h: torch.Tensor, reflect_at: float | None
) -> torch.Tensor:
    """Σ_j φ((points - x_j)/h) (+ the reflected kernels): ``(M, n)``, ``(M, G)``, ``(M, 1)`` -> ``(M, G)``."""
    z = (points.unsqueeze(-1) - samples.unsqueeze(-2)) / h.unsqueeze(-1)  # (M, G, n)
    k = torch.exp(-0.5 * z**2)
    if reflect_at is not None:
        zr = (points.unsqueeze(-1) - (2 * reflect_at - samples).unsqueeze(-2)) / h.unsqueeze(-1)
        k = k + torch.exp(-0.5 * zr**2)
    return k.sum(-1)


def gaussian_kde(
    samples: torch.Tensor,
    grid: torch.Tensor,
    bandwidth: torch.Tensor | float,
    *,
    reflect_at: float | None = 0.0,
) -> torch.Tensor:
    """Gaussian KDE of ``samples (M, n)`` (or ``(n,)``) on ``grid (G,)`` -> ``(M, G)`` (or ``(G,)``).

    bandwidth: a float or one per row, ``(M,)``. ``reflect_at``: reflect the kernels at this
    boundary (the density lives on ``x ≥ reflect_at``); None for plain kernels.
    """
    single = samples.ndim == 1
    samples = samples.reshape(-1, samples.shape[-1]).to(grid.dtype)
    h = torch.as_tensor(bandwidth, dtype=grid.dtype).reshape(-1, 1).expand(samples.shape[0], 1)
    if not bool((h > 0).all()):
        raise ValueError("KDE bandwidths must be positive.")
    n = samples.shape[-1]
    points = grid.expand(samples.shape[0], -1)
    density = _kernel_sum(samples, points, h, reflect_at) / (n * h * math.sqrt(2 * math.pi))
    return density[0] if single else density


def cv_bandwidth(
    samples: torch.Tensor,
    *,
    candidates: torch.Tensor = BANDWIDTHS,
    reflect_at: float | None = 0.0,
) -> torch.Tensor:
    """Leave-one-out likelihood cross-validated KDE bandwidth per row: ``(M, n)`` -> ``(M,)``.

    Maximises ``Σ_i log p̂_{-i}(x_i)`` over ``candidates`` (the same kernels as
    :func:`gaussian_kde`, reflections included, with every kernel of sample i left out).
    """
    samples = samples.reshape(-1, samples.shape[-1]).to(candidates.dtype)
    n = samples.shape[-1]
    if n < 2:
        raise ValueError("cross-validation needs at least 2 samples per row.")
    scores = []
    for h in candidates:
        hh = h.reshape(1, 1).expand(samples.shape[0], 1)
        total = _kernel_sum(samples, samples, hh, reflect_at)  # (M, n), includes sample i
        own = 1.0
        if reflect_at is not None:
            own = own + torch.exp(-0.5 * (2 * (samples - reflect_at) / h) ** 2)
        loo = (total - own) / ((n - 1) * h * math.sqrt(2 * math.pi))
        scores.append(torch.log(loo.clamp_min(1e-300)).mean(-1))
    return candidates[torch.stack(scores, -1).argmax(-1)]


def hellinger(p: torch.Tensor, q: torch.Tensor, dx: float) -> torch.Tensor:
    """Hellinger distance between densities on a uniform grid, ``(..., G)`` -> ``(...)``.

    Both are renormalised on the grid first (mass outside it does not count as a difference).
    """
    p = p.clamp_min(0)
    q = q.clamp_min(0)
    p = p / (p.sum(-1, keepdim=True) * dx)
    q = q / (q.sum(-1, keepdim=True) * dx)
    bc = (torch.sqrt(p * q).sum(-1) * dx).clamp(max=1.0)
    return torch.sqrt(1 - bc)
