"""Checkpoint and restart (lse_material.fem.checkpoint) with real MPI: SIGKILL, restart, other ranks.

Runs started with ``mpirun`` are killed with SIGKILL *while they write a checkpoint* (the next
data file exists, ``state.json`` still names the previous one), so one kill tests both: the
previous checkpoint stays readable, and a run killed midway restarts. All the killed runs start
at once (with a 2-rank run whose rank 0 cannot write: both ranks must raise, neither wait),
then one MPI program runs the 2-rank restarts and the uninterrupted 2-rank run while this
(serial) process runs the 1-rank ones.

Tolerances: on the same ranks the restarted run is the same computation (the mesh is rebuilt by
the same constructor, so the same partition), hence 1e-12; measured 2e-16 in the energy and
1e-14 in the fields, what two identical 2-rank runs differ by (parallel reductions are not
bit-reproducible). On another number of ranks the assembly sums in another order and Newton
stops at another iterate inside its tolerance: RANKS_RTOL, the tolerance of the existing
serial-vs-2-ranks tests (measured: 2e-15 of the largest force, 2e-12 of the largest u, strain
and state).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import basix.ufl
import numpy as np
import pytest
import torch
from lse_material.fem_cases.metamaterial import simulate_metamaterial
from lse_material.fem_cases.spinodal import simulate_spinodal
from lse_material.training.data import mechanochemical as mc
from mpi4py import MPI

import lse_material
from lse_material.fem import QuadraturePoints, dolfinx, read_checkpoint, read_functions

pytestmark = [pytest.mark.fem, pytest.mark.mpi]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SPINODAL = {"analytic": True, "mesh": 8, "t_end": 0.05}  # 9 steps
BAR = {"reference": True, "nx": 20, "ny": 2, "amplitudes": [-0.2], "steps_per_cycle": 16}
RANKS_RTOL = 1e-8
ONLY_AT_END = 10_000  # checkpoint_every: the final checkpoint only
KILL_AFTER = 4  # the killed runs (checkpoint every step) restart from this step (of 9 and 16)


def _runs(ranks: int, runs: list[dict], log: Path) -> subprocess.Popen:
    """``mpirun -n ranks`` of tests/mpi_restart_runs.py, in a new session (killed as a group)."""
    cmd = [str(BIN / "mpirun"), "-n", str(ranks), sys.executable, "tests/mpi_restart_runs.py"]
    return _start([*cmd, json.dumps(runs)], log)


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as f:
        return subprocess.Popen(
            cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _finish(process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    try:
        assert process.wait(timeout=timeout) == 0, log.read_text()[-3000:]
    finally:
        _kill(process)


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _kill_while_checkpointing(runs: dict[Path, subprocess.Popen]) -> list[bool]:
    """SIGKILL each run (all its ranks) while it writes the checkpoint after step KILL_AFTER.

    ``runs``: output folder -> process. Returns, per run, whether the kill left the next data
    file half-written (newer than the one state.json names).
    """
    halfway, deadline = {}, time.monotonic() + 300
    while len(halfway) < len(runs) and time.monotonic() < deadline:
        for out, process in runs.items():
            if out in halfway:
                continue
            assert process.poll() is None, f"{out} ended before the kill (see {out}.log)"
            folder, state = out / "checkpoint", out / "checkpoint" / "state.json"
            named = json.loads(state.read_text())["data"] if state.exists() else ""
            if named >= f"step-{KILL_AFTER:08d}.h5" and any(
                p.name > named
                for p in folder.glob("step-*.h5")  # the next one, being written
            ):
                os.killpg(process.pid, signal.SIGKILL)
                assert process.wait(timeout=30) != 0
                named = json.loads(state.read_text())["data"]
                assert (folder / named).is_file()  # the previous checkpoint is all there
                assert not (out / "summary.json").exists()  # killed midway
                halfway[out] = any(p.name > named for p in folder.glob("step-*.h5"))
        time.sleep(0.001)
    assert len(halfway) == len(runs), f"no checkpoint after step {KILL_AFTER} within 300 s"
    return list(halfway.values())


def _spinodal_fields(run: Path) -> np.ndarray:
    """(u, c, μ) of a spinodal run's last checkpoint, read on this (serial) process."""
    domain = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, SPINODAL["mesh"], SPINODAL["mesh"])
    cell = domain.basix_cell()
    elements = [basix.ufl.element("Lagrange", cell, 1, shape=(2,))]
    elements += [basix.ufl.element("Lagrange", cell, 1)] * 2
    w = dolfinx.fem.Function(dolfinx.fem.functionspace(domain, basix.ufl.mixed_element(elements)))
    checkpoint = read_checkpoint(run, options=_options(run), model_sha256=None)
    read_functions(checkpoint, domain, {"w": w})
    return w.x.array.copy()


def _bar_fields(run: Path) -> dict[str, np.ndarray]:
    """u and the law's committed strain and state (quadrature Functions) of a bar's last checkpoint."""
    domain = dolfinx.mesh.create_rectangle(
        MPI.COMM_WORLD, [[0.0, 0.0], [10.0, 1.0]], [BAR["nx"], BAR["ny"]]
    )
    q = QuadraturePoints(domain, 1)
    functions = {
        "u": dolfinx.fem.Function(dolfinx.fem.functionspace(domain, ("Lagrange", 1, (2,)))),
        "committed_strain": q.function((6,), "committed_strain"),
        "internal_state": q.function((1,), "internal_state"),
    }
    checkpoint = read_checkpoint(run, options=_options(run), model_sha256=None)
    read_functions(checkpoint, domain, functions)
    return {"u": functions["u"].x.array.copy()} | {
        name: q.read(functions[name]).copy() for name in ("committed_strain", "internal_state")
    }


def _state(run: Path) -> dict:
    return json.loads((run / "checkpoint" / "state.json").read_text())


def _options(run: Path) -> dict:
    return _state(run)["options"]


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _same_history(a: dict, b: dict, keys, *, rtol: float, atol: float) -> None:
    for key in keys:
        np.testing.assert_allclose(
            np.array(a[key], dtype=float), np.array(b[key], dtype=float), rtol=rtol, atol=atol
        )


def test_killed_runs_restart_on_the_same_and_on_other_ranks(tmp_path):
    cli = [str(BIN / "mpirun"), "-n", "2", str(BIN / "lse-material"), "simulate", "spinodal"]
    cli += ["--analytic", "--mesh", "8", "--t-end", "0.05", "--checkpoint-every", "1", "--out"]
    (tmp_path / "no-room").mkdir()  # where rank 0 cannot write: its checkpoint folder is a file
    (tmp_path / "no-room" / "checkpoint").write_text("not a folder")
    failing = _start([*cli, str(tmp_path / "no-room")], tmp_path / "no-room.log")
    killed = {
        tmp_path / "s2": _start([*cli, str(tmp_path / "s2")], tmp_path / "s2.log"),
        tmp_path / "b2": _runs(2, [_bar_run(tmp_path / "b2", every=1)], tmp_path / "b2.log"),
        tmp_path / "b1": _runs(1, [_bar_run(tmp_path / "b1", every=1)], tmp_path / "b1.log"),
    }
    try:
        assert any(_kill_while_checkpointing(killed))  # at least one kill inside a write
    finally:
        for process in killed.values():
            _kill(process)

    for name, ranks in (("s2", 2), ("b2", 2), ("b1", 1)):  # the ranks that wrote them
        assert _state(tmp_path / name)["ranks"] == ranks
    try:  # every rank raised rank 0's error; none was left waiting
        assert failing.wait(timeout=300) != 0
    finally:
        _kill(failing)
    message = "writing the checkpoint failed on rank 0: FileExistsError"
    assert (tmp_path / "no-room.log").read_text().count(message) == 2

    full = {**SPINODAL, "out": str(tmp_path / "s2-full"), "checkpoint_every": ONLY_AT_END}
    runs = [  # on 2 ranks: the uninterrupted run, a restart on the same ranks, 1 -> 2 ranks
        {"case": "spinodal", "options": full},
        {"case": "spinodal", "options": _restart(SPINODAL, tmp_path / "s2", tmp_path / "s2-s2")},
        _bar_run(tmp_path / "b1-b2", restart=tmp_path / "b1"),
    ]
    two = _runs(2, runs, tmp_path / "restarts.log")
    try:  # meanwhile, the 1-rank runs here: the bar's uninterrupted run and 2 -> 1 ranks
        simulate_spinodal(**_restart(SPINODAL, tmp_path / "s2", tmp_path / "s2-s1"))
        bar = {**BAR, "amplitudes": tuple(BAR["amplitudes"]), "checkpoint_every": ONLY_AT_END}
        simulate_metamaterial(out=tmp_path / "b1-full", **bar)
        simulate_metamaterial(out=tmp_path / "b2-b1", restart=tmp_path / "b2", **bar)
    finally:
        _finish(two, tmp_path / "restarts.log")

    spinodal_keys = ("time", "energy", "mass", "phase_fraction", "dt", "newton_iterations")
    full, same = _summary(tmp_path / "s2-full"), _summary(tmp_path / "s2-s2")
    assert KILL_AFTER <= same["restarted_from"]["step"] < full["steps"] == same["steps"]
    assert len(same["energy"]) == full["steps"] + 1  # the whole history, from t = 0
    _same_history(same, full, spinodal_keys, rtol=0, atol=1e-12)
    fields = _spinodal_fields(tmp_path / "s2-full")
    np.testing.assert_allclose(_spinodal_fields(tmp_path / "s2-s2"), fields, rtol=0, atol=1e-12)
    other = _summary(tmp_path / "s2-s1")  # 2 -> 1 ranks
    assert other["ranks"] == 1 and other["restarted_from"]["step"] > 0
    _same_history(other, full, spinodal_keys[:-1], rtol=RANKS_RTOL, atol=1e-12)
    np.testing.assert_allclose(
        _spinodal_fields(tmp_path / "s2-s1"), fields, rtol=RANKS_RTOL, atol=1e-12
    )

    bar_keys = ("displacement", "force", "transformed_fraction")
    reference = _summary(tmp_path / "b1-full")
    assert reference["transformed_fraction"][len(reference["force"]) // 2] > 0.5  # it transformed
    state = _bar_fields(tmp_path / "b1-full")
    for name, ranks in (("b1-b2", 2), ("b2-b1", 1)):  # 1 -> 2 and 2 -> 1 ranks
        restarted = _summary(tmp_path / name)
        assert (
            restarted["ranks"] == ranks and KILL_AFTER <= restarted["restarted_from"]["step"] < 16
        )
        assert len(restarted["force"]) == reference["steps"] + 1
        _same_history(restarted, reference, bar_keys, rtol=RANKS_RTOL, atol=1e-12)
        ours = _bar_fields(tmp_path / name)
        for key, values in state.items():  # u and the quadrature-point state
            np.testing.assert_allclose(ours[key], values, rtol=RANKS_RTOL, atol=1e-10, err_msg=key)
        assert restarted["checkpoints"] == 1 and restarted["checkpoint_fraction_of_step"] > 0


def _restart(options: dict, run: Path, out: Path) -> dict:
    return {**options, "checkpoint_every": ONLY_AT_END, "restart": str(run), "out": str(out)}


def _bar_run(out: Path, *, every: int = ONLY_AT_END, restart: Path | None = None) -> dict:
    options = {**BAR, "out": str(out), "checkpoint_every": every}
    return {
        "case": "metamaterial",
        "options": options | ({"restart": str(restart)} if restart else {}),
    }


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two model files with the mechanochemical inputs (untrained, convex: Newton converges)."""
    folder = tmp_path_factory.mktemp("models")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = lse_material.LSEICNN(len(mc.INPUT_NAMES), 2, (4,), input_names=mc.INPUT_NAMES)
        paths.append(lse_material.save(model, folder / f"model{seed}.safetensors"))
    return paths


def test_a_restart_with_another_model_file_or_mesh_is_refused(tmp_path, two_models):
    first, other = two_models
    small = {"mesh": 4, "t_end": 0.05}
    run = simulate_spinodal(
        out=tmp_path / "a", model=first, max_steps=2, checkpoint_every=1, **small
    )
    assert run.summary["checkpoints"] == 2 and run.summary["checkpoint_fraction_of_step"] > 0
    with pytest.raises(ValueError, match="model file of SHA-256 .* restart with the same model"):
        simulate_spinodal(out=tmp_path / "b", model=other, restart=tmp_path / "a", **small)
    with pytest.raises(ValueError, match="with mesh=4, this run has mesh=6"):
        simulate_spinodal(
            out=tmp_path / "c", model=first, restart=tmp_path / "a", mesh=6, t_end=0.05
        )
    with pytest.raises(ValueError, match="with analytic=False, this run has analytic=True"):
        simulate_spinodal(out=tmp_path / "d", analytic=True, restart=tmp_path / "a", **small)
    with pytest.raises(ValueError, match="no checkpoint .*checkpoint_every > 0"):
        simulate_spinodal(out=tmp_path / "e", model=first, restart=tmp_path / "b", **small)
    assert not any((tmp_path / name).exists() for name in "bcde")  # refused before any output
    done = simulate_spinodal(out=tmp_path / "f", model=first, restart=tmp_path / "a", **small)
    assert done.summary["restarted_from"]["step"] == 2 and done.summary["time"][
        -1
    ] == pytest.approx(0.05)
