"""The contract every energy in lse-material satisfies: inputs in, energy and its derivatives out.

A *potential* maps a batch of input vectors ``x`` of shape ``(n_points, n_inputs)`` to the
energy ``(n_points,)``, its gradient ``(n_points, n_inputs)`` and its Hessian
``(n_points, n_inputs, n_inputs)``, in one call. The columns of ``x`` follow
``potential.input_names``. Trained LSE-ICNNs and analytic reference energies implement the
same contract, so the DOLFINx bridge and the tests treat them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import torch

__all__ = [
    "EnergyDerivatives",
    "Potential",
    "AnalyticPotential",
    "as_float64_tensor",
    "derivatives_in_chunks",
]


class EnergyDerivatives(NamedTuple):
    """Energy and derivatives at a batch of points.

    energy: ``(n_points,)``; gradient: ``(n_points, n_inputs)``;
    hessian: ``(n_points, n_inputs, n_inputs)`` or None when not requested;
    phase_weights: ``(n_points, n_modes)`` (sum to 1 over modes) or None for potentials
    without modes.
    """

    energy: torch.Tensor
    gradient: torch.Tensor
    hessian: torch.Tensor | None
    phase_weights: torch.Tensor | None = None


@runtime_checkable
class Potential(Protocol):
    """A scalar energy of ``n_inputs`` named inputs."""

    input_names: tuple[str, ...]

    def derivatives(self, x: torch.Tensor, *, hessian: bool = True) -> EnergyDerivatives:
        """Energy, gradient and (optionally) Hessian at ``x`` of shape ``(n_points, n_inputs)``."""
        ...


def as_float64_tensor(x, n_inputs: int, *, name: str = "x", device=None) -> torch.Tensor:
    """Validate ``x`` as a finite ``(n_points, n_inputs)`` array and return it as a tensor.

    Keeps a floating tensor's dtype and device; converts NumPy arrays and lists to float64.
    Raises ValueError naming the shape or the count of non-finite entries.
    """
    if isinstance(x, torch.Tensor):
        t = x if x.is_floating_point() else x.to(torch.float64)
    else:
        t = torch.as_tensor(x, dtype=torch.float64)
    if device is not None:
        t = t.to(device)
    if t.ndim != 2 or t.shape[1] != n_inputs:
        raise ValueError(
            f"{name} must have shape (n_points, {n_inputs}); got {tuple(t.shape)}. "
            f"Stack the inputs as columns, one row per point."
        )
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        rows = torch.nonzero(bad.any(dim=1)).flatten()
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite entries (NaN or inf) in {rows.numel()} "
            f"points, first rows {rows[:5].tolist()}; fix the inputs before evaluating."
        )
    return t


class AnalyticPotential:
    """An energy given as a torch function, differentiated by autograd.

    ``energy_fn(x) -> (n_points,)`` for ``x`` of shape ``(n_points, n_inputs)``; it must act on
    each row independently (the Hessian is assembled from batched double backward). Used as
    the reference (oracle) for trained potentials and for data models with a closed-form
    energy.
    """

    def __init__(
        self, energy_fn: Callable[[torch.Tensor], torch.Tensor], input_names: Sequence[str]
    ):
        self.energy_fn = energy_fn
        self.input_names = tuple(input_names)

    def derivatives(self, x, *, hessian: bool = True) -> EnergyDerivatives:
        x = as_float64_tensor(x, len(self.input_names)).detach().requires_grad_(True)
        with torch.enable_grad():
            energy = self.energy_fn(x)
            (gradient,) = torch.autograd.grad(energy.sum(), x, create_graph=hessian)
            hess = None
            if hessian:
                rows = [
                    torch.autograd.grad(gradient[:, j].sum(), x, retain_graph=True)[0]
                    for j in range(x.shape[1])
                ]
                hess = torch.stack(rows, dim=1)
        return EnergyDerivatives(energy.detach(), gradient.detach(), hess)


def derivatives_in_chunks(
    potential: Potential, x: torch.Tensor, *, chunk: int = 1024, hessian: bool = True
):
    """``potential.derivatives`` over ``x (n_points, d)`` in chunks of ``chunk`` points, no autograd graph.

    Bounds the memory of the closed-form pass (its intermediates are ``(N, chunk, h, d)``).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}.")
    parts = []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            parts.append(potential.derivatives(x[start : start + chunk], hessian=hessian))
    return EnergyDerivatives(
        *(None if parts[0][k] is None else torch.cat([p[k] for p in parts]) for k in range(4))
    )
