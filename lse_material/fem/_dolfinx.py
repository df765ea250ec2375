"""Import DOLFINx the one way this package does: ``dolfinx_solver`` (the pip wheel) first, if present.

Users with DOLFINx from conda or Docker have no ``dolfinx_solver``; that is fine.
"""

try:  # the dolfinx-solver-real wheel must be imported before dolfinx / petsc4py
    import dolfinx_solver  # noqa: F401
except ImportError:  # DOLFINx from conda, Docker or a source build
    pass

import dolfinx  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402, F401

__all__ = ["dolfinx"]
