"""The one-dimensional test functions of SPEC §2 (settings [ours]; the paper names only their kinds)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = ["OneDFunction", "FUNCTIONS", "DOMAIN", "sample"]

DOMAIN = (-2.0, 2.0)


class OneDFunction(NamedTuple):
    """A test function ``f(x)`` (x: tensor of any shape) with its true wells."""

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    wells: tuple[float, ...]


def _minmix(x: torch.Tensor) -> torch.Tensor:
    return torch.minimum(
        torch.minimum(2 * (x + 1.3) ** 2, 4 * x**2 + 0.3), 3 * (x - 1.3) ** 2 - 0.2
    )


FUNCTIONS = {
    "quartic": OneDFunction("quartic", lambda x: (x**2 - 1) ** 2 + 0.3 * x, (-1.036, 0.960)),
    "cosine": OneDFunction(
        "cosine", lambda x: x**2 - torch.cos(1.5 * math.pi * x), (-1.218, 0.0, 1.218)
    ),
    "minmix": OneDFunction("minmix", _minmix, (-1.3, 0.0, 1.3)),
}


def sample(
    name: str, n_points: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_points`` uniform random points on DOMAIN: ``x (n_points, 1)``, ``f(x) (n_points,)``, float64."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown function {name!r}; choose from {sorted(FUNCTIONS)}.")
    lo, hi = DOMAIN
    x = lo + (hi - lo) * torch.rand(n_points, 1, generator=generator, dtype=torch.float64)
    return x, FUNCTIONS[name].f(x[:, 0])
