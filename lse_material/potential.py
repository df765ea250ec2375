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
    "check_wrt",
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

    def derivatives(
        self, x: torch.Tensor, *, hessian: bool = True, wrt: Sequence[int] | None = None
    ) -> EnergyDerivatives:
        """Energy, gradient and (optionally) Hessian at ``x`` of shape ``(n_points, n_inputs)``.

        ``wrt``: the input columns to differentiate with respect to (default all); the gradient
        is then ``(n_points, k)`` and the Hessian ``(n_points, k, k)`` for ``k = len(wrt)``, in
        that order. The DOLFINx bridge passes it when some inputs are fixed numbers (plane
        strain), so no work is spent on derivatives nobody uses.
        """
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

    def derivatives(self, x, *, hessian: bool = True, wrt=None) -> EnergyDerivatives:
        """See ``Potential.derivatives``."""
        d = len(self.input_names)
        x = as_float64_tensor(x, d).detach().requires_grad_(True)
        columns = check_wrt(wrt, d)
        with torch.enable_grad():
            energy = self.energy_fn(x)
            (gradient,) = torch.autograd.grad(energy.sum(), x, create_graph=hessian)
            hess = None
            if hessian:
                rows = [
                    torch.autograd.grad(gradient[:, j].sum(), x, retain_graph=True)[0]
                    for j in columns
                ]
                hess = torch.stack(rows, dim=1)[:, :, columns]
        return EnergyDerivatives(energy.detach(), gradient.detach()[:, columns], hess)


def check_wrt(wrt, n_inputs: int) -> list[int]:
    """``wrt`` (distinct input indices, or None for all) as a list; raises ValueError otherwise."""
    if wrt is None:
        return list(range(n_inputs))
    columns = [int(i) for i in torch.as_tensor(wrt).flatten().tolist()]
    if (
        not columns
        or len(set(columns)) != len(columns)
        or not all(0 <= i < n_inputs for i in columns)
    ):
        raise ValueError(f"wrt must be distinct input indices in [0, {n_inputs}); got {columns}.")
    return columns


def derivatives_in_chunks(
    potential: Potential,
    x: torch.Tensor,
    *,
    chunk: int = 4096,
    hessian: bool = True,
    wrt: Sequence[int] | None = None,
) -> EnergyDerivatives:
    """``potential.derivatives`` over ``x (n_points, d)`` in chunks of ``chunk`` points, no autograd graph.

    Bounds the memory of the closed-form pass (its intermediates are ``(N, chunk, h, k)``);
    the chunks' results are written into preallocated outputs. ``wrt`` as in
    ``Potential.derivatives`` (passed on only when given).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}.")
    options = {"hessian": hessian} if wrt is None else {"hessian": hessian, "wrt": wrt}
    out = None
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            part = potential.derivatives(x[start : start + chunk], **options)
            if out is None:
                out = [None if t is None else t.new_empty((x.shape[0], *t.shape[1:])) for t in part]
            for buffer, t in zip(out, part):
                if buffer is not None:
                    buffer[start : start + chunk] = t
    if out is None:  # no points
        return potential.derivatives(x, **options)
    return EnergyDerivatives(*out)
