"""A potential evaluated at quadrature points, exposed to UFL as a second-order Taylor surrogate.

``QuadratureLaw(potential, inputs, mesh, quadrature_degree=q)`` binds a potential (anything with
``input_names`` and ``derivatives(x)``, see ``lse_material.potential``) to the UFL expressions of
its ``d`` inputs, given **by name** (a mapping ``{"E11": E[0, 0], ..., "c": c}``, checked against
``potential.input_names``) or as a UFL vector in ``input_names`` order.

Inputs are of three kinds:

- *literal* numbers (the zero out-of-plane strains of plane strain): fixed, never evaluated;
- *fixed* fields, named in ``fixed=`` (a prescribed concentration c(x): a Function or any UFL
  expression the unknowns do not touch): evaluated at every update, never differentiated;
- *live*, the others, ``k`` of them (``law.live``, indices into ``input_names``).

``update()`` evaluates the non-literal inputs at the quadrature points of the cells this rank
owns (``lse_material.fem.points.QuadraturePoints``), converts them in one adapter
(``inputs_to_tensor``) to a contiguous float64 tensor, calls the potential once on all points
(chunked, on ``device``, derivatives with respect to the live inputs only) and fills quadrature
Functions ``x0 (d)`` (all inputs), ``psi0``, ``s = ∂ψ/∂x_live (k)`` and ``H_upper``, the upper
triangle of ``H = ∂²ψ/∂x_live²`` row by row (k(k+1)/2: the forms read H, symmetric, from it),
and ``H`` itself (k×k, for output and diagnostics). The UFL energy density

    ψ_T(x) = ψ0 + s·(x_live - x0_live) + ½ (x_live - x0_live)ᵀ H (x_live - x0_live)

has, at the current iterate (x = x0), the value ψ, gradient s and Hessian H of the law, so
``F = derivative(ψ_T dx, u, v)`` and ``J = derivative(F, u, du)`` are the exact residual and
Jacobian for any kinematics (the fixed inputs do not vary with u, so their derivatives are
never needed; ``check_fixed(u)``, which ``LawNewtonSolver`` calls, makes sure of it). Call
``update()`` whenever the unknowns change (``LawNewtonSolver`` does). ``LawNewtonSolver``
assembles both with the increment x_live - x0_live (``increments()``) set to zero, as it is
there: F then skips H, and J the term (H·(x - x0))·∂²x/∂u² of finite strain.

Diagnostics (quadrature Functions, or None): ``phase_weights`` (n_modes, filled by ``update``
when the potential returns them), ``min_eigenvalue`` of H, the tangent on the live inputs
(loss of stability where negative; filled by ``update_diagnostics()``);
``fraction_outside_box()`` is MPI-reduced, and ``check_training_box()`` warns or raises on it,
naming each input that left its interval, its range and by how much (``update()`` calls it
unless told not to; the Newton driver calls it once per solve, on the converged state);
``cell_average(f)`` turns any of them into a DG0 Function for VTX/XDMF output.

Evaluation is rank-local. The only collective steps are the scatter of the filled Functions
and small reductions (non-finite counts, the training-box statistics), so every rank raises
together, no rank is left waiting in PETSc, and a rank that owns no cells simply has no points.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
import ufl
from mpi4py import MPI
from ufl.algorithms.apply_algebra_lowering import apply_algebra_lowering

from lse_material.errors import TrainingBoxWarning
from lse_material.fem._dolfinx import dolfinx
from lse_material.fem.points import QuadraturePoints
from lse_material.potential import derivatives_in_chunks

__all__ = ["QuadratureLaw", "inputs_to_tensor", "input_components"]

NAN_HINT = (
    "Check the loading, the step size and the inputs' UFL expressions "
    "(e.g. det F <= 0 under a log or a square root)."
)


def inputs_to_tensor(values: np.ndarray, d: int, *, device: str | torch.device = "cpu"):
    """The one adapter from DOLFINx to torch: ``Expression.eval`` output -> ``(n_points, d)``.

    ``values`` has ``n_cells * points_per_cell * d`` entries in cell, point, component order
    (any shape); returns a contiguous float64 tensor on ``device``.
    """
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1, d)
    return torch.from_numpy(flat).to(device=torch.device(device), dtype=torch.float64)


def input_components(inputs, names: Sequence[str]) -> list[ufl.core.expr.Expr]:
    """The UFL scalar of each input, in ``names`` order, from a mapping or a UFL vector.

    ``inputs``: ``{name: expression or number}`` with exactly the keys ``names`` (any order), or
    a UFL vector of length ``len(names)`` in ``names`` order. Raises TypeError/ValueError that
    name the offending input and say how to fix it.
    """
    d = len(names)
    if isinstance(inputs, Mapping):
        unknown = [k for k in inputs if k not in names]
        missing = [n for n in names if n not in inputs]
        if unknown or missing:
            hints = [
                f"'{k}' looks like a tensor shear: the model takes the engineering shear "
                f"'2{k}' = 2·{k}"
                for k in unknown
                if f"2{k}" in names
            ]
            raise ValueError(
                f"inputs by name: unknown {unknown}, missing {missing}; the model's inputs are "
                f"{list(names)}. " + " ".join(hints)
            )
        components = []
        for name in names:
            try:
                value = ufl.as_ufl(inputs[name])
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"input '{name}': {type(inputs[name]).__name__} is not a UFL expression or "
                    "a number."
                ) from error
            if ufl.shape(value) != ():
                raise ValueError(
                    f"input '{name}' must be a scalar UFL expression; got shape {ufl.shape(value)}."
                )
            components.append(value)
        return components
    if isinstance(inputs, (list, tuple)):
        raise TypeError(
            f"inputs is a Python {type(inputs).__name__} of {len(inputs)} items; pass "
            f"ufl.as_vector([...]) (in the order {list(names)}) or, better, a mapping "
            f"name -> expression, e.g. {{'{names[0]}': ..., ...}}."
        )
    if not isinstance(inputs, ufl.core.expr.Expr):
        raise TypeError(
            f"inputs must be a mapping name -> UFL expression or a UFL vector; got "
            f"{type(inputs).__name__}."
        )
    if ufl.shape(inputs) != (d,):
        raise ValueError(
            f"inputs must be a UFL vector of length {d} ({', '.join(names)}); "
            f"got shape {ufl.shape(inputs)}. Build it with ufl.as_vector([...]), or pass a "
            "mapping name -> expression."
        )
    return [inputs[i] for i in range(d)]


class QuadratureLaw:
    """A potential at the quadrature points of ``mesh`` (see the module docstring).

    Args:
        potential: has ``input_names`` and ``derivatives(x (n, d), wrt=...)``; trained models
            may also have ``training_box`` (input name -> (low, high)) and ``n_modes``.
        inputs: mapping input name -> UFL scalar (or number), exactly the potential's
            ``input_names``; or a UFL vector of length ``d`` in ``input_names`` order.
        mesh: the dolfinx mesh.
        fixed: names of inputs the unknowns do not touch (prescribed fields): evaluated,
            not differentiated. Literal numbers are fixed anyway.
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
        inputs: Mapping[str, ufl.core.expr.Expr] | ufl.core.expr.Expr,
        mesh: dolfinx.mesh.Mesh,
        *,
        fixed: Sequence[str] = (),
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
        names = self.input_names = tuple(potential.input_names)
        components = input_components(inputs, names)
        if isinstance(fixed, str) or any(n not in names for n in fixed):
            raise ValueError(
                f"fixed must be a list of input names from {list(names)}; got {fixed!r}."
            )
        literal = [isinstance(e, ufl.constantvalue.ConstantValue) for e in components]
        self.live = tuple(i for i in range(len(names)) if not literal[i] and names[i] not in fixed)
        if not self.live:
            raise ValueError(
                "every input is a number or marked fixed; the law needs inputs that depend on "
                "the unknowns."
            )
        if on_outside not in ("warn", "raise", "ignore"):
            raise ValueError(f"on_outside must be 'warn', 'raise' or 'ignore'; got {on_outside!r}.")
        if int(chunk) < 1:
            raise ValueError(f"chunk must be a positive number of points; got {chunk}.")
        self.potential, self.mesh = potential, mesh
        self.inputs = dict(zip(names, components))
        self.fixed = tuple(n for i, n in enumerate(names) if i not in self.live)
        self.device, self.chunk, self.on_outside = torch.device(device), int(chunk), on_outside
        self.quadrature = QuadraturePoints(mesh, quadrature_degree)
        self.quadrature_degree, self.dx = quadrature_degree, self.quadrature.dx
        self.points_per_cell = self.quadrature.points_per_cell

        d, k = len(names), len(self.live)
        self._literal = {i: float(components[i]) for i in range(d) if literal[i]}
        self._evaluated = tuple(i for i in range(d) if not literal[i])  # live and fixed fields
        # lowered once (dot, transpose, ... to index notation), as UFL lowers a form before
        # differentiating it, so that this increment stays one node in the expanded forms
        # (``increments()``, which LawNewtonSolver sets to zero at the iterate)
        self._live_inputs = apply_algebra_lowering(
            ufl.as_vector([components[i] for i in self.live])
        )
        self._expression = self.quadrature.expression(
            ufl.as_vector([components[i] for i in self._evaluated])
        )
        self.x0 = self.quadrature.function((d,), "law_inputs")
        self.s = self.quadrature.function((k,), "law_gradient")
        self._upper = np.triu_indices(k)  # H's upper triangle, row by row
        self.H_upper = self.quadrature.function((self._upper[0].size,), "law_hessian_upper")
        self.H = self.quadrature.function((k, k), "law_hessian")
        self.psi0 = self.quadrature.function((), "law_energy")
        # componentwise: indexing a vector Sum distributes it, a ListTensor of Sums stays
        self._increment = ufl.as_vector(
            [self._live_inputs[j] - self.x0[i] for j, i in enumerate(self.live)]
        )
        self.min_eigenvalue = self.quadrature.function((), "min_tangent_eigenvalue")
        n_modes = getattr(potential, "n_modes", None)
        self.phase_weights = (
            None if n_modes is None else self.quadrature.function((n_modes,), "phase_weights")
        )
        self._box = self._training_box(getattr(potential, "training_box", None), box_tolerance)
        self._box_values: np.ndarray | None = None  # the inputs (n, d) of the last update
        self._box_stats: np.ndarray | None = None  # their local statistics, once asked for
        self.evaluations = 0
        self._hessian = None
        self._warned_fraction = 0.0

    def _training_box(self, box, tolerance: float) -> np.ndarray | None:
        """``(d, 2)`` bounds widened by ``tolerance`` of each width, or None without a box."""
        if not box:
            return None
        missing = [n for n in self.input_names if n not in box]
        if missing:
            raise ValueError(f"training_box lacks the inputs {missing}; give (low, high) for each.")
        bounds = np.array([box[n] for n in self.input_names], dtype=np.float64)  # (d, 2)
        margin = tolerance * (bounds[:, 1] - bounds[:, 0])
        self._trained = bounds
        return np.stack([bounds[:, 0] - margin, bounds[:, 1] + margin], axis=1)

    @property
    def input_dim(self) -> int:
        """``d``, the number of the potential's inputs (live and fixed)."""
        return len(self.input_names)

    @property
    def n_points(self) -> int:
        """Quadrature points on the cells this rank owns (0 on a rank without cells)."""
        return self.quadrature.n_points

    def energy_density(self) -> ufl.core.expr.Expr:
        """The Taylor surrogate ψ_T(inputs) as a UFL scalar (see the module docstring).

        H enters as its k(k+1)/2 stored entries (``H_upper``): FFCx reads every component of a
        quadrature coefficient with a sum over the cell's points (an identity table), so
        reading the symmetric half costs the assembly about half as much as the full H.
        """
        k = len(self.live)
        entry = {}
        for n, (i, j) in enumerate(zip(*self._upper)):
            entry[i, j] = entry[j, i] = self.H_upper[n]
        H = ufl.as_matrix([[entry[i, j] for j in range(k)] for i in range(k)])
        dxi = self._increment  # x_live - x0_live
        return self.psi0 + ufl.dot(self.s, dxi) + 0.5 * ufl.dot(dxi, ufl.dot(H, dxi))

    # ----------------------------------------------------------------- evaluation
    def _input_values(self) -> np.ndarray:
        """All ``d`` inputs at the owned points, ``(n_points, d)``; collective finite check."""
        n, d = self.n_points, self.input_dim
        evaluated = self.quadrature.evaluate(self._expression, len(self._evaluated))
        values = np.empty((n, d))
        values[:, self._evaluated] = evaluated
        for i, value in self._literal.items():
            values[:, i] = value
        columns = {self.input_names[i]: evaluated[:, j] for j, i in enumerate(self._evaluated)}
        self.quadrature.raise_if_non_finite("non-finite inputs (NaN or inf)", columns, NAN_HINT)
        return values

    def update(self, *, check_box: bool = True) -> None:
        """Evaluate the inputs at the owned quadrature points and refill the law's Functions.

        Collective. Raises ValueError on every rank if any rank has non-finite inputs or
        outputs, naming the inputs and cells (the Functions are then left as they were).
        Keeps the inputs for the training-box statistics and, with ``check_box``, calls
        ``check_training_box()``.
        """
        values = self._input_values()
        n, d, k = self.n_points, self.input_dim, len(self.live)
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
        live_names = [self.input_names[i] for i in self.live]
        outputs = {"energy": energy.numpy()}
        outputs |= {f"∂ψ/∂{name}": grad[:, j].numpy() for j, name in enumerate(live_names)}
        outputs["the Hessian"] = hess.numpy()
        self.quadrature.raise_if_non_finite("the law returned non-finite values", outputs, NAN_HINT)
        for function, data in (
            (self.x0, values),
            (self.psi0, energy),
            (self.s, grad),
            (self.H, hess),
            (self.H_upper, hess.numpy()[:, self._upper[0], self._upper[1]]),
        ):
            self.quadrature.fill(function, np.asarray(data))
        self._hessian = hess
        if result.phase_weights is not None:
            weights = result.phase_weights.detach().to("cpu", torch.float64).numpy()
            if self.phase_weights is None:  # a potential with modes but no n_modes attribute
                shape = (weights.shape[1],) if weights.ndim == 2 else ()
                self.phase_weights = self.quadrature.function(shape, "phase_weights")
            self.quadrature.fill(self.phase_weights, weights)
        if self._box is not None:  # statistics computed when asked for (not in every Newton step)
            self._box_values, self._box_stats = values, None
            if check_box:
                self.check_training_box()
        self.evaluations += 1

    def update_diagnostics(self) -> None:
        """Fill ``min_eigenvalue`` (smallest eigenvalue of H, the live block, per point).

        Not part of ``update()``: an eigen-decomposition per point costs about as much as the
        law itself; call it after a converged step, when the field is written.
        """
        if self._hessian is None:
            raise ValueError("update_diagnostics() needs a preceding update().")
        values = torch.linalg.eigvalsh(self._hessian).min(-1).values if self.n_points else []
        self.quadrature.fill(self.min_eigenvalue, np.asarray(values, dtype=np.float64))

    def point_values(self, function: dolfinx.fem.Function) -> np.ndarray:
        """The owned values of a quadrature Function of this law as ``(n_points, value_size)``."""
        return self.quadrature.read(function)

    def cell_average(self, function: dolfinx.fem.Function, **options) -> dolfinx.fem.Function:
        """DG0 cell means of a quadrature Function (``QuadraturePoints.cell_average``)."""
        return self.quadrature.cell_average(function, **options)

    # ----------------------------------------------------------------- protocol
    def commit(self) -> None:
        """No internal state: nothing to commit (protocol no-op)."""

    def revert(self) -> None:
        """No internal state: nothing to revert (protocol no-op)."""

    def increments(self) -> tuple:
        """The UFL increment x_live - x0_live of the surrogate (the vector, then each of its
        components: a form may hold either), zero at the iterate of the last update
        (``LawNewtonSolver`` drops it from F and J there)."""
        return (self._increment, *self._increment.ufl_operands)

    def check_fixed(self, unknowns) -> None:
        """Raise ValueError if an input marked fixed depends on ``unknowns`` (Function(s))."""
        targets = set(unknowns if isinstance(unknowns, Sequence) else [unknowns])
        for i, name in enumerate(self.input_names):
            if i in self.live or i in self._literal:
                continue
            touched = targets & set(ufl.algorithms.extract_coefficients(self.inputs[name]))
            if touched:
                raise ValueError(
                    f"input '{name}' is marked fixed but depends on the unknown "
                    f"{[f.name for f in touched]}; its derivative would be dropped. Remove it "
                    "from fixed=."
                )

    # ----------------------------------------------------------------- training box
    def _local_box_statistics(self, values: np.ndarray) -> np.ndarray:
        """Rows: points outside (any input), points, then per input: outside count, min, max."""
        lo, hi = self._box[:, 0], self._box[:, 1]
        out = (values < lo) | (values > hi)  # (n, d)
        empty = values.shape[0] == 0
        return np.concatenate(
            [
                [float(out.any(1).sum()), float(values.shape[0])],
                out.sum(0).astype(np.float64),
                np.full(self.input_dim, np.inf) if empty else values.min(0),
                np.full(self.input_dim, -np.inf) if empty else values.max(0),
            ]
        )

    def _global_box_statistics(self):
        """Collective: (outside, total, per-input outside counts, mins, maxs) over all ranks."""
        d = self.input_dim
        if self._box_stats is None and self._box_values is not None:
            self._box_stats = self._local_box_statistics(self._box_values)
        local = self._box_stats if self._box_stats is not None else np.zeros(2 + 3 * d)
        comm = self.mesh.comm
        counts, mins, maxs = np.empty(2 + d), np.empty(d), np.empty(d)
        comm.Allreduce(np.ascontiguousarray(local[: 2 + d]), counts, op=MPI.SUM)
        comm.Allreduce(np.ascontiguousarray(local[2 + d : 2 + 2 * d]), mins, op=MPI.MIN)
        comm.Allreduce(np.ascontiguousarray(local[2 + 2 * d :]), maxs, op=MPI.MAX)
        return counts[0], counts[1], counts[2:], mins, maxs

    def fraction_outside_box(self) -> float:
        """Fraction of all quadrature points (all ranks) outside the training box at the last update.

        Collective; 0.0 when the potential has no ``training_box``.
        """
        if self._box is None:
            return 0.0
        outside, total, *_ = self._global_box_statistics()
        return float(outside / total) if total else 0.0

    def check_training_box(self) -> None:
        """Collective: per ``on_outside``, warn (rank 0; again only when the fraction doubles)
        or raise ValueError on every rank when points of the last update lie outside the box.

        The message names each input that left its interval: its range over the points, the
        trained interval and how far beyond it went (in % of the interval's width).
        """
        if self.on_outside == "ignore" or self._box is None:
            return
        outside, total, per_input, mins, maxs = self._global_box_statistics()
        if outside == 0:
            return
        fraction = outside / total
        parts = []
        for i, name in enumerate(self.input_names):
            if per_input[i]:
                low, high = self._trained[i]
                beyond = max(low - mins[i], maxs[i] - high, 0.0) / (high - low)
                parts.append(
                    f"{name} in [{mins[i]:.4g}, {maxs[i]:.4g}] (trained [{low:.4g}, {high:.4g}]; "
                    f"{int(per_input[i])} points, up to {100 * beyond:.1f}% of the width beyond)"
                )
        message = (
            f"{100 * fraction:.2f}% of the quadrature points ({int(outside)} of {int(total)}) lie "
            f"outside the model's training box; the law extrapolates there: {'; '.join(parts)}."
        )
        if self.on_outside == "raise":
            raise ValueError(
                message + " (on_outside='raise'; reduce the load or pass on_outside='warn')"
            )
        if fraction > 2 * self._warned_fraction:  # warn once, and again only if it doubles
            self._warned_fraction = fraction
            if self.mesh.comm.rank == 0:
                warnings.warn(message, TrainingBoxWarning, stacklevel=3)
