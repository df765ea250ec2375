"""A potential with a hidden state and its neural ODE: the metamaterial model (docs/science.md §5).

docs/science.md §5: ``ψ = W(I(ε), h)`` — an LSE-ICNN (2 modes, 2 × 19) of 3 strain invariants and 6
hidden-state components — with ``ḣ = N(invariants of ε, ε̇, h)`` (an MLP, 2 × 15, 6 outputs),
``h(0) = 0``, and ``σ = ∂ψ/∂ε`` at the current ``h``. The model is trained on stress only.

**Strain invariants [ours].** The data model's transformation strain is along e1, so the law
is transversely isotropic about ``M = e1⊗e1``. ψ sees

    I1 = tr ε,      I2 = |dev ε|²,      I3 = ε : M = ε11,

the invariants in which the data model's energy is exact:
``ψ_true = ½κ(I1 - ξ tr ε_t)² + μ(I2 - 2ξ dev ε_t:ε + ξ²|dev ε_t|²) + ξΔψ`` with
``dev ε_t : ε = -0.1 (I3 - I1/3)``. I1 and I3 are linear in ε; I2 is convex. The ICNN is
convex in its inputs; to keep every mode convex in ε (an honest convex function of the strain,
not only of the invariants) the ICNN is made non-decreasing in I2: its I2 input weights (the
I2 column of every layer's ``A_k`` and of the output's ``a_K``) are ``softplus`` of raw
parameters. Then ``∂W/∂I2 ≥ 0`` (a non-negative shear modulus) and ``W_i(I(ε), h)`` is convex in
ε for each mode, for any ``h``.

**ODE inputs [ours].** ``N`` gets 9 transversely isotropic invariants of ε and ε̇,

    I1, I2, I3, I4 = |ε e1|²;   J1 = tr ε̇, J2 = |dev ε̇|², J3 = ε̇ : M;
    K1 = dev ε : dev ε̇,  K2 = (ε e1)·(ε̇ e1),

each normalised by the training data, plus ``h`` (15 inputs in all).

**Time integration [ours].** Over a step ``t_n → t_{n+1} = t_n + Δt``, explicit in h and at the
end-of-step strain (semi-explicit Euler):

    ε̇ = (ε_{n+1} - ε_n)/Δt,    h_{n+1} = h_n + Δt · r · N(inv(ε_{n+1}, ε̇), h_n),
    σ_{n+1} = ∂ψ/∂ε (ε_{n+1}, h_{n+1})

``r`` (``rate_scale``) is a fixed time scale set from the training data (so ``N = O(1)`` moves
``h`` by ``O(1)`` over about ten data steps). ``h_{n+1}`` depends on ``ε_{n+1}``, so the
algorithmic tangent is ``dσ/dε = ψ_εε + ψ_εh · ∂h_{n+1}/∂ε_{n+1}`` (not symmetric in general);
``HiddenStateMaterial.step`` returns it (autograd through the closed-form stress).

The Voigt conventions and invariants live in ``lse_material.voigt``, the internal-state law
protocol and the material points in ``lse_material.material_points``; both are re-exported
here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from lse_material.lse import LSEICNN
from lse_material.material_points import InternalStateLaw, MaterialPoints, StepResult
from lse_material.potential import as_float64_tensor
from lse_material.voigt import (
    INVARIANT_NAMES,
    ODE_INPUT_NAMES,
    STRAIN_NAMES,
    STRESS_NAMES,
    invariant_gradients,
    ode_invariants,
    strain_invariants,
    tensor_to_voigt,
    voigt_to_tensor,
)

__all__ = [
    "STRAIN_NAMES",
    "STRESS_NAMES",
    "INVARIANT_NAMES",
    "ODE_INPUT_NAMES",
    "HiddenStateMaterial",
    "InternalStateLaw",
    "MaterialPoints",
    "StepResult",
    "RolloutResult",
    "strain_invariants",
    "ode_invariants",
    "tensor_to_voigt",
    "voigt_to_tensor",
]

_MONOTONE_INPUT = 1  # I2: the ICNN is non-decreasing in it (module docstring)


class RolloutResult(NamedTuple):
    """Histories along strain paths: stress ``(B, T, 6)``, state ``(B, T, n_state)``,
    indicator ``(B, T)``, phase_weights ``(B, T, n_modes)`` (or None when not requested)."""

    stress: torch.Tensor
    state: torch.Tensor
    indicator: torch.Tensor
    phase_weights: torch.Tensor | None = None


class _NonNegativeColumn(nn.Module):
    """Parametrisation: column ``col`` (last axis) of a weight is ``softplus`` of its raw value."""

    def __init__(self, col: int):
        super().__init__()
        self.col = col

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(raw.shape[-1], dtype=torch.bool, device=raw.device)
        mask[self.col] = True
        return torch.where(mask, F.softplus(raw), raw)


class _ODENetwork(nn.Module):
    """``N(inputs (P, 9 + n_state)) -> ḣ (P, n_state)``: an MLP with tanh hidden layers."""

    def __init__(self, n_in: int, n_out: int, hidden: Sequence[int], dtype, generator):
        super().__init__()
        widths = [n_in, *hidden, n_out]
        self.layers = nn.ModuleList(
            nn.Linear(a, b, dtype=dtype) for a, b in zip(widths[:-1], widths[1:])
        )
        with torch.no_grad():  # reproducible init from the generator (Xavier-uniform, zero bias)
            for layer in self.layers:
                bound = (6.0 / (layer.in_features + layer.out_features)) ** 0.5
                layer.weight.copy_(
                    bound
                    * (2 * torch.rand(layer.weight.shape, dtype=dtype, generator=generator) - 1)
                )
                layer.bias.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.tail(torch.tanh(self.layers[0](z)))

    def tail(self, z: torch.Tensor) -> torch.Tensor:
        """The layers after the first one's activation."""
        for layer in self.layers[1:-1]:
            z = torch.tanh(layer(z))
        return self.layers[-1](z)


class HiddenStateMaterial(nn.Module):
    """ψ = LSE-ICNN(I1, I2, I3, h) and ḣ = N(9 invariants of ε, ε̇; h) in one module.

    Args:
        n_state: hidden-state size (6, docs/science.md §5).
        n_modes, hidden: the LSE-ICNN (2 modes, 2 × 19).
        ode_hidden: hidden widths of N (2 × 15).
        dtype: float64 by default; generator: for reproducible initialisation.

    Normalisation (set by the trainer, stored with the weights): the LSE-ICNN's own
    ``set_normalization`` for ψ; ``set_ode_normalization`` for N's 9 inputs and the time scale.

    Phase indicator [ours]. The model is not told which phase it is in (ξ is not observed, and
    its two wells need not be the two phases), so the indicator reads the transformation strain
    off the stress: ``(ε11 - σ11/E0) / e_B``, with ``E0`` the model's uniaxial-strain modulus at
    the origin (``h = 0``) and ``e_B`` the extreme of ``ε11 - σ11/E0`` over the training data
    (``set_indicator``). For the data model under uniaxial strain this is exactly ξ.
    """

    input_names = STRAIN_NAMES

    def __init__(
        self,
        n_state: int = 6,
        n_modes: int = 2,
        hidden: Sequence[int] = (19, 19),
        ode_hidden: Sequence[int] = (15, 15),
        *,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if n_state < 1 or not ode_hidden or min(ode_hidden) < 1:
            raise ValueError(
                f"need n_state >= 1 and positive ode_hidden widths; got n_state={n_state}, "
                f"ode_hidden={tuple(ode_hidden)}."
            )
        self.n_state = int(n_state)
        self.state_names = tuple(f"h{i + 1}" for i in range(self.n_state))
        self.potential = LSEICNN(
            3 + self.n_state,
            n_modes,
            tuple(hidden),
            input_names=(*INVARIANT_NAMES, *self.state_names),
            dtype=dtype,
            generator=generator,
        )
        modes = self.potential.modes
        for i in range(len(modes.x_weights)):
            parametrize.register_parametrization(
                modes.x_weights, str(i), _NonNegativeColumn(_MONOTONE_INPUT)
            )
        parametrize.register_parametrization(modes, "out_x", _NonNegativeColumn(_MONOTONE_INPUT))
        self.ode = _ODENetwork(
            len(ODE_INPUT_NAMES) + self.n_state, self.n_state, tuple(ode_hidden), dtype, generator
        )
        self.ode_hidden = tuple(int(h) for h in ode_hidden)
        n = len(ODE_INPUT_NAMES)
        self.register_buffer("ode_input_shift", torch.zeros(n, dtype=dtype))
        self.register_buffer("ode_input_scale", torch.ones(n, dtype=dtype))
        self.register_buffer("rate_scale", torch.ones((), dtype=dtype))
        self.register_buffer("indicator_modulus", torch.ones((), dtype=dtype))
        self.register_buffer("indicator_strain", -torch.ones((), dtype=dtype))

    # ------------------------------------------------------------------ properties
    @property
    def n_modes(self) -> int:
        return self.potential.n_modes

    @property
    def dtype(self) -> torch.dtype:
        return self.rate_scale.dtype

    def set_ode_normalization(self, *, input_shift, input_scale, rate_scale: float) -> None:
        """N's inputs are ``(inv - input_shift)/input_scale`` (9 each); ``rate_scale`` r > 0."""
        shift = torch.as_tensor(input_shift, dtype=self.dtype).reshape(-1)
        scale = torch.as_tensor(input_scale, dtype=self.dtype).reshape(-1)
        n = len(ODE_INPUT_NAMES)
        if shift.numel() != n or scale.numel() != n:
            raise ValueError(f"input_shift and input_scale need {n} values ({ODE_INPUT_NAMES}).")
        if not (bool(torch.isfinite(shift).all()) and bool((scale > 0).all()) and rate_scale > 0):
            raise ValueError(
                "ODE normalisation must be finite with positive scales and rate_scale."
            )
        self.ode_input_shift.copy_(shift)
        self.ode_input_scale.copy_(scale)
        self.rate_scale.fill_(float(rate_scale))

    def set_indicator(self, *, modulus: float, strain: float) -> None:
        """Phase indicator ``(ε11 - σ11/modulus)/strain`` (class docstring); modulus > 0, strain ≠ 0."""
        if not (modulus > 0 and strain != 0 and abs(strain) < float("inf")):
            raise ValueError(f"need modulus > 0 and a finite strain != 0; got {modulus}, {strain}.")
        self.indicator_modulus.fill_(float(modulus))
        self.indicator_strain.fill_(float(strain))

    def indicator(self, strain: torch.Tensor, stress: torch.Tensor) -> torch.Tensor:
        """The phase indicator ``(...,)`` of Voigt strains and stresses ``(..., 6)``."""
        return (strain[..., 0] - stress[..., 0] / self.indicator_modulus) / self.indicator_strain

    def initial_state(self, n_points: int) -> torch.Tensor:
        """``h(0) = 0``: ``(n_points, n_state)``."""
        return torch.zeros(n_points, self.n_state, dtype=self.dtype, device=self.rate_scale.device)

    # ------------------------------------------------------------------ evaluation
    def ode_step(
        self, strain_old: torch.Tensor, state_old: torch.Tensor, strain_new: torch.Tensor, dt
    ) -> torch.Tensor:
        """``h_{n+1} = h_n + Δt·r·N(inv(ε_{n+1}, ε̇), h_n)``, all ``(P, ·)``; ``dt`` a float or ``(P,)``."""
        dt = torch.as_tensor(dt, dtype=strain_new.dtype, device=strain_new.device)
        dt_col = dt.reshape(-1, 1) if dt.ndim else dt
        rate = (strain_new - strain_old) / dt_col
        z = (ode_invariants(strain_new, rate) - self.ode_input_shift) / self.ode_input_scale
        return state_old + dt_col * self.rate_scale * self.ode(torch.cat([z, state_old], -1))

    def stress(self, strain: torch.Tensor, state: torch.Tensor, *, weights: bool = True):
        """σ = ∂ψ/∂ε at fixed ``h``, ``(P, 6)``, and the phase weights ``(P, N)`` (or None).

        ``∂W/∂x`` by autograd with ``create_graph=True`` (so σ stays differentiable with
        respect to the parameters, the strain and the state), contracted with the closed-form
        ``dI_k/dε``. (Measured: faster than the closed-form LSE-ICNN pass when a backward
        through σ follows, as in training.)
        """
        with torch.enable_grad():
            x = torch.cat([strain_invariants(strain), state], -1)
            if not x.requires_grad:
                x.requires_grad_(True)
            psi = self.potential(x)
            (grad,) = torch.autograd.grad(psi.sum(), x, create_graph=True)
        sigma = torch.einsum("pk,pkj->pj", grad[:, :3], invariant_gradients(strain))
        p = self.potential.phase_weights(x.detach()) if weights else None
        return sigma, p

    def energy(self, strain: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """ψ(ε, h), ``(P,)``."""
        return self.potential(torch.cat([strain_invariants(strain), state], -1))

    def step(
        self,
        strain_old,
        state_old,
        strain_new,
        *,
        dt: float,
        tangent: bool = True,
    ) -> StepResult:
        """One time step (module docstring); inputs ``(P, 6)``, ``(P, n_state)``, ``(P, 6)``.

        The tangent is the algorithmic ``dσ_{n+1}/dε_{n+1}`` including ``∂h_{n+1}/∂ε_{n+1}``.
        Gradients with respect to the parameters are not kept (use ``rollout`` to train).
        """
        if not dt > 0:
            raise ValueError(f"dt must be positive, got {dt}.")
        eps_old = as_float64_tensor(strain_old, 6, name="strain_old").to(self.dtype)
        eps_new = as_float64_tensor(strain_new, 6, name="strain_new").to(self.dtype)
        h_old = as_float64_tensor(state_old, self.n_state, name="state_old").to(self.dtype)
        if not eps_old.shape[0] == eps_new.shape[0] == h_old.shape[0]:
            raise ValueError(
                f"strain_old, state_old, strain_new must have the same number of points; got "
                f"{eps_old.shape[0]}, {h_old.shape[0]}, {eps_new.shape[0]}."
            )
        params = [p.requires_grad for p in self.parameters()]
        try:
            for p in self.parameters():
                p.requires_grad_(False)
            with torch.enable_grad():
                eps = eps_new.detach().clone().requires_grad_(tangent)
                h_new = self.ode_step(eps_old.detach(), h_old.detach(), eps, dt)
                sigma, weights = self.stress(eps, h_new)
                C = None
                if tangent:
                    rows = [
                        torch.autograd.grad(sigma[:, j].sum(), eps, retain_graph=j < 5)[0]
                        for j in range(6)
                    ]
                    C = torch.stack(rows, dim=1).detach()
        finally:
            for p, flag in zip(self.parameters(), params):
                p.requires_grad_(flag)
        sigma = sigma.detach()
        indicator = self.indicator(eps_new, sigma).detach()
        return StepResult(sigma, C, h_new.detach(), indicator, weights.detach())

    def rollout(
        self, strain: torch.Tensor, time: torch.Tensor, *, phase_weights: bool = False
    ) -> RolloutResult:
        """Integrate along strain histories, differentiably (the training path).

        strain: Voigt ``(B, T, 6)``; time: ``(B, T)`` or ``(T,)``. ``h = 0`` at ``time[..., 0]``.
        ``phase_weights=True`` also returns the LSE-ICNN's phase weights. Same arithmetic as
        repeated ``ode_step``/``stress``, arranged for speed: N's inputs that
        depend on the strain only are computed for all steps at once, the recursion carries
        only ``h``, and ψ's derivatives are evaluated once on all ``B·T`` points.
        """
        if strain.ndim != 3 or strain.shape[-1] != 6:
            raise ValueError(
                f"strain must be (B, T, 6) Voigt histories; got {tuple(strain.shape)}."
            )
        B, T, _ = strain.shape
        time = torch.as_tensor(time, dtype=strain.dtype, device=strain.device).expand(B, T)
        dt = (time[:, 1:] - time[:, :-1]).unsqueeze(-1)  # (B, T-1, 1)
        if T > 1 and not bool((dt > 0).all()):
            raise ValueError("time must increase strictly along every history.")
        rate = (strain[:, 1:] - strain[:, :-1]) / dt
        z = (ode_invariants(strain[:, 1:], rate) - self.ode_input_shift) / self.ode_input_scale
        first = self.ode.layers[0]
        n_z = len(ODE_INPUT_NAMES)
        pre = z @ first.weight[:, :n_z].T + first.bias  # (B, T-1, width)
        w_h = first.weight[:, n_z:].T
        step = dt * self.rate_scale
        h = self.initial_state(B)
        states = [h]
        for n in range(T - 1):
            h = h + step[:, n] * self.ode.tail(torch.tanh(pre[:, n] + h @ w_h))
            states.append(h)
        state = torch.stack(states, 1)  # (B, T, n_state)
        sigma, weights = self.stress(
            strain.reshape(B * T, 6), state.reshape(B * T, -1), weights=phase_weights
        )
        sigma = sigma.reshape(B, T, 6)
        return RolloutResult(
            sigma,
            state,
            self.indicator(strain, sigma).detach(),
            None if weights is None else weights.reshape(B, T, -1),
        )

    # ------------------------------------------------------------------ model files
    def architecture(self) -> dict:
        return {
            "n_state": self.n_state,
            "n_modes": self.n_modes,
            "hidden": list(self.potential.modes.hidden),
            "ode_hidden": list(self.ode_hidden),
            "dtype": str(self.dtype).removeprefix("torch."),
            "psi_inputs": [*INVARIANT_NAMES, *self.state_names],
            "ode_inputs": [*ODE_INPUT_NAMES, *self.state_names],
            "monotone_inputs": [INVARIANT_NAMES[_MONOTONE_INPUT]],
            "integrator": "semi-explicit Euler (explicit in h, end-of-step strain)",
        }

    @classmethod
    def from_architecture(cls, arch: dict) -> HiddenStateMaterial:
        return cls(
            int(arch["n_state"]),
            int(arch["n_modes"]),
            tuple(int(h) for h in arch["hidden"]),
            tuple(int(h) for h in arch["ode_hidden"]),
            dtype=getattr(torch, arch.get("dtype", "float64")),
        )
