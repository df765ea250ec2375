"""Shared fixtures and the suite's rules.

- ``LSE_FULL=1`` (``make test-full``) runs the slow cases at full size; tests marked ``slow``
  (the full-size figure runs) are skipped without it.
- Tests marked ``fem`` need DOLFINx. Without an importable DOLFINx, modules marked so at the
  top (``pytestmark = pytest.mark.fem``) are skipped without being imported (they import it at
  module level) and marked tests are skipped, so the core suite runs without DOLFINx.
"""

import importlib
import os
import re
from pathlib import Path

import pytest
import torch

FULL = os.environ.get("LSE_FULL") == "1"
EPS = torch.finfo(torch.float64).eps
_FEM_MODULE = re.compile(r"^pytestmark\s*=.*pytest\.mark\.fem\b", re.MULTILINE)
_dolfinx_problem: list[str] = []  # [] untested; [""] importable; [message] not importable


def dolfinx_missing() -> str:
    """Why DOLFINx cannot be imported here ("" if it can); tried once per session."""
    if not _dolfinx_problem:
        try:
            importlib.import_module("lse_material.fem._dolfinx")
            _dolfinx_problem.append("")
        except ImportError as error:
            _dolfinx_problem.append(f"DOLFINx not importable ({error})")
    return _dolfinx_problem[0]


class _SkippedModule(pytest.Module):
    """A test module that needs DOLFINx where it cannot be imported: one skip, no import."""

    def collect(self):
        pytest.skip(dolfinx_missing(), allow_module_level=True)


def pytest_pycollect_makemodule(module_path: Path, parent):
    if _FEM_MODULE.search(module_path.read_text(encoding="utf-8")) and dolfinx_missing():
        return _SkippedModule.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.skip(reason="full-size run: set LSE_FULL=1 (make test-full)")
    for item in items:
        if "slow" in item.keywords and not FULL:
            item.add_marker(slow)
        if "fem" in item.keywords and dolfinx_missing():
            item.add_marker(pytest.mark.skip(reason=dolfinx_missing()))


@pytest.fixture(scope="session")
def default_metamaterial_training(tmp_path_factory):
    """``train_metamaterial`` at the CLI's defaults (two-phase), trained once per session: the
    full-size figure tests (LSE_FULL=1) of the training and of the FE bar share it."""
    from lse_material.training.metamaterial import train_metamaterial

    out = tmp_path_factory.mktemp("metamaterial_default")
    return out, train_metamaterial(out=out)


def pytest_report_header(config):
    problem = _dolfinx_problem[0] if _dolfinx_problem else ""
    full = "LSE_FULL=1: full-size runs" if FULL else "CI size (LSE_FULL=1 for full size)"
    return [full] + ([f"{problem}: FE tests skipped"] if problem else [])


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


# The mechanochemical law at CI size, trained once per session and shared by the tests that
# need one (training, the README's solver example, the spinodal case). The full protocol
# (2000 samples, 1000 + 6000 epochs) is what the README reports.
MECHANOCHEMICAL_CI = {"samples": 1600, "pretrain_epochs": 800, "epochs": 2500, "seed": 0}


@pytest.fixture(scope="session")
def mechanochemical_training(tmp_path_factory):
    """``(folder, MechanochemicalTraining)`` of the session's CI-sized mechanochemical law."""
    from lse_material.training.mechanochemical import train_mechanochemical

    out = tmp_path_factory.mktemp("mechanochemical")
    return out, train_mechanochemical(out=out, plots=True, **MECHANOCHEMICAL_CI)
