"""The bar-transformation case: the path through its limit points, its schema, serial = 2 ranks."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lse_material.fem_cases.bar_transformation import curve_distance, simulate_bar_transformation

pytestmark = pytest.mark.fem
ROOT = Path(__file__).resolve().parents[1]
TINY = {"mesh": 12, "max_steps": 24}
LISTS = ("displacement", "force", "lambda", "energy", "min_eigenvalue", "negative_eigenvalues")


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("bar")
    return simulate_bar_transformation(out=out, analytic=True, **TINY)


def test_analytic_bar_writes_the_path_through_a_limit_point(serial):
    summary, out = serial
    n = len(summary["displacement"])
    assert n == TINY["max_steps"] + 1 and all(len(summary[k]) == n for k in LISTS)
    assert summary["limit_points"], "no limit point found"
    assert {"displacement", "force"} <= summary["limit_points"][0].keys()
    force, negative = np.array(summary["force"]), np.array(summary["negative_eigenvalues"])
    first = summary["limit_points"][0]["index"]
    # stable up to the first critical point, past it the path went on through unstable states
    assert (negative[:first] == 0).all() and negative[first:].max() >= 1
    assert force[first:].min() < 0.8 * summary["peak_force"]  # down the descending branch
    # The issue: the first limit point within 30 steps, no failed step at the default size
    # (mesh 20, 40, 80: 15 steps, 0 failed; this CI mesh: 14 steps, 0 failed).
    assert summary["steps_to_first_limit"] <= 30 and summary["failed_steps_to_first_limit"] == 0
    fractions = np.array(summary["variant_fractions"])  # (points, 3)
    assert fractions.shape == (n, 3) and np.allclose(fractions.sum(1), 1.0)
    assert fractions[0, 0] == 1.0  # the start: all in the variant contracted along x
    assert fractions[-1, 1] > 0  # past the snap-back: the y-variant has nucleated
    for name in ("summary.json", "force_displacement.png", "phase.bp"):
        assert (out / name).exists(), name


def test_force_is_the_energy_slope_on_the_stable_branch(serial):
    """dΠ/dU = F under displacement control (U = u_x(L)): trapezoids between stable points."""
    summary, _ = serial
    u, f, e = (np.array(summary[k]) for k in ("displacement", "force", "energy"))
    stable = np.array(summary["negative_eigenvalues"]) == 0
    first = summary["limit_points"][0]["index"]
    for i in range(first - 1):
        if stable[i] and stable[i + 1]:
            predicted = 0.5 * (f[i] + f[i + 1]) * (u[i + 1] - u[i])
            assert abs(e[i + 1] - e[i] - predicted) <= 0.02 * abs(predicted) + 1e-12


@pytest.mark.mpi
def test_two_ranks_trace_the_serial_path(serial, tmp_path):
    cmd = [
        str(Path(sys.executable).parent / "mpirun"),
        "-n",
        "2",
        str(Path(sys.executable).parent / "lse-material"),
        "simulate",
        "bar-transformation",
        "--analytic",
        "--out",
        str(tmp_path),
        "--mesh",
        str(TINY["mesh"]),
        "--max-steps",
        str(TINY["max_steps"]),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=300)
    parallel = json.loads((tmp_path / "summary.json").read_text())
    summary = serial.summary
    assert parallel["ranks"] == 2
    first = summary["limit_points"][0]["index"]  # identical up to round-off until the limit
    for key in ("displacement", "force", "energy"):
        assert np.allclose(parallel[key][: first + 1], summary[key][: first + 1], rtol=1e-6)
    assert (
        parallel["negative_eigenvalues"][: first + 1]
        == summary["negative_eigenvalues"][: first + 1]
    )
    assert curve_distance(summary, summary)["curve_distance"] == 0.0


def test_learned_law_meets_the_analytic_path_through_the_snap_back(
    tmp_path, mechanochemical_training
):
    """Issue figures, loosened for the CI-sized law on the issue's mesh (40 cells, the
    defaults): the nucleation peak, the first limit force, and the ascending and snap-back
    branches (by distance in the plane, ``*_normal``) within 7.5 % of the analytic peak (the
    issue's 5 %; measured 3.1, 4.0, 4.0, 0.7 %); both runs pass the first limit point within
    30 steps with no failed step, and trace the full path to u = 0.06 on the same branches
    (the whole paths' distance in the plane within 7.5 %; measured 3.2 %, 207 and 205 steps)."""
    folder, _ = mechanochemical_training
    size = {"mesh": 40}
    reference = simulate_bar_transformation(out=tmp_path / "analytic", analytic=True, **size)
    learned = simulate_bar_transformation(
        out=tmp_path / "learned",
        model=folder / "model.safetensors",
        reference=reference.out / "summary.json",
        **size,
    ).summary
    comparison = learned["comparison"]
    keys = ("peak_force", "limit_force", "ascending_normal", "descending_normal", "curve_distance")
    for key in keys:
        assert comparison[key] < 0.075, (key, comparison)
    for run in (reference.summary, learned):
        assert run["steps_to_first_limit"] <= 30, run["steps_to_first_limit"]
        assert run["failed_steps_to_first_limit"] == 0, run["cuts"]
        assert run["reached_end"], run["stopped"]


def _folded_run(shift: float) -> dict:
    """A synthetic path: up a line to a fold at (0, 1), back down a parabola to a second fold
    at (-0.5 + shift, 0.2), where F(u) has a vertical tangent, and on to F = 0."""
    up = np.linspace(0.0, 1.0, 101)
    down = np.linspace(1.0, 0.0, 401)[1:]
    fold = -0.5 + shift
    u = np.concatenate([up - 1.0, fold * (1.0 - ((down - 0.2) / 0.8) ** 2)])
    force = np.concatenate([up, down])
    limits = [
        {"index": i, "kind": "limit", "displacement": u[i], "force": force[i]}
        for i in (100, 100 + int(np.argmin(np.abs(down - 0.2))) + 1)
    ]
    return {
        "displacement": list(u),
        "force": list(force),
        "peak_force": 1.0,
        "limit_points": limits,
    }


def test_branch_distance_in_the_plane_is_proportional_to_a_shift_of_the_fold():
    """A fold 0.5 % further out: F at equal u differs by ~8 % of the peak (the square root
    of the shift), the distance in the plane by ~0.5 %."""
    a, b = _folded_run(0.0), _folded_run(-0.005)
    assert curve_distance(a, a)["descending_normal"] == 0.0
    shifted = curve_distance(a, b)
    assert 0.06 < shifted["descending"] < 0.1, shifted
    assert 0.003 < shifted["descending_normal"] < 0.007, shifted


def test_bad_options_raise(tmp_path):
    with pytest.raises(ValueError, match="--model"):
        simulate_bar_transformation(out=tmp_path)
    with pytest.raises(ValueError, match="start < end"):
        simulate_bar_transformation(out=tmp_path, analytic=True, start=0.1, end=0.0)
