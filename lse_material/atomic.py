"""Atomic file writes: every JSON, PNG, model file and checkpoint goes through ``atomic_write``.

The data goes to a temporary file in the target's folder (same file system), is flushed and
``fsync``-ed, and then replaces the target with ``os.replace``. A reader, or a writer killed at
any moment, therefore sees either the previous file or the complete new one, never a
half-written file. A failed write leaves the previous file and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "save_figure", "write_bytes", "write_json"]


@contextlib.contextmanager
def atomic_write(path: str | Path, *, text: bool = False) -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without error.

    Yields a binary file object (a text one, UTF-8, with ``text=True``). The parent folder is
    created if missing. On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically; returns the path."""
    with atomic_write(path, text=True) as f:
        f.write(json.dumps(data, indent=2))
    return Path(path)


def save_figure(fig, path: str | Path, **savefig_options: Any) -> Path:
    """``fig.savefig`` (a matplotlib Figure) to ``path`` atomically; the format is the suffix's.

    ``savefig_options`` go to ``savefig`` (e.g. ``dpi=110``). Returns the path.
    """
    path = Path(path)
    savefig_options.setdefault("format", path.suffix.removeprefix(".") or None)
    with atomic_write(path) as f:
        fig.savefig(f, **savefig_options)
    return path
