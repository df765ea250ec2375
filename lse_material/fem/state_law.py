"""A strain-driven law with internal state at quadrature points, exposed to UFL as a linearised flux.

``QuadratureStateLaw(law, strain, mesh, quadrature_degree=q, dt=Δt)`` binds an internal-state
law (``lse_material.hidden_state.InternalStateLaw``: the trained ``HiddenStateMaterial`` or the
data model's ``lse_material.training.metamaterial.ReferenceLaw``) to a UFL Voigt strain ``strain`` (6,
engineering shears, order 11, 22, 33, 23, 13, 12). ``update()`` evaluates the strain at the
quadrature points of the cells this rank owns and runs the law's *trial* step from the
committed state over ``dt``; it fills quadrature Functions ``eps0 (6)``, ``sigma0 (6)``,
``C (6×6)`` (the algorithmic tangent, not symmetric in general) and ``indicator`` (the phase
indicator). The UFL stress

    σ_L(ε) = σ0 + C (ε - ε0),      ε = strain(u)

equals the law's stress at the current iterate, and its derivative with respect to ``u`` is the
algorithmic tangent, so ``F = inner(σ_L, strain(v)) dx`` and ``J = derivative(F, u, du)`` are the
exact residual and Jacobian of the step (a tangent that is not a Hessian has no energy: this
is the flux form of the Taylor surrogate of ``lse_material.fem.quadrature``).

State semantics as in MGIS: ``update()`` never commits; ``commit()`` after a converged step makes
the last trial the committed state; ``revert()`` after a failed one drops it (the committed
state stays bit-for-bit as it was). The law itself communicates nothing (MPI: rank-local).
"""

from __future__ import annotations

import basix.ufl
import numpy as np
import torch
import ufl

from lse_material.fem._dolfinx import dolfinx
from lse_material.fem.quadrature import non_finite_rows, raise_if_any_rank
from lse_material.hidden_state import InternalStateLaw, MaterialPoints

__all__ = ["QuadratureStateLaw"]


class QuadratureStateLaw:
    """An internal-state law at the quadrature points of ``mesh`` (see the module docstring).

    Args:
        law: has ``n_state``, ``initial_state(n)`` and ``step(ε_n, state_n, ε_{n+1}, dt=...)``.
        strain: UFL Voigt strain vector of length 6 (engineering shears).
        mesh: the dolfinx mesh.
        quadrature_degree: degree of the quadrature rule (use ``self.dx`` in forms).
        dt: the time step of the next trial (settable: ``law.dt = ...`` before a retry).
        device: torch device of the evaluation.
    """

    def __init__(
        self,
        law: InternalStateLaw,
        strain: ufl.core.expr.Expr,
        mesh: dolfinx.mesh.Mesh,
        *,
        quadrature_degree: int = 2,
        dt: float = 1.0,
        device: str | torch.device = "cpu",
    ):
        if ufl.shape(strain) != (6,):
            raise ValueError(
                f"strain must be a UFL Voigt vector of length 6 (11, 22, 33, 2·23, 2·13, 2·12); "
                f"got shape {ufl.shape(strain)}."
            )
        if not isinstance(law, InternalStateLaw):
            raise ValueError(
                f"{type(law).__name__} is not an internal-state law: it needs input_names, "
                "n_state, initial_state(n) and step(strain_old, state_old, strain_new, dt=...)."
            )
        self.law, self.strain, self.mesh = law, strain, mesh
        self.dt = dt
        self.dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": quadrature_degree})

        def space(shape):
            element = basix.ufl.quadrature_element(
                mesh.basix_cell(), value_shape=shape, degree=quadrature_degree
            )
            return dolfinx.fem.functionspace(mesh, element)

        self.eps0 = dolfinx.fem.Function(space((6,)), name="law_strain")
        self.sigma0 = dolfinx.fem.Function(space((6,)), name="law_stress")
        self.C = dolfinx.fem.Function(space((6, 6)), name="law_tangent")
        self.indicator = dolfinx.fem.Function(space(()), name="phase_indicator")
        points = self.eps0.function_space.element.interpolation_points
        self.points_per_cell = points.shape[0]
        self._expression = dolfinx.fem.Expression(strain, points)
        n_cells = mesh.topology.index_map(mesh.topology.dim).size_local
        self._cells = np.arange(n_cells, dtype=np.int32)  # owned cells only
        self.points = MaterialPoints(law, n_cells * self.points_per_cell, device=device)
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
        """Quadrature points on the cells this rank owns."""
        return self.points.n_points

    def stress(self) -> ufl.core.expr.Expr:
        """σ_L(strain) = σ0 + C (strain - ε0), a UFL Voigt vector (6,)."""
        return self.sigma0 + ufl.dot(self.C, self.strain - self.eps0)

    def update(self) -> None:
        """Trial step at the current strain (from the committed state); refill the Functions."""
        values = self._expression.eval(self.mesh, self._cells).reshape(-1, 6)
        ppc = self.points_per_cell
        raise_if_any_rank(
            self.mesh, ppc, "non-finite strains (NaN or inf)", non_finite_rows(values)
        )
        result = self.points.trial(torch.from_numpy(np.ascontiguousarray(values)), dt=self.dt)
        outputs = [
            np.asarray(t.detach().cpu().numpy(), dtype=np.float64)
            for t in (result.stress, result.tangent, result.indicator)
        ]
        raise_if_any_rank(
            self.mesh, ppc, "the law returned non-finite values", non_finite_rows(*outputs)
        )
        for function, array in zip(
            (self.eps0, self.sigma0, self.C, self.indicator), [values, *outputs]
        ):
            flat = array.ravel()
            function.x.array[: flat.size] = flat
            function.x.scatter_forward()
        self.evaluations += 1

    def commit(self) -> None:
        """Accept the last trial (after a converged step)."""
        self.points.commit()

    def revert(self) -> None:
        """Drop the last trial (after a failed step); the committed state is unchanged."""
        self.points.revert()

    def committed_state(self) -> torch.Tensor:
        """The committed internal state of the owned points, ``(n_points, n_state)``."""
        return self.points.state

    def cell_average(self, function) -> np.ndarray:
        """Average over each owned cell's quadrature points of a scalar quadrature Function."""
        n = self._cells.size
        return function.x.array[: n * self.points_per_cell].reshape(n, -1).mean(axis=1)
