"""A potential evaluated at quadrature points, exposed to UFL as a second-order Taylor surrogate.

``QuadratureLaw(potential, inputs, mesh, quadrature_degree=q)`` binds a potential (anything with
``derivatives(x)``, see ``lse_material.potential``) to a UFL vector expression ``inputs`` of
length ``d`` (e.g. Voigt Green–Lagrange strain of a displacement and a concentration).
``update()`` evaluates ``inputs`` at the quadrature points of the cells this rank owns, calls
the potential once on all of them (float64, chunked), and fills quadrature Functions
``x0 (d)``, ``psi0``, ``s = ∂ψ/∂x (d)``, ``H = ∂²ψ/∂x² (d×d)``. The UFL energy density

    ψ_T(x) = ψ0 + s·(x - x0) + ½ (x - x0)ᵀ H (x - x0),     x = inputs(u)

has, at the current iterate (x = x0), the value ψ, gradient s and Hessian H of the law, so
``F = derivative(ψ_T dx, u, v)`` and ``J = derivative(F, u, du)`` are the exact residual and
Jacobian for any kinematics. Call ``update()`` whenever the unknowns change (the Newton
driver in ``lse_material.fem.newton`` does).

Diagnostics (quadrature Functions, or None): ``phase_weights`` (n_modes, filled by ``update``),
``min_eigenvalue`` of H (loss of stability where negative; filled by ``update_diagnostics()``);
``fraction_outside_box()`` is MPI-reduced.
"""

from __future__ import annotations

import warnings
from typing import Literal

import basix.ufl
import numpy as np
import torch
import ufl

from lse_material.fem._dolfinx import dolfinx
from lse_material.potential import derivatives_in_chunks

__all__ = ["QuadratureLaw"]


class QuadratureLaw:
    """A potential at the quadrature points of ``mesh`` (see the module docstring).

    Args:
        potential: has ``input_names`` and ``derivatives(x (n, d))``; trained models may also
            have ``training_box`` (input name -> (low, high)).
        inputs: UFL vector expression of length ``d = len(potential.input_names)``.
        mesh: the dolfinx mesh.
        quadrature_degree: degree of the quadrature rule (use ``self.dx`` in forms).
        device: torch device for the evaluation ("cpu", "cuda"); chunk: points per call.
        on_outside: "warn" | "raise" | "ignore" when points leave the training box.
        box_tolerance: a point is outside when an input leaves its training interval by more
            than this fraction of the interval's width (default 2 %: the Cahn–Hilliard
            concentration overshoots [0, 1] by about 1 % near interfaces).
    """

    def __init__(
        self,
        potential,
        inputs: ufl.core.expr.Expr,
        mesh: dolfinx.mesh.Mesh,
        *,
        quadrature_degree: int = 2,
        device: str | torch.device = "cpu",
        chunk: int = 1024,
        on_outside: Literal["warn", "raise", "ignore"] = "warn",
        box_tolerance: float = 0.02,
    ):
        names = tuple(potential.input_names)
        d = len(names)
        if ufl.shape(inputs) != (d,):
            raise ValueError(
                f"inputs must be a UFL vector of length {d} ({', '.join(names)}); got shape {ufl.shape(inputs)}."
            )
        if on_outside not in ("warn", "raise", "ignore"):
            raise ValueError(f"on_outside must be 'warn', 'raise' or 'ignore'; got {on_outside!r}.")
        self.potential, self.inputs, self.mesh = potential, inputs, mesh
        self.device, self.chunk, self.on_outside = torch.device(device), chunk, on_outside
        self.dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": quadrature_degree})

        def space(shape):
            element = basix.ufl.quadrature_element(
                mesh.basix_cell(), value_shape=shape, degree=quadrature_degree
            )
            return dolfinx.fem.functionspace(mesh, element)

        self.x0 = dolfinx.fem.Function(space((d,)), name="law_inputs")
        self.s = dolfinx.fem.Function(space((d,)), name="law_gradient")
        self.H = dolfinx.fem.Function(space((d, d)), name="law_hessian")
        self.psi0 = dolfinx.fem.Function(space(()), name="law_energy")
        self.min_eigenvalue = dolfinx.fem.Function(space(()), name="min_tangent_eigenvalue")
        n_modes = getattr(potential, "n_modes", None)
        self.phase_weights = (
            None
            if n_modes is None
            else dolfinx.fem.Function(space((n_modes,)), name="phase_weights")
        )
        points = self.x0.function_space.element.interpolation_points
        self.points_per_cell = points.shape[0]
        self._expression = dolfinx.fem.Expression(inputs, points)
        cell_map = mesh.topology.index_map(mesh.topology.dim)
        self._cells = np.arange(cell_map.size_local, dtype=np.int32)  # owned cells only
        self._outside = np.zeros(2)  # local (outside, total) counts of the last update
        box = getattr(potential, "training_box", None)
        self._box = None
        if box:
            bounds = torch.tensor([box[n] for n in names], dtype=torch.float64)  # (d, 2)
            margin = box_tolerance * (bounds[:, 1] - bounds[:, 0])
            self._box = torch.stack([bounds[:, 0] - margin, bounds[:, 1] + margin], dim=1)
        self.evaluations = 0
        self._hessian = None
        self._warned_fraction = 0.0

    @property
    def input_dim(self) -> int:
        return self.x0.function_space.dofmap.bs

    def energy_density(self) -> ufl.core.expr.Expr:
        """The Taylor surrogate ψ_T(inputs) as a UFL scalar (see the module docstring)."""
        dxi = self.inputs - self.x0
        return self.psi0 + ufl.dot(self.s, dxi) + 0.5 * ufl.dot(dxi, ufl.dot(self.H, dxi))

    def _cell_ids(self, point_rows: np.ndarray) -> np.ndarray:
        """Global cell indices of the given quadrature-point rows."""
        local = np.unique(point_rows // self.points_per_cell).astype(np.int32)
        return self.mesh.topology.index_map(self.mesh.topology.dim).local_to_global(local)

    def _raise_non_finite(self, what: str, bad: np.ndarray) -> None:
        rows = np.flatnonzero(bad)
        cells = self._cell_ids(rows)
        raise ValueError(
            f"{what} at {rows.size} quadrature points in {cells.size} cells (global cell indices "
            f"{cells[:10].tolist()}{' ...' if cells.size > 10 else ''}) on rank "
            f"{self.mesh.comm.rank}; the solver was not called. Check the loading, the time step "
            f"and the inputs' UFL expression."
        )

    def update(self) -> None:
        """Evaluate the inputs at the owned quadrature points and refill the law's Functions."""
        d = self.input_dim
        values = self._expression.eval(self.mesh, self._cells).reshape(-1, d)
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            self._raise_non_finite("non-finite inputs (NaN or inf)", bad)
        x = torch.from_numpy(np.ascontiguousarray(values)).to(self.device, torch.float64)
        with torch.no_grad():
            result = derivatives_in_chunks(self.potential, x, chunk=self.chunk)
        energy, grad, hess = (t.detach().to("cpu", torch.float64) for t in result[:3])
        bad = ~(
            torch.isfinite(energy)
            & torch.isfinite(grad).all(1)
            & torch.isfinite(hess).flatten(1).all(1)
        )
        if bool(bad.any()):
            self._raise_non_finite("the law returned non-finite values", bad.numpy())
        n = values.shape[0]
        for function, data in (
            (self.x0, values),
            (self.psi0, energy.numpy()),
            (self.s, grad.numpy()),
            (self.H, hess.numpy()),
        ):
            self._fill(function, data, n)
        self._hessian = hess
        if self.phase_weights is not None and result.phase_weights is not None:
            self._fill(self.phase_weights, result.phase_weights.detach().cpu().numpy(), n)
        if self._box is not None:
            xc = x.cpu()
            outside = ((xc < self._box[:, 0]) | (xc > self._box[:, 1])).any(1)
            self._outside = np.array([float(outside.sum()), float(n)])
            self._check_outside()
        self.evaluations += 1

    def update_diagnostics(self) -> None:
        """Fill ``min_eigenvalue`` (smallest eigenvalue of H per point) from the last update.

        Not part of ``update()``: an eigen-decomposition per point costs about as much as the
        law itself; call it after a converged step, when the field is written.
        """
        if self._hessian is None:
            raise ValueError("update_diagnostics() needs a preceding update().")
        values = torch.linalg.eigvalsh(self._hessian).min(-1).values.numpy()
        self._fill(self.min_eigenvalue, values, values.shape[0])

    @staticmethod
    def _fill(function, data: np.ndarray, n_points: int) -> None:
        flat = np.asarray(data, dtype=np.float64).reshape(n_points, -1).ravel()
        function.x.array[: flat.size] = flat
        function.x.scatter_forward()

    def fraction_outside_box(self) -> float:
        """Fraction of all quadrature points (all ranks) outside the training box at the last update."""
        total = self.mesh.comm.allreduce(self._outside, op=_mpi_sum())
        return float(total[0] / total[1]) if total[1] else 0.0

    def _check_outside(self) -> None:
        if self.on_outside == "ignore":
            return
        fraction = self.fraction_outside_box()  # collective: every rank calls it
        if fraction == 0.0:
            return
        message = (
            f"{100 * fraction:.2f}% of the quadrature points lie outside the model's training box; "
            "the law extrapolates there."
        )
        if self.on_outside == "raise":
            raise ValueError(message + " (on_outside='raise')")
        if fraction > 2 * self._warned_fraction:  # warn once, and again only if it doubles
            self._warned_fraction = fraction
            if self.mesh.comm.rank == 0:
                warnings.warn(message, RuntimeWarning, stacklevel=3)


def _mpi_sum():
    from mpi4py import MPI

    return MPI.SUM
