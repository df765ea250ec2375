"""Figures never touch pyplot or the backend: a study run from a notebook keeps the notebook's."""

import subprocess
import sys

import numpy as np

from lse_material.plotting import save_figure, subplots

SCRIPT = """
import sys
import matplotlib
matplotlib.use("svg")  # the user's choice, e.g. a notebook's backend
from lse_material.training.one_d import fit_1d
fit_1d(out=sys.argv[1], function="quartic", seeds=1, epochs=20, finetune_epochs=2,
       polish_epochs=2, threads=1)
assert "matplotlib.pyplot" not in sys.modules, "a study imported pyplot"
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
"""


def test_a_study_with_plots_leaves_pyplot_and_the_backend_alone(tmp_path):
    subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], check=True, timeout=300)
    for png in ("history_active_loss.png", "fits.png", "rho_gates.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_figure_is_atomic_and_keeps_the_size(tmp_path):
    fig, axes = subplots(2, 3, size=(6.0, 4.0), dpi=50)
    assert axes.shape == (2, 3)
    axes[0, 0].plot(np.arange(5))
    path = save_figure(fig, tmp_path / "f.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]  # no temporary left
    width, height = (int.from_bytes(path.read_bytes()[i : i + 4], "big") for i in (16, 20))
    assert (width, height) == (300, 200)  # 6 × 4 inches at 50 dpi
