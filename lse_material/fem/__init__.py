"""The DOLFINx bridge: laws at quadrature points, a Newton driver that refreshes them.

Imported explicitly (``import lse_material.fem``); needs DOLFINx 0.11 (the ``fem`` extra, or
your own DOLFINx from conda/Docker). Importing it imports ``dolfinx_solver`` (the pip wheel)
first where present, which DOLFINx from that wheel needs: after ``import lse_material.fem`` a
plain ``import dolfinx`` works, and ``from lse_material.fem import dolfinx`` is the same module.

- ``QuadratureLaw``: a potential at the quadrature points of a mesh, inputs by name, prescribed
  fields ``fixed=``, exposed to UFL as the second-order Taylor surrogate of ψ at the current
  iterate (exact residual and Jacobian).
- ``QuadratureStateLaw``: an internal-state law (trial / commit / revert) as a linearised flux.
- ``QuadraturePoints``: the layer under both (owned cells, points and weights, Functions,
  fill/read through the dofmap, DG0 cell averages, collective finite checks).
- ``Law``: the protocol the driver calls (update, check_training_box, commit, revert,
  check_fixed, increments).
- ``LawNewtonSolver``: PETSc SNES Newton that updates the laws before every assembly;
  returns a ``NewtonResult`` with the residual history. ``solve_with_cuts``: a step that is
  halved and retried until Newton converges (laws reverted on failure, committed on success).
- ``ReactionForce``: the reaction on a Dirichlet boundary from the residual form.
- ``solver_preset`` (``lse_material.fem.solvers``): the linear-solver presets "direct" (MUMPS)
  and "iterative" (GMRES; GAMG with the rigid-body near-nullspace, fieldsplit u | (c, μ) with
  the PRESB Cahn–Hilliard block), passed as ``LawNewtonSolver(preset=...)``.
- ``ArcLengthSolver``: arc-length continuation (PETSc SNESNEWTONAL) through limit points, the
  laws refreshed as in ``LawNewtonSolver``; ``trace`` returns an ``ArcLengthPath`` of
  ``ArcLengthPoint`` (load, measure, energy, smallest tangent eigenvalue) and its
  ``CriticalPoint`` list (limit points, bifurcations).
- ``CheckpointWriter`` / ``read_checkpoint``, ``read_functions``, ``read_state_law``: checkpoint
  and restart (mesh, Functions, quadrature state, step state) with io4dolfinx, on any ranks.
"""

from lse_material.fem._dolfinx import dolfinx
from lse_material.fem.arclength import (
    ArcLengthPath,
    ArcLengthPoint,
    ArcLengthSolver,
    CriticalPoint,
)
from lse_material.fem.checkpoint import (
    Checkpoint,
    CheckpointWriter,
    read_checkpoint,
    read_functions,
    read_state_law,
    write_checkpoint,
)
from lse_material.fem.newton import (
    CutSolve,
    LawNewtonSolver,
    NewtonResult,
    convergence_orders,
    solve_with_cuts,
)
from lse_material.fem.points import QuadraturePoints
from lse_material.fem.protocol import Law
from lse_material.fem.quadrature import QuadratureLaw, inputs_to_tensor
from lse_material.fem.reaction import ReactionForce
from lse_material.fem.solvers import (
    SolverPreset,
    krylov_per_newton,
    parse_petsc_options,
    rigid_body_modes,
    solver_preset,
)
from lse_material.fem.state_law import QuadratureStateLaw

__all__ = [
    "ArcLengthPath",
    "ArcLengthPoint",
    "ArcLengthSolver",
    "Checkpoint",
    "CheckpointWriter",
    "CriticalPoint",
    "CutSolve",
    "Law",
    "LawNewtonSolver",
    "NewtonResult",
    "QuadratureLaw",
    "QuadraturePoints",
    "QuadratureStateLaw",
    "ReactionForce",
    "SolverPreset",
    "convergence_orders",
    "dolfinx",
    "inputs_to_tensor",
    "krylov_per_newton",
    "parse_petsc_options",
    "rigid_body_modes",
    "read_checkpoint",
    "read_functions",
    "read_state_law",
    "solve_with_cuts",
    "solver_preset",
    "write_checkpoint",
]
