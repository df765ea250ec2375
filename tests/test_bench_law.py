"""``lse-material bench law``: the loaded-model row computes what the kernel computes.

Speed is the benchmark's business (its JSON puts ``loaded_derivatives`` next to
``closed_form``); the test holds the row to the same numbers and to an output without an
autograd graph, which is what makes it as fast as the kernel.
"""

import torch

import lse_material
from lse_material.bench import bench_law
from lse_material.lse import LSEICNN
from lse_material.potential import derivatives_in_chunks


def test_bench_law_reports_the_loaded_model_row(tmp_path):
    model = LSEICNN(3, 2, (5,), generator=torch.Generator().manual_seed(0))
    path = lse_material.save(model, tmp_path / "m.safetensors")
    result = bench_law(model=path, out=tmp_path / "bench", points=300, repeats=1)
    assert result["seconds"]["loaded_derivatives"] > 0
    ratio = result["loaded_derivatives_over_closed_form"]
    assert ratio == result["seconds"]["loaded_derivatives"] / result["seconds"]["closed_form"]
    loaded = lse_material.load(path)
    x = torch.rand(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = loaded.derivatives(x)  # as the README writes it: no no_grad, no requires_grad_
    assert not out.hessian.requires_grad and not out.energy.requires_grad
    reference = derivatives_in_chunks(model.requires_grad_(False), x)
    assert torch.allclose(out.hessian, reference.hessian, rtol=1e-12, atol=1e-12)
    assert out.energy.numpy().shape == (50,)  # .numpy() without .detach()
