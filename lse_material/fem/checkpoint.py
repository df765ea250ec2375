"""Checkpoint and restart of FE runs: the mesh, named Functions and the step state, on any ranks.

The ecosystem's checkpoint library, io4dolfinx, writes the mesh and the Functions (quadrature
Functions included) in the mesh's *input order* (``write_mesh_input_order``,
``write_function_on_input_mesh``). A restart rebuilds the mesh with the case's own constructor,
on any number of ranks, and ``read_function`` maps the values through the original cell
indices; on the same number of ranks the rebuilt mesh is the same partition, so a restarted run
repeats the uninterrupted computation (bit for bit serially; on several ranks as closely as two
identical runs agree, which is to roundoff). A checkpoint folder (``RUN/checkpoint/``) holds

- ``step-<n>.h5``: the mesh and the Functions (io4dolfinx's h5py layout; written through
  ``lse_material.fem._io4dolfinx_root``, see there why [ours]);
- ``state.json``: the step state (the case's options, t, Δt, step counters, the history so far,
  the model file's SHA-256, ...) and the name of its ``.h5`` file.

Atomic: each checkpoint writes a new ``.h5`` file, ``fsync``-s it, and only then replaces
``state.json`` (``lse_material.atomic.write_json``: temporary file + ``os.replace``), which
names the file to read; the previous ``.h5`` is deleted after that. A kill at any moment
leaves ``state.json`` naming a complete file.

- ``CheckpointWriter(out, mesh, functions, every=n)``: writes every ``n`` steps, timed;
- ``read_checkpoint(run, options=..., model_sha256=...)``: the latest checkpoint of a run,
  refused (ValueError naming the option) where the options or the model file differ;
- ``read_functions(checkpoint, mesh, functions)``: the Functions, after checking the mesh;
- ``read_state_law(checkpoint, law)``: a ``QuadratureStateLaw``'s committed strain and
  internal state (written as quadrature Functions by ``CheckpointWriter(..., state_law=law)``).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from mpi4py import MPI

from lse_material.atomic import write_json
from lse_material.fem._dolfinx import dolfinx
from lse_material.fem.solvers import krylov_per_newton, peak_memory_gb
from lse_material.fem.state_law import QuadratureStateLaw

__all__ = [
    "CHECKPOINT_FOLDER",
    "Checkpoint",
    "CheckpointWriter",
    "read_checkpoint",
    "read_functions",
    "read_state_law",
    "run_figures",
    "run_header",
    "state_law_functions",
    "write_checkpoint",
]

CHECKPOINT_FOLDER = "checkpoint"
STATE_FILE = "state.json"
FORMAT = "lse-material checkpoint 1"
BACKEND = "lse_material.fem._io4dolfinx_root"
INSTALL_HINT = (
    "checkpoints need io4dolfinx and h5py: pip install h5py, then "
    "pip install --no-deps io4dolfinx fenicsx-compat (make venv does both)."
)


class Checkpoint(NamedTuple):
    """A checkpoint on disk: its ``folder``, its ``data`` file (.h5) and its step ``state``."""

    folder: Path
    data: Path
    state: dict


def _io4dolfinx():
    """io4dolfinx, with this package's backend imported (ImportError with the install hint)."""
    try:
        import io4dolfinx

        importlib.import_module(BACKEND)
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return io4dolfinx


def write_checkpoint(
    folder: str | Path,
    mesh: dolfinx.mesh.Mesh,
    functions: Mapping[str, dolfinx.fem.Function],
    state: Mapping[str, Any],
    *,
    step: int,
) -> Checkpoint:
    """Collective: write ``functions`` (name -> Function on ``mesh``) and ``state`` atomically.

    ``state`` must be JSON-ready. The previous checkpoint in ``folder`` is deleted once the new
    one is complete.
    """
    io4dolfinx = _io4dolfinx()
    from lse_material.fem._io4dolfinx_root import run_on_root

    comm = mesh.comm
    folder = Path(folder)
    data = folder / f"step-{step:08d}.h5"
    record = {"format": FORMAT, "data": data.name, "functions": list(functions), **state}

    def prepare() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        data.unlink(missing_ok=True)  # a file left by a write that was killed

    def publish() -> None:
        fd = os.open(data, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before state.json names it
        finally:
            os.close(fd)
        write_json(folder / STATE_FILE, record)
        for old in folder.glob("step-*.h5"):
            if old != data:
                old.unlink()

    run_on_root(comm, prepare, data)
    io4dolfinx.write_mesh_input_order(data, mesh, backend=BACKEND)
    for name, function in functions.items():
        io4dolfinx.write_function_on_input_mesh(data, function, name=name, backend=BACKEND)
    run_on_root(comm, publish, data)
    return Checkpoint(folder, data, record)


class CheckpointWriter:
    """Writes a run's checkpoints into ``out/checkpoint`` every ``every`` steps (0: never), timed.

    ``functions``: name -> Function, written as they are when called; ``state_law``: a
    ``QuadratureStateLaw`` whose committed strain and state are written too (refreshed before
    each write; ``read_state_law`` reads them back); ``header``: entries of every state written
    (e.g. the ``options`` and ``model_sha256`` that ``read_checkpoint`` checks). ``seconds``
    and ``count``: the time spent writing and how many were written.
    """

    def __init__(
        self,
        out: str | Path,
        mesh: dolfinx.mesh.Mesh,
        functions: Mapping[str, dolfinx.fem.Function],
        *,
        every: int,
        state_law: QuadratureStateLaw | None = None,
        header: Mapping[str, Any] | None = None,
    ):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(
                f"checkpoint_every must be a whole number of steps >= 0 (0: none), got {every!r}."
            )
        if every:
            _io4dolfinx()  # fail before the run, not at its first checkpoint (nor time the import)
        self.folder = Path(out) / CHECKPOINT_FOLDER
        self.mesh, self.every, self.state_law = mesh, every, state_law
        self.functions, self.header = dict(functions), dict(header or {})
        if state_law is not None:
            self.functions |= state_law_functions(state_law)
        self.seconds, self.count, self.step = 0.0, 0, None  # step: of the last checkpoint

    def __call__(self, step: int, state: Mapping[str, Any], *, last: bool = False) -> bool:
        """Write if ``step`` is a multiple of ``every`` (or ``last``, the run's final step).

        Returns whether it wrote; prints one line on rank 0 when it did.
        """
        if not self.every or step == self.step or (step % self.every and not last):
            return False
        start = time.perf_counter()
        if self.state_law is not None:
            _fill_state_law_functions(self.state_law, self.functions)
        state = {**self.header, **state, "step": step, "ranks": self.mesh.comm.size}
        write_checkpoint(self.folder, self.mesh, self.functions, state, step=step)
        self.seconds += time.perf_counter() - start
        self.count, self.step = self.count + 1, step
        if self.mesh.comm.rank == 0:
            print(f"checkpoint step {step:4d}  -> {self.folder}", flush=True)
        return True

    def summary(self, seconds_per_step: float) -> dict:
        """The checkpoint figures for ``summary.json``: count, mean seconds, fraction of a step."""
        mean = self.seconds / self.count if self.count else None
        fraction = mean / seconds_per_step if mean is not None and seconds_per_step > 0 else None
        return {
            "checkpoints": self.count,
            "checkpoint_seconds": mean,
            "checkpoint_fraction_of_step": fraction,
        }


def run_figures(
    space: dolfinx.fem.FunctionSpace,
    history: Mapping[str, Any],
    checkpoints: CheckpointWriter,
    *,
    seconds: float,
    loop_seconds: float,
    steps_run: int,
    solver: str,
    petsc_options: Mapping[str, Any],
    restart: str | Path | None,
    restart_step: int | None,
) -> dict:
    """The figures every case's ``summary.json`` holds about its run (collective).

    ``space``: the unknowns' space (its global dofs); ``history``: the case's per-step lists
    (``newton_iterations``, ``krylov_iterations``); ``seconds``: the whole run;
    ``loop_seconds``: its time stepping, of which ``steps_run`` steps ran in this process
    (a restart runs fewer); ``restart``/``restart_step``: the run and step it continued from.
    ``seconds_per_step`` leaves out the checkpoints' writing time, which the checkpoint
    figures report as a fraction of it.
    """
    seconds_per_step = (loop_seconds - checkpoints.seconds) / max(steps_run, 1)
    return {
        "ranks": space.mesh.comm.size,
        "dofs": int(space.dofmap.index_map.size_global * space.dofmap.index_map_bs),
        "seconds": seconds,
        "loop_seconds": loop_seconds,
        "seconds_per_step": seconds_per_step,
        "peak_memory_gb": peak_memory_gb(space.mesh.comm),
        "solver": solver,
        "petsc_options": dict(petsc_options),
        "krylov_per_newton": krylov_per_newton(history),
        "restarted_from": None if restart is None else {"run": str(restart), "step": restart_step},
        **checkpoints.summary(seconds_per_step),
    }


def run_header(case: str, model: str | Path | None, **options: Any) -> dict:
    """The ``header`` of a run's checkpoints: what a restart must match (``read_checkpoint``).

    ``options``: the case's options that fix the problem (JSON-ready); ``model``: the model file
    (its SHA-256 is recorded: ``lse_material.modelfile.model_hash``), or None (no model file:
    an analytic or reference law).
    """
    from lse_material.modelfile import model_hash

    sha = None if model is None else model_hash(model)
    return {"options": {"case": case, **options}, "model_sha256": sha}


def read_checkpoint(
    run: str | Path, *, options: Mapping[str, Any], model_sha256: str | None
) -> Checkpoint:
    """The latest checkpoint of the run folder ``run`` (its ``checkpoint/state.json``).

    Refused with a ValueError naming what differs where the checkpoint's ``options`` (the
    case's options that fix the problem: compared as JSON) or model hash (None: no model file,
    e.g. an analytic law) are not this run's.
    """
    _io4dolfinx()  # before any output exists
    folder = Path(run) / CHECKPOINT_FOLDER
    path = folder / STATE_FILE
    if not path.is_file():
        raise ValueError(
            f"restart {run}: no checkpoint ({path} is missing); give the output folder of a run "
            "that had checkpoint_every > 0 (--checkpoint-every N)."
        )
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); the checkpoint is damaged.") from error
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a checkpoint of this version ({FORMAT!r}).")
    ours = json.loads(json.dumps(dict(options)))  # tuples -> lists, as stored
    theirs = state.get("options", {})
    for name in sorted(set(ours) | set(theirs)):
        if ours.get(name) != theirs.get(name):
            raise ValueError(
                f"restart {run}: the checkpoint was written with {name}={theirs.get(name)!r}, "
                f"this run has {name}={ours.get(name)!r}; restart with the same options."
            )
    if state.get("model_sha256") != model_sha256:
        raise ValueError(
            f"restart {run}: the checkpoint was written with the model file of SHA-256 "
            f"{state.get('model_sha256')}, this run's model has {model_sha256}; restart with "
            "the same model file (or start a new run without restart)."
        )
    data = folder / state["data"]
    if not data.is_file():
        raise ValueError(f"{path} names {data}, which is missing; the checkpoint is incomplete.")
    return Checkpoint(folder, data, state)


def read_functions(
    checkpoint: Checkpoint,
    mesh: dolfinx.mesh.Mesh,
    functions: Mapping[str, dolfinx.fem.Function],
) -> None:
    """Collective: fill ``functions`` (name in the checkpoint -> Function on ``mesh``).

    ``mesh`` must be the checkpoint's mesh rebuilt by the same constructor (any number of
    ranks): its nodes are checked against the stored ones (ValueError on every rank if not).
    """
    io4dolfinx = _io4dolfinx()
    _check_mesh(checkpoint.data, mesh)
    missing = sorted(set(functions) - set(checkpoint.state["functions"]))
    if missing:
        raise ValueError(
            f"{checkpoint.data}: no function {missing} (it holds {checkpoint.state['functions']})."
        )
    for name, function in functions.items():
        io4dolfinx.read_function(checkpoint.data, function, name=name, backend=BACKEND)


def _check_mesh(data: Path, mesh: dolfinx.mesh.Mesh) -> None:
    """Collective: the stored mesh (input order) has ``mesh``'s cells and owned nodes."""
    from lse_material.fem._io4dolfinx_root import read_whole_mesh

    comm, gdim = mesh.comm, mesh.geometry.dim
    try:
        stored, problem = read_whole_mesh(data), None
    except (OSError, KeyError, RuntimeError) as error:  # raised on every rank below
        stored, problem = None, f"{type(error).__name__}: {error}"
    problems = [p for p in comm.allgather(problem) if p]
    if problems:
        raise ValueError(f"{data}: cannot read the stored mesh ({problems[0]}).")
    nodes = mesh.geometry.index_map()
    n_cells = mesh.topology.index_map(mesh.topology.dim).size_global
    same = stored.x.shape == (nodes.size_global, gdim) and stored.cells.shape[0] == n_cells
    if same:
        owned = mesh.geometry.input_global_indices[: nodes.size_local]
        ours = mesh.geometry.x[: nodes.size_local, :gdim]
        scale = max(float(np.abs(stored.x).max(initial=0.0)), 1.0)
        same = bool(np.allclose(stored.x[owned], ours, rtol=0.0, atol=1e-12 * scale))
    if not comm.allreduce(same, op=MPI.LAND):
        raise ValueError(
            f"{data}: the stored mesh ({stored.cells.shape[0]} cells, {stored.x.shape[0]} nodes) "
            f"is not this run's ({n_cells} cells, {nodes.size_global} nodes, or other node "
            "positions); restart with the mesh options of the checkpointed run."
        )


def state_law_functions(law: QuadratureStateLaw) -> dict[str, dolfinx.fem.Function]:
    """Quadrature Functions for the committed strain ``(6,)`` and internal state ``(n_state,)``.

    Named ``committed_strain`` and ``internal_state``, filled from the law now.
    """
    q = law.quadrature
    functions = {
        "committed_strain": q.function((6,), "committed_strain"),
        "internal_state": q.function((law.law.n_state,), "internal_state"),
    }
    _fill_state_law_functions(law, functions)
    return functions


def _fill_state_law_functions(law: QuadratureStateLaw, functions: Mapping) -> None:
    points = law.points
    law.quadrature.fill(functions["committed_strain"], points.strain.detach().cpu().numpy())
    law.quadrature.fill(functions["internal_state"], points.state.detach().cpu().numpy())


def read_state_law(checkpoint: Checkpoint, law: QuadratureStateLaw) -> None:
    """Collective: the checkpoint's committed strain and state become ``law``'s committed ones.

    ``law`` is on the rebuilt mesh (any number of ranks); no trial is pending afterwards (MGIS
    semantics: the next ``update()`` is a trial from the restored state).
    """
    functions = state_law_functions(law)
    read_functions(checkpoint, law.mesh, functions)
    points, q = law.points, law.quadrature
    device = points.strain.device
    strain, state = (
        torch.from_numpy(np.array(q.read(functions[name]), dtype=np.float64)).to(device)
        for name in ("committed_strain", "internal_state")
    )
    points.revert()  # drop any trial
    points.strain, points.state = (
        strain.reshape(points.strain.shape),
        state.reshape(points.state.shape),
    )
