"""Benchmarks of the FE cases: ``lse-material bench bvp``, ``bench spinodal`` and
``bench energy-objective``.

Side-by-side timings written as JSON (``out/summary.json``), ratios next to the raw times.
Timing lives here, not in the cases, and not in tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
from lse_material.fem_cases.verification import solve_block
from lse_material.training.data import mechanochemical as mc
from mpi4py import MPI

from lse_material.jsonio import write_json

__all__ = ["bench_bvp", "bench_energy_objective", "bench_spinodal"]


def _alternated_pairs(repeats: int, solves: dict) -> dict[object, list]:
    """``repeats`` pairs of the two solves ``{name: callable}``, one after the other in this
    process (both see the same machine load), the order alternated from pair to pair so that
    a drift of the machine's speed cancels: ``{name: [result of each pair]}``."""
    order = list(solves)
    runs = {name: [] for name in order}
    for i in range(repeats):
        for name in order if i % 2 == 0 else order[::-1]:
            runs[name].append(solves[name]())
    return runs


def _solve_summary(runs: list) -> dict:
    """The median run of one form (by time per iteration) and every run's time per iteration,
    with the seconds per iteration by part (``SolveTimings``) of the median run."""
    times = [r.seconds_per_iteration for r in runs]
    median = runs[int(np.argsort(times)[len(times) // 2])]
    iterations = max(median.newton.iterations, 1)
    return {
        "seconds_per_iteration": median.seconds_per_iteration,
        "seconds_per_iteration_runs": times,
        "seconds_per_iteration_by_part": {
            part: seconds / iterations for part, seconds in median.newton.timings._asdict().items()
        },
        "iterations": median.newton.iterations,
        "residual_norms": median.newton.residual_norms,
        "reaction": median.reaction,
    }


def bench_bvp(
    *,
    model: str,
    out: str,
    dim: Literal[2, 3] = 2,
    mesh: int = 48,
    degree: int = 2,
    stretch: float = 0.1,
    threads: int = 1,
    repeats: int = 3,
) -> dict:
    """Time per Newton iteration of the verification block: the law vs the analytic-UFL form.

    Both solves use the same mesh, elements, quadrature (degree 4, the law's points) and solver;
    c is the prescribed field, marked fixed in the law (in 3-D: H is 6×6, the strains only).
    The first (JIT-compiling) solves are discarded; then ``repeats`` pairs are timed (one
    after the other in this process, so both see the same machine load; law first in even
    pairs, UFL first in odd ones, so that a drift of the machine's speed cancels), and the
    ratio is the median of the pairs' ratios (with the ratio of the best times beside it).
    Per form: the median run's seconds per iteration
    by part (law update, residual and Jacobian assembly, the rest: the MUMPS solves, the line
    search). Writes ``out/summary.json``.

    Parameters
    ----------
    model
        a trained mechanochemical model file.
    out
        output folder.
    dim
        2 (plane strain) or 3.
    mesh
        cells per side of the block.
    degree
        polynomial degree of the displacement.
    stretch
        the imposed stretch of the block.
    threads
        torch CPU threads.
    repeats
        timed pairs of solves (the median ratio is reported).
    """
    import torch

    import lse_material

    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    potential = lse_material.load(model)
    options = {"dim": dim, "degree": degree}
    solve_block(potential, mesh_n=2, **options)  # compile the forms once
    solve_block(None, mesh_n=2, **options)
    runs = _alternated_pairs(
        repeats,
        {
            "law": lambda: solve_block(potential, mesh_n=mesh, stretch=stretch, **options),
            "ufl": lambda: solve_block(None, mesh_n=mesh, stretch=stretch, **options),
        },
    )
    ratios = [
        a.seconds_per_iteration / b.seconds_per_iteration for a, b in zip(runs["law"], runs["ufl"])
    ]
    law, reference = runs["law"][-1], runs["ufl"][-1]
    diff = np.linalg.norm(law.u.x.array - reference.u.x.array) / np.linalg.norm(reference.u.x.array)
    result = {
        "dim": dim,
        "mesh": mesh,
        "degree": degree,
        "ranks": MPI.COMM_WORLD.size,
        "threads": threads,
        "repeats": repeats,
        "live_inputs": [potential.input_names[i] for i in law.law.live],
        "load_average": [load_before, os.getloadavg()[0]],  # 1-minute, before and after
        "law": _solve_summary(runs["law"]),
        "ufl": _solve_summary(runs["ufl"]),
        "newton_iteration_ratio_law_over_ufl": float(np.median(ratios)),
        "newton_iteration_ratio_pairs": ratios,
        "newton_iteration_ratio_of_best": min(r.seconds_per_iteration for r in runs["law"])
        / min(r.seconds_per_iteration for r in runs["ufl"]),
        "displacement_rel_difference": float(diff),
        "reaction_rel_difference": abs(law.reaction - reference.reaction) / abs(reference.reaction),
    }
    if MPI.COMM_WORLD.rank == 0:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "summary.json", result)
        keys = (
            "newton_iteration_ratio_law_over_ufl",
            "newton_iteration_ratio_pairs",
            "newton_iteration_ratio_of_best",
            "load_average",
            "displacement_rel_difference",
            "reaction_rel_difference",
        )
        summary = {k: result[k] for k in keys}
        for form in ("law", "ufl"):
            summary[f"{form}_seconds_per_iteration_by_part"] = result[form][
                "seconds_per_iteration_by_part"
            ]
        print(json.dumps(summary, indent=2))
    return result


def bench_spinodal(*, model: str, out: str, mesh: int = 128, steps: int = 8) -> dict:
    """Time per step: model vs analytic (1 rank), and the model on 1 vs 2 ranks; peak memory.

    Each run is a separate ``mpirun`` process with a fixed number of steps (``--max-steps``) and
    the same mesh; the loop time excludes start-up and form compilation. Writes summary.json.
    Mesh 128 (66 k dofs) by default: about two thirds of a step is the direct (MUMPS) solve,
    whose 2-rank speed-up grows with the problem size (measured: 1.55–1.58 at mesh 96, 1.61–1.76
    at 128, 1.73 at 160).

    Parameters
    ----------
    model
        a trained mechanochemical model file.
    out
        output folder.
    mesh
        cells per side.
    steps
        time steps per run.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    keys = (
        "seconds_per_step",
        "loop_seconds",
        "steps",
        "dofs",
        "ranks",
        "peak_memory_mb_per_rank",
        "newton_iterations",
    )
    runs = {}
    for name, ranks, extra in (
        ("analytic_1", 1, ["--analytic"]),
        ("model_1", 1, ["--model", str(model)]),
        ("model_2", 2, ["--model", str(model)]),
    ):
        folder = out / name
        cmd = [str(bindir / "mpirun"), "-n", str(ranks), str(bindir / "lse-material")]
        cmd += ["simulate", "spinodal", "--out", str(folder), "--mesh", str(mesh)]
        cmd += ["--t-end", "1e9", "--max-steps", str(steps), *extra]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        s = json.loads((folder / "summary.json").read_text())
        runs[name] = {k: s[k] for k in keys}
    result = {
        "mesh": mesh,
        "steps": steps,
        "runs": runs,
        "step_time_ratio_model_over_analytic": runs["model_1"]["seconds_per_step"]
        / runs["analytic_1"]["seconds_per_step"],
        "speedup_1_to_2_ranks": runs["model_1"]["seconds_per_step"]
        / runs["model_2"]["seconds_per_step"],
    }
    write_json(out / "summary.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return result


# The verification-block cases of the README's energy-objective table, and finer meshes:
# (dim, cells per side, stretch).
ENERGY_OBJECTIVE_CASES = (
    (2, 8, 0.05),
    (2, 8, 0.1),
    (2, 8, 0.2),
    (2, 8, 0.3),
    (2, 32, 0.1),
    (2, 32, 0.2),
    (2, 32, 0.3),
    (3, 4, 0.05),
    (3, 4, 0.1),
    (3, 4, 0.2),
    (3, 8, 0.1),
)


def bench_energy_objective(
    *,
    out: str,
    model: str | None = None,
    dims: tuple[int, ...] = (2, 3),
    repeats: int = 5,
    threads: int = 1,
) -> dict:
    """Newton with and without the energy objective: iterations, convergence, time per solve.

    The verification block (``solve_block``) in the cases of ``ENERGY_OBJECTIVE_CASES``, each
    with the analytic ψ through the law interface, with ``model`` when given, and in pure UFL.
    Per case and form, one untimed pair compiles the forms, then ``repeats`` pairs of solves
    (without, with; the order alternates, so that a drift of the machine's speed cancels).
    ``time_ratio`` is the median over the pairs of (time with) / (time without), the whole
    solve's wall time (it includes the extra energy evaluations of the line search and any
    change in the number of iterations); only meaningful where both converge. Writes
    ``out/summary.json`` and prints one line per case.

    Parameters
    ----------
    out
        output folder.
    model
        a trained mechanochemical model file (optional: the analytic ψ and pure UFL always run).
    dims
        the cases' dimensions to run (2, 3 or both).
    repeats
        timed pairs of solves per case and form.
    threads
        torch CPU threads.
    """
    if not dims or set(dims) - {2, 3} or repeats < 1:
        raise ValueError(
            f"need dims among (2, 3) and repeats >= 1; got dims={dims}, repeats={repeats}."
        )
    import torch

    import lse_material

    torch.set_num_threads(threads)
    forms = {"analytic law": mc.potential(), "pure UFL": None}
    if model is not None:
        forms["model"] = lse_material.load(model)
    load_before = os.getloadavg()[0]
    rows = []
    for dim, mesh, stretch in (case for case in ENERGY_OBJECTIVE_CASES if case[0] in dims):
        for name, potential in forms.items():
            rows.append(
                _energy_objective_row(potential, dim, mesh, stretch, repeats) | {"form": name}
            )
            if MPI.COMM_WORLD.rank == 0:
                r = rows[-1]
                print(
                    f"{dim}-D mesh {mesh} stretch {stretch:<5} {name:13s} iterations "
                    f"{r['iterations_without']} -> {r['iterations_with']}, converged "
                    f"{r['converged_without']} -> {r['converged_with']}, time ratio "
                    f"{r['time_ratio']:.3f}",
                    flush=True,
                )
    both = [r["time_ratio"] for r in rows if r["converged_without"] and r["converged_with"]]
    result = {
        "ranks": MPI.COMM_WORLD.size,
        "threads": threads,
        "repeats": repeats,
        "load_average": [load_before, os.getloadavg()[0]],  # 1-minute, before and after
        "cases": rows,
        "largest_time_ratio_where_both_converge": max(both) if both else None,
    }
    if MPI.COMM_WORLD.rank == 0:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "summary.json", result)
    return result


def _energy_objective_row(potential, dim: int, mesh: int, stretch: float, repeats: int) -> dict:
    """One case and form of ``bench_energy_objective``: iterations, converged, SNES reasons and
    the solve times without and with the energy objective, and their median pair ratio."""
    options = {"dim": dim, "mesh_n": mesh, "stretch": stretch}
    for energy in (False, True):  # compile the forms, untimed
        solve_block(potential, energy_objective=energy, **options)
    runs = _alternated_pairs(
        repeats,
        {
            energy: lambda energy=energy: (
                solve_block(potential, energy_objective=energy, **options).newton
            )
            for energy in (False, True)
        },
    )
    times = {energy: [r.seconds for r in results] for energy, results in runs.items()}
    last = {energy: results[-1] for energy, results in runs.items()}
    ratios = [w / wo for w, wo in zip(times[True], times[False])]
    return {
        "dim": dim,
        "mesh": mesh,
        "stretch": stretch,
        "iterations_without": last[False].iterations,
        "iterations_with": last[True].iterations,
        "converged_without": last[False].converged,
        "converged_with": last[True].converged,
        "reason_without": last[False].reason,
        "reason_with": last[True].reason,
        "seconds_without": times[False],
        "seconds_with": times[True],
        "time_ratio": float(np.median(ratios)),
        "time_ratio_pairs": ratios,
    }
