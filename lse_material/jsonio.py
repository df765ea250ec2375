"""Atomic JSON writes: a temporary file beside the target, then ``os.replace`` (never half-written)."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["write_json"]


def write_json(path: str | Path, data) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically; returns the path."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
    return path
