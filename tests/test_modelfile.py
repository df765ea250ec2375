"""Model files: round trip, metadata, and one clear error per kind of bad file."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import lse_material
from lse_material import LSEICNN, ModelFileError, modelfile
from lse_material.errors import LegacyModelFileWarning
from lse_material.modelcard import model_card


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
    """Tamper with a model file and re-hash it (a consistent file, so later checks are hit)."""
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["lse_material"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if header_change:
        header_change(header)
    if tensor_change:
        tensor_change(tensors)
    path.write_bytes(modelfile._serialize(header, tensors))


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


def test_hash_is_the_identity_and_inspect_prints_it(model, tmp_path):
    path = lse_material.save(model, tmp_path / "m.safetensors")
    loaded = lse_material.load(path)
    digest = modelfile.model_hash(path)
    assert len(digest) == 64 and loaded.card["sha256"] == digest
    assert f"sha256       {digest}" in model_card(path)
    # The hash is of the content: re-saving the loaded model gives the same identity ...
    assert modelfile.model_hash(lse_material.save(loaded, tmp_path / "again.safetensors")) == digest
    # ... and one changed weight another one.
    with torch.no_grad():
        loaded.rho_raw.add_(1e-12)
    assert modelfile.model_hash(lse_material.save(loaded, tmp_path / "b.safetensors")) != digest


@pytest.mark.parametrize("where", ["weights", "metadata", "safetensors header"])
def test_a_flipped_bit_is_caught(model, tmp_path, where):
    path = lse_material.save(model, tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    text = data[8 : 8 + n].decode()
    position = {
        "weights": len(data) - 3,  # inside the last tensor's bytes
        "metadata": 8 + text.index("input_names") + 2,  # a key of the lse_material header
        "safetensors header": 8 + text.index('"shape"') + 2,  # a key of a tensor entry
    }[where]
    data[position] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="m.safetensors"):
        lse_material.load(path)


def test_non_finite_weights_are_refused(model, tmp_path):
    with torch.no_grad():
        model.modes.biases[0][1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        lse_material.save(model, tmp_path / "m.safetensors")
    path = lse_material.save(LSEICNN(2, 3, (5, 4)), tmp_path / "m.safetensors")
    _rewrite(path, tensor_change=lambda t: t["modes.out_bias"].fill_(float("inf")))
    with pytest.raises(ModelFileError, match=r"non-finite weights .*'modes.out_bias': 3"):
        lse_material.load(path)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("nonsense", "must map input names"),
        ({"a": [1, 0]}, "low < high"),
        ({"a": [0, float("inf")]}, "finite"),
        ({"a": [0]}, "finite"),
        ({"z": [0, 1]}, "'z', which is not an input"),
    ],
)
def test_bad_training_boxes_are_refused(model, tmp_path, box, message):
    with pytest.raises(ModelFileError, match=message):
        lse_material.save(model, tmp_path / "m.safetensors", training_box=box)
    path = lse_material.save(model, tmp_path / "m.safetensors")
    _rewrite(path, header_change=lambda h: h.update(training_box=box))
    with pytest.raises(ModelFileError, match=message):
        lse_material.load(path)


def test_architecture_dtype_must_match_the_tensors(model, tmp_path):
    path = lse_material.save(model, tmp_path / "m.safetensors")
    _rewrite(path, header_change=lambda h: h["architecture"].update(dtype="float32"))
    with pytest.raises(ModelFileError, match="dtype F64, the architecture's dtype is F32"):
        lse_material.load(path)


def test_oversized_architecture_is_refused_before_allocating(model, tmp_path):
    path = lse_material.save(model, tmp_path / "m.safetensors")
    _rewrite(
        path, header_change=lambda h: h["architecture"].update(n_modes=20, hidden=[1500, 1500])
    )
    with pytest.raises(ModelFileError, match="needs 45210087 numbers, more than MAX_PARAMETERS"):
        lse_material.load(path)


def _write_legacy(path, model):
    """A format-1 file as lse-material 0.1 wrote it: no hash, json.dumps with spaces."""
    header = {
        "format_version": 1,
        "class": "LSEICNN",
        "architecture": model.architecture(),
        "input_names": list(model.input_names),
        "training_box": {"a": [0, 1]},
        "versions": {"lse_material": "0.1.0"},
    }
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, path, metadata={"lse_material": json.dumps(header)})


def test_legacy_file_loads_with_a_warning_that_says_how_to_resave(model, tmp_path):
    path = tmp_path / "old.safetensors"
    _write_legacy(path, model)
    with pytest.warns(LegacyModelFileWarning, match=r"lse_material.save\(lse_material.load"):
        old = lse_material.load(path)
    lse_material.save(old, path)  # what the warning says to do
    new = lse_material.load(path)  # no warning (the suite makes one an error)
    x = torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(new(x), model(x))
    assert new.card["format_version"] == modelfile.FORMAT_VERSION
    assert new.training_box == {"a": (0.0, 1.0)}


def test_loaded_model_builds_no_autograd_graph(model, tmp_path):
    loaded = lse_material.load(lse_material.save(model, tmp_path / "m.safetensors"))
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.randn(4, 2, dtype=torch.float64)
    assert not loaded(x).requires_grad
    assert not loaded.derivatives(x).hessian.requires_grad
    loaded.requires_grad_(True)  # fine-tuning opts back in
    assert loaded(x).requires_grad
