"""A potential evaluated at quadrature points, exposed to UFL as a second-order Taylor surrogate.

``QuadratureLaw(potential, inputs, mesh, quadrature_degree=q)`` binds a potential (anything with
``input_names`` and ``derivatives(x)``, see ``lse_material.potential``) to a UFL vector
expression ``inputs`` of length ``d`` (e.g. Voigt Green–Lagrange strain of a displacement and a
concentration). Components that are literal numbers (the zero out-of-plane strains of plane
strain) are *fixed*; the others are *live*, ``k`` of them (``law.live``). ``update()``
evaluates the live inputs at the quadrature points of the cells this rank owns, converts them
in one adapter (``inputs_to_tensor``) to a contiguous float64 tensor, calls the potential once
on all points (chunked, on ``device``, derivatives with respect to the live inputs only) and
fills quadrature Functions ``x0 (d)`` (all inputs), ``psi0``, ``s = ∂ψ/∂x_live (k)``,
``H = ∂²ψ/∂x_live² (k×k)``. The UFL energy density

    ψ_T(x) = ψ0 + s·(x_live - x0_live) + ½ (x_live - x0_live)ᵀ H (x_live - x0_live)

has, at the current iterate (x = x0), the value ψ, gradient s and Hessian H of the law, so
``F = derivative(ψ_T dx, u, v)`` and ``J = derivative(F, u, du)`` are the exact residual and
Jacobian for any kinematics (the fixed inputs cannot vary, so their derivatives are never
needed). Call ``update()`` whenever the unknowns change (the Newton driver in
``lse_material.fem.newton`` does).

Point layout: quadrature point ``k`` of owned cell ``i`` (local index) is row
``i * points_per_cell + k`` of every array the law handles.

Diagnostics (quadrature Functions, or None): ``phase_weights`` (n_modes, filled by ``update``
when the potential returns them), ``min_eigenvalue`` of H, the tangent on the live inputs
(loss of stability where negative; filled by ``update_diagnostics()``);
``fraction_outside_box()`` is MPI-reduced, and
``check_training_box()`` warns or raises on it (``update()`` calls it unless told not to; the
Newton driver calls it once per solve, on the converged state, not on trial iterates);
``cell_average(f)`` turns any of them into a DG0 Function for VTX/XDMF output.

Evaluation is rank-local. The only collective steps are the scatter of the filled Functions
and two small reductions (non-finite count, points outside the box), so every rank raises
together and no rank is left waiting in PETSc.
"""

from __future__ import annotations

import warnings
from typing import Literal

import basix.ufl
import numpy as np
import torch
import ufl
from mpi4py import MPI

from lse_material.fem._dolfinx import dolfinx
from lse_material.potential import derivatives_in_chunks

__all__ = ["QuadratureLaw", "inputs_to_tensor", "non_finite_rows", "raise_if_any_rank"]


def inputs_to_tensor(values: np.ndarray, d: int, *, device: str | torch.device = "cpu"):
    """The one adapter from DOLFINx to torch: ``Expression.eval`` output -> ``(n_points, d)``.

    ``values`` has ``n_cells * points_per_cell * d`` entries in cell, point, component order
    (any shape); returns a contiguous float64 tensor on ``device``.
    """
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1, d)
    return torch.from_numpy(flat).to(device=torch.device(device), dtype=torch.float64)


class QuadratureLaw:
    """A potential at the quadrature points of ``mesh`` (see the module docstring).

    Args:
        potential: has ``input_names`` and ``derivatives(x (n, d))``; trained models may also
            have ``training_box`` (input name -> (low, high)) and ``n_modes``.
        inputs: UFL vector expression of length ``d = len(potential.input_names)``, its
            components in ``potential.input_names`` order.
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
        chunk: int = 4096,
        on_outside: Literal["warn", "raise", "ignore"] = "warn",
        box_tolerance: float = 0.02,
    ):
        if not callable(getattr(potential, "derivatives", None)) or not hasattr(
            potential, "input_names"
        ):
            raise TypeError(
                f"potential must have input_names and derivatives(x); got {type(potential).__name__}. "
                "Wrap a closed-form torch energy in lse_material.potential.AnalyticPotential."
            )
        names = tuple(potential.input_names)
        d = len(names)
        if ufl.shape(inputs) != (d,):
            raise ValueError(
                f"inputs must be a UFL vector of length {d} ({', '.join(names)}); "
                f"got shape {ufl.shape(inputs)}. Build it with ufl.as_vector([...])."
            )
        components = [inputs[i] for i in range(d)]
        fixed = [isinstance(e, ufl.constantvalue.ConstantValue) for e in components]
        self.live = tuple(i for i in range(d) if not fixed[i])
        if not self.live:
            raise ValueError(
                "every component of inputs is a fixed number; the law needs inputs that depend "
                "on the unknowns."
            )
        self._fixed_values = {i: float(components[i]) for i in range(d) if fixed[i]}
        if on_outside not in ("warn", "raise", "ignore"):
            raise ValueError(f"on_outside must be 'warn', 'raise' or 'ignore'; got {on_outside!r}.")
        if int(chunk) < 1:
            raise ValueError(f"chunk must be a positive number of points; got {chunk}.")
        self.potential, self.inputs, self.mesh = potential, inputs, mesh
        self.device, self.chunk, self.on_outside = torch.device(device), int(chunk), on_outside
        self.quadrature_degree = quadrature_degree
        self.dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": quadrature_degree})

        k = len(self.live)
        self._live_inputs = ufl.as_vector([components[i] for i in self.live])
        self.x0 = self._quadrature_function((d,), "law_inputs")
        self.s = self._quadrature_function((k,), "law_gradient")
        self.H = self._quadrature_function((k, k), "law_hessian")
        self.psi0 = self._quadrature_function((), "law_energy")
        self.min_eigenvalue = self._quadrature_function((), "min_tangent_eigenvalue")
        n_modes = getattr(potential, "n_modes", None)
        self.phase_weights = (
            None if n_modes is None else self._quadrature_function((n_modes,), "phase_weights")
        )
        element = self.psi0.function_space.ufl_element()
        points, weights = element.custom_quadrature()
        self.points_per_cell = points.shape[0]
        self._weights = weights / weights.sum()  # affine cells: the reference weights average
        self._expression = dolfinx.fem.Expression(self._live_inputs, points)
        tdim = mesh.topology.dim
        n_cells = mesh.topology.index_map(tdim).size_local
        self._cells = np.arange(n_cells, dtype=np.int32)  # owned cells only
        dofs = self.psi0.function_space.dofmap.list[:n_cells].ravel()  # (n_points,)
        self._point_dofs = None if np.array_equal(dofs, np.arange(dofs.size)) else dofs
        self._outside = np.zeros(2)  # local (outside, total) counts of the last update
        box = getattr(potential, "training_box", None)
        self._box = None
        if box:
            missing = [n for n in names if n not in box]
            if missing:
                raise ValueError(
                    f"training_box lacks the inputs {missing}; give (low, high) for each."
                )
            bounds = torch.tensor([box[n] for n in names], dtype=torch.float64)  # (d, 2)
            margin = box_tolerance * (bounds[:, 1] - bounds[:, 0])
            self._box = torch.stack([bounds[:, 0] - margin, bounds[:, 1] + margin], dim=1)
        self.evaluations = 0
        self._hessian = None
        self._warned_fraction = 0.0

    def _quadrature_function(self, shape: tuple[int, ...], name: str) -> dolfinx.fem.Function:
        element = basix.ufl.quadrature_element(
            self.mesh.basix_cell(), value_shape=shape, degree=self.quadrature_degree
        )
        return dolfinx.fem.Function(dolfinx.fem.functionspace(self.mesh, element), name=name)

    @property
    def input_dim(self) -> int:
        """``d``, the number of the potential's inputs (live and fixed)."""
        return self.x0.function_space.dofmap.bs

    @property
    def n_points(self) -> int:
        """Quadrature points on the cells this rank owns."""
        return self._cells.size * self.points_per_cell

    def energy_density(self) -> ufl.core.expr.Expr:
        """The Taylor surrogate ψ_T(inputs) as a UFL scalar (see the module docstring)."""
        dxi = self._live_inputs - ufl.as_vector([self.x0[i] for i in self.live])
        return self.psi0 + ufl.dot(self.s, dxi) + 0.5 * ufl.dot(dxi, ufl.dot(self.H, dxi))

    # ----------------------------------------------------------------- evaluation
    def update(self, *, check_box: bool = True) -> None:
        """Evaluate the inputs at the owned quadrature points and refill the law's Functions.

        Collective. Raises ValueError on every rank if any rank has non-finite inputs or
        outputs (the Functions are then left as they were). Counts the points outside the
        training box and, with ``check_box``, calls ``check_training_box()``.
        """
        d, k = self.input_dim, len(self.live)
        live = self._expression.eval(self.mesh, self._cells).reshape(-1, k)
        n = live.shape[0]
        if k == d:
            values = live
        else:
            values = np.empty((n, d))
            values[:, self.live] = live
            for i, value in self._fixed_values.items():
                values[:, i] = value
        ppc = self.points_per_cell
        raise_if_any_rank(self.mesh, ppc, "non-finite inputs (NaN or inf)", non_finite_rows(live))
        x = inputs_to_tensor(values, d, device=self.device)
        wrt = None if k == d else self.live
        with torch.no_grad():
            result = derivatives_in_chunks(self.potential, x, chunk=self.chunk, wrt=wrt)
        energy, grad, hess = (t.detach().to("cpu", torch.float64) for t in result[:3])
        if energy.shape != (n,) or grad.shape != (n, k) or hess.shape != (n, k, k):
            raise ValueError(
                f"the potential returned energy {tuple(energy.shape)}, gradient "
                f"{tuple(grad.shape)}, hessian {tuple(hess.shape)} for {n} points and {k} "
                f"differentiated inputs; expected ({n},), ({n}, {k}), ({n}, {k}, {k})."
            )
        bad = non_finite_rows(energy.numpy(), grad.numpy(), hess.numpy())
        raise_if_any_rank(self.mesh, ppc, "the law returned non-finite values", bad)
        for function, data in (
            (self.x0, values),
            (self.psi0, energy.numpy()),
            (self.s, grad.numpy()),
            (self.H, hess.numpy()),
        ):
            self._fill(function, data)
        self._hessian = hess
        if result.phase_weights is not None:
            weights = result.phase_weights.detach().to("cpu", torch.float64).numpy()
            if self.phase_weights is None:  # a potential with modes but no n_modes attribute
                self.phase_weights = self._quadrature_function(weights.shape[1:], "phase_weights")
            self._fill(self.phase_weights, weights)
        if self._box is not None:
            xc = x.cpu()
            outside = ((xc < self._box[:, 0]) | (xc > self._box[:, 1])).any(1)
            self._outside = np.array([float(outside.sum()), float(n)])
            if check_box:
                self.check_training_box()
        self.evaluations += 1

    def update_diagnostics(self) -> None:
        """Fill ``min_eigenvalue`` (smallest eigenvalue of H per point) from the last update.

        Not part of ``update()``: an eigen-decomposition per point costs about as much as the
        law itself; call it after a converged step, when the field is written.
        """
        if self._hessian is None:
            raise ValueError("update_diagnostics() needs a preceding update().")
        self._fill(self.min_eigenvalue, torch.linalg.eigvalsh(self._hessian).min(-1).values.numpy())

    def _fill(self, function: dolfinx.fem.Function, data: np.ndarray) -> None:
        """Write ``data (n_points, ...)`` into a quadrature Function and update its ghosts."""
        block = np.asarray(data, dtype=np.float64).reshape(self.n_points, -1)
        if self._point_dofs is None:  # DOLFINx numbers quadrature dofs cell by cell
            function.x.array[: block.size] = block.ravel()
        else:
            function.x.array.reshape(-1, block.shape[1])[self._point_dofs] = block
        function.x.scatter_forward()

    def point_values(self, function: dolfinx.fem.Function) -> np.ndarray:
        """The owned values of a quadrature Function of this law as ``(n_points, value_size)``."""
        bs = function.function_space.dofmap.bs
        array = function.x.array.reshape(-1, bs)
        return array[: self.n_points] if self._point_dofs is None else array[self._point_dofs]

    def cell_average(self, function: dolfinx.fem.Function, *, name: str | None = None):
        """A DG0 Function (same value shape) holding the cell mean of a quadrature Function.

        The mean is weighted by the quadrature weights (exact cell average on affine cells).
        Use it to write diagnostics with VTX/XDMF, which cannot write quadrature spaces.
        """
        shape = function.function_space.value_shape
        dg0 = dolfinx.fem.functionspace(self.mesh, ("DG", 0, shape) if shape else ("DG", 0))
        out = dolfinx.fem.Function(dg0, name=name or f"{function.name}_cell_mean")
        values = self.point_values(function).reshape(self._cells.size, self.points_per_cell, -1)
        means = np.einsum("q,cqk->ck", self._weights, values)
        cell_dofs = dg0.dofmap.list[: self._cells.size, 0]
        out.x.array.reshape(-1, means.shape[1])[cell_dofs] = means
        out.x.scatter_forward()
        return out

    # ----------------------------------------------------------------- checks
    def fraction_outside_box(self) -> float:
        """Fraction of all quadrature points (all ranks) outside the training box at the last update.

        Collective; 0.0 when the potential has no ``training_box``.
        """
        total = self.mesh.comm.allreduce(self._outside, op=MPI.SUM)
        return float(total[0] / total[1]) if total[1] else 0.0

    def check_training_box(self) -> None:
        """Collective: per ``on_outside``, warn (rank 0; again only when the fraction doubles)
        or raise ValueError on every rank when points of the last update lie outside the box."""
        if self.on_outside == "ignore" or self._box is None:
            return
        fraction = self.fraction_outside_box()  # collective: every rank calls it
        if fraction == 0.0:
            return
        message = (
            f"{100 * fraction:.2f}% of the quadrature points lie outside the model's training box; "
            "the law extrapolates there."
        )
        if self.on_outside == "raise":
            raise ValueError(
                message + " (on_outside='raise'; reduce the load or pass on_outside='warn')"
            )
        if fraction > 2 * self._warned_fraction:  # warn once, and again only if it doubles
            self._warned_fraction = fraction
            if self.mesh.comm.rank == 0:
                warnings.warn(message, RuntimeWarning, stacklevel=3)


def raise_if_any_rank(mesh, points_per_cell: int, what: str, bad: np.ndarray | None) -> None:
    """Collective: raise ValueError on every rank when any rank has a True in
    ``bad (n_points,)`` (None: none), naming the count and the cells of the points.

    Point layout as in ``QuadratureLaw``: point ``k`` of owned cell ``i`` is row
    ``i * points_per_cell + k``. Every rank raises, so none is left waiting in PETSc.
    """
    comm = mesh.comm
    local = 0 if bad is None else int(np.count_nonzero(bad))
    total = comm.allreduce(local, op=MPI.SUM)
    if total == 0:
        return
    here = "no such points on this rank"
    if local:
        cells = np.unique(np.flatnonzero(bad) // points_per_cell).astype(np.int32)
        glob = mesh.topology.index_map(mesh.topology.dim).local_to_global(cells)
        more = " ..." if cells.size > 10 else ""
        here = (
            f"{local} of them in {cells.size} cells (global cell indices "
            f"{glob[:10].tolist()}{more}; local {cells[:10].tolist()}{more})"
        )
    raise ValueError(
        f"{what} at {total} quadrature points over {comm.size} rank(s); on rank "
        f"{comm.rank}: {here}. The solver was not called. Check the loading, the step size "
        "and the inputs' UFL expression (e.g. det F <= 0 under a log or a square root)."
    )


def non_finite_rows(*arrays: np.ndarray) -> np.ndarray | None:
    """Rows (first axis) with a NaN or inf in any of ``arrays``, as a boolean mask; None when
    all are finite (checked by one sum per array, the common case)."""
    if all(np.isfinite(a.sum()) for a in arrays):
        return None
    return np.logical_or.reduce([~np.isfinite(a.reshape(a.shape[0], -1)).all(1) for a in arrays])
