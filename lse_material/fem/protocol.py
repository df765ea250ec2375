"""The one law protocol the Newton driver, the step-cut loop and the cases call, without probing.

Every law at quadrature points (``QuadratureLaw``, ``QuadratureStateLaw``, or your own) has
these six methods; where one does not apply it is a documented no-op:

- ``update(*, check_box=True)``: evaluate at the current unknowns and refill the law's
  Functions (a *trial*: never commits). Collective.
- ``check_training_box()``: warn or raise on the points of the last update outside the
  training box. Collective. (No-op for laws without a box.)
- ``commit()``: accept the last trial after a converged step. (No-op without state.)
- ``revert()``: drop the last trial after a failed step. (No-op without state.)
- ``check_fixed(unknowns)``: raise if an input marked fixed depends on the unknowns (its
  derivative would be silently dropped). (No-op where nothing is marked fixed.)
- ``increments()``: the law's UFL expressions that are zero at the iterate of the last
  update, such as (inputs - inputs at the last update) of a Taylor surrogate: the very nodes
  its forms use (``ufl.replace`` matches them), which ``LawNewtonSolver`` sets to zero in F
  and J (``lse_material.fem.newton.at_iterate``): the residual then skips the tangent, and
  the Jacobian the tangent times the inputs' second derivative. (``()`` where there are none.)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Law", "check_laws"]


@runtime_checkable
class Law(Protocol):
    """A constitutive law at quadrature points (see the module docstring)."""

    def update(self, *, check_box: bool = True) -> None: ...

    def check_training_box(self) -> None: ...

    def commit(self) -> None: ...

    def revert(self) -> None: ...

    def check_fixed(self, unknowns) -> None: ...

    def increments(self) -> tuple: ...


def check_laws(laws) -> list:
    """``laws`` as a list, each checked against ``Law``; TypeError naming the missing methods."""
    laws = list(laws)
    for law in laws:
        if not isinstance(law, Law):
            missing = [
                m
                for m in (
                    "update",
                    "check_training_box",
                    "commit",
                    "revert",
                    "check_fixed",
                    "increments",
                )
                if not callable(getattr(law, m, None))
            ]
            raise TypeError(
                f"{type(law).__name__} is not a law of lse_material.fem: it lacks {missing} "
                "(see lse_material.fem.protocol.Law; no-ops are fine where they do not apply)."
            )
    return laws
