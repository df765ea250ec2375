"""Model files: safetensors weights + one JSON metadata header. ``load`` never unpickles.

The header (safetensors metadata key ``"lse_material"``) holds::

    {"format_version": 1, "class": "LSEICNN", "architecture": {...},
     "input_names": [...], "input_units": [...], "output": {"name": ..., "units": ...},
     "training_box": {name: [low, high]}, "training": {...}, "versions": {...}, ...}

Normalisation lives in the weights (as buffers), so a loaded model is complete.
Writes are atomic: a temporary file in the target folder, then ``os.replace``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = ["save", "load", "read_metadata", "ModelFileError", "FORMAT_VERSION", "MODEL_CLASSES"]

FORMAT_VERSION = 1
HEADER_KEY = "lse_material"
# class name in the file -> "module:attribute". Classes provide `architecture() -> dict` and
# `from_architecture(arch: dict) -> instance`.
MODEL_CLASSES = {
    "LSEICNN": "lse_material.lse:LSEICNN",
    "HiddenStateMaterial": "lse_material.hidden_state:HiddenStateMaterial",
}


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")


def _versions() -> dict[str, str]:
    import safetensors

    from lse_material import __version__

    return {
        "lse_material": __version__,
        "torch": torch.__version__.split("+")[0],
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def save(model: torch.nn.Module, path, **metadata: Any) -> Path:
    """Write ``model`` (a class listed in MODEL_CLASSES) and ``metadata`` atomically to ``path``.

    ``metadata`` keys are stored as given (JSON-serialisable: input_units, output,
    training_box, training summary, ...). The model's ``card`` (if any) is merged under them.
    Returns the path.
    """
    path = Path(path)
    name = type(model).__name__
    if name not in MODEL_CLASSES:
        raise ValueError(f"cannot save a {name}; savable classes: {sorted(MODEL_CLASSES)}.")
    header = dict(getattr(model, "card", {}))
    header.update(metadata)
    header.update(
        format_version=FORMAT_VERSION,
        **{"class": name},
        architecture=model.architecture(),
        versions=_versions(),
    )
    header.setdefault("input_names", list(getattr(model, "input_names", [])))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={HEADER_KEY: json.dumps(header)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path) -> dict[str, Any]:
    """The JSON header of a model file, validated (format version, class, required keys)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(HEADER_KEY)
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(
            path, f"not a readable safetensors file ({error}); truncated or foreign?"
        ) from error
    if raw is None:
        raise ModelFileError(
            path,
            f"a safetensors file without the '{HEADER_KEY}' header: not an lse-material model.",
        )
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ModelFileError(path, f"corrupt metadata header ({error}).") from error
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            path,
            f"format version {version!r}; this lse-material reads version {FORMAT_VERSION}. "
            "Re-export the model with a matching lse-material.",
        )
    missing = [k for k in ("class", "architecture", "input_names") if k not in header]
    if missing:
        raise ModelFileError(path, f"metadata header misses {missing}.")
    if header["class"] not in MODEL_CLASSES:
        raise ModelFileError(
            path, f"unknown model class {header['class']!r}; known: {sorted(MODEL_CLASSES)}."
        )
    return header


def load(path, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a model file; the model's ``card`` attribute holds the metadata header.

    Raises ModelFileError (a ValueError) for a truncated, foreign or wrong-version file, missing
    keys or tensors of the wrong shape, naming the file and the problem.
    """
    header = read_metadata(path)
    module, attr = MODEL_CLASSES[header["class"]].split(":")
    cls = getattr(importlib.import_module(module), attr)
    try:
        model = cls.from_architecture(header["architecture"])
    except (TypeError, ValueError, KeyError) as error:
        raise ModelFileError(
            path, f"bad architecture {header['architecture']} ({error})."
        ) from error
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ModelFileError(path, f"weights unreadable ({error}); truncated?") from error
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ModelFileError(
            path, f"weights do not match the architecture: missing {missing}, unexpected {extra}."
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise ModelFileError(
                path,
                f"tensor {key!r} has shape {tuple(value.shape)}, architecture needs {tuple(expected[key].shape)}.",
            )
    model.load_state_dict(tensors)
    model.card = header
    return model.to(device)
