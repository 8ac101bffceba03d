"""Atomic writes for the evaluation and data tools: a reader never sees a half-written file or
sequence folder, and an interrupted write leaves only a hidden temporary behind (removed on error).

Temporaries are named ``.<target name>.<pid>.<random>.tmp[.<ext>]`` beside their target: one left
by a killed process (SIGKILL, power loss) is removed by the next write to the same target, once
no live process has that pid (a concurrent writer's temporary is left alone)."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["write_bytes_atomic", "write_text_atomic", "write_with_atomic", "replaced_directory", "check_replaceable",
           "user_file_mode", "check_output_path", "temp_path_beside", "remove_stale_temporaries", "describe_os_error"]


def describe_os_error(exc: OSError) -> str:
    """One line for a filesystem error: 'Permission denied: runs/eval' rather than a traceback or
    '[Errno 13] ...'."""
    if not exc.strerror:
        return str(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else ""
    other = f" -> {exc.filename2}" if getattr(exc, "filename2", None) else ""
    return f"{exc.strerror}: {where}{other}".rstrip(": ")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True          # another user's live process (or cannot tell): keep its file
    return True


def remove_stale_temporaries(path) -> int:
    """Remove the temporaries of ``path`` left by processes that no longer run; returns how many."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9]+)?$")
    removed = 0
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return 0
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed


def temp_path_beside(path, extension: str = "", directory: bool = False) -> Path:
    """A new empty temporary file (or folder) beside ``path``, named so that
    :func:`remove_stale_temporaries` recognises it; stale ones of ``path`` are removed first.
    ``extension`` (".mp4") is appended for writers that choose the format by the name."""
    path = Path(path)
    remove_stale_temporaries(path)
    prefix, suffix = f".{path.name}.{os.getpid()}.", ".tmp" + extension
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def check_replaceable(path) -> None:
    """Refuse to replace anything but a regular file: a device node, a FIFO, a folder, or a
    symbolic link (renaming over a link would replace the link, not the file it points to)."""
    path = Path(path)
    if path.is_symlink():
        raise FileExistsError(f"{path} is a symbolic link: refusing to replace it (give the file it points to)")
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise FileExistsError(f"{path} is {kind}: refusing to replace it")


def check_output_path(path, folder: bool = False) -> None:
    """Before any work: refuse an output file that cannot be a regular file (check_replaceable), an
    output folder that is a file, and a path under a file (it could never be created)."""
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"{path} is not a folder: cannot write into it")
    else:
        check_replaceable(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(f"{path} lies under {parent}, which is a file, not a folder")
            break


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
    write_with_atomic(path, lambda f: f.write(data))


def write_text_atomic(path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_with_atomic(path, write) -> None:
    """``write(file)`` into a temporary beside ``path``, then rename it into place, with the checks
    of :func:`write_bytes_atomic`; for large outputs (``np.save``) that should not be copied into
    memory first."""
    path = Path(path)
    check_replaceable(path)
    tmp = temp_path_beside(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, user_file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is not None:
            raise
        # a failed write names no file (EFBIG, ENOSPC, numpy's "N requested and M written")
        raise OSError(exc.errno, f"cannot write ({exc.strerror or exc}); nothing was replaced", str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def replaced_directory(final) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; when the block ends normally the folder
    replaces ``final`` (an existing ``final`` is removed first), when it raises it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(final, directory=True)
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
