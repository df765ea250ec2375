"""The generic fitter: Adam with two parameter groups, proximal L1 on the gates, history;
and a smooth refinement by full-batch L-BFGS (``FitOptions(optimizer="lbfgs")``, no L1).

docs/science.md §1, eq. 7: loss = data loss + λ Σ_i |w_i|. Two Adam groups: the network (ICNN weights
and any other network the model carries) and the gates ``w`` with ρ. The L1 term is applied
as a proximal step after each Adam step (soft-thresholding ``w`` by ``lr·λ/(√v̂ + eps)``,
Adam's own per-coordinate scale), so pruned gates are exactly zero rather than dithering
around it (docs/science.md §1). Sparsification starts after a warm-up (``sparsify_after``)
and ramps λ linearly over ``ramp`` so modes first find their wells. These schedule choices
are [ours].

Seed ensembles: ``loss_fn`` returns one data loss per ensemble member, shape
``model.ensemble_shape``; their sum is minimised, which trains all members independently in
one batched pass (the members share no parameters and Adam is per coordinate).

L-BFGS [ours] (strong-Wolfe line search, history ``LBFGS_HISTORY``) refines after Adam: Adam's
full-batch steps stall at a noise floor set by the learning rate (for the mechanochemical law
a training loss of about 2.6e-4), while L-BFGS on the same loss goes on to 2e-5 in a few
thousand iterations (measured, README). With an ensemble it minimises the sum of the members'
losses, which is separable, so each member still gets its own minimum.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import torch
from tqdm import tqdm

from lse_material.atomic import atomic_write, write_json
from lse_material.lse import LSEICNN, gate

__all__ = [
    "EliminationResult",
    "FitCallback",
    "FitOptions",
    "FitResult",
    "fit",
    "fold_gates",
    "prepare_output",
    "prune_by_elimination",
    "r2_score",
    "resolve_device",
]

OPTIMIZERS = ("adam", "lbfgs")
LBFGS_HISTORY = 100  # curvature pairs kept by L-BFGS [ours]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``/``cuda``/``cuda:N`` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but no CUDA device is available; use --device cpu or auto."
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N]; got {device!r}.")
    return torch.device(device)


def prepare_output(out: str | Path, *, threads: int = 0) -> Path:
    """Set torch's CPU threads (``threads``; 0 leaves them as they are) and create the folder
    ``out``; returns it as a Path. The common start of every training study."""
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: torch's default), got {threads}.")
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


@dataclass(frozen=True)
class FitOptions:
    """Optimiser and schedule settings ([ours] unless docs/science.md says otherwise).

    epochs: Adam steps (full batch), or L-BFGS iterations. optimizer: ``"adam"`` or
    ``"lbfgs"`` (full batch, strong-Wolfe line search: no learning rates, no L1, no
    checkpoints; for fine-tunes and polishes after an Adam fit). lr_network / lr_gates:
    learning rates of the two groups (defaults 1e-3 / 1e-2). l1: λ of eq. 7. sparsify_after: fraction of the epochs
    trained without L1 (fit first). ramp: fraction of the epochs over which λ ramps to its
    value. log_every: epochs between history records. checkpoint_every: epochs between
    resumable checkpoints (0: none). progress: report progress on stderr: a progress bar on a
    terminal, otherwise (a log file, CI) one line every ``report_every`` epochs (0: a tenth
    of the epochs) with the epoch, the loss, the active modes and ρ.
    """

    epochs: int
    lr_network: float = 1e-3
    lr_gates: float = 1e-2
    l1: float = 1e-3
    sparsify_after: float = 0.3
    ramp: float = 0.2
    log_every: int = 100
    checkpoint_every: int = 0
    progress: bool = True
    report_every: int = 0
    optimizer: str = "adam"

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}."
            )
        if self.optimizer == "lbfgs" and self.l1 != 0:
            raise ValueError(
                f"optimizer 'lbfgs' refines without L1 (the L1 step is Adam's proximal step); "
                f"got l1={self.l1}: set l1=0 or use optimizer 'adam'."
            )
        for name in ("lr_network", "lr_gates"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.l1 < 0:
            raise ValueError(f"l1 must be >= 0, got {self.l1}.")
        if not (0 <= self.sparsify_after <= 1 and 0 <= self.ramp <= 1):
            raise ValueError("sparsify_after and ramp are fractions of the epochs, in [0, 1].")

    def l1_at(self, epoch: int) -> float:
        """λ at ``epoch``: 0 during the warm-up, then a linear ramp to ``l1``."""
        start = self.sparsify_after * self.epochs
        if epoch < start:
            return 0.0
        width = max(self.ramp * self.epochs, 1.0)
        return self.l1 * min(1.0, (epoch - start + 1) / width)


class FitCallback(Protocol):
    """Called before each epoch of ``fit``; True stops the fit. Its state goes into checkpoints."""

    def __call__(self, epoch: int) -> bool: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class FitResult:
    """History: lists recorded every ``log_every`` epochs. Per-member values are lists."""

    epoch: list[int] = field(default_factory=list)
    loss: list = field(default_factory=list)
    active_modes: list = field(default_factory=list)
    rho: list = field(default_factory=list)
    gates: list = field(default_factory=list)
    seconds: float = 0.0

    def save(self, path) -> None:
        """Write the history as JSON to ``path`` atomically."""
        write_json(path, asdict(self))

    def record(self, epoch: int, loss: torch.Tensor, lse: LSEICNN, non_finite: str) -> None:
        """Append one record (``loss``: per member); raise FloatingPointError(``non_finite``)
        when the loss is not finite."""
        if not bool(torch.isfinite(loss).all()):
            raise FloatingPointError(non_finite)
        self.epoch.append(epoch)
        self.loss.append(loss.tolist())
        self.active_modes.append(lse.active_modes().tolist())
        self.rho.append(lse.rho().tolist())
        self.gates.append(lse.gates().tolist())


def _parameter_groups(model: torch.nn.Module, lse: LSEICNN, options: FitOptions):
    gate_ids = {id(p) for p in lse.gate_parameters()}
    network = [p for p in model.parameters() if id(p) not in gate_ids]
    return [
        {"params": network, "lr": options.lr_network},
        {"params": lse.gate_parameters(), "lr": options.lr_gates},
    ]


@torch.no_grad()
def _proximal_l1(optimizer: torch.optim.Adam, w: torch.Tensor, lr: float, lam: float) -> None:
    """Soft-threshold ``w`` by ``lr·λ/(√v̂ + eps)`` (Adam's per-coordinate scale)."""
    state = optimizer.state[w]
    beta2 = optimizer.param_groups[1]["betas"][1]
    step = float(state["step"])
    v_hat = state["exp_avg_sq"] / (1 - beta2**step)
    threshold = lr * lam / (v_hat.sqrt() + optimizer.param_groups[1]["eps"])
    shrunk = torch.sign(w) * (w.abs() - threshold).clamp_min(0)
    # Never close the last open gate of a model: keep its largest gate as it was.
    dead = (shrunk == 0).all(dim=-1, keepdim=True)
    largest = torch.zeros_like(w, dtype=torch.bool).scatter_(
        -1, w.abs().argmax(-1, keepdim=True), True
    )
    w.copy_(torch.where(dead & largest, w, shrunk))


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[], torch.Tensor],
    options: FitOptions,
    *,
    lse: LSEICNN | None = None,
    checkpoint: str | Path | None = None,
    description: str = "fit",
    callback: FitCallback | None = None,
) -> FitResult:
    """Minimise ``loss_fn() + λ Σ|w|`` over ``model``'s parameters.

    Args:
        model: the module whose parameters are trained (an LSEICNN, or a module containing one).
        loss_fn: returns the data loss per ensemble member, shape ``lse.ensemble_shape``.
        lse: the LSEICNN inside ``model`` whose gates get the L1 term (default: ``model``).
        checkpoint: a file to resume from and save to every ``options.checkpoint_every``.
        callback: called as ``callback(epoch)`` before each epoch (``epoch`` steps done); when
            it returns True the fit stops there (saving the checkpoint). Its ``state_dict()``
            is saved with the checkpoint and restored on resume.
    Returns the FitResult history (the model is trained in place).
    """
    lse = model if lse is None else lse
    if not isinstance(lse, LSEICNN):
        raise ValueError("fit needs an LSEICNN (pass lse= when model is a compound module).")
    if options.optimizer == "lbfgs":
        if checkpoint is not None or callback is not None:
            raise ValueError("fit with optimizer 'lbfgs' takes no checkpoint and no callback.")
        return _fit_lbfgs(model, loss_fn, options, lse, description)
    optimizer = torch.optim.Adam(_parameter_groups(model, lse, options))
    result, start = FitResult(), 0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        result = FitResult(**state["history"])
        start = int(state["epoch"])
        if callback is not None:
            callback.load_state_dict(state["callback"])
    t0 = time.perf_counter() - result.seconds
    show = options.progress and sys.stderr.isatty()
    report_every = options.report_every or max(options.epochs // 10, 1)
    bar = tqdm(range(start, options.epochs), desc=description, disable=not show, mininterval=1.0)
    for epoch in bar:
        if callback is not None and callback(epoch):
            if checkpoint is not None:
                result.seconds = time.perf_counter() - t0
                _save_checkpoint(checkpoint, model, optimizer, epoch, result, callback)
            break
        optimizer.zero_grad(set_to_none=True)
        data_loss = loss_fn()
        data_loss.sum().backward()
        optimizer.step()
        lam = options.l1_at(epoch)
        if lam > 0:
            _proximal_l1(optimizer, lse.gate_weights, options.lr_gates, lam)
        last = epoch + 1 == options.epochs
        if epoch % options.log_every == 0 or last:
            with torch.no_grad():
                total = data_loss + lam * lse.gate_weights.abs().sum(-1)
                result.record(
                    epoch,
                    total,
                    lse,
                    f"{description}: loss became non-finite at epoch {epoch}; lower the "
                    "learning rates or check the data normalisation.",
                )
            if show:
                bar.set_postfix(loss=f"{float(total.mean()):.3e}")
        if options.progress and not show and (epoch % report_every == 0 or last):
            print(
                _report_line(description, epoch + 1, options.epochs, data_loss, lse),
                file=sys.stderr,
            )
        if (
            checkpoint is not None
            and options.checkpoint_every
            and ((epoch + 1) % options.checkpoint_every == 0 or last)
        ):
            result.seconds = time.perf_counter() - t0
            _save_checkpoint(checkpoint, model, optimizer, epoch + 1, result, callback)
    result.seconds = time.perf_counter() - t0
    return result


def _fit_lbfgs(
    model: torch.nn.Module,
    loss_fn: Callable[[], torch.Tensor],
    options: FitOptions,
    lse: LSEICNN,
    description: str,
) -> FitResult:
    """``options.epochs`` L-BFGS iterations on ``loss_fn().sum()``, in chunks of
    ``options.log_every`` (one history record each); stops early when L-BFGS has converged.
    Closed gates stay closed: their weight is 0, where the gate's gradient is 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        history_size=LBFGS_HISTORY,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn().sum()
        loss.backward()
        return loss

    result, done, t0 = FitResult(), 0, time.perf_counter()
    while done < options.epochs:
        chunk = min(options.log_every, options.epochs - done)
        evals = optimizer.state[params[0]].get("func_evals", 0)
        optimizer.param_groups[0].update(max_iter=chunk, max_eval=2 * chunk)
        optimizer.step(closure)
        state = optimizer.state[params[0]]
        # fewer iterations than asked and evaluations to spare: a tolerance stopped it
        converged = state["n_iter"] - done < chunk and state["func_evals"] - evals < 2 * chunk
        done = state["n_iter"]
        with torch.no_grad():
            data_loss = loss_fn()
            result.record(
                done,
                data_loss,
                lse,
                f"{description}: loss became non-finite after {done} L-BFGS iterations; "
                "check the data normalisation, or refine with optimizer 'adam'.",
            )
        if options.progress:
            print(_report_line(description, done, options.epochs, data_loss, lse), file=sys.stderr)
        if converged:
            break
    result.seconds = time.perf_counter() - t0
    return result


@torch.no_grad()
def _report_line(
    description: str, epoch: int, epochs: int, data_loss: torch.Tensor, lse: LSEICNN
) -> str:
    """One progress line: epoch, data loss, active modes and ρ (ensembles: mean and range)."""

    def spread(values: torch.Tensor, form: str) -> str:
        values = values.detach().double().flatten().cpu()
        lo, hi = float(values.min()), float(values.max())
        mean = format(float(values.mean()), form)
        return mean if lo == hi else f"{mean} [{lo:{form}}, {hi:{form}}]"

    return (
        f"{description}: epoch {epoch}/{epochs}  loss {spread(data_loss, '.3e')}  "
        f"active modes {spread(lse.active_modes(), 'g')}  rho {spread(lse.rho(), '.4g')}"
    )


def _save_checkpoint(path, model, optimizer, epoch: int, result: FitResult, callback) -> None:
    with atomic_write(path) as f:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "history": asdict(result),
                "callback": None if callback is None else callback.state_dict(),
            },
            f,
        )


def mean_squared(residual: torch.Tensor, dims: int) -> torch.Tensor:
    """Mean of ``residual²`` over its last ``dims`` dimensions (per ensemble member)."""
    return residual.pow(2).mean(dim=tuple(range(-dims, 0)))


def r2_score(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Coefficient of determination of ``pred`` against ``true`` over all entries (flattened,
    columns pooled): ``1 - Σ(pred - true)² / Σ(true - mean(true))²``."""
    pred, true = pred.reshape(-1), true.reshape(-1)
    return float(1 - (pred - true).pow(2).sum() / (true - true.mean()).pow(2).sum())


class EliminationResult(NamedTuple):
    """Per-member count of modes removed, the number of rounds run, and per member each try
    as ``{"mode", "loss_before", "loss_after" (the training loss before the mode was closed and
    after the fine-tune), "kept"}`` (kept: the removal was accepted, the mode stays closed)."""

    removed: list[int]
    rounds: int
    tries: list[list[dict]]


def prune_by_elimination(
    model: torch.nn.Module,
    loss_fn: Callable[[], torch.Tensor],
    x: torch.Tensor,
    *,
    finetune: FitOptions,
    accept: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lse: LSEICNN | None = None,
    max_rounds: int | None = None,
) -> EliminationResult:
    """Greedy backward elimination of modes, batched over the ensemble [ours].

    L1 on the gates alone over-counts wells: a gate and its mode's bias enter W only through
    ``W_i - log(g_i)/ρ``, and duplicate modes in one well share its weight. Each round, every
    member with two or more active modes closes the gate of its least used mode (smallest
    mean phase weight over ``x``), all members fine-tune together (``finetune``, no L1), and
    a member keeps the removal only if ``accept(loss_before, loss_after)`` (per member, bool)
    holds; otherwise its parameters are restored exactly and that mode is marked as needed
    (the next round tries the member's next least used mode).

    x: the data inputs ``(P, d)`` or ``(*ensemble, P, d)`` (physical units).
    """
    lse = model if lse is None else lse
    n_members = lse.ensemble_shape[0] if lse.ensemble_shape else 1
    needed = torch.zeros(n_members, lse.n_modes, dtype=torch.bool)  # tried and kept
    removed = [0] * n_members
    tries = [[] for _ in range(n_members)]
    rounds = 0
    for rounds in range(1, (max_rounds or 2 * lse.n_modes) + 1):
        with torch.no_grad():
            before = loss_fn().reshape(n_members).detach().clone()
            gates = lse.gate_weights.reshape(n_members, lse.n_modes)
            usage = lse.phase_weights(x).reshape(n_members, -1, lse.n_modes).mean(-2)
            usage = usage.masked_fill((gates == 0) | needed, math.inf)
            trying = torch.isfinite(usage).any(-1) & ((gates != 0).sum(-1) >= 2)
            if not bool(trying.any()):
                break
            snapshot = {k: v.clone() for k, v in model.state_dict().items()}
            candidate = usage.argmin(-1)
            rows = torch.nonzero(trying).flatten()
            gates[rows, candidate[rows]] = 0.0
        fit(model, loss_fn, finetune, lse=lse, description=f"eliminate {rounds}")
        with torch.no_grad():
            after = loss_fn().reshape(n_members)
            keep = trying & accept(before, after)
            _restore_members(model, snapshot, ~keep, n_members)
            rejected = torch.nonzero(trying & ~keep).flatten()
            needed[rejected, candidate[rejected]] = True
            for i in torch.nonzero(keep).flatten().tolist():
                removed[i] += 1
            for i in rows.tolist():
                tries[i].append(
                    {
                        "mode": int(candidate[i]),
                        "loss_before": float(before[i]),
                        "loss_after": float(after[i]),
                        "kept": bool(keep[i]),
                    }
                )
    return EliminationResult(removed, rounds, tries)


def _restore_members(model, snapshot, members: torch.Tensor, n_members: int) -> None:
    """Copy ``snapshot`` back into ``model`` for the ensemble members where ``members`` is True."""
    if not bool(members.any()):
        return
    for key, value in model.state_dict().items():
        if value.ndim and value.shape[0] == n_members and n_members > 1:
            value[members] = snapshot[key][members]
        elif n_members == 1:
            value.copy_(snapshot[key])


@torch.no_grad()
def fold_gates(lse: LSEICNN, gate_weight: float = 1.0) -> None:
    """Reset every open gate to ``g(gate_weight)`` and shift its mode's bias to compensate.

    ``W`` depends on a gate only through ``W_i - log(g_i)/ρ``, so this leaves the function
    exactly unchanged (an identity reparametrisation) and undoes the slow drift of the gates
    of kept modes under L1. Closed gates stay exactly zero.
    """
    w = lse.gate_weights
    g = lse.gates()
    target = gate(torch.tensor(gate_weight, dtype=w.dtype))
    rho = lse.mode_rho()
    shift = torch.where(g > 0, (torch.log(target) - torch.log(g.clamp_min(1e-300))) / rho, 0.0)
    lse.modes.out_bias.add_(shift)
    w.copy_(torch.where(g > 0, torch.full_like(w, gate_weight), torch.zeros_like(w)))
