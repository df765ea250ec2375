"""``lse-material bench bvp``: paired law/UFL solves, the median ratio, the time by part.

Speed is the benchmark's business; the test holds its JSON to what it claims: a ratio that is
the median of the pairs, per-part seconds that add up to the time per iteration (the law's
update counted only where there is a law), and solves that converged.
"""

import json

import numpy as np
import pytest
import torch
from lse_material.fem_cases.benchmarks import (
    ENERGY_OBJECTIVE_CASES,
    bench_bvp,
    bench_energy_objective,
)
from lse_material.fem_cases.verification import solve_block
from lse_material.training.data import mechanochemical as mc

import lse_material
from lse_material.lse import LSEICNN


def test_newton_timings_add_up_and_count_the_law_only_with_a_law():
    law = solve_block(mc.potential(), mesh_n=2, dim=2).newton
    reference = solve_block(None, mesh_n=2, dim=2).newton
    for result, with_law in ((law, True), (reference, False)):
        parts = result.timings
        assert result.converged and min(parts) >= 0
        assert np.isclose(sum(parts), result.seconds, rtol=1e-12, atol=1e-12)
        assert (parts.law_update > 0) == with_law
        assert parts.residual_assembly > 0 and parts.jacobian_assembly > 0


def test_bench_bvp_reports_the_median_of_paired_ratios_and_the_parts(tmp_path):
    model = LSEICNN(
        7, 1, (8,), input_names=mc.INPUT_NAMES, generator=torch.Generator().manual_seed(0)
    )
    model.set_normalization(input_shift=0.0, input_scale=0.1)
    model.place_modes(torch.zeros(1, 7, dtype=torch.float64))  # one convex bowl about E = 0
    path = lse_material.save(model, tmp_path / "m.safetensors")
    result = bench_bvp(model=str(path), out=str(tmp_path / "bench"), mesh=2, repeats=3)
    assert json.loads((tmp_path / "bench" / "summary.json").read_text())["repeats"] == 3
    pairs = result["newton_iteration_ratio_pairs"]
    assert len(pairs) == 3 and result["newton_iteration_ratio_law_over_ufl"] == np.median(pairs)
    for form in ("law", "ufl"):
        summary = result[form]
        assert summary["seconds_per_iteration"] == np.median(summary["seconds_per_iteration_runs"])
        parts = summary["seconds_per_iteration_by_part"]
        assert np.isclose(sum(parts.values()), summary["seconds_per_iteration"], rtol=1e-12)
        assert (parts["law_update"] > 0) == (form == "law")
        assert summary["residual_norms"][-1] < 1e-8 * summary["residual_norms"][0]
    assert result["live_inputs"] == ["E11", "E22", "2E12"]  # plane strain; c marked fixed


def test_bench_energy_objective_pairs_the_solves_and_reports_their_iterations(tmp_path):
    """The 2-D cases, one pair each: the JSON holds what a plain ``solve_block`` gives (the
    iterations, converged), the energy saves iterations at stretch 0.3 (17 -> 9 measured),
    the largest ratio is taken over the cases where both converge. No timing is asserted
    (that is the benchmark's)."""
    result = bench_energy_objective(out=str(tmp_path / "bench"), dims=(2,), repeats=1)
    assert json.loads((tmp_path / "bench" / "summary.json").read_text())["repeats"] == 1
    rows = result["cases"]
    cases = [c for c in ENERGY_OBJECTIVE_CASES if c[0] == 2]
    assert [(r["dim"], r["mesh"], r["stretch"]) for r in rows[::2]] == cases
    assert {r["form"] for r in rows} == {"analytic law", "pure UFL"}
    for r in rows:
        assert len(r["seconds_with"]) == len(r["seconds_without"]) == 1
    hard = [r for r in rows if (r["mesh"], r["stretch"]) == (8, 0.3)]
    assert all(r["converged_with"] and r["iterations_with"] < r["iterations_without"] for r in hard)
    plain = solve_block(None, dim=2, mesh_n=8, stretch=0.2).newton
    row = next(r for r in rows if (r["mesh"], r["stretch"], r["form"]) == (8, 0.2, "pure UFL"))
    assert row["converged_without"] == plain.converged and plain.converged
    assert row["iterations_without"] == plain.iterations
    both = [r["time_ratio"] for r in rows if r["converged_without"] and r["converged_with"]]
    assert result["largest_time_ratio_where_both_converge"] == max(both)
    with pytest.raises(ValueError, match="dims"):
        bench_energy_objective(out=str(tmp_path / "bad"), dims=(4,))
