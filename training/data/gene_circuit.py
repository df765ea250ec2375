"""A conservative two-gene circuit with an explicit potential (docs/science.md §6, [ours]).

    V(x, y) = -b(x + y) + a(-x²/2 + x³/(3K)) + a(-y²/2 + y³/(3K)) + γ x² y² / 2
    (ẋ, ẏ) = -∇V = (b + a x(1 - x/K) - γ x y²,  b + a y(1 - y/K) - γ x² y)

a = K = 1, b = 0.05, domain [0, 1.5]². γ = 0.2: one stable state; γ = 2.0: two.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "rk4",
    "potential",
    "velocity",
    "trajectories",
    "stable_states",
    "Trajectories",
    "DOMAIN",
    "GAMMAS",
]

A_RATE, K, BASAL = 1.0, 1.0, 0.05
DOMAIN = (0.0, 1.5)
GAMMAS = {"weak": 0.2, "strong": 2.0}


def potential(xy: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """V at ``xy (..., 2)`` -> ``(...)``; gamma a float or a tensor broadcasting with ``(...)``."""
    x, y = xy[..., 0], xy[..., 1]
    return (
        -BASAL * (x + y)
        + A_RATE * (-(x**2) / 2 + x**3 / (3 * K))
        + A_RATE * (-(y**2) / 2 + y**3 / (3 * K))
        + gamma * x**2 * y**2 / 2
    )


def velocity(xy: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """(ẋ, ẏ) = -∇V at ``xy (..., 2)``."""
    x, y = xy[..., 0], xy[..., 1]
    return torch.stack(
        [
            BASAL + A_RATE * x * (1 - x / K) - gamma * x * y**2,
            BASAL + A_RATE * y * (1 - y / K) - gamma * x**2 * y,
        ],
        dim=-1,
    )


class Trajectories(NamedTuple):
    """points ``(n, steps, 2)``, velocities ``(n, steps, 2)``, times ``(steps,)``."""

    points: torch.Tensor
    velocities: torch.Tensor
    times: torch.Tensor


def rk4(field, starts: torch.Tensor, *, steps: int, dt: float) -> torch.Tensor:
    """Classical Runge–Kutta for ``ṗ = field(p, t)`` from ``starts (n, 2)`` at t = 0 ->
    points ``(n, steps, 2)`` at t = 0, dt, ..., (steps - 1) dt."""
    p, t, points = starts, 0.0, []
    for _ in range(steps):
        points.append(p)
        k1 = field(p, t)
        k2 = field(p + dt / 2 * k1, t + dt / 2)
        k3 = field(p + dt / 2 * k2, t + dt / 2)
        k4 = field(p + dt * k3, t + dt)
        p = p + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t += dt
    return torch.stack(points, dim=1)


def trajectories(
    gamma, n: int, *, steps: int = 60, dt: float = 0.1, seed: int = 0, starts=None, gamma_of_t=None
) -> Trajectories:
    """RK4 trajectories from random starts in the domain (or ``starts (n, 2)``), sampled every ``dt``.

    ``gamma_of_t``: an optional function t -> weight s(t) in [0, 1] for the transient landscape
    ``(1 - s) V_weak + s V_strong`` (then ``gamma`` is ignored).
    """
    if n < 1 or steps < 1 or dt <= 0:
        raise ValueError(f"need n >= 1, steps >= 1, dt > 0; got {n}, {steps}, {dt}.")
    if starts is None:
        g = torch.Generator().manual_seed(seed)
        starts = DOMAIN[0] + (DOMAIN[1] - DOMAIN[0]) * torch.rand(
            n, 2, generator=g, dtype=torch.float64
        )

    def field(p, t):
        if gamma_of_t is None:
            return velocity(p, gamma)
        s = gamma_of_t(t)
        return (1 - s) * velocity(p, GAMMAS["weak"]) + s * velocity(p, GAMMAS["strong"])

    pts = rk4(field, starts.clone(), steps=steps, dt=dt)
    times = dt * torch.arange(steps, dtype=torch.float64)
    if gamma_of_t is None:
        vel = velocity(pts, gamma)
    else:
        s = torch.tensor([gamma_of_t(float(tt)) for tt in times], dtype=torch.float64)[
            None, :, None
        ]
        vel = (1 - s) * velocity(pts, GAMMAS["weak"]) + s * velocity(pts, GAMMAS["strong"])
    return Trajectories(pts, vel, times)


def stable_states(gamma: float) -> torch.Tensor:
    """The stable fixed points inside the domain, ``(k, 2)``, by Newton from a grid of starts."""
    g = torch.linspace(0.05, 1.45, 8, dtype=torch.float64)
    p = torch.cartesian_prod(g, g)
    for _ in range(30):  # relax along the flow first, then Newton on -∇V = 0
        p = p + 0.2 * velocity(p, gamma)
    for _ in range(20):
        p = p.detach().requires_grad_(True)
        v = velocity(p, gamma)
        jac = torch.stack(
            [torch.autograd.grad(v[:, i].sum(), p, retain_graph=True)[0] for i in range(2)], 1
        )
        p = (p - torch.linalg.solve(jac, v.unsqueeze(-1)).squeeze(-1)).detach()
    p = p.detach()
    hess = -torch.stack(
        [torch.autograd.functional.jacobian(lambda q: velocity(q, gamma), q) for q in p]
    )
    stable = torch.linalg.eigvalsh(hess).min(-1).values > 0
    p = p[stable]
    unique = []
    for q in p:
        if all((q - u).norm() > 1e-6 for u in unique):
            unique.append(q)
    return torch.stack(unique)
