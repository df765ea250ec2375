"""A stack of input convex neural networks (ICNNs), one per mode, evaluated as one batch.

Layer ``k`` of all ``N`` modes is one tensor of shape ``(*ensemble, N, out, in)``; the
leading ``ensemble`` dimension (empty for a single model) holds independent copies, e.g. the
random seeds of a study, so a whole study is one batched forward. SPEC §1, eq. 5:

    a_1 = A_0 x + b_0,           z_1 = σ(a_1)
    a_{k+1} = B_k z_k + A_k x + b_k,   z_{k+1} = σ(a_{k+1})
    W_i = b_K · z_K + a_K · x + c

with σ = softplus and ``B_k = softplus(B̃_k) ≥ 0``, ``b_K = softplus(b̃_K) ≥ 0``, so every
mode is convex in ``x`` for any value of the raw parameters.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ICNNStack", "ModeDerivatives"]


class ModeDerivatives(NamedTuple):
    """Per-mode energies and derivatives.

    energy ``(*ensemble, N, P)``; gradient ``(*ensemble, N, P, d)``;
    hessian ``(*ensemble, N, P, d, d)`` or None.
    """

    energy: torch.Tensor
    gradient: torch.Tensor
    hessian: torch.Tensor | None


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


class ICNNStack(nn.Module):
    """``n_modes`` ICNNs of ``n_inputs`` inputs and hidden widths ``hidden``, batched.

    Args:
        n_inputs: input dimension ``d``.
        n_modes: number of modes ``N``.
        hidden: widths of the hidden layers, e.g. ``(10, 10)``.
        ensemble: number of independent copies (a leading batch dimension), or None.
        generator: torch.Generator for the initialisation (reproducible seeds).
    """

    def __init__(
        self,
        n_inputs: int,
        n_modes: int,
        hidden: tuple[int, ...] = (10, 10),
        *,
        ensemble: int | None = None,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if n_inputs < 1 or n_modes < 1 or not hidden or min(hidden) < 1:
            raise ValueError(
                f"ICNNStack needs n_inputs >= 1, n_modes >= 1 and non-empty positive hidden "
                f"widths; got n_inputs={n_inputs}, n_modes={n_modes}, hidden={hidden}."
            )
        self.n_inputs, self.n_modes, self.hidden = n_inputs, n_modes, tuple(hidden)
        self.ensemble_shape = () if ensemble is None else (int(ensemble),)
        lead = (*self.ensemble_shape, n_modes)

        def randn(*shape, std):
            return nn.Parameter(std * torch.randn(*lead, *shape, dtype=dtype, generator=generator))

        def positive_raw(*shape, mean):
            # softplus(raw) ~ U(0, 2 mean): positive weights of mean `mean`.
            u = 2 * mean * torch.rand(*lead, *shape, dtype=dtype, generator=generator) + 1e-3
            return nn.Parameter(_inverse_softplus(u))

        d = n_inputs
        self.x_weights = nn.ParameterList([randn(h, d, std=d**-0.5) for h in self.hidden])
        self.biases = nn.ParameterList([randn(h, std=0.5) for h in self.hidden])
        self.z_weights_raw = nn.ParameterList(
            [
                positive_raw(h_out, h_in, mean=1.0 / h_in)
                for h_in, h_out in zip(self.hidden, self.hidden[1:])
            ]
        )
        self.out_z_raw = positive_raw(self.hidden[-1], mean=1.0 / self.hidden[-1])
        self.out_x = randn(d, std=0.1 * d**-0.5)
        self.out_bias = nn.Parameter(torch.zeros(*lead, dtype=dtype))

    @torch.no_grad()
    def center_on(self, centers: torch.Tensor) -> None:
        """Shift the biases so that every pre-activation of mode i vanishes at ``centers[.., i, :]``.

        centers: ``(*ensemble, N, d)`` in network (normalised) units. Each mode then starts as a
        convex bowl around its own centre, so the modes start spread over the data rather than
        all on top of each other [ours].
        """
        if centers.shape != (*self.ensemble_shape, self.n_modes, self.n_inputs):
            raise ValueError(
                f"centers must have shape {(*self.ensemble_shape, self.n_modes, self.n_inputs)}, "
                f"got {tuple(centers.shape)}."
            )
        z_at_center = None
        for k, (A, b) in enumerate(zip(self.x_weights, self.biases)):
            shift = torch.einsum("...nhd,...nd->...nh", A, centers)
            if k > 0:
                shift = shift + torch.einsum(
                    "...noi,...ni->...no", self.z_weights()[k - 1], z_at_center
                )
            b.copy_(-shift)
            z_at_center = torch.full_like(b, torch.log(torch.tensor(2.0)).item())  # softplus(0)

    def z_weights(self) -> list[torch.Tensor]:
        """The non-negative hidden-to-hidden weights ``B_k``, each ``(*ensemble, N, out, in)``."""
        return [F.softplus(raw) for raw in self.z_weights_raw]

    def weights(self, modes: torch.Tensor | None = None) -> Weights:
        """All layer weights (positive ones already mapped through softplus), optionally only
        for the modes ``modes`` (an index tensor; single models only)."""
        w = Weights(
            list(self.x_weights),
            list(self.biases),
            self.z_weights(),
            F.softplus(self.out_z_raw),
            self.out_x,
            self.out_bias,
        )
        if modes is None:
            return w
        if self.ensemble_shape:
            raise ValueError("mode selection is for single models, not ensembles.")
        return Weights(
            *([t[modes] for t in field] if isinstance(field, list) else field[modes] for field in w)
        )

    def forward(self, x: torch.Tensor, modes: torch.Tensor | None = None) -> torch.Tensor:
        """Mode energies ``(*ensemble, N, P)`` at ``x`` of shape ``(*ensemble, P, d)`` or ``(P, d)``
        (only the modes ``modes``, in that order, when given)."""
        w = self.weights(modes)
        x_parts = _pre_activations(w, x)
        z = F.softplus(x_parts[0])
        for B, xa in zip(w.B, x_parts[1:]):
            z = F.softplus(torch.einsum("...noi,...npi->...npo", B, z) + xa)
        out = torch.einsum("...nh,...nph->...np", w.b_out, z)
        return out + torch.einsum("...nd,...pd->...np", w.a_out, x) + w.c.unsqueeze(-1)

    def derivatives(
        self, x: torch.Tensor, *, hessian: bool = True, modes: torch.Tensor | None = None
    ) -> ModeDerivatives:
        """Mode energies, gradients and Hessians in closed form (no autograd graph needed).

        Forward pass carries ``∇a_k`` (the Jacobian of each pre-activation); a backward pass
        gives the adjoints ``λ_k = ∂W/∂z_k``. Since the only non-linearities are the
        element-wise σ, the Hessian is exactly
        ``∇²W = Σ_k Σ_j λ_kj σ''(a_kj) ∇a_kj ∇a_kjᵀ``
        (a sum of non-negative rank-one terms: λ ≥ 0 and σ'' ≥ 0, so it is PSD by construction).
        ``modes``: evaluate only these modes (an index tensor), as in ``forward``.
        """
        w = self.weights(modes)
        x_parts = _pre_activations(w, x)
        first = w.A[0].unsqueeze(-3).expand(*x_parts[0].shape, self.n_inputs)
        pre, grad_pre = [x_parts[0]], [first]  # ∇a_1 = A_0 at every point, (.., N, P, h, d)
        z = F.softplus(pre[0])
        dz = torch.sigmoid(pre[0]).unsqueeze(-1) * grad_pre[0]
        for B, A, xa in zip(w.B, w.A[1:], x_parts[1:]):
            a = torch.einsum("...noi,...npi->...npo", B, z) + xa
            da = torch.einsum("...noi,...npid->...npod", B, dz) + A.unsqueeze(-3)
            pre.append(a)
            grad_pre.append(da)
            z = F.softplus(a)
            dz = torch.sigmoid(a).unsqueeze(-1) * da
        energy = torch.einsum("...nh,...nph->...np", w.b_out, z)
        energy = energy + torch.einsum("...nd,...pd->...np", w.a_out, x) + w.c.unsqueeze(-1)
        gradient = torch.einsum("...nh,...nphd->...npd", w.b_out, dz) + w.a_out.unsqueeze(-2)
        if not hessian:
            return ModeDerivatives(energy, gradient, None)
        # Backward: adjoint of z_K is b_out; of z_k is B_kᵀ (λ_{k+1} σ'(a_{k+1})).
        adjoint = w.b_out.unsqueeze(-2)  # (.., N, 1, h_K), broadcasts over P
        hess = 0.0
        for k in range(len(pre) - 1, -1, -1):
            s = torch.sigmoid(pre[k])
            weight = adjoint * s * (1 - s)  # λ σ''(a), (.., N, P, h)
            hess = hess + torch.einsum(
                "...nphd,...nph,...nphe->...npde", grad_pre[k], weight, grad_pre[k]
            )
            if k > 0:
                adjoint = torch.einsum("...noi,...npo->...npi", w.B[k - 1], adjoint * s)
        return ModeDerivatives(energy, gradient, hess)


class Weights(NamedTuple):
    """Layer weights of an ICNNStack: A (x-weights), b (biases), B (z-weights, ≥ 0) per layer,
    b_out (≥ 0), a_out, c of the output layer; leading dimensions ``(*ensemble, N)``."""

    A: list
    b: list
    B: list
    b_out: torch.Tensor
    a_out: torch.Tensor
    c: torch.Tensor


def _pre_activations(w: Weights, x: torch.Tensor) -> list[torch.Tensor]:
    """x ``(*ensemble, P, d)`` or ``(P, d)`` -> the x-parts ``A_k x + b_k``, ``(*ensemble, N, P, h_k)``."""
    return [torch.einsum("...nhd,...pd->...nph", A, x) + b.unsqueeze(-2) for A, b in zip(w.A, w.b)]
