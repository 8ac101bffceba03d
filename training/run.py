"""The layer every training loop shares (tracker training and the classification study).

- :class:`RunFolder`: the output folder of one run, written by one process at a time (a second one
  is refused with one clear error, never mixed in), its checkpoints written atomically and read as
  data, its JSON files written atomically;
- :class:`HistoryLog`: ``history.csv`` (a row per logged step or epoch from the first one, appended
  live, rewritten from the checkpoint's history on resume) and TensorBoard events;
- every RNG state as tensors and plain data, seeding, the torchrun environment, and the check for
  non-finite values that stops a diverging run.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from common.atomic import write_text_atomic
from common.checkpoints import load_checkpoint, save_atomic
from common.locks import FolderLock

__all__ = ["RunFolder", "HistoryLog", "rng_state", "set_rng_state", "seed_everything",
           "distributed_env", "non_finite", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pth"
TENSORBOARD_DIR = "tensorboard"


class RunFolder:
    """One run's output folder. :meth:`claim` takes its lock (:class:`common.locks.FolderLock`), so
    two runs started into one folder cannot interleave their checkpoints and logs: the second is
    refused at once (:class:`common.locks.FolderBusy`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = FolderLock(self.path)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    def claim(self) -> "RunFolder":
        self._lock.claim()
        return self

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> "RunFolder":
        return self.claim()

    def __exit__(self, *exc) -> None:
        self.release()

    def save(self, state: dict, name: str = CHECKPOINT_NAME) -> None:
        save_atomic(state, self.path / name)

    def load(self, name: str = CHECKPOINT_NAME) -> dict:
        return load_checkpoint(self.path / name)

    def write_json(self, name: str, obj, allow_nan: bool = True) -> None:
        """``name`` atomically (``allow_nan=False``: a non-finite number is a ValueError, never written)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path / name, json.dumps(obj, indent=1, allow_nan=allow_nan) + "\n")


class HistoryLog:
    """history.csv and TensorBoard events of a run (``enabled`` False: another rank's, writes nothing)."""

    def __init__(self, folder: RunFolder, name: str = "history.csv", extra_columns: tuple = (), enabled: bool = True):
        self.folder, self.name, self.enabled = folder, name, enabled
        self.extra_columns = tuple(extra_columns)
        self._fields: list | None = None
        self._tensorboard = None

    @property
    def path(self) -> Path:
        return self.folder.path / self.name

    def open(self, rows: list[dict], step: int, tensorboard: bool = True) -> None:
        """Rewrite history.csv from ``rows`` (a resumed run's history); open the TensorBoard writer,
        dropping its events after ``step`` (a killed run's tail)."""
        if not self.enabled:
            return
        self.rewrite(rows)
        if not tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("warning: the tensorboard package is not installed: no TensorBoard logs (pip install tensorboard); "
                  f"history.csv and history.json are written to {self.folder.path}", file=sys.stderr)
            return
        self._tensorboard = SummaryWriter(str(self.folder.path / TENSORBOARD_DIR), purge_step=step + 1 if step else None)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def log(self, rows: list[dict], scalars: dict | None = None, step: int | None = None) -> None:
        """The last of ``rows`` (the whole history so far) as a history.csv line (the first row, or a
        new column, rewrites the file), and TensorBoard scalars."""
        if not self.enabled:
            return
        row = rows[-1]
        if self._fields is None or any(k not in self._fields for k in row):
            self.rewrite(rows)
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self._fields, restval="", lineterminator="\n").writerow(row)
        if self._tensorboard is not None and scalars:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(key, value, step)

    def rewrite(self, rows: list[dict]) -> None:
        if not rows:
            self.path.unlink(missing_ok=True)
            self._fields = None
            return
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        columns += [k for k in self.extra_columns if k not in columns]
        self._fields = columns
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.path, text.getvalue())


def distributed_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment ((0, 1, 0) otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def rng_state(device: torch.device) -> dict:
    """Every generator's state as tensors and plain data (a checkpoint is read as data only)."""
    numpy_state = np.random.get_state(legacy=False)
    key = numpy_state["state"]["key"]
    numpy_state["state"] = {**numpy_state["state"], "key": torch.from_numpy(key.astype(np.int64))}
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": numpy_state,
        "python": random.getstate(),
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):      # older checkpoints hold numpy's legacy tuple
        key = numpy_state["state"]["key"]
        numpy_state = {**numpy_state, "state": {**numpy_state["state"], "key": np.asarray(key, dtype=np.uint32)}}
    np.random.set_state(numpy_state)
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def non_finite(values: dict) -> list[str]:
    """The names of the values (numbers) that are NaN or infinite: a diverging run."""
    return [name for name, value in values.items() if not math.isfinite(float(value))]
