"""Voigt kinematics of the hidden-state law: the conventions, the strain and ODE invariants.

Conventions (the law's inputs and outputs, Voigt with engineering shears, named once)::

    strain  ε = [ε11, ε22, ε33, 2ε23, 2ε13, 2ε12]      (P, 6)
    stress  σ = [σ11, σ22, σ33, σ23, σ13, σ12]          (P, 6)
    tangent C = dσ/dε in these orders                   (P, 6, 6)

so that ``σ·δε`` is the virtual work density and ``σ = ∂ψ/∂ε`` componentwise.

The invariants below are those of ``lse_material.hidden_state.HiddenStateMaterial``
(docs/science.md §5): ``I1 = tr ε``, ``I2 = |dev ε|²``, ``I3 = ε : (e1⊗e1) = ε11`` for ψ, and
the 9 transversely isotropic invariants of ε and ε̇ for the ODE (``ODE_INPUT_NAMES``).
"""

from __future__ import annotations

import torch

__all__ = [
    "INVARIANT_NAMES",
    "ODE_INPUT_NAMES",
    "STRAIN_NAMES",
    "STRESS_NAMES",
    "deviator",
    "invariant_gradients",
    "ode_invariants",
    "strain_invariants",
    "tensor_to_voigt",
    "voigt_to_tensor",
]

STRAIN_NAMES = ("eps11", "eps22", "eps33", "2eps23", "2eps13", "2eps12")
STRESS_NAMES = ("sigma11", "sigma22", "sigma33", "sigma23", "sigma13", "sigma12")
INVARIANT_NAMES = ("I1", "I2", "I3")
ODE_INPUT_NAMES = ("I1", "I2", "I3", "I4", "J1", "J2", "J3", "K1", "K2")


def tensor_to_voigt(t: torch.Tensor, *, engineering: bool = True) -> torch.Tensor:
    """Symmetric ``(..., 3, 3)`` -> Voigt ``(..., 6)`` in the order 11, 22, 33, 23, 13, 12.

    ``engineering=True`` doubles the shears (strains); False keeps them (stresses).
    """
    f = 2.0 if engineering else 1.0
    return torch.stack(
        [
            t[..., 0, 0],
            t[..., 1, 1],
            t[..., 2, 2],
            f * t[..., 1, 2],
            f * t[..., 0, 2],
            f * t[..., 0, 1],
        ],
        dim=-1,
    )


def voigt_to_tensor(v: torch.Tensor, *, engineering: bool = True) -> torch.Tensor:
    """Voigt ``(..., 6)`` -> symmetric ``(..., 3, 3)`` (inverse of ``tensor_to_voigt``)."""
    f = 0.5 if engineering else 1.0
    a, b, c = v[..., 0], v[..., 1], v[..., 2]
    d, e, g = f * v[..., 3], f * v[..., 4], f * v[..., 5]
    return torch.stack(
        [torch.stack([a, g, e], -1), torch.stack([g, b, d], -1), torch.stack([e, d, c], -1)], -2
    )


def deviator(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Trace and deviatoric normal components of a Voigt strain: ``tr (...,)``, ``dev (..., 3)``."""
    tr = v[..., :3].sum(-1)
    return tr, v[..., :3] - tr.unsqueeze(-1) / 3


def strain_invariants(strain: torch.Tensor) -> torch.Tensor:
    """``(I1, I2, I3) = (tr ε, |dev ε|², ε11)`` of Voigt strains ``(..., 6)`` -> ``(..., 3)``."""
    tr, dev = deviator(strain)
    i2 = dev.pow(2).sum(-1) + 0.5 * strain[..., 3:].pow(2).sum(-1)
    return torch.stack([tr, i2, strain[..., 0]], dim=-1)


def invariant_gradients(strain: torch.Tensor) -> torch.Tensor:
    """``dI_k/dε`` in Voigt (engineering shears): ``(..., 3, 6)``; then ``σ = Σ_k W_k dI_k/dε``."""
    _, dev = deviator(strain)
    one = torch.ones_like(strain[..., :1])
    zero = torch.zeros_like(strain[..., :1])
    d1 = torch.cat([one, one, one, zero, zero, zero], -1)
    d2 = torch.cat([2 * dev, strain[..., 3:]], -1)
    d3 = torch.cat([one, zero, zero, zero, zero, zero], -1)
    return torch.stack([d1, d2, d3], dim=-2)


def ode_invariants(strain: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """The 9 ODE inputs (``ODE_INPUT_NAMES``) of Voigt ``strain`` and ``rate`` ``(..., 6)`` -> ``(..., 9)``.

    ``I4 = |ε e1|²``, ``K1 = dev ε : dev ε̇``, ``K2 = (ε e1)·(ε̇ e1)`` (``lse_material.hidden_state``).
    """
    inv = strain_invariants(strain)
    rinv = strain_invariants(rate)
    _, dev = deviator(strain)
    _, rdev = deviator(rate)
    # Tensor shear components are half the engineering ones.
    k1 = (dev * rdev).sum(-1) + 0.5 * (strain[..., 3:] * rate[..., 3:]).sum(-1)
    e1 = torch.stack([strain[..., 0], 0.5 * strain[..., 5], 0.5 * strain[..., 4]], -1)  # ε e1
    r1 = torch.stack([rate[..., 0], 0.5 * rate[..., 5], 0.5 * rate[..., 4]], -1)
    return torch.cat(
        [
            inv,
            e1.pow(2).sum(-1, keepdim=True),
            rinv,
            k1.unsqueeze(-1),
            (e1 * r1).sum(-1, keepdim=True),
        ],
        dim=-1,
    )
