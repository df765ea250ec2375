"""A stack of input convex neural networks (ICNNs), one per mode, evaluated as one batch.

Layer ``k`` of all ``N`` modes is one tensor of shape ``(*ensemble, N, out, in)``; the
leading ``ensemble`` dimension (empty for a single model) holds independent copies, e.g. the
random seeds of a study, so a whole study is one batched forward. docs/science.md §1, eq. 5:

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

__all__ = ["DerivativeWeights", "HessianParts", "ICNNStack", "ModeDerivatives"]


class HessianParts(NamedTuple):
    """Energies, gradients and the mode Hessians as weighted sums of rank-one terms:

    ``∇²W_n = Σ_j fixed_weights[.., n, p, j] fixed_outer[.., n, j] +
    Σ_k Σ_j row_weights[k][.., n, p, j] G ⊗ G``, ``G = columns[k][.., n, p, :, j]``.

    With ``k`` differentiated inputs: energy ``(*ensemble, N, P)``; gradient
    ``(*ensemble, N, P, k)``; fixed_weights ``(*ensemble, N, P, h_1)`` and fixed_outer
    ``(*ensemble, N, h_1, k, k)`` (first layer: the same outer products at every point);
    columns[k] ``(*ensemble, N, P, k, h_j)`` (the Jacobians of the later layers'
    pre-activations, one column per unit) and row_weights[k] ``(*ensemble, N, P, h_j)``. All
    weights are ≥ 0. Without a Hessian request, fixed_weights and fixed_outer are None and the
    lists are empty.
    """

    energy: torch.Tensor
    gradient: torch.Tensor
    fixed_weights: torch.Tensor | None
    fixed_outer: torch.Tensor | None
    columns: list
    row_weights: list

    def hessian(self, mode_weights: torch.Tensor | None = None) -> torch.Tensor:
        """The mode Hessians ``(*ensemble, N, P, k, k)``, or with ``mode_weights (*ensemble, N, P)``
        their weighted sum ``Σ_n m_n ∇²W_n``, ``(*ensemble, P, k, k)``, without forming them.

        The fixed part is one matrix product over all points; each later layer is one batched
        product ``(G w) Gᵀ`` of its columns.
        """
        if self.fixed_outer is None:
            raise ValueError("these parts were computed without the Hessian (hessian=False).")
        k = self.gradient.shape[-1]
        if mode_weights is None:
            hess = (self.fixed_weights @ self.fixed_outer.flatten(-2)).unflatten(-1, (k, k))
            for G, weights in zip(self.columns, self.row_weights):
                hess = hess + (G * weights.unsqueeze(-2)) @ G.mT
            return hess
        m = mode_weights.unsqueeze(-1)
        fixed = (m * self.fixed_weights).transpose(-3, -2).flatten(-2)  # (.., P, N·h_1)
        hess = (fixed @ self.fixed_outer.flatten(-4, -3).flatten(-2)).unflatten(-1, (k, k))
        for G, weights in zip(self.columns, self.row_weights):
            hess = hess + ((G * (m * weights).unsqueeze(-2)) @ G.mT).sum(-4)
        return hess


class DerivativeWeights(NamedTuple):
    """What the closed-form pass needs, derived from the parameters once per evaluation.

    layers: the layer weights (``Weights``) for the forward pass. A, a_out: the x-weights of
    every layer ``(*ensemble, N, h_j, k)`` and of the output ``(*ensemble, N, k)`` restricted to
    the ``k`` differentiated inputs and multiplied by their chain-rule scale (so derivatives
    come out in the caller's units). T ``(*ensemble, N, h_1 + 1, k·h_2)``: the fixed map
    ``[σ'(a_1), 1] -> G_2`` (None for one hidden layer); fixed_outer
    ``(*ensemble, N, h_1, k, k)``: the outer products ``A_0j ⊗ A_0j``.
    """

    layers: Weights
    A: list
    a_out: torch.Tensor
    T: torch.Tensor | None
    fixed_outer: torch.Tensor


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
        """Mode energies, gradients and Hessians in closed form (see ``hessian_parts``).

        ``modes``: evaluate only these modes (an index tensor), as in ``forward``.
        """
        parts = self.hessian_parts(x, self.derivative_weights(modes), hessian=hessian)
        return ModeDerivatives(parts.energy, parts.gradient, parts.hessian() if hessian else None)

    def derivative_weights(
        self,
        modes: torch.Tensor | None = None,
        wrt: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ) -> DerivativeWeights:
        """The weights of ``hessian_parts`` for the modes ``modes`` (index tensor or None for
        all), differentiating with respect to the inputs ``wrt`` (index tensor or None for all),
        each derivative multiplied by ``scale (k,)`` (the chain rule of an input normalisation)."""
        layers = self.weights(modes)
        A, a_out = layers.A, layers.a_out
        if wrt is not None:
            A, a_out = [a[..., wrt] for a in A], a_out[..., wrt]
        if scale is not None:
            A, a_out = [a * scale for a in A], a_out * scale
        T = None
        if len(A) > 1:  # T[i, :, o] = B_1[o, i] A_0[i, :];  T[h_1, :, o] = A_1[o, :]
            T = A[0].unsqueeze(-1) * layers.B[0].mT.unsqueeze(-2)  # (.., N, h_1, k, h_2)
            T = torch.cat([T, A[1].mT.unsqueeze(-3)], dim=-3).flatten(-2)
        fixed_outer = A[0].unsqueeze(-1) * A[0].unsqueeze(-2)
        return DerivativeWeights(layers, A, a_out, T, fixed_outer)

    def hessian_parts(
        self, x: torch.Tensor, weights: DerivativeWeights, *, hessian: bool = True
    ) -> HessianParts:
        """Energies, gradients and the Hessians of all modes as sums of rank-one terms.

        x ``(*ensemble, P, d)`` or ``(P, d)``; weights from ``derivative_weights``. Forward pass:
        pre-activations ``a_j`` and, for layers j ≥ 2, their Jacobians
        ``G_j = ∇a_j = B_{j-1} diag(σ'(a_{j-1})) G_{j-1} + A_{j-1}`` (``G_1 = A_0`` is the same at
        every point). Backward pass: adjoints ``λ_j = ∂W/∂z_j`` (``λ_K = b_out``,
        ``λ_{j-1} = B_{j-1}ᵀ (λ_j σ'(a_j))``) give ``∇W = a_out + Σ_j A_{j-1}ᵀ (λ_j σ'(a_j))``.
        The element-wise σ are the only non-linearities, so the Hessian is exactly

            ∇²W = Σ_j Σ_u λ_ju σ''(a_ju) G_ju ⊗ G_ju

        (non-negative weights: PSD by construction).
        """
        w = weights.layers
        x_parts = _pre_activations(w, x)
        sig, z, columns = [], None, []
        for j, xa in enumerate(x_parts):
            a = xa if j == 0 else xa + z @ w.B[j - 1].mT
            if hessian and j == 1:  # G_2 = [σ'(a_1), 1] @ T: one matrix product over the points
                s = torch.cat([sig[0], torch.ones_like(sig[0][..., :1])], dim=-1)
                columns.append((s @ weights.T).unflatten(-1, (weights.a_out.shape[-1], -1)))
            elif hessian and j > 1:  # G_j = (G_{j-1} diag σ'(a_{j-1})) B_{j-1}ᵀ + A_{j-1}ᵀ
                G = columns[-1] * sig[j - 1].unsqueeze(-2)  # (.., N, P, k, h_{j-1})
                G = (G.flatten(-3, -2) @ w.B[j - 1].mT).unflatten(-2, G.shape[-3:-1])
                columns.append(G + weights.A[j].mT.unsqueeze(-3))
            sig.append(torch.sigmoid(a))
            z = F.softplus(a)
        energy = (z @ w.b_out.unsqueeze(-1)).squeeze(-1)
        energy = energy + torch.einsum("...nd,...pd->...np", w.a_out, x) + w.c.unsqueeze(-1)
        # Backward: λ_K = b_out (the same at every point), λ_{j-1} = B_{j-1}ᵀ (λ_j σ'(a_j)).
        adjoint = w.b_out.unsqueeze(-2)  # (.., N, 1, h_K)
        gradient = weights.a_out.unsqueeze(-2)  # (.., N, 1, k)
        row_weights = []
        for j in range(len(sig) - 1, -1, -1):
            u = adjoint * sig[j]  # λ_j σ'(a_j), (.., N, P, h_j)
            gradient = gradient + u @ weights.A[j]
            if hessian:
                row_weights.insert(0, u * (1 - sig[j]))  # λ σ''(a) = λ σ'(a) (1 - σ'(a))
            if j > 0:
                adjoint = u @ w.B[j - 1]
        if not hessian:
            return HessianParts(energy, gradient, None, None, [], [])
        return HessianParts(
            energy, gradient, row_weights[0], weights.fixed_outer, columns, row_weights[1:]
        )


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
