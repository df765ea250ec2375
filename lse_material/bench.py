"""``lse-material bench law``: cost per point of ψ + gradient + Hessian, side by side.

Three ways to get energy, gradient and Hessian of the same model at the same points, in one
run, float64, one thread:

- ``closed_form``: ``LSEICNN.derivatives`` (the library's path; chunked, no autograd graph):
  the fused CPU kernel when it is built, reported as ``closed_form_kernel``;
- ``closed_form_torch``: the same closed form in torch operations (``LSE_MATERIAL_NATIVE=0``;
  the GPU path);
- ``loaded_derivatives``: ``lse_material.load(model).derivatives(x)`` as a user writes it (no
  ``requires_grad_``, no ``no_grad``, no chunks): it must run at the kernel's speed
  (``loaded_derivatives_over_closed_form`` ≈ 1);
- ``vmap_jacfwd``: per-point ``torch.func.vmap(jacfwd(grad(ψ)))`` — the pattern of the
  dolfinx-external-operator ICNN demo;
- ``autograd``: batched autograd, one backward for the gradient and d double-backwards for
  the Hessian rows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lse_material import _native
from lse_material.jsonio import write_json
from lse_material.modelfile import load
from lse_material.potential import derivatives_in_chunks

__all__ = ["bench_law"]


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_law(
    *,
    model: str | Path,
    out: str | Path,
    points: int = 100_000,
    repeats: int = 3,
    threads: int = 1,
    seed: int = 0,
) -> dict:
    """Time the paths at ``points`` points inside the model's training box; write summary.json.

    Prints the times per point and the speed-ups; returns the full summary.

    Parameters
    ----------
    model
        a model file.
    out
        output folder.
    points
        evaluation points, uniform in the model's training box.
    repeats
        timed repeats per path (the best is kept).
    threads
        torch CPU threads.
    seed
        seed of the points.
    """
    torch.set_num_threads(threads)
    law = load(model)
    x = _points_in_box(law, points, seed)
    paths = _paths(law, load(model), x)  # the second load: as a user gets it, nothing switched off

    # Agreement first (the benchmark compares equal work).
    sub = slice(0, 1000)
    (_, _, h_ad), *_ = _autograd(law, x[sub])
    agreement = _max_rel_difference(paths["closed_form"]().hessian[sub], h_ad)
    agreement_torch = _max_rel_difference(paths["closed_form_torch"]().hessian[sub], h_ad)

    times = {
        name: _best_time(path, 1 if name == "vmap_jacfwd" else repeats)
        for name, path in paths.items()
    }
    d = law.n_inputs
    result = {
        "points": points,
        "threads": threads,
        "dtype": "float64",
        "n_inputs": d,
        "n_modes": law.n_modes,
        "hidden": list(law.modes.hidden),
        "seconds": times,
        "microseconds_per_point": {k: 1e6 * v / points for k, v in times.items()},
        "speedup_vs_vmap_jacfwd": times["vmap_jacfwd"] / times["closed_form"],
        "loaded_derivatives_over_closed_form": times["loaded_derivatives"] / times["closed_form"],
        "speedup_vs_autograd": times["autograd"] / times["closed_form"],
        "closed_form_kernel": "fused C kernel" if _native.available() else "torch",
        "speedup_torch_path_vs_autograd": times["autograd"] / times["closed_form_torch"],
        "hessian_max_rel_difference_vs_autograd": agreement,
        "hessian_max_rel_difference_vs_autograd_torch_path": agreement_torch,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", result)
    keys = (
        "microseconds_per_point",
        "speedup_vs_vmap_jacfwd",
        "speedup_vs_autograd",
        "loaded_derivatives_over_closed_form",
    )
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    return result


def _points_in_box(law, points: int, seed: int) -> torch.Tensor:
    """``(points, d)`` uniform in the law's training box (in [-1, 1]^d without one)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(points, law.n_inputs, generator=g, dtype=torch.float64)
    box = law.training_box
    if not box:
        return 2 * u - 1
    lo = torch.tensor([box[n][0] for n in law.input_names], dtype=torch.float64)
    hi = torch.tensor([box[n][1] for n in law.input_names], dtype=torch.float64)
    return lo + (hi - lo) * u


def _autograd(law, x: torch.Tensor, chunk: int = 8192) -> list[tuple]:
    """(energy, gradient, Hessian) per chunk of ``x`` by reverse-mode autograd (d backward passes)."""
    out = []
    for s in range(0, len(x), chunk):
        xs = x[s : s + chunk].clone().requires_grad_(True)
        e = law(xs)
        (gr,) = torch.autograd.grad(e.sum(), xs, create_graph=True)
        rows = [
            torch.autograd.grad(gr[:, j].sum(), xs, retain_graph=True)[0]
            for j in range(law.n_inputs)
        ]
        out.append((e.detach(), gr.detach(), torch.stack(rows, 1)))
    return out


def _max_rel_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _paths(law, loaded, x: torch.Tensor) -> dict:
    """The timed paths, each a callable computing energy, gradient and Hessian at ``x``.

    ``law`` has its gradients switched off (the fast path a solver uses); ``loaded`` is the
    file as ``load`` returns it.
    """
    law.requires_grad_(False)

    def closed_form_torch():
        with _native.switched_off():
            return derivatives_in_chunks(law, x)

    def energy_of_point(p):
        return law(p[None])[0]

    hess_fn = torch.func.vmap(torch.func.jacfwd(torch.func.grad(energy_of_point)))
    grad_fn = torch.func.vmap(torch.func.grad(energy_of_point))

    def vmap_jacfwd():
        return [
            (law(x[s : s + 8192]), grad_fn(x[s : s + 8192]), hess_fn(x[s : s + 8192]))
            for s in range(0, len(x), 8192)
        ]

    return {
        "closed_form": lambda: derivatives_in_chunks(law, x),
        "closed_form_torch": closed_form_torch,
        "loaded_derivatives": lambda: loaded.derivatives(x),
        "autograd": lambda: _autograd(law, x),
        "vmap_jacfwd": vmap_jacfwd,
    }
