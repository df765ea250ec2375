"""The quadrature-point layer under every law: owned cells, points and weights, Functions, checks.

``QuadraturePoints(mesh, quadrature_degree)`` is what ``QuadratureLaw`` and
``QuadratureStateLaw`` stand on, and what a law of your own can use:

- the cells this rank owns (local indices ``0 .. n_cells - 1``), the reference quadrature
  points ``(points_per_cell, tdim)`` and weights, and the measure ``dx`` of that rule;
- ``function(shape, name)``: a quadrature-space Function of value shape ``shape``;
- ``evaluate(expression)``: a UFL expression at the owned points, ``(n_points, size)``;
- ``fill(function, data)`` / ``read(function)``: owned point values in and out, through the
  dofmap (DOLFINx numbers quadrature dofs cell by cell today; the layer does not rely on it);
- ``cell_means(function)`` / ``cell_average(function)``: the quadrature-weighted cell mean,
  as an array ``(n_cells, value_size)`` or as a DG0 Function for VTX/XDMF output;
- ``raise_if_non_finite(what, columns)``: the collective finite check (every rank raises).

Point layout: quadrature point ``k`` of owned cell ``i`` is row ``i * points_per_cell + k``.
A rank that owns no cells has no points: every method works there and takes part in every
collective, so partitions need not be balanced.
"""

from __future__ import annotations

from collections.abc import Mapping

import basix.ufl
import numpy as np
import ufl
from mpi4py import MPI

from lse_material.fem._dolfinx import dolfinx

__all__ = ["QuadraturePoints"]


class QuadraturePoints:
    """The quadrature points of the cells this rank owns (see the module docstring).

    Args:
        mesh: the dolfinx mesh.
        quadrature_degree: degree of the quadrature rule (use ``self.dx`` in forms).
    """

    def __init__(self, mesh: dolfinx.mesh.Mesh, quadrature_degree: int):
        self.mesh, self.quadrature_degree = mesh, int(quadrature_degree)
        self.dx = ufl.Measure(
            "dx", domain=mesh, metadata={"quadrature_degree": self.quadrature_degree}
        )
        element = self._element(())
        points, weights = element.custom_quadrature()
        self.points = points  # (points_per_cell, tdim), reference cell
        self.weights = weights / weights.sum()  # affine cells: the reference weights average
        self.points_per_cell = points.shape[0]
        n_cells = mesh.topology.index_map(mesh.topology.dim).size_local
        self.cells = np.arange(n_cells, dtype=np.int32)  # owned cells only
        space = dolfinx.fem.functionspace(mesh, element)
        dofs = space.dofmap.list[:n_cells].ravel()  # (n_points,)
        self._point_dofs = None if np.array_equal(dofs, np.arange(dofs.size)) else dofs

    def _element(self, shape: tuple[int, ...]):
        return basix.ufl.quadrature_element(
            self.mesh.basix_cell(), value_shape=shape, degree=self.quadrature_degree
        )

    @property
    def n_cells(self) -> int:
        """Cells this rank owns (may be 0)."""
        return self.cells.size

    @property
    def n_points(self) -> int:
        """Quadrature points on the cells this rank owns (may be 0)."""
        return self.cells.size * self.points_per_cell

    def function(self, shape: tuple[int, ...], name: str) -> dolfinx.fem.Function:
        """A quadrature-space Function of value shape ``shape`` (``()`` scalar, ``(k,)``, ``(k, k)``)."""
        space = dolfinx.fem.functionspace(self.mesh, self._element(tuple(shape)))
        return dolfinx.fem.Function(space, name=name)

    def expression(self, expr: ufl.core.expr.Expr) -> dolfinx.fem.Expression:
        """``expr`` compiled for evaluation at the quadrature points (pass it to ``evaluate``)."""
        return dolfinx.fem.Expression(expr, self.points)

    def evaluate(self, expression: dolfinx.fem.Expression, size: int) -> np.ndarray:
        """A compiled expression of value size ``size`` at the owned points: ``(n_points, size)``."""
        values = expression.eval(self.mesh, self.cells)
        return np.ascontiguousarray(values, dtype=np.float64).reshape(self.n_points, size)

    def fill(self, function: dolfinx.fem.Function, data: np.ndarray) -> None:
        """Write ``data (n_points, ...)`` into a quadrature Function and update its ghosts."""
        bs = function.function_space.dofmap.bs
        block = np.asarray(data, dtype=np.float64).reshape(self.n_points, bs)
        if self._point_dofs is None:  # DOLFINx numbers quadrature dofs cell by cell
            function.x.array[: block.size] = block.ravel()
        else:
            function.x.array.reshape(-1, bs)[self._point_dofs] = block
        function.x.scatter_forward()

    def read(self, function: dolfinx.fem.Function) -> np.ndarray:
        """The owned values of a quadrature Function as ``(n_points, value_size)`` (a view or copy)."""
        bs = function.function_space.dofmap.bs
        array = function.x.array.reshape(-1, bs)
        return array[: self.n_points] if self._point_dofs is None else array[self._point_dofs]

    def cell_means(self, function: dolfinx.fem.Function) -> np.ndarray:
        """Quadrature-weighted mean over each owned cell, ``(n_cells, value_size)``.

        The exact cell average on affine cells.
        """
        bs = function.function_space.dofmap.bs
        values = self.read(function).reshape(self.n_cells, self.points_per_cell, bs)
        return np.einsum("q,cqk->ck", self.weights, values)

    def dg0(self, shape: tuple[int, ...] = (), *, name: str) -> dolfinx.fem.Function:
        """A DG0 Function of value shape ``shape`` (for ``cell_average(..., out=)``)."""
        family = ("DG", 0, tuple(shape)) if shape else ("DG", 0)
        return dolfinx.fem.Function(dolfinx.fem.functionspace(self.mesh, family), name=name)

    def set_cells(self, out: dolfinx.fem.Function, values: np.ndarray) -> None:
        """Write ``values (n_cells, value_size)`` into the owned cells of a DG0 Function."""
        bs = out.function_space.dofmap.bs
        cell_dofs = out.function_space.dofmap.list[: self.n_cells, 0]
        out.x.array.reshape(-1, bs)[cell_dofs] = np.asarray(values).reshape(self.n_cells, bs)
        out.x.scatter_forward()

    def cell_average(
        self,
        function: dolfinx.fem.Function,
        *,
        out: dolfinx.fem.Function | None = None,
        name: str | None = None,
    ) -> dolfinx.fem.Function:
        """The cell means of a quadrature Function as a DG0 Function of the same value shape.

        ``out``: a DG0 Function to write into (e.g. one a VTXWriter holds); by default a new one.
        """
        if out is None:
            shape = function.function_space.value_shape
            out = self.dg0(shape, name=name or f"{function.name}_cell_mean")
        self.set_cells(out, self.cell_means(function))
        return out

    def global_cells(self, local: np.ndarray) -> np.ndarray:
        """Global indices of owned cells given by local index."""
        index_map = self.mesh.topology.index_map(self.mesh.topology.dim)
        return index_map.local_to_global(np.asarray(local, dtype=np.int32))

    def raise_if_non_finite(self, what: str, columns: Mapping[str, np.ndarray], hint: str) -> None:
        """Collective: raise ValueError on every rank if any rank has a NaN or inf in ``columns``.

        ``columns``: name -> array ``(n_points, ...)`` (an input, or an output of the law). The
        message names the columns with non-finite values (over all ranks), the number of
        points, and on each rank the cells; ``hint`` says what to check. Costs one sum per
        array and one small allreduce when all is finite.
        """
        names = list(columns)
        bad = np.zeros(self.n_points, dtype=bool)
        counts = np.zeros(len(names) + 1, dtype=np.int64)
        for j, name in enumerate(names):
            a = np.asarray(columns[name])
            if not np.isfinite(a.sum()):
                rows = ~np.isfinite(a.reshape(self.n_points, -1)).all(1)
                counts[j] = np.count_nonzero(rows)
                bad |= rows
        counts[-1] = np.count_nonzero(bad)
        comm = self.mesh.comm
        total = comm.allreduce(counts, op=MPI.SUM)
        if total[-1] == 0:
            return
        which = ", ".join(f"{n} ({int(k)} points)" for n, k in zip(names, total) if k)
        here = "no such points on this rank"
        if counts[-1]:
            cells = np.unique(np.flatnonzero(bad) // self.points_per_cell).astype(np.int32)
            more = " ..." if cells.size > 10 else ""
            here = (
                f"{int(counts[-1])} of them in {cells.size} cells (global cell indices "
                f"{self.global_cells(cells[:10]).tolist()}{more}; local {cells[:10].tolist()}{more})"
            )
        raise ValueError(
            f"{what} at {int(total[-1])} quadrature points over {comm.size} rank(s), in "
            f"{which}; on rank {comm.rank}: {here}. The law's Functions keep their previous "
            f"values. {hint}"
        )
