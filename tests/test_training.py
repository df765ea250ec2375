"""The trainer: batched ensembles, L1 proximal steps, elimination, checkpoints, the 1-D study, the CLI."""

import json

import pytest
import torch
from lse_material.training.data.one_d import FUNCTIONS
from lse_material.training.fit import FitOptions, fit, fold_gates, prune_by_elimination
from lse_material.training.one_d import fit_1d

from lse_material import LSEICNN
from lse_material.cli import main


def _quadratic_problem(ensemble=3):
    model = LSEICNN(1, 4, (6,), ensemble=ensemble, generator=torch.Generator().manual_seed(0))
    x = torch.linspace(-1, 1, 50, dtype=torch.float64)[:, None]
    y = x[:, 0] ** 2
    return model, x, lambda: (model(x) - y).pow(2).mean(-1)


def test_ensemble_members_train_independently():
    model, x, loss = _quadratic_problem()
    twin = LSEICNN(1, 4, (6,), generator=torch.Generator().manual_seed(9))
    twin.load_state_dict(
        {k: (v[1] if v.ndim and v.shape[0] == 3 else v) for k, v in model.state_dict().items()}
    )
    options = FitOptions(epochs=30, progress=False, log_every=10, l1=0.0)
    fit(model, loss, options)
    fit(twin, lambda: (twin(x) - x[:, 0] ** 2).pow(2).mean(), options)
    assert torch.allclose(model(x)[1], twin(x), rtol=0, atol=1e-10)


def test_fit_reports_every_n_epochs_when_stderr_is_not_a_terminal(capsys):
    model, _, loss = _quadratic_problem()
    fit(model, loss, FitOptions(epochs=40, report_every=10, log_every=40), description="demo")
    lines = capsys.readouterr().err.strip().splitlines()  # captured stderr: not a terminal
    assert [line.split()[2] for line in lines] == ["1/40", "11/40", "21/40", "31/40", "40/40"]
    assert all("loss" in line and "active modes" in line and "rho" in line for line in lines)
    fit(model, loss, FitOptions(epochs=40, progress=False))
    assert capsys.readouterr().err == ""


def test_proximal_l1_gives_exact_zeros_for_unused_modes():
    model, x, loss = _quadratic_problem(ensemble=None)
    with torch.no_grad():
        model.modes.out_bias[2:] += 50.0  # modes 2, 3 lie far above the data: never used
    fit(model, loss, FitOptions(epochs=400, l1=1e-2, sparsify_after=0.0, ramp=0.0, progress=False))
    gates = model.gates().detach()
    assert float(gates[2]) == 0.0 and float(gates[3]) == 0.0


def test_fold_gates_is_an_identity():
    model, x, _ = _quadratic_problem()
    with torch.no_grad():
        model.gate_weights.copy_(torch.tensor([0.01, 0.5, 0.0, 3.0]))
    before = model(x).detach()
    fold_gates(model)
    assert torch.allclose(model(x), before, rtol=1e-12, atol=1e-12)
    assert model.gates()[..., 2].abs().max() == 0


def test_rejected_elimination_restores_members_exactly():
    model, x, loss = _quadratic_problem()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    options = FitOptions(epochs=5, l1=0.0, progress=False)
    result = prune_by_elimination(
        model, loss, x, finetune=options, accept=lambda b, a: torch.zeros_like(a, dtype=bool)
    )
    assert result.removed == [0, 0, 0]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_lbfgs_refines_below_adams_floor_and_keeps_closed_gates_closed():
    """The L-BFGS refinement after Adam: the loss falls well below where Adam stalls, a
    closed gate stays exactly 0, the history has one record per chunk, and L1 is refused."""
    model, x, loss = _quadratic_problem(ensemble=None)
    fit(model, loss, FitOptions(epochs=300, l1=0.0, lr_network=1e-2, progress=False))
    with torch.no_grad():
        model.gate_weights[3] = 0.0
    adam = float(loss().detach())
    refined = fit(
        model, loss, FitOptions(epochs=200, l1=0.0, optimizer="lbfgs", log_every=50, progress=False)
    )
    assert float(loss().detach()) < 0.1 * adam, adam
    assert float(model.gates()[3]) == 0.0
    assert refined.epoch[0] == 50 and len(refined.epoch) <= 4 and refined.epoch[-1] <= 200
    assert refined.loss[-1] == pytest.approx(float(loss().detach()))
    with pytest.raises(ValueError, match="without L1.*l1=0.001"):
        FitOptions(epochs=10, l1=1e-3, optimizer="lbfgs")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        FitOptions(epochs=10, optimizer="sgd")


def test_elimination_records_each_try():
    model, x, loss = _quadratic_problem()
    options = FitOptions(epochs=20, l1=0.0, progress=False, optimizer="lbfgs", log_every=20)
    result = prune_by_elimination(
        model, loss, x, finetune=options, accept=lambda b, a: torch.zeros_like(a, dtype=bool)
    )
    for tries in result.tries:  # every try rejected: each mode tried once, down to one left
        assert sorted(t["mode"] for t in tries) == [0, 1, 2, 3]
        assert all(not t["kept"] and t["loss_after"] > 0 < t["loss_before"] for t in tries)


def test_checkpoint_resume_continues_the_same_run(tmp_path):
    model, x, loss = _quadratic_problem(ensemble=None)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    options = FitOptions(epochs=40, l1=1e-2, progress=False, checkpoint_every=10)
    fit(model, loss, options)  # straight through
    straight = model(x).detach()

    model.load_state_dict(init)
    calls = []

    def crashing_loss():
        calls.append(1)
        if len(calls) == 26:
            raise KeyboardInterrupt  # the run dies after its checkpoint at epoch 20
        return loss()

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(model, crashing_loss, options, checkpoint=ckpt)
    model.load_state_dict(init)  # a new process starts from scratch; the checkpoint restores
    history = fit(model, loss, options, checkpoint=ckpt)
    assert torch.allclose(model(x), straight, rtol=0, atol=1e-12)
    assert history.epoch[-1] == 39


def test_trainer_finds_two_wells_on_a_double_well(tmp_path):
    study = fit_1d(
        out=tmp_path,
        function="quartic",
        seeds=2,
        epochs=4000,
        finetune_epochs=400,
        polish_epochs=400,
        plots=False,
    )
    result = study.summary["functions"]["quartic"]
    assert max(result["active_modes"]) >= 2 and result["seeds_correct"] >= 1, result
    model = study.models["quartic"]
    grid = torch.linspace(-2, 2, 401, dtype=torch.float64)[:, None]
    energy = model.derivatives(grid, hessian=False).energy.detach()
    interior = (energy[1:-1] < energy[:-2]) & (energy[1:-1] < energy[2:])
    minima = grid[1:-1, 0][interior]
    assert len(minima) == 2, minima
    assert torch.allclose(
        minima, torch.tensor(FUNCTIONS["quartic"].wells, dtype=torch.float64), atol=0.1
    )


def test_cli_fit_1d_and_inspect(tmp_path, capsys):
    out = tmp_path / "study"
    assert (
        main(
            [
                "fit-1d",
                "--function",
                "minmix",
                "--seeds",
                "2",
                "--epochs",
                "60",
                "--finetune-epochs",
                "10",
                "--polish-epochs",
                "10",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"seeds", "epochs", "seconds", "functions"}
    assert set(summary["functions"]["minmix"]) >= {
        "wells_true",
        "active_modes",
        "seeds_correct",
        "rmse",
        "range",
    }
    for png in ("history_active_loss.png", "fits.png", "rho_gates.png"):
        assert (out / png).stat().st_size > 1000
    assert main(["inspect", str(out / "minmix.safetensors")]) == 0
    assert "inputs (column order)" in capsys.readouterr().out
    assert main(["fit-1d", "--function", "quartic", "--seeds", "0", "--out", str(out)]) == 2
    assert main(["fit-1d", "--tolerance", "-0.01", "--out", str(out)]) == 2
    assert "tolerance is a fraction of the range, > 0; got -0.01" in capsys.readouterr().err


def test_fit_1d_resumes_from_the_engine_checkpoints(tmp_path):
    """--resume continues each function's engine run from its checkpoint (the run is not
    started afresh): resuming a finished study ends with the same seeds, well counts and fits;
    with no checkpoint it refuses."""
    options = dict(function="quartic", seeds=2, epochs=40, finetune_epochs=5, polish_epochs=5)
    with pytest.raises(ValueError, match="--resume: .* holds no checkpoint"):
        fit_1d(out=tmp_path, resume=True, plots=False, **options)
    first = fit_1d(out=tmp_path, plots=False, **options).summary["functions"]["quartic"]
    started = (tmp_path / "quartic" / "config.json").stat().st_mtime_ns
    again = fit_1d(out=tmp_path, plots=False, resume=True, **options).summary["functions"]
    assert (tmp_path / "quartic" / "config.json").stat().st_mtime_ns == started  # not restarted
    for key in ("active_modes", "rmse_relative", "best_seed", "rho", "elimination_rounds"):
        assert again["quartic"][key] == first[key], key


def test_bench_fit_1d_times_the_engine_and_the_dedicated_loop_side_by_side(tmp_path):
    """The benchmark runs both paths on the same study (CI size) and writes its ratios."""
    from lse_material.training.one_d import bench_fit_1d

    result = bench_fit_1d(out=tmp_path, epochs=3, seeds=1, repeats=2, threads=1)
    assert json.loads((tmp_path / "summary.json").read_text()) == result
    assert result["members"] == len(FUNCTIONS)
    times = {side: result[f"{side}_ms_per_epoch"] for side in ("engine", "dedicated")}
    assert all(len(t) == 2 and min(t) > 0 for t in times.values())
    assert result["ratio_engine_vs_dedicated"] == min(times["engine"]) / min(times["dedicated"])
    for name in FUNCTIONS:  # one engine run per function
        assert (
            json.loads((tmp_path / "engine" / name / "summary.json").read_text())["fit_epochs"] == 3
        )
