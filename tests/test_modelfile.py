"""Model files: round trip, metadata, and one clear error per kind of bad file."""

import json

import pytest
import torch
from safetensors.torch import save_file

import lse_material
from lse_material import LSEICNN, ModelFileError


@pytest.fixture
def model():
    m = LSEICNN(2, 3, (5, 4), input_names=("a", "b"), generator=torch.Generator().manual_seed(0))
    m.set_normalization(
        input_shift=[1.0, 2.0], input_scale=[0.5, 4.0], energy_shift=3.0, energy_scale=2.0
    )
    return m


def test_round_trip_keeps_function_and_metadata(model, tmp_path):
    path = lse_material.save(
        model,
        tmp_path / "m.safetensors",
        training_box={"a": [0, 1], "b": [-1, 1]},
        input_units=["1", "m"],
    )
    loaded = lse_material.load(path)
    x = torch.randn(7, 2, dtype=torch.float64)
    assert torch.equal(model(x), loaded(x))
    assert loaded.input_names == ("a", "b")
    assert loaded.training_box == {"a": (0.0, 1.0), "b": (-1.0, 1.0)}
    assert loaded.card["versions"]["torch"]
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves nothing behind


def test_truncated_file(model, tmp_path):
    path = lse_material.save(model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="m.safetensors"):
        lse_material.load(path)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        lse_material.load(text)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(ModelFileError, match="not an lse-material model"):
        lse_material.load(foreign)
    with pytest.raises(FileNotFoundError):
        lse_material.load(tmp_path / "missing.safetensors")


def _rewrite(path, header_change=None, tensor_change=None):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["lse_material"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if header_change:
        header_change(header)
    if tensor_change:
        tensor_change(tensors)
    save_file(tensors, path, metadata={"lse_material": json.dumps(header)})


def test_wrong_version_missing_keys_and_shape_mismatch(model, tmp_path):
    path = lse_material.save(model, tmp_path / "m.safetensors")
    _rewrite(path, header_change=lambda h: h.update(format_version=99))
    with pytest.raises(ModelFileError, match="format version 99"):
        lse_material.load(path)
    path = lse_material.save(model, tmp_path / "m.safetensors")
    _rewrite(path, header_change=lambda h: h.pop("architecture"))
    with pytest.raises(ModelFileError, match="misses"):
        lse_material.load(path)
    path = lse_material.save(model, tmp_path / "m.safetensors")
    _rewrite(
        path, tensor_change=lambda t: t.update(gate_weights=torch.zeros(5, dtype=torch.float64))
    )
    with pytest.raises(ModelFileError, match="gate_weights"):
        lse_material.load(path)
    path = lse_material.save(model, tmp_path / "m.safetensors")
    _rewrite(path, tensor_change=lambda t: t.pop("rho_raw"))
    with pytest.raises(ModelFileError, match="missing"):
        lse_material.load(path)


def test_ensembles_are_saved_one_member_at_a_time(tmp_path):
    ensemble = LSEICNN(1, 2, (3,), ensemble=4)
    with pytest.raises(ValueError, match="member"):
        lse_material.save(ensemble, tmp_path / "e.safetensors")
    x = torch.randn(5, 1, dtype=torch.float64)
    single = lse_material.load(lse_material.save(ensemble.member(2), tmp_path / "e.safetensors"))
    assert torch.allclose(single(x), ensemble(x)[2], rtol=0, atol=1e-15)
