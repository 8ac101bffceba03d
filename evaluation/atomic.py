"""Atomic writes for the evaluation and data tools: a reader never sees a half-written file or
sequence folder, and an interrupted write leaves only a hidden temporary behind (removed on error)."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["write_bytes_atomic", "write_text_atomic", "replaced_directory", "check_replaceable",
           "user_file_mode"]


def check_replaceable(path) -> None:
    """Refuse to replace anything but a regular file: a device node, a FIFO, a folder, or a
    symbolic link (renaming over a link would replace the link, not the file it points to)."""
    path = Path(path)
    if path.is_symlink():
        raise FileExistsError(f"{path} is a symbolic link: refusing to replace it (give the file it points to)")
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise FileExistsError(f"{path} is {kind}: refusing to replace it")


def user_file_mode() -> int:
    """The mode a new file gets under the process's umask (0644 under the usual 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place.

    Only a regular file is ever replaced (``check_replaceable``); the file gets the mode a new
    file would get under the umask; a failed write (e.g. a full disk) raises and leaves the old
    file as it was."""
    path = Path(path)
    check_replaceable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, user_file_mode())
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
