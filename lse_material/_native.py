"""The fused CPU kernel (``_kernel.c``, built at install) through ctypes.

``LSEICNN.derivatives`` calls it for single float64 models on the CPU outside autograd (the
evaluation at quadrature points); everything else (GPU, ensembles, training, gradients of
gradients) takes the torch path, which computes the same closed form and is the reference in
the tests. Set ``LSE_MATERIAL_NATIVE=0`` to use the torch path everywhere. If the kernel was
not built (no C compiler at install), the torch path is used silently; ``available()`` says
which.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch

__all__ = ["NativeWeights", "available", "derivatives", "switched_off"]

MAX_LAYERS, MAX_MODES = 8, 64  # the kernel's limits (_kernel.c)


def _load():
    for path in sorted(Path(__file__).parent.glob("_kernel*.so")):
        try:
            function = ctypes.CDLL(str(path)).lse_icnn_derivatives
        except (OSError, AttributeError):
            continue
        i64, ptr, dbl = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
        function.restype = ctypes.c_int
        function.argtypes = [i64, i64, ptr, i64, ptr, i64, i64, ptr, i64, ptr, ptr]
        function.argtypes += [dbl, i64, ptr, ptr, dbl, dbl, i64, ptr, ptr, ptr, ptr]
        return function
    return None


_KERNEL = _load()


def available() -> bool:
    """True when the fused kernel is built and not switched off (``LSE_MATERIAL_NATIVE=0``)."""
    return _KERNEL is not None and os.environ.get("LSE_MATERIAL_NATIVE", "1") != "0"


@contextmanager
def switched_off():
    """Within this block the torch path runs everywhere (as with ``LSE_MATERIAL_NATIVE=0``)."""
    previous = os.environ.get("LSE_MATERIAL_NATIVE")
    os.environ["LSE_MATERIAL_NATIVE"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["LSE_MATERIAL_NATIVE"]
        else:
            os.environ["LSE_MATERIAL_NATIVE"] = previous


class NativeWeights(NamedTuple):
    """The kernel's packed weights of the evaluated modes, in physical input units.

    packed ``(N, stride)``: per mode A_j (h_j × d), b_j, B_j (j ≥ 1), b_out, a_out, c (see
    ``_kernel.c``); widths ``(L,)`` int64; log_gates ``(N,)``; rho, energy_scale, energy_shift;
    for a nested LSE, groups ``(N,)`` int64 (the group of each evaluated mode) and group_rho
    ``(G,)`` (None for the single ρ).
    """

    packed: torch.Tensor
    widths: torch.Tensor
    log_gates: torch.Tensor
    rho: float
    energy_scale: float
    energy_shift: float
    groups: torch.Tensor | None = None
    group_rho: torch.Tensor | None = None


class NativeResult(NamedTuple):
    """energy ``(P,)``, gradient ``(P, k)``, hessian ``(P, k, k)`` or None, phase ``(P, N)``."""

    energy: torch.Tensor
    gradient: torch.Tensor
    hessian: torch.Tensor | None
    phase: torch.Tensor


def derivatives(
    weights: NativeWeights, x: torch.Tensor, wrt: torch.Tensor, *, hessian: bool
) -> NativeResult:
    """Run the kernel on ``x (P, d)`` (CPU, float64), derivatives with respect to ``wrt (k,)``."""
    x = x.contiguous()
    wrt = wrt.to(torch.int64).contiguous()
    n, d, k = x.shape[0], x.shape[1], wrt.numel()
    n_modes = weights.packed.shape[0]
    energy = x.new_empty(n)
    gradient = x.new_empty(n, k)
    hess = x.new_empty(n, k, k) if hessian else None
    phase = x.new_empty(n, n_modes)
    nested = weights.groups
    status = _KERNEL(
        n,
        d,
        x.data_ptr(),
        k,
        wrt.data_ptr(),
        n_modes,
        weights.widths.numel(),
        weights.widths.data_ptr(),
        weights.packed.shape[1],
        weights.packed.data_ptr(),
        weights.log_gates.data_ptr(),
        weights.rho,
        0 if nested is None else weights.group_rho.numel(),
        None if nested is None else weights.groups.data_ptr(),
        None if nested is None else weights.group_rho.data_ptr(),
        weights.energy_scale,
        weights.energy_shift,
        int(hessian),
        energy.data_ptr(),
        gradient.data_ptr(),
        hess.data_ptr() if hessian else None,
        phase.data_ptr(),
    )
    if status != 0:
        raise RuntimeError(f"the fused kernel failed (status {status}) for {n_modes} modes.")
    return NativeResult(energy, gradient, hess, phase)
