"""One training engine for users' own data: ``lse-material train data --config run.toml --out DIR``.

A ``TrainConfig`` (nested frozen dataclasses ``data``, ``model``, ``fit``, ``output``; TOML via
``load_config``, unknown keys raise naming the valid ones, ``--set fit.epochs=2000`` overrides
any key) drives ``train``:

1. read and validate the data (``training.datafile``) and split it; all bad input raises before
   anything is written;
2. normalise as the mechanochemical verb does [ours]: inputs to [-1, 1] by the training rows'
   box; the energy scale makes a unit network gradient a typical flux
   (``mean_k std(∂ψ/∂x_k)·scale_k``; with energy targets only, ``std(ψ)``); energy targets are
   shifted by their mean. Loss terms are normalised by each target's standard deviation:
   ``energy_weight·mean(w·r_ψ²) + gradient_weight·mean(w·mean_k r_k²)`` (w: sample weights,
   mean 1), i.e. ≈ 1 - R² per term. ``data.energy_normalization = "range"`` puts the energy's
   range (max - min) for std(ψ) and its minimum for the mean (ψ in [0, 1]);
3. all seeds as ONE batched ensemble (``LSEICNN(..., ensemble=seeds)``): modes spread over the
   data, ``fit`` (Adam, two groups, proximal L1 after a warm-up), ``fold_gates``, optionally the
   greedy elimination (a removal is kept when the training loss after the fine-tune is
   ``<= tolerance`` or ``<= elimination_growth×`` the loss before, 1.21 by default [ours]),
   optionally a polish without L1 (``fit.polish_lr_network``: its network learning rate).
   ``fit.refine = "lbfgs"`` [ours] runs the fine-tunes and the polish as full-batch L-BFGS
   (``finetune_epochs`` and ``polish_epochs`` count its iterations) and refines the whole
   model once before the elimination, so each removal is judged against a converged loss
   rather than Adam's noise floor;
4. the member with the smallest validation loss is saved (``model.safetensors`` with the
   training box of the data, input names and units, metrics, the config and the data file's
   SHA-256); every seed's validation loss, active modes, ρ and minima (``lse_material.wells``)
   go to ``summary.json``, with the saved member's well table (minima, barriers).

Early stopping [ours]: after the L1 ramp, the fit stops once no member's validation loss
(evaluated every ``output.log_every`` epochs) improved by 0.1 % for ``fit.early_stopping``
epochs. Interrupts: SIGINT/SIGTERM during the fit save an atomic checkpoint and raise
``TrainingInterrupted``; ``resume=True`` continues from ``DIR/checkpoint.pt`` (also after a
kill, from the last periodic checkpoint) and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import signal
import statistics
import threading
import time
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from lse_material.training.datafile import (
    DataConfig,
    DataError,
    Dataset,
    Split,
    load_data,
    split_rows,
)
from lse_material.training.fit import (
    OPTIMIZERS,
    FitOptions,
    FitResult,
    fit,
    fold_gates,
    prune_by_elimination,
    r2_score,
    resolve_device,
)
from lse_material.training.mode_init import pretrain_on_wells, well_candidates

import lse_material
from lse_material.atomic import save_figure, write_json
from lse_material.lse import LSEICNN
from lse_material.wells import find_wells, plot_wells

__all__ = [
    "ConfigError",
    "FitConfig",
    "ModelConfig",
    "OutputConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "config_from_dict",
    "load_config",
    "train",
    "train_data",
]

RUN_FILES = ("config.json", "checkpoint.pt", "model.safetensors", "summary.json", "history.json")
PLOTS = ("parity.png", "history.png", "wells.png")
IMPROVEMENT = 1e-3  # early stopping: a relative improvement of the validation loss [ours]
INITS = ("spread", "wells")
GROUPINGS = ("none", "threshold")


class ConfigError(ValueError):
    """A bad config key or value; the message names the key and the valid keys or values."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM during the fit: the checkpoint is saved; resume with ``resume=True``."""


@dataclass(frozen=True)
class ModelConfig:
    """max_modes: modes at the start (elimination and L1 switch the unneeded off); hidden: ICNN
    hidden widths; rho_start: the start value of ρ (normalised energy units).

    init: "spread" (modes spread over the data by farthest-point sampling) or "wells" (modes on
    well candidates of the data, ``training.mode_init.well_candidates``: small, locally convex
    flux; needs a gradient column for every input). first_well_input: with "wells", the first
    candidate is the one with the smallest value of this input (default: the one nearest the
    data's centre). groups: "none" (one ρ) or "threshold" (nested LSE, with init = "wells"):
    modes whose candidate has ``group_input > group_threshold`` (physical units) form group 1,
    the others group 0 (one resulting group: no groups); group_rho: start value of each ρ_g."""

    max_modes: int = 6
    hidden: tuple[int, ...] = (10, 10)
    rho_start: float = 1.0
    init: str = "spread"
    first_well_input: str | None = None
    groups: str = "none"
    group_input: str | None = None
    group_threshold: float | None = None
    group_rho: float = 1.0

    def __post_init__(self):
        if self.max_modes < 1 or not self.hidden or min(self.hidden) < 1:
            raise ConfigError(
                f"model.max_modes and model.hidden must be >= 1; got {self.max_modes}, "
                f"{list(self.hidden)}."
            )
        for name in ("rho_start", "group_rho"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"model.{name} must be positive; got {getattr(self, name)}.")
        for name, valid in (("init", INITS), ("groups", GROUPINGS)):
            if getattr(self, name) not in valid:
                raise ConfigError(
                    f"model.{name} must be one of {list(valid)}; got {getattr(self, name)!r}."
                )
        if self.init != "wells" and (self.first_well_input is not None or self.groups != "none"):
            raise ConfigError(
                'model.first_well_input and model.groups = "threshold" need model.init = '
                f'"wells"; got init = {self.init!r}, first_well_input = '
                f"{self.first_well_input!r}, groups = {self.groups!r}."
            )
        given = [v is not None for v in (self.group_input, self.group_threshold)]
        if given != [self.groups == "threshold"] * 2:
            raise ConfigError(
                'model.groups = "threshold" needs both model.group_input and '
                "model.group_threshold, and they are used only with it; got groups = "
                f"{self.groups!r}, group_input = {self.group_input!r}, group_threshold = "
                f"{self.group_threshold!r}."
            )


@dataclass(frozen=True)
class FitConfig:
    """epochs, lr_network, lr_gates, l1, sparsify_after, ramp: as ``FitOptions`` (the L1 phase).
    early_stopping: patience in epochs after the L1 ramp (0: off). elimination: run the greedy
    elimination; tolerance: the normalised training loss a removal may reach; finetune_epochs:
    per elimination round; elimination_growth: the factor by which a removal may raise the
    training loss and still be kept (1.21 [ours]). polish_epochs: a final fit without L1 (0: none);
    polish_lr_network: its network learning rate (0: lr_network). refine: the optimiser of the
    fine-tunes and the polish, "adam" or "lbfgs" (L-BFGS: the epochs count iterations, the
    whole model is refined before the elimination, polish_lr_network stays 0). pretrain_epochs:
    before the fit, each mode alone fitted to the fluxes of its candidate's Voronoi region,
    then the modes' constants matched (``training.mode_init``; needs model.init = "wells" and
    seeds = 1; 0: none). seeds: ensemble
    members trained together; seed: of the initialisation. device: auto | cpu | cuda[:N].
    threads: torch CPU threads (0: leave as is)."""

    epochs: int = 5000
    lr_network: float = 3e-3
    lr_gates: float = 1e-2
    l1: float = 1e-4
    sparsify_after: float = 0.5
    ramp: float = 0.2
    early_stopping: int = 0
    elimination: bool = True
    tolerance: float = 1e-3
    finetune_epochs: int = 500
    elimination_growth: float = 1.21
    polish_epochs: int = 0
    polish_lr_network: float = 0.0
    refine: str = "adam"
    pretrain_epochs: int = 0
    seeds: int = 1
    seed: int = 0
    device: str = "auto"
    threads: int = 0

    def __post_init__(self):
        self.options()  # validates epochs, learning rates, l1, fractions
        for name in (
            "early_stopping",
            "finetune_epochs",
            "polish_epochs",
            "polish_lr_network",
            "pretrain_epochs",
            "threads",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"fit.{name} must be >= 0; got {getattr(self, name)}.")
        if self.seeds < 1:
            raise ConfigError(f"fit.seeds must be >= 1; got {self.seeds}.")
        if self.refine not in OPTIMIZERS:
            raise ConfigError(f"fit.refine must be one of {list(OPTIMIZERS)}; got {self.refine!r}.")
        if self.refine == "lbfgs" and self.polish_lr_network:
            raise ConfigError(
                'fit.polish_lr_network is an Adam learning rate; with fit.refine = "lbfgs" '
                f"(a line search) leave it 0; got {self.polish_lr_network}."
            )
        if self.elimination and (
            self.finetune_epochs < 1 or not self.tolerance > 0 or not self.elimination_growth >= 1
        ):
            raise ConfigError(
                "fit.elimination needs fit.finetune_epochs >= 1, fit.tolerance > 0 and "
                f"fit.elimination_growth >= 1; got {self.finetune_epochs}, {self.tolerance} and "
                f"{self.elimination_growth}."
            )

    def options(self, **changes) -> FitOptions:
        """The L1 phase's ``FitOptions`` (``changes`` replace fields)."""
        base = dict(
            epochs=self.epochs,
            lr_network=self.lr_network,
            lr_gates=self.lr_gates,
            l1=self.l1,
            sparsify_after=self.sparsify_after,
            ramp=self.ramp,
        )
        try:
            return FitOptions(**{**base, **changes})
        except ValueError as error:
            raise ConfigError(f"fit: {error}") from None


@dataclass(frozen=True)
class OutputConfig:
    """plots: write the PNGs; log_every: epochs between history records, validation losses and
    log lines (when stderr is not a terminal; on one, a progress bar); checkpoint_every: epochs between checkpoints (0: only on interrupts)."""

    plots: bool = True
    log_every: int = 100
    checkpoint_every: int = 500

    def __post_init__(self):
        if self.log_every < 1 or self.checkpoint_every < 0:
            raise ConfigError(
                "output.log_every must be >= 1 and output.checkpoint_every >= 0; got "
                f"{self.log_every}, {self.checkpoint_every}."
            )


@dataclass(frozen=True)
class TrainConfig:
    """The whole run: ``[data]`` (required), ``[model]``, ``[fit]``, ``[output]``."""

    data: DataConfig
    model: ModelConfig = ModelConfig()
    fit: FitConfig = FitConfig()
    output: OutputConfig = OutputConfig()

    def __post_init__(self):
        m, inputs = self.model, self.data.inputs
        for key in ("first_well_input", "group_input"):
            name = getattr(m, key)
            if name is not None and name not in inputs:
                raise ConfigError(
                    f"model.{key} = {name!r} is not among data.inputs {list(inputs)}."
                )
        if m.init == "wells":
            missing = [n for n in inputs if n not in self.data.gradients]
            if missing:
                raise ConfigError(
                    f'model.init = "wells" needs a gradient column for every input (the flux '
                    f'locates the wells); data.gradients lacks {missing}. Use init = "spread".'
                )
        if self.fit.pretrain_epochs and (m.init != "wells" or self.fit.seeds != 1):
            raise ConfigError(
                f'fit.pretrain_epochs = {self.fit.pretrain_epochs} needs model.init = "wells" and '
                f"fit.seeds = 1 (the per-mode pre-training fits one model); got init = "
                f"{m.init!r}, seeds = {self.fit.seeds}."
            )


class TrainResult(NamedTuple):
    """summary: what ``summary.json`` holds; model: the saved (best) member; out: the folder;
    ensemble: all seeds (``ensemble=fit.seeds``, on the CPU); history: the L1 fit's record."""

    summary: dict
    model: LSEICNN
    out: Path
    ensemble: LSEICNN
    history: FitResult


# --------------------------------------------------------------------------- config


def _coerce(value, hint, key: str):
    """``value`` (from TOML) as the field type ``hint``; raises ConfigError naming ``key``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is types.UnionType:  # ``X | None``: TOML has no null, so a given value is an X
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    if is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list; got {value!r}.")
        return tuple(_coerce(v, args[0], key) for v in value)
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"{key} must be a table of strings; got {value!r}.")
        return dict(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        raise ConfigError(f"{key} must be of type {hint.__name__}; got {value!r}.")
    return float(value) if hint is float else value


def _build(cls, mapping, prefix: str):
    if not isinstance(mapping, dict):
        raise ConfigError(f"[{prefix.rstrip('.')}] must be a table; got {mapping!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = [prefix + k for k in mapping if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown}; valid keys of [{prefix.rstrip('.') or 'top'}]: {names}."
        )
    required = [prefix + f.name for f in fields(cls) if f.name not in mapping and _required(f)]
    if required:
        raise ConfigError(f"missing key(s) {required}.")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in mapping.items()})


def _required(f) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def config_from_dict(mapping: dict) -> TrainConfig:
    """A TrainConfig from nested dicts (the TOML tables); unknown keys raise ConfigError."""
    return _build(TrainConfig, mapping, "")


def _parse_value(text: str):
    """A ``--set`` value as TOML (``2000``, ``[8, 8]``, ``true``, ``"x"``), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(mapping: dict, overrides: typing.Iterable[str]) -> dict:
    """A copy of ``mapping`` with each ``"table.key=value"`` set (``--set`` on the CLI)."""
    result = json.loads(json.dumps(mapping))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. fit.epochs=2000); got {item!r}.")
        *tables, last = key.strip().split(".")
        node = result
        for table in tables:
            node = node.setdefault(table, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {table!r} is not a table.")
        node[last] = _parse_value(text.strip())
    return result


def load_config(path: str | Path, overrides: typing.Iterable[str] = ()) -> TrainConfig:
    """Read a TOML config; a relative ``data.file`` is relative to the config file's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist.")
    try:
        mapping = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error}).") from None
    config = config_from_dict(apply_overrides(mapping, overrides))
    file = Path(config.data.file)
    if not file.is_absolute():
        file = (path.parent / file).resolve()
    return replace(config, data=replace(config.data, file=str(file)))


# --------------------------------------------------------------------------- the problem


class _Targets(NamedTuple):
    """One row subset on the device: x (P, d), energy (P,) | None, gradient (P, k) | None,
    weight (P,) (mean 1)."""

    x: torch.Tensor
    energy: torch.Tensor | None
    gradient: torch.Tensor | None
    weight: torch.Tensor


@dataclass(frozen=True)
class _Problem:
    """Normalisation and loss of a dataset (see the module docstring)."""

    train: _Targets
    validation: _Targets
    wrt: tuple[int, ...] | None  # inputs the gradient columns differentiate (None: all, in order)
    shift: torch.Tensor  # (d,)
    scale: torch.Tensor  # (d,)
    energy_shift: float
    energy_scale: float
    energy_std: float  # the energy loss term's normaliser: std(ψ), or its range
    gradient_std: torch.Tensor | None  # (k,)
    energy_weight: float
    gradient_weight: float

    def predict(self, model: LSEICNN, x: torch.Tensor):
        """Energy ``(*ens, P)`` and gradient ``(*ens, P, k)`` (None without gradient targets)."""
        if self.gradient_std is None:
            return model(x), None
        d = model.derivatives(x, hessian=False, wrt=self.wrt)
        return d.energy, d.gradient

    def loss(self, model: LSEICNN, part: _Targets) -> torch.Tensor:
        """The normalised loss per ensemble member, ``ensemble_shape``."""
        energy, gradient = self.predict(model, part.x)
        total = 0.0
        if part.energy is not None and self.energy_weight:
            r = (energy - part.energy) / self.energy_std
            total = total + self.energy_weight * (part.weight * r.pow(2)).mean(-1)
        if gradient is not None and self.gradient_weight:
            r = ((gradient - part.gradient) / self.gradient_std).pow(2).mean(-1)
            total = total + self.gradient_weight * (part.weight * r).mean(-1)
        return total


def _problem(data: Dataset, split: Split, config: DataConfig, device) -> _Problem:
    """Normalisation from the training rows; raises DataError for a zero scale."""
    tr = split.train
    x = data.x[tr]
    low, high = x.min(0).values, x.max(0).values
    for j in torch.nonzero(high == low).flatten().tolist():
        raise DataError(
            f"{data.path}: input {config.inputs[j]!r} is constant on the training rows "
            f"({float(low[j])}): zero normalisation scale. Drop it or use another split."
        )
    shift, scale = (high + low) / 2, (high - low) / 2
    energy_shift, energy_std = 0.0, 1.0
    if data.energy is not None:
        e = data.energy[tr]
        by_range = config.energy_normalization == "range"
        energy_shift = float(e.min() if by_range else e.mean())
        energy_std = float(e.max() - e.min() if by_range else e.std())
    gradient_std = None if data.gradient is None else data.gradient[tr].std(0)
    for name, std in ([(config.energy, energy_std)] if data.energy is not None else []) + list(
        zip(config.gradients.values(), [] if gradient_std is None else gradient_std.tolist())
    ):
        if not std > 0:
            raise DataError(
                f"{data.path}: target column {name!r} is constant on the training rows; "
                "there is nothing to fit (drop it from the targets)."
            )
    if gradient_std is not None:
        energy_scale = float((gradient_std * scale[list(data.gradient_inputs)]).mean())
    else:
        energy_scale = energy_std
    wrt = None if data.gradient_inputs == tuple(range(data.x.shape[1])) else data.gradient_inputs

    def part(rows) -> _Targets:
        w = data.weight[rows]
        return _Targets(
            data.x[rows].to(device),
            None if data.energy is None else data.energy[rows].to(device),
            None if data.gradient is None else data.gradient[rows].to(device),
            (w / w.mean()).to(device),
        )

    return _Problem(
        train=part(tr),
        validation=part(split.validation),
        wrt=wrt,
        shift=shift,
        scale=scale,
        energy_shift=energy_shift,
        energy_scale=energy_scale,
        energy_std=energy_std,
        gradient_std=None if gradient_std is None else gradient_std.to(device),
        energy_weight=config.energy_weight,
        gradient_weight=config.gradient_weight,
    )


# --------------------------------------------------------------------------- the fit


class _Monitor:
    """The fit's callback: validation losses every ``every`` epochs, early stopping after
    ``patience_from``, and a stop on SIGINT/SIGTERM (``interrupted``)."""

    def __init__(self, problem: _Problem, model: LSEICNN, *, every: int, patience: int, start: int):
        self.problem, self.model = problem, model
        self.every, self.patience, self.start = every, patience, start
        self.interrupted, self.interrupted_at = False, 0
        self.state = {"epoch": [], "validation": [], "best": None, "since": None, "stopped": None}

    def __call__(self, epoch: int) -> bool:
        s = self.state
        if self.interrupted:
            self.interrupted_at = epoch
            return True
        if s["stopped"] is not None:
            return True
        if epoch % self.every or (s["epoch"] and s["epoch"][-1] >= epoch):
            return False
        with torch.no_grad():
            val = self.problem.loss(self.model, self.problem.validation).reshape(-1).tolist()
        s["epoch"].append(epoch)
        s["validation"].append(val)
        if not self.patience or epoch < self.start:
            return False
        if s["best"] is None:
            s["best"], s["since"] = val, [epoch] * len(val)
        for i, v in enumerate(val):
            if v < (1 - IMPROVEMENT) * s["best"][i]:
                s["best"][i], s["since"][i] = v, epoch
        if all(epoch - since >= self.patience for since in s["since"]):
            s["stopped"] = epoch
            return True
        return False

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.state = state


class _Signals:
    """Within the block, SIGINT/SIGTERM set ``monitor.interrupted`` (a second one raises)."""

    def __init__(self, monitor: _Monitor):
        self.monitor, self.previous = monitor, {}

    def _handle(self, signum, frame):
        if self.monitor.interrupted:
            raise KeyboardInterrupt
        self.monitor.interrupted = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _new_model(config: TrainConfig, problem: _Problem, device):
    """The ensemble with the data's normalisation and its modes started (``model.init``), and
    the well candidates ``(N, d)`` it was placed on (None for init = "spread")."""
    m, x = config.model, problem.train.x
    centres = groups = None
    if m.init == "wells":
        flux, flux_std = _flux(problem)
        first = None
        if m.first_well_input is not None:
            first = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
            first[config.data.inputs.index(m.first_well_input)] = 1.0
        centres = well_candidates(
            x, flux, m.max_modes, scale=problem.scale, shift=problem.shift, first=first
        )
        if m.groups == "threshold":
            column = centres[:, config.data.inputs.index(m.group_input)]
            groups = (column > m.group_threshold).long().tolist()
            groups = groups if len(set(groups)) > 1 else None
    model = LSEICNN(
        x.shape[1],
        m.max_modes,
        m.hidden,
        ensemble=config.fit.seeds,
        input_names=config.data.inputs,
        rho=m.rho_start,
        groups=groups,
        group_rho=m.group_rho,
        generator=torch.Generator().manual_seed(config.fit.seed),
    ).to(device)
    model.set_normalization(
        input_shift=problem.shift,
        input_scale=problem.scale,
        energy_shift=problem.energy_shift,
        energy_scale=problem.energy_scale,
    )
    if centres is None:
        model.spread_modes(x)
    else:
        model.place_modes(centres)
    return model, centres


def _pretrain(model: LSEICNN, problem: _Problem, config: TrainConfig, centres) -> float:
    """Each mode alone fitted to the fluxes of its candidate's region, then the modes' levels
    matched (``training.mode_init``), and with energy targets the energy's constant fitted;
    the ensemble has one member (checked by TrainConfig). Returns the final local loss (mean squared normalised flux error)."""
    x, (flux, flux_std) = problem.train.x, _flux(problem)
    single = model.member(0)
    every = config.output.log_every
    options = config.fit.options(
        epochs=config.fit.pretrain_epochs, l1=0.0, log_every=every, report_every=every
    )
    local = pretrain_on_wells(single, x, flux, flux_std, centres, options)
    with torch.no_grad():
        if problem.train.energy is not None:  # energy targets fix the constant the fluxes leave
            residual = problem.train.energy - single(x)
            single.energy_shift.add_((problem.train.weight * residual).mean())
        for name, value in single.state_dict().items():
            model.state_dict()[name].copy_(value)
    return local


def _flux(problem: _Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """The training rows' gradient in input order ``(P, d)`` and its std ``(d,)`` (every
    input has a gradient column: checked by TrainConfig for init = "wells")."""
    columns = list(problem.wrt or range(problem.train.x.shape[1]))
    flux = torch.empty_like(problem.train.x)
    flux[:, columns] = problem.train.gradient
    std = torch.empty_like(problem.shift.to(flux.device))
    std[columns] = problem.gradient_std
    return flux, std


class _Phases(NamedTuple):
    history: FitResult
    monitor: dict
    removed: list[int]
    rounds: int
    tries: list[list[dict]]
    fit_seconds: float
    seconds: float


def _run_phases(model: LSEICNN, problem: _Problem, config: TrainConfig, out: Path) -> _Phases:
    """L1 fit (checkpointed, interruptible), fold_gates, elimination, polish."""
    f, o = config.fit, config.output
    t0 = time.perf_counter()

    def train_loss():
        return problem.loss(model, problem.train)

    monitor = _Monitor(
        problem,
        model,
        every=o.log_every,
        patience=f.early_stopping,
        start=int(math.ceil((f.sparsify_after + f.ramp) * f.epochs)),
    )
    options = f.options(
        log_every=o.log_every, report_every=o.log_every, checkpoint_every=o.checkpoint_every
    )
    with _Signals(monitor):
        history = fit(
            model,
            train_loss,
            options,
            checkpoint=out / "checkpoint.pt",
            description="train data",
            callback=monitor,
        )
    if monitor.interrupted:
        raise TrainingInterrupted(
            f"interrupted at epoch {monitor.interrupted_at}; checkpoint "
            f"{out / 'checkpoint.pt'} saved. Continue with --resume."
        )
    fit_seconds = history.seconds
    fold_gates(model)
    removed, rounds, tries = [0] * f.seeds, 0, [[] for _ in range(f.seeds)]
    finetune = f.options(
        epochs=f.finetune_epochs,
        l1=0.0,
        progress=False,
        log_every=f.finetune_epochs,
        optimizer=f.refine,
    )
    if f.elimination:
        if f.refine == "lbfgs":  # the loss before a removal, converged like the loss after it
            fit(model, train_loss, finetune, description="refine")
        result = prune_by_elimination(
            model,
            train_loss,
            problem.train.x,
            finetune=finetune,
            accept=lambda before, after: (
                (after <= f.tolerance) | (after <= f.elimination_growth * before)
            ),
        )
        removed, rounds, tries = result.removed, result.rounds, result.tries
    if f.polish_epochs:
        fit(
            model,
            train_loss,
            f.options(
                epochs=f.polish_epochs,
                lr_network=f.polish_lr_network or f.lr_network,
                l1=0.0,
                log_every=f.polish_epochs,
                optimizer=f.refine,
            ),
            description="polish",
        )
    return _Phases(
        history, monitor.state, removed, rounds, tries, fit_seconds, time.perf_counter() - t0
    )


# --------------------------------------------------------------------------- the run


def _run_record(config: TrainConfig, data: Dataset) -> dict:
    """What ``config.json`` holds (JSON types: lists, not tuples), compared on resume."""
    return json.loads(json.dumps({"config": asdict(config), "data_sha256": data.sha256}))


def _prepare_out(out: Path, record: dict, *, overwrite: bool, resume: bool) -> None:
    """Refuse a folder holding another run (unless ``overwrite``); check a resumed one."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder.")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if resume:
        if not (out / "checkpoint.pt").is_file() or not (out / "config.json").is_file():
            raise ValueError(
                f"--resume: {out} holds no checkpoint of a run; start without --resume."
            )
        stored = json.loads((out / "config.json").read_text())
        if stored != record:
            changed = _differences(stored, record)
            raise ValueError(
                f"--resume: the run in {out} had another config or data file (differs in "
                f"{changed}); resume with the same config, or start afresh with --overwrite."
            )
        return
    if existing and not overwrite:
        raise ValueError(
            f"{out} holds another run ({', '.join(existing)}); choose another --out, pass "
            "--overwrite to replace it, or --resume to continue it."
        )
    for name in (*existing, *PLOTS):
        (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", record)


def _differences(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b))
            for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]


def _metrics(model: LSEICNN, problem: _Problem, config: DataConfig) -> dict:
    """R² and RMSE of every target column on the training and validation rows (one model)."""
    result = {}
    for name, part in (("train", problem.train), ("validation", problem.validation)):
        with torch.no_grad():
            energy, gradient = problem.predict(model, part.x)
        columns = {}
        if part.energy is not None:
            columns[config.energy] = (energy, part.energy)
        for j, column in enumerate(config.gradients.values()):
            columns[column] = (gradient[:, j], part.gradient[:, j])
        result[name] = {
            column: {"r2": r2_score(p, t), "rmse": float((p - t).pow(2).mean().sqrt())}
            for column, (p, t) in columns.items()
        }
    return result


def _seed_table(model: LSEICNN, problem: _Problem) -> dict:
    with torch.no_grad():
        return {
            "train_loss": problem.loss(model, problem.train).tolist(),
            "validation_loss": problem.loss(model, problem.validation).tolist(),
            "active_modes": model.active_modes().tolist(),
            "rho": model.rho().tolist(),
        }


def _minima(model: LSEICNN, box: dict) -> list[dict[str, float]]:
    """Locations of the local minima inside ``box`` (``lse_material.wells``, no barriers)."""
    found = find_wells(model, box=box, barriers=False)
    return [m.location for m in found.minima if m.in_box]


class _Evaluation(NamedTuple):
    model: LSEICNN  # the best member, on the CPU
    wells: object  # its lse_material.wells.WellAnalysis
    summary: dict
    problem: _Problem  # on the CPU


def _evaluate(
    model: LSEICNN, problem: _Problem, phases: _Phases, config: TrainConfig, data, split
) -> _Evaluation:
    """The best member (by validation loss), its well analysis and the summary dict."""
    box = {
        n: [float(lo), float(hi)]
        for n, lo, hi in zip(config.data.inputs, data.x.min(0).values, data.x.max(0).values)
    }
    seeds = _seed_table(model, problem)
    seeds["wells"] = [_minima(model.member(i).cpu(), box) for i in range(config.fit.seeds)]
    seeds["well_count"] = [len(w) for w in seeds["wells"]]
    best = min(range(config.fit.seeds), key=lambda i: seeds["validation_loss"][i])
    single = model.member(best).cpu()
    wells = find_wells(single, box=box)
    cpu_problem = _problem(data, split, config.data, "cpu")
    metrics = _metrics(single, cpu_problem, config.data)
    summary = {
        "best_seed": best,
        "seeds": seeds,
        "metrics": metrics,
        "active_modes": int(single.active_modes()),
        "wells": wells.to_json(paths=False),
        "rho": float(single.rho().detach()),
        "groups": None if single.groups is None else list(single.groups),
        "group_rho": single.group_rho().detach().tolist(),
        "rows": {
            "train": len(split.train),
            "validation": len(split.validation),
            "dropped_nonfinite": data.dropped,
        },
        "energy_known": "up to an additive constant" if data.energy is None else "absolute",
        "elimination": {
            "removed": phases.removed,
            "rounds": phases.rounds,
            "tries": phases.tries,
        },
        "early_stopped_at": phases.monitor["stopped"],
        "fit_seconds": phases.fit_seconds,
        "fit_epochs": phases.monitor["stopped"] or config.fit.epochs,
        "fit_ms_per_epoch": 1e3
        * phases.fit_seconds
        / (phases.monitor["stopped"] or config.fit.epochs),
        "seconds": phases.seconds,
        "device": str(problem.train.x.device),
        "data_file": str(data.path),
        "data_sha256": data.sha256,
        "training_box": box,
    }
    return _Evaluation(single, wells, summary, cpu_problem)


def train(
    config: TrainConfig,
    *,
    out: str | Path,
    data: Dataset | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> TrainResult:
    """Train on ``config.data``; write ``out/model.safetensors``, ``summary.json``, plots.

    ``data``: the rows, already validated (``datafile.dataset_from_columns``: a data model's
    samples, arrays from another program); default: read ``config.data.file``. Every input
    check runs before anything is written. ``resume`` continues the run in
    ``out`` from its checkpoint (the config and data file must be unchanged); ``overwrite``
    replaces a run there. Raises TrainingInterrupted on SIGINT/SIGTERM (checkpoint saved).
    """
    if overwrite and resume:
        raise ValueError("choose one of --overwrite (start afresh) and --resume (continue).")
    out = Path(out)
    device = resolve_device(config.fit.device)
    data = load_data(config.data) if data is None else data
    split = split_rows(data, config.data)
    problem = _problem(data, split, config.data, device)
    record = _run_record(config, data)
    _prepare_out(out, record, overwrite=overwrite, resume=resume)
    if config.fit.threads:
        torch.set_num_threads(config.fit.threads)
    model, centres = _new_model(config, problem, device)
    pretrain_loss = None
    if config.fit.pretrain_epochs and not resume:  # on resume the checkpoint holds the weights
        pretrain_loss = _pretrain(model, problem, config, centres)
    phases = _run_phases(model, problem, config, out)

    single, wells, summary, cpu_problem = _evaluate(model, problem, phases, config, data, split)
    summary["pretrain_loss"] = pretrain_loss
    lse_material.save(
        single,
        out / "model.safetensors",
        input_units=list(config.data.input_units),
        output={"name": config.data.energy or "psi", "units": config.data.energy_units},
        training_box=summary["training_box"],
        metrics=summary["metrics"],
        training={
            "engine": "lse-material train data",
            **record,
            "seed": summary["best_seed"],
            "rows": summary["rows"],
        },
    )
    write_json(out / "history.json", {"fit": asdict(phases.history), "validation": phases.monitor})
    write_json(out / "summary.json", summary)
    if config.output.plots:
        _plots(out, single, cpu_problem, config.data, phases)
        plot_wells(wells, single, out / "wells.png")
    return TrainResult(summary, single, out, model.cpu(), phases.history)


# --------------------------------------------------------------------------- figures


def _plots(out: Path, model: LSEICNN, problem: _Problem, config: DataConfig, phases: _Phases):
    """parity.png (every target, train and validation) and history.png (loss, modes, ρ)."""
    from matplotlib.figure import Figure

    targets = ([config.energy] if config.energy else []) + list(config.gradients.values())
    fig = Figure(figsize=(4 * len(targets), 3.8), layout="tight")
    axes = fig.subplots(1, len(targets), squeeze=False)[0]
    for name, part, color in (
        ("train", problem.train, "tab:blue"),
        ("validation", problem.validation, "tab:orange"),
    ):
        with torch.no_grad():
            energy, gradient = problem.predict(model, part.x)
        pairs = ([(energy, part.energy)] if config.energy else []) + [
            (gradient[:, j], part.gradient[:, j]) for j in range(len(config.gradients))
        ]
        for ax, (pred, true), column in zip(axes, pairs, targets):
            ax.scatter(true, pred, s=5, alpha=0.5, color=color, label=name)
            ax.set_title(column)
            ax.set_xlabel("data")
            ax.set_ylabel("LSE-ICNN")
    for ax in axes:
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.legend(fontsize=8)
    save_figure(fig, out / "parity.png", dpi=110)

    h, v = phases.history, phases.monitor
    fig = Figure(figsize=(13, 3.8), layout="tight")
    axes = fig.subplots(1, 3)
    axes[0].semilogy(h.epoch, h.loss, color="tab:blue", lw=0.8)
    if v["epoch"]:
        axes[0].semilogy(v["epoch"], v["validation"], color="tab:orange", lw=0.8, ls="--")
    axes[0].set_title("loss per seed (train —, validation --)")
    axes[1].plot(h.epoch, h.active_modes, lw=0.8)
    axes[1].set_title("active modes per seed")
    axes[2].semilogy(h.epoch, h.rho, lw=0.8)
    axes[2].set_title("ρ per seed")
    for ax in axes:
        ax.set_xlabel("epoch (L1 phase)")
    save_figure(fig, out / "history.png", dpi=110)


# --------------------------------------------------------------------------- CLI, benchmark


def train_data(
    *,
    config: Path,
    out: Path,
    overwrite: bool = False,
    resume: bool = False,
    set: Sequence[str] = (),  # noqa: A002 (the CLI option is --set)
) -> TrainResult:
    """Train a law on your own data file (CSV/NPZ) with a TOML config.

    Writes model.safetensors, summary.json, history.json, parity.png, history.png and the
    well table (wells.png); the config schema is in the README ("Train on your own data").

    Parameters
    ----------
    config
        the TOML config; a relative data.file is relative to its folder.
    out
        output folder (refused when it holds another run, unless --overwrite).
    overwrite
        replace a run in the output folder.
    resume
        continue the run in the output folder from its checkpoint.
    set
        override a config key, KEY=VALUE with VALUE in TOML syntax, e.g. fit.epochs=2000
        (repeatable).
    """
    return train(load_config(config, set), out=out, overwrite=overwrite, resume=resume)


def bench_engine(
    *, out: Path, epochs: int = 100, samples: int = 1000, repeats: int = 2, threads: int = 0
) -> dict:
    """Time per epoch: the engine (``train data``) vs a plain loop like ``train mechanochemical``.

    Same data (the mechanochemical data model, exported to CSV), same model (5 modes, 10 × 10,
    one seed), same options and epochs, on the CPU; each side runs ``repeats`` times,
    alternating; ``ratio_engine_vs_plain`` compares the fastest runs, ``ratio_of_medians``
    the medians. Writes ``out/summary.json``.

    Parameters
    ----------
    out
        output folder.
    epochs
        epochs of each timed fit.
    samples
        data points (80 % train).
    repeats
        timed runs per side (the fastest counts).
    threads
        torch CPU threads (0: leave as is).
    """
    from lse_material.training.data import mechanochemical as mc

    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = mc.sample(samples, seed=0)
    flux = torch.cat([data.stress, data.mu[:, None]], dim=1)
    names = list(mc.INPUT_NAMES)
    gradient_names = [f"d_{n}" for n in names]
    table = torch.cat([data.x, flux], dim=1).numpy()
    header = ",".join(names + gradient_names)
    import numpy as np

    np.savetxt(out / "mechanochemical.csv", table, delimiter=",", header=header, comments="")
    config = config_from_dict(
        {
            "data": {
                "file": str(out / "mechanochemical.csv"),
                "inputs": names,
                "gradients": dict(zip(names, gradient_names)),
            },
            "model": {"max_modes": 5, "hidden": [10, 10]},
            "fit": {"epochs": epochs, "l1": 1e-4, "sparsify_after": 0.6, "elimination": False},
            "output": {"plots": False, "log_every": max(epochs // 10, 1)},
        }
    )
    config = replace(config, fit=replace(config.fit, device="cpu"))
    engine, plain = [], []
    for _ in range(repeats):
        result = train(config, out=out / "engine", overwrite=True)
        engine.append(result.summary["fit_ms_per_epoch"])
        plain.append(_plain_loop(data.x, flux, config) / epochs * 1e3)
    summary = {
        "epochs": epochs,
        "samples": samples,
        "threads": torch.get_num_threads(),
        "engine_ms_per_epoch": engine,
        "plain_ms_per_epoch": plain,
        "ratio_engine_vs_plain": min(engine) / min(plain),
        "ratio_of_medians": statistics.median(engine) / statistics.median(plain),
    }
    write_json(out / "summary.json", summary)
    return summary


def _plain_loop(x: torch.Tensor, flux: torch.Tensor, config: TrainConfig) -> float:
    """``train mechanochemical``'s loop (a single model, closed-form gradients): fit seconds."""
    n_train = int(round(0.8 * len(x)))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    xt, ft = x[order[:n_train]], flux[order[:n_train]]
    std = ft.std(0)
    model = LSEICNN(x.shape[1], 5, (10, 10), generator=torch.Generator().manual_seed(0))
    low, high = xt.min(0).values, xt.max(0).values
    scale = (high - low) / 2
    model.set_normalization(
        input_shift=(high + low) / 2, input_scale=scale, energy_scale=float((std * scale).mean())
    )
    model.spread_modes(xt)

    def data_loss():
        gradient = model.derivatives(xt, hessian=False).gradient
        return ((gradient - ft) / std).pow(2).mean()

    options = config.fit.options(log_every=config.output.log_every)
    return fit(model, data_loss, options, description="plain loop").seconds
