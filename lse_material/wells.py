"""Wells of any potential: minima, minimum-energy paths, saddles and barriers.

``find_wells(potential, fix=..., box=...)`` works on anything that satisfies the potential
contract (``lse_material.potential``): a trained LSE-ICNN (closed-form derivatives) and an
``AnalyticPotential`` (autograd) alike, so a model and the data model it learned are measured
by the same code. ``fix`` holds some inputs at given values (a slice); the others are free.

The algorithm [ours]:

1. **Starts**: quasi-random (scrambled Sobol) points in the box, its centre, the caller's
   points (e.g. data), and for an LSE-ICNN the minimiser of each open mode's own energy
   (each mode is convex, so its minimum is found from anywhere).
2. **Minima**: trust-region saddle-free Newton on the closed-form gradient and Hessian (the
   step ``-V |Λ|⁻¹ Vᵀ ∇ψ`` is a descent direction everywhere), batched over all starts: one
   ``derivatives`` call per iteration at the trial points, accepted when ψ falls by at least
   a tenth of the predicted amount. Work happens in normalised units
   ``z = (x - centre) / half-width`` of the box. A point is a minimum when its gradient is
   small and every Hessian eigenvalue is positive; minima closer than ``merge`` (normalised
   units) are one. Points that leave the box by more than ``margin`` half-widths are dropped.
3. **Barriers**: for every pair of minima, a string (straight line between them, ``images``
   images) relaxed by the simplified string method (steepest-descent steps, each image with
   its own step 1/λ_max, re-spaced to equal arc length after every step); all images of all
   pairs in one ``derivatives`` call. A pair is kept as *neighbours* when its relaxed path has
   no interior local minimum of ψ (it does not pass through a third basin) and no image comes
   within half an image spacing of a third minimum; where a dropped path dips, Newton starts
   there, and a new minimum found so re-runs the paths (at most three rounds). The highest
   point of the path (a ternary search next to its highest image) climbs to the saddle by
   eigenvector following (ascent along the Hessian eigenvector closest to the path tangent,
   Newton descent along the others: the Newton step on ∇ψ = 0 next to the saddle; a trust
   region on |∇ψ|). The saddle is *verified* when its gradient is small, its Hessian has
   exactly one negative eigenvalue and it lies within two image spacings of the path; an
   unverified barrier keeps the path's highest point as its estimate.

Results are in physical units, locations by input name. ``WellAnalysis.to_json`` is the table
that JSON files and model cards store; ``compare_wells`` matches a found table to the truth.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch

from lse_material.atomic import save_figure, write_json
from lse_material.potential import Potential, as_float64_tensor

__all__ = [
    "Minimum",
    "Barrier",
    "WellAnalysis",
    "find_wells",
    "MinimumMatch",
    "BarrierMatch",
    "WellComparison",
    "compare_wells",
    "Plane",
    "plot_wells",
    "wells_table",
    "axis_planes",
    "order_parameter_scale",
    "analyse_wells",
]


class Minimum(NamedTuple):
    """A local minimum: ``location`` (every input by name, physical units, fixed ones included),
    ``energy``, the ``eigenvalues`` of the Hessian over the free inputs (ascending, physical
    units, all > 0), the dominant ``mode`` (argmax phase weight; None without modes) and
    whether it lies inside the box (``in_box``)."""

    location: dict[str, float]
    energy: float
    eigenvalues: tuple[float, ...]
    mode: int | None
    in_box: bool


class Barrier(NamedTuple):
    """The saddle between two neighbouring minima ``pair = (i, j)`` (indices into the minima).

    ``location``, ``energy``, ``eigenvalues`` (ascending; exactly one negative when
    ``verified``) of the saddle; ``heights = (ψ_s - ψ_i, ψ_s - ψ_j)``, the barrier seen from
    each side; ``path``: the relaxed string from minimum i to minimum j, one full input vector
    (input order) per image, for plotting.
    """

    pair: tuple[int, int]
    location: dict[str, float]
    energy: float
    eigenvalues: tuple[float, ...]
    heights: tuple[float, float]
    verified: bool
    path: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class WellAnalysis:
    """The wells of a potential on a slice: minima sorted by energy, barriers between
    neighbours. ``free``: the inputs searched over; ``fixed``: name -> value of the others;
    ``box``: name -> (low, high) of the free inputs; ``seconds``: wall time of the analysis."""

    input_names: tuple[str, ...]
    free: tuple[str, ...]
    fixed: dict[str, float]
    box: dict[str, tuple[float, float]]
    minima: tuple[Minimum, ...]
    barriers: tuple[Barrier, ...]
    seconds: float = 0.0

    def to_json(self, *, paths: bool = True) -> dict[str, Any]:
        """A JSON-able dict (``paths=False`` leaves the strings out, e.g. for a model card)."""
        barriers = [b._asdict() for b in self.barriers]
        for b in barriers:
            b["pair"], b["heights"] = list(b["pair"]), list(b["heights"])
            b["eigenvalues"] = list(b["eigenvalues"])
            b["path"] = [list(p) for p in b["path"]] if paths else []
        minima = [m._asdict() | {"eigenvalues": list(m.eigenvalues)} for m in self.minima]
        return {
            "input_names": list(self.input_names),
            "free": list(self.free),
            "fixed": dict(self.fixed),
            "box": {k: list(v) for k, v in self.box.items()},
            "minima": minima,
            "barriers": barriers,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WellAnalysis:
        """The inverse of ``to_json``."""
        minima = tuple(
            Minimum(**{**m, "eigenvalues": tuple(m["eigenvalues"])}) for m in data["minima"]
        )
        barriers = tuple(
            Barrier(
                **{
                    **b,
                    "pair": tuple(b["pair"]),
                    "heights": tuple(b["heights"]),
                    "eigenvalues": tuple(b["eigenvalues"]),
                    "path": tuple(tuple(p) for p in b["path"]),
                }
            )
            for b in data["barriers"]
        )
        return cls(
            tuple(data["input_names"]),
            tuple(data["free"]),
            dict(data["fixed"]),
            {k: tuple(v) for k, v in data["box"].items()},
            minima,
            barriers,
            float(data.get("seconds", 0.0)),
        )

    def table(self) -> str:
        """The human-readable table (``wells_table`` of ``to_json``)."""
        return wells_table(self.to_json(paths=False))


# ----------------------------------------------------------------------------- the slice
class _Derivs(NamedTuple):
    energy: torch.Tensor  # (n,)
    gradient: torch.Tensor  # (n, k) in normalised units
    hessian: torch.Tensor | None  # (n, k, k) in normalised units
    phase: torch.Tensor | None  # (n, N)


class _Slice:
    """The free inputs of a potential in normalised units ``z = (x_free - centre) / half``."""

    def __init__(self, potential: Potential, fixed: dict[str, float], box: dict):
        names = tuple(potential.input_names)
        self.potential, self.names = potential, names
        self.free = [i for i, n in enumerate(names) if n not in fixed]
        self.base = torch.tensor([fixed.get(n, 0.0) for n in names], dtype=torch.float64)
        lo = torch.tensor([box[names[i]][0] for i in self.free], dtype=torch.float64)
        hi = torch.tensor([box[names[i]][1] for i in self.free], dtype=torch.float64)
        self.centre, self.half = (lo + hi) / 2, (hi - lo) / 2

    @property
    def k(self) -> int:
        return len(self.free)

    def to_x(self, z: torch.Tensor) -> torch.Tensor:
        """Full input vectors ``(n, d)`` of normalised free coordinates ``z (n, k)``."""
        x = self.base.expand(z.shape[0], -1).clone()
        x[:, self.free] = self.centre + self.half * z
        return x

    def to_z(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, self.free] - self.centre) / self.half

    def evaluate(self, z: torch.Tensor, *, hessian: bool = True) -> _Derivs:
        wrt = None if self.k == len(self.names) else self.free
        options = {"hessian": hessian} if wrt is None else {"hessian": hessian, "wrt": wrt}
        with torch.no_grad():
            d = self.potential.derivatives(self.to_x(z), **options)
        # The analysis runs in float64 on the CPU, whatever the model's device and dtype.
        d = [None if t is None else t.to("cpu", torch.float64) for t in d]
        h = self.half
        hess = None if d[2] is None else d[2] * h[:, None] * h[None, :]
        return _Derivs(d[0], d[1] * h, hess, d[3])

    def location(self, z: torch.Tensor) -> dict[str, float]:
        return dict(zip(self.names, self.to_x(z[None])[0].tolist()))

    def physical_eigenvalues(self, hess_z: torch.Tensor) -> torch.Tensor:
        """Eigenvalues of the physical Hessian over the free inputs, from the normalised one."""
        return torch.linalg.eigvalsh(hess_z / self.half[:, None] / self.half[None, :])


# ----------------------------------------------------------------------------- Newton
def _abs_floor(lam: torch.Tensor) -> torch.Tensor:
    """|λ| floored at 1e-8 of each point's largest |λ| (so a flat direction gets a long but
    finite step, cut by the trust radius)."""
    top = lam.abs().amax(-1, keepdim=True)
    return lam.abs().clamp_min(1e-8 * top + 1e-300)


def _cap(step: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    norm = step.norm(dim=-1, keepdim=True)
    return step * torch.clamp(radius[:, None] / norm.clamp_min(1e-300), max=1.0)


def _minimise(
    evaluate: Callable[[torch.Tensor, torch.Tensor], _Derivs],
    z: torch.Tensor,
    *,
    gtol: float,
    bound: float,
    iterations: int = 200,
) -> tuple[torch.Tensor, _Derivs]:
    """Trust-region saddle-free Newton from every row of ``z (n, k)``, batched.

    ``evaluate(z_rows, rows)`` gives the derivatives at ``z_rows`` for the rows ``rows`` of the
    batch (one call per iteration, on the unfinished rows only). A row is finished when
    ``max |∇ψ| < gtol`` (normalised units), its trust radius collapses, or it leaves
    ``|z| <= bound``. Returns the final points and their derivatives.
    """
    z = z.clone()
    d = evaluate(z, torch.arange(z.shape[0]))
    energy, grad, hess = d.energy.clone(), d.gradient.clone(), d.hessian.clone()
    phase = None if d.phase is None else d.phase.clone()
    radius = torch.full((z.shape[0],), 0.25, dtype=z.dtype)
    done = grad.abs().amax(-1) < gtol
    for _ in range(iterations):
        rows = torch.nonzero(~done).flatten()
        if rows.numel() == 0:
            break
        g, lam_v = grad[rows], torch.linalg.eigh(hess[rows])
        lam, V = lam_v
        gl = (V.mT @ g[..., None])[..., 0]
        sl = -gl / _abs_floor(lam)
        scale = torch.clamp(radius[rows] / sl.norm(dim=-1).clamp_min(1e-300), max=1.0)
        sl = sl * scale[:, None]
        predicted = -(gl * sl).sum(-1) - 0.5 * (_abs_floor(lam) * sl * sl).sum(-1)
        trial = z[rows] + (V @ sl[..., None])[..., 0]
        t = evaluate(trial, rows)
        actual = energy[rows] - t.energy
        noise = 1e-13 * (1 + energy[rows].abs())
        improves = t.gradient.abs().amax(-1) < g.abs().amax(-1)
        ok = (actual >= 0.1 * predicted) | ((actual.abs() <= noise) & improves)
        ok &= torch.isfinite(t.energy)
        acc = rows[ok]
        z[acc], energy[acc], grad[acc], hess[acc] = (
            trial[ok],
            t.energy[ok],
            t.gradient[ok],
            t.hessian[ok],
        )
        if phase is not None:
            phase[acc] = t.phase[ok]
        grow = ok & (actual >= 0.75 * predicted) & (scale < 1)
        radius[rows] = torch.where(
            ok, torch.where(grow, 2 * radius[rows], radius[rows]), 0.25 * radius[rows]
        ).clamp(max=1.0)
        done |= grad.abs().amax(-1) < gtol
        done |= (radius < 1e-12) | (z.abs().amax(-1) > bound)
    return z, _Derivs(energy, grad, hess, phase)


def _follow_saddle(
    sl: _Slice, z: torch.Tensor, tangent: torch.Tensor, *, gtol: float, iterations: int = 100
) -> tuple[torch.Tensor, _Derivs]:
    """Eigenvector following from ``z (n, k)`` to a first-order saddle, batched.

    Ascent along the Hessian eigenvector that overlaps most with ``tangent (n, k)`` (updated
    to that eigenvector at every accepted step, so the followed mode is continuous), Newton
    descent along the others: next to a saddle, the Newton step on ∇ψ = 0. A trust region on
    |∇ψ| (a step is accepted when |∇ψ| falls; the radius doubles or quarters) keeps it stable
    across the sharp ridges of a large ρ.
    """
    z, tangent = z.clone(), tangent.clone()
    d = sl.evaluate(z)
    radius = torch.full((z.shape[0],), 0.05, dtype=z.dtype)
    for _ in range(iterations):
        rows = torch.nonzero((d.gradient.abs().amax(-1) >= gtol) & (radius > 1e-14)).flatten()
        if rows.numel() == 0:
            break
        lam, V = torch.linalg.eigh(d.hessian[rows])
        j = (V.mT @ tangent[rows][..., None])[..., 0].abs().argmax(-1)
        sign = torch.ones_like(lam).scatter_(-1, j[:, None], -1.0)
        gl = (V.mT @ d.gradient[rows][..., None])[..., 0]
        step = (V @ (-sign * gl / _abs_floor(lam))[..., None])[..., 0]
        trial = z[rows] + _cap(step, radius[rows])
        t = sl.evaluate(trial)
        ok = t.gradient.norm(dim=-1) < d.gradient[rows].norm(dim=-1)
        acc = rows[ok]
        z[acc] = trial[ok]
        tangent[acc] = V[ok, :, j[ok]] if ok.any() else tangent[acc]
        d = _Derivs(*(_assign(u, acc, v[ok]) for u, v in zip(d[:3], t[:3])), None)
        radius[rows] = torch.where(ok, 2 * radius[rows], radius[rows] / 4).clamp(max=0.1)
    return z, d


def _assign(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    target = target.clone()
    target[rows] = values
    return target


def _path_maximum(sl: _Slice, path: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """The highest point of each polyline ``path (P, M, k)`` near its highest image ``top (P,)``:
    a ternary search over the two segments next to it (40 rounds, all paths batched)."""
    rows = torch.arange(path.shape[0])
    before, at, after = path[rows, top - 1], path[rows, top], path[rows, top + 1]

    def point(s: torch.Tensor) -> torch.Tensor:  # s in [-1, 1] along before -> at -> after
        w = s.abs()[:, None]
        return torch.where((s < 0)[:, None], at + w * (before - at), at + w * (after - at))

    lo = torch.full((path.shape[0],), -1.0, dtype=path.dtype)
    hi = -lo
    for _ in range(40):
        s1, s2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        e = sl.evaluate(torch.cat([point(s1), point(s2)]), hessian=False).energy
        left = e[: len(lo)] < e[len(lo) :]
        lo, hi = torch.where(left, s1, lo), torch.where(left, hi, s2)
    return point((lo + hi) / 2)


# ----------------------------------------------------------------------------- strings
def _respace(path: torch.Tensor) -> torch.Tensor:
    """Images of ``path (P, M, k)`` moved to equal arc length along its polyline."""
    seg = (path[:, 1:] - path[:, :-1]).norm(dim=-1)
    s = torch.cat([torch.zeros_like(seg[:, :1]), seg.cumsum(-1)], dim=-1)
    s = s / s[:, -1:].clamp_min(1e-300)
    target = torch.linspace(0, 1, path.shape[1], dtype=path.dtype).expand_as(s).contiguous()
    i = torch.searchsorted(s.contiguous(), target).clamp(1, path.shape[1] - 1)
    s0, s1 = s.gather(1, i - 1), s.gather(1, i)
    w = ((target - s0) / (s1 - s0).clamp_min(1e-300)).unsqueeze(-1)
    p0 = path.gather(1, (i - 1)[..., None].expand(-1, -1, path.shape[2]))
    p1 = path.gather(1, i[..., None].expand(-1, -1, path.shape[2]))
    return p0 + w * (p1 - p0)


def _relax_string(
    sl: _Slice, a: torch.Tensor, b: torch.Tensor, *, images: int, iterations: int = 1000
) -> torch.Tensor:
    """Minimum-energy paths between ``a (P, k)`` and ``b (P, k)``: ``(P, images, k)``.

    The simplified string method (E, Ren & Vanden-Eijnden 2007): every interior image takes a
    steepest-descent step ``-Δt_i ∇ψ``, then all images are re-spaced to equal arc length, so
    only the part of ∇ψ normal to the path acts. ``Δt_i = 1/λ_max`` of the image's own Hessian
    (refreshed every 25 steps; a scalar per image keeps the fixed point a minimum-energy path),
    each step capped at half the image spacing. Stops when no image moves by more than 1e-5
    (normalised units): the path is for the neighbour test and the figure; the saddle is
    refined on its own. All images of all strings are evaluated in one call per step.
    """
    t = torch.linspace(0, 1, images, dtype=a.dtype)[None, :, None]
    path = a[:, None] + t * (b - a)[:, None]
    P, k = a.shape
    dt = None
    for step in range(iterations):
        inner = path[:, 1:-1].reshape(-1, k)
        d = sl.evaluate(inner, hessian=step % 25 == 0)
        if d.hessian is not None:
            dt = 1.0 / torch.linalg.eigvalsh(d.hessian).abs().amax(-1).clamp_min(1e-300)
        spacing = (path[:, 1:] - path[:, :-1]).norm(dim=-1).mean(-1)
        limit = (0.5 * spacing).repeat_interleave(images - 2)
        new = path.clone()
        new[:, 1:-1] -= _cap(dt[:, None] * d.gradient, limit).reshape(P, images - 2, k)
        new = _respace(new)
        moved = float((new - path).abs().amax())
        path = new
        if moved < 1e-5:
            break
    return path


# ----------------------------------------------------------------------------- analysis
def _check_slice(potential: Potential, fix, box) -> tuple[dict[str, float], dict]:
    """Validated ``fix`` (name -> value) and the box of the free inputs."""
    names = tuple(potential.input_names)
    if getattr(potential, "ensemble_shape", ()):
        raise ValueError(
            f"find_wells takes a single model; this one is an ensemble of shape "
            f"{tuple(potential.ensemble_shape)}: pass model.member(i)."
        )
    fix = {} if fix is None else dict(fix)
    for name, value in fix.items():
        if name not in names:
            raise ValueError(
                f"fix names the input {name!r}, which the potential does not have; its inputs "
                f"are {list(names)}."
            )
        if not math.isfinite(float(value)):
            raise ValueError(f"fix value of input {name!r} must be finite, got {value}.")
    if len(fix) == len(names):
        raise ValueError(f"fix holds every input {list(names)}; leave at least one free.")
    if box is None:
        box = getattr(potential, "training_box", None)
    if box is None:
        raise ValueError(
            "the potential has no training box; give box={name: (low, high)} for the free "
            f"inputs {[n for n in names if n not in fix]}."
        )
    box = {k: (float(v[0]), float(v[1])) for k, v in box.items()}
    for name in names:
        lo_hi = box.get(name)
        if lo_hi is None and name not in fix:
            raise ValueError(f"box has no range for the free input {name!r}; add it.")
        if lo_hi is not None and not (math.isfinite(lo_hi[0]) and lo_hi[0] < lo_hi[1] < math.inf):
            raise ValueError(
                f"box range of input {name!r} must be finite, low < high; got {lo_hi}."
            )
        if name in fix and lo_hi is not None and not lo_hi[0] <= float(fix[name]) <= lo_hi[1]:
            raise ValueError(
                f"fix {name}={fix[name]:g} lies outside the box [{lo_hi[0]:g}, {lo_hi[1]:g}] of "
                f"input {name!r} (extrapolation); widen the box (box= / --box {name}=LO:HI)."
            )
    unknown = sorted(set(box) - set(names))
    if unknown:
        raise ValueError(f"box names unknown inputs {unknown}; the inputs are {list(names)}.")
    free_box = {n: box[n] for n in names if n not in fix}
    return {k: float(v) for k, v in fix.items()}, free_box


def _mode_minima(potential: Potential, sl: _Slice, *, gtol: float, bound: float) -> torch.Tensor:
    """The minimiser of each open mode's own energy over the slice (LSE-ICNN only), ``(N', k)``."""
    from lse_material.lse import LSEICNN

    if not isinstance(potential, LSEICNN) or potential.ensemble_shape:
        return torch.empty(0, sl.k, dtype=torch.float64)
    modes = torch.nonzero(potential.gates() > 0).flatten().cpu()
    scale = potential.input_scale.to("cpu", torch.float64)[sl.free] / sl.half  # dz/dx_n

    def evaluate(z: torch.Tensor, rows: torch.Tensor) -> _Derivs:
        shift, scale_n = potential.input_shift, potential.input_scale
        x_n = (sl.to_x(z).to(shift) - shift) / scale_n
        with torch.no_grad():
            m = potential.modes.derivatives(x_n, modes=modes[rows].to(shift.device))
            m = type(m)(*(t.to("cpu", torch.float64) for t in m))
        n = torch.arange(rows.numel())
        g = m.gradient[n, n][:, sl.free] / scale
        h = m.hessian[n, n][:, sl.free][:, :, sl.free] / scale[:, None] / scale[None, :]
        return _Derivs(m.energy[n, n], g, h, None)

    z, d = _minimise(
        evaluate, torch.zeros(modes.numel(), sl.k, dtype=torch.float64), gtol=gtol, bound=bound
    )
    return z[z.abs().amax(-1) <= bound]


def find_wells(
    potential: Potential,
    *,
    fix: Mapping[str, float] | None = None,
    box: Mapping[str, Sequence[float]] | None = None,
    starts: torch.Tensor | None = None,
    samples: int = 256,
    merge: float = 1e-3,
    margin: float = 0.5,
    images: int = 25,
    barriers: bool = True,
    seed: int = 0,
) -> WellAnalysis:
    """Local minima of ψ over the free inputs, and the barriers between neighbouring minima.

    potential: anything with ``input_names`` and ``derivatives(x, hessian=, wrt=)``.
    fix: input name -> value, held fixed (a slice); the others are free.
    box: input name -> (low, high) of the free inputs (default: the potential's
        ``training_box``); it sets the start region and the normalised units.
    starts: extra start points ``(n, d)`` in physical units, input order (e.g. data points;
        their fixed columns are replaced by the ``fix`` values).
    samples: number of quasi-random starts in the box.
    merge: minima closer than this (normalised units, box half-width = 1) are one.
    margin: minima may lie outside the box by this many half-widths (flagged ``in_box=False``).
    images: images per string (barriers).
    barriers: compute the minimum-energy paths and saddles (False: minima only).
    seed: the Sobol scrambling seed.

    See the module docstring for the algorithm.
    """
    t0 = time.perf_counter()
    fixed, free_box = _check_slice(potential, fix, box)
    if samples < 0 or merge <= 0 or margin < 0 or images < 3:
        raise ValueError(
            f"need samples >= 0, merge > 0, margin >= 0, images >= 3; got samples={samples}, "
            f"merge={merge}, margin={margin}, images={images}."
        )
    sl = _Slice(potential, fixed, free_box)
    bound = 1.0 + margin
    z0 = [torch.zeros(1, sl.k, dtype=torch.float64)]
    if samples:
        sobol = torch.quasirandom.SobolEngine(sl.k, scramble=True, seed=seed)
        z0.append(2 * sobol.draw(samples, dtype=torch.float64) - 1)
    if starts is not None:
        x = as_float64_tensor(starts, len(sl.names), name="starts")
        z0.append(sl.to_z(x))
    z0 = torch.cat(z0)
    scale = float(sl.evaluate(z0, hessian=False).energy.std()) if z0.shape[0] > 1 else 1.0
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    gtol = 1e-10 * scale
    z0 = torch.cat([z0, _mode_minima(potential, sl, gtol=gtol, bound=bound)])
    z, d = _minimise(lambda q, rows: sl.evaluate(q), z0, gtol=gtol, bound=bound)
    tol = {"merge": merge, "gtol": 1e-6 * scale, "eigtol": 1e-9 * scale, "bound": bound}
    minima_z, info = _distinct_minima(z, d, **tol)
    found: tuple[Barrier, ...] = ()
    for _ in range(3):  # a path that dips into a basin no start found adds its minimum
        if not barriers or len(minima_z) < 2:
            break
        energies = [e for e, _, _ in info]
        found, dips = _barriers(
            sl, minima_z, energies, images=images, gtol=gtol, eigtol=tol["eigtol"]
        )
        if dips.shape[0] == 0:
            break
        z2, d2 = _minimise(lambda q, rows: sl.evaluate(q), dips, gtol=gtol, bound=bound)
        z, d = torch.cat([z, z2]), _Derivs(*(_cat(u, v) for u, v in zip(d, d2)))
        count = len(minima_z)
        minima_z, info = _distinct_minima(z, d, **tol)
        if len(minima_z) == count:
            break
    minima = tuple(_minimum(sl, q, m) for q, m in zip(minima_z, info))
    return WellAnalysis(
        sl.names,
        tuple(sl.names[i] for i in sl.free),
        fixed,
        free_box,
        minima,
        found,
        time.perf_counter() - t0,
    )


def _cat(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return None if a is None else torch.cat([a, b])


def _distinct_minima(
    z: torch.Tensor, d: _Derivs, *, merge: float, gtol: float, eigtol: float, bound: float
) -> tuple[torch.Tensor, list[tuple[float, torch.Tensor, torch.Tensor | None]]]:
    """The converged points that are minima (small gradient, all eigenvalues > ``eigtol``,
    inside ``bound``), sorted by energy, merged within ``merge``: ``z (m, k)`` and
    ``(energy, hessian, phase weights)`` of each."""
    lam = torch.linalg.eigvalsh(d.hessian)
    ok = (d.gradient.abs().amax(-1) < gtol) & (lam[:, 0] > eigtol) & (z.abs().amax(-1) <= bound)
    rows = torch.nonzero(ok).flatten()
    rows = rows[torch.argsort(d.energy[rows])]
    kept: list[int] = []
    for r in rows.tolist():
        if all(float((z[r] - z[q]).norm()) > merge for q in kept):
            kept.append(r)
    info = [
        (float(d.energy[r]), d.hessian[r], None if d.phase is None else d.phase[r]) for r in kept
    ]
    return z[kept], info


def _minimum(sl: _Slice, z: torch.Tensor, info) -> Minimum:
    energy, hess, phase = info
    return Minimum(
        sl.location(z),
        energy,
        tuple(sl.physical_eigenvalues(hess).tolist()),
        None if phase is None else int(phase.argmax()),
        bool(z.abs().max() <= 1 + 1e-12),
    )


def _dips(energy: torch.Tensor) -> torch.Tensor:
    """Which interior images of a path with energies ``energy (M,)`` are local minima."""
    noise = 1e-12 * (1 + energy.abs().max())
    inner = energy[1:-1]
    return (inner < energy[:-2] - noise) & (inner < energy[2:] - noise)


def _neighbours(path: torch.Tensor, energy: torch.Tensor, others: list[torch.Tensor]) -> bool:
    """Whether a relaxed string ``path (M, k)`` with energies ``energy (M,)`` joins its two ends
    directly: no interior local minimum of the energy, no image near a third minimum."""
    if bool(_dips(energy).any()):
        return False
    spacing = float((path[1:] - path[:-1]).norm(dim=-1).mean())
    return all(float((path - q).norm(dim=-1).min()) > 0.5 * spacing for q in others)


def _barriers(
    sl: _Slice,
    mz: torch.Tensor,
    menergy: list[float],
    *,
    images: int,
    gtol: float,
    eigtol: float,
) -> tuple[tuple[Barrier, ...], torch.Tensor]:
    """Strings between all pairs of minima ``mz (m, k)``, kept for neighbours, saddles refined
    to ``|∇ψ| < gtol`` (verified below 1e4 gtol, eigenvalues beyond ``eigtol``). Also returns
    the interior images where a dropped path dips (``(q, k)``: starts for more minima)."""
    accept = gtol * 1e4
    pairs = [(i, j) for i in range(len(mz)) for j in range(i + 1, len(mz))]
    a = mz[[i for i, _ in pairs]]
    b = mz[[j for _, j in pairs]]
    paths = _relax_string(sl, a, b, images=images)
    energy = sl.evaluate(paths.reshape(-1, sl.k), hessian=False).energy.reshape(len(pairs), -1)
    keep = [
        p
        for p, (i, j) in enumerate(pairs)
        if _neighbours(paths[p], energy[p], [mz[q] for q in range(len(mz)) if q not in (i, j)])
    ]
    dropped = [p for p in range(len(pairs)) if p not in keep]
    dips = torch.cat([paths[p, 1:-1][_dips(energy[p])] for p in dropped] + [mz[:0]])
    if not keep:
        return (), dips
    top = 1 + energy[keep, 1:-1].argmax(-1)
    rows = torch.arange(len(keep))
    path_k = paths[keep]
    start = _path_maximum(sl, path_k, top)
    tangent = path_k[rows, top + 1] - path_k[rows, top - 1]
    saddle, d = _follow_saddle(sl, start, tangent, gtol=gtol)
    lam = torch.linalg.eigvalsh(d.hessian)
    near = torch.stack(
        [(path_k[r] - saddle[r]).norm(dim=-1).min() for r in range(len(keep))]
    ) < 2 * (path_k[:, 1:] - path_k[:, :-1]).norm(dim=-1).mean(-1)
    verified = (
        (d.gradient.abs().amax(-1) < accept)
        & (lam[:, 0] < -eigtol)
        & ((lam[:, 1] > eigtol) if sl.k > 1 else True)
        & near
    )
    fallback = sl.evaluate(start)
    found = []
    for r, p in enumerate(keep):
        v = bool(verified[r])
        z, e, h = (
            (saddle[r], d.energy[r], d.hessian[r])
            if v
            else (start[r], fallback.energy[r], fallback.hessian[r])
        )
        i, j = pairs[p]
        found.append(
            Barrier(
                (i, j),
                sl.location(z),
                float(e),
                tuple(sl.physical_eigenvalues(h).tolist()),
                (float(e) - menergy[i], float(e) - menergy[j]),
                v,
                tuple(tuple(row) for row in sl.to_x(path_k[r]).tolist()),
            )
        )
    return tuple(found), dips


# ----------------------------------------------------------------------------- table
def wells_table(data: Mapping[str, Any]) -> str:
    """A text table of a well analysis given as its JSON dict (``WellAnalysis.to_json``)."""
    fixed = ", ".join(f"{k}={v:g}" for k, v in data["fixed"].items()) or "none (full space)"
    free = data["free"]
    lines = [
        f"wells: {len(data['minima'])} minima, {len(data['barriers'])} barriers; fixed: {fixed}",
        f"  {'#':>2} {'energy':>12} {'mode':>4} {'box':>3} {'min eig':>10}  location ({', '.join(free)})",
    ]
    for i, m in enumerate(data["minima"]):
        mode = "-" if m["mode"] is None else str(m["mode"])
        where = " ".join(f"{m['location'][n]:+.5f}" for n in free)
        box = "in" if m["in_box"] else "out"
        lines.append(
            f"  {i:>2} {m['energy']:>12.6g} {mode:>4} {box:>3} {min(m['eigenvalues']):>10.4g}  {where}"
        )
    if data["barriers"]:
        lines.append(
            f"  {'pair':>5} {'saddle ψ':>12} {'height i':>10} {'height j':>10} {'neg eig':>10} verified"
        )
    for b in data["barriers"]:
        i, j = b["pair"]
        lines.append(
            f"  {i:>2}-{j:<2} {b['energy']:>12.6g} {b['heights'][0]:>10.4g} {b['heights'][1]:>10.4g} "
            f"{min(b['eigenvalues']):>10.4g} {'yes' if b['verified'] else 'NO'}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- comparison
class MinimumMatch(NamedTuple):
    """A true minimum ``truth`` matched to the found minimum ``found`` (None: missing), their
    ``distance`` (in the units of ``compare_wells``'s ``scale``) and the ``depth_error``
    ``(ψ_found - shift - ψ_true) / energy_unit``."""

    truth: int
    found: int | None
    distance: float | None
    depth_error: float | None


class BarrierMatch(NamedTuple):
    """A true barrier ``truth = (a, b)`` matched to the found barrier between the minima
    matched to a and b (``found``, None: missing). Heights are ordered as (from a, from b);
    ``error``: the largest relative height error of the two sides; ``verified``: whether the
    found saddle passed its checks (``Barrier.verified``)."""

    truth: tuple[int, int]
    found: tuple[int, int] | None
    heights_true: tuple[float, float]
    heights_found: tuple[float, float] | None
    error: float | None
    verified: bool = False


class WellComparison(NamedTuple):
    """Found wells matched to the truth: per true minimum and barrier, and the counts of true
    minima without a match (``missing``) and found minima matched to none (``extra``)."""

    minima: tuple[MinimumMatch, ...]
    barriers: tuple[BarrierMatch, ...]
    missing: int
    extra: int

    def to_json(self) -> dict[str, Any]:
        return {
            "minima": [m._asdict() for m in self.minima],
            "barriers": [b._asdict() for b in self.barriers],
            "missing": self.missing,
            "extra": self.extra,
        }


def _metric(scale, names: tuple[str, ...]) -> torch.Tensor:
    """``scale`` (name -> unit, or an ``(m, d)`` matrix) as the matrix of the coordinates."""
    if isinstance(scale, Mapping):
        unknown = sorted(set(scale) - set(names))
        if unknown or not scale:
            raise ValueError(
                f"scale must name some of the inputs {list(names)}; got unknown {unknown}."
            )
        rows = torch.zeros(len(scale), len(names), dtype=torch.float64)
        for r, (name, unit) in enumerate(scale.items()):
            if not (math.isfinite(unit) and unit > 0):
                raise ValueError(f"scale of input {name!r} must be finite and > 0, got {unit}.")
            rows[r, names.index(name)] = 1.0 / unit
        return rows
    rows = torch.as_tensor(scale, dtype=torch.float64)
    if rows.ndim != 2 or rows.shape[1] != len(names):
        raise ValueError(
            f"scale must be a dict name -> unit or an (m, {len(names)}) matrix; got shape "
            f"{tuple(rows.shape)}."
        )
    return rows


def compare_wells(
    found: WellAnalysis,
    truth: WellAnalysis,
    *,
    scale: Mapping[str, float] | Sequence[Sequence[float]],
    tolerance: float = 0.15,
    shift: float = 0.0,
    energy_unit: float | None = None,
) -> WellComparison:
    """Match the found wells to the true ones.

    scale: the coordinates distances are measured in: input name -> unit (coordinate
        ``x_name / unit``), or an ``(m, d)`` matrix ``M`` (coordinates ``M x``, inputs in
        order), e.g. the order parameters over s_e. Matching uses the same distance, so
        include every direction that tells wells apart.
    tolerance: the largest distance of a match. Pairs are matched one to one, nearest first.
    shift: the found potential's additive constant (a learned ψ is known up to one):
        depth errors compare ``ψ_found - shift`` with ``ψ_true``.
    energy_unit: depth errors are divided by it (default: the largest |ψ| of the true minima,
        or 1 when they are all 0).
    """
    if found.input_names != truth.input_names:
        raise ValueError(
            f"the analyses have different inputs: {found.input_names} vs {truth.input_names}."
        )
    M = _metric(scale, truth.input_names)

    def coords(minima) -> torch.Tensor:
        x = [[m.location[n] for n in truth.input_names] for m in minima]
        return torch.tensor(x, dtype=torch.float64).reshape(-1, M.shape[1]) @ M.T

    dist = torch.cdist(coords(truth.minima), coords(found.minima))
    unit = energy_unit or max((abs(m.energy) for m in truth.minima), default=0.0) or 1.0
    pairs = sorted(
        (float(dist[t, f]), t, f)
        for t in range(dist.shape[0])
        for f in range(dist.shape[1])
        if dist[t, f] <= tolerance
    )
    match: dict[int, int] = {}
    for _, t, f in pairs:
        if t not in match and f not in match.values():
            match[t] = f
    minima = tuple(
        MinimumMatch(
            t,
            match.get(t),
            None if t not in match else float(dist[t, match[t]]),
            None
            if t not in match
            else (found.minima[match[t]].energy - shift - truth.minima[t].energy) / unit,
        )
        for t in range(len(truth.minima))
    )
    by_pair = {frozenset(b.pair): b for b in found.barriers}
    barriers = []
    for b in truth.barriers:
        a, c = b.pair
        hit = by_pair.get(frozenset((match.get(a, -1), match.get(c, -2))))
        heights = None
        if hit is not None:
            heights = hit.heights if hit.pair[0] == match[a] else hit.heights[::-1]
        barriers.append(
            BarrierMatch(
                b.pair,
                None if hit is None else (match[a], match[c]),
                b.heights,
                heights,
                None
                if hit is None
                else max(abs(f - t) / abs(t) for f, t in zip(heights, b.heights)),
                hit is not None and hit.verified,
            )
        )
    return WellComparison(
        minima,
        tuple(barriers),
        len(truth.minima) - len(match),
        len(found.minima) - len(match),
    )


# ----------------------------------------------------------------------------- figure
class Plane(NamedTuple):
    """A 2-D slice of input space: ``x = origin + a·axes[0] + b·axes[1]`` for ``a`` in
    ``extent[0]`` and ``b`` in ``extent[1]``; ``origin`` and each axis have one entry per input
    (input order, physical units)."""

    origin: tuple[float, ...]
    axes: tuple[tuple[float, ...], tuple[float, ...]]
    extent: tuple[tuple[float, float], tuple[float, float]]
    labels: tuple[str, str]
    title: str = ""


def axis_planes(analysis: WellAnalysis) -> list[Plane]:
    """The default slice: the first two free inputs, through the deepest minimum (or the box
    centre), over the box; [] with one free input (``plot_wells`` then draws ψ along it)."""
    if len(analysis.free) < 2:
        return []
    names = analysis.input_names
    if analysis.minima:
        origin = [analysis.minima[0].location[n] for n in names]
    else:
        origin = [analysis.fixed.get(n, sum(analysis.box.get(n, (0, 0))) / 2) for n in names]
    u, v = analysis.free[:2]
    axes = tuple(tuple(float(n == a) for n in names) for a in (u, v))
    origin = [0.0 if n in (u, v) else o for n, o in zip(names, origin)]
    return [Plane(tuple(origin), axes, (analysis.box[u], analysis.box[v]), (u, v))]


def plot_wells(
    analysis: WellAnalysis,
    potential: Potential,
    path: str | Path,
    *,
    planes: Sequence[Plane] | None = None,
    resolution: int = 121,
) -> Path:
    """ψ on 2-D slices (one panel per plane; default ``axis_planes``) with the minima (circles,
    numbered), the saddles (crosses; grey when unverified) and the paths (lines) that lie within
    5 % of the panel's size of its plane; with one free input, ψ along it. Written atomically
    (matplotlib's Figure API, no pyplot); returns the path."""
    from matplotlib.figure import Figure

    planes = list(axis_planes(analysis) if planes is None else planes)
    if not planes:
        return save_figure(_plot_line(analysis, potential, resolution), path, dpi=110)
    fig = Figure(figsize=(5.2 * len(planes), 4.4), layout="tight")
    for ax, plane in zip(fig.subplots(1, len(planes), squeeze=False)[0], planes):
        _plot_plane(fig, ax, analysis, potential, plane, resolution)
    return save_figure(fig, path, dpi=110)


def _plot_plane(fig, ax, analysis: WellAnalysis, potential: Potential, plane: Plane, n: int):
    """One panel of ``plot_wells``."""
    d = len(analysis.input_names)
    o = torch.tensor(plane.origin, dtype=torch.float64)
    U = torch.tensor(plane.axes, dtype=torch.float64)  # (2, d)
    if o.shape != (d,) or U.shape != (2, d):
        raise ValueError(f"plane {plane.title!r}: origin and axes need {d} entries each.")
    a = torch.linspace(*plane.extent[0], n, dtype=torch.float64)
    b = torch.linspace(*plane.extent[1], n, dtype=torch.float64)
    A, B = torch.meshgrid(a, b, indexing="xy")
    x = o + A.reshape(-1, 1) * U[0] + B.reshape(-1, 1) * U[1]
    with torch.no_grad():
        psi = potential.derivatives(x, hessian=False).energy.reshape(A.shape)
    levels = torch.linspace(float(psi.min()), float(torch.quantile(psi.flatten(), 0.6)), 30)
    cs = ax.contourf(A, B, psi, levels=levels.tolist(), extend="max", cmap="viridis")
    fig.colorbar(cs, ax=ax, label="ψ")
    size = float((U[0] * (a[-1] - a[0])).norm() + (U[1] * (b[-1] - b[0])).norm())
    for bar in analysis.barriers:
        ab, near = _project(torch.tensor(bar.path, dtype=torch.float64), o, U, size)
        if bool(near.all()):
            ax.plot(ab[:, 0], ab[:, 1], color="w", lw=1.2)
    for kind, items in (("min", analysis.minima), ("saddle", analysis.barriers)):
        if not items:
            continue
        pts = [[it.location[n] for n in analysis.input_names] for it in items]
        ab, near = _project(torch.tensor(pts, dtype=torch.float64), o, U, size)
        for k in torch.nonzero(near).flatten().tolist():
            if kind == "min":
                ax.plot(*ab[k], "o", ms=8, mfc="w", mec="k")
                ax.annotate(str(k), ab[k].tolist(), xytext=(5, 5), textcoords="offset points")
            else:
                color = "tab:red" if analysis.barriers[k].verified else "0.6"
                ax.plot(*ab[k], "x", ms=9, mew=2.5, color=color)
    ax.set(xlabel=plane.labels[0], ylabel=plane.labels[1], title=plane.title, aspect="equal")


def _project(points: torch.Tensor, o: torch.Tensor, U: torch.Tensor, size: float):
    """Plane coordinates ``(n, 2)`` of ``points (n, d)`` and whether each lies near the plane."""
    ab = torch.linalg.lstsq(U.T, (points - o).T).solution.T
    return ab, (points - o - ab @ U).norm(dim=-1) / size < 0.05


def _plot_line(analysis: WellAnalysis, potential: Potential, resolution: int):
    """ψ along the one free input, minima and saddles marked."""
    from matplotlib.figure import Figure

    name = analysis.free[0]
    lo, hi = analysis.box[name]
    sl = _Slice(potential, analysis.fixed, analysis.box)
    z = torch.linspace(-1, 1, resolution, dtype=torch.float64)[:, None]
    fig = Figure(figsize=(6.0, 4.0), layout="tight")
    ax = fig.subplots()
    ax.plot(sl.to_x(z)[:, sl.free[0]], sl.evaluate(z, hessian=False).energy, color="k")
    for m in analysis.minima:
        ax.plot(m.location[name], m.energy, "o", ms=8, mfc="w", mec="tab:blue")
    for b in analysis.barriers:
        ax.plot(b.location[name], b.energy, "x", ms=9, mew=2.5, color="tab:red")
    ax.set(xlabel=name, ylabel="ψ", xlim=(lo, hi))
    return fig


# ----------------------------------------------------------------------------- the verb
def _pairs(items: Sequence[str] | None, option: str) -> dict[str, str]:
    """``["NAME=VALUE", ...]`` -> {NAME: VALUE}; raises ValueError naming the bad item."""
    out = {}
    for item in [items] if isinstance(items, str) else items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"--{option} takes NAME=VALUE items, got {item!r}.")
        out[name.strip()] = value.strip()
    return out


def _number(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError as error:
        raise ValueError(f"{what} must be a number, got {value!r}.") from error


def _order_parameter_planes(
    names: tuple[str, ...], c_values: Sequence[float], half: float
) -> list[Plane]:
    """The (e2, e3) planes of the mechanochemical inputs at e1 = e4 = e5 = e6 = 0 (docs/science.md §3)."""
    e2 = (1 / math.sqrt(2), -1 / math.sqrt(2), 0.0, 0.0, 0.0, 0.0, 0.0)
    e3 = (1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6), 0.0, 0.0, 0.0, 0.0)
    return [
        Plane(
            (0.0,) * (len(names) - 1) + (float(c),),
            (e2, e3),
            ((-half, half), (-half, half)),
            ("e2", "e3"),
            f"c = {c:g}",
        )
        for c in c_values
    ]


def _data_potential(data: str, param: Sequence[str] | None):
    """The data model ``data``'s analytic potential, its box and its parameters."""
    from lse_material.training.data import mechanochemical as mc

    if data != "mechanochemical":
        raise ValueError(f"unknown data model {data!r}; known: ['mechanochemical'].")
    fields = {f.name for f in mc.MechanochemicalParams.__dataclass_fields__.values()}
    values = {}
    for name, value in _pairs(param, "param").items():
        if name not in fields:
            raise ValueError(f"--param {name}: unknown parameter; known: {sorted(fields)}.")
        values[name] = _number(value, f"--param {name}")
    params = mc.MechanochemicalParams(**values)
    e = 1.5 * params.s_e  # the box scales with the wells (default: ±0.15, c in [0, 1])
    box = {n: (-e, e) for n in mc.INPUT_NAMES[:3]}
    box |= {n: (-2 * e, 2 * e) for n in mc.INPUT_NAMES[3:6]}
    box["c"] = (0.0, params.s_c)
    return mc.potential(params=params), box, params


def order_parameter_scale(params=None) -> list[list[float]]:
    """The ``compare_wells`` scale of the mechanochemical inputs: the order parameters
    e1..e6 over s_e and c over s_c (docs/science.md §3), a ``(7, 7)`` matrix; ``params``: a
    ``MechanochemicalParams`` (default: the values of docs/science.md §3)."""
    from lse_material.training.data import mechanochemical as mc

    p = params or mc.MechanochemicalParams()
    r3, r2, r6 = math.sqrt(3), math.sqrt(2), math.sqrt(6)
    rows = [
        [1 / r3, 1 / r3, 1 / r3, 0, 0, 0, 0],
        [1 / r2, -1 / r2, 0, 0, 0, 0, 0],
        [1 / r6, 1 / r6, -2 / r6, 0, 0, 0, 0],
        [0, 0, 0, 0.5, 0, 0, 0],  # e4 = E23 = (2E23)/2
        [0, 0, 0, 0, 0.5, 0, 0],
        [0, 0, 0, 0, 0, 0.5, 0],
    ]
    return [[v / p.s_e for v in row] for row in rows] + [[0, 0, 0, 0, 0, 0, 1 / p.s_c]]


def _comparison_table(cmp: WellComparison) -> str:
    lines = [f"matched to the truth: {cmp.missing} missing, {cmp.extra} extra"]
    for m in cmp.minima:
        hit = (
            "missing"
            if m.found is None
            else (f"-> {m.found}  distance {m.distance:.3g}  depth error {m.depth_error:+.3g}")
        )
        lines.append(f"  true minimum {m.truth} {hit}")
    for b in cmp.barriers:
        hit = "missing" if b.found is None else f"-> {b.found}  height error {b.error:.3g}"
        lines.append(f"  true barrier {b.truth[0]}-{b.truth[1]} {hit}")
    return "\n".join(lines)


def _verb_planes(analysis: WellAnalysis, params, box: dict) -> list[Plane] | None:
    """The verb's figure slices: the (e2, e3) planes for the mechanochemical inputs (at the
    fixed c, else at c = 0 and c = s_c), else None (``axis_planes``)."""
    from lse_material.training.data.mechanochemical import INPUT_NAMES

    if analysis.input_names != INPUT_NAMES:
        return None
    s_c = params.s_c if params else box.get("c", (0.0, 1.0))[1]
    half = 1.5 * params.s_e if params else box.get("E11", (0.0, 0.15))[1]
    c_values = [analysis.fixed["c"]] if "c" in analysis.fixed else [0.0, s_c]
    return _order_parameter_planes(analysis.input_names, c_values, half)


def _verb_potential(model: str | None, data: str | None, param):
    """The potential of the verb, its search box and its data-model parameters (or None)."""
    if data is not None:
        return _data_potential(data, param)
    from lse_material.modelfile import load

    potential = load(model)
    if not hasattr(potential, "derivatives"):
        raise ValueError(f"{model}: a {type(potential).__name__} is not a potential.")
    return potential, dict(potential.training_box or {}), None


def analyse_wells(
    model: str | None = None,
    *,
    data: Literal["mechanochemical"] | None = None,
    truth: Literal["mechanochemical"] | None = None,
    fix: list[str] | None = None,
    box: list[str] | None = None,
    param: list[str] | None = None,
    out: str = "wells",
    samples: int = 256,
    images: int = 25,
) -> WellAnalysis:
    """Find the wells of a model (or of a data model): minima, saddles, barriers.

    Prints the table and writes ``OUT/wells.json`` (``WellAnalysis.to_json``; with --truth also
    the true wells and the match, keys "truth" and "comparison") and ``OUT/wells.png`` (ψ on
    2-D slices with the minima, saddles and paths; for the mechanochemical inputs the (e2, e3)
    planes at the fixed c, or at c = 0 and c = s_c).

    Parameters
    ----------
    model
        a model file (.safetensors); leave out with --data.
    data
        analyse this data model's analytic potential instead of a model file (the truth).
    truth
        also analyse this data model on the same slice and match the model's wells to it
        (distances in order parameters over s_e and c over s_c; depths with the model's ψ
        shifted to the truth's at E = 0, c = 0).
    fix
        an input held fixed, NAME=VALUE (e.g. c=1; repeat for several); the others are
        searched over (none: the full space).
    box
        the search range of an input, NAME=LOW:HIGH (repeat for several; default: the
        model's training box, or the data model's sampling box).
    param
        a data-model parameter, NAME=VALUE (e.g. d_e=0.2; repeat for several; with --data
        or --truth).
    out
        output folder.
    samples
        quasi-random starts in the box.
    images
        images per minimum-energy path.
    """
    if (model is None) == (data is None):
        raise ValueError("give either a model file or --data NAME (not both).")
    if param and data is None and truth is None:
        raise ValueError("--param sets data-model parameters; it needs --data or --truth.")
    if truth is not None and data is not None:
        raise ValueError("--truth compares a model file with a data model; drop --data.")
    potential, search_box, params = _verb_potential(model, data, param)
    fixed = {k: _number(v, f"--fix {k}") for k, v in _pairs(fix, "fix").items()}
    for name, value in _pairs(box, "box").items():
        lo, sep, hi = value.partition(":")
        if not sep:
            raise ValueError(f"--box {name}={value}: give LOW:HIGH.")
        search_box[name] = (_number(lo, f"--box {name} low"), _number(hi, f"--box {name} high"))
    options = {"fix": fixed, "samples": samples, "images": images}
    analysis = find_wells(potential, box=search_box or None, **options)
    result = analysis.to_json()
    if truth is not None:
        true_potential, true_box, params = _data_potential(truth, param)
        true_wells = find_wells(true_potential, box=true_box | search_box, **options)
        origin = torch.zeros(1, len(analysis.input_names), dtype=torch.float64)
        with torch.no_grad():
            shift = float(potential.derivatives(origin, hessian=False).energy[0])
            shift -= float(true_potential.derivatives(origin, hessian=False).energy[0])
        cmp = compare_wells(analysis, true_wells, scale=order_parameter_scale(params), shift=shift)
        result |= {"truth": true_wells.to_json(), "comparison": cmp.to_json() | {"shift": shift}}
    planes = _verb_planes(analysis, params, search_box)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "wells.json", result)
    plot_wells(analysis, potential, out_dir / "wells.png", planes=planes)
    print(analysis.table())
    if truth is not None:
        print(_comparison_table(cmp))
    print(f"wrote {out_dir / 'wells.json'} and {out_dir / 'wells.png'} ({analysis.seconds:.2f} s)")
    return analysis
