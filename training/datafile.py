"""Users' own training data: a CSV (header row) or NPZ file with named columns.

``DataConfig`` names the columns (the ``[data]`` table of a ``train data`` config);
``load_data`` reads and validates them (``dataset_from_columns``: the same from arrays in
memory, e.g. a data model's samples); ``split_rows`` makes the train/validation split.
Every problem raises one ``DataError`` (a ValueError) naming the file, the column and the row,
before anything is trained or written:

- a missing column (the available ones are listed) or a duplicate column name in the header;
- a non-numeric cell (file line and column);
- rows with NaN/inf (their file lines; or ``drop_nonfinite = true``: dropped and counted);
- a gradient column naming an input that is not among the inputs;
- a constant input column (the normalisation box would have zero width);
- too few rows for the split; a group column with a single group.

Layout: ``x (n, d)`` in the order of ``inputs``; ``energy (n,)``; ``gradient (n, k)``, column
``j`` the derivative of the energy with respect to input ``gradient_inputs[j]``; ``weight (n,)``.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "DataConfig",
    "DataError",
    "Dataset",
    "Split",
    "dataset_from_columns",
    "load_data",
    "split_rows",
]

MIN_TRAIN_ROWS = 4  # [ours]: fewer cannot fix a normalisation box and a fit
MAX_LISTED = 10  # rows named in one error message
ENERGY_NORMALIZATIONS = ("std", "range")


class DataError(ValueError):
    """Bad training data; the message names the file, the column and the row."""


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` table.

    file: CSV (header row) or NPZ (one 1-D array per column); relative paths are relative to
    the config file. inputs: input column names, in the model's input order. units: one per
    input (default "1"). energy: the energy column ("" for none); energy_units its units.
    gradients: input name -> column holding ∂energy/∂input (any subset of the inputs).
    energy_weight / gradient_weight: weights of the two loss terms. weight: a sample-weight
    column ("" for none). group: a column of group labels (load paths, trajectories): whole
    groups are held out ("" for a random split of rows). validation: the fraction of rows
    (or of groups) held out. split_seed: seed of the split. drop_nonfinite: drop rows with
    NaN/inf in a used column (reported) instead of refusing them. energy_normalization:
    "std" (the energy shifted by its mean and its loss term divided by its standard deviation)
    or "range" (shifted by its minimum, divided by its range max - min, so the energy loss is
    (RMSE / range)²; the 1-D study's choice [ours]), both on the training rows.
    """

    file: str
    inputs: tuple[str, ...]
    units: tuple[str, ...] = ()
    energy: str = ""
    energy_units: str = "1"
    gradients: dict[str, str] = field(default_factory=dict)
    energy_weight: float = 1.0
    gradient_weight: float = 1.0
    weight: str = ""
    group: str = ""
    validation: float = 0.2
    split_seed: int = 0
    drop_nonfinite: bool = False
    energy_normalization: str = "std"

    def __post_init__(self):
        if not self.inputs or len(set(self.inputs)) != len(self.inputs):
            raise DataError(f"data.inputs must name distinct columns; got {list(self.inputs)}.")
        if self.units and len(self.units) != len(self.inputs):
            raise DataError(
                f"data.units has {len(self.units)} entries for {len(self.inputs)} inputs "
                f"{list(self.inputs)}; give one unit per input (or none: all '1')."
            )
        unknown = [name for name in self.gradients if name not in self.inputs]
        if unknown:
            raise DataError(
                f"data.gradients names input(s) {unknown} (columns "
                f"{[self.gradients[n] for n in unknown]}), which are not among the inputs "
                f"{list(self.inputs)}; each key must be the input the column differentiates."
            )
        if not self.energy and not self.gradients:
            raise DataError("no targets: set data.energy and/or data.gradients.")
        for name in ("energy_weight", "gradient_weight"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise DataError(f"data.{name} must be finite and >= 0; got {getattr(self, name)}.")
        if self.energy and self.energy_weight == 0 and not self.gradients:
            raise DataError("data.energy_weight = 0 leaves no target; raise it or add gradients.")
        if self.gradients and self.gradient_weight == 0 and not self.energy:
            raise DataError("data.gradient_weight = 0 leaves no target; raise it or add energy.")
        if self.energy_normalization not in ENERGY_NORMALIZATIONS:
            raise DataError(
                f"data.energy_normalization must be one of {list(ENERGY_NORMALIZATIONS)}; got "
                f"{self.energy_normalization!r}."
            )
        if not 0 < self.validation < 1:
            raise DataError(f"data.validation is a fraction in (0, 1); got {self.validation}.")

    @property
    def input_units(self) -> tuple[str, ...]:
        return self.units or ("1",) * len(self.inputs)

    def numeric_columns(self) -> list[str]:
        """The columns read as numbers, in a fixed order (inputs, energy, gradients, weight)."""
        names = [*self.inputs, self.energy, *self.gradients.values(), self.weight]
        return [n for n in names if n]


class Dataset(NamedTuple):
    """The validated data (float64, CPU). rows: the file line (CSV) or array index (NPZ) of
    each row; groups: the group label of each row, or None; dropped: rows dropped as
    non-finite; sha256: of the data file."""

    x: torch.Tensor
    energy: torch.Tensor | None
    gradient: torch.Tensor | None
    gradient_inputs: tuple[int, ...]
    weight: torch.Tensor
    groups: np.ndarray | None
    rows: np.ndarray
    dropped: int
    path: Path
    sha256: str


class Split(NamedTuple):
    """Row indices into the Dataset, ``(n_train,)`` and ``(n_validation,)`` (int64)."""

    train: torch.Tensor
    validation: torch.Tensor


def _read_csv(path: Path, wanted: list[str], group: str):
    """Numeric columns ``{name: float64 (n,)}``, the group labels (str) and the file lines."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        lines, raw = [], []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}: line {reader.line_num} has {len(row)} cells, the header "
                    f"{len(header)}; every row needs one cell per column."
                )
            lines.append(reader.line_num)
            raw.append(row)
    _check_header(path, header, [*wanted, group] if group else wanted)
    columns = {}
    for name in wanted:
        j = header.index(name)
        values = np.empty(len(raw))
        for i, row in enumerate(raw):
            try:
                values[i] = float(row[j])
            except ValueError:
                raise DataError(
                    f"{path}: line {lines[i]}, column {name!r}: {row[j]!r} is not a number."
                ) from None
        columns[name] = values
    groups = np.array([row[header.index(group)].strip() for row in raw]) if group else None
    return columns, groups, np.array(lines)


def _read_npz(path: Path, wanted: list[str], group: str):
    with np.load(path, allow_pickle=False) as archive:
        _check_header(path, list(archive.files), [*wanted, group] if group else wanted)
        arrays = {name: archive[name] for name in archive.files if name in (*wanted, group)}
    lengths = {name: a.shape for name, a in arrays.items()}
    n = len(next(iter(arrays.values())))
    if any(len(s) != 1 or s[0] != n for s in lengths.values()):
        raise DataError(f"{path}: columns must be 1-D arrays of one length; got shapes {lengths}.")
    columns = {}
    for name in wanted:
        a = arrays[name]
        if a.dtype.kind not in "biuf":
            for i, value in enumerate(a):
                try:
                    float(value)
                except (TypeError, ValueError):
                    raise DataError(
                        f"{path}: row {i}, column {name!r}: {str(value)!r} is not a number."
                    ) from None
        columns[name] = a.astype(np.float64)
    groups = arrays[group].astype(str) if group else None
    return columns, groups, np.arange(n)


def _check_header(path: Path, header: list[str], wanted: list[str]) -> None:
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise DataError(f"{path}: duplicate column name(s) {duplicates} in the header.")
    missing = [name for name in dict.fromkeys(wanted) if name not in header]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; the file has {header}.")


def load_data(config: DataConfig, *, base: str | Path = ".") -> Dataset:
    """Read and validate the columns ``config`` names; ``base``: folder of a relative file."""
    path = Path(config.file)
    path = path if path.is_absolute() else Path(base) / path
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist (data.file = {config.file!r}).")
    npz = path.suffix == ".npz"
    reader = _read_npz if npz else _read_csv
    columns, groups, rows = reader(path, config.numeric_columns(), config.group)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    return _validated(
        config, columns, groups, rows, path, sha256, row_word="row" if npz else "line"
    )


def dataset_from_columns(
    config: DataConfig,
    columns: dict[str, np.ndarray],
    *,
    source: str,
    groups: np.ndarray | None = None,
) -> Dataset:
    """The same validated ``Dataset`` from arrays in memory (a data model, another program).

    ``columns``: ``{name: (n,)}`` holding every column ``config`` names (``config.file`` is
    not read); ``source``: what the data are, reported as the dataset's path; ``groups``:
    ``(n,)`` labels for a group split (``config.group`` names them). The SHA-256 is that of
    the float64 columns, in ``config.numeric_columns()`` order.
    """
    wanted = config.numeric_columns()
    _check_header(Path(source), list(columns), wanted)
    table = {name: np.ascontiguousarray(columns[name], dtype=np.float64) for name in wanted}
    if len({a.shape for a in table.values()}) != 1 or table[wanted[0]].ndim != 1:
        shapes = {name: a.shape for name, a in table.items()}
        raise DataError(f"{source}: columns must be 1-D arrays of one length; got {shapes}.")
    digest = hashlib.sha256()
    for name in wanted:
        digest.update(table[name].tobytes())
    n = len(table[wanted[0]])
    return _validated(
        config, table, groups, np.arange(n), Path(source), digest.hexdigest(), row_word="row"
    )


def _validated(config, columns, groups, rows, path: Path, sha256: str, *, row_word: str):
    """The checks common to every source (NaN/inf rows, weights, constant inputs)."""
    wanted = config.numeric_columns()
    table = np.stack([columns[name] for name in wanted], axis=1)
    bad = ~np.isfinite(table).all(axis=1)
    dropped = int(bad.sum())
    if dropped and not config.drop_nonfinite:
        named = [
            f"{row_word} {rows[i]} ({', '.join(n for n, v in zip(wanted, table[i]) if not np.isfinite(v))})"
            for i in np.nonzero(bad)[0][:MAX_LISTED]
        ]
        more = f" and {dropped - MAX_LISTED} more" if dropped > MAX_LISTED else ""
        raise DataError(
            f"{path}: {dropped} row(s) with NaN/inf: {'; '.join(named)}{more}. Fix them, or set "
            "data.drop_nonfinite = true to drop them."
        )
    keep = ~bad
    if config.weight and (columns[config.weight][keep] < 0).any():
        i = int(np.nonzero(keep & (columns[config.weight] < 0))[0][0])
        raise DataError(
            f"{path}: negative sample weight in column {config.weight!r}, {row_word} {rows[i]}."
        )

    def column(name):
        return torch.from_numpy(columns[name][keep].copy())

    x = torch.stack([column(n) for n in config.inputs], dim=1)
    for j, name in enumerate(config.inputs):
        if float(x[:, j].max() - x[:, j].min()) == 0:
            raise DataError(
                f"{path}: input column {name!r} is constant ({float(x[0, j])}): its normalisation "
                "box has zero width. Drop it from data.inputs."
            )
    gradient = (
        torch.stack([column(c) for c in config.gradients.values()], dim=1)
        if config.gradients
        else None
    )
    weight = column(config.weight) if config.weight else torch.ones(len(x), dtype=torch.float64)
    if not float(weight.sum()) > 0:
        raise DataError(f"{path}: the sample weights in column {config.weight!r} are all zero.")
    return Dataset(
        x=x,
        energy=column(config.energy) if config.energy else None,
        gradient=gradient,
        gradient_inputs=tuple(config.inputs.index(n) for n in config.gradients),
        weight=weight,
        groups=None if groups is None else groups[keep],
        rows=rows[keep],
        dropped=dropped,
        path=path,
        sha256=sha256,
    )


def split_rows(data: Dataset, config: DataConfig) -> Split:
    """Hold out ``config.validation`` of the rows at random, or of the groups (whole groups)."""
    generator = torch.Generator().manual_seed(config.split_seed)
    n = len(data.x)
    if data.groups is None:
        n_val = int(round(config.validation * n))
        if n_val < 1 or n - n_val < MIN_TRAIN_ROWS:
            raise DataError(
                f"{data.path}: {n} rows are too few for validation = {config.validation} "
                f"({n - n_val} training, {n_val} validation rows; need >= {MIN_TRAIN_ROWS} and "
                ">= 1). Add rows or change data.validation."
            )
        order = torch.randperm(n, generator=generator)
        return Split(order[n_val:].sort().values, order[:n_val].sort().values)
    labels, inverse = np.unique(data.groups, return_inverse=True)
    if len(labels) < 2:
        raise DataError(
            f"{data.path}: the group column {config.group!r} has a single group "
            f"({str(labels[0])!r} in every row); a group split needs >= 2 groups (or set data.group = '')."
        )
    n_val = min(max(int(round(config.validation * len(labels))), 1), len(labels) - 1)
    held = torch.randperm(len(labels), generator=generator)[:n_val].numpy()
    is_val = torch.from_numpy(np.isin(inverse, held))
    train, validation = torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()
    if len(train) < MIN_TRAIN_ROWS:
        raise DataError(
            f"{data.path}: holding out {n_val} of {len(labels)} groups leaves {len(train)} "
            f"training rows (need >= {MIN_TRAIN_ROWS}). Add groups or lower data.validation."
        )
    return Split(train, validation)
