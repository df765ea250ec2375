"""Linear-solver presets for ``LawNewtonSolver``: ``"direct"`` (MUMPS) and ``"iterative"``.

A preset is PETSc options plus what options cannot say (index sets of the fields, the
rigid-body near-nullspace), set in code on the solver's KSP. ``solver_preset(name, space)``
picks it from the unknowns' function space:

- ``"direct"``: ``preonly`` + LU with MUMPS (LawNewtonSolver's defaults).
- ``"iterative"`` on a displacement space (a P1 vector space, the metamaterial bar): GMRES,
  right-preconditioned with smoothed-aggregation AMG (PETSc GAMG) given the rigid-body modes
  as near-nullspace (``rigid_body_modes``).
- ``"iterative"`` on the mixed space W = (u, c, μ) of the spinodal case: GMRES with a
  multiplicative (block Gauss–Seidel) fieldsplit between u and (c, μ): GAMG with the
  rigid-body near-nullspace on the u block, and on the Cahn–Hilliard block (c, μ) the PRESB
  preconditioner (``CahnHilliardPRESB``: two GAMG V-cycles on M + √(m Δt κ) K).

Why [ours]: the tangents of multi-well laws are indefinite (non-convex ψ between wells, the
saddle-point (c, μ) coupling), so CG and MINRES are out: GMRES. PETSc in the
``dolfinx-solver-real`` wheel has GAMG, MUMPS and SuperLU_dist, no hypre: GAMG is the
algebraic multigrid at hand; for elasticity it needs the rigid-body modes to coarsen
well. One V-cycle per block application (``preonly``) keeps the preconditioner a fixed
linear operator, so plain (not flexible) GMRES is right. The Krylov tolerance
``ksp_rtol = 1e-8`` on the unpreconditioned residual (right preconditioning) keeps Newton's
convergence quadratic down to the SNES tolerances of the cases (1e-9 to 1e-10).

The Cahn–Hilliard block, measured [ours] (2-D spinodal, analytic ψ, first 3 steps, Krylov
iterations per Newton step): ASM/ILU(0) 25–200 and Newton failures (steps cut) at mesh 32;
GAMG on the whole 2 × 2 block did not converge in 1000; a nested Schur fieldsplit (μ first,
``selfp``, GAMG on the Schur approximation, Jacobi on the mass) 45–63 at mesh 32; PRESB 16–19
at mesh 32, 16–21 at 64, 22–25 at 128. So PRESB. The outer split is multiplicative (u first,
then (c, μ) with the updated u) [ours]: not compared with additive or Schur at strong
coupling, since u stays 0 in the early steps of the case (E = 0 is an equilibrium at any c).

Options given by the user (``--petsc KEY=VALUE``, ``parse_petsc_options``) go over the
preset's. The options are written into each case's ``summary.json``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc  # lse_material.fem imports dolfinx_solver first

__all__ = [
    "CH_BLOCK",
    "CahnHilliardPRESB",
    "SolverName",
    "SolverPreset",
    "krylov_per_newton",
    "parse_petsc_options",
    "peak_memory_gb",
    "rigid_body_modes",
    "solver_preset",
    "split_index_sets",
]

SolverName = Literal["direct", "iterative"]

_KRYLOV = {
    "ksp_type": "gmres",
    "ksp_pc_side": "right",
    "ksp_norm_type": "unpreconditioned",
    "ksp_gmres_restart": 200,
    "ksp_rtol": 1e-8,
    "ksp_atol": 1e-14,
    "ksp_max_it": 1000,
}
_GAMG = {"pc_type": "gamg", "pc_gamg_type": "agg", "pc_gamg_agg_nsmooths": 1}

# The Cahn–Hilliard block (c, μ), [ours]: the PRESB preconditioner (``CahnHilliardPRESB``),
# two V-cycles of GAMG on H = M + √(m Δt κ) K per application.
CH_BLOCK = {
    "ksp_type": "preonly",
    "pc_type": "python",
    "pc_python_type": f"{__name__}.CahnHilliardPRESB",
}


class SolverPreset(NamedTuple):
    """name: "direct" or "iterative"; options: PETSc options (no prefix), merged over
    ``LawNewtonSolver.DEFAULT_OPTIONS`` and under the user's; configure(problem): sets what
    options cannot (index sets, near-nullspace) on the built ``NonlinearProblem``, or None."""

    name: str
    options: dict
    configure: Callable | None = None


def parse_petsc_options(items: Sequence[str] | None, *, option: str = "petsc") -> dict[str, str]:
    """``["ksp_rtol=1e-6", "pc_type=gamg"]`` -> {"ksp_rtol": "1e-6", "pc_type": "gamg"}.

    A leading ``-`` on the key is dropped. Raises ValueError naming the item when it is not
    KEY=VALUE with KEY made of letters, digits and underscores and a non-empty VALUE.
    """
    out = {}
    for item in [items] if isinstance(items, str) else items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_]+", key) or not value.strip():
            raise ValueError(
                f"--{option} takes KEY=VALUE items (a PETSc option without its prefix, e.g. "
                f"ksp_rtol=1e-6), got {item!r}."
            )
        out[key] = value.strip()
    return out


def rigid_body_modes(V) -> PETSc.NullSpace:
    """The rigid-body modes of a P1 vector space V (block size = dim) as a PETSc NullSpace.

    2-D: 2 translations and 1 rotation; 3-D: 3 and 3. Orthonormalised; each vector has V's
    owned layout (``size_local * dim`` entries per rank, block size dim).
    """
    dim = V.dofmap.index_map_bs
    if dim not in (2, 3) or V.mesh.geometry.dim < dim:
        raise ValueError(f"rigid_body_modes needs a 2-D or 3-D vector space, got block size {dim}.")
    n = V.dofmap.index_map.size_local
    x = V.tabulate_dof_coordinates()[:n]
    modes = np.zeros((3 if dim == 2 else 6, n, dim))
    for i in range(dim):
        modes[i, :, i] = 1.0
    rotations = [(0, 1)] if dim == 2 else [(0, 1), (1, 2), (2, 0)]
    for k, (a, b) in enumerate(rotations):  # rotation in the (a, b) plane: (-x_b, x_a)
        modes[dim + k, :, a] = -x[:, b]
        modes[dim + k, :, b] = x[:, a]
    comm = V.mesh.comm
    vectors = []
    for mode in modes.reshape(len(modes), -1):  # Gram–Schmidt, global inner products
        for q in vectors:
            mode -= comm.allreduce(float(mode @ q), op=MPI.SUM) * q
        mode /= np.sqrt(comm.allreduce(float(mode @ mode), op=MPI.SUM))
        vectors.append(mode)
    petsc = [PETSc.Vec().createWithArray(v, bsize=dim, comm=comm) for v in vectors]
    return PETSc.NullSpace().create(vectors=petsc, comm=comm)


def split_index_sets(W) -> tuple[PETSc.IS, PETSc.IS, object]:
    """Index sets of W = (u, c, μ): the u dofs (block size dim) and the (c, μ) dofs interleaved
    per node (block size 2), global numbering, owned dofs only; and the collapsed u space.
    """
    index_map = W.dofmap.index_map
    if W.dofmap.index_map_bs != 1:
        raise ValueError("split_index_sets expects a mixed space (block size 1).")
    start, owned = index_map.local_range[0], index_map.size_local
    (V, u_map), *scalars = [_collapse(W.sub(i)) for i in range(3)]
    n_u = V.dofmap.index_map.size_local * V.dofmap.index_map_bs
    n_c = scalars[0][0].dofmap.index_map.size_local
    u_dofs = u_map[:n_u]
    ch_dofs = np.column_stack([m[:n_c] for _, m in scalars]).ravel()
    if (u_dofs >= owned).any() or (ch_dofs >= owned).any():  # the collapsed spaces' owned dofs
        raise RuntimeError("collapsed sub-space owns a dof its parent does not")
    comm = W.mesh.comm
    is_u = PETSc.IS().createGeneral((start + u_dofs).astype(PETSc.IntType), comm=comm)
    is_u.setBlockSize(V.dofmap.index_map_bs)
    is_ch = PETSc.IS().createGeneral((start + ch_dofs).astype(PETSc.IntType), comm=comm)
    is_ch.setBlockSize(2)
    return is_u, is_ch, V


def _collapse(sub) -> tuple[object, np.ndarray]:
    """``sub.collapse()`` as (space, parent dof of each of its dofs); DOLFINx 0.11 returns the
    map as a list of arrays."""
    space, parent = sub.collapse()
    return space, np.concatenate([np.asarray(m).ravel() for m in parent]) if isinstance(
        parent, list
    ) else np.asarray(parent)


def _configure_fieldsplit(W):
    def configure(problem) -> None:
        is_u, is_ch, V = split_index_sets(W)
        is_u.compose("nearnullspace", rigid_body_modes(V))  # PCFIELDSPLIT hands it to the block
        pc = problem.solver.getKSP().getPC()
        pc.setFieldSplitIS(("u", is_u), ("ch", is_ch))

    return configure


def _configure_elasticity(V):
    def configure(problem) -> None:
        problem.A.setNearNullSpace(rigid_body_modes(V))

    return configure


def krylov_per_newton(history: dict) -> float:
    """Krylov iterations per Newton iteration over a run's converged solves: the sums of its
    ``krylov_iterations`` and ``newton_iterations`` histories (0 without iterations)."""
    newton = sum(history["newton_iterations"])
    return sum(history["krylov_iterations"]) / newton if newton else 0.0


def peak_memory_gb(comm) -> float:
    """The peak resident memory of this process summed over the ranks of ``comm``, in GB
    (collective)."""
    import resource

    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB -> GB
    return comm.allreduce(mine, op=MPI.SUM)


def solver_preset(name: SolverName, space, *, kappa_over_mobility: float = 1.0) -> SolverPreset:
    """The preset ``name`` for unknowns in ``space``: a P1 vector space (displacement only)
    or the mixed space (u, c, μ) of the spinodal case (``kappa_over_mobility``: κ/m of its
    Cahn–Hilliard block, for ``CahnHilliardPRESB``). See the module docstring."""
    if name == "direct":
        return SolverPreset("direct", {})
    if name != "iterative":
        raise ValueError(f"solver must be 'direct' or 'iterative', got {name!r}.")
    if space.dofmap.index_map_bs > 1:  # a vector space: elasticity
        return SolverPreset("iterative", {**_KRYLOV, **_GAMG}, _configure_elasticity(space))
    if space.num_sub_spaces != 3:
        raise ValueError(
            f"the iterative preset needs a P1 vector space or the mixed space (u, c, mu); got a "
            f"space with {space.num_sub_spaces} sub-spaces."
        )
    options = {
        **_KRYLOV,
        "pc_type": "fieldsplit",
        "pc_fieldsplit_type": "multiplicative",
        **{f"fieldsplit_u_{k}": v for k, v in {"ksp_type": "preonly", **_GAMG}.items()},
        **{f"fieldsplit_ch_{k}": v for k, v in CH_BLOCK.items()},
        "fieldsplit_ch_presb_kappa_over_mobility": kappa_over_mobility,
    }
    return SolverPreset("iterative", options, _configure_fieldsplit(space))


class CahnHilliardPRESB:
    """PETSc Python PC: the PRESB preconditioner of the Cahn–Hilliard block (c, μ).

    The block, fields interleaved per node (c_0, μ_0, c_1, μ_1, ...; ``split_index_sets``), is
    ``[[M/Δt, m K], [-(κ K + ψ_cc M), M]]`` (rows: the c equation, the μ equation; M the mass and
    K the stiffness matrix of P1, m the mobility). With c = x, μ = -s y, s = √(κ/(m Δt)) and the
    rows scaled by Δt and -1/s it reads ``[[M, -βK], [βK + δM, M]]``, β = √(m Δt κ). PRESB
    (Axelsson, Boyanova, Kronbichler, Neytcheva, Wu 2013) drops δ (the law's ψ_cc) and
    preconditions with ``[[M, -βK], [βK, M + 2βK]]``, whose inverse costs two solves with
    H = M + βK: SPD and Laplacian-like, one V-cycle of GAMG each. Without δ the eigenvalues of
    the preconditioned block lie in [1/2, 1], independent of the mesh and of Δt.

    Everything is read from the block itself: M = the (μ, μ) block, Δt = Σ diag M / Σ diag
    of the (c, c) block, βK = √(Δt κ/m) · the (c, μ) block; only κ/m is an option,
    ``<prefix>presb_kappa_over_mobility`` (default 1). The GAMG on H takes options under
    ``<prefix>presb_``. M and K do not change between Newton iterations: H and its GAMG are
    rebuilt only when Δt does.
    """

    dt: float | None = None

    def setUp(self, pc) -> None:
        A, _ = pc.getOperators()
        prefix = pc.getOptionsPrefix() or ""
        ratio = PETSc.Options(prefix).getReal("presb_kappa_over_mobility", 1.0)
        if not ratio > 0:
            raise ValueError(f"{prefix}presb_kappa_over_mobility must be > 0, got {ratio}.")
        start, end = A.getOwnershipRange()
        comm = A.getComm()
        rows = [
            PETSc.IS().createStride((end - start) // 2, start + i, 2, comm=comm) for i in (0, 1)
        ]
        self.mass = A.createSubMatrix(rows[1], rows[1])
        coupling = A.createSubMatrix(rows[0], rows[1])
        dt = self.mass.getDiagonal().sum() / A.createSubMatrix(rows[0], rows[0]).getDiagonal().sum()
        if self.dt is not None and abs(dt - self.dt) <= 1e-12 * dt:
            return  # the same H: keep its GAMG hierarchy
        self.dt, self.s = dt, np.sqrt(ratio / dt)
        H = self.mass.copy()
        H.axpy(np.sqrt(dt * ratio), coupling, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        self.ksp = PETSc.KSP().create(comm)
        self.ksp.setOptionsPrefix(prefix + "presb_")
        self.ksp.setOperators(H)
        self.ksp.setType("preonly")
        self.ksp.getPC().setType("gamg")
        self.ksp.setFromOptions()
        self.ksp.setUp()
        self.f, self.h = H.createVecs()
        self.g, self.y = H.createVecs()

    def apply(self, pc, x, y) -> None:
        """y = P⁻¹ x: h = H⁻¹(f + g), y' = H⁻¹(M h - f), c = h - y', μ = -s y'."""
        values = x.getArray(readonly=True)
        f, g, h, yy = self.f, self.g, self.h, self.y
        f.setArray(self.dt * values[0::2])
        g.setArray(-values[1::2] / self.s)
        g.axpy(1.0, f)
        self.ksp.solve(g, h)  # h = H⁻¹(f + g)
        self.mass.mult(h, g)
        g.axpy(-1.0, f)
        self.ksp.solve(g, yy)  # y' = H⁻¹(M h - f)
        out = y.getArray()
        out[0::2] = h.getArray(readonly=True) - yy.getArray(readonly=True)
        out[1::2] = -self.s * yy.getArray(readonly=True)
