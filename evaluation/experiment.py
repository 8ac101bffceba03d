"""Run trackers over sequences and keep their results in the got10k toolkit's file layout.

GOT-10k layout (one repetition)::

    <result_dir>/<tracker>/<seq>/<seq>_001.txt      boxes x,y,w,h, one row per frame
    <result_dir>/<tracker>/<seq>/<seq>_time.txt     seconds per frame
    <result_dir>/<tracker>/<seq>/<seq>_angle.txt    optional: tracker's angle estimate (deg)
    <result_dir>/<tracker>/<seq>/<seq>_polygon.txt  optional: tracker's rotated box

OTB layout::

    <result_dir>/<tracker>/<seq>.txt
    <result_dir>/<tracker>/times/<seq>_time.txt
    <result_dir>/<tracker>/angles/<seq>_angle.txt       (optional)
    <result_dir>/<tracker>/polygons/<seq>_polygon.txt   (optional)

Every file is written atomically and the box file last, so a sequence whose box and time
files exist with one row per frame is complete and is not tracked again on a re-run.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from .datasets import Sequence
from .metrics import box_to_polygon

__all__ = ["SequenceResult", "ResultStore", "track_sequence", "run_trackers",
           "write_table_atomic", "TrackerSpecError", "TrackingError", "parse_tracker_spec",
           "build_named_tracker"]


class TrackerSpecError(ValueError):
    """A tracker name or checkpoint given by the user cannot be used."""


class TrackingError(RuntimeError):
    """A tracker rejected a sequence's input (e.g. its first box); names tracker and sequence."""


def parse_tracker_spec(spec: str) -> tuple[str, str, Path | None]:
    """'name' or 'name=checkpoint.pth' -> (result label, name, checkpoint path or None).

    The label names the results folder: the name, plus "@<checkpoint stem>" with a checkpoint.
    """
    name, sep, ckpt = spec.partition("=")
    name = name.strip()
    if not name or (sep and not ckpt.strip()):
        raise TrackerSpecError(f"bad tracker {spec!r}: use NAME or NAME=CHECKPOINT")
    if not sep:
        return name, name, None
    checkpoint = Path(ckpt.strip())
    if not checkpoint.is_file():
        raise TrackerSpecError(f"checkpoint not found: {checkpoint}")
    return f"{name}@{checkpoint.stem}", name, checkpoint


def parse_tracker_options(items: list[str]) -> dict:
    """["key=value", ...] -> {key: value}, values read as JSON when they parse (numbers, true...)."""
    import json

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TrackerSpecError(f"bad tracker option {item!r}: use KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def options_label(options: dict) -> str:
    """The suffix that keeps results of different tracker options apart: "[k=v,k=v]"."""
    return "[" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) + "]" if options else ""


def build_named_tracker(name: str, checkpoint=None, device: str | None = None, **options):
    """'identity' -> IdentityTracker; any other name through ``tracker.build_tracker``
    (imported lazily, so evaluation works before/without the tracker package), with
    ``options`` as its tracking options."""
    if name == "identity":
        if checkpoint is not None:
            raise TrackerSpecError("the identity tracker takes no checkpoint")
        from .identity import IdentityTracker
        return IdentityTracker()
    try:
        from tracker import build_tracker
    except ImportError as exc:
        raise TrackerSpecError(f"tracker.build_tracker is not available ({exc}); only "
                               "'identity' can be used") from None
    try:
        return build_tracker(name, checkpoint=None if checkpoint is None else str(checkpoint),
                             device=device, **options)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise TrackerSpecError(f"cannot build tracker {name!r}: {message}") from None


@dataclass
class SequenceResult:
    """A tracker's output on one sequence."""

    boxes: np.ndarray                    # (N,4) [x,y,w,h]
    times: np.ndarray                    # (N,) seconds for init (frame 0) / update
    angles: np.ndarray | None = None     # (N,) degrees CCW relative to the first frame
    polygons: np.ndarray | None = None   # (N,8)


def write_table_atomic(path: Path, values: np.ndarray, fmt: str, delimiter: str = ",") -> None:
    """np.savetxt into a temporary file beside ``path``, then os.replace it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            np.savetxt(f, values, fmt=fmt, delimiter=delimiter)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_table(path: Path, columns: int) -> np.ndarray:
    values = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    if columns == 1:
        return values.reshape(-1)
    return values.reshape(-1, columns)


class ResultStore:
    """Result files of trackers under ``result_dir`` in the "got10k" or "otb" layout."""

    def __init__(self, result_dir, layout: str):
        if layout not in ("got10k", "otb"):
            raise ValueError(f"unknown result layout {layout!r}")
        self.result_dir = Path(result_dir)
        self.layout = layout

    def paths(self, tracker: str, seq: str) -> dict[str, Path]:
        base = self.result_dir / tracker
        if self.layout == "got10k":
            d = base / seq
            return {"boxes": d / f"{seq}_001.txt", "times": d / f"{seq}_time.txt",
                    "angles": d / f"{seq}_angle.txt", "polygons": d / f"{seq}_polygon.txt"}
        return {"boxes": base / f"{seq}.txt", "times": base / "times" / f"{seq}_time.txt",
                "angles": base / "angles" / f"{seq}_angle.txt",
                "polygons": base / "polygons" / f"{seq}_polygon.txt"}

    def is_complete(self, tracker: str, seq: Sequence) -> bool:
        """True when boxes and times exist with one row per frame of ``seq``."""
        p = self.paths(tracker, seq.name)
        if not (p["boxes"].is_file() and p["times"].is_file()):
            return False
        try:
            result = self.read(tracker, seq.name)
        except (OSError, ValueError):
            return False
        return len(result.boxes) == len(seq) and len(result.times) == len(seq)

    def read(self, tracker: str, seq: str) -> SequenceResult:
        p = self.paths(tracker, seq)
        boxes = _load_table(p["boxes"], 4)
        times = _load_table(p["times"], 1) if p["times"].is_file() else np.full(len(boxes), np.nan)
        angles = _load_table(p["angles"], 1) if p["angles"].is_file() else None
        polygons = _load_table(p["polygons"], 8) if p["polygons"].is_file() else None
        return SequenceResult(boxes, times, angles, polygons)

    def write(self, tracker: str, seq: str, result: SequenceResult) -> None:
        p = self.paths(tracker, seq)
        for key in ("angles", "polygons"):
            values = getattr(result, key)
            if values is not None:
                write_table_atomic(p[key], values, "%.4f")
            else:
                p[key].unlink(missing_ok=True)   # stale output of an earlier tracker version
        write_table_atomic(p["times"], result.times.reshape(-1, 1), "%.8f")
        write_table_atomic(p["boxes"], result.boxes, "%.3f")   # last: marks completion


def _open_rgb(path: str) -> Image.Image:
    image = Image.open(path)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def track_sequence(tracker, seq: Sequence) -> SequenceResult:
    """Run a got10k tracker over ``seq`` from its first box; time init/update per frame.

    Image decoding is not timed (as in the got10k toolkit). When the tracker exposes
    ``last_angle`` / ``last_polygon`` after update(), they are recorded too; frame 0 gets
    angle 0 and the initial box's corners.
    """
    n = len(seq)
    init_box = np.asarray(seq.boxes[0], dtype=np.float64)
    if not np.isfinite(init_box).all() or init_box[2] <= 0 or init_box[3] <= 0:
        raise ValueError(f"sequence {seq.name}: first-frame box {init_box.tolist()} is not a "
                         "valid initial box")
    boxes = np.zeros((n, 4))
    boxes[0] = init_box
    times = np.zeros(n)
    angles = np.full(n, np.nan)
    polygons = np.full((n, 8), np.nan)
    angles[0] = 0.0
    polygons[0] = box_to_polygon(init_box)[0]
    has_angle = has_polygon = False
    for f, path in enumerate(seq.img_files):
        image = _open_rgb(path)
        start = time.perf_counter()
        if f == 0:
            tracker.init(image, init_box.copy())
        else:
            boxes[f] = np.asarray(tracker.update(image), dtype=np.float64).reshape(4)
        times[f] = time.perf_counter() - start
        if f > 0:
            angle = getattr(tracker, "last_angle", None)
            if angle is not None:
                has_angle = True
                angles[f] = float(angle)
            polygon = getattr(tracker, "last_polygon", None)
            if polygon is not None:
                has_polygon = True
                polygons[f] = np.asarray(polygon, dtype=np.float64).reshape(8)
    return SequenceResult(boxes, times, angles if has_angle else None,
                          polygons if has_polygon else None)


def run_trackers(factories: dict[str, Callable[[], object]], sequences: list[Sequence],
                 store: ResultStore, overwrite: bool = False, progress: bool = True,
                 log: Callable[[str], None] | None = None) -> dict[str, dict[str, SequenceResult]]:
    """Run each tracker (built lazily by its factory, only if some sequence needs it) over
    the sequences; reuse complete results unless ``overwrite``. Returns label -> seq -> result.
    """
    from tqdm import tqdm

    results: dict[str, dict[str, SequenceResult]] = {}
    for label, factory in factories.items():
        todo = [s for s in sequences if overwrite or not store.is_complete(label, s)]
        if log is not None and len(todo) < len(sequences):
            log(f"{label}: reusing results of {len(sequences) - len(todo)} of "
                f"{len(sequences)} sequences")
        tracker = factory() if todo else None
        todo_names = {s.name for s in todo}
        bar: Iterable[Sequence] = sequences
        if progress and todo:
            bar = tqdm(sequences, desc=label, unit="seq", dynamic_ncols=True, leave=True)
        per_seq = {}
        for seq in bar:
            if seq.name in todo_names:
                if progress and todo:
                    bar.set_postfix_str(seq.name)
                try:
                    result = track_sequence(tracker, seq)
                except ValueError as exc:      # the trackers' input errors are ValueErrors
                    raise TrackingError(f"{label} on sequence {seq.name}: {exc}") from exc
                store.write(label, seq.name, result)
            per_seq[seq.name] = store.read(label, seq.name)
        results[label] = per_seq
    return results
