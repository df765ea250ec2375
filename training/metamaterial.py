"""``lse-material train metamaterial``: a potential with a hidden state (docs/science.md §5).

The model (``lse_material.hidden_state.HiddenStateMaterial``): ψ = LSE-ICNN(I1, I2, I3, h),
2 modes of 2 × 19, and a neural ODE ḣ = N(9 invariants of ε and ε̇, h), 2 × 15, 6 states,
``h(0) = 0``; σ = ∂ψ/∂ε. Both networks train together on stress only, through the time
integration of h (ξ is never shown to the model): full-batch Adam (the last 15 % of the
epochs at a tenth of the learning rate) over the 320 training trajectories (320 / 80 split [paper: 80 / 20]), loss = mean squared error of the normal stress
components σ11, σ22, σ33, each divided by its standard deviation over the training data (the
shear components are zero in the data and, for uniaxial strain, exactly zero in the model).
No L1 on the gates: the paper fixes two modes (docs/science.md §5).

``ReferenceLaw`` (the data model's return mapping behind the internal-state law interface,
the reference of the FE case) lives with its data model in
``lse_material.training.data.metamaterial``; it is re-exported here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import torch
from lse_material.training.data import metamaterial as mm
from lse_material.training.data.metamaterial import ReferenceLaw  # re-exported (it lives there)
from lse_material.training.fit import (
    FitOptions,
    FitResult,
    fit,
    prepare_output,
    r2_score,
    resolve_device,
)

import lse_material
from lse_material.atomic import write_json
from lse_material.hidden_state import (
    ODE_INPUT_NAMES,
    HiddenStateMaterial,
    ode_invariants,
    strain_invariants,
    tensor_to_voigt,
)
from lse_material.plotting import save_figure, subplots

__all__ = [
    "MetamaterialTraining",
    "ReferenceLaw",
    "train_metamaterial",
]

N_TRAJECTORIES, N_STEPS, TRAIN_FRACTION = 400, 100, 0.8  # docs/science.md §5 [paper]
N_STATE, N_MODES, HIDDEN, ODE_HIDDEN = 6, 2, (19, 19), (15, 15)  # docs/science.md §5 [paper]
NORMAL = [0, 1, 2]  # σ11, σ22, σ33: the stress components the loss sees
ANNEAL = 0.15  # fraction of the epochs trained at lr/10 at the end [ours]


class MetamaterialTraining(NamedTuple):
    summary: dict
    model: HiddenStateMaterial


# --------------------------------------------------------------------------- training
def _voigt_data(data: mm.MetamaterialData, device):
    strain = tensor_to_voigt(data.strain).to(device)
    stress = tensor_to_voigt(data.stress, engineering=False).to(device)
    return strain, stress


def build_model(
    strain: torch.Tensor, time: torch.Tensor, *, seed: int, stress_std
) -> HiddenStateMaterial:
    """A HiddenStateMaterial with its normalisation set from lse_material.training histories.

    strain: Voigt ``(B, T, 6)``; time ``(T,)``; stress_std: a typical stress magnitude.
    ψ's invariant inputs map their training range to [-1, 1]; h is left as is (h(0) = 0);
    N's 9 inputs are standardised; ``rate_scale = 1/(10 Δt)`` (N = O(1) moves h by O(1) in
    ten data steps) [ours].
    """
    g = torch.Generator().manual_seed(seed)
    model = HiddenStateMaterial(N_STATE, N_MODES, HIDDEN, ODE_HIDDEN, generator=g).to(strain.device)
    inv = strain_invariants(strain).reshape(-1, 3)
    low, high = inv.min(0).values, inv.max(0).values
    half = ((high - low) / 2).clamp_min(1e-12)
    zeros = torch.zeros(N_STATE, dtype=strain.dtype, device=strain.device)
    dt = float(time[1] - time[0])
    model.potential.set_normalization(
        input_shift=torch.cat([(high + low) / 2, zeros]),
        input_scale=torch.cat([half, torch.ones_like(zeros)]),
        energy_scale=float(stress_std * half[0]),
    )
    rate = (strain[:, 1:] - strain[:, :-1]) / dt
    z = ode_invariants(strain[:, 1:], rate).reshape(-1, len(ODE_INPUT_NAMES))
    std = z.std(0)
    model.set_ode_normalization(
        input_shift=z.mean(0),
        input_scale=torch.where(std > 0, std, torch.ones_like(std)),
        rate_scale=1.0 / (10.0 * dt),
    )
    x = torch.cat([inv, torch.zeros(inv.shape[0], N_STATE, dtype=inv.dtype, device=inv.device)], 1)
    model.potential.spread_modes(x)
    return model


def _calibrate_indicator(model, strain, time, fixed_phase: bool) -> None:
    """Set the phase indicator from the model and the training strains only (no ξ).

    ``E0``: the least-squares slope of the model's σ11 against ε11 on the first loading branch
    of every training history where ``|ε11| < 0.05`` (small strains, before any reversal);
    ``e_B``: the most negative ``ε11 - σ11/E0`` along the training histories. Fixed phase: no
    transformation to read, so ``e_B`` is the data model's ``ε_t11`` (the indicator stays ≈ 0).
    """
    roll = model.rollout(strain, time)
    eps, sig = strain[..., 0], roll.stress[..., 0].detach()
    step = torch.arange(eps.shape[1])
    rising = torch.diff(eps, dim=1) > 0
    first_up = torch.where(rising.any(1), rising.float().argmax(1), eps.shape[1] - 1)
    branch = (step[None, :] <= first_up[:, None]) & (eps.abs() < 0.05) & (eps != 0)
    modulus = float((sig[branch] * eps[branch]).sum() / eps[branch].pow(2).sum())
    if fixed_phase:
        model.set_indicator(modulus=modulus, strain=mm.MetamaterialParams().eps_t11)
        return
    inelastic = eps - sig / modulus
    model.set_indicator(modulus=modulus, strain=float(inelastic.min()))


def _fit_two_stages(model, strain, stress, times, s_std, epochs: int, lr: float) -> FitResult:
    """Fit on the normalised normal stresses of ``strain``/``stress`` ``(B, T, 6)`` histories.

    Two stages [ours]: Adam at ``lr``, then the last ``ANNEAL`` of the epochs at ``lr/10`` (a
    fresh Adam). Returns the joined history.
    """
    target = stress[..., NORMAL] / s_std

    def data_loss():
        pred = model.rollout(strain, times, phase_weights=False).stress
        return (pred[..., NORMAL] / s_std - target).pow(2).mean()

    log_every = max(epochs // 100, 1)
    n_final = int(round(ANNEAL * epochs)) if epochs >= 10 else 0
    history = fit(
        model,
        data_loss,
        FitOptions(
            epochs=epochs - n_final, lr_network=lr, lr_gates=lr, l1=0.0, log_every=log_every
        ),
        lse=model.potential,
        description="metamaterial",
    )
    if n_final:
        final = fit(
            model,
            data_loss,
            FitOptions(
                epochs=n_final, lr_network=lr / 10, lr_gates=lr / 10, l1=0.0, log_every=log_every
            ),
            lse=model.potential,
            description="metamaterial (lr/10)",
        )
        offset = epochs - n_final
        for key in ("epoch", "loss", "active_modes", "rho", "gates"):
            values = getattr(final, key)
            getattr(history, key).extend([e + offset for e in values] if key == "epoch" else values)
        history.seconds += final.seconds
    return history


def _save_model(
    model: HiddenStateMaterial,
    path: Path,
    data: mm.MetamaterialData,
    summary: dict,
    *,
    trajectories: int,
) -> None:
    """Write the model file with its training box (ε11 range of the data) and training record."""
    eps11 = data.strain[..., 0, 0]
    lse_material.save(
        model,
        path,
        input_units=["1"] * 6,
        output={"name": "psi", "units": "energy per volume (units of the bulk modulus κ)"},
        training_box={"eps11": [float(eps11.min()), float(eps11.max())]},
        training={
            "data": "metamaterial sawtooth histories (docs/science.md §5), uniaxial strain along e1",
            "params": mm.MetamaterialParams().__dict__,
            "fixed_phase": summary["fixed_phase"],
            "trajectories": trajectories,
            "steps": N_STEPS,
            "dt": float(data.time[1] - data.time[0]),
            "epochs": summary["epochs"],
            "seed": summary["seed"],
        },
        metrics={k: summary[k] for k in ("test_r2_stress", "test_r2_components")},
    )


def train_metamaterial(
    *,
    out: str | Path,
    fixed_phase: bool = False,
    trajectories: int = N_TRAJECTORIES,
    epochs: int = 3000,
    lr: float = 3e-3,
    seed: int = 0,
    device: str = "auto",
    threads: int = 0,
    plots: bool = True,
) -> MetamaterialTraining:
    """Train ψ and N on the stress of sawtooth histories; write the model, plots, summary.json.

    Parameters
    ----------
    out
        output folder (model.safetensors, summary.json, history.json, parity.png, loops.png).
    fixed_phase
        train on the fixed-phase data (ξ ≡ 0, linear elasticity).
    trajectories
        number of histories (80 % train, 20 % held out).
    epochs
        full-batch Adam steps (the last 15 % at lr/10).
    lr
        learning rate of both networks, the gates and ρ.
    seed
        seed of the data, the split and the initialisation.
    device
        auto, cpu or cuda[:N].
    threads
        torch CPU threads (0: leave as is).
    plots
        write the PNG figures.
    """
    if trajectories < 5 or epochs < 1 or not lr > 0:
        raise ValueError(
            f"need trajectories >= 5, epochs >= 1, lr > 0; got trajectories={trajectories}, "
            f"epochs={epochs}, lr={lr}."
        )
    out = prepare_output(out, threads=threads)
    dev = resolve_device(device)
    t0 = time.perf_counter()

    data = mm.sawtooth_histories(trajectories, N_STEPS, seed=seed, fixed_phase=fixed_phase)
    strain, stress = _voigt_data(data, dev)
    times = data.time.to(dev)
    n_train = int(round(TRAIN_FRACTION * trajectories))
    order = torch.randperm(trajectories, generator=torch.Generator().manual_seed(seed + 1))
    train, test = order[:n_train].to(dev), order[n_train:].to(dev)
    s_std = stress[train][..., NORMAL].reshape(-1, len(NORMAL)).std(0)

    model = build_model(strain[train], times, seed=seed, stress_std=float(s_std[0]))
    history = _fit_two_stages(model, strain[train], stress[train], times, s_std, epochs, lr)
    train_seconds = time.perf_counter() - t0

    model = model.cpu()
    strain, stress, xi = strain.cpu(), stress.cpu(), data.xi
    train, test = train.cpu(), test.cpu()
    with torch.no_grad():
        _calibrate_indicator(model, strain[train], data.time, fixed_phase)
        roll = model.rollout(strain[test], data.time, phase_weights=True)
    r2 = {
        name: r2_score(roll.stress[..., j], stress[test][..., j])
        for j, name in zip(NORMAL, ("sigma11", "sigma22", "sigma33"))
    }
    summary = {
        "test_r2_stress": min(r2.values()),
        "test_r2_components": r2,
        "train_r2_sigma11": r2_score(
            model.rollout(strain[train], data.time, phase_weights=False).stress[..., 0].detach(),
            stress[train][..., 0],
        ),
        "seconds": time.perf_counter() - t0,
        "train_seconds": train_seconds,
        "fixed_phase": fixed_phase,
        "epochs": epochs,
        "lr": lr,
        "seed": seed,
        "train": n_train,
        "test": trajectories - n_train,
        "final_loss": history.loss[-1],
        "rho": float(model.potential.rho().detach()),
        "gates": model.potential.gates().tolist(),
        "indicator": {
            "modulus": float(model.indicator_modulus),
            "strain": float(model.indicator_strain),
        },
    }
    if not fixed_phase:  # ξ is used here only to report how well the indicators read it
        summary.update(_indicator_metrics(roll, xi[test]))
    _save_model(model, out / "model.safetensors", data, summary, trajectories=trajectories)
    history.save(out / "history.json")
    write_json(out / "summary.json", summary)
    if plots:
        _plots(out, roll, strain[test], stress[test], xi[test], history, fixed_phase)
    return MetamaterialTraining(summary, model)


def _indicator_metrics(roll, xi: torch.Tensor) -> dict:
    """How well the model's phase indicator and last mode weight read the data's ξ ``(B, T)``."""
    true_xi = xi.reshape(-1)
    metrics = {}
    for key, ind in (
        ("indicator_vs_xi", roll.indicator.reshape(-1)),
        ("mode_weight_vs_xi", roll.phase_weights[..., -1].reshape(-1)),
    ):
        metrics[key] = {
            "correlation": float(torch.corrcoef(torch.stack([ind, true_xi]))[0, 1]),
            "mean_abs_difference": float((ind - true_xi).abs().mean()),
        }
    return metrics


def _plots(out: Path, roll, strain, stress, xi, history, fixed_phase: bool) -> None:
    fig, axes = subplots(1, 3, size=(13, 4))
    axes = axes[0]
    for ax, j, name in ((axes[0], 0, "σ11"), (axes[1], 1, "σ22 (= σ33)")):
        true, pred = stress[..., j].reshape(-1), roll.stress[..., j].reshape(-1)
        ax.scatter(true, pred, s=3, alpha=0.4)
        lim = [float(true.min()), float(true.max())]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set_xlabel("data model")
        ax.set_ylabel("LSE-ICNN + neural ODE")
        ax.set_title(f"held-out {name}, R² = {r2_score(pred, true):.4f}")
    axes[2].semilogy(history.epoch, history.loss)
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("training loss (normalised stress MSE)")
    save_figure(fig, out / "parity.png")

    n = min(6, strain.shape[0])
    fig, axes = subplots(2, n, size=(3.2 * n, 6))
    for k in range(n):
        ax = axes[0, k]
        ax.plot(strain[k, :, 0], stress[k, :, 0], "k-", lw=1.5, label="data model")
        ax.plot(strain[k, :, 0], roll.stress[k, :, 0], "r--", lw=1.2, label="model")
        ax.set_xlabel("ε11")
        ax.set_title(f"held-out history {k}")
        ax = axes[1, k]
        steps = range(strain.shape[1])
        ax.plot(steps, stress[k, :, 0], "k-", lw=1.5, label="σ11 data")
        ax.plot(steps, roll.stress[k, :, 0], "r--", lw=1.2, label="σ11 model")
        if not fixed_phase:
            ax.plot(steps, -0.1 * xi[k], "b-", lw=1, label="-0.1 ξ (data)")
            ax.plot(steps, -0.1 * roll.indicator[k], "c--", lw=1, label="-0.1 indicator (model)")
        ax.set_xlabel("step")
    axes[0, 0].set_ylabel("σ11")
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=7)
    save_figure(fig, out / "loops.png")
