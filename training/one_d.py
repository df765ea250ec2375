"""The 1-D well-discovery study (docs/science.md §2): ``lse-material fit-1d`` and ``lse-material bench fit-1d``.

All functions × seeds train as ONE ensemble model (a leading batch dimension), so a study is
one batched forward per epoch. Protocol [ours] (the paper leaves it open; docs/science.md §2):

1. modes start as bowls centred on spread data points (``LSEICNN.spread_modes``), ρ = exp(ρ̃)
   starting at 1, gates at w = 1;
2. fit with Adam (both groups lr 1e-2), proximal L1 λ = 1e-4 after a 50 % warm-up;
3. fold the gates (an exact reparametrisation) and run a batched greedy backward elimination:
   close the least used mode, fine-tune, keep the removal if the RMSE stays within
   ``tolerance`` (fraction of the function's range) or within 10 % of the RMSE before;
4. polish without L1. The well count is the paper's: gates with g(w) > 1e-3.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from lse_material.training.data.one_d import FUNCTIONS, sample
from lse_material.training.fit import (
    EliminationResult,
    FitOptions,
    FitResult,
    fit,
    fold_gates,
    prepare_output,
    prune_by_elimination,
    resolve_device,
)

import lse_material
from lse_material.atomic import write_json
from lse_material.lse import LSEICNN
from lse_material.plotting import save_figure, subplots

__all__ = ["FunctionName", "OneDStudy", "bench_fit_1d", "fit_1d"]

N_TRAIN, N_EVAL, N_MODES, HIDDEN = 200, 200, 10, (10, 10)  # docs/science.md §2 [paper]
FunctionName = Literal["cosine", "minmix", "quartic", "all"]  # a key of FUNCTIONS, or all


class OneDStudy(NamedTuple):
    """Result of ``fit_1d``: the summary dict (also written as summary.json) and the models."""

    summary: dict
    models: dict[str, LSEICNN]


def _ensemble_data(names: list[str], seeds: int):
    """x (M, 200, 1), targets (M, 200) and domain half-widths (M, 1, 1), M = len(names)·seeds."""
    xs, ys, half = [], [], []
    for name in names:
        for seed in range(seeds):
            x, y = sample(name, N_TRAIN, generator=torch.Generator().manual_seed(1000 + seed))
            xs.append(x)
            ys.append(y)
            half.append(FUNCTIONS[name].domain[1])
    return torch.stack(xs), torch.stack(ys), torch.tensor(half, dtype=torch.float64)[:, None, None]


class _Data(NamedTuple):
    """The normalised ensemble data: each member's x in [-1, 1], f in [0, 1].

    x (M, 200, 1), y (M, 200) on the device; half (M, 1, 1) domain half-widths, low and span
    (M, 1) the shift and scale of f, on the CPU.
    """

    x: torch.Tensor
    y: torch.Tensor
    half: torch.Tensor
    low: torch.Tensor
    span: torch.Tensor


def _normalised_data(names: list[str], seeds: int, device: torch.device) -> _Data:
    x, y, half = _ensemble_data(names, seeds)
    low = y.min(-1, keepdim=True).values
    span = y.max(-1, keepdim=True).values - low
    return _Data((x / half).to(device), ((y - low) / span).to(device), half, low, span)


class _Training(NamedTuple):
    """The three phases' records: fit history, elimination, polish history, and options."""

    fit: FitResult
    elimination: EliminationResult
    polish: FitResult
    fit_options: FitOptions


def _train(
    model: LSEICNN,
    data: _Data,
    *,
    epochs: int,
    finetune_epochs: int,
    polish_epochs: int,
    tolerance: float,
) -> _Training:
    """Fit with L1, fold the gates, eliminate modes, polish (steps 2-4 of the protocol)."""

    def data_loss():
        return (model(data.x) - data.y).pow(2).mean(-1)

    fit_options = FitOptions(
        epochs=epochs,
        lr_network=1e-2,
        lr_gates=1e-2,
        l1=1e-4,
        sparsify_after=0.5,
        ramp=0.2,
        log_every=max(epochs // 200, 1),
    )
    history = fit(model, data_loss, fit_options, description="fit-1d")
    fold_gates(model)
    finetune = FitOptions(
        epochs=finetune_epochs,
        lr_network=1e-2,
        lr_gates=1e-2,
        l1=0.0,
        progress=False,
        log_every=finetune_epochs,
    )
    elimination = prune_by_elimination(
        model,
        data_loss,
        data.x,
        finetune=finetune,
        accept=lambda before, after: (after.sqrt() <= tolerance) | (after <= 1.21 * before),
    )
    polish = FitOptions(
        epochs=polish_epochs,
        lr_network=3e-3,
        lr_gates=1e-2,
        l1=0.0,
        log_every=max(polish_epochs // 20, 1),
    )
    polish_history = fit(model, data_loss, polish, description="polish")
    return _Training(history, elimination, polish_history, fit_options)


def _function_result(
    name: str, rows: slice, grid: torch.Tensor, pred: torch.Tensor, model: LSEICNN
) -> dict:
    """The summary entry of one function from its seeds' predictions ``pred[rows]``."""
    truth = FUNCTIONS[name].f(grid[rows.start, :, 0])
    value_range = float(truth.max() - truth.min())
    rmse = ((pred[rows] - truth).pow(2).mean(-1).sqrt() / value_range).cpu()
    counts = model.active_modes().cpu()[rows].tolist()
    wells = len(FUNCTIONS[name].wells)
    correct = [c == wells for c in counts]
    best = min(range(len(counts)), key=lambda s: (not correct[s], float(rmse[s])))
    return {
        "wells_true": wells,
        "active_modes": counts,
        "seeds_correct": sum(correct),
        "rmse": float(rmse[best]) * value_range,
        "rmse_relative": rmse.tolist(),
        "rmse_relative_max": float(rmse.max()),
        "range": value_range,
        "best_seed": best,
        "rho": model.rho()[rows].tolist(),
    }


def _save_best(model: LSEICNN, name: str, member: int, data: _Data, result: dict, out: Path):
    """Save ensemble ``member`` as ``out/<name>.safetensors`` in the function's own units."""
    single = model.member(member).cpu()
    single.input_names = ("x",)
    single.set_normalization(
        input_shift=0.0,
        input_scale=float(data.half[member]),
        energy_shift=float(data.low[member]),
        energy_scale=float(data.span[member]),
    )
    lse_material.save(
        single,
        out / f"{name}.safetensors",
        training_box={"x": list(FUNCTIONS[name].domain)},
        output={"name": f"{name}(x)", "units": "1"},
        input_units=["1"],
        training={"study": "fit-1d", "seed": result["best_seed"], "rmse": result["rmse"]},
    )
    return single


class _Evaluation(NamedTuple):
    """Per-function summaries and best models; the grids ``(M, 200, 1)`` and fits ``(M, 200)``."""

    functions: dict
    models: dict[str, LSEICNN]
    grid: torch.Tensor
    pred: torch.Tensor


def _evaluate(model: LSEICNN, data: _Data, names: list[str], seeds: int, out: Path) -> _Evaluation:
    """Evaluate every member on its function's 200-point grid (the function's own units);
    summarise each function and save its best seed's model."""
    unit_grid = torch.linspace(-1, 1, N_EVAL, dtype=torch.float64)[:, None]
    grid = unit_grid * data.half  # (M, 200, 1)
    with torch.no_grad():
        pred = model(unit_grid.to(data.x.device)).cpu() * data.span + data.low  # (M, 200)
    functions, models = {}, {}
    for i, name in enumerate(names):
        rows = slice(i * seeds, (i + 1) * seeds)
        result = _function_result(name, rows, grid, pred, model)
        functions[name] = result
        models[name] = _save_best(model, name, rows.start + result["best_seed"], data, result, out)
    return _Evaluation(functions, models, grid, pred)


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
) -> OneDStudy:
    """The 1-D well-discovery study (docs/science.md §2).

    Writes ``out/summary.json``, ``out/history.json``, the best model per function
    (``out/<function>.safetensors``) and, with ``plots``, history_active_loss.png, fits.png and
    rho_gates.png. Returns the summary and the models.

    Parameters
    ----------
    out
        output folder.
    function
        the test function, or all three.
    seeds
        seeds per function (all functions × seeds train as one batched ensemble).
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
    """
    names = sorted(FUNCTIONS) if function == "all" else [function]
    if any(n not in FUNCTIONS for n in names):
        raise ValueError(f"function must be one of {sorted(FUNCTIONS)} or 'all'; got {function!r}.")
    if seeds < 1 or epochs < 1:
        raise ValueError(f"seeds and epochs must be >= 1; got seeds={seeds}, epochs={epochs}.")
    out = prepare_output(out, threads=threads)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    data = _normalised_data(names, seeds, dev)
    model = LSEICNN(
        1,
        N_MODES,
        HIDDEN,
        ensemble=len(names) * seeds,
        rho=1.0,
        generator=torch.Generator().manual_seed(0),
    ).to(dev)
    model.spread_modes(data.x)
    phases = _train(
        model,
        data,
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        polish_epochs=polish_epochs,
        tolerance=tolerance,
    )
    seconds = time.perf_counter() - t0

    evaluation = _evaluate(model, data, names, seeds, out)
    rounds = phases.elimination.rounds
    options = phases.fit_options
    summary = {
        "seeds": seeds,
        "epochs": epochs,
        "seconds": seconds,
        "epochs_total": epochs + rounds * finetune_epochs + polish_epochs,
        "protocol": {
            "fit_epochs": epochs,
            "elimination_rounds": rounds,
            "finetune_epochs": finetune_epochs,
            "polish_epochs": polish_epochs,
            "tolerance": tolerance,
            "l1": options.l1,
            "rho_start": 1.0,
            "lr_network": options.lr_network,
            "lr_gates": options.lr_gates,
            "device": str(dev),
        },
        "functions": evaluation.functions,
    }
    write_json(out / "summary.json", summary)
    write_json(
        out / "history.json",
        {
            "names": names,
            "seeds": seeds,
            "fit": phases.fit.__dict__,
            "polish": phases.polish.__dict__,
            "elimination_removed": phases.elimination.removed,
        },
    )
    if plots:
        _plots(out, names, seeds, phases.fit, evaluation.grid, evaluation.pred)
    return OneDStudy(summary, evaluation.models)


def _plots(out: Path, names, seeds, history: FitResult, grid, pred) -> None:
    """The study's figures: active modes and loss vs epoch (all seeds + median), fits, ρ and gates."""
    epochs = torch.tensor(history.epoch)
    loss = torch.tensor(history.loss)  # (T, M)
    active = torch.tensor(history.active_modes, dtype=torch.float64)
    rho = torch.tensor(history.rho)
    gates = torch.tensor(history.gates)  # (T, M, N)
    width = 4.5 * len(names)
    fig, axes = subplots(2, len(names), size=(width, 6))
    for i, name in enumerate(names):
        rows = slice(i * seeds, (i + 1) * seeds)
        for ax, series, label in (
            (axes[0, i], active[:, rows], "active modes"),
            (axes[1, i], loss[:, rows], "loss"),
        ):
            ax.plot(epochs, series, color="0.7", lw=0.8)
            ax.plot(epochs, series.median(dim=1).values, color="k", lw=2, label="median")
            ax.set_xlabel("epoch (fit phase)")
            ax.set_ylabel(label)
            ax.set_title(name)
        axes[1, i].set_yscale("log")
        axes[0, i].axhline(len(FUNCTIONS[name].wells), color="tab:red", ls="--", label="true wells")
        axes[0, i].legend()
    save_figure(fig, out / "history_active_loss.png")

    fig, axes = subplots(1, len(names), size=(width, 3.6))
    for i, name in enumerate(names):
        ax = axes[0, i]
        xs = grid[i * seeds, :, 0]
        ax.plot(xs, FUNCTIONS[name].f(xs), "k", lw=2.5, label="truth")
        for s in range(seeds):
            ax.plot(xs, pred[i * seeds + s], lw=0.9, alpha=0.8)
        ax.set_title(f"{name}: fits of {seeds} seeds")
        ax.legend()
    save_figure(fig, out / "fits.png")

    fig, axes = subplots(2, len(names), size=(width, 6))
    for i, name in enumerate(names):
        rows = slice(i * seeds, (i + 1) * seeds)
        axes[0, i].semilogy(epochs, rho[:, rows])
        axes[0, i].set_title(f"{name}: ρ per seed")
        axes[1, i].plot(epochs, gates[:, i * seeds])  # the first seed's gates
        axes[1, i].set_title(f"{name}: gates g(w), seed 0")
        axes[1, i].set_xlabel("epoch (fit phase)")
    save_figure(fig, out / "rho_gates.png")


def bench_fit_1d(*, out: str | Path, epochs: int = 100, seeds: int = 10, threads: int = 0) -> dict:
    """Time per epoch: one seed at a time (eager, modes batched) vs all seeds × functions batched.

    Writes ``out/summary.json`` with the raw times and ``speedup_batched_vs_sequential``.

    Parameters
    ----------
    out
        output folder.
    epochs
        Adam epochs timed per run.
    seeds
        seeds per function (the batched run trains all functions × seeds at once).
    threads
        torch CPU threads (0: leave as is).
    """
    out = prepare_output(out, threads=threads)
    names = sorted(FUNCTIONS)
    x, y, half = _ensemble_data(names, seeds)
    x = x / half
    y = (y - y.min(-1, keepdim=True).values) / (
        y.max(-1, keepdim=True).values - y.min(-1, keepdim=True).values
    )
    options = FitOptions(
        epochs=epochs,
        lr_network=1e-2,
        l1=1e-4,
        sparsify_after=0.5,
        progress=False,
        log_every=epochs,
    )

    def run(model, xb, yb):
        return fit(model, lambda: (model(xb) - yb).pow(2).mean(-1), options).seconds

    t_seq = sum(run(LSEICNN(1, N_MODES, HIDDEN), x[m], y[m]) for m in range(x.shape[0]))
    t_batch = run(LSEICNN(1, N_MODES, HIDDEN, ensemble=x.shape[0]), x, y)
    result = {
        "epochs": epochs,
        "members": x.shape[0],
        "threads": torch.get_num_threads(),
        "sequential_ms_per_epoch": 1e3 * t_seq / epochs,
        "batched_ms_per_epoch": 1e3 * t_batch / epochs,
        "speedup_batched_vs_sequential": t_seq / t_batch,
    }
    write_json(out / "summary.json", result)
    return result
