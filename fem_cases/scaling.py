"""``lse-material bench scaling``: direct vs iterative linear solvers over mesh ladders, 1 and 2 ranks.

Each level is one ``mpirun -n RANKS lse-material simulate ...`` subprocess with a few steps, run
with a wall-clock limit and a memory watch (the resident memory of the whole process tree,
polled every 0.2 s; the run is killed above ``memory_limit_gb``): a level that runs out of time
or memory, or fails, is recorded with ``"failed": true``. The cases use their analytic laws
(the spinodal's ψ in UFL, the bar's data-model return mapping) unless model files are given.

``DIR/summary.json``: ``{"levels": [{case, dim, dofs, solver, ranks, krylov_per_newton,
seconds_per_step, peak_memory_gb, failed}, ...], "comparisons": {...}}`` (a failed level has
null iterations and time, and the largest memory the watch saw), where comparisons
holds, per case, the iterative preset's Krylov iterations per Newton step at the finest over
the coarsest level, and at the finest level both solvers ran, iterative over direct time per
step and memory, and the 2-rank speed-ups. ``DIR/scaling.png``: iterations and time against
dofs. Each run's own output stays in ``DIR/runs/``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from lse_material.jsonio import write_json
from lse_material.plotting import save_figure, subplots

__all__ = ["LADDERS", "bench_scaling"]

# Cells per side (spinodal) or (nx, ny) (the bar, 2-D) at scale 1, coarsest first.
LADDERS = {
    "spinodal-2d": [(32,), (64,), (128,), (256,)],
    "spinodal-3d": [(8,), (12,), (16,), (24,)],
    # The bar up to 208 k dofs: on the 2-D bar MUMPS is as fast as GAMG up to 53 k dofs
    # (iterative / direct 1.02 there, 0.96 at 208 k; session 4, 1 rank).
    "bar": [(200, 8), (400, 16), (800, 32), (1600, 64)],
}


class Level(NamedTuple):
    """One run of the ladder: the case, its dimension, the mesh numbers and their dofs."""

    case: str
    dim: int
    mesh: tuple[int, ...]
    dofs: int


def _levels(cases: Sequence[str], levels: int, scale: float) -> list[Level]:
    out = []
    for case in cases:
        if case not in LADDERS:
            raise ValueError(f"unknown case {case!r} in --cases; use some of {sorted(LADDERS)}.")
        for base in LADDERS[case][:levels]:
            mesh = tuple(max(2 if case != "bar" else 1, round(n * scale)) for n in base)
            if case == "bar":
                mesh = (max(mesh[0], 2), mesh[1])
                out.append(Level(case, 2, mesh, 2 * (mesh[0] + 1) * (mesh[1] + 1)))
            else:
                dim = int(case[-2])
                out.append(Level(case, dim, mesh, (dim + 2) * (mesh[0] + 1) ** dim))
    return out


def _command(level: Level, solver: str, ranks: int, steps: int, folder: Path, models) -> list:
    bindir = Path(sys.executable).parent
    cmd = [str(bindir / "mpirun"), "-n", str(ranks), str(bindir / "lse-material"), "simulate"]
    common = ["--out", str(folder), "--solver", solver, "--write-every", "1000000"]
    if level.case == "bar":
        law = ["--model", models[1]] if models[1] else ["--reference"]
        nx, ny = level.mesh
        sizes = ["--nx", str(nx), "--ny", str(ny), "--amplitudes", "-0.1"]
        return [*cmd, "metamaterial", *common, *law, *sizes, "--steps-per-cycle", str(2 * steps)]
    law = ["--model", models[0]] if models[0] else ["--analytic"]
    sizes = ["--dim", str(level.dim), "--mesh", str(level.mesh[0]), "--max-steps", str(steps)]
    return [*cmd, "spinodal", *common, *law, *sizes, "--t-end", "1e9"]


def _tree_memory_gb(root: int) -> float:
    """Resident memory of process ``root`` and all its descendants, in GB (Linux /proc)."""
    parents, rss = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:  # the process ended meanwhile
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[pid] = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
    tree, frontier = {root}, [root]
    while frontier:
        children = [p for p, q in parents.items() if q in frontier and p not in tree]
        tree.update(children)
        frontier = children
    return sum(rss.get(p, 0) for p in tree) / 1024**2


class Watched(NamedTuple):
    """returncode (None: killed by the bench); why it was killed ("" if not); the largest tree
    memory seen (GB)."""

    returncode: int | None
    killed: str
    peak_gb: float


def _run_watched(cmd: list, log: Path, *, timeout: float, memory_limit_gb: float) -> Watched:
    """Run ``cmd`` in its own session; kill the whole group past ``timeout`` s or the memory limit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as output:
        process = subprocess.Popen(
            cmd, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline, peak, killed = time.monotonic() + timeout, 0.0, ""
        while process.poll() is None:
            peak = max(peak, _tree_memory_gb(process.pid))
            if peak > memory_limit_gb:
                killed = f"memory above {memory_limit_gb} GB"
            elif time.monotonic() > deadline:
                killed = f"time above {timeout} s"
            if killed:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return Watched(None, killed, peak)
            time.sleep(0.2)
    return Watched(process.returncode, "", peak)


def _record(level: Level, solver: str, ranks: int, folder: Path, watched: Watched) -> dict:
    summary_file = folder / "summary.json"
    ok = watched.returncode == 0 and summary_file.exists()
    s = json.loads(summary_file.read_text()) if ok else {}
    return {
        "case": level.case,
        "dim": level.dim,
        "dofs": int(s.get("dofs", level.dofs)),
        "solver": solver,
        "ranks": ranks,
        "krylov_per_newton": float(s["krylov_per_newton"]) if ok else None,
        "seconds_per_step": float(s["seconds_per_step"]) if ok else None,
        "peak_memory_gb": float(s["peak_memory_gb"] if ok else watched.peak_gb),
        "failed": not ok,
    }


def _comparisons(levels: list[dict]) -> dict:
    """Per case: iterative iteration growth (finest / coarsest), iterative / direct time and
    memory at the finest level where both ran (1 rank), and the 2-rank speed-ups (finest)."""
    out = {}
    for case in dict.fromkeys(r["case"] for r in levels):
        rows = [r for r in levels if r["case"] == case and not r["failed"]]

        def pick(solver, ranks, rows=rows):
            return {r["dofs"]: r for r in rows if r["solver"] == solver and r["ranks"] == ranks}

        iterative, direct = pick("iterative", 1), pick("direct", 1)
        entry = {}
        if len(iterative) >= 2:
            lo, hi = min(iterative), max(iterative)
            entry["iterative_krylov_growth"] = (
                iterative[hi]["krylov_per_newton"] / iterative[lo]["krylov_per_newton"]
            )
            entry["iterative_krylov_dofs"] = [lo, hi]
        common = sorted(set(iterative) & set(direct))
        if common:
            a, b = iterative[common[-1]], direct[common[-1]]
            entry["finest_common_dofs"] = common[-1]
            entry["time_iterative_over_direct"] = a["seconds_per_step"] / b["seconds_per_step"]
            entry["memory_iterative_over_direct"] = a["peak_memory_gb"] / b["peak_memory_gb"]
        for solver in ("direct", "iterative"):
            one, two = pick(solver, 1), pick(solver, 2)
            both = sorted(set(one) & set(two))
            if both:
                entry[f"speedup_2_ranks_{solver}"] = (
                    one[both[-1]]["seconds_per_step"] / two[both[-1]]["seconds_per_step"]
                )
                entry[f"speedup_2_ranks_{solver}_dofs"] = both[-1]
        out[case] = entry
    return out


def _plot(path: Path, levels: list[dict]) -> None:
    fig, axes = subplots(1, 2, size=(12, 4.2))
    axes = axes[0]
    styles = {"direct": "--", "iterative": "-"}
    cases = list(dict.fromkeys(r["case"] for r in levels))
    for key in dict.fromkeys((r["case"], r["solver"], r["ranks"]) for r in levels):
        color = f"C{(2 * cases.index(key[0]) + (key[2] > 1)) % 10}"  # a colour per case and ranks
        rows = sorted(
            (r for r in levels if (r["case"], r["solver"], r["ranks"]) == key and not r["failed"]),
            key=lambda r: r["dofs"],
        )
        if not rows:
            continue
        dofs = [r["dofs"] for r in rows]
        label = f"{key[0]} {key[1]} {key[2]} rank{'s' if key[2] > 1 else ''}"
        marker = "o" if key[2] == 1 else "s"
        style = {"marker": marker, "color": color, "label": label}
        axes[0].semilogx(dofs, [r["krylov_per_newton"] for r in rows], styles[key[1]], **style)
        axes[1].loglog(dofs, [r["seconds_per_step"] for r in rows], styles[key[1]], **style)
    axes[0].set(xlabel="dofs", ylabel="Krylov iterations per Newton step")
    axes[1].set(xlabel="dofs", ylabel="seconds per step")
    axes[1].legend(fontsize=7)
    save_figure(fig, path)


def bench_scaling(
    *,
    out: str,
    levels: int = 4,
    scale: float = 1.0,
    steps: int = 3,
    cases: Sequence[str] = ("spinodal-2d", "spinodal-3d", "bar"),
    solvers: Sequence[str] = ("direct", "iterative"),
    ranks: Sequence[int] = (1, 2),
    timeout: float = 900.0,
    memory_limit_gb: float = 18.0,
    spinodal_model: str | None = None,
    bar_model: str | None = None,
) -> dict:
    """Direct vs iterative solvers over mesh ladders: dofs, Krylov iterations, time, memory.

    Every level of every case runs once per solver and rank count, as its own mpirun
    subprocess with a time and memory limit; a level over a limit is recorded as failed and
    the finer levels of that case, solver and rank count are skipped (recorded as failed).
    Writes ``out/summary.json`` and ``out/scaling.png``; runs in ``out/runs/``.

    Parameters
    ----------
    out
        output folder.
    levels
        mesh levels per case (at most 4), coarsest first.
    scale
        factor on the mesh numbers of the ladders (a small one for a quick check).
    steps
        time steps per spinodal run; the bar runs one sawtooth cycle of 2 × steps load steps.
    cases
        cases to run: spinodal-2d, spinodal-3d, bar; repeat for several.
    solvers
        solver presets to compare: direct, iterative; repeat for several.
    ranks
        MPI rank counts; repeat for several.
    timeout
        wall-clock limit of one run, seconds.
    memory_limit_gb
        a run whose processes together hold more resident memory is killed (failed).
    spinodal_model
        a trained mechanochemical model file (default: the analytic ψ).
    bar_model
        a trained metamaterial model file (default: the data model's law).
    """
    if not 1 <= levels <= 4 or scale <= 0 or steps < 2:
        raise ValueError(
            f"need 1 <= levels <= 4, scale > 0 and steps >= 2; got levels={levels}, "
            f"scale={scale}, steps={steps}."
        )
    bad = [s for s in solvers if s not in ("direct", "iterative")] + [
        r for r in ranks if int(r) < 1
    ]
    if bad:
        raise ValueError(f"solvers must be direct/iterative and ranks >= 1; got {bad}.")
    ladder = _levels(cases, levels, scale)
    folder = Path(out)
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    rows, given_up = [], set()
    for level in ladder:
        for solver in solvers:
            for n in ranks:
                name = f"{level.case}_{'x'.join(map(str, level.mesh))}_{solver}_{n}"
                run = folder / "runs" / name
                if (level.case, solver, n) in given_up:
                    rows.append(_record(level, solver, n, run, Watched(None, "skipped", 0.0)))
                    continue
                cmd = _command(level, solver, n, steps, run, (spinodal_model, bar_model))
                watched = _run_watched(
                    cmd, run.with_suffix(".log"), timeout=timeout, memory_limit_gb=memory_limit_gb
                )
                rows.append(_record(level, solver, n, run, watched))
                if rows[-1]["failed"]:
                    given_up.add((level.case, solver, n))
                print(
                    f"{name}: {rows[-1]['dofs']} dofs, "
                    + (
                        f"failed ({watched.killed or f'exit {watched.returncode}'})"
                        if rows[-1]["failed"]
                        else f"{rows[-1]['krylov_per_newton']:.1f} Krylov/Newton, "
                        f"{rows[-1]['seconds_per_step']:.3g} s/step, "
                        f"{rows[-1]['peak_memory_gb']:.2f} GB"
                    ),
                    flush=True,
                )
    result = {"levels": rows, "comparisons": _comparisons(rows)}
    write_json(folder / "summary.json", result)
    _plot(folder / "scaling.png", rows)
    print(json.dumps(result["comparisons"], indent=2))
    return result
