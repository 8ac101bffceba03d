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
files exist with one row per frame is complete. Beside them (``<seq>/<seq>_key.json``, OTB:
``<tracker>/keys/<seq>_key.json``, written before the box file) a key file records what made the
result (:func:`result_key`: tracker name, weights and options; the sequence's annotations and
frame files; the benchmark variant): a re-run reuses a complete result only when its key is the
same, so another checkpoint, a retrained bundled weights file or another dataset is tracked again.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from common.atomic import write_text_atomic
from data import DatasetError, DatasetWarning, Sequence, box_to_polygon
from data.sequence import file_sha256

__all__ = ["SequenceResult", "ResultStore", "track_sequence", "run_trackers",
           "write_table_atomic", "TrackerSpecError", "TrackingError", "parse_tracker_spec",
           "build_named_tracker", "tracker_identity", "result_key"]


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


def build_named_tracker(name: str, checkpoint=None, device: str | None = None, backend: str | None = None,
                        **options):
    """Any tracker of the registry (:func:`tracker.build_tracker`): the toolkit's with ``checkpoint``,
    ``options`` as its tracking options and ``backend`` its inference backend (None: its default);
    the baselines take none of these."""
    try:
        from tracker import build_tracker, tracker_spec
    except ImportError as exc:
        raise TrackerSpecError(f"tracker.build_tracker is not available ({exc})") from None
    try:
        spec = tracker_spec(name)
        if spec.baseline is not None:
            if checkpoint is not None or options:
                raise TrackerSpecError(f"the {spec.baseline} baseline {spec.name} takes no checkpoint or tracking options")
            return build_tracker(spec.name)
        if backend is not None:
            options = {**options, "backend": backend}
        return build_tracker(name, checkpoint=None if checkpoint is None else str(checkpoint), device=device, **options)
    except TrackerSpecError:
        raise
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise TrackerSpecError(f"cannot build tracker {name!r}: {message}") from None


def tracker_identity(name: str, checkpoint=None, options: dict | None = None, backend: str | None = None) -> dict:
    """What decides a tracker's output: its name, its weights (the toolkit's trackers: SHA-256 of
    the checkpoint's content, by default of the bundled weights; the pretrained baselines: of their
    model files and the OpenCV / ONNX Runtime version that runs them; the classical ones: the OpenCV
    version), its tracking options and its inference backend with the backends' revision
    (tracker.backends: folded or exported networks change boxes in the last bits). Not the device.
    The backend is left out of the key for the model's own forward ("torch-unfused", or None),
    which is what results before backends used."""
    from tracker import default_checkpoint, tracker_spec
    from tracker.registry import model_file_paths

    try:
        spec = tracker_spec(name)
    except ValueError:              # building this tracker fails later, with the message
        return {"name": name, "weights": None, "options": dict(options or {})}
    if spec.baseline == "reference":
        weights = "initial box, angle 0"    # its rule: results from before it reported an angle are not reused
    elif spec.baseline is not None:
        weights = _runtime_version(spec)
        if spec.model_files:
            weights = {"runtime": weights, "files": [file_sha256(p) for p in model_file_paths(spec)]}
    else:
        weights = file_sha256(checkpoint if checkpoint is not None else default_checkpoint(name))
    identity = {"name": name, "weights": weights, "options": dict(options or {})}
    if backend not in (None, "torch-unfused") and spec.learned:
        from tracker.backends import BACKEND_REVISION
        identity["backend"] = backend
        identity["backend_revision"] = BACKEND_REVISION
    return identity


def _runtime_version(spec) -> str | None:
    """The library that runs a baseline: OpenCV's version, or ONNX Runtime's for the toolkit's runner."""
    import importlib

    try:
        module = importlib.import_module("cv2" if spec.runtime == "opencv" else spec.runtime)
    except ImportError:
        return None
    return f"{spec.runtime} {module.__version__}"


def result_key(tracker: dict, sequence: str, variant: dict) -> dict:
    """The key of one result: ``tracker`` (:func:`tracker_identity`), ``sequence``
    (:func:`data.sequence.sequence_identity`), ``variant`` (benchmark settings: dataset root, rotation...) and
    "digest", the SHA-256 of the three, which is what :meth:`ResultStore.is_complete` compares."""
    key = {"tracker": tracker, "sequence": sequence, "variant": variant}
    text = json.dumps(key, sort_keys=True, default=str)
    return {"digest": hashlib.sha256(text.encode()).hexdigest(), **key}


@dataclass
class SequenceResult:
    """A tracker's output on one sequence."""

    boxes: np.ndarray                    # (N,4) [x,y,w,h]
    times: np.ndarray                    # (N,) seconds for init (frame 0) / update
    angles: np.ndarray | None = None     # (N,) degrees CCW relative to the first frame
    polygons: np.ndarray | None = None   # (N,8)


def write_table_atomic(path: Path, values: np.ndarray, fmt: str, delimiter: str = ",") -> None:
    """np.savetxt's text, written atomically (``common.atomic.write_bytes_atomic``)."""
    import io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    np.savetxt(text, values, fmt=fmt, delimiter=delimiter)
    write_text_atomic(path, text.getvalue())


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
                    "angles": d / f"{seq}_angle.txt", "polygons": d / f"{seq}_polygon.txt",
                    "key": d / f"{seq}_key.json"}
        return {"boxes": base / f"{seq}.txt", "times": base / "times" / f"{seq}_time.txt",
                "angles": base / "angles" / f"{seq}_angle.txt",
                "polygons": base / "polygons" / f"{seq}_polygon.txt",
                "key": base / "keys" / f"{seq}_key.json"}

    def read_key(self, tracker: str, seq: str) -> str | None:
        """The digest of the key file of a result (None when it has none or it is unreadable)."""
        try:
            return json.loads(self.paths(tracker, seq)["key"].read_text()).get("digest")
        except (OSError, ValueError, AttributeError):
            return None

    def is_complete(self, tracker: str, seq: Sequence, key: dict | None = None) -> bool:
        """True when boxes and times exist with one row per frame of ``seq`` and, given a
        ``key`` (:func:`result_key`), the result's key file holds the same digest."""
        p = self.paths(tracker, seq.name)
        if not (p["boxes"].is_file() and p["times"].is_file()):
            return False
        try:
            result = self.read(tracker, seq.name)
        except (OSError, ValueError):
            return False
        if len(result.boxes) != len(seq) or len(result.times) != len(seq):
            return False
        return key is None or self.read_key(tracker, seq.name) == key["digest"]

    def read(self, tracker: str, seq: str) -> SequenceResult:
        p = self.paths(tracker, seq)
        boxes = _load_table(p["boxes"], 4)
        times = _load_table(p["times"], 1) if p["times"].is_file() else np.full(len(boxes), np.nan)
        angles = _load_table(p["angles"], 1) if p["angles"].is_file() else None
        polygons = _load_table(p["polygons"], 8) if p["polygons"].is_file() else None
        return SequenceResult(boxes, times, angles, polygons)

    def write(self, tracker: str, seq: str, result: SequenceResult, key: dict | None = None) -> None:
        p = self.paths(tracker, seq)
        p["boxes"].unlink(missing_ok=True)       # incomplete until the new box file is in place
        if key is not None:                      # written before the box file
            p["key"].parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(p["key"], json.dumps(key, indent=1, sort_keys=True, default=str) + "\n")
        else:
            p["key"].unlink(missing_ok=True)
        for name in ("angles", "polygons"):
            values = getattr(result, name)
            if values is not None:
                write_table_atomic(p[name], values, "%.4f")
            else:
                p[name].unlink(missing_ok=True)   # stale output of an earlier tracker version
        write_table_atomic(p["times"], result.times.reshape(-1, 1), "%.8f")
        write_table_atomic(p["boxes"], result.boxes, "%.3f")   # last: marks completion


def _read_frames(seq: Sequence) -> Iterable[Image.Image]:
    """The frames of ``seq`` as PIL RGB images (the got10k trackers' input), decoded by
    :func:`data.frames.read_frame` (16-bit and float frames converted, truncated files refused);
    DatasetError naming the sequence and the frame for an unreadable frame or one whose size
    differs from the first frame's."""
    from data.frames import FrameError, read_frame

    first = None
    for path in seq.img_files:
        try:
            frame = read_frame(path)
        except FrameError as exc:
            raise DatasetError(f"sequence {seq.name}: {exc}") from None
        size = (frame.shape[1], frame.shape[0])
        first = first or size
        if size != first:
            raise DatasetError(f"sequence {seq.name}: frame {path} is {size[0]}x{size[1]} but the first frame is "
                               f"{first[0]}x{first[1]} (the boxes of a sequence share one image size)")
        yield Image.fromarray(frame)


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
    for f, image in enumerate(_read_frames(seq)):
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
                 log: Callable[[str], None] | None = None,
                 keys: dict[str, dict[str, dict]] | None = None,
                 skip_bad: bool = False) -> dict[str, dict[str, SequenceResult]]:
    """Run each tracker (built lazily by its factory, only if some sequence needs it) over
    the sequences; reuse complete results unless ``overwrite``. Returns label -> seq -> result.

    ``keys``: label -> sequence name -> :func:`result_key`; a result is then reused only when
    its key file holds the same key, and written with it. A sequence with an unreadable frame
    (DatasetError) stops the run, or with ``skip_bad`` is left out of that tracker's results with
    a DatasetWarning.
    """
    from tqdm import tqdm

    results: dict[str, dict[str, SequenceResult]] = {}
    for label, factory in factories.items():
        key_of = (keys or {}).get(label, {})
        todo, stale = [], 0
        for s in sequences:
            if overwrite or not store.is_complete(label, s, key_of.get(s.name)):
                todo.append(s)
                stale += not overwrite and s.name in key_of and store.is_complete(label, s)
        if log is not None and len(todo) < len(sequences):
            log(f"{label}: reusing results of {len(sequences) - len(todo)} of "
                f"{len(sequences)} sequences")
        if log is not None and stale:
            log(f"{label}: {stale} result{'s were' if stale != 1 else ' was'} made by another "
                "checkpoint/options/dataset (or by an older version); re-running them")
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
                except DatasetError as exc:    # a bad frame: not the tracker's fault
                    if not skip_bad:
                        raise
                    warnings.warn(f"skipping sequence: {exc}", DatasetWarning, stacklevel=2)
                    continue
                except ValueError as exc:      # the trackers' input errors are ValueErrors
                    raise TrackingError(f"{label} on sequence {seq.name}: {exc}") from exc
                store.write(label, seq.name, result, key_of.get(seq.name))
            per_seq[seq.name] = store.read(label, seq.name)
        results[label] = per_seq
    return results
