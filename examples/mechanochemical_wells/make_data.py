"""Write ``data.csv``: the mechanochemical data model (``training.data.mechanochemical``) as a
user's data file: ``sample(2000, seed=0)``, inputs E11, E22, E33, 2E23, 2E13, 2E12, c and the
gradients S11..S12 (Voigt stress) and mu (no energy column: Sobolev training).

    .venv/bin/python examples/mechanochemical_wells/make_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lse_material.training.data import mechanochemical as mc

HERE = Path(__file__).resolve().parent
GRADIENTS = ("S11", "S22", "S33", "S23", "S13", "S12", "mu")


def main(path: Path = HERE / "data.csv", samples: int = 2000, seed: int = 0) -> Path:
    data = mc.sample(samples, seed=seed)
    table = torch.cat([data.x, data.stress, data.mu[:, None]], dim=1).numpy()
    header = ",".join([*mc.INPUT_NAMES, *GRADIENTS])
    np.savetxt(path, table, delimiter=",", header=header, comments="")
    return path


if __name__ == "__main__":
    print(main())
