"""The mechanochemical free energy of SPEC §3 (Rudraraju, Van der Ven & Garikipati 2016).

One definition of the formula (``psi_components``, arithmetic only) serves two backends:
torch tensors (data, training, reference laws) and UFL expressions (FE reference runs), so
the two cannot drift. Parameter values are [ours], from the source code's defaults.

Input order everywhere (``INPUT_NAMES``): Voigt Lagrange strain with engineering shears,
then the concentration: ``E11, E22, E33, 2E23, 2E13, 2E12, c``. With this order the Voigt
second Piola–Kirchhoff stress ``[S11, S22, S33, S23, S13, S12]`` is exactly ``∂ψ/∂x[:6]``,
``μ = ∂ψ/∂x[6]``, and the consistent tangent is the Hessian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from lse_material.potential import AnalyticPotential, as_float64_tensor

__all__ = [
    "INPUT_NAMES",
    "STRESS_NAMES",
    "TRAINING_BOX",
    "MechanochemicalParams",
    "MechanochemicalData",
    "psi_components",
    "energy",
    "energy_ufl",
    "potential",
    "stress_mu",
    "sample",
    "extrapolation_path",
]

INPUT_NAMES = ("E11", "E22", "E33", "2E23", "2E13", "2E12", "c")
STRESS_NAMES = ("S11", "S22", "S33", "S23", "S13", "S12")
STRAIN_BOUND = 0.15  # each independent E_IJ ~ U[-0.15, 0.15] [ours]
TRAINING_BOX = {
    **{n: (-STRAIN_BOUND, STRAIN_BOUND) for n in INPUT_NAMES[:3]},
    **{n: (-2 * STRAIN_BOUND, 2 * STRAIN_BOUND) for n in INPUT_NAMES[3:6]},
    "c": (0.0, 1.0),
}


@dataclass(frozen=True)
class MechanochemicalParams:
    """Parameters of SPEC eq. 11. Values [ours], from the source code's defaults.

    d_c: depth of the chemical double well (its barrier height is d_c at c = s_c/2);
    s_c: concentration of the second chemical well (c̃ = c / s_c);
    d_e: depth of the three tetragonal strain wells at c = s_c;
    s_e: their distance from the origin in the (e2, e3) plane.
    """

    d_c: float = 1.0
    s_c: float = 1.0
    d_e: float = 0.1
    s_e: float = 0.1

    def __post_init__(self):
        for name in ("d_c", "s_c", "d_e", "s_e"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"MechanochemicalParams.{name} must be finite, got {value}.")
        for name in ("s_c", "s_e"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"MechanochemicalParams.{name} must be > 0 (it divides c or e), "
                    f"got {getattr(self, name)}."
                )


def psi_components(
    E11, E22, E33, E23, E13, E12, c, params: MechanochemicalParams = MechanochemicalParams()
):
    """ψ from tensor components (E23 etc. are tensor, not engineering, shears) — SPEC eq. 11.

    Arithmetic only (``+ - * /`` and float constants): works unchanged on torch tensors of
    any common shape (result: that shape) and on UFL scalar expressions.
    """
    p = params
    e1 = (E11 + E22 + E33) / math.sqrt(3.0)
    e2 = (E11 - E22) / math.sqrt(2.0)
    e3 = (E11 + E22 - 2.0 * E33) / math.sqrt(6.0)
    ct = c / p.s_c
    r2 = e2 * e2 + e3 * e3
    return (
        16.0 * p.d_c * ct * ct * (1.0 - ct) * (1.0 - ct)
        + (3.0 * p.d_e / (2.0 * p.s_e**4)) * r2 * r2
        - (p.d_e / p.s_e**3) * ct * e3 * (e3 * e3 - 3.0 * e2 * e2)
        - (3.0 * p.d_e / (2.0 * p.s_e**2)) * (2.0 * ct - 1.0) * r2
        + (3.0 * p.d_e / (2.0 * p.s_e**2)) * (e1 * e1 + E23 * E23 + E13 * E13 + E12 * E12)
    )


def energy(
    x: torch.Tensor, *, params: MechanochemicalParams = MechanochemicalParams()
) -> torch.Tensor:
    """ψ at ``x (n, 7)`` in INPUT_NAMES order (engineering shears) -> ``(n,)``.

    Keeps the dtype and device of a floating tensor; differentiable by autograd.
    """
    x = as_float64_tensor(x, len(INPUT_NAMES))
    E11, E22, E33, g23, g13, g12, c = x.unbind(-1)
    return psi_components(E11, E22, E33, g23 / 2, g13 / 2, g12 / 2, c, params)


def energy_ufl(E, c, *, params: MechanochemicalParams = MechanochemicalParams()):
    """ψ as a UFL scalar expression of a 3×3 UFL tensor ``E`` (Lagrange strain) and a scalar ``c``.

    For 2-D plane strain embed the 2×2 strain into a 3×3 tensor first (E33 = E13 = E23 = 0).
    Only the symmetric part of ``E`` enters through its upper triangle, so pass a symmetric E.
    """
    import ufl

    shape = ufl.shape(E)
    if shape != (3, 3):
        raise ValueError(
            f"energy_ufl needs a 3×3 strain tensor, got UFL shape {shape}; for plane strain "
            "embed it, e.g. ufl.as_matrix([[E[0, 0], E[0, 1], 0], [E[1, 0], E[1, 1], 0], [0, 0, 0]])."
        )
    if ufl.shape(c) != ():
        raise ValueError(
            f"energy_ufl needs a scalar concentration c, got UFL shape {ufl.shape(c)}."
        )
    return psi_components(E[0, 0], E[1, 1], E[2, 2], E[1, 2], E[0, 2], E[0, 1], c, params)


def potential(*, params: MechanochemicalParams = MechanochemicalParams()) -> AnalyticPotential:
    """The analytic ψ behind the same interface as a trained model (the FE reference law).

    ``potential().derivatives(x)`` gives energy ``(n,)``, gradient ``(n, 7)`` (= [S, μ]) and
    Hessian ``(n, 7, 7)`` (the consistent tangent) by autograd.
    """
    return AnalyticPotential(lambda x: energy(x, params=params), INPUT_NAMES)


def stress_mu(
    x: torch.Tensor, *, params: MechanochemicalParams = MechanochemicalParams()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Voigt stress ``(n, 6)`` (STRESS_NAMES) and chemical potential ``(n,)`` at ``x (n, 7)``.

    By autograd of ``energy``: ``S = ∂ψ/∂x[:6]`` (engineering-shear inputs), ``μ = ∂ψ/∂c``.
    """
    x = as_float64_tensor(x, len(INPUT_NAMES))
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(xg, params=params).sum(), xg)
    return grad[:, :6], grad[:, 6]


class MechanochemicalData(NamedTuple):
    """x ``(n, 7)`` (INPUT_NAMES), stress ``(n, 6)`` (STRESS_NAMES), mu ``(n,)``, energy ``(n,)``."""

    x: torch.Tensor
    stress: torch.Tensor
    mu: torch.Tensor
    energy: torch.Tensor


def sample(
    n: int, *, seed: int, params: MechanochemicalParams = MechanochemicalParams()
) -> MechanochemicalData:
    """``n`` samples: c ~ U[0, 1], each independent E_IJ ~ U[-0.15, 0.15] (SPEC §3 [ours]), float64.

    The shear columns of ``x`` are engineering shears 2E_IJ ∈ [-0.3, 0.3] (TRAINING_BOX).
    Reproducible: a ``torch.Generator`` seeded with ``seed`` draws the strain, then c.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}.")
    g = torch.Generator().manual_seed(seed)
    strain = (2 * torch.rand(n, 6, generator=g, dtype=torch.float64) - 1) * STRAIN_BOUND
    strain[:, 3:] *= 2  # engineering shears
    x = torch.cat([strain, torch.rand(n, 1, generator=g, dtype=torch.float64)], dim=1)
    stress, mu = stress_mu(x, params=params)
    return MechanochemicalData(x, stress, mu, energy(x, params=params))


def extrapolation_path(
    n_points: int = 131, *, e_bar: float = 0.1, t_max: float = 1.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """SPEC eq. 16 [ours]: c(t) = t, E(t) = (t ē/√6) diag(1, 1, -2), so e3 = t ē, e1 = e2 = 0.

    Returns t ``(n_points,)`` uniform on [0, t_max] and x ``(n_points, 7)`` (INPUT_NAMES).
    It leaves the training box (c > 1) for t > 1.
    """
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 2:
        raise ValueError(f"n_points must be an integer >= 2, got {n_points!r}.")
    if not (math.isfinite(t_max) and t_max > 0):
        raise ValueError(f"t_max must be finite and > 0, got {t_max}.")
    if not math.isfinite(e_bar):
        raise ValueError(f"e_bar must be finite, got {e_bar}.")
    t = torch.linspace(0.0, t_max, n_points, dtype=torch.float64)
    x = torch.zeros(n_points, 7, dtype=torch.float64)
    a = t * e_bar / math.sqrt(6.0)
    x[:, 0], x[:, 1], x[:, 2], x[:, 6] = a, a, -2 * a, t
    return t, x


def ufl_inputs(u, c):
    """The law's inputs by name, and the 3×3 Lagrange strain, of a displacement ``u`` and ``c``.

    ``u``: a UFL vector of dimension 2 (plane strain: E33 = E13 = E23 = 0, embedded in 3×3) or
    3; ``c``: a UFL scalar. Returns ``(inputs, E)``: ``inputs`` maps each of ``INPUT_NAMES`` to
    its UFL expression (engineering shears ``2E_IJ``; the plane-strain zeros are literal
    numbers, so a ``QuadratureLaw`` never differentiates them); ``E`` is what ``energy_ufl``
    takes, so ``energy_ufl(E, c)`` is the pure-UFL reference of the same law.
    """
    import ufl

    (dim,) = ufl.shape(u)
    if dim not in (2, 3):
        raise ValueError(f"ufl_inputs needs a 2-D or 3-D displacement; got dimension {dim}.")
    F = ufl.Identity(dim) + ufl.grad(u)
    Ed = 0.5 * (F.T * F - ufl.Identity(dim))
    if dim == 2:
        E = ufl.as_matrix([[Ed[0, 0], Ed[0, 1], 0], [Ed[1, 0], Ed[1, 1], 0], [0, 0, 0]])
        shears = (0.0, 0.0, 2 * Ed[0, 1])
        normal = (Ed[0, 0], Ed[1, 1], 0.0)
    else:
        E = Ed
        shears = (2 * E[1, 2], 2 * E[0, 2], 2 * E[0, 1])
        normal = (E[0, 0], E[1, 1], E[2, 2])
    return dict(zip(INPUT_NAMES, (*normal, *shears, c))), E
