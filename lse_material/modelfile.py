"""Model files: safetensors weights + one JSON metadata header. ``load`` never unpickles.

The header (safetensors metadata key ``"lse_material"``) holds::

    {"format_version": 2, "class": "LSEICNN", "architecture": {...},
     "input_names": [...], "input_units": [...], "output": {"name": ..., "units": ...},
     "training_box": {name: [low, high]}, "training": {...}, "versions": {...},
     "sha256": "<64 hex digits>", ...}

Normalisation lives in the weights (as buffers), so a loaded model is complete.

Integrity [ours]. ``sha256`` is the SHA-256 of the rest of the header in canonical JSON
(sorted keys, no whitespace, ASCII), a NUL byte, then for every tensor in name order the
canonical JSON ``[name, dtype, shape]`` followed by its raw little-endian bytes. It is the
model's identity (``model_hash``; ``inspect`` prints it). ``load`` recomputes it, and requires
the stored header to be exactly its canonical JSON, so a flipped bit anywhere in the file
(the safetensors JSON, the metadata, the weights) is a ``ModelFileError``. Format-1 files
(written before the hash) load with a ``LegacyModelFileWarning``.

Before anything is allocated, ``load`` checks the file size and the safetensors header length,
builds the architecture on torch's ``meta`` device (no memory) and compares every tensor's
name, dtype and shape with the file's header. Size ceilings (module constants):
``MAX_PARAMETERS`` numbers in all tensors (4 M: a constitutive law is far smaller) and
``MAX_HEADER_BYTES`` of safetensors JSON header. Also refused: non-finite weights, a training
box with unknown input names, non-finite bounds or low >= high.

The first ``load`` in a process pays about 3 s once: torch's first operation on a ``meta``
tensor imports its meta kernels.

Writes are atomic (``lse_material.atomic``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import platform
import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import safetensors.torch
import torch
from safetensors import SafetensorError

from lse_material.atomic import write_bytes
from lse_material.errors import LegacyModelFileWarning, ModelFileError

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "MAX_PARAMETERS",
    "MODEL_CLASSES",
    "ModelFileError",
    "load",
    "model_hash",
    "read_metadata",
    "save",
]

FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1  # no integrity hash: loads with a LegacyModelFileWarning
HEADER_KEY = "lse_material"
MAX_PARAMETERS = 4_000_000
MAX_HEADER_BYTES = 16 * 2**20
MAX_ARCHITECTURE_LIST = 64  # longest list in an architecture (bounds the meta build's time)
# class name in the file -> "module:attribute". Classes provide `architecture() -> dict` and
# `from_architecture(arch: dict) -> instance`.
MODEL_CLASSES = {
    "LSEICNN": "lse_material.lse:LSEICNN",
    "HiddenStateMaterial": "lse_material.hidden_state:HiddenStateMaterial",
}
# safetensors dtype codes of the torch dtypes a model may hold.
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_ARCH_DTYPES = ("float64", "float32")


class _Entry(NamedTuple):
    """One tensor of a file: safetensors dtype code, shape, raw bytes."""

    code: str
    shape: tuple[int, ...]
    data: memoryview


class _Parsed(NamedTuple):
    """A model file parsed and verified, nothing decoded: header dict, tensor entries, bytes."""

    header: dict[str, Any]
    entries: dict[str, _Entry]
    raw: bytes


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _digest(header: dict[str, Any], entries: dict[str, _Entry]) -> str:
    """The SHA-256 content hash (module docstring) of a header (its sha256 key excluded)."""
    h = hashlib.sha256(_canonical({k: v for k, v in header.items() if k != "sha256"}).encode())
    h.update(b"\0")
    for name in sorted(entries):
        e = entries[name]
        h.update(_canonical([name, e.code, list(e.shape)]).encode())
        h.update(e.data)
    return h.hexdigest()


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
    The header gets the content hash ``sha256`` (module docstring). Returns the path.
    """
    path = Path(path)
    name = type(model).__name__
    if name not in MODEL_CLASSES:
        raise ValueError(f"cannot save a {name}; savable classes: {sorted(MODEL_CLASSES)}.")
    header = {k: v for k, v in getattr(model, "card", {}).items() if k != "sha256"}
    header.update(metadata)
    header.update(
        format_version=FORMAT_VERSION,
        **{"class": name},
        architecture=model.architecture(),
        versions=_versions(),
    )
    header.setdefault("input_names", list(getattr(model, "input_names", [])))
    header = json.loads(_canonical(header))  # what load will read (tuples -> lists, ...)
    _check_header(path, {**header, "sha256": "0" * 64})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise ValueError(f"cannot save {path}: tensors {bad} hold NaN or inf values.")
    return write_bytes(path, _serialize(header, tensors))


def _serialize(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bytes:
    """The file's bytes: ``header`` (JSON-ready) with its content hash ``sha256`` added, and
    ``tensors`` (contiguous, CPU). Checks nothing (``save`` does); tests craft files with it.
    """
    header = {k: v for k, v in header.items() if k != "sha256"}
    unhashed = safetensors.torch.save(tensors, metadata={HEADER_KEY: _canonical(header)})
    header["sha256"] = _digest(header, _split("<bytes>", unhashed)[1])
    return safetensors.torch.save(tensors, metadata={HEADER_KEY: _canonical(header)})


def _split(path, raw: bytes) -> tuple[str, dict[str, _Entry]]:
    """The safetensors layout of ``raw``, checked: (metadata string, tensor entries).

    The 8-byte little-endian header length, the JSON header (tensor dtype, shape, offsets), and
    a data section the offsets tile exactly.
    """
    if len(raw) < 8:
        raise ModelFileError(
            path, f"{len(raw)} bytes: not a readable safetensors file; truncated or foreign?"
        )
    n = int.from_bytes(raw[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > len(raw):
        raise ModelFileError(
            path,
            f"the safetensors header claims {n} bytes (ceiling {MAX_HEADER_BYTES}, file "
            f"{len(raw)} bytes): not a readable safetensors file; truncated or foreign?",
        )
    try:
        table = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(
            path, f"not a readable safetensors file (header: {error}); truncated or foreign?"
        ) from error
    if not isinstance(table, dict):
        raise ModelFileError(path, "not a readable safetensors file (header is not an object).")
    meta = table.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or HEADER_KEY not in meta:
        raise ModelFileError(
            path,
            f"a safetensors file without the '{HEADER_KEY}' header: not an lse-material model.",
        )
    if set(meta) != {HEADER_KEY} or not isinstance(meta[HEADER_KEY], str):
        raise ModelFileError(path, f"unexpected safetensors metadata keys {sorted(meta)}.")
    data = memoryview(raw)[8 + n :]
    entries, end = {}, 0
    for name, spec in sorted(table.items(), key=lambda kv: _offsets(path, kv)[0]):
        start, stop = _offsets(path, (name, spec))
        code, shape = spec.get("dtype"), spec.get("shape")
        if (
            code not in _DTYPES
            or not _is_shape(shape)
            or set(spec) != {"dtype", "shape", "data_offsets"}
        ):
            raise ModelFileError(path, f"tensor {name!r}: bad safetensors entry {spec}.")
        size = math.prod(shape) * _DTYPES[code].itemsize
        if start != end or stop - start != size:
            raise ModelFileError(
                path, f"tensor {name!r}: data offsets {[start, stop]} do not fit (truncated?)."
            )
        entries[name], end = _Entry(code, tuple(shape), data[start:stop]), stop
    if end != len(data):
        raise ModelFileError(
            path, f"the data section has {len(data)} bytes, the tensors {end} (truncated?)."
        )
    return meta[HEADER_KEY], entries


def _offsets(path, item) -> tuple[int, int]:
    name, spec = item
    offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2 and _is_shape(offsets)):
        raise ModelFileError(path, f"tensor {name!r}: bad safetensors entry {spec}.")
    return offsets[0], offsets[1]


def _is_shape(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    )


def _parse(path) -> _Parsed:
    """Read, parse and verify a model file (layout, header, hash); decodes no tensor."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file.")
    ceiling = 8 + MAX_HEADER_BYTES + 8 * MAX_PARAMETERS
    size = path.stat().st_size
    if size > ceiling:
        raise ModelFileError(
            path, f"{size} bytes, more than a model file may have ({ceiling}; MAX_PARAMETERS)."
        )
    raw = path.read_bytes()
    text, entries = _split(path, raw)
    count = sum(math.prod(e.shape) for e in entries.values())
    if count > MAX_PARAMETERS:
        raise ModelFileError(path, f"{count} numbers, more than MAX_PARAMETERS={MAX_PARAMETERS}.")
    try:
        header = json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelFileError(path, f"corrupt metadata header ({error}).") from error
    if not isinstance(header, dict):
        raise ModelFileError(path, "corrupt metadata header (not a JSON object).")
    _check_header(path, header)
    content = _digest(header, entries)
    if header["format_version"] == LEGACY_FORMAT_VERSION:
        warnings.warn(
            f"{path}: a format-{LEGACY_FORMAT_VERSION} model file without an integrity hash, "
            "loaded unverified. Re-save it to add one: "
            "lse_material.save(lse_material.load(path), path).",
            LegacyModelFileWarning,
            stacklevel=3,
        )
        header["sha256"] = content
    elif text != _canonical(header):
        raise ModelFileError(
            path, "the metadata header is not in canonical form: the file is corrupted."
        )
    elif header["sha256"] != content:
        raise ModelFileError(
            path,
            f"integrity check failed: the content hashes to {content}, the header records "
            f"{header['sha256']}; the file is corrupted or was edited. Export it again.",
        )
    return _Parsed(header, entries, raw)


def _check_header(path, header: dict[str, Any]) -> None:
    """Format version, class, required keys, hash, input names, dtype and training box."""
    version = header.get("format_version")
    if version not in (FORMAT_VERSION, LEGACY_FORMAT_VERSION) or isinstance(version, bool):
        raise ModelFileError(
            path,
            f"format version {version!r}; this lse-material reads versions "
            f"{LEGACY_FORMAT_VERSION} and {FORMAT_VERSION}. "
            "Re-export the model with a matching lse-material.",
        )
    required = ["class", "architecture", "input_names"]
    required += ["sha256"] if version == FORMAT_VERSION else []
    missing = [k for k in required if k not in header]
    if missing:
        raise ModelFileError(path, f"metadata header misses {missing}.")
    if version == FORMAT_VERSION and not (
        isinstance(header["sha256"], str) and re.fullmatch("[0-9a-f]{64}", header["sha256"])
    ):
        raise ModelFileError(path, f"sha256 {header['sha256']!r} is not 64 hex digits.")
    if header["class"] not in MODEL_CLASSES:
        raise ModelFileError(
            path, f"unknown model class {header['class']!r}; known: {sorted(MODEL_CLASSES)}."
        )
    names = header["input_names"]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)) or len(
        set(names)
    ) != len(names):
        raise ModelFileError(path, f"input_names {names!r} must be a list of distinct strings.")
    arch = header["architecture"]
    if not isinstance(arch, dict) or arch.get("dtype") not in _ARCH_DTYPES:
        raise ModelFileError(
            path, f"bad architecture {arch!r}: a JSON object with dtype in {_ARCH_DTYPES}."
        )
    if arch.get("input_names", names) != names:
        raise ModelFileError(
            path, f"architecture input_names {arch['input_names']} differ from input_names {names}."
        )
    _check_box(path, header.get("training_box"), names)


def _check_box(path, box, names: list[str]) -> None:
    """None, or {input name: [low, high]} with finite low < high."""
    if box is None:
        return
    if not isinstance(box, dict):
        raise ModelFileError(path, f"training_box {box!r} must map input names to [low, high].")
    for name, bounds in box.items():
        if name not in names:
            raise ModelFileError(
                path, f"training_box names {name!r}, which is not an input; inputs: {names}."
            )
        ok = (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
            and all(math.isfinite(b) for b in bounds)
        )
        if not ok or not bounds[0] < bounds[1]:
            raise ModelFileError(
                path, f"training_box[{name!r}] = {bounds!r}; needs finite [low, high], low < high."
            )


def read_metadata(path) -> dict[str, Any]:
    """The JSON header of a model file, verified (layout, version, class, keys, box, hash).

    Its ``sha256`` is the content hash (computed for a format-1 file, which has none stored).
    """
    return _parse(path).header


def model_hash(path) -> str:
    """The SHA-256 content hash of a model file (its identity), verified (module docstring)."""
    return read_metadata(path)["sha256"]


def _model_class(header: dict[str, Any]) -> type:
    module, attr = MODEL_CLASSES[header["class"]].split(":")
    return getattr(importlib.import_module(module), attr)


def _expected_tensors(path, header: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype code, shape) the architecture needs, built on ``meta`` (no memory)."""
    arch = header["architecture"]
    too_long = [
        k for k, v in arch.items() if isinstance(v, list) and len(v) > MAX_ARCHITECTURE_LIST
    ]
    if too_long:
        raise ModelFileError(
            path, f"architecture lists {too_long} longer than {MAX_ARCHITECTURE_LIST}."
        )
    try:
        with torch.device("meta"):
            model = _model_class(header).from_architecture(arch)
    except (TypeError, ValueError, KeyError, RuntimeError, OverflowError) as error:
        raise ModelFileError(path, f"bad architecture {arch} ({error}).") from error
    expected = {
        k: (_CODES.get(v.dtype, str(v.dtype)), tuple(v.shape))
        for k, v in model.state_dict().items()
    }
    count = sum(math.prod(shape) for _, shape in expected.values())
    if count > MAX_PARAMETERS:
        raise ModelFileError(
            path,
            f"architecture {arch} needs {count} numbers, more than MAX_PARAMETERS="
            f"{MAX_PARAMETERS}; refused before allocating.",
        )
    return expected


def _check_tensors(path, expected: dict, entries: dict[str, _Entry]) -> None:
    missing, extra = sorted(set(expected) - set(entries)), sorted(set(entries) - set(expected))
    if missing or extra:
        raise ModelFileError(
            path, f"weights do not match the architecture: missing {missing}, unexpected {extra}."
        )
    for key, (code, shape) in expected.items():
        entry = entries[key]
        if entry.shape != shape:
            raise ModelFileError(
                path, f"tensor {key!r} has shape {entry.shape}, architecture needs {shape}."
            )
        if entry.code != code:
            raise ModelFileError(
                path, f"tensor {key!r} has dtype {entry.code}, the architecture's dtype is {code}."
            )


def load(path, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load and verify a model file; the model's ``card`` attribute holds the metadata header.

    The parameters come with ``requires_grad=False`` (evaluation builds no autograd graph);
    call ``model.requires_grad_(True)`` to fine-tune. ``model.card["sha256"]`` is the hash.

    Raises ModelFileError (a ValueError) naming the file and the problem for: a truncated,
    foreign, corrupted (hash mismatch) or wrong-version file, missing keys, a bad training box,
    an architecture beyond MAX_PARAMETERS, tensors of the wrong name, shape or dtype, or
    non-finite weights. Warns LegacyModelFileWarning for a format-1 file.
    """
    parsed = _parse(path)
    header = parsed.header
    _check_tensors(path, _expected_tensors(path, header), parsed.entries)
    try:
        tensors = safetensors.torch.load(parsed.raw)
    except SafetensorError as error:
        raise ModelFileError(path, f"weights unreadable ({error}).") from error
    bad = {
        k: int((~v.isfinite()).sum())
        for k, v in tensors.items()
        if v.is_floating_point() and not v.isfinite().all()
    }
    if bad:
        raise ModelFileError(path, f"non-finite weights (NaN or inf; tensor: count) {bad}.")
    try:
        model = _model_class(header).from_architecture(header["architecture"])
        model.load_state_dict(tensors)
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        raise ModelFileError(
            path, f"bad architecture {header['architecture']} ({error})."
        ) from error
    model.requires_grad_(False)
    model.card = header
    return model.to(device)
