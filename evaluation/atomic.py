"""Atomic writes for the evaluation and data tools: a reader never sees a half-written file or
sequence folder, and an interrupted write leaves only a hidden temporary behind (removed on error)."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["write_bytes_atomic", "write_text_atomic", "replaced_directory"]


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


@contextmanager
def replaced_directory(final) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; when the block ends normally the folder
    replaces ``final`` (an existing ``final`` is removed first), when it raises it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
