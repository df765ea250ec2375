"""The LSE-ICNN: a gated log-sum-exp (smooth minimum) of convex modes (docs/science.md §1).

    W(x) = -(1/ρ) log Σ_i g(w_i) exp(-ρ W_i(x)),   g(w) = 2·sigmoid(|w|) - 1,   ρ = exp(ρ̃)

evaluated stably as ``-(1/ρ)·logsumexp(log g(w) - ρ W_modes)``. A gate exactly at zero
(``w_i = 0``) removes its mode exactly. Inputs and energy are normalised inside the model:
``x_n = (x - input_shift) / input_scale`` and ``W_phys = energy_scale · W(x_n) + energy_shift``;
every public output is in physical units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from lse_material import _native
from lse_material.icnn import DerivativeWeights, ICNNStack
from lse_material.potential import EnergyDerivatives, as_float64_tensor, check_wrt

__all__ = ["LSEICNN", "ACTIVE_GATE_THRESHOLD"]

ACTIVE_GATE_THRESHOLD = 1e-3  # a mode is active when g(w) > ε; ε is [ours] (docs/science.md §1)


def gate(w: torch.Tensor) -> torch.Tensor:
    """``g(w) = 2·sigmoid(|w|) - 1`` in [0, 1), g(0) = 0 (shift form [ours])."""
    return 2 * torch.sigmoid(w.abs()) - 1


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row ``index[..]`` of ``x (.., P, d)`` -> ``(.., 1, d)``."""
    return torch.take_along_dim(x, index[..., None, None], dim=-2)


class LSEICNN(nn.Module):
    """Log-sum-exp mixture of ``n_modes`` ICNNs.

    With ``groups`` (a group index per mode) the mixture is a nested LSE [ours]: a smooth
    minimum with its own ρ_g inside each group, ``V_g = -(1/ρ_g) log Σ_{i∈g} g_i exp(-ρ_g W_i)``,
    and ``W = -(1/ρ) log Σ_g exp(-ρ V_g)`` across groups, so two kinds of transition (e.g. a
    broad chemical one between phases and sharp ridges between the variants of one phase)
    need not share one sharpness. ``groups=None`` is the paper's single ρ.

    Args:
        n_inputs: input dimension ``d``.
        n_modes: number of modes ``N`` (the sparse regression switches the unneeded off).
        hidden: ICNN hidden widths.
        ensemble: number of independent copies (seed ensembles), or None for one model.
        input_names: names of the ``d`` inputs, in column order.
        rho: start value of ρ; gate_weight: start value of every ``w_i``.
        groups: group index ``0..G-1`` of each mode (nested LSE), or None (one ρ).
        group_rho: start value of every ρ_g (only with ``groups``).
        generator: torch.Generator for reproducible initialisation.
    """

    def __init__(
        self,
        n_inputs: int,
        n_modes: int,
        hidden: Sequence[int] = (10, 10),
        *,
        ensemble: int | None = None,
        input_names: Sequence[str] | None = None,
        rho: float = 1.0,
        gate_weight: float = 1.0,
        groups: Sequence[int] | None = None,
        group_rho: float = 10.0,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if rho <= 0 or group_rho <= 0:
            raise ValueError(f"rho and group_rho must be positive, got {rho} and {group_rho}.")
        self.modes = ICNNStack(
            n_inputs, n_modes, tuple(hidden), ensemble=ensemble, dtype=dtype, generator=generator
        )
        names = (
            tuple(input_names)
            if input_names is not None
            else tuple(f"x{i}" for i in range(n_inputs))
        )
        if len(names) != n_inputs:
            raise ValueError(f"input_names has {len(names)} names for n_inputs={n_inputs}.")
        self.input_names = names
        lead = self.modes.ensemble_shape
        self.gate_weights = nn.Parameter(
            torch.full((*lead, n_modes), float(gate_weight), dtype=dtype)
        )
        # ρ = exp(ρ̃): positive, and Adam's bounded steps change it by a relative amount, so it
        # can travel from 1 to 100 as easily as from 0.1 to 1 [ours; docs/science.md §1].
        self.rho_raw = nn.Parameter(torch.full(lead, math.log(rho), dtype=dtype))
        self.groups = _check_groups(groups, n_modes)
        n_groups = 1 if self.groups is None else max(self.groups) + 1
        # Nested LSE [ours]: each group of modes has its own transition sharpness ρ_g (inner
        # smooth minimum), and ρ joins the groups (outer). One group = the paper's form.
        self.register_buffer(
            "mode_group",
            torch.tensor(self.groups or [0] * n_modes, dtype=torch.int64),
            persistent=False,  # rebuilt from the architecture
        )
        if self.groups is not None:
            self.group_rho_raw = nn.Parameter(
                torch.full((*lead, n_groups), math.log(group_rho), dtype=dtype)
            )
        self.register_buffer("input_shift", torch.zeros(n_inputs, dtype=dtype))
        self.register_buffer("input_scale", torch.ones(n_inputs, dtype=dtype))
        self.register_buffer("energy_shift", torch.zeros((), dtype=dtype))
        self.register_buffer("energy_scale", torch.ones((), dtype=dtype))

    # ----------------------------------------------------------------- parameters
    @property
    def n_inputs(self) -> int:
        return self.modes.n_inputs

    @property
    def n_modes(self) -> int:
        return self.modes.n_modes

    @property
    def ensemble_shape(self) -> tuple[int, ...]:
        return self.modes.ensemble_shape

    def rho(self) -> torch.Tensor:
        """ρ > 0 (in normalised energy units), shape ``ensemble_shape``."""
        return torch.exp(self.rho_raw)

    def group_rho(self) -> torch.Tensor:
        """ρ_g of each group, ``(*ensemble, G)`` (nested LSE; ρ itself for one group)."""
        if self.groups is None:
            return self.rho().unsqueeze(-1)
        return torch.exp(self.group_rho_raw)

    def mode_rho(self) -> torch.Tensor:
        """The ρ of the smooth minimum each mode enters first, ``(*ensemble, N)``: its group's
        ρ_g (so a gate acts as the shift ``-log(g_i)/ρ_g`` of its mode)."""
        return self.group_rho()[..., self.mode_group]

    def gate_parameters(self) -> list[nn.Parameter]:
        """The parameters of the second optimiser group: the gates and the ρs."""
        extra = [] if self.groups is None else [self.group_rho_raw]
        return [self.gate_weights, self.rho_raw, *extra]

    def gates(self) -> torch.Tensor:
        """g(w), ``(*ensemble, N)``."""
        return gate(self.gate_weights)

    def active_modes(self, threshold: float = ACTIVE_GATE_THRESHOLD) -> torch.Tensor:
        """Number of modes with ``g(w) > threshold``, shape ``ensemble_shape`` (int)."""
        return (self.gates() > threshold).sum(dim=-1)

    def set_normalization(
        self, *, input_shift, input_scale, energy_shift=0.0, energy_scale=1.0
    ) -> None:
        """Store the affine maps physical -> network units (see module docstring)."""
        for name, value in (
            ("input_shift", input_shift),
            ("input_scale", input_scale),
            ("energy_shift", energy_shift),
            ("energy_scale", energy_scale),
        ):
            buf = getattr(self, name)
            t = torch.as_tensor(value, dtype=buf.dtype, device=buf.device).expand_as(buf).clone()
            if not bool(torch.isfinite(t).all()) or (
                name.endswith("scale") and bool((t <= 0).any())
            ):
                raise ValueError(f"{name} must be finite (and positive for scales); got {value}.")
            buf.copy_(t)

    @torch.no_grad()
    def spread_modes(self, x: torch.Tensor) -> None:
        """Start each mode as a bowl centred on a different data point [ours].

        x: data in physical units, ``(P, d)`` or ``(*ensemble, P, d)``. The centres are chosen by
        farthest-point sampling (the first point is the one closest to the data mean), so
        ``N`` modes cover the data evenly.
        """
        xn = self._normalize(x)
        if xn.ndim == 2 and self.ensemble_shape:
            xn = xn.expand(*self.ensemble_shape, *xn.shape)
        first = (xn - xn.mean(-2, keepdim=True)).norm(dim=-1).argmin(-1)  # (*ensemble,)
        idx = [first]
        dist = (xn - _take(xn, first)).norm(dim=-1)
        for _ in range(1, self.n_modes):
            nxt = dist.argmax(-1)
            idx.append(nxt)
            dist = torch.minimum(dist, (xn - _take(xn, nxt)).norm(dim=-1))
        centers = torch.stack([_take(xn, i).squeeze(-2) for i in idx], dim=-2)  # (.., N, d)
        self.modes.center_on(centers)

    @torch.no_grad()
    def place_modes(self, centers: torch.Tensor) -> None:
        """Start mode i as a convex bowl with its minimum at ``centers[.., i, :]`` [ours].

        centers: ``(*ensemble, N, d)`` or ``(N, d)`` in physical units (e.g. well candidates:
        data points where the measured fluxes are small). The pre-activations vanish at the
        centre (``ICNNStack.center_on``) and the output's linear term is shifted so that the
        mode's gradient is zero there: a convex function is then at its minimum.
        """
        c = self._normalize(centers)
        if c.ndim == 2 and self.ensemble_shape:
            c = c.expand(*self.ensemble_shape, *c.shape)
        self.modes.center_on(c)
        # Mode i at every centre, (.., N, N, d) -> its own centre: the diagonal.
        gradient = self.modes.derivatives(c, hessian=False).gradient
        own = torch.diagonal(gradient, dim1=-3, dim2=-2).transpose(-1, -2)  # (.., N, d)
        self.modes.out_x.sub_(own)

    def _log_gates(self) -> torch.Tensor:
        """log g(w) with exact -inf for closed gates (their modes drop out exactly)."""
        g = self.gates()
        return torch.log(g.clamp_min(torch.finfo(g.dtype).tiny)).masked_fill(g == 0, -math.inf)

    # ----------------------------------------------------------------- evaluation
    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_shift) / self.input_scale

    def _open_modes(self) -> torch.Tensor | None:
        """Indices of the open modes of a single model when some gates are closed, else None.

        A closed gate (g = 0) removes its mode exactly, so its network is not evaluated.
        """
        if self.ensemble_shape:
            return None
        open_ = self.gates() > 0
        return None if bool(open_.all()) else torch.nonzero(open_).flatten()

    def _mixture(self, mode_values: torch.Tensor, index) -> Mixture:
        """The smooth minimum of the evaluated modes ``(.., N_eval, P)`` (network units)."""
        log_g = self._log_gates() if index is None else self._log_gates()[index]
        group = self.mode_group if index is None else self.mode_group[index]
        rho_mode = self.mode_rho() if index is None else self.mode_rho()[..., index]
        logits = log_g.unsqueeze(-1) - rho_mode.unsqueeze(-1) * mode_values  # (.., N_eval, P)
        if self.groups is None:
            rho = self.rho().unsqueeze(-1)
            return Mixture(-torch.logsumexp(logits, dim=-2) / rho, torch.softmax(logits, -2), None)
        member = group == torch.arange(self.group_rho().shape[-1], device=group.device)[:, None]
        grouped = logits.unsqueeze(-3).masked_fill(~member[..., None], -math.inf)
        # A group whose modes are all closed is empty: it gets -inf without passing -inf
        # through logsumexp or a product (their gradients would be NaN), via finite stand-ins.
        alive = torch.isfinite(grouped).any(dim=-2)  # (.., G, P)
        inner = torch.logsumexp(torch.where(alive.unsqueeze(-2), grouped, 0.0), dim=-2)
        inner = torch.where(alive, inner, 0.0)  # log Σ_{i∈g} g_i exp(-ρ_g W_i), (.., G, P)
        ratio = (self.rho().unsqueeze(-1) / self.group_rho()).unsqueeze(-1)
        outer = torch.where(alive, ratio * inner, -math.inf)  # -ρ V_g
        energy = -torch.logsumexp(outer, dim=-2) / self.rho().unsqueeze(-1)
        p_group = torch.softmax(outer, dim=-2)  # (.., G, P); an empty group has weight 0
        conditional = torch.exp(logits - inner.index_select(-2, group))  # 0 for closed modes
        return Mixture(energy, p_group.index_select(-2, group) * conditional, conditional)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Energy in physical units; x ``(*ensemble, P, d)`` or ``(P, d)`` -> ``(*ensemble, P)``.

        Differentiable by autograd (the training path and the test oracle).
        """
        index = self._open_modes()
        x_n = self._normalize(x)
        w = self._mixture(self.modes(x_n, index), index).energy
        return self.energy_scale * w + self.energy_shift

    def phase_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``p_i(x) = softmax_i(log g_i - ρ W_i)``, ``(*ensemble, P, N)``: which well a point is in."""
        x_n = self._normalize(x)
        return self._mixture(self.modes(x_n), None).weights.transpose(-1, -2)

    def derivatives(self, x, *, hessian: bool = True, wrt=None) -> EnergyDerivatives:
        """Energy, gradient, Hessian and phase weights in one closed-form pass (docs/science.md §1).

        x: ``(P, d)`` (array-like, validated) for a single model, or ``(*ensemble, P, d)``.
        wrt: indices of the inputs to differentiate with respect to (default: all ``d``; the
        others are held at their values), ``k`` of them. Returns ``energy (.., P)``,
        ``gradient (.., P, k)``, ``hessian (.., P, k, k)``, ``phase_weights (.., P, N)``, in
        physical units: ``∇W = Σ p_i ∇W_i``,
        ``∇²W = Σ p_i ∇²W_i - ρ (Σ p_i ∇W_i ∇W_iᵀ - ∇W ∇Wᵀ)``; for a nested LSE
        ``∇²W = Σ_i p_i (∇²W_i - ρ_g(i) D_i D_iᵀ) - ρ Σ_g P_g (∇V_g - ∇W)(∇V_g - ∇W)ᵀ`` with
        ``D_i = ∇W_i - ∇V_g(i)``, ``P_g`` the group weights and ``p_i = P_g(i) p_i|g``.
        """
        if not self.ensemble_shape:
            p0 = next(self.parameters())
            x = as_float64_tensor(x, self.n_inputs, device=p0.device).to(p0.dtype)
        wrt = _input_indices(wrt, self.n_inputs, x.device)
        if self._native_applies(x):
            return self._native_derivatives(x, hessian, wrt)
        index = self._open_modes()
        x_n = self._normalize(x)
        modes = self.modes.hessian_parts(x_n, self._derivative_weights(index, wrt), hessian=hessian)
        mix = self._mixture(modes.energy, index)
        energy = self.energy_scale * mix.energy + self.energy_shift
        p = mix.weights  # (.., N_eval, P)
        grad = torch.einsum("...np,...npk->...pk", p, modes.gradient)  # network energy units
        hess = None
        if hessian:
            hess = modes.hessian(self.energy_scale * p) - self._spread(
                modes.gradient, grad, mix, index
            )
        grad = self.energy_scale * grad
        if index is not None:  # closed modes have phase weight exactly 0
            p = torch.zeros(self.n_modes, p.shape[-1], dtype=p.dtype, device=p.device).index_copy(
                0, index, p
            )
        return EnergyDerivatives(energy, grad, hess, p.transpose(-1, -2))

    def _spread(self, mode_grad, grad, mix: Mixture, index) -> torch.Tensor:
        """The negative semi-definite part of ∇²W (physical units), ``(.., P, k, k)``:
        ``Σ_i p_i ρ_g(i) D_i D_iᵀ`` (+ the outer term between groups), D as in ``derivatives``."""
        rho_mode = self.mode_rho() if index is None else self.mode_rho()[..., index]
        if self.groups is None:
            D = mode_grad - grad.unsqueeze(-3)
        else:
            group = self.mode_group if index is None else self.mode_group[index]
            n_groups = self.group_rho().shape[-1]
            member = (group == torch.arange(n_groups, device=group.device)[:, None]).to(grad.dtype)
            group_grad = torch.einsum("gn,...np,...npk->...gpk", member, mix.conditional, mode_grad)
            D = mode_grad - group_grad.index_select(-3, group)
        m = (self.energy_scale * rho_mode).unsqueeze(-1) * mix.weights  # (.., N_eval, P)
        spread = torch.einsum("...np,...npk,...npl->...pkl", m, D, D)
        if self.groups is not None:
            E = group_grad - grad.unsqueeze(-3)
            p_group = torch.einsum("gn,...np->...gp", member, mix.weights)  # P_g
            w = (self.energy_scale * self.rho()).unsqueeze(-1).unsqueeze(-1) * p_group
            spread = spread + torch.einsum("...gp,...gpk,...gpl->...pkl", w, E, E)
        return spread

    def _derivative_weights(self, index, wrt) -> DerivativeWeights:
        """``ICNNStack.derivative_weights`` for the open modes, derivatives in physical units."""
        scale = 1.0 / (self.input_scale if wrt is None else self.input_scale[wrt])
        if torch.is_grad_enabled():
            return self.modes.derivative_weights(index, wrt, scale)
        return self._cached(
            "derivative_weights",
            (_as_key(index), _as_key(wrt)),
            lambda: self.modes.derivative_weights(index, wrt, scale),
        )

    def _cached(self, name: str, extra: tuple, build):
        """``build()``, reused until a parameter or buffer changes (in place or replaced) or
        ``extra`` differs. Only for values that need no autograd graph."""
        key = (
            extra,
            tuple(
                (t.data_ptr(), t._version, t.device) for t in (*self.parameters(), *self.buffers())
            ),
        )
        cache = self.__dict__.setdefault("_evaluation_cache", {})
        if name not in cache or cache[name][0] != key:
            cache[name] = (key, build())
        return cache[name][1]

    # ----------------------------------------------------------------- fused CPU kernel
    def _native_applies(self, x: torch.Tensor) -> bool:
        """The fused kernel serves single float64 CPU models when no autograd graph is needed."""
        if self.ensemble_shape or x.device.type != "cpu" or x.dtype != torch.float64:
            return False
        if len(self.modes.hidden) > _native.MAX_LAYERS or self.n_modes > _native.MAX_MODES:
            return False
        if torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            return False
        return _native.available()

    def _native_derivatives(self, x, hessian: bool, wrt) -> EnergyDerivatives:
        index = self._open_modes()
        weights = self._cached("native", (_as_key(index),), lambda: self._native_weights(index))
        columns = torch.arange(self.n_inputs) if wrt is None else wrt
        result = _native.derivatives(weights, x, columns, hessian=hessian)
        phase = result.phase
        if index is not None:  # closed modes have phase weight exactly 0
            phase = x.new_zeros(x.shape[0], self.n_modes).index_copy_(1, index, phase)
        return EnergyDerivatives(result.energy, result.gradient, result.hessian, phase)

    @torch.no_grad()
    def _native_weights(self, index) -> _native.NativeWeights:
        """The kernel's weights of the open modes, the input normalisation folded in:
        ``A (x - shift)/scale + b = (A/scale) x + (b - (A/scale)·shift)``."""
        w = self.modes.weights(index)
        scale, shift = self.input_scale, self.input_shift
        parts = []
        for j, (A, b) in enumerate(zip(w.A, w.b)):
            A_phys = A / scale  # (N, h_j, d)
            parts += [A_phys.flatten(1), b - A_phys @ shift]
            if j > 0:
                parts.append(w.B[j - 1].flatten(1))
        a_out = w.a_out / scale
        parts += [w.b_out, a_out, (w.c - a_out @ shift).unsqueeze(-1)]
        log_gates = self._log_gates() if index is None else self._log_gates()[index]
        nested = self.groups is not None
        group = self.mode_group if index is None else self.mode_group[index]
        return _native.NativeWeights(
            torch.cat(parts, dim=1).contiguous(),
            torch.tensor(self.modes.hidden, dtype=torch.int64),
            log_gates.contiguous(),
            float(self.rho()),
            float(self.energy_scale),
            float(self.energy_shift),
            group.to(torch.int64).contiguous() if nested else None,
            self.group_rho().contiguous() if nested else None,
        )

    # ----------------------------------------------------------------- model files
    def architecture(self) -> dict:
        """What ``from_architecture`` needs to rebuild this (single) model."""
        if self.ensemble_shape:
            raise ValueError("save one ensemble member at a time: model.member(i).")
        return {
            "n_inputs": self.n_inputs,
            "n_modes": self.n_modes,
            "hidden": list(self.modes.hidden),
            "input_names": list(self.input_names),
            "dtype": str(self.gate_weights.dtype).removeprefix("torch."),
            **({} if self.groups is None else {"groups": list(self.groups)}),
        }

    @classmethod
    def from_architecture(cls, arch: dict) -> LSEICNN:
        return cls(
            int(arch["n_inputs"]),
            int(arch["n_modes"]),
            tuple(int(h) for h in arch["hidden"]),
            input_names=arch["input_names"],
            groups=arch.get("groups"),
            dtype=getattr(torch, arch.get("dtype", "float64")),
        )

    @property
    def training_box(self) -> dict[str, tuple[float, float]] | None:
        """Input name -> (low, high) of the training data, from the model card (None if unknown)."""
        box = getattr(self, "card", {}).get("training_box")
        return None if box is None else {k: (float(v[0]), float(v[1])) for k, v in box.items()}

    # ----------------------------------------------------------------- ensembles
    def member(self, index: int) -> LSEICNN:
        """A single model (no ensemble dimension) copied from ensemble member ``index``."""
        if not self.ensemble_shape:
            raise ValueError("member() needs an ensemble model; this model is a single one.")
        single = LSEICNN(
            self.n_inputs,
            self.n_modes,
            self.modes.hidden,
            input_names=self.input_names,
            groups=self.groups,
            dtype=self.gate_weights.dtype,
        ).to(self.gate_weights.device)
        state = {
            k: (v[index] if k not in self._buffers else v) for k, v in self.state_dict().items()
        }
        single.load_state_dict(state)
        return single


class Mixture(NamedTuple):
    """The smooth minimum of the evaluated modes: energy ``(.., P)`` (network units), the phase
    weights ``(.., N_eval, P)`` and, for a nested LSE, the weights within each group
    ``p_i|g`` ``(.., N_eval, P)`` (None for one ρ)."""

    energy: torch.Tensor
    weights: torch.Tensor
    conditional: torch.Tensor | None


def _check_groups(groups, n_modes: int) -> tuple[int, ...] | None:
    """``groups`` as a tuple of group indices 0..G-1 (each used), or None."""
    if groups is None:
        return None
    values = tuple(int(g) for g in groups)
    if (
        len(values) != n_modes
        or min(values, default=0) < 0
        or set(values) != set(range(max(values) + 1))
    ):
        raise ValueError(
            f"groups must give each of the {n_modes} modes a group index 0..G-1, every index "
            f"used; got {list(groups)}."
        )
    return values


def _as_key(index: torch.Tensor | None):
    return None if index is None else tuple(index.tolist())


def _input_indices(wrt, n_inputs: int, device) -> torch.Tensor | None:
    """``wrt`` validated as an index tensor, or None when it means all inputs in order."""
    if wrt is None:
        return None
    columns = check_wrt(wrt, n_inputs)
    return None if columns == list(range(n_inputs)) else torch.tensor(columns, device=device)
