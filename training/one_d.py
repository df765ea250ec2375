"""The 1-D well-discovery study (docs/science.md §2): ``lse-material fit-1d`` and ``lse-material bench fit-1d``.

A configuration of the one training engine (``training.engine``; ``one_d_config``): each
function's sample goes in as columns (``datafile.dataset_from_columns``) and is one engine run
with all its seeds as one batched ensemble; this module keeps only the study's evaluation, model
files and figures. Protocol [ours] (the paper leaves it open; docs/science.md §2):

1. 250 points uniform at random per function (one sample, seed 1000), 200 for training and 50
   held out (the engine's split); x normalised to [-1, 1] by the training box, f to [0, 1] by
   its range (``data.energy_normalization = "range"``), so the loss is (RMSE / range)²;
2. modes start as bowls centred on spread data points (``LSEICNN.spread_modes``), ρ = exp(ρ̃)
   starting at 1, gates at w = 1;
3. fit with Adam (both groups lr 1e-2), proximal L1 λ = 1e-4 after a 50 % warm-up;
4. fold the gates (an exact reparametrisation) and run the engine's batched greedy backward
   elimination: close the least used mode, fine-tune, keep the removal if the RMSE stays within
   ``tolerance`` (fraction of the function's range; the engine's tolerance is its square) or
   within 10 % of the RMSE before (the loss within 1.21×);
5. polish without L1 (network lr 3e-3). The well count is the paper's: gates with g(w) > 1e-3.

Each function's engine run is in ``out/<function>/`` (its config, summary with every seed's
minima, and the member with the smallest validation loss); ``out/<function>.safetensors`` is
the study's pick: a seed with the right well count and the smallest RMSE on the 200-point grid.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from lse_material.training.data.one_d import FUNCTIONS, sample
from lse_material.training.datafile import DataConfig, dataset_from_columns
from lse_material.training.engine import (
    FitConfig,
    ModelConfig,
    OutputConfig,
    TrainConfig,
    TrainResult,
    train,
)
from lse_material.training.fit import FitResult, fit, prepare_output

import lse_material
from lse_material.atomic import write_json
from lse_material.lse import LSEICNN
from lse_material.plotting import save_figure, subplots

__all__ = ["FunctionName", "OneDStudy", "bench_fit_1d", "fit_1d", "one_d_columns", "one_d_config"]

N_TRAIN, N_EVAL, N_MODES, HIDDEN = 200, 200, 10, (10, 10)  # docs/science.md §2 [paper]
VALIDATION = 0.2  # held-out fraction of the sample [ours]: 250 points, 200 for training
N_SAMPLE = round(N_TRAIN / (1 - VALIDATION))
DATA_SEED = 1000
FULL_LOG_EVERY = 100  # epochs between history records in the full study (20000 // 200)
FunctionName = Literal["cosine", "minmix", "quartic", "all"]  # a key of FUNCTIONS, or all


class OneDStudy(NamedTuple):
    """Result of ``fit_1d``: the summary dict (also written as summary.json) and the models."""

    summary: dict
    models: dict[str, LSEICNN]


def one_d_config(
    *,
    seeds: int,
    epochs: int,
    finetune_epochs: int,
    polish_epochs: int,
    tolerance: float,
    device: str = "auto",
    threads: int = 0,
) -> TrainConfig:
    """The protocol of this module as a ``training.engine`` config for the columns of
    ``one_d_columns`` (input ``x``, energy ``f``); ``tolerance``: the RMSE a mode removal may
    reach, as a fraction of the function's range (> 0)."""
    if not tolerance > 0:
        raise ValueError(f"tolerance is a fraction of the range, > 0; got {tolerance}.")
    return TrainConfig(
        data=DataConfig(
            file="",
            inputs=("x",),
            energy="f",
            validation=VALIDATION,
            energy_normalization="range",
        ),
        model=ModelConfig(max_modes=N_MODES, hidden=HIDDEN, rho_start=1.0),
        fit=FitConfig(
            epochs=epochs,
            lr_network=1e-2,
            lr_gates=1e-2,
            l1=1e-4,
            sparsify_after=0.5,
            ramp=0.2,
            tolerance=tolerance**2,  # the loss is (RMSE / range)²
            elimination_growth=1.21,  # the RMSE within 10 % of before
            finetune_epochs=finetune_epochs,
            polish_epochs=polish_epochs,
            polish_lr_network=3e-3,
            seeds=seeds,
            device=device,
            threads=threads,
        ),
        output=OutputConfig(plots=False, log_every=max(epochs // 200, 1)),
    )


def one_d_columns(name: str) -> dict:
    """The engine's columns of function ``name``'s sample: ``{"x": (250,), "f": (250,)}``."""
    x, y = sample(name, N_SAMPLE, generator=torch.Generator().manual_seed(DATA_SEED))
    return {"x": x[:, 0].numpy(), "f": y.numpy()}


def _train_function(name: str, config: TrainConfig, out: Path, *, resume: bool) -> TrainResult:
    """One engine run of function ``name`` in ``out/<name>/`` (a run there is replaced unless
    ``resume``)."""
    source = f"1-D function {name}: sample({N_SAMPLE}, seed={DATA_SEED})"
    rows = dataset_from_columns(config.data, one_d_columns(name), source=source)
    return train(config, out=out / name, data=rows, overwrite=not resume, resume=resume)


class _Evaluation(NamedTuple):
    """A function's summary entry, its study model, grid ``(200,)`` and fits ``(seeds, 200)``."""

    result: dict
    model: LSEICNN
    grid: torch.Tensor
    pred: torch.Tensor


def _evaluate(name: str, run: TrainResult, out: Path) -> _Evaluation:
    """Every seed on the function's 200-point grid: RMSE (fraction of the range), the paper's
    well count; saves the best seed (right count, then smallest RMSE) as ``out/<name>.safetensors``."""
    lo, hi = FUNCTIONS[name].domain
    grid = torch.linspace(lo, hi, N_EVAL, dtype=torch.float64)
    truth = FUNCTIONS[name].f(grid)
    with torch.no_grad():
        pred = run.ensemble(grid[:, None])  # (seeds, 200)
    value_range = float(truth.max() - truth.min())
    rmse = (pred - truth).pow(2).mean(-1).sqrt() / value_range
    counts = run.ensemble.active_modes().tolist()
    wells = len(FUNCTIONS[name].wells)
    correct = [c == wells for c in counts]
    best = min(range(len(counts)), key=lambda s: (not correct[s], float(rmse[s])))
    seeds = run.summary["seeds"]
    result = {
        "wells_true": wells,
        "active_modes": counts,
        "seeds_correct": sum(correct),
        "minima": seeds["well_count"],
        "rmse": float(rmse[best]) * value_range,
        "rmse_relative": rmse.tolist(),
        "rmse_relative_max": float(rmse.max()),
        "validation_loss": seeds["validation_loss"],
        "range": value_range,
        "best_seed": best,
        "rho": seeds["rho"],
        "elimination_rounds": run.summary["elimination"]["rounds"],
        "engine_run": str(run.out),
    }
    single = run.ensemble.member(best)
    lse_material.save(
        single,
        out / f"{name}.safetensors",
        training_box={"x": [lo, hi]},
        output={"name": f"{name}(x)", "units": "1"},
        input_units=["1"],
        training={"study": "fit-1d", "seed": best, "rmse": result["rmse"]},
    )
    return _Evaluation(result, single, grid, pred)


def fit_1d(
    *,
    out: str | Path,
    function: FunctionName = "all",
    seeds: int = 10,
    epochs: int = 20000,
    finetune_epochs: int = 1000,
    polish_epochs: int = 2000,
    tolerance: float = 0.009,
    device: str = "auto",
    threads: int = 0,
    plots: bool = True,
    resume: bool = False,
) -> OneDStudy:
    """The 1-D well-discovery study (docs/science.md §2).

    Writes ``out/summary.json``, ``out/history.json``, the best model per function
    (``out/<function>.safetensors``), each function's engine run (``out/<function>/``) and,
    with ``plots``, history_active_loss.png, fits.png and rho_gates.png. Returns the summary
    and the models.

    Parameters
    ----------
    out
        output folder.
    function
        the test function, or all three.
    seeds
        seeds per function (one engine run per function, its seeds one batched ensemble).
    epochs
        fit-phase epochs (the elimination and polish phases add theirs; all are recorded in
        the summary).
    finetune_epochs
        epochs of the fine-tuning after each mode removal.
    polish_epochs
        epochs of the final fit without L1.
    tolerance
        RMSE (fraction of the function's range) a mode removal may reach.
    device
        auto, cpu or cuda[:N].
    threads
        torch CPU threads (0: leave as is).
    plots
        write the PNG figures.
    resume
        continue the study in out from its checkpoints (same options): each function's engine
        run in out/<function>/ that has one resumes, the others start; without it, runs there
        are replaced.
    """
    names = sorted(FUNCTIONS) if function == "all" else [function]
    if any(n not in FUNCTIONS for n in names):
        raise ValueError(f"function must be one of {sorted(FUNCTIONS)} or 'all'; got {function!r}.")
    if seeds < 1 or epochs < 1:
        raise ValueError(f"seeds and epochs must be >= 1; got seeds={seeds}, epochs={epochs}.")
    out = prepare_output(out, threads=threads)
    config = one_d_config(
        seeds=seeds,
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        polish_epochs=polish_epochs,
        tolerance=tolerance,
        device=device,
        threads=threads,
    )
    resumed = [name for name in names if resume and (out / name / "checkpoint.pt").is_file()]
    if resume and not resumed:
        raise ValueError(f"--resume: {out} holds no checkpoint of a fit-1d run; start without it.")
    t0 = time.perf_counter()
    runs = {name: _train_function(name, config, out, resume=name in resumed) for name in names}
    seconds = time.perf_counter() - t0
    evaluations = {name: _evaluate(name, run, out) for name, run in runs.items()}
    rounds = {name: run.summary["elimination"]["rounds"] for name, run in runs.items()}
    f = config.fit
    summary = {
        "seeds": seeds,
        "epochs": epochs,
        "seconds": seconds,
        "epochs_total": sum(epochs + r * finetune_epochs + polish_epochs for r in rounds.values()),
        "protocol": {
            "fit_epochs": epochs,
            "elimination_rounds": rounds,
            "finetune_epochs": finetune_epochs,
            "polish_epochs": polish_epochs,
            "tolerance": tolerance,
            "l1": f.l1,
            "rho_start": config.model.rho_start,
            "lr_network": f.lr_network,
            "lr_gates": f.lr_gates,
            "polish_lr_network": f.polish_lr_network,
            "samples": N_SAMPLE,
            "train_rows": runs[names[0]].summary["rows"]["train"],
            "data_seed": DATA_SEED,
            "device": runs[names[0]].summary["device"],
        },
        "functions": {name: e.result for name, e in evaluations.items()},
    }
    write_json(out / "summary.json", summary)
    write_json(
        out / "history.json",
        {
            "names": names,
            "seeds": seeds,
            "fit": {name: run.history.__dict__ for name, run in runs.items()},
            "elimination_removed": {
                name: run.summary["elimination"]["removed"] for name, run in runs.items()
            },
        },
    )
    if plots:
        _plots(out, {name: run.history for name, run in runs.items()}, evaluations)
    return OneDStudy(summary, {name: e.model for name, e in evaluations.items()})


def _plots(out: Path, histories: dict[str, FitResult], evaluations: dict[str, _Evaluation]):
    """The study's figures: active modes and loss vs epoch (all seeds + median), fits, ρ and gates."""
    names = list(histories)
    width = 4.5 * len(names)
    series = {
        name: {
            "epoch": torch.tensor(h.epoch),
            "loss": torch.tensor(h.loss).reshape(len(h.epoch), -1),  # (T, seeds)
            "active modes": torch.tensor(h.active_modes, dtype=torch.float64).reshape(
                len(h.epoch), -1
            ),
            "rho": torch.tensor(h.rho).reshape(len(h.epoch), -1),
            "gates": torch.tensor(h.gates).reshape(len(h.epoch), -1, N_MODES),  # (T, seeds, N)
        }
        for name, h in histories.items()
    }
    fig, axes = subplots(2, len(names), size=(width, 6))
    for i, name in enumerate(names):
        epochs = series[name]["epoch"]
        for ax, label in ((axes[0, i], "active modes"), (axes[1, i], "loss")):
            values = series[name][label]
            ax.plot(epochs, values, color="0.7", lw=0.8)
            ax.plot(epochs, values.median(dim=1).values, color="k", lw=2, label="median")
            ax.set_xlabel("epoch (fit phase)")
            ax.set_ylabel(label)
            ax.set_title(name)
        axes[1, i].set_yscale("log")
        axes[0, i].axhline(len(FUNCTIONS[name].wells), color="tab:red", ls="--", label="true wells")
        axes[0, i].legend()
    save_figure(fig, out / "history_active_loss.png")

    fig, axes = subplots(1, len(names), size=(width, 3.6))
    for i, name in enumerate(names):
        ax, e = axes[0, i], evaluations[name]
        ax.plot(e.grid, FUNCTIONS[name].f(e.grid), "k", lw=2.5, label="truth")
        for fitted in e.pred:
            ax.plot(e.grid, fitted, lw=0.9, alpha=0.8)
        ax.set_title(f"{name}: fits of {len(e.pred)} seeds")
        ax.legend()
    save_figure(fig, out / "fits.png")

    fig, axes = subplots(2, len(names), size=(width, 6))
    for i, name in enumerate(names):
        epochs = series[name]["epoch"]
        axes[0, i].semilogy(epochs, series[name]["rho"])
        axes[0, i].set_title(f"{name}: ρ per seed")
        axes[1, i].plot(epochs, series[name]["gates"][:, 0])  # the first seed's gates
        axes[1, i].set_title(f"{name}: gates g(w), seed 0")
        axes[1, i].set_xlabel("epoch (fit phase)")
    save_figure(fig, out / "rho_gates.png")


def _dedicated_data(names: list[str], seeds: int):
    """The former dedicated verb's batched data: x in [-1, 1] ``(M, 200, 1)`` and f in [0, 1]
    ``(M, 200)``, M = len(names)·seeds, each member its own sample."""
    xs, ys = [], []
    for name in names:
        for seed in range(seeds):
            x, y = sample(name, N_TRAIN, generator=torch.Generator().manual_seed(DATA_SEED + seed))
            xs.append(x / FUNCTIONS[name].domain[1])
            ys.append((y - y.min()) / (y.max() - y.min()))
    return torch.stack(xs), torch.stack(ys)


def bench_fit_1d(
    *, out: str | Path, epochs: int = 500, seeds: int = 10, repeats: int = 2, threads: int = 0
) -> dict:
    """Time per fit epoch of the study: the engine path (``fit-1d``: one run per function, its
    seeds batched) vs the former dedicated loop (all functions × seeds as one batched fit) vs
    one seed at a time.

    Same model (10 modes, 10 × 10), options and epochs on the CPU, a history record (and the
    engine's validation loss) every 100 epochs as in the full study; the engine's time is its
    fit phase summed over the three functions (no elimination, no polish). Each side runs
    ``repeats`` times, alternating; ``ratio_engine_vs_dedicated`` compares the fastest runs,
    ``ratio_of_medians`` the medians. Writes ``out/summary.json`` with the raw times, the ratios
    and ``speedup_batched_vs_sequential``.

    Parameters
    ----------
    out
        output folder.
    epochs
        Adam epochs timed per run.
    seeds
        seeds per function.
    repeats
        timed runs per side (the fastest counts).
    threads
        torch CPU threads (0: leave as is).
    """
    out = prepare_output(out, threads=threads)
    names = sorted(FUNCTIONS)
    x, y = _dedicated_data(names, seeds)
    log_every = min(FULL_LOG_EVERY, epochs)
    config = one_d_config(
        seeds=seeds, epochs=epochs, finetune_epochs=1, polish_epochs=0, tolerance=0.009
    )
    config = replace(
        config,
        fit=replace(config.fit, elimination=False, device="cpu"),
        output=replace(config.output, log_every=log_every),
    )
    options = config.fit.options(log_every=log_every, progress=False)

    def dedicated(xb, yb, ensemble=None):
        model = LSEICNN(1, N_MODES, HIDDEN, ensemble=ensemble, rho=1.0)
        model.spread_modes(xb)
        return fit(model, lambda: (model(xb) - yb).pow(2).mean(-1), options).seconds

    def engine() -> float:
        runs = [_train_function(name, config, out / "engine", resume=False) for name in names]
        return sum(run.summary["fit_seconds"] for run in runs)

    times = {"engine": [], "dedicated": [], "sequential": []}
    for _ in range(repeats):
        times["engine"].append(1e3 * engine() / epochs)
        times["dedicated"].append(1e3 * dedicated(x, y, ensemble=x.shape[0]) / epochs)
    times["sequential"].append(1e3 * sum(dedicated(x[m], y[m]) for m in range(x.shape[0])) / epochs)
    best = {side: min(t) for side, t in times.items()}
    result = {
        "epochs": epochs,
        "members": x.shape[0],
        "threads": torch.get_num_threads(),
        **{f"{side}_ms_per_epoch": t for side, t in times.items()},
        "ratio_engine_vs_dedicated": best["engine"] / best["dedicated"],
        "ratio_of_medians": statistics.median(times["engine"])
        / statistics.median(times["dedicated"]),
        "speedup_batched_vs_sequential": best["sequential"] / best["dedicated"],
    }
    write_json(out / "summary.json", result)
    return result
