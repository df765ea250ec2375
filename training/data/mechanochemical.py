"""The mechanochemical free energy of docs/science.md §3 (Rudraraju, Van der Ven & Garikipati 2016).

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
    "sample_box",
    "parse_params",
    "from_order_parameters",
    "order_parameters",
    "training_box",
    "true_wells",
    "extrapolation_path",
    "ufl_inputs",
]

INPUT_NAMES = ("E11", "E22", "E33", "2E23", "2E13", "2E12", "c")
STRESS_NAMES = ("S11", "S22", "S33", "S23", "S13", "S12")
STRAIN_BOUND = 0.15  # the first sampling box: each E_IJ ~ U[-0.15, 0.15] [ours, superseded]
TRAINING_BOX = {  # the box of ``sample_box``
    **{n: (-STRAIN_BOUND, STRAIN_BOUND) for n in INPUT_NAMES[:3]},
    **{n: (-2 * STRAIN_BOUND, 2 * STRAIN_BOUND) for n in INPUT_NAMES[3:6]},
    "c": (0.0, 1.0),
}
# Order-parameter sampling (``sample``) [ours]: radius of the (e2, e3) disk, half-width of the
# other order parameters (e1, e4, e5, e6), both in units of s_e; the c range in units of s_c.
DISK_RADIUS, OTHER_HALF_WIDTH, C_RANGE = 1.3, 0.5, (-0.05, 1.05)
# Rows: e1, e2, e3 as combinations of E11, E22, E33 (orthonormal, so E = ORDERᵀ e).
ORDER = (
    (1 / math.sqrt(3.0), 1 / math.sqrt(3.0), 1 / math.sqrt(3.0)),
    (1 / math.sqrt(2.0), -1 / math.sqrt(2.0), 0.0),
    (1 / math.sqrt(6.0), 1 / math.sqrt(6.0), -2 / math.sqrt(6.0)),
)


@dataclass(frozen=True)
class MechanochemicalParams:
    """Parameters of eq. 11 (docs/science.md §3). Values [ours], from the source code's defaults.

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
    """ψ from tensor components (E23 etc. are tensor, not engineering, shears) — eq. 11 (docs/science.md §3).

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


def parse_params(values=None) -> MechanochemicalParams:
    """``MechanochemicalParams`` from ``NAME=VALUE`` strings (``["d_e=0.2"]``), a dict, or None.

    Raises ValueError naming an unknown parameter or a value that is not a number.
    """
    if values is None or isinstance(values, MechanochemicalParams):
        return values or MechanochemicalParams()
    if not isinstance(values, dict):
        items = {}
        for item in values:
            name, sep, value = str(item).partition("=")
            if not sep:
                raise ValueError(f"param {item!r} must be NAME=VALUE, e.g. d_e=0.2.")
            items[name.strip()] = value
        values = items
    known = set(MechanochemicalParams.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown data-model parameter(s) {unknown}; known: {sorted(known)}.")
    parsed = {}
    for name, value in values.items():
        try:
            parsed[name] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"param {name}={value!r} is not a number.") from None
    return MechanochemicalParams(**parsed)


def from_order_parameters(e: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Inputs ``x (n, 7)`` (INPUT_NAMES) from order parameters ``e (n, 6)`` = e1..e6 and ``c (n,)``.

    ``e4, e5, e6`` are the tensor shears E23, E13, E12, so the engineering shears are ``2 e4..6``.
    """
    order = torch.tensor(ORDER, dtype=e.dtype, device=e.device)
    return torch.cat([e[:, :3] @ order, 2 * e[:, 3:6], c[:, None]], dim=1)


def order_parameters(x: torch.Tensor) -> torch.Tensor:
    """``e (n, 6)`` = e1..e6 of inputs ``x (n, 7)`` (the inverse of ``from_order_parameters``)."""
    order = torch.tensor(ORDER, dtype=x.dtype, device=x.device)
    return torch.cat([x[:, :3] @ order.T, x[:, 3:6] / 2], dim=1)


def training_box(params: MechanochemicalParams = MechanochemicalParams()) -> dict:
    """Input name -> (low, high) of the inputs ``sample`` draws (the model's training box).

    E11, E22, E33 = Σ ORDERᵀ e: at most |e1|/√3 + R·√(2/3) with R the (e2, e3) disk radius.
    """
    a, r = OTHER_HALF_WIDTH * params.s_e, DISK_RADIUS * params.s_e
    normal = a / math.sqrt(3.0) + r * math.sqrt(2.0 / 3.0)
    return {
        **{n: (-normal, normal) for n in INPUT_NAMES[:3]},
        **{n: (-2 * a, 2 * a) for n in INPUT_NAMES[3:6]},
        "c": (C_RANGE[0] * params.s_c, C_RANGE[1] * params.s_c),
    }


def _data(x: torch.Tensor, params: MechanochemicalParams) -> MechanochemicalData:
    stress, mu = stress_mu(x, params=params)
    return MechanochemicalData(x, stress, mu, energy(x, params=params))


def sample(
    n: int, *, seed: int, params: MechanochemicalParams = MechanochemicalParams()
) -> MechanochemicalData:
    """``n`` samples in order-parameter space, where the wells are [ours], float64.

    - c = s_c·(c0 + (c1 - c0)(1 - cos πu)/2), u ~ U[0, 1], (c0, c1) = C_RANGE: an arcsine
      density, denser near both chemical wells (c = 0 and c = s_c) and a little beyond them
      (the variant wells of the joint space sit at c ≈ 1.0125 s_c);
    - (e2, e3) uniform in the disk of radius DISK_RADIUS·s_e (the variants at |(e2, e3)| = s_e,
      their saddles and the walls outside them);
    - e1, e4, e5, e6 ~ U[-a, a], a = OTHER_HALF_WIDTH·s_e (convex directions).

    The first sampler (``sample_box``: each E_IJ ~ U[-0.15, 0.15]) put most points at corners
    where the quartic term makes |S| ~ 60, and the fit missed the variants. Reproducible: a
    ``torch.Generator`` seeded with ``seed``; everything scales with the parameters.
    """
    _check_count(n)
    g = torch.Generator().manual_seed(seed)

    def uniform(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    c0, c1 = C_RANGE
    c = params.s_c * (c0 + (c1 - c0) * (1 - torch.cos(math.pi * uniform(n))) / 2)
    radius = DISK_RADIUS * params.s_e * uniform(n).sqrt()
    angle = 2 * math.pi * uniform(n)
    e = OTHER_HALF_WIDTH * params.s_e * (2 * uniform(n, 6) - 1)
    e[:, 1], e[:, 2] = radius * torch.cos(angle), radius * torch.sin(angle)
    return _data(from_order_parameters(e, c), params)


def sample_box(
    n: int, *, seed: int, params: MechanochemicalParams = MechanochemicalParams()
) -> MechanochemicalData:
    """The first sampler [ours, superseded]: c ~ U[0, 1], each E_IJ ~ U[-0.15, 0.15], float64.

    The shear columns of ``x`` are engineering shears 2E_IJ ∈ [-0.3, 0.3] (TRAINING_BOX).
    """
    _check_count(n)
    g = torch.Generator().manual_seed(seed)
    strain = (2 * torch.rand(n, 6, generator=g, dtype=torch.float64) - 1) * STRAIN_BOUND
    strain[:, 3:] *= 2  # engineering shears
    x = torch.cat([strain, torch.rand(n, 1, generator=g, dtype=torch.float64)], dim=1)
    return _data(x, params)


def _check_count(n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}.")


def true_wells(params: MechanochemicalParams = MechanochemicalParams()) -> dict:
    """The wells of ψ at fixed c (the closed form of docs/science.md §3), as inputs ``(m, 7)`` and energies.

    ``{"c=0": (x (1, 7), psi (1,)), "c=s_c": (x (3, 7), psi (3,))}``: the reference phase at
    E = 0 (ψ = 0) and the three tetragonal variants at |(e2, e3)| = s_e where
    e3(e3² - 3e2²) is largest (angles 90°, 210°, 330°), e1 = e4 = e5 = e6 = 0, ψ = -d_e.
    """
    angles = torch.tensor([90.0, 210.0, 330.0], dtype=torch.float64) * math.pi / 180
    e = torch.zeros(3, 6, dtype=torch.float64)
    e[:, 1], e[:, 2] = params.s_e * torch.cos(angles), params.s_e * torch.sin(angles)
    variants = from_order_parameters(e, torch.full((3,), params.s_c, dtype=torch.float64))
    reference = torch.zeros(1, 7, dtype=torch.float64)
    return {
        "c=0": (reference, energy(reference, params=params)),
        "c=s_c": (variants, energy(variants, params=params)),
    }


def extrapolation_path(
    n_points: int = 131, *, e_bar: float = 0.1, t_max: float = 1.3, s_c: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 16 [ours] (docs/science.md §3): c(t) = t s_c, E(t) = (t ē/√6) diag(1, 1, -2), so e3 = t ē, e1 = e2 = 0.

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
    x[:, 0], x[:, 1], x[:, 2], x[:, 6] = a, a, -2 * a, t * s_c
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
