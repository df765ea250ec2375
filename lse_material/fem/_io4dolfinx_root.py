"""An io4dolfinx backend for a serial h5py under MPI: writes gathered to rank 0, reads per rank.

io4dolfinx (the ecosystem's checkpoint library) writes and reads through a backend module;
``backend="lse_material.fem._io4dolfinx_root"`` selects this one. Its file is io4dolfinx's h5py
layout, written by io4dolfinx's own h5py backend, so ``io4dolfinx`` with ``backend="h5py"``
reads it too (serially, or in parallel with an MPI-enabled h5py).

Why [ours]: io4dolfinx's h5py backend needs h5py built with MPI (``driver="mpio"``) as soon
as a communicator has more than one rank, and the h5py wheels on PyPI have no MPI. So:

- a write gathers each rank's rows (``MeshData`` / ``FunctionData`` carry each rank's slice
  and its global position) to rank 0, which writes them with the h5py backend on
  ``MPI.COMM_SELF``; an error on rank 0 is raised on every rank (no rank left waiting);
- a read opens the file read-only on every rank (a serial h5py can do that), reads the dataset
  with the h5py backend on ``COMM_SELF`` and returns this rank's slice in io4dolfinx's parallel
  split (``io4dolfinx.utils.compute_local_range``), which is what ``ReadMode.parallel`` means.

Every rank reads whole datasets (a copy per rank, sized by the checkpoint, not by the rank's
share): fine for checkpoints of this package's cases, not for meshes of 10⁸ cells.

Implemented: the functions ``io4dolfinx.write_mesh_input_order``,
``write_function_on_input_mesh``, ``read_mesh`` and ``read_function`` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from io4dolfinx.backends import FileMode, ReadMode
from io4dolfinx.backends.h5py import backend as h5
from io4dolfinx.structures import FunctionData, MeshData, ReadMeshData
from io4dolfinx.utils import compute_local_range
from mpi4py import MPI

from lse_material.fem._dolfinx import dolfinx

__all__ = [
    "get_default_backend_args",
    "read_cell_perms",
    "read_dofmap",
    "read_dofs",
    "read_mesh_data",
    "read_mode",
    "write_function",
    "write_mesh",
]

read_mode = ReadMode.parallel
get_default_backend_args = h5.get_default_backend_args


def _gather(comm: MPI.Comm, local: np.ndarray, start: int, total: int) -> np.ndarray | None:
    """The global array ``(total, ...)`` on rank 0 from each rank's rows at ``start``; None elsewhere."""
    parts = comm.gather((int(start), np.ascontiguousarray(local)), root=0)
    if comm.rank != 0:
        return None
    out = np.empty((int(total), *local.shape[1:]), dtype=local.dtype)
    for begin, rows in parts:
        out[begin : begin + rows.shape[0]] = rows
    return out


def run_on_root(comm: MPI.Comm, write: Callable[[], None], filename) -> None:
    """Run ``write`` on rank 0; collective: every rank raises (RuntimeError) if it failed."""
    error = None
    if comm.rank == 0:
        try:
            write()
        except Exception as exc:  # reported to every rank below, then raised
            error = exc
    message = comm.bcast(None if error is None else f"{type(error).__name__}: {error}", root=0)
    if message is not None:
        raise RuntimeError(
            f"{filename}: writing the checkpoint failed on rank 0: {message}"
        ) from error


def write_mesh(
    filename: Path | str,
    comm: MPI.Comm,
    mesh: MeshData,
    backend_args: dict[str, Any] | None = None,
    mode: FileMode = FileMode.write,
    time: float = 0.0,
) -> None:
    """Collective: the mesh's geometry and topology gathered to rank 0 and written there."""
    x = _gather(comm, mesh.local_geometry, mesh.local_geometry_pos[0], mesh.num_nodes_global)
    cells = _gather(comm, mesh.local_topology, mesh.local_topology_pos[0], mesh.num_cells_global)
    whole = dataclasses.replace(
        mesh,
        local_geometry=x,
        local_geometry_pos=(0, mesh.num_nodes_global),
        local_topology=cells,
        local_topology_pos=(0, mesh.num_cells_global),
        store_partition=False,  # a partition is of no use on another number of ranks
    )
    run_on_root(
        comm,
        lambda: h5.write_mesh(filename, MPI.COMM_SELF, whole, backend_args, mode, time),
        filename,
    )


def write_function(
    filename: Path | str,
    comm: MPI.Comm,
    u: FunctionData,
    time: float,
    mode: FileMode,
    backend_args: dict[str, Any] | None = None,
) -> None:
    """Collective: a Function's dofmap, cell permutations and values gathered to rank 0, written."""
    first_cell, n_cells = u.local_cell_range[0], u.num_cells_global
    # Each rank's offsets run over its cells and one past: overlapping ends hold the same value.
    whole = dataclasses.replace(
        u,
        cell_permutations=_gather(comm, u.cell_permutations, first_cell, n_cells),
        local_cell_range=(0, n_cells),
        dofmap_array=_gather(comm, u.dofmap_array, u.dofmap_range[0], u.global_dofs_in_dofmap),
        dofmap_offsets=_gather(comm, u.dofmap_offsets, first_cell, n_cells + 1),
        dofmap_range=(0, u.global_dofs_in_dofmap),
        values=_gather(comm, u.values, u.dof_range[0], u.num_dofs_global),
        dof_range=(0, u.num_dofs_global),
    )
    run_on_root(
        comm,
        lambda: h5.write_function(filename, MPI.COMM_SELF, whole, time, mode, backend_args),
        filename,
    )


def read_whole_mesh(filename: Path | str, time: float = 0.0, backend_args=None) -> ReadMeshData:
    """All cells ``(n_cells, nodes per cell)`` and nodes ``(n_nodes, gdim)`` of a checkpoint's mesh."""
    return h5.read_mesh_data(filename, MPI.COMM_SELF, time, False, backend_args)


def read_mesh_data(
    filename: Path | str,
    comm: MPI.Comm,
    time: str | float | None = 0.0,
    read_from_partition: bool = False,
    backend_args: dict[str, Any] | None = None,
) -> ReadMeshData:
    """This rank's share of the cells and nodes (no stored partition: see ``write_mesh``)."""
    if read_from_partition:
        raise ValueError(
            f"{filename}: this backend stores no partition; read with read_from_partition=False."
        )
    whole = read_whole_mesh(filename, time, backend_args)
    cells = whole.cells[slice(*compute_local_range(comm, whole.cells.shape[0]))]
    x = whole.x[slice(*compute_local_range(comm, whole.x.shape[0]))]
    return dataclasses.replace(whole, cells=cells, x=x)


def read_dofmap(
    filename: Path | str, comm: MPI.Comm, name: str, backend_args: dict[str, Any] | None
) -> dolfinx.graph.AdjacencyList:
    """The dofmap of this rank's share of the input cells (global dof numbers)."""
    whole = h5.read_dofmap(filename, MPI.COMM_SELF, name, backend_args)
    offsets = np.asarray(whole.offsets, dtype=np.int64)
    start, stop = compute_local_range(comm, offsets.size - 1)
    data = np.asarray(whole.array)[offsets[start] : offsets[stop]]
    return dolfinx.graph.adjacencylist(
        data, (offsets[start : stop + 1] - offsets[start]).astype(np.int32)
    )


def read_dofs(
    filename: Path | str,
    comm: MPI.Comm,
    name: str,
    time: float,
    backend_args: dict[str, Any] | None,
) -> tuple[np.ndarray, int]:
    """This rank's share of a Function's values and the global index of its first."""
    values, _ = h5.read_dofs(filename, MPI.COMM_SELF, name, time, backend_args)
    start, stop = compute_local_range(comm, values.shape[0])
    return values[start:stop], start


def read_cell_perms(
    comm: MPI.Comm, filename: Path | str, backend_args: dict[str, Any] | None
) -> np.ndarray:
    """This rank's share of the input cells' permutation info."""
    perms = h5.read_cell_perms(MPI.COMM_SELF, filename, backend_args)
    return perms[slice(*compute_local_range(comm, perms.shape[0]))]
