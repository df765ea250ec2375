"""Make ``data.csv``: ψ = (x² − 1)² + 0.5 y² + 0.1 x and its gradient at 400 random points.

Run from anywhere: ``python examples/double_well_2d/make_data.py``. Points are uniform in
[-1.6, 1.6] × [-1, 1] (seed 0); the two true minima are at y = 0 and the real roots of
4x(x² − 1) + 0.1 = 0 near x = ±1 (``true_minima()``). The file is committed; the script says
how it was made. ``group`` labels 8 horizontal bands (for trying the group split).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROWS = 400


def psi(x, y):
    return (x**2 - 1) ** 2 + 0.5 * y**2 + 0.1 * x


def gradient(x, y):
    return 4 * x * (x**2 - 1) + 0.1, y


def true_minima() -> np.ndarray:
    """The two minima ``(2, 2)``, sorted by x."""
    roots = np.roots([4.0, 0.0, -4.0, 0.1]).real
    xs = sorted(r for r in roots if 12 * r**2 - 4 > 0)  # ψ'' > 0
    return np.array([[x, 0.0] for x in xs])


def main(path: Path = HERE / "data.csv") -> Path:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.6, 1.6, ROWS)
    y = rng.uniform(-1.0, 1.0, ROWS)
    gx, gy = gradient(x, y)
    band = np.minimum(((y + 1) / 0.25).astype(int), 7)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y", "psi", "dpsi_dx", "dpsi_dy", "group"])
        for row in zip(x, y, psi(x, y), gx, gy, band):
            writer.writerow([f"{v:.12g}" for v in row[:5]] + [f"band{row[5]}"])
    return path


if __name__ == "__main__":
    print(main())
