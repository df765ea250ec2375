"""The phase-transforming metamaterial of docs/science.md §5 (Rossi, Romero & Huespe 2024, in 3-D).

Small strain ``ε`` (3×3 symmetric), phase-B volume fraction ``ξ ∈ [0, 1]``, transformation
strain ``ε_t = ε_t11 e1⊗e1``, isotropic elasticity ``ℂ = κ I⊗I + 2μ (𝕀 - I⊗I/3)``:

    ψ(ε, ξ) = ½ (ε - ξ ε_t) : ℂ : (ε - ξ ε_t) + ξ Δψ
    σ = ℂ : (ε - ξ ε_t),        A = -∂ψ/∂ξ = σ : ε_t - Δψ      (driving force)
    rate-independent flow: ξ̇ = λ̇ sign(A), |A| ≤ Y, λ̇ (|A| - Y) = 0, ξ ∈ [0, 1]

With ε_t = -0.1 e1⊗e1, ``A = -0.1 σ11 - Δψ``: A→B starts when ``σ11 = -(Y + Δψ)/0.1 = -0.12``
and B→A when ``σ11 = (Y - Δψ)/0.1 = 0``; between them ξ does not change (hysteresis). Under
uniaxial strain ``ε = ε11 e1⊗e1`` the elastic modulus is ``κ + 4μ/3 = 5/3``, so A→B starts at
``ε11 = -0.072`` and completes (ξ = 1, on the σ11 = -0.12 plateau) at ``ε11 = -0.172``.

Tensors are ``(..., 3, 3)`` torch tensors in float64; ``ξ`` has the leading shape ``(...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from lse_material.hidden_state import STRAIN_NAMES, StepResult, tensor_to_voigt, voigt_to_tensor
from lse_material.potential import as_float64_tensor

__all__ = [
    "MetamaterialParams",
    "ReferenceLaw",
    "data_time_step",
    "uniaxial_modulus",
    "MetamaterialData",
    "StrainResponse",
    "transformation_strain",
    "energy",
    "stress",
    "driving_force",
    "return_mapping",
    "simulate",
    "sawtooth_histories",
]


@dataclass(frozen=True)
class MetamaterialParams:
    """Material constants of docs/science.md §5 (the paper's table; the symbol order is ours).

    kappa: bulk modulus κ; mu: shear modulus μ; eps_t11: the only non-zero component of the
    transformation strain ε_t = eps_t11 e1⊗e1; delta_psi: chemical energy Δψ of phase B;
    Y: threshold of the driving force |A| for transformation (dissipation per unit Δξ).
    """

    kappa: float = 1.0
    mu: float = 0.5
    eps_t11: float = -0.1
    delta_psi: float = 0.006
    Y: float = 0.006

    def __post_init__(self):
        for name in ("kappa", "mu", "eps_t11", "delta_psi", "Y"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"MetamaterialParams.{name} must be finite, got {value}.")
        for name in ("kappa", "mu"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"MetamaterialParams.{name} must be > 0 (stable elasticity), "
                    f"got {getattr(self, name)}."
                )
        if self.Y < 0:
            raise ValueError(f"MetamaterialParams.Y must be >= 0, got {self.Y}.")
        if self.eps_t11 == 0:
            raise ValueError("MetamaterialParams.eps_t11 must be non-zero (no transformation).")

    @property
    def transformation_modulus(self) -> float:
        """``ε_t : ℂ : ε_t = (κ + 4μ/3) ε_t11²``, the slope of -A in ξ at fixed ε."""
        return (self.kappa + 4.0 * self.mu / 3.0) * self.eps_t11**2


class StrainResponse(NamedTuple):
    """Response to a strain history: stress ``(n_traj, n_steps, 3, 3)``, xi ``(n_traj, n_steps)``."""

    stress: torch.Tensor
    xi: torch.Tensor


class MetamaterialData(NamedTuple):
    """Sawtooth histories (docs/science.md §5).

    strain, stress: ``(n_traj, n_steps, 3, 3)``; xi: ``(n_traj, n_steps)`` (not observed by
    the model, kept for checks and plots); time: ``(n_steps,)``; period: ``(n_traj,)`` the
    cycle length of each trajectory in steps (int64); amplitude: ``(n_traj, n_cycles)`` the
    ε11 at the peak of each cycle (cycles past the last step are unused).
    """

    strain: torch.Tensor
    stress: torch.Tensor
    xi: torch.Tensor
    time: torch.Tensor
    period: torch.Tensor
    amplitude: torch.Tensor


def transformation_strain(
    params: MetamaterialParams = MetamaterialParams(), *, dtype=torch.float64, device=None
) -> torch.Tensor:
    """ε_t ``(3, 3)`` = eps_t11 e1⊗e1."""
    eps_t = torch.zeros(3, 3, dtype=dtype, device=device)
    eps_t[0, 0] = params.eps_t11
    return eps_t


def _check(eps, xi) -> tuple[torch.Tensor, torch.Tensor]:
    eps = torch.as_tensor(eps, dtype=torch.float64) if not torch.is_tensor(eps) else eps
    xi = torch.as_tensor(xi, dtype=eps.dtype, device=eps.device) if not torch.is_tensor(xi) else xi
    if eps.ndim < 2 or eps.shape[-2:] != (3, 3):
        raise ValueError(f"eps must have shape (..., 3, 3); got {tuple(eps.shape)}.")
    if xi.shape != eps.shape[:-2]:
        raise ValueError(
            f"xi must have shape {tuple(eps.shape[:-2])} (one phase fraction per strain "
            f"tensor); got {tuple(xi.shape)}."
        )
    return eps, xi


def _elastic_strain(eps, xi, params):
    eps_t = transformation_strain(params, dtype=eps.dtype, device=eps.device)
    sym = 0.5 * (eps + eps.transpose(-1, -2))  # 𝕀 is the symmetric identity
    return sym - xi[..., None, None] * eps_t


def _hooke(eps_e, params):
    eye = torch.eye(3, dtype=eps_e.dtype, device=eps_e.device)
    tr = eps_e.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    return params.kappa * tr * eye + 2.0 * params.mu * (eps_e - tr * eye / 3.0)


def energy(
    eps: torch.Tensor, xi: torch.Tensor, *, params: MetamaterialParams = MetamaterialParams()
) -> torch.Tensor:
    """ψ ``(n,)`` at strain ``eps (n, 3, 3)`` and phase fraction ``xi (n,)`` (any leading shape)."""
    eps, xi = _check(eps, xi)
    eps_e = _elastic_strain(eps, xi, params)
    return 0.5 * (eps_e * _hooke(eps_e, params)).sum((-1, -2)) + xi * params.delta_psi


def stress(
    eps: torch.Tensor, xi: torch.Tensor, *, params: MetamaterialParams = MetamaterialParams()
) -> torch.Tensor:
    """σ = ℂ : (ε - ξ ε_t) ``(n, 3, 3)`` (symmetric) at ``eps (n, 3, 3)``, ``xi (n,)``."""
    eps, xi = _check(eps, xi)
    return _hooke(_elastic_strain(eps, xi, params), params)


def driving_force(
    eps: torch.Tensor, xi: torch.Tensor, *, params: MetamaterialParams = MetamaterialParams()
) -> torch.Tensor:
    """A = -∂ψ/∂ξ = σ : ε_t - Δψ ``(n,)`` at ``eps (n, 3, 3)``, ``xi (n,)``."""
    sigma = stress(eps, xi, params=params)
    eps_t = transformation_strain(params, dtype=sigma.dtype, device=sigma.device)
    return (sigma * eps_t).sum((-1, -2)) - params.delta_psi


def return_mapping(
    eps_new: torch.Tensor,
    xi_old: torch.Tensor,
    *,
    params: MetamaterialParams = MetamaterialParams(),
) -> torch.Tensor:
    """Exact implicit update of ξ for a strain increment -> ``xi_new (n,)``.

    ``eps_new (n, 3, 3)``, ``xi_old (n,)`` in [0, 1]. A is affine in ξ at fixed strain,
    ``A(ξ_old + Δξ) = A_trial - (ε_t:ℂ:ε_t) Δξ``, so the consistency condition |A| = Y has
    the closed-form root ``Δξ = (A_trial - Y sign(A_trial)) / (ε_t:ℂ:ε_t)`` when the trial
    state violates |A_trial| ≤ Y (otherwise Δξ = 0). ξ is then clipped to [0, 1] (at a
    bound the constraint is active and |A| may exceed Y). The dissipation A(ξ_new) Δξ is
    never negative.
    """
    eps_new, xi_old = _check(eps_new, xi_old)
    if bool(((xi_old < 0) | (xi_old > 1)).any()):
        raise ValueError("xi_old must lie in [0, 1]; start histories from xi = 0 (phase A).")
    a_trial = driving_force(eps_new, xi_old, params=params)
    excess = torch.clamp(a_trial.abs() - params.Y, min=0.0)
    delta = torch.sign(a_trial) * excess / params.transformation_modulus
    return torch.clamp(xi_old + delta, 0.0, 1.0)


def simulate(
    strain: torch.Tensor,
    *,
    xi0: torch.Tensor | float = 0.0,
    fixed_phase: bool = False,
    params: MetamaterialParams = MetamaterialParams(),
) -> StrainResponse:
    """Strain-driven material-point response along ``strain (n_traj, n_steps, 3, 3)``.

    ξ starts at ``xi0`` (scalar or ``(n_traj,)``) and is updated by ``return_mapping`` at every
    step (step 0 included); ``fixed_phase=True`` keeps ξ at ``xi0`` (linear elasticity).
    Returns stress ``(n_traj, n_steps, 3, 3)`` and xi ``(n_traj, n_steps)``.
    """
    if not torch.is_tensor(strain):
        strain = torch.as_tensor(strain, dtype=torch.float64)
    if strain.ndim != 4 or strain.shape[-2:] != (3, 3):
        raise ValueError(
            f"strain must have shape (n_traj, n_steps, 3, 3); got {tuple(strain.shape)}."
        )
    n_traj, n_steps = strain.shape[:2]
    xi = torch.as_tensor(xi0, dtype=strain.dtype, device=strain.device).expand(n_traj).clone()
    history = torch.empty(n_traj, n_steps, dtype=strain.dtype, device=strain.device)
    for k in range(n_steps):
        if not fixed_phase:
            xi = return_mapping(strain[:, k], xi, params=params)
        history[:, k] = xi
    return StrainResponse(stress(strain, history, params=params), history)


def sawtooth_histories(
    n_trajectories: int = 400,
    n_steps: int = 100,
    *,
    seed: int,
    fixed_phase: bool = False,
    period_range: tuple[int, int] = (20, 60),
    amplitude_range: tuple[float, float] = (-0.2, -0.05),
    t_final: float = 1.0,
    params: MetamaterialParams = MetamaterialParams(),
) -> MetamaterialData:
    """Cyclic uniaxial strain-controlled sawtooth histories (docs/science.md §5), float64.

    ``ε = ε11(t) e1⊗e1`` [ours]. Each trajectory has one period P, an integer number of steps
    drawn uniformly from ``period_range`` (inclusive) [ours: 20 to 60 steps, so 100 steps
    hold 1.7 to 5 cycles]; every cycle has its own amplitude ``a ~ U[amplitude_range]``
    (compression, [-0.2, -0.05] [ours]) and goes linearly 0 → a → 0:
    ``ε11(k) = a_cycle · (1 - |2 s - 1|)``, ``s = (k mod P) / P``. The history starts at
    ε = 0, ξ = 0; ``fixed_phase=True`` keeps ξ ≡ 0 (same strains, linear elastic stress).
    ``time (n_steps,)`` is uniform on [0, t_final] [ours: the model is rate independent].
    A ``torch.Generator`` seeded with ``seed`` draws periods, then amplitudes.
    """
    for name, value, low in (("n_trajectories", n_trajectories, 1), ("n_steps", n_steps, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    p_lo, p_hi = period_range
    if not (isinstance(p_lo, int) and isinstance(p_hi, int) and 2 <= p_lo <= p_hi):
        raise ValueError(f"period_range must be integers 2 <= low <= high, got {period_range}.")
    a_lo, a_hi = amplitude_range
    if not (math.isfinite(a_lo) and math.isfinite(a_hi) and a_lo <= a_hi):
        raise ValueError(f"amplitude_range must be finite with low <= high, got {amplitude_range}.")
    if not (math.isfinite(t_final) and t_final > 0):
        raise ValueError(f"t_final must be finite and > 0, got {t_final}.")

    g = torch.Generator().manual_seed(seed)
    period = torch.randint(p_lo, p_hi + 1, (n_trajectories,), generator=g)
    n_cycles = -(-n_steps // p_lo)
    amplitude = a_lo + (a_hi - a_lo) * torch.rand(
        n_trajectories, n_cycles, generator=g, dtype=torch.float64
    )
    k = torch.arange(n_steps)
    cycle = k[None, :] // period[:, None]
    s = (k[None, :] % period[:, None]).to(torch.float64) / period[:, None]
    eps11 = torch.gather(amplitude, 1, cycle) * (1.0 - (2.0 * s - 1.0).abs())
    strain = torch.zeros(n_trajectories, n_steps, 3, 3, dtype=torch.float64)
    strain[..., 0, 0] = eps11
    response = simulate(strain, fixed_phase=fixed_phase, params=params)
    time = torch.linspace(0.0, t_final, n_steps, dtype=torch.float64)
    return MetamaterialData(strain, response.stress, response.xi, time, period, amplitude)


def data_time_step(n_steps: int = 100, t_final: float = 1.0) -> float:
    """The time step of ``sawtooth_histories(n_steps=..., t_final=...)``: ``t_final / (n_steps - 1)``."""
    return t_final / (n_steps - 1)


def uniaxial_modulus(params: MetamaterialParams = MetamaterialParams()) -> float:
    """``κ + 4μ/3``: the stress per unit strain under uniaxial strain ``ε = ε11 e1⊗e1``."""
    return params.kappa + 4.0 * params.mu / 3.0


class ReferenceLaw:
    """The data model as an internal-state law (``lse_material.hidden_state``): state ``ξ`` ``(P, 1)``.

    ``step`` is the exact return mapping of this module at the end-of-step strain (rate
    independent: ``dt`` is accepted and unused); the tangent is the algorithmic one, by
    autograd through the closed-form return mapping (exact: it is piecewise affine). Voigt
    conventions of ``lse_material.hidden_state``. ``fixed_phase=True`` keeps ξ ≡ 0.
    """

    input_names = STRAIN_NAMES
    n_state = 1

    def __init__(self, *, params: MetamaterialParams | None = None, fixed_phase: bool = False):
        self.params = MetamaterialParams() if params is None else params
        self.fixed_phase = fixed_phase

    def initial_state(self, n_points: int) -> torch.Tensor:
        return torch.zeros(n_points, 1, dtype=torch.float64)

    def step(self, strain_old, state_old, strain_new, *, dt: float, tangent: bool = True):
        """Return mapping at ``strain_new (P, 6)`` from ``state_old (P, 1)``; a ``StepResult``."""
        del strain_old, dt  # rate independent; the committed ξ is all the history it needs
        eps_new = as_float64_tensor(strain_new, 6, name="strain_new")
        xi_old = as_float64_tensor(state_old, 1, name="state_old")[:, 0]
        with torch.enable_grad():
            e = eps_new.detach().clone().requires_grad_(tangent)
            eps = voigt_to_tensor(e)
            xi = (
                xi_old.clone()
                if self.fixed_phase
                else return_mapping(eps, xi_old.detach(), params=self.params)
            )
            sigma = tensor_to_voigt(stress(eps, xi, params=self.params), engineering=False)
            C = None
            if tangent and e.shape[0]:
                rows = [
                    torch.autograd.grad(sigma[:, j].sum(), e, retain_graph=j < 5)[0]
                    for j in range(6)
                ]
                C = torch.stack(rows, dim=1)
            elif tangent:  # no points (a rank that owns no cells)
                C = e.new_zeros((0, 6, 6))
        xi = xi.detach()
        return StepResult(sigma.detach(), C, xi[:, None].clone(), xi.clone())
