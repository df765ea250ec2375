"""The internal-state law protocol and material points that commit and revert (MGIS semantics).

``MaterialPoints(law, n)`` keeps the committed strain and state of ``n``
points and follows MGIS: ``trial(strain, dt=...)`` evaluates the end-of-step state and never
changes the committed one; ``commit()`` after a converged step, ``revert()`` after a failed
one. Any law with ``n_state``, ``initial_state(n)`` and ``step(...) -> StepResult`` works
(the metamaterial data model's return mapping, ``ReferenceLaw``, is one).

Voigt conventions: ``lse_material.voigt``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch

from lse_material.potential import as_float64_tensor

__all__ = ["InternalStateLaw", "MaterialPoints", "StepResult"]


class StepResult(NamedTuple):
    """End-of-step (trial) values at ``P`` points.

    stress ``(P, 6)``; tangent ``dσ/dε (P, 6, 6)`` (algorithmic, or None when not requested);
    state ``(P, n_state)`` (the trial internal state); indicator ``(P,)`` a phase indicator,
    0 in phase A and 1 in phase B (ξ for the data model; the transformation-strain indicator
    for the trained model, see ``HiddenStateMaterial``); phase_weights ``(P, n_modes)`` (which
    well of the LSE-ICNN) or None.
    """

    stress: torch.Tensor
    tangent: torch.Tensor | None
    state: torch.Tensor
    indicator: torch.Tensor
    phase_weights: torch.Tensor | None = None


@runtime_checkable
class InternalStateLaw(Protocol):
    """A strain-driven law with internal state (Voigt conventions of ``lse_material.voigt``)."""

    input_names: tuple[str, ...]
    n_state: int

    def initial_state(self, n_points: int) -> torch.Tensor:
        """The state at ``t = 0``, ``(n_points, n_state)``."""
        ...

    def step(
        self,
        strain_old: torch.Tensor,
        state_old: torch.Tensor,
        strain_new: torch.Tensor,
        *,
        dt: float,
        tangent: bool = True,
    ) -> StepResult:
        """One time step from ``(ε_n, state_n)`` to ``ε_{n+1}``; must not modify its arguments."""
        ...


class MaterialPoints:
    """Committed and trial strain/state of ``n_points`` points of a law (MGIS semantics).

    ``trial(strain, dt=...)`` computes the end-of-step values from the committed ones and keeps
    them as the trial; the committed tensors are never written by it. ``commit()`` makes the
    last trial the committed state (after a converged step); ``revert()`` drops it (after a
    failed step): the committed state is then bit-for-bit what it was.

    Attributes: ``strain`` ``(n, 6)`` and ``state`` ``(n, n_state)`` (committed, read-only by
    convention), ``last`` the last trial StepResult (or None).
    """

    def __init__(self, law: InternalStateLaw, n_points: int, *, device="cpu"):
        if n_points < 0:
            raise ValueError(f"n_points must be >= 0, got {n_points}.")
        self.law, self.n_points = law, int(n_points)
        self.strain = torch.zeros(self.n_points, 6, dtype=torch.float64, device=device)
        self.state = law.initial_state(self.n_points).to(device=device, dtype=torch.float64)
        self.last: StepResult | None = None
        self._trial_strain: torch.Tensor | None = None
        self.commits = 0

    def trial(self, strain, *, dt: float, tangent: bool = True) -> StepResult:
        """End-of-step values at ``strain (n, 6)`` over ``dt``; does not commit."""
        eps = as_float64_tensor(strain, 6, name="strain", device=self.strain.device)
        if eps.shape[0] != self.n_points:
            raise ValueError(
                f"strain has {eps.shape[0]} points, these material points {self.n_points}."
            )
        result = self.law.step(self.strain, self.state, eps, dt=dt, tangent=tangent)
        self._trial_strain = eps.detach().clone()
        self.last = result
        return result

    def commit(self) -> None:
        """Accept the last trial (call after a converged step)."""
        if self._trial_strain is None or self.last is None:
            raise ValueError("commit() needs a trial() since the last commit/revert.")
        self.strain = self._trial_strain
        self.state = self.last.state.detach().clone()
        self._trial_strain = None
        self.commits += 1

    def revert(self) -> None:
        """Drop the trial (call after a failed step); the committed state is untouched."""
        self._trial_strain = None
        self.last = None
