"""Shared fixtures. LSE_FULL=1 runs the slow cases at full size."""

import os

import pytest
import torch

FULL = os.environ.get("LSE_FULL") == "1"
EPS = torch.finfo(torch.float64).eps


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def autograd_derivatives(model, x):
    """Energy, gradient, Hessian of ``model(x)`` by autograd (the oracle), x ``(P, d)``."""
    x = x.clone().requires_grad_(True)
    energy = model(x)
    (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=True)
    hess = torch.stack(
        [torch.autograd.grad(grad[:, j].sum(), x, retain_graph=True)[0] for j in range(x.shape[1])],
        dim=1,
    )
    return energy.detach(), grad.detach(), hess.detach()
