"""Checkpoint files: written atomically, read as data (tensors and plain containers), never executed.

A checkpoint is a dict saved with torch.save: {"config": {...}, "model": state_dict, ...}; every
training loop and tool of the toolkit writes and reads checkpoints through this module.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or not one of this toolkit's."""


class _WriteErrorRecorder:
    """A file wrapper that keeps the OSError of a failed write: torch.save turns it into a
    RuntimeError ("unexpected pos 704 vs 598") that no longer says the disk was full."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.file.flush()


def save_atomic(obj, path: str | Path) -> None:
    """torch.save into a temporary beside ``path``, fsync, then rename into place (and fsync the
    folder): never a half-written checkpoint, an old one stays on a failed write (an OSError naming
    ``path``). Shares common.atomic's rules: a link or special file is never replaced, the file
    follows the umask, and a killed run's temporary (``.<name>.<pid>.<random>.tmp``) is removed by
    the next save."""
    from .atomic import write_with_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(file) -> None:
        recorder = _WriteErrorRecorder(file)
        try:
            torch.save(obj, recorder)
        except RuntimeError:
            if recorder.error is not None:
                raise recorder.error from None
            raise

    write_with_atomic(path, write)
    try:                                  # make the rename itself survive a power loss
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass                              # some filesystems cannot fsync a folder
    finally:
        os.close(folder)


def _numpy_array_globals() -> list:
    """The names a pickled numpy array uses. Training checkpoints written before their RNG state
    was stored as tensors hold numpy's state as an array; rebuilding an array runs no code of the
    file's choosing (numpy refuses an object array whose data is not a list, and the list's items
    pass the same restricted unpickler)."""
    import numpy as np
    from numpy._core.multiarray import _reconstruct

    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), _reconstruct,
            (_reconstruct, "numpy.core.multiarray._reconstruct")]   # the name numpy 1 wrote


def read_tensor_file(path: str | Path, map_location="cpu"):
    """torch.load as data only: tensors, numbers, strings and plain containers (and numpy arrays
    of older checkpoints). A pickle that names anything else is refused with one CheckpointError
    naming what it asked for, before any of it runs: checkpoints come from strangers."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused is None:                # garbage rather than a payload
            raise CheckpointError(f"cannot read checkpoint {path}: not a torch checkpoint") from None
        raise CheckpointError(f"refused {path}: a checkpoint may hold only tensors and plain data, "
                              f"and this file asks to run or build {refused.group(1)}") from None
    except Exception as exc:  # corrupt, truncated or not a torch file
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint of this toolkit, read as data (read_tensor_file)."""
    ckpt = read_tensor_file(path, map_location)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of this toolkit (needs 'config' and 'model')")
    return ckpt



def load_weights(module: torch.nn.Module, state: dict, what: str) -> None:
    """load_state_dict that names the first mismatching key (or shape) in a CheckpointError."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:          # same names, other shapes: torch lists every one
        first = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        raise CheckpointError(f"{what} do not match its config ({first})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{what} do not match its config "
            f"(missing {len(missing)}, unexpected {len(unexpected)}: e.g. {(missing or unexpected)[0]})"
        )
