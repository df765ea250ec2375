"""Malformed model files: each one gives exactly one ModelFileError (a hash-less format-1 file:
the LegacyModelFileWarning), never a silent load, never an unpickling, with bounded memory.

Seeded. 120 cases in CI, 600 with LSE_FULL=1 (``make test-full``). Run with ``-s`` to see the
table (fault kind -> cases -> outcomes) and the peak memory growth of a case.
"""

import collections
import io
import json
import math
import multiprocessing
import pickle
import random
import re
import time
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch
from lse_material.training.data.mechanochemical import INPUT_NAMES
from safetensors.torch import save_file

import lse_material
from lse_material import LSEICNN, ModelFileError, modelfile
from lse_material.errors import LegacyModelFileWarning
from tests.conftest import FULL

N_CASES = 600 if FULL else 120
MAX_RSS_GROWTH_MB = 200
MAX_SECONDS_PER_CASE = 10.0  # a guard against hangs and huge allocations, not a speed test


class Base:
    """The untrained mechanochemical-shaped model (7 inputs, 5 modes, hidden (10, 10))."""

    def __init__(self, folder):
        model = LSEICNN(
            7, 5, (10, 10), input_names=INPUT_NAMES, generator=torch.Generator().manual_seed(3)
        )
        box = {name: [-0.15, 0.15] for name in INPUT_NAMES[:6]} | {"c": [0.0, 1.0]}
        self.model = model
        self.path = lse_material.save(model, folder / "base.safetensors", training_box=box)
        self.raw = self.path.read_bytes()
        self.header_length = int.from_bytes(self.raw[:8], "little")
        self.header = lse_material.read_metadata(self.path)
        self.tensors = {k: v.clone() for k, v in model.state_dict().items()}

    def rehashed(self, header=None, tensors=None) -> bytes:
        """A consistent (correctly hashed) file with a changed header or tensors."""
        return modelfile._serialize(header or self.header, tensors or self.tensors)


def _unhashed(base, header) -> bytes:
    """A file with ``header`` stored as given (canonical JSON), its hash not recomputed."""
    text = modelfile._canonical(header)
    return safetensors.torch.save(base.tensors, metadata={"lse_material": text})


def _flip(data: bytes, lo: int, hi: int, rng) -> bytes:
    out = bytearray(data)
    out[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
    return bytes(out)


class Marker:
    """Unpickling this creates the marker file: proof that something was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ------------------------------------------------------------------- fault kinds
def truncation(base, rng, _):
    return base.raw[: rng.randrange(len(base.raw))]


def header_bit_flip(base, rng, _):
    return _flip(base.raw, 0, 8 + base.header_length, rng)


def data_bit_flip(base, rng, _):
    return _flip(base.raw, 8 + base.header_length, len(base.raw), rng)


def tampered_architecture(base, rng, _):
    changes = [
        {"n_modes": 20, "hidden": [1500, 1500]},
        {"hidden": [10**6, 10**6]},
        {"hidden": [10**12]},
        {"hidden": [10] * 1000},
        {"hidden": [-10, 10]},
        {"hidden": "ten"},
        {"hidden": []},
        {"n_modes": 6},
        {"n_inputs": 8},
        {"n_inputs": 10**15},
        {"dtype": "float16"},
        {"dtype": "float32"},
        {"dtype": "os.system"},
        {"input_names": ["x"] * 7},
    ]
    arch = dict(base.header["architecture"]) | rng.choice(changes)
    if rng.random() < 0.2:
        arch.pop(rng.choice(sorted(arch)))
    return base.rehashed(base.header | {"architecture": arch})


def pickle_renamed(base, rng, marker):
    payload = {"model": base.tensors, "trap": Marker(marker)}
    if rng.random() < 0.5:
        return pickle.dumps(payload, protocol=rng.randrange(2, 6))
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def non_finite_weights(base, rng, _):
    tensors = {k: v.clone() for k, v in base.tensors.items()}
    name = rng.choice(sorted(tensors))
    flat = tensors[name].view(-1)
    flat[rng.randrange(flat.numel())] = rng.choice([math.nan, math.inf, -math.inf])
    return base.rehashed(tensors=tensors)


def oversized_header(base, rng, _):
    claims = [modelfile.MAX_HEADER_BYTES + 1, 2**40, 2**63, len(base.raw)]
    if rng.random() < 0.25:  # a real one: the metadata itself beyond the ceiling
        header = base.header | {"notes": "x" * (modelfile.MAX_HEADER_BYTES + 1)}
        return _unhashed(base, header)
    return rng.choice(claims).to_bytes(8, "little") + base.raw[8:]


def bad_training_box(base, rng, _):
    boxes = [
        "nonsense",
        [[0, 1]] * 7,
        {"c": [1.0, 0.0]},
        {"c": [0.5, 0.5]},
        {"c": [0.0, math.nan]},
        {"c": [-math.inf, 1.0]},
        {"c": [0.0]},
        {"c": [0.0, 1.0, 2.0]},
        {"c": ["0", "1"]},
        {"c": [False, True]},
        {"c": {"low": 0, "high": 1}},
        {"E44": [0.0, 1.0]},
        {"": [0.0, 1.0]},
    ]
    return base.rehashed(base.header | {"training_box": rng.choice(boxes)})


def tampered_tensors(base, rng, _):
    tensors = {k: v.clone() for k, v in base.tensors.items()}
    name = rng.choice(sorted(tensors))
    action = rng.choice(["drop", "extra", "reshape", "float32", "int64"])
    if action == "drop":
        tensors.pop(name)
    elif action == "extra":
        tensors["payload"] = torch.zeros(3, dtype=torch.float64)
    elif action == "reshape":
        tensors[name] = torch.zeros(tensors[name].numel() + 1, dtype=torch.float64)
    else:
        tensors[name] = tensors[name].to(getattr(torch, action))
    return base.rehashed(tensors=tensors)


def forged_header(base, rng, _):
    """An edited header that keeps (or fakes) the hash instead of recomputing it."""
    choice = rng.randrange(3)
    if choice == 0:  # a changed value, the old hash kept
        header = base.header | {"input_units": ["m"] * 7}
    elif choice == 1:  # a random hash
        header = base.header | {"sha256": f"{rng.getrandbits(256):064x}"}
    else:  # the old format version, to skip the check
        header = base.header | {"format_version": modelfile.LEGACY_FORMAT_VERSION + 2}
    return _unhashed(base, header)


def legacy_without_hash(base, rng, _):
    """A genuine format-1 file (no hash): loads, with the LegacyModelFileWarning."""
    header = {k: v for k, v in base.header.items() if k != "sha256"}
    header["format_version"] = modelfile.LEGACY_FORMAT_VERSION
    return safetensors.torch.save(
        base.tensors,
        metadata={"lse_material": json.dumps(header)},
    )


FAULTS = {
    "truncation": (truncation, 14),
    "header bit flip": (header_bit_flip, 18),
    "data bit flip": (data_bit_flip, 18),
    "tampered architecture": (tampered_architecture, 12),
    "pickle / torch.save renamed": (pickle_renamed, 6),
    "non-finite weights": (non_finite_weights, 10),
    "oversized header": (oversized_header, 6),
    "bad training box": (bad_training_box, 12),
    "tampered tensors": (tampered_tensors, 10),
    "forged header (hash not recomputed)": (forged_header, 8),
    "legacy, no hash (expect the warning)": (legacy_without_hash, 6),
}


def _outcome(path) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            lse_material.load(path)
        except ModelFileError:
            outcome = "ModelFileError"
        except Exception as error:  # noqa: BLE001  (any other exception is a defect: counted)
            outcome = f"{type(error).__name__}: {error}"[:200]
        else:
            outcome = "loaded"
    legacy = [w for w in caught if issubclass(w.category, LegacyModelFileWarning)]
    others = [w for w in caught if w not in legacy]
    if outcome == "loaded" and len(legacy) == 1 and not others:
        return "legacy warning"
    if outcome == "ModelFileError" and not caught:
        return outcome
    return f"{outcome} with warnings {[str(w.message)[:80] for w in caught]}"


def _status_mb(key: str) -> float:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024


def _peak_growth(run, *args):
    """``run(*args)`` and its peak RSS growth (MB): the kernel's high-water mark, reset first."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_mb("VmRSS")
    result = run(*args)
    return result, _status_mb("VmHWM") - before


def _fuzz(folder: str, n_cases: int) -> dict:
    """The seeded fuzz in ``folder``: prints the table, returns the outcomes per fault kind,
    the worst RSS growth (MB) and time (s) of a case, the case count, whether a pickle was
    unpickled, and the growth the measure sees for a 50 MB allocation (its sanity check)."""
    folder = Path(folder)
    base = Base(folder)
    marker = folder / "unpickled.marker"
    lse_material.load(base.path)  # warm-up: the first meta-device build imports torch's kernels
    rng = random.Random(20261201)
    total = sum(count for _, count in FAULTS.values())
    table, worst_rss, worst_seconds, case = {}, 0.0, 0.0, 0
    print(f"\n  {'fault kind':<38} {'n':>4}  outcomes  worst case: RSS growth, time")
    for kind, (make, weight) in FAULTS.items():
        outcomes, peak_mb, seconds = collections.Counter(), 0.0, 0.0
        for _ in range(max(1, round(n_cases * weight / total))):
            path = folder / f"case{case}.safetensors"
            path.write_bytes(make(base, rng, marker))
            t0 = time.perf_counter()
            outcome, growth = _peak_growth(_outcome, path)
            outcomes[outcome] += 1
            seconds = max(seconds, time.perf_counter() - t0)
            peak_mb = max(peak_mb, growth)
            path.unlink()
            case += 1
        table[kind] = dict(outcomes)
        worst_rss, worst_seconds = max(worst_rss, peak_mb), max(worst_seconds, seconds)
        print(
            f"  {kind:<38} {sum(outcomes.values()):>4}  {dict(outcomes)}  "
            f"peak +{peak_mb:.1f} MB, {seconds * 1e3:.0f} ms"
        )
    print(
        f"{case} malformed files; peak RSS growth of a case {worst_rss:.1f} MB; slowest case "
        f"{worst_seconds:.3f} s",
        flush=True,
    )
    return {
        "table": table,
        "worst_rss": worst_rss,
        "worst_seconds": worst_seconds,
        "cases": case,
        "unpickled": marker.exists(),
        "sanity_growth": _peak_growth(bytearray, 50 * 2**20)[1],
    }


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="peak-memory measure needs Linux /proc"
)
def test_malformed_model_files(tmp_path):
    """In a fresh (spawned) process: the RSS measure needs an allocator that no earlier test has
    shaped (after make test-full's trainings, a 50 MB allocation left VmHWM unchanged)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(_fuzz, (str(tmp_path), N_CASES))
    assert result["cases"] >= N_CASES
    assert not result["unpickled"], "a pickle was unpickled"
    assert result["sanity_growth"] > 45  # the measure sees allocations
    for kind, outcomes in result["table"].items():
        expected = "legacy warning" if kind.startswith("legacy") else "ModelFileError"
        assert set(outcomes) == {expected}, f"{kind}: {outcomes}"
    assert result["worst_rss"] < MAX_RSS_GROWTH_MB
    assert result["worst_seconds"] < MAX_SECONDS_PER_CASE


def test_the_base_file_and_its_pickle_trap_are_real(tmp_path):
    """The fuzz's premises: the base file loads cleanly, and the trap fires if unpickled."""
    base = Base(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = lse_material.load(base.path)
    x = torch.rand(4, 7, dtype=torch.float64)
    assert torch.equal(loaded(x), base.model(x))
    marker = tmp_path / "trap"
    pickle.loads(pickle.dumps(Marker(marker)))
    assert marker.exists()
    save_file(base.tensors, tmp_path / "plain.safetensors")  # safetensors without our header
    with pytest.raises(ModelFileError, match="not an lse-material model"):
        lse_material.load(tmp_path / "plain.safetensors")
