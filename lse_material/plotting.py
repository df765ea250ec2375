"""Figures for the studies and cases, without pyplot.

matplotlib's object API (``matplotlib.figure.Figure``) needs no backend: a figure made here
never calls ``matplotlib.use`` or touches pyplot's global state, so calling a study from a
notebook keeps the notebook's backend and figures. ``save_figure`` (from
``lse_material.atomic``) writes the file atomically.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from lse_material.atomic import save_figure

__all__ = ["save_figure", "subplots"]


def subplots(
    rows: int = 1,
    cols: int = 1,
    *,
    size: tuple[float, float] = (6.0, 4.5),
    dpi: float = 110,
    **options,
) -> tuple[Figure, np.ndarray]:
    """A new figure with a ``(rows, cols)`` array of axes (always 2-D) and a tight layout.

    ``size``: the figure size in inches; ``dpi``: its resolution, also the saved file's;
    ``options`` go to ``Figure.subplots`` (e.g. ``sharex``, ``subplot_kw``).
    """
    fig = Figure(figsize=size, dpi=dpi, layout="tight")
    axes = fig.subplots(rows, cols, squeeze=False, **options)
    return fig, axes
