"""``lse-material train gene-circuit``: Waddington-type landscapes from trajectories (SPEC §6).

For γ = 0.2 (weak inhibition) and γ = 2.0 (strong) — one ensemble of two models — an
LSE-ICNN potential (3 modes, 3 × 8) is trained so that ``-∇V_θ`` matches the velocities
observed along trajectories from random starts (the potential is inferred up to a
constant). The loss is the mean per-point relative squared velocity error
``|∇V_θ + v|² / (|v|² + ε²)``, ε = 5 % of the RMS speed [ours]. Then the batched greedy
elimination removes a mode when that error stays below ``tolerance`` = 0.1 [ours]. Measured
with 1, 2, 3 modes (1500 epochs): γ = 0.2: 0.055, 0.013, 0.015; γ = 2.0: 0.65, 0.016, 0.007 —
one convex well errs only in the weak landscape's concave region near the origin (a source). The learned wells are the distinct local minima of
``V_θ`` reached by gradient descent from a grid of starts.

Data [ours]: 200 trajectories per γ from uniform random starts in [0, 1.5]², RK4 with
Δt = 0.1 for 6 time units, every second sample point used. The transient landscape run follows
SPEC §6 with t0 = 4 and τ = 0.5.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from lse_material.jsonio import write_json
from lse_material.lse import LSEICNN
from training.data import gene_circuit as gc
from training.fit import FitOptions, fit, fold_gates, prune_by_elimination, resolve_device

__all__ = ["train_gene_circuit", "fit_potentials", "find_wells", "register"]

T0, TAU = 4.0, 0.5  # transient landscape switch [ours]


def fit_potentials(
    points: torch.Tensor,
    velocities: torch.Tensor,
    *,
    n_modes: int = 3,
    hidden=(8, 8, 8),
    epochs: int = 3000,
    finetune_epochs: int = 1000,
    tolerance: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
) -> LSEICNN:
    """One potential per member: points, velocities ``(M, n, 2)``; returns the ensemble model."""
    dev = resolve_device(device)
    points, velocities = points.to(dev), velocities.to(dev)
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
    # Per-point relative error: slow points near the wells weigh as much as fast transients,
    # so the direction of the flow must be right everywhere (ε keeps fixed points finite).
    weight = 1.0 / (velocities.pow(2).sum(-1) + (0.05 * speed) ** 2)  # (M, n)

    def loss():  # mean relative squared velocity error per member
        gradient = model.derivatives(points, hessian=False).gradient
        return ((gradient + velocities).pow(2).sum(-1) * weight).mean(-1)

    fit(
        model,
        loss,
        FitOptions(
            epochs=epochs,
            lr_network=1e-2,
            lr_gates=1e-2,
            l1=1e-4,
            sparsify_after=0.5,
            log_every=max(epochs // 50, 1),
        ),
        description="gene-circuit",
    )
    fold_gates(model)
    prune_by_elimination(
        model,
        loss,
        points,
        finetune=FitOptions(
            epochs=finetune_epochs,
            lr_network=3e-3,
            l1=0.0,
            progress=False,
            log_every=finetune_epochs,
        ),
        accept=lambda before, after: after <= tolerance,
    )
    return model


def find_wells(model: LSEICNN, member: int, *, merge: float = 0.02) -> list[list[float]]:
    """Distinct local minima of V_θ (member ``member``) in the domain, by gradient descent."""
    g = torch.linspace(0.05, 1.45, 12, dtype=torch.float64)
    p = torch.cartesian_prod(g, g)
    single = model.member(member) if model.ensemble_shape else model
    with torch.no_grad():
        for _ in range(3000):
            d = single.derivatives(p, hessian=False)
            p = (p - 0.05 * d.gradient).clamp(*gc.DOMAIN)
        d = single.derivatives(p)
    stationary = d.gradient.norm(dim=-1) < 1e-3
    convex = torch.linalg.eigvalsh(d.hessian).min(-1).values > 0
    wells: list[torch.Tensor] = []
    for q in p[stationary & convex]:
        if all((q - w).norm() > merge for w in wells):
            wells.append(q)
    return [w.tolist() for w in wells]


def train_gene_circuit(
    *,
    out: str | Path,
    trajectories: int = 200,
    epochs: int = 3000,
    seed: int = 0,
    device: str = "auto",
    threads: int = 0,
    plots: bool = True,
) -> dict:
    """Train the weak and strong landscapes; write summary.json and the landscape plots."""
    if trajectories < 5:
        raise ValueError(f"need at least 5 trajectories, got {trajectories}.")
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    names = list(gc.GAMMAS)
    data = [gc.trajectories(gc.GAMMAS[n], trajectories, seed=seed + i) for i, n in enumerate(names)]
    points = torch.stack([d.points.reshape(-1, 2)[::2] for d in data])
    velocities = torch.stack([d.velocities.reshape(-1, 2)[::2] for d in data])
    model = fit_potentials(points, velocities, epochs=epochs, seed=seed, device=device).cpu()
    summary = {}
    for i, name in enumerate(names):
        wells = find_wells(model, i)
        truth = gc.stable_states(gc.GAMMAS[name])
        errors = [
            min(float((torch.tensor(w) - t).norm()) for w in wells) if wells else math.inf
            for t in truth
        ]
        summary[name] = {
            "gamma": gc.GAMMAS[name],
            "active_modes": int(model.active_modes()[i]),
            "wells": wells,
            "true_wells": truth.tolist(),
            "well_errors": errors,
        }
    summary["seconds"] = time.perf_counter() - t0
    summary["epochs"] = epochs
    write_json(out / "summary.json", summary)
    if plots:
        _plots(out, model, names, data)
    return summary


def _switch(t: float) -> float:
    return (1 + math.tanh((t - T0) / TAU)) / 2


def _plots(out: Path, model: LSEICNN, names, data) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = torch.linspace(*gc.DOMAIN, 121, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([X.reshape(-1), Y.reshape(-1)], dim=-1)
    with torch.no_grad():
        learned = model(grid)  # (2, G)
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for i, name in enumerate(names):
        true = gc.potential(grid, gc.GAMMAS[name])
        for ax, values, label in (
            (axes[0, i], true, "true V"),
            (axes[1, i], learned[i], "learned V_θ"),
        ):
            values = values - values.min()
            cs = ax.contourf(X, Y, values.reshape(X.shape), levels=30, cmap="viridis")
            fig.colorbar(cs, ax=ax)
            for traj in data[i].points[:25]:
                ax.plot(traj[:, 0], traj[:, 1], "w-", lw=0.6, alpha=0.8)
            ax.set_title(f"{label}, γ = {gc.GAMMAS[name]}")
            ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(out / "landscapes.png", dpi=100)
    plt.close(fig)

    # Transient landscape: trajectories gather at the central well, then split to the two fates.
    starts = gc.DOMAIN[0] + 1.5 * torch.rand(
        40, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64
    )
    run = gc.trajectories(None, 40, steps=100, dt=0.1, starts=starts, gamma_of_t=_switch)
    times = [1.0, 4.0, 5.0, 9.9]
    fig, axes = plt.subplots(1, len(times), figsize=(4.2 * len(times), 4))
    for ax, t in zip(axes, times, strict=True):
        s = _switch(t)
        values = (1 - s) * learned[0] + s * learned[1]
        values = values - values.min()
        ax.contourf(X, Y, values.reshape(X.shape), levels=30, cmap="viridis")
        k = int(round(t / 0.1))
        ax.plot(run.points[:, : k + 1, 0].T, run.points[:, : k + 1, 1].T, "w-", lw=0.5, alpha=0.7)
        ax.plot(run.points[:, k, 0], run.points[:, k, 1], "ro", ms=3)
        ax.set_title(f"t = {t:.1f}, s(t) = {s:.2f}")
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(out / "transient_landscape.png", dpi=100)
    plt.close(fig)


def register(groups) -> None:
    p = groups["train"].add_parser(
        "gene-circuit", help="gene-circuit landscapes, γ = 0.2 and 2.0 (SPEC §6)"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--trajectories", type=int, default=200)
    p.add_argument("--epochs", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=train_gene_circuit)
