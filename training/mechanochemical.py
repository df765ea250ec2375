"""``lse-material train mechanochemical``: the mechanochemical free energy (docs: the data models).

Derivative-only (Sobolev) training: the model sees the stress S = ∂ψ/∂E and the chemical
potential μ = ∂ψ/∂c of the data model (each normalised by its standard deviation, equal
weights), never ψ itself; ψ is inferred and compared up to an additive constant. Inputs
(column order, Voigt with engineering shears): E11, E22, E33, 2E23, 2E13, 2E12, c — with this
order the Voigt stress is exactly the gradient and the tangent is the Hessian.

The protocol [ours] (the paper gives none that we could recover; each step answers a measured
failure of the previous one, which had the right pooled R² and none of the three variants):

1. samples in order-parameter space around the wells (``mc.sample``), not a strain box;
2. modes started on well candidates of the data (small, locally convex flux), each fitted
   alone to the data of its region, their constants matched across region boundaries
   (``training.mode_init``);
3. a nested LSE: the modes whose candidate lies in the transformed phase (c > s_c/2) form one
   group with its own ρ_g (sharp ridges between the variants), joined to the reference phase by
   the outer ρ (the broad chemical transition) — one ρ cannot be both (``LSEICNN(groups=)``);
4. the mixture trained on all data, L1 on the gates in the last 40 % of the epochs.

The result is judged by its wells (``lse_material.wells``): the minima on the slices c = 0 and
c = s_c against the data model's, their depths and the variant-to-variant barrier, plus R²
near each well — a pooled R² alone hid the missing variants before.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from lse_material.training.data import mechanochemical as mc
from lse_material.training.fit import (
    FitOptions,
    fit,
    fold_gates,
    prune_by_elimination,
    r2_score,
    resolve_device,
)
from lse_material.training.mode_init import pretrain_on_wells, well_candidates

import lse_material
from lse_material.atomic import write_json
from lse_material.lse import LSEICNN

__all__ = ["MechanochemicalTraining", "train_mechanochemical", "evaluate_wells"]

N_MODES, HIDDEN = 5, (10, 10)  # [paper]
N_TRAIN_FRACTION = 0.8  # 80 / 20 split [paper]
RHO, GROUP_RHO = 0.1, 1.0  # start values of the outer ρ and the groups' ρ_g (network units) [ours]


class MechanochemicalTraining(NamedTuple):
    summary: dict
    model: LSEICNN


def train_mechanochemical(
    *,
    out: str | Path,
    samples: int = 2000,
    epochs: int = 3000,
    pretrain_epochs: int = 1000,
    seed: int = 0,
    param: Sequence[str] = (),
    nested: bool = True,
    eliminate: bool = True,
    device: str = "auto",
    threads: int = 0,
    plots: bool = True,
) -> MechanochemicalTraining:
    """Train the LSE-ICNN on S and μ of the data model; write the model file, plots, summary.json.

    Parameters
    ----------
    out
        output folder.
    samples
        data points drawn from the data model (80 % train, 20 % held out).
    epochs
        full-batch Adam epochs of the mixture (after the modes' own pre-training).
    pretrain_epochs
        epochs in which each mode is fitted alone to the data of its region (0: none).
    seed
        seed of the data, the split and the initialisation.
    param
        data-model parameters as NAME=VALUE (d_c, s_c, d_e, s_e); repeat for several.
    nested
        nested LSE (a ρ_g for the transformed phase's variants); false: the paper's single ρ.
    eliminate
        after the fit, try closing the two least used modes (kept closed when the loss grows
        by at most 15 % after a 300-epoch fine-tune).
    device
        auto, cpu or cuda[:N].
    threads
        torch CPU threads (0: leave as is).
    plots
        write the PNG figures.
    """
    params = mc.parse_params(param)
    if samples < 50 or epochs < 1 or pretrain_epochs < 0:
        raise ValueError(
            f"need samples >= 50, epochs >= 1 and pretrain_epochs >= 0; got samples={samples}, "
            f"epochs={epochs}, pretrain_epochs={pretrain_epochs}."
        )
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    data = mc.sample(samples, seed=seed, params=params)
    n_train = int(round(N_TRAIN_FRACTION * samples))
    order = torch.randperm(samples, generator=torch.Generator().manual_seed(seed))
    train, test = order[:n_train], order[n_train:]
    x = data.x.to(dev)
    flux = torch.cat([data.stress, data.mu[:, None]], dim=1).to(dev)  # (n, 7): S (Voigt), μ
    flux_std = flux[train].std(0)

    model, centres = _started_model(x[train], flux[train], params, seed=seed, nested=nested)
    pretrain_loss = None
    if pretrain_epochs:
        local = FitOptions(epochs=pretrain_epochs, lr_network=3e-3, l1=0.0, progress=True)
        pretrain_loss = pretrain_on_wells(model, x[train], flux[train], flux_std, centres, local)

    def data_loss():
        gradient = model.derivatives(x[train], hessian=False).gradient
        return ((gradient - flux[train]) / flux_std).pow(2).mean()

    options = FitOptions(
        epochs=epochs,
        lr_network=3e-3,
        lr_gates=1e-2,
        l1=1e-4,
        sparsify_after=0.6,
        ramp=0.2,
        log_every=max(epochs // 100, 1),
    )
    history = fit(model, data_loss, options, description="mechanochemical")
    removed = _eliminate(model, data_loss, x[train]) if eliminate else []
    fold_gates(model)
    seconds = time.perf_counter() - t0

    model = model.cpu()
    _calibrate_energy(model, data, train)
    summary = {
        **_scores(model, data, test, params),
        **evaluate_wells(model, params),
        "active_modes": int(model.active_modes()),
        "rho": float(model.rho().detach()),
        "group_rho": model.group_rho().detach().tolist(),
        "groups": None if model.groups is None else list(model.groups),
        "params": params.__dict__,
        "seconds": seconds,
        "samples": samples,
        "epochs": epochs,
        "pretrain_epochs": pretrain_epochs,
        "pretrain_loss": pretrain_loss,
        "modes_removed_by_elimination": removed,
        "seed": seed,
        "train": n_train,
        "test": samples - n_train,
        "final_loss": history.loss[-1],
    }
    _save(model, out, summary, params)
    write_json(out / "summary.json", summary)
    if plots:
        _plots(out, model, data, test, params)
    return MechanochemicalTraining(summary, model)


def _eliminate(model: LSEICNN, data_loss, x) -> list[int]:
    """Greedy backward elimination of at most two modes [ours]: L1 alone leaves a duplicate
    mode open in one well (it shares the well's weight), so the least used mode is closed and
    kept closed if a short fine-tune recovers the loss within 15 %."""
    finetune = FitOptions(epochs=300, lr_network=1e-3, lr_gates=1e-2, l1=0.0, log_every=100)
    result = prune_by_elimination(
        model, data_loss, x, finetune=finetune, accept=lambda b, a: a <= 1.15 * b, max_rounds=2
    )
    return result.removed


def _started_model(x, flux, params, *, seed: int, nested: bool) -> tuple[LSEICNN, torch.Tensor]:
    """The LSE-ICNN with its normalisation, modes placed on the data's well candidates, and
    (nested) the groups by phase: modes whose candidate has c > s_c/2 form the transformed
    phase. Returns the model and the candidates ``(N, 7)``."""
    low, high = x.min(0).values, x.max(0).values
    shift, scale = (high + low) / 2, (high - low) / 2
    first = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    first[6] = 1.0  # the first candidate: the one with the smallest c (the reference phase)
    centres = well_candidates(x, flux, N_MODES, scale=scale, shift=shift, first=first)
    groups = (centres[:, 6] > 0.5 * params.s_c).long().tolist()
    if not nested or len(set(groups)) < 2:
        groups = None
    model = LSEICNN(
        7,
        N_MODES,
        HIDDEN,
        input_names=mc.INPUT_NAMES,
        rho=RHO,
        groups=groups,
        group_rho=GROUP_RHO,
        generator=torch.Generator().manual_seed(seed),
    ).to(x.device)
    flux_std = flux.std(0)
    # Energy scale such that a unit network gradient is a typical flux: ∂ψ/∂x = es·∂W/∂x_n / scale.
    model.set_normalization(
        input_shift=shift, input_scale=scale, energy_scale=float((flux_std * scale).mean())
    )
    model.place_modes(centres)
    return model, centres


@torch.no_grad()
def _calibrate_energy(model: LSEICNN, data, train) -> None:
    """Fix ψ's free constant on the training data's mean, so the file's ψ is usable as is."""
    offset = (data.energy[train] - model.derivatives(data.x[train], hessian=False).energy).mean()
    model.energy_shift.add_(offset)


def _rel_to_max(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Largest error relative to the largest |value| of the truth."""
    return float((pred - true).abs().max() / true.abs().max().clamp_min(1e-300))


@torch.no_grad()
def _scores(model: LSEICNN, data, test, params) -> dict:
    """Held-out R² pooled and near the wells, and the errors along the extrapolation path.

    Near a well: within s_e/2 of it in (e2, e3) and within 0.15 s_c of its c (c = 0 for the
    reference phase, c = s_c for the variants).
    """
    d = model.derivatives(data.x[test], hessian=False)
    psi_pred = d.energy + (data.energy[test] - d.energy).mean()  # ψ is known up to a constant
    e = mc.order_parameters(data.x[test])
    c = data.x[test, 6]
    near = torch.zeros(len(test), dtype=torch.bool)
    per_well = {}
    for name, (wells, _) in mc.true_wells(params).items():
        for k, well in enumerate(wells):
            w = mc.order_parameters(well[None])[0]
            close = ((e[:, 1:3] - w[1:3]).norm(dim=1) < params.s_e / 2) & (
                (c - well[6]).abs() < 0.15 * params.s_c
            )
            near |= close
            per_well[f"{name} #{k}"] = int(close.sum())
    t, x_path = mc.extrapolation_path(e_bar=params.s_e, s_c=params.s_c)
    path = model.derivatives(x_path, hessian=False)
    s_path, mu_path = mc.stress_mu(x_path, params=params)
    inside, outside = t <= 1.0, t > 1.0
    return {
        "test_r2": {
            "S": r2_score(d.gradient[:, :6], data.stress[test]),
            "mu": r2_score(d.gradient[:, 6], data.mu[test]),
            "psi": r2_score(psi_pred, data.energy[test]),
        },
        "test_r2_near_wells": {
            "S": r2_score(d.gradient[near, :6], data.stress[test][near]),
            "mu": r2_score(d.gradient[near, 6], data.mu[test][near]),
            "points": per_well,
        },
        # Largest error along the path (eq. 16, docs/science.md §3) relative to the path's own max |S|.
        "path_error_inside_box": {
            "S": _rel_to_max(path.gradient[inside, :6], s_path[inside]),
            "mu": _rel_to_max(path.gradient[inside, 6], mu_path[inside]),
        },
        "path_error_outside_box": {
            "S": _rel_to_max(path.gradient[outside, :6], s_path[outside]),
            "mu": _rel_to_max(path.gradient[outside, 6], mu_path[outside]),
        },
    }


def evaluate_wells(model, params=None) -> dict:
    """The wells of ``model`` on the slices c = 0 and c = s_c, matched to the data model's.

    Returns ``{"wells": {slice: table}, "well_match": {slice: comparison}, "wells_found": n}``:
    the tables of ``lse_material.wells`` (minima, saddles, barriers) and, per slice, each true
    minimum's match (distance in units of s_e over the order parameters, depth error relative
    to d_e with ψ pinned at E = 0 on the slice) and the barrier errors.
    """
    from lse_material.wells import compare_wells, find_wells, order_parameter_scale

    params = mc.parse_params(params)
    truth_law = mc.potential(params=params)
    box = mc.training_box(params)
    tables, matches, found = {}, {}, 0
    for name, c in (("c=0", 0.0), ("c=s_c", params.s_c)):
        fix = {"c": c}
        mine = find_wells(model, fix=fix, box=box)
        truth = find_wells(truth_law, fix=fix, box=box)
        origin = torch.zeros(1, 7, dtype=torch.float64)
        origin[0, 6] = c
        with torch.no_grad():
            psi0 = model.derivatives(origin, hessian=False).energy[0]
        shift = float(psi0 - mc.energy(origin)[0])
        cmp = compare_wells(
            mine,
            truth,
            scale=order_parameter_scale(params)[:6],
            shift=shift,
            energy_unit=params.d_e,
        )
        tables[name] = mine.to_json()
        matches[name] = cmp.to_json()
        found += sum(1 for m in mine.minima if m.in_box)
    return {"wells": tables, "well_match": matches, "wells_found": found}


def _save(model: LSEICNN, out: Path, summary: dict, params) -> None:
    box = {name: list(bounds) for name, bounds in mc.training_box(params).items()}
    lse_material.save(
        model,
        out / "model.safetensors",
        input_units=["1"] * 6 + ["1 (c / s_c)"],
        output={"name": "psi", "units": "energy per reference volume (units of d_c)"},
        training_box=box,
        training={
            "data": "mechanochemical (docs/science.md)",
            "params": params.__dict__,
            "samples": summary["samples"],
            "epochs": summary["epochs"],
            "pretrain_epochs": summary["pretrain_epochs"],
            "seed": summary["seed"],
        },
        metrics={
            key: summary[key]
            for key in ("test_r2", "test_r2_near_wells", "path_error_inside_box", "wells_found")
        },
        wells=summary["wells"],
    )


def _plots(out: Path, model: LSEICNN, data, test, params) -> None:
    from lse_material.plotting import save_figure, subplots

    with torch.no_grad():
        d = model.derivatives(data.x[test], hessian=False)
        t, x_path = mc.extrapolation_path(e_bar=params.s_e, s_c=params.s_c)
        path = model.derivatives(x_path, hessian=False)
    psi_pred = d.energy + (data.energy[test] - d.energy).mean()
    s_path, mu_path = mc.stress_mu(x_path, params=params)
    fig, axes = subplots(1, 3, size=(13, 4))
    for ax, pred, true, label in (
        (axes[0, 0], d.gradient[:, :6], data.stress[test], "S (all Voigt components)"),
        (axes[0, 1], d.gradient[:, 6], data.mu[test], "μ"),
        (axes[0, 2], psi_pred, data.energy[test], "ψ (up to a constant)"),
    ):
        ax.scatter(true.reshape(-1), pred.reshape(-1), s=4, alpha=0.5)
        lim = [float(true.min()), float(true.max())]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set_xlabel("data model")
        ax.set_ylabel("LSE-ICNN")
        ax.set_title(f"held-out {label}")
    save_figure(fig, out / "parity.png")

    fig, axes = subplots(1, 2, size=(10, 4))
    axes[0, 0].plot(t, s_path[:, 2], "k", label="S33 data")
    axes[0, 0].plot(t, path.gradient[:, 2], "r--", label="S33 model")
    axes[0, 0].plot(t, s_path[:, 0], "0.5", label="S11 data")
    axes[0, 0].plot(t, path.gradient[:, 0], "b--", label="S11 model")
    axes[0, 1].plot(t, mu_path, "k", label="μ data")
    axes[0, 1].plot(t, path.gradient[:, 6], "r--", label="μ model")
    for ax in axes[0]:
        ax.axvspan(1.0, float(t.max()), color="0.9", label="outside the training box")
        ax.set_xlabel("t (extrapolation path: c = t s_c, e3 = t s_e)")
        ax.legend(fontsize=8)
    save_figure(fig, out / "extrapolation.png")
    _plot_wells(out, model, params)


def _plot_wells(out: Path, model: LSEICNN, params) -> None:
    """ψ on the (e2, e3) planes at c = 0 and c = s_c with the minima, saddles and paths."""
    from lse_material.wells import analyse_wells

    param = [f"{k}={v}" for k, v in params.__dict__.items()]
    analyse_wells(
        str(out / "model.safetensors"), truth="mechanochemical", param=param, out=str(out)
    )
