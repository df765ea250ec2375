"""Start the modes of an LSE-ICNN on the wells of derivative data [ours].

A multi-well fit from derivative data (fluxes ``f = ∇ψ``, never ψ) fails when its modes start
anywhere: one convex mode, or an average of modes at a small ρ, fits most of the data, and the
modes that should hold the shallow wells get no gradient. Three steps before the mixture is
trained put every mode on a well first:

1. ``well_candidates``: data points where the flux is small (a well has ∇ψ = 0) and the flux
   field grows outwards along the data's neighbours (``(f_j - f_0)·(x_j - x_0) > 0``: locally
   convex, which rules out maxima and most saddles), spread by farthest-point sampling.
2. ``pretrain_modes_locally``: mode ``i`` alone is fitted to the fluxes of the data points
   nearest its candidate (a Voronoi region in normalised inputs), so each convex mode takes
   the shape of its well before the mixture decides who wins where.
3. ``match_mode_levels``: derivative data fix each mode only up to a constant; the constants
   are chosen by least squares so that neighbouring modes are equal on the boundary between
   their regions (where the mixture switches from one to the other).
"""

from __future__ import annotations

import torch
from lse_material.training.fit import FitOptions, fit

from lse_material.lse import LSEICNN

__all__ = [
    "well_candidates",
    "regions",
    "pretrain_modes_locally",
    "match_mode_levels",
    "pretrain_on_wells",
]


def well_candidates(
    x: torch.Tensor,
    flux: torch.Tensor,
    n_modes: int,
    *,
    scale: torch.Tensor,
    shift: torch.Tensor,
    pool: float = 0.1,
    neighbours: int = 12,
    convex_fraction: float = 0.9,
    first: torch.Tensor | None = None,
) -> torch.Tensor:
    """``n_modes`` well candidates ``(n_modes, d)`` among the data points ``x (P, d)``.

    flux ``(P, d)``: the measured gradient at each point; shift, scale ``(d,)``: the input
    normalisation (distances are measured in ``(x - shift)/scale``). The ``pool`` fraction of
    points with the smallest normalised flux are candidates; a candidate is kept when at least
    ``convex_fraction`` of its ``neighbours`` nearest points satisfy
    ``(f_j - f_0)·(x_j - x_0) > 0``. ``first`` ``(d,)``: a score per input whose smallest value
    picks the first centre (default: the candidate nearest the data's centre); the others
    follow by farthest-point sampling.
    """
    if n_modes < 1 or x.shape[0] < n_modes:
        raise ValueError(f"need at least n_modes={n_modes} data points, got {x.shape[0]}.")
    xn = (x - shift) / scale
    size = flux / flux.std(0).clamp_min(torch.finfo(flux.dtype).tiny)
    pool_rows = size.norm(dim=1).argsort()[: max(4 * n_modes, int(pool * x.shape[0]))]
    near = torch.cdist(xn[pool_rows], xn).argsort(dim=1)[:, 1 : neighbours + 1]
    growth = ((flux[near] - flux[pool_rows, None]) * (x[near] - x[pool_rows, None])).sum(-1)
    convex = (growth > 0).to(x.dtype).mean(1) >= convex_fraction
    rows = pool_rows[convex] if int(convex.sum()) >= n_modes else pool_rows
    points = xn[rows]
    start = int(points.norm(dim=1).argmin()) if first is None else int((x[rows] @ first).argmin())
    chosen = [start]
    distance = (points - points[start]).norm(dim=1)
    for _ in range(n_modes - 1):
        chosen.append(int(distance.argmax()))
        distance = torch.minimum(distance, (points - points[chosen[-1]]).norm(dim=1))
    return x[rows[chosen]]


def regions(model: LSEICNN, x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre of each point (normalised inputs), ``(P,)``."""
    return torch.cdist(model._normalize(x), model._normalize(centers)).argmin(dim=1)


def _mode_fluxes(model: LSEICNN, x_n: torch.Tensor):
    """Every mode's energy ``(N, P)`` (network units) and gradient ``(N, P, d)`` (physical)."""
    parts = model.modes.hessian_parts(x_n, model._derivative_weights(None, None), hessian=False)
    return parts.energy, parts.gradient * model.energy_scale


def pretrain_modes_locally(
    model: LSEICNN,
    x: torch.Tensor,
    flux: torch.Tensor,
    flux_scale: torch.Tensor,
    region: torch.Tensor,
    options: FitOptions,
) -> float:
    """Fit mode ``region[p]`` alone to ``flux[p]`` (normalised by ``flux_scale (d,)``) for every
    training point ``p``; returns the final loss (mean squared normalised flux error)."""
    x_n = model._normalize(x)
    points = torch.arange(x.shape[0], device=x.device)

    def local_loss():
        _, gradient = _mode_fluxes(model, x_n)
        return ((gradient[region, points] - flux) / flux_scale).pow(2).mean()

    fit(model, local_loss, options, description="modes on their wells")
    with torch.no_grad():
        return float(local_loss())


@torch.no_grad()
def match_mode_levels(
    model: LSEICNN, x: torch.Tensor, centers: torch.Tensor, *, band: float = 0.15
) -> torch.Tensor:
    """Shift the modes' constants so that neighbouring modes agree on their regions' boundary.

    Points whose two nearest centres are about equally near (distances within ``band``
    relative) lie on a boundary; least squares over them of ``W_a + b_a = W_b + b_b``, with
    ``b_0 = 0``. Returns the shifts ``(N,)`` (network units, added to the output biases).
    """
    x_n = model._normalize(x)
    distance = torch.cdist(x_n, model._normalize(centers))
    two = distance.topk(2, dim=1, largest=False)
    on_boundary = (two.values[:, 1] - two.values[:, 0]) < band * two.values[:, 1]
    energy, _ = _mode_fluxes(model, x_n)
    a, b = two.indices[on_boundary, 0], two.indices[on_boundary, 1]
    n, rows = model.n_modes, torch.arange(int(on_boundary.sum()), device=x.device)
    system = torch.zeros(rows.numel() + 1, n, dtype=x.dtype, device=x.device)
    system[rows, a] += 1.0
    system[rows, b] -= 1.0
    system[-1, 0] = 1.0  # the first mode keeps its level
    columns = torch.nonzero(on_boundary).flatten()
    target = torch.cat([energy[b, columns] - energy[a, columns], x.new_zeros(1)])
    # gelsd (SVD, minimum norm where regions do not touch) on the CPU: the default gelsy
    # rounds differently with the arrays' memory alignment, and a fit amplifies that.
    solution = torch.linalg.lstsq(system.cpu(), target[:, None].cpu(), driver="gelsd").solution
    shifts = solution[:, 0].to(x.device)
    model.modes.out_bias.add_(shifts)
    return shifts


def pretrain_on_wells(
    model: LSEICNN,
    x: torch.Tensor,
    flux: torch.Tensor,
    flux_scale: torch.Tensor,
    centers: torch.Tensor,
    options: FitOptions,
) -> float:
    """Steps 2 and 3 of the module docstring for modes placed on ``centers (N, d)``: each mode
    fitted alone on its region, then the levels matched. Returns the final local loss."""
    loss = pretrain_modes_locally(model, x, flux, flux_scale, regions(model, x, centers), options)
    match_mode_levels(model, x, centers)
    return loss
