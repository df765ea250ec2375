"""The README's own-solver example runs as written (with a small freshly trained model)."""

import re
from pathlib import Path

import pytest
from lse_material.training.mechanochemical import train_mechanochemical

pytestmark = pytest.mark.fem
README = Path(__file__).resolve().parents[1] / "README.md"


def test_own_solver_example_runs(tmp_path, capsys):
    text = README.read_text()
    block = re.search(r"<!-- example: own-solver -->\n```python\n(.*?)```", text, re.S).group(1)
    train_mechanochemical(out=tmp_path, samples=200, epochs=400, plots=False)
    code = block.replace(
        '"results/mechanochemical/model.safetensors"', repr(str(tmp_path / "model.safetensors"))
    )
    namespace = {}
    exec(compile(code, "README own-solver example", "exec"), namespace)
    result = namespace["result"]
    assert result.converged and result.residual_norms[-1] < 1e-8 * result.residual_norms[0]
    assert namespace["law"].min_eigenvalue.x.array.min() > 0  # c = 0, small stretch: stable
