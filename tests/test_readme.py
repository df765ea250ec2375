"""The README's own-solver example runs as written (with a small freshly trained model)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.fem
README = Path(__file__).resolve().parents[1] / "README.md"


def test_own_solver_example_runs(mechanochemical_training, capsys):
    folder, _ = mechanochemical_training
    text = README.read_text()
    block = re.search(r"<!-- example: own-solver -->\n```python\n(.*?)```", text, re.S).group(1)
    code = block.replace(
        '"results/mechanochemical/model.safetensors"', repr(str(folder / "model.safetensors"))
    )
    namespace = {}
    exec(compile(code, "README own-solver example", "exec"), namespace)
    result = namespace["result"]
    assert result.converged and result.residual_norms[-1] < 1e-8 * result.residual_norms[0]
    assert namespace["law"].min_eigenvalue.x.array.min() > 0  # c = 0, small stretch: stable
