"""One writer per output folder: an advisory lock (``fcntl.flock`` on a ``.lock`` file inside it),
released when the process ends however it ends, so that two runs started into one folder (two
trainings, two evaluations with their rotating copies) cannot interleave their files: the second
is refused at once with one clear error."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FolderBusy", "FolderLock", "LOCK_NAME"]

LOCK_NAME = ".run.lock"


class FolderBusy(ValueError):
    """Another process is writing the same output folder."""


class FolderLock:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def claim(self) -> "FolderLock":
        import fcntl

        if self._fd is not None:
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FolderBusy(f"{self.path} is being written by another run (process {holder}): wait for it to "
                             f"finish, or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)           # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.claim()

    def __exit__(self, *exc) -> None:
        self.release()
