"""Write ``data.csv``: the mechanochemical data model (``training.data.mechanochemical``) as a
user's data file: ``sample(2000, seed=0)``, inputs E11, E22, E33, 2E23, 2E13, 2E12, c, the
gradients S11..S12 (Voigt stress) and mu (no energy column: Sobolev training), and the sample
weight of ``train mechanochemical`` (``mechanochemical_columns``).

    .venv/bin/python examples/mechanochemical_wells/make_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lse_material.training.data import mechanochemical as mc
from lse_material.training.mechanochemical import mechanochemical_columns

HERE = Path(__file__).resolve().parent


def main(path: Path = HERE / "data.csv", samples: int = 2000, seed: int = 0) -> Path:
    columns = mechanochemical_columns(mc.sample(samples, seed=seed))
    table = np.stack(list(columns.values()), axis=1)
    np.savetxt(path, table, delimiter=",", header=",".join(columns), comments="")
    return path


if __name__ == "__main__":
    print(main())
