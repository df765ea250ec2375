"""A strain-driven law with internal state at quadrature points, exposed to UFL as a linearised flux.

``QuadratureStateLaw(law, strain, mesh, quadrature_degree=q, dt=Δt)`` binds an internal-state
law (``lse_material.hidden_state.InternalStateLaw``: the trained ``HiddenStateMaterial`` or the
data model's ``lse_material.training.data.metamaterial.ReferenceLaw``) to a UFL Voigt strain
``strain`` (6, engineering shears, order 11, 22, 33, 23, 13, 12; a UFL vector or a mapping
input name -> expression, as ``QuadratureLaw``). ``update()`` evaluates the strain at the
quadrature points of the cells this rank owns (``lse_material.fem.points.QuadraturePoints``) and
runs the law's *trial* step from the committed state over ``dt``; it fills quadrature Functions
``eps0 (6)``, ``sigma0 (6)``, ``C (6×6)`` (the algorithmic tangent, not symmetric in general)
and ``indicator`` (the phase indicator). The UFL stress

    σ_L(ε) = σ0 + C (ε - ε0),      ε = strain(u)

equals the law's stress at the current iterate, and its derivative with respect to ``u`` is the
algorithmic tangent, so ``F = inner(σ_L, strain(v)) dx`` and ``J = derivative(F, u, du)`` are the
exact residual and Jacobian of the step (a tangent that is not a Hessian has no energy: this
is the flux form of the Taylor surrogate of ``lse_material.fem.quadrature``).

State semantics as in MGIS: ``update()`` never commits; ``commit()`` after a converged step makes
the last trial the committed state; ``revert()`` after a failed one drops it (the committed
state stays bit-for-bit as it was). The law itself communicates nothing (MPI: rank-local); a
rank that owns no cells has no points. It follows ``lse_material.fem.protocol.Law``; it has no
training box (``check_training_box`` is a no-op) and no fixed inputs.
"""

from __future__ import annotations

import numpy as np
import torch
import ufl
from ufl.algorithms.apply_algebra_lowering import apply_algebra_lowering

from lse_material.fem._dolfinx import dolfinx
from lse_material.fem.points import QuadraturePoints
from lse_material.fem.quadrature import NAN_HINT, input_components
from lse_material.hidden_state import STRAIN_NAMES, InternalStateLaw, MaterialPoints

__all__ = ["QuadratureStateLaw"]


class QuadratureStateLaw:
    """An internal-state law at the quadrature points of ``mesh`` (see the module docstring).

    Args:
        law: has ``n_state``, ``initial_state(n)`` and ``step(ε_n, state_n, ε_{n+1}, dt=...)``.
        strain: UFL Voigt strain vector of length 6 (engineering shears), or a mapping
            strain name (``lse_material.hidden_state.STRAIN_NAMES``) -> UFL expression.
        mesh: the dolfinx mesh.
        quadrature_degree: degree of the quadrature rule (use ``self.dx`` in forms).
        dt: the time step of the next trial (settable: ``law.dt = ...`` before a retry).
        device: torch device of the evaluation.
    """

    def __init__(
        self,
        law: InternalStateLaw,
        strain,
        mesh: dolfinx.mesh.Mesh,
        *,
        quadrature_degree: int = 2,
        dt: float = 1.0,
        device: str | torch.device = "cpu",
    ):
        if not isinstance(law, InternalStateLaw):
            raise ValueError(
                f"{type(law).__name__} is not an internal-state law: it needs input_names, "
                "n_state, initial_state(n) and step(strain_old, state_old, strain_new, dt=...)."
            )
        try:
            components = input_components(strain, STRAIN_NAMES)
        except ValueError as error:
            raise ValueError(
                f"strain: a UFL Voigt vector of length 6 (11, 22, 33, 2·23, 2·13, 2·12) or a "
                f"mapping by name; {error}"
            ) from error
        self.law, self.mesh = law, mesh
        # lowered once, so that the increment stays one node in expanded forms (see
        # QuadratureLaw)
        self.strain = apply_algebra_lowering(ufl.as_vector(components))
        self.dt = dt
        self.quadrature = QuadraturePoints(mesh, quadrature_degree)
        self.dx, self.points_per_cell = self.quadrature.dx, self.quadrature.points_per_cell
        self.eps0 = self.quadrature.function((6,), "law_strain")
        self.sigma0 = self.quadrature.function((6,), "law_stress")
        self.C = self.quadrature.function((6, 6), "law_tangent")
        self.indicator = self.quadrature.function((), "phase_indicator")
        self._increment = ufl.as_vector([self.strain[i] - self.eps0[i] for i in range(6)])
        self._expression = self.quadrature.expression(self.strain)
        self.points = MaterialPoints(law, self.quadrature.n_points, device=device)
        self.evaluations = 0

    @property
    def dt(self) -> float:
        return self._dt

    @dt.setter
    def dt(self, value: float) -> None:
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"dt must be finite and positive, got {value}.")
        self._dt = float(value)

    @property
    def n_points(self) -> int:
        """Quadrature points on the cells this rank owns (0 on a rank without cells)."""
        return self.points.n_points

    def stress(self) -> ufl.core.expr.Expr:
        """σ_L(strain) = σ0 + C (strain - ε0), a UFL Voigt vector (6,)."""
        return self.sigma0 + ufl.dot(self.C, self._increment)

    def update(self, *, check_box: bool = True) -> None:
        """Trial step at the current strain (from the committed state); refill the Functions.

        Collective (the finite checks). ``check_box`` is accepted for the protocol: this law
        has no training box.
        """
        del check_box
        values = self.quadrature.evaluate(self._expression, 6)
        q = self.quadrature
        q.raise_if_non_finite(
            "non-finite strains (NaN or inf)", dict(zip(STRAIN_NAMES, values.T)), NAN_HINT
        )
        result = self.points.trial(torch.from_numpy(values), dt=self.dt)
        outputs = {
            name: np.asarray(t.detach().cpu().numpy(), dtype=np.float64)
            for name, t in (
                ("stress", result.stress),
                ("tangent", result.tangent),
                ("indicator", result.indicator),
            )
        }
        q.raise_if_non_finite("the law returned non-finite values", outputs, NAN_HINT)
        for function, array in zip(
            (self.eps0, self.sigma0, self.C, self.indicator), [values, *outputs.values()]
        ):
            q.fill(function, array)
        self.evaluations += 1

    def check_training_box(self) -> None:
        """No training box for internal-state laws (protocol no-op)."""

    def check_fixed(self, unknowns) -> None:
        """No fixed inputs (protocol no-op)."""

    def increments(self) -> tuple:
        """``ε - ε0`` (the vector, then each of its components), zero at the iterate of the
        last update (``LawNewtonSolver`` drops it from F and J there)."""
        return (self._increment, *self._increment.ufl_operands)

    def commit(self) -> None:
        """Accept the last trial (after a converged step)."""
        self.points.commit()

    def revert(self) -> None:
        """Drop the last trial (after a failed step); the committed state is unchanged."""
        self.points.revert()

    def committed_state(self) -> torch.Tensor:
        """The committed internal state of the owned points, ``(n_points, n_state)``."""
        return self.points.state

    def cell_average(self, function: dolfinx.fem.Function, **options) -> dolfinx.fem.Function:
        """DG0 cell means of a quadrature Function (``QuadraturePoints.cell_average``)."""
        return self.quadrature.cell_average(function, **options)
