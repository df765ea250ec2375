"""``lse-material train mechanochemical``: the mechanochemical free energy of SPEC §3.

Derivative-only (Sobolev) training: the model sees the stress S = ∂ψ/∂E and the chemical
potential μ = ∂ψ/∂c of the data model (each normalised by its standard deviation, equal
weights, eq. 15), never ψ itself; ψ is inferred and compared up to an additive constant.
Inputs (column order, Voigt with engineering shears): E11, E22, E33, 2E23, 2E13, 2E12, c —
with this order the Voigt stress is exactly the gradient and the tangent is the Hessian.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import torch
from lse_material.training.data import mechanochemical as mc
from lse_material.training.fit import FitOptions, fit, fold_gates, resolve_device

import lse_material
from lse_material.jsonio import write_json
from lse_material.lse import LSEICNN

__all__ = ["MechanochemicalTraining", "train_mechanochemical", "r2_score"]

N_MODES, HIDDEN = 5, (10, 10)  # SPEC §3 [paper]
N_TRAIN_FRACTION = 0.8  # 800 / 200 split [paper]


class MechanochemicalTraining(NamedTuple):
    summary: dict
    model: LSEICNN


def r2_score(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Coefficient of determination over all entries (columns pooled after flattening)."""
    pred, true = pred.reshape(-1), true.reshape(-1)
    return float(1 - (pred - true).pow(2).sum() / (true - true.mean()).pow(2).sum())


def train_mechanochemical(
    *,
    out: str | Path,
    samples: int = 1000,
    epochs: int = 10000,
    seed: int = 0,
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
        full-batch Adam epochs.
    seed
        seed of the data, the split and the initialisation.
    device
        auto, cpu or cuda[:N].
    threads
        torch CPU threads (0: leave as is).
    plots
        write the PNG figures.
    """
    if samples < 10 or epochs < 1:
        raise ValueError(
            f"need samples >= 10 and epochs >= 1; got samples={samples}, epochs={epochs}."
        )
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    t0 = time.perf_counter()

    data = mc.sample(samples, seed=seed)
    n_train = int(round(N_TRAIN_FRACTION * samples))
    order = torch.randperm(samples, generator=torch.Generator().manual_seed(seed))
    train, test = order[:n_train], order[n_train:]
    x = data.x.to(dev)
    flux = torch.cat([data.stress, data.mu[:, None]], dim=1).to(dev)  # (n, 7): S (Voigt), μ
    flux_std = flux[train].std(0)

    model = LSEICNN(
        7,
        N_MODES,
        HIDDEN,
        input_names=mc.INPUT_NAMES,
        rho=1.0,
        generator=torch.Generator().manual_seed(seed),
    ).to(dev)
    low, high = x[train].min(0).values, x[train].max(0).values
    shift, scale = (high + low) / 2, (high - low) / 2
    # Energy scale such that a unit network gradient is a typical flux: ∂ψ/∂x = es·∂W/∂x_n / scale.
    model.set_normalization(
        input_shift=shift, input_scale=scale, energy_scale=float((flux_std * scale).mean())
    )
    model.spread_modes(x[train])

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
    fold_gates(model)
    seconds = time.perf_counter() - t0

    model = model.cpu()
    with torch.no_grad():
        d = model.derivatives(data.x[test], hessian=False)
        psi_pred = d.energy
        psi_true = data.energy[test]
        psi_pred = psi_pred + (psi_true - psi_pred).mean()  # ψ is known up to a constant
        t, x_path = mc.extrapolation_path()
        path = model.derivatives(x_path, hessian=False)
        s_path, mu_path = mc.stress_mu(x_path)
        # Calibrate the free constant of ψ on the data's mean, so the file's ψ is usable as is.
        model.set_normalization(
            input_shift=shift.cpu(),
            input_scale=scale.cpu(),
            energy_shift=float(
                model.energy_shift
                + (
                    data.energy[train] - model.derivatives(data.x[train], hessian=False).energy
                ).mean()
            ),
            energy_scale=float(model.energy_scale),
        )

    def rel(pred, true, scale):
        """RMS error relative to the RMS of the quantity over the training data (the path's own
        values pass through zero at the wells, so a pointwise relative error is meaningless)."""
        return float((pred - true).pow(2).mean().sqrt() / scale)

    s_scale = float(data.stress[train].pow(2).mean().sqrt())
    mu_scale = float(data.mu[train].pow(2).mean().sqrt())

    inside = t <= 1.0
    summary = {
        "test_r2": {
            "S": r2_score(d.gradient[:, :6], data.stress[test]),
            "mu": r2_score(d.gradient[:, 6], data.mu[test]),
            "psi": r2_score(psi_pred, psi_true),
        },
        "active_modes": int(model.active_modes()),
        "rho": float(model.rho().detach()),
        "extrapolation_rel_error": {
            "S": rel(path.gradient[~inside, :6], s_path[~inside], s_scale),
            "mu": rel(path.gradient[~inside, 6], mu_path[~inside], mu_scale),
        },
        "path_rel_error_inside_box": {
            "S": rel(path.gradient[inside, :6], s_path[inside], s_scale),
            "mu": rel(path.gradient[inside, 6], mu_path[inside], mu_scale),
        },
        "seconds": seconds,
        "samples": samples,
        "epochs": epochs,
        "train": n_train,
        "test": samples - n_train,
        "final_loss": history.loss[-1],
    }
    box = {name: list(bounds) for name, bounds in mc.TRAINING_BOX.items()}  # the sampling box
    lse_material.save(
        model,
        out / "model.safetensors",
        input_units=["1"] * 6 + ["1 (c / s_c)"],
        output={"name": "psi", "units": "energy per reference volume (units of d_c)"},
        training_box=box,
        training={
            "data": "mechanochemical (SPEC §3)",
            "params": mc.MechanochemicalParams().__dict__,
            "samples": samples,
            "epochs": epochs,
            "seed": seed,
        },
        metrics={
            "test_r2": summary["test_r2"],
            "extrapolation_rel_error": summary["extrapolation_rel_error"],
        },
    )
    write_json(out / "summary.json", summary)
    if plots:
        _plots(out, d, data, test, psi_pred, psi_true, t, path, s_path, mu_path)
    return MechanochemicalTraining(summary, model)


def _plots(out, d, data, test, psi_pred, psi_true, t, path, s_path, mu_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, pred, true, label in (
        (axes[0], d.gradient[:, :6], data.stress[test], "S (all Voigt components)"),
        (axes[1], d.gradient[:, 6], data.mu[test], "μ"),
        (axes[2], psi_pred, psi_true, "ψ (up to a constant)"),
    ):
        ax.scatter(true.reshape(-1), pred.reshape(-1), s=4, alpha=0.5)
        lim = [float(true.min()), float(true.max())]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set_xlabel("data model")
        ax.set_ylabel("LSE-ICNN")
        ax.set_title(f"held-out {label}")
    fig.tight_layout()
    fig.savefig(out / "parity.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(t, s_path[:, 2], "k", label="S33 data")
    axes[0].plot(t, path.gradient[:, 2], "r--", label="S33 model")
    axes[0].plot(t, s_path[:, 0], "0.5", label="S11 data")
    axes[0].plot(t, path.gradient[:, 0], "b--", label="S11 model")
    axes[1].plot(t, mu_path, "k", label="μ data")
    axes[1].plot(t, path.gradient[:, 6], "r--", label="μ model")
    for ax in axes:
        ax.axvspan(1.0, float(t.max()), color="0.9", label="outside the training box")
        ax.set_xlabel("t (extrapolation path, SPEC eq. 16)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "extrapolation.png", dpi=110)
    plt.close(fig)
