"""``lse-material train gene-circuit``: Waddington-type landscapes from trajectories (docs/science.md §6).

For γ = 0.2 (weak inhibition) and γ = 2.0 (strong) — one ensemble of two models — an
LSE-ICNN potential (3 modes, 3 × 8) is trained so that ``-∇V_θ`` matches the velocities
observed along trajectories from random starts (the potential is inferred up to a
constant). The loss is the mean per-point relative squared velocity error
``|∇V_θ + v|² / (|v|² + ε²)``, ε = 5 % of the RMS speed [ours]: slow points near the wells
weigh as much as fast transients. After the L1 phase, the batched greedy elimination removes
a mode when that error stays at most ``tolerance`` = 0.1 [ours]. Measured (defaults, seed 0):
after the L1 phase (3 modes) 0.0066 (γ = 0.2) and 0.0068 (γ = 2.0); at the end 0.033 with
1 mode (γ = 0.2) and 0.015 with 2 (γ = 2.0; removing one more mode was rejected). One convex
mode errs only in the weak landscape's concave region near the origin (V_weak has Hessian
≈ -I there), which the smooth minimum of several convex modes can bend into; the tolerance
accepts that error and rejects one convex mode for two wells. The learned wells are the
distinct local minima of ``V_θ``: gradient descent from a 12 × 12 grid of starts, then Newton
steps, keeping the points where the gradient vanishes and the Hessian is positive definite.

Data [ours]: 100 trajectories per γ from uniform random starts in [0, 1.5]², RK4 with
Δt = 0.1 for 6 time units (60 samples each), every third sample point used (2000 points per
landscape); the velocities are the exact ``-∇V`` at those points.

Transient landscape (docs/science.md §6) [ours: t0 = 4, τ = 0.5, 40 starts, t ∈ [0, 15)]:
``V_θ(x, t) = (1 - s) V_weak,θ + s V_strong,θ``, ``s = (1 + tanh((t - t0)/τ))/2``.
Trajectories from random starts are integrated on the *learned* landscape (RK4 on
``-∇V_θ(x, t)``) and compared with the same starts integrated on the true one. A trajectory's
fate is decided by how far off the diagonal it still is when the landscape switches (the
weak phase pulls every trajectory towards the diagonal well), so fates near the diagonal are
sensitive to small errors of V_θ; ``fate_agreement`` reports the fraction that agree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from lse_material.training.data import gene_circuit as gc
from lse_material.training.fit import (
    EliminationResult,
    FitOptions,
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

__all__ = [
    "PotentialFit",
    "find_wells",
    "fit_potentials",
    "learned_transient",
    "train_gene_circuit",
]

T0, TAU = 4.0, 0.5  # transient landscape switch [ours]
TRANSIENT_STARTS, TRANSIENT_STEPS, DT = 40, 150, 0.1  # [ours]


class PotentialFit(NamedTuple):
    """model: the ensemble LSE-ICNN (one member per landscape); loss_before_elimination and
    loss ``(M,)``: the mean relative squared velocity error after the L1 phase and at the end;
    elimination: what the greedy elimination removed."""

    model: LSEICNN
    loss_before_elimination: torch.Tensor
    loss: torch.Tensor
    elimination: EliminationResult


def _velocity_loss(model: LSEICNN, points, velocities, speed) -> Callable[[], torch.Tensor]:
    """The mean relative squared velocity error per member, ``(M,)``, of ``-∇V_θ`` at ``points``.

    Per-point relative error: slow points near the wells weigh as much as fast transients, so
    the direction of the flow must be right everywhere (ε = 5 % of ``speed`` keeps fixed points
    finite).
    """
    weight = 1.0 / (velocities.pow(2).sum(-1) + (0.05 * speed) ** 2)  # (M, n)

    def loss():
        # Double backward through autograd: faster to train than the closed-form path here.
        train = torch.is_grad_enabled()
        with torch.enable_grad():  # the gradient is needed also under no_grad (evaluation)
            x = points.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(model(x).sum(), x, create_graph=train)
        return ((gradient + velocities).pow(2).sum(-1) * weight).mean(-1)

    return loss


def fit_potentials(
    points: torch.Tensor,
    velocities: torch.Tensor,
    *,
    n_modes: int = 3,
    hidden: tuple[int, ...] = (8, 8, 8),
    epochs: int = 1500,
    finetune_epochs: int = 2000,
    tolerance: float = 0.1,
    lr: float = 1e-2,
    seed: int = 0,
    device: str = "cpu",
) -> PotentialFit:
    """One potential per member such that ``-∇V_θ ≈ velocities``.

    points, velocities: ``(M, n, 2)`` (or ``(n, 2)`` for one landscape; then the model is an
    ensemble of one). tolerance: the greedy elimination keeps a removal when the mean relative
    squared velocity error stays at most this value.
    """
    if points.ndim == 2:
        points, velocities = points[None], velocities[None]
    if points.shape != velocities.shape or points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(
            "points and velocities must both be (M, n, 2); got "
            f"{tuple(points.shape)} and {tuple(velocities.shape)}."
        )
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}.")
    dev = resolve_device(device)
    points = points.to(dev, torch.float64)
    velocities = velocities.to(dev, torch.float64)
    members = points.shape[0]
    model = LSEICNN(
        2,
        n_modes,
        hidden,
        ensemble=members,
        input_names=("x", "y"),
        rho=1.0,
        generator=torch.Generator().manual_seed(seed),
    ).to(dev)
    speed = velocities.pow(2).sum(-1).mean().sqrt()
    model.set_normalization(input_shift=0.75, input_scale=0.75, energy_scale=float(0.75 * speed))
    model.spread_modes(points)
    loss = _velocity_loss(model, points, velocities, speed)
    fit(
        model,
        loss,
        FitOptions(
            epochs=epochs,
            lr_network=lr,
            lr_gates=1e-2,
            l1=1e-4,
            sparsify_after=0.5,
            log_every=max(epochs // 50, 1),
        ),
        description="gene-circuit",
    )
    fold_gates(model)
    with torch.no_grad():
        fitted = loss().detach()
    elimination = prune_by_elimination(
        model,
        loss,
        points,
        finetune=FitOptions(
            epochs=finetune_epochs,
            lr_network=lr,
            l1=0.0,
            progress=False,
            log_every=finetune_epochs,
        ),
        accept=lambda before, after: after <= tolerance,
    )
    with torch.no_grad():
        final = loss().detach()
    return PotentialFit(model, fitted, final, elimination)


def find_wells(model: LSEICNN, member: int = 0, *, merge: float = 0.02) -> list[list[float]]:
    """Distinct local minima ``[[x, y], ...]`` of V_θ (ensemble member ``member``) in the domain.

    Gradient descent (500 steps) from a 12 × 12 grid of starts, then 10 Newton steps; a point
    is a well when the gradient vanishes (< 1e-6 in physical units) and the Hessian is positive
    definite.
    Minima closer than ``merge`` are one well.
    """
    single = model.member(member) if model.ensemble_shape else model
    g = torch.linspace(0.05, 1.45, 12, dtype=torch.float64)
    p = torch.cartesian_prod(g, g)
    with torch.no_grad():
        for _ in range(500):
            d = single.derivatives(p, hessian=False)
            p = (p - 0.05 * d.gradient).clamp(*gc.DOMAIN)
        for _ in range(10):
            d = single.derivatives(p)
            convex = torch.linalg.eigvalsh(d.hessian).min(-1).values > 0
            step = torch.linalg.solve(
                torch.where(convex[:, None, None], d.hessian, torch.eye(2, dtype=p.dtype)),
                d.gradient.unsqueeze(-1),
            ).squeeze(-1)
            p = torch.where(convex[:, None], p - step, p).clamp(*gc.DOMAIN)
        d = single.derivatives(p)
    stationary = d.gradient.norm(dim=-1) < 1e-6
    convex = torch.linalg.eigvalsh(d.hessian).min(-1).values > 0
    wells: list[torch.Tensor] = []
    for q in p[stationary & convex]:
        if all((q - w).norm() > merge for w in wells):
            wells.append(q)
    wells.sort(key=lambda q: (float(q[0]), float(q[1])))
    return [w.tolist() for w in wells]


def _switch(t: float) -> float:
    return (1 + math.tanh((t - T0) / TAU)) / 2


def learned_transient(
    model: LSEICNN, starts: torch.Tensor, *, steps: int = 100, dt: float = 0.1
) -> torch.Tensor:
    """RK4 trajectories on the learned transient landscape ``(1 - s) V_weak,θ + s V_strong,θ``.

    model: the two-member ensemble (weak, strong); starts ``(n, 2)`` -> points ``(n, steps, 2)``
    sampled every ``dt`` from t = 0 (the same sampling as ``gc.trajectories``).
    """
    if model.ensemble_shape != (2,):
        raise ValueError(
            f"need the two-member (weak, strong) ensemble, got ensemble {model.ensemble_shape}."
        )
    if starts.ndim != 2 or starts.shape[-1] != 2 or steps < 1 or dt <= 0:
        raise ValueError(
            f"need starts (n, 2), steps >= 1, dt > 0; got {tuple(starts.shape)}, {steps}, {dt}."
        )
    weak, strong = model.member(0), model.member(1)

    def field(p, t):
        s = _switch(t)
        return -(
            (1 - s) * weak.derivatives(p, hessian=False).gradient
            + s * strong.derivatives(p, hessian=False).gradient
        )

    with torch.no_grad():
        return gc.rk4(field, starts.to(torch.float64), steps=steps, dt=dt)


def train_gene_circuit(
    *,
    out: str | Path,
    trajectories: int = 100,
    stride: int = 3,
    epochs: int = 1500,
    finetune_epochs: int = 2000,
    tolerance: float = 0.1,
    seed: int = 0,
    device: str = "auto",
    threads: int = 0,
    plots: bool = True,
) -> dict:
    """Train the weak and strong landscapes, find their wells, run the transient landscape.

    Writes ``out/summary.json`` (``{"weak": {"active_modes", "wells", "true_wells",
    "well_errors", ...}, "strong": {...}, "transient": {...}, "seconds": ...}``), one model
    file per landscape (``weak.safetensors``, ``strong.safetensors``) and, with ``plots``,
    landscapes.png (true and learned V with trajectories) and transient_landscape.png.
    Returns the summary.

    Parameters
    ----------
    out
        output folder.
    trajectories
        trajectories per γ.
    stride
        use every stride-th sample point of the trajectories.
    epochs
        Adam epochs of the L1 phase.
    finetune_epochs
        epochs of the fine-tuning after each mode removal.
    tolerance
        largest relative velocity error a mode removal may reach.
    seed
        seed of the trajectories, the initialisation and the transient starts.
    device
        auto, cpu or cuda[:N].
    threads
        torch CPU threads (0: leave as is).
    plots
        write the PNG figures.
    """
    if trajectories < 5:
        raise ValueError(f"need at least 5 trajectories, got {trajectories}.")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}.")
    out = prepare_output(out, threads=threads)
    t0 = time.perf_counter()
    names = list(gc.GAMMAS)
    data = [gc.trajectories(gc.GAMMAS[n], trajectories, seed=seed + i) for i, n in enumerate(names)]
    points = torch.stack([d.points.reshape(-1, 2)[::stride] for d in data])
    velocities = torch.stack([d.velocities.reshape(-1, 2)[::stride] for d in data])
    result = fit_potentials(
        points,
        velocities,
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        tolerance=tolerance,
        seed=seed,
        device=device,
    )
    model = result.model.cpu()
    train_seconds = time.perf_counter() - t0
    summary: dict = {
        name: _landscape_summary(model, i, name, result, int(points.shape[1]))
        for i, name in enumerate(names)
    }
    transient = _transient(model, seed)
    summary["transient"] = transient.summary
    summary.update(
        seconds=time.perf_counter() - t0,
        train_seconds=train_seconds,
        trajectories=trajectories,
        stride=stride,
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        tolerance=tolerance,
        seed=seed,
    )
    write_json(out / "summary.json", summary)
    for i, name in enumerate(names):
        lse_material.save(
            model.member(i),
            out / f"{name}.safetensors",
            description=f"gene-circuit landscape V(x, y), gamma = {gc.GAMMAS[name]} (docs/science.md §6)",
            gamma=gc.GAMMAS[name],
            training_box={"x": list(gc.DOMAIN), "y": list(gc.DOMAIN)},
            training_summary=summary[name],
        )
    if plots:
        wells = [summary[name]["wells"] for name in names]
        _plots(out, model, names, wells, data, transient.learned, transient.true)
    return summary


def _landscape_summary(model: LSEICNN, i: int, name: str, result: PotentialFit, points: int):
    """Summary of landscape ``name`` (member ``i``): its wells against the true stable states."""
    wells = find_wells(model, i)
    truth = gc.stable_states(gc.GAMMAS[name])
    errors = [
        min(float((torch.tensor(w, dtype=torch.float64) - t).norm()) for w in wells)
        if wells
        else math.inf
        for t in truth
    ]
    return {
        "gamma": gc.GAMMAS[name],
        "active_modes": int(model.active_modes()[i]),
        "wells": wells,
        "true_wells": truth.tolist(),
        "well_errors": errors,
        "velocity_error": float(result.loss[i]),
        "velocity_error_before_elimination": float(result.loss_before_elimination[i]),
        "modes_removed": result.elimination.removed[i],
        "points": points,
    }


class _Transient(NamedTuple):
    """The transient landscape's runs, learned and true ``(n, steps, 2)``, and their summary."""

    learned: torch.Tensor
    true: torch.Tensor
    summary: dict


def _transient(model: LSEICNN, seed: int) -> _Transient:
    """The same random starts on the learned and on the true transient landscape; their fates."""
    n, steps = TRANSIENT_STARTS, TRANSIENT_STEPS
    starts = gc.DOMAIN[0] + (gc.DOMAIN[1] - gc.DOMAIN[0]) * torch.rand(
        n, 2, generator=torch.Generator().manual_seed(seed + 7), dtype=torch.float64
    )
    learned = learned_transient(model, starts, steps=steps, dt=DT)
    true = gc.trajectories(None, n, steps=steps, dt=DT, starts=starts, gamma_of_t=_switch).points
    fates_true = (true[:, -1, None, :] - gc.stable_states(2.0)).norm(dim=-1).argmin(-1)
    fates = (learned[:, -1, None, :] - gc.stable_states(2.0)).norm(dim=-1).argmin(-1)
    summary = {
        "t0": T0,
        "tau": TAU,
        "trajectories": n,
        "end_time": (steps - 1) * DT,
        "mean_distance_to_true_run": float((learned - true).norm(dim=-1).mean()),
        "end_point_error_max": float((learned[:, -1] - true[:, -1]).norm(dim=-1).max()),
        "fate_counts": torch.bincount(fates, minlength=2).tolist(),
        "fate_counts_true": torch.bincount(fates_true, minlength=2).tolist(),
        "fate_agreement": float((fates == fates_true).double().mean()),
    }
    return _Transient(learned, true, summary)


def _plots(out: Path, model: LSEICNN, names, wells, data, learned_run, true_run) -> None:
    g = torch.linspace(*gc.DOMAIN, 121, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([X.reshape(-1), Y.reshape(-1)], dim=-1)
    with torch.no_grad():
        learned = model(grid)  # (2, G)
    fig, axes = subplots(2, 2, size=(10, 9), dpi=100)
    for i, name in enumerate(names):
        true = gc.potential(grid, gc.GAMMAS[name])
        found = torch.tensor(wells[i]).reshape(-1, 2)
        truth = gc.stable_states(gc.GAMMAS[name])
        for ax, values, label in (
            (axes[0, i], true, "true V"),
            (axes[1, i], learned[i], "learned V_θ"),
        ):
            values = values - values.min()
            cs = ax.contourf(X, Y, values.reshape(X.shape), levels=30, cmap="viridis")
            fig.colorbar(cs, ax=ax)
            for traj in data[i].points[:25]:
                ax.plot(traj[:, 0], traj[:, 1], "w-", lw=0.6, alpha=0.8)
            ax.plot(truth[:, 0], truth[:, 1], "r+", ms=12, mew=2, label="true stable states")
            if label != "true V":
                ax.plot(found[:, 0], found[:, 1], "o", mfc="none", mec="orange", ms=10, mew=2)
                label = f"{label} (active modes: {int(model.active_modes()[i])})"
            ax.set_title(f"{label}, γ = {gc.GAMMAS[name]}")
            ax.set_aspect("equal")
    save_figure(fig, out / "landscapes.png")

    # Transient landscape: trajectories gather at the central well, then split to the two fates.
    end = (learned_run.shape[1] - 1) * DT
    times = [2.0, 3.5, 5.0, end]
    fig, axes = subplots(1, len(times), size=(4.2 * len(times), 4), dpi=100)
    for ax, t in zip(axes[0], times, strict=True):
        s = _switch(t)
        values = (1 - s) * learned[0] + s * learned[1]
        values = values - values.min()
        ax.contourf(X, Y, values.reshape(X.shape), levels=30, cmap="viridis")
        k = int(round(t / DT))
        ax.plot(true_run[:, : k + 1, 0].T, true_run[:, : k + 1, 1].T, "k:", lw=0.6, alpha=0.6)
        ax.plot(learned_run[:, : k + 1, 0].T, learned_run[:, : k + 1, 1].T, "w-", lw=0.5, alpha=0.7)
        ax.plot(true_run[:, k, 0], true_run[:, k, 1], "kx", ms=4)
        ax.plot(learned_run[:, k, 0], learned_run[:, k, 1], "ro", ms=3)
        ax.set_title(f"learned V_θ(x, t), t = {t:.1f}, s = {s:.2f}")
        ax.set_xlim(*gc.DOMAIN)
        ax.set_ylim(*gc.DOMAIN)
        ax.set_aspect("equal")
    fig.suptitle(
        "transient landscape: learned (white, red dots) vs true (black dotted, crosses) trajectories"
    )
    save_figure(fig, out / "transient_landscape.png")
