"""Well analysis (lse_material.wells): minima, saddles and barriers of known potentials."""

import json
import math

import numpy as np
import pytest
import torch
from lse_material.training.data import mechanochemical as mc

import lse_material
from lse_material.lse import LSEICNN
from lse_material.modelcard import model_card
from lse_material.potential import AnalyticPotential
from lse_material.wells import (
    WellAnalysis,
    analyse_wells,
    compare_wells,
    find_wells,
    order_parameter_scale,
)

SQ2, SQ6 = math.sqrt(2), math.sqrt(6)


def order_parameters(location: dict) -> tuple[float, float, float]:
    """(e1, e2, e3) of a mechanochemical location."""
    E11, E22, E33 = location["E11"], location["E22"], location["E33"]
    return (E11 + E22 + E33) / math.sqrt(3), (E11 - E22) / SQ2, (E11 + E22 - 2 * E33) / SQ6


def strain_of(e2: float, e3: float) -> tuple[float, float, float]:
    """(E11, E22, E33) with e1 = 0 and the given (e2, e3)."""
    return e2 / SQ2 + e3 / SQ6, -e2 / SQ2 + e3 / SQ6, -2 * e3 / SQ6


@pytest.fixture(scope="module")
def variants():
    return find_wells(mc.potential(), fix={"c": 1.0}, box=mc.TRAINING_BOX, samples=128)


def test_three_variants_and_their_saddles_at_c_equal_s_c(variants):
    p = mc.MechanochemicalParams()
    assert len(variants.minima) == 3
    truth = [
        (p.s_e * math.sin(a), p.s_e * math.cos(a)) for a in (0, 2 * math.pi / 3, -2 * math.pi / 3)
    ]
    for m in variants.minima:
        e1, e2, e3 = order_parameters(m.location)
        assert min(math.hypot(e2 - t2, e3 - t3) for t2, t3 in truth) < 1e-6
        assert abs(e1) < 1e-9 and max(abs(m.location[n]) for n in ("2E23", "2E13", "2E12")) < 1e-9
        assert m.energy == pytest.approx(-p.d_e, abs=1e-10)
        assert min(m.eigenvalues) > 0 and m.mode is None and m.location["c"] == 1.0
    # Saddles: midway between neighbouring variants at |(e2, e3)| = s_e / 2, where
    # ψ = 3/2·d_e/16 - d_e/8 - 3/2·d_e/4 ... = -5 d_e / 32 (eq. 11 at c̃ = 1, docs/science.md §3).
    assert sorted(b.pair for b in variants.barriers) == [(0, 1), (0, 2), (1, 2)]
    for b in variants.barriers:
        assert b.verified
        assert sum(v < 0 for v in b.eigenvalues) == 1
        assert b.energy == pytest.approx(-5 * p.d_e / 32, abs=1e-10)
        assert b.heights == pytest.approx((p.d_e - 5 * p.d_e / 32,) * 2, abs=1e-10)
        _, e2, e3 = order_parameters(b.location)
        assert math.hypot(e2, e3) == pytest.approx(p.s_e / 2, abs=1e-8)
        assert len(b.path) == 25 and b.path[0] == tuple(
            variants.minima[b.pair[0]].location.values()
        )


def test_one_minimum_at_zero_strain_at_c_zero():
    a = find_wells(mc.potential(), fix={"c": 0.0}, box=mc.TRAINING_BOX, samples=64)
    assert len(a.minima) == 1 and a.barriers == ()
    assert max(abs(v) for v in a.minima[0].location.values()) < 1e-9
    assert a.minima[0].energy == pytest.approx(0.0, abs=1e-14)


@pytest.fixture(scope="module")
def joint():
    return find_wells(mc.potential(), box=mc.TRAINING_BOX, samples=64)


def test_four_wells_in_the_joint_space(joint):
    a = joint
    assert len(a.minima) == 4
    reference = [m for m in a.minima if abs(m.location["c"]) < 1e-6]
    assert len(reference) == 1 and reference[0].in_box
    variants = [m for m in a.minima if m is not reference[0]]
    for m in variants:  # just above c = s_c: ∂ψ/∂c = -4 d_e/s_c balanced by the chemical well
        assert m.location["c"] == pytest.approx(1.0124, abs=1e-3) and not m.in_box
        assert math.hypot(*order_parameters(m.location)[1:]) == pytest.approx(0.1012, abs=1e-3)
        assert m.energy < -0.1
    assert len(a.barriers) == 6 and all(b.verified for b in a.barriers)
    chemical = [b for b in a.barriers if 3 in b.pair or a.minima.index(reference[0]) in b.pair]
    # Reference <-> variant saddles sit on the chemical barrier (ψ ≈ d_c at c ≈ s_c/2).
    assert all(b.energy == pytest.approx(1.0, abs=1e-3) for b in chemical)
    assert all(sum(v < 0 for v in b.eigenvalues) == 1 for b in a.barriers)


def quartic_potential():
    return AnalyticPotential(lambda x: (x[:, 0] ** 2 - 1) ** 2 + 0.3 * x[:, 0], ["x"])


def test_quartic_double_well_and_its_exact_barrier():
    a = find_wells(quartic_potential(), box={"x": (-2.0, 2.0)}, samples=32)
    roots = np.sort(np.roots([4.0, 0.0, -4.0, 0.3]).real)  # f'(x) = 4x³ - 4x + 0.3
    f = lambda x: (x**2 - 1) ** 2 + 0.3 * x  # noqa: E731
    found = sorted(m.location["x"] for m in a.minima)
    assert found == pytest.approx([roots[0], roots[2]], abs=1e-10)
    assert len(a.barriers) == 1
    b = a.barriers[0]
    assert b.verified and b.location["x"] == pytest.approx(roots[1], abs=1e-10)
    i, j = b.pair
    heights = (f(roots[1]) - a.minima[i].energy, f(roots[1]) - a.minima[j].energy)
    assert b.heights == pytest.approx(heights, abs=1e-12)
    assert a.minima[0].energy == pytest.approx(f(roots[0]), abs=1e-12)  # deepest first


def bowls(centres, depths, *, rho=20.0, names=("u", "v")) -> LSEICNN:
    """An LSE-ICNN whose modes are convex bowls symmetric about known centres."""
    n, d = len(centres), len(names)
    model = LSEICNN(d, n, hidden=(2 * d, 2), input_names=names, rho=rho)
    with torch.no_grad():
        m = model.modes
        A = torch.cat([torch.eye(d), -torch.eye(d)]).to(torch.float64)
        m.x_weights[0].copy_(3 * A.expand(n, 2 * d, d))
        m.x_weights[1].zero_()  # no direct input term: W_i(c + δ) = W_i(c - δ)
        m.z_weights_raw[0].fill_(0.5)  # equal weights on each ± pair keep the symmetry
        m.out_x.zero_()
        m.out_z_raw.fill_(0.0)  # the same output weights: W_i(c_i) = 2 log² 2 + depth_i
        m.center_on(torch.tensor(centres, dtype=torch.float64))
        m.out_bias.copy_(torch.tensor(depths, dtype=torch.float64))
        model.gate_weights.fill_(10.0)
    return model


def test_lse_icnn_bowls_minima_sit_in_their_own_modes():
    centres = [(-1.0, -0.8), (1.0, -0.6), (0.0, 1.0)]
    model = bowls(centres, [0.0, -0.5, -1.0])
    box = {"u": (-2.0, 2.0), "v": (-2.0, 2.0)}
    a = find_wells(model, box=box, samples=64)
    assert len(a.minima) == 3
    assert [m.mode for m in a.minima] == [2, 1, 0]  # deepest first
    for m in a.minima:
        assert math.dist((m.location["u"], m.location["v"]), centres[m.mode]) < 1e-3
        assert min(m.eigenvalues) > 0
    assert len(a.barriers) == 3
    for b in a.barriers:
        assert b.verified and sum(v < 0 for v in b.eigenvalues) == 1
        assert b.energy > max(a.minima[i].energy for i in b.pair)
    # The closed-form derivatives agree with autograd at the saddles (the contract).
    x = torch.tensor([[b.location["u"], b.location["v"]] for b in a.barriers], dtype=torch.float64)
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xg).sum(), xg)
    assert float(g.abs().max()) < 1e-10
    # A closed gate removes its mode and its well.
    with torch.no_grad():
        model.gate_weights[1] = 0.0
    b = find_wells(model, box=box, samples=64, barriers=False)
    assert sorted(m.mode for m in b.minima) == [0, 2]


def test_compare_wells_measures_depth_distance_and_barrier_errors(variants):
    deeper = mc.potential(params=mc.MechanochemicalParams(d_e=0.11))
    found = find_wells(deeper, fix={"c": 1.0}, box=mc.TRAINING_BOX, samples=128)
    s_e = 0.1
    e2e3 = [
        [1 / SQ2 / s_e, -1 / SQ2 / s_e, 0, 0, 0, 0, 0],
        [1 / SQ6 / s_e, 1 / SQ6 / s_e, -2 / SQ6 / s_e, 0, 0, 0, 0],
    ]
    cmp = compare_wells(found, variants, scale=e2e3)
    assert cmp.missing == 0 and cmp.extra == 0
    for m in cmp.minima:  # same places (ψ scales with d_e at fixed s_e), 10 % deeper
        assert m.distance < 1e-6 and m.depth_error == pytest.approx(-0.1, abs=1e-9)
    assert len(cmp.barriers) == 3
    assert all(b.error == pytest.approx(0.1, abs=1e-9) and b.verified for b in cmp.barriers)
    json.dumps(cmp.to_json())
    # Against a single true well at the origin: no found variant is within tolerance.
    origin = find_wells(mc.potential(), fix={"c": 0.0}, box=mc.TRAINING_BOX, samples=16)
    far = compare_wells(found, origin, scale=e2e3, tolerance=0.5)
    assert far.missing == 1 and far.extra == 3 and far.minima[0].found is None


def test_json_round_trip_table_and_model_card(variants, tmp_path):
    data = json.loads(json.dumps(variants.to_json()))
    assert WellAnalysis.from_json(data) == variants
    table = variants.table()
    assert "3 minima, 3 barriers" in table and "-0.015625" in table
    model = bowls([(-1.0, 0.0), (1.0, 0.0)], [0.0, 0.0])
    path = lse_material.save(
        model,
        tmp_path / "bowls.safetensors",
        training_box={"u": [-2, 2], "v": [-2, 2]},
        wells=find_wells(model, box={"u": (-2, 2), "v": (-2, 2)}, samples=16).to_json(paths=False),
    )
    card = model_card(path)
    assert "2 minima, 1 barriers" in card


def test_verb_on_the_data_model_and_on_a_model_file(tmp_path, capsys):
    a = analyse_wells(data="mechanochemical", fix=["c=1"], out=str(tmp_path / "truth"), samples=64)
    assert len(a.minima) == 3
    written = json.loads((tmp_path / "truth" / "wells.json").read_text())
    assert len(written["minima"]) == 3 and len(written["barriers"][0]["path"]) == 25
    assert (tmp_path / "truth" / "wells.png").stat().st_size > 10_000
    assert "3 minima" in capsys.readouterr().out
    # Parameters scale the wells: d_e = 0.2 doubles the depth.
    b = analyse_wells(
        data="mechanochemical", fix=["c=1"], param=["d_e=0.2"], out=str(tmp_path / "p"), samples=64
    )
    assert all(m.energy == pytest.approx(-0.2, abs=1e-10) for m in b.minima)
    model = bowls([(-1.0, 0.0), (1.0, 0.0)], [0.0, -0.2])
    path = lse_material.save(
        model, tmp_path / "m.safetensors", training_box={"u": [-2, 2], "v": [-2, 2]}
    )
    c = analyse_wells(str(path), fix=["v=0"], out=str(tmp_path / "m"), samples=16)
    assert [m.mode for m in c.minima] == [1, 0] and len(c.barriers) == 1
    assert (tmp_path / "m" / "wells.png").is_file()
    # --truth: a mechanochemical-input model with one bowl at E = 0 matches the c = 0 truth.
    bowl = bowls([(0.0,) * 7], [0.0], names=mc.INPUT_NAMES)
    box = {n: list(v) for n, v in mc.TRAINING_BOX.items()}
    path = lse_material.save(bowl, tmp_path / "mc.safetensors", training_box=box)
    analyse_wells(
        str(path), truth="mechanochemical", fix=["c=0"], out=str(tmp_path / "t"), samples=16
    )
    written = json.loads((tmp_path / "t" / "wells.json").read_text())
    assert len(written["truth"]["minima"]) == 1
    match = written["comparison"]
    assert match["missing"] == 0 and match["extra"] == 0
    assert match["minima"][0]["distance"] < 1e-8 and abs(match["minima"][0]["depth_error"]) < 1e-12


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fix": {"E99": 0.0}}, "'E99'"),
        ({"fix": {"c": 2.0}}, "outside the box"),
        ({"fix": {"c": math.nan}}, "'c' must be finite"),
        ({"box": {"c": (1.0, 0.0)}}, "input 'c'"),
        ({"box": {"zz": (0.0, 1.0)}}, "zz"),
    ],
)
def test_bad_slices_raise_naming_the_input(options, message):
    box = dict(mc.TRAINING_BOX) | options.pop("box", {})
    with pytest.raises(ValueError, match=message):
        find_wells(mc.potential(), box=box, samples=4, **options)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"data": "mechanochemical", "fix": ["c"]}, "NAME=VALUE"),
        ({"data": "mechanochemical", "fix": ["c=one"]}, "--fix c must be a number"),
        ({"data": "mechanochemical", "param": ["q=1"]}, "--param q: unknown"),
        ({"data": "nope"}, "unknown data model"),
        ({}, "either a model file or --data"),
        ({"model": "x.safetensors", "data": "mechanochemical"}, "not both"),
        ({"data": "mechanochemical", "truth": "mechanochemical"}, "drop --data"),
        ({"model": "x.safetensors", "param": ["d_e=1"]}, "needs --data or --truth"),
    ],
)
def test_verb_bad_input(options, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        analyse_wells(out=str(tmp_path), samples=4, **options)


def test_potential_without_box_needs_one():
    with pytest.raises(ValueError, match="give box"):
        find_wells(quartic_potential())


def test_ensembles_are_refused_with_the_fix():
    model = LSEICNN(2, 2, ensemble=3, input_names=["u", "v"])
    with pytest.raises(ValueError, match=r"member\(i\)"):
        find_wells(model, box={"u": (-1, 1), "v": (-1, 1)})


def test_seven_input_lse_icnn_with_bowls_on_the_true_wells_and_sharp_ridges(joint):
    """The model the mechanochemical training aims for: one mode per true well, large ρ."""
    half = torch.tensor([0.15, 0.15, 0.15, 0.3, 0.3, 0.3, 0.5], dtype=torch.float64)
    shift = torch.tensor([0, 0, 0, 0, 0, 0, 0.5], dtype=torch.float64)
    wells = [[0.0] * 7] + [
        [*strain_of(0.1 * math.sin(a), 0.1 * math.cos(a)), 0, 0, 0, 1.0]
        for a in (0, 2 * math.pi / 3, -2 * math.pi / 3)
    ]
    centres = (torch.tensor(wells, dtype=torch.float64) - shift) / half
    model = bowls(centres.tolist(), [0.0, -0.3, -0.3, -0.3], names=mc.INPUT_NAMES, rho=100.0)
    model.set_normalization(input_shift=shift, input_scale=half, energy_scale=0.1)
    a = find_wells(model, box=mc.TRAINING_BOX)
    assert sorted(m.mode for m in a.minima) == [0, 1, 2, 3]
    for m in a.minima:
        x = torch.tensor([list(m.location.values())], dtype=torch.float64)
        assert float((x[0] - torch.tensor(wells[m.mode])).abs().max()) < 1e-6
    assert len(a.barriers) == 6
    assert all(b.verified and sum(v < 0 for v in b.eigenvalues) == 1 for b in a.barriers)
    cmp = compare_wells(a, joint, scale=order_parameter_scale())
    assert cmp.missing == 0 and cmp.extra == 0
    assert all(m.distance < 0.02 for m in cmp.minima)  # the true variants sit at c = 1.0124
    assert all(b.found is not None for b in cmp.barriers)


def test_a_path_through_a_missed_basin_adds_its_minimum():
    """x² - cos(1.5πx) (docs/science.md §2's cosine): starts only in the outer wells (the box centre 1.0
    and one data point), so the middle well is found by the path between them, not a start."""
    pot = AnalyticPotential(lambda x: x[:, 0] ** 2 - torch.cos(1.5 * math.pi * x[:, 0]), ["x"])
    options = {"box": {"x": (-0.5, 2.5)}, "samples": 0, "starts": [[-1.2]]}
    assert len(find_wells(pot, barriers=False, **options).minima) == 2
    a = find_wells(pot, **options)
    assert [round(m.location["x"], 3) for m in a.minima] == [0.0, -1.218, 1.218]
    assert a.minima[0].energy == pytest.approx(-1.0, abs=1e-12)
    assert sorted(b.pair for b in a.barriers) == [(0, 1), (0, 2)]  # not across the middle
    assert all(b.verified for b in a.barriers)
