"""Offline loaders for tracking benchmarks in the GOT-10k and OTB folder layouts.

Nothing here downloads anything: the loaders read whatever sequences are present under a
local folder and check them (frame numbering, ground-truth row counts, number formats), so
that a broken sequence fails with an error that names the offending file instead of a shape
mismatch deep inside an evaluation.

GOT-10k layout (a subset folder, or a root holding train/ val/ test/ subset folders)::

    <subset>/list.txt                       # optional; otherwise the sequence folders present
    <subset>/<seq>/00000001.jpg ...
    <subset>/<seq>/groundtruth.txt          # x,y,w,h per frame (test set: first frame only)
    <subset>/<seq>/absence.label            # optional, 1 = target absent
    <subset>/<seq>/cover.label              # optional, 0..8 visible ratio class

OTB layout::

    <root>/<seq>/img/0001.jpg ...
    <root>/<seq>/groundtruth_rect.txt       # comma, tab or whitespace separated
    <root>/<seq>/groundtruth_rect.1.txt     # two-target sequences (Jogging, Skating2) give
    <root>/<seq>/groundtruth_rect.2.txt     #   the sequences <seq>.1 and <seq>.2

Both layouts may carry ``angle.txt`` (one float per frame: target in-plane rotation in degrees,
counter-clockwise on screen), ``rotation.txt`` (one float per frame: the angle of an elongated
target's axis, clockwise on screen, meaningful modulo 180; read as ``Sequence.axis_angles``,
counter-clockwise), ``polygon.txt`` (x1,y1,...,x4,y4 per frame: rotated box) and
``meta.json`` (``frame_stride``: how many source frames one stored frame stands for, when a long
video was subsampled; ``source_group`` / ``source_sequence``: the video it was cut from, which
:func:`split_by_source` keeps on one side of a train/validation split).
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DatasetError", "DatasetWarning", "Sequence", "load_sequences", "detect_layout",
           "split_by_source", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
GOT10K_SUBSETS = ("val", "test", "train")

# OTB sequences whose annotation covers only part of the image folder (first, last frame
# number, 1-based, inclusive), as in the OTB benchmark's own sequence configuration.
_OTB_FRAME_RANGES = {
    "david": (300, 770),
    "football1": (1, 74),
    "freeman3": (1, 460),
    "freeman4": (1, 283),
    "diving": (1, 215),
}
# OTB sequences whose first frames are skipped by the benchmark ("initOmit"): the tracker is
# initialised on frame 1 + omit and those rows of the ground truth are dropped as well.
_OTB_INIT_OMIT = {"tiger1": 5}


class DatasetError(ValueError):
    """A dataset folder or file is missing or malformed; the message names the file."""


class DatasetWarning(UserWarning):
    """A bad sequence was skipped (``skip_bad=True``)."""


@dataclass
class Sequence:
    """One tracking sequence: frame paths and per-frame annotations."""

    name: str
    img_files: list[str]
    boxes: np.ndarray                      # (N,4) float64 [x, y, w, h]; NaN rows = not annotated
    absent: np.ndarray | None = None       # (N,) bool, True = target absent
    cover: np.ndarray | None = None        # (N,) int 0..8 (GOT-10k visible-ratio class)
    angles: np.ndarray | None = None       # (N,) degrees, counter-clockwise on screen
    polygons: np.ndarray | None = None     # (N,8) x1,y1,...,x4,y4
    axis_angles: np.ndarray | None = None  # (N,) target axis angle (rotation.txt), CCW, modulo 180
    frame_stride: int = 1                  # source frames per stored frame (meta.json)
    source: str = ""                       # the video the sequence was cut from ("" = its own)

    def __len__(self) -> int:
        return len(self.img_files)


# --------------------------------------------------------------------------------------------
# text parsing
_SPLIT = re.compile(r"[,\s]+")


def _read_table(path: Path, columns: int, *, allow_blank_file: bool = False) -> np.ndarray:
    """Parse a numeric text table (comma, tab or whitespace separated) into (rows, columns).

    Raises DatasetError naming the file and the 1-based line of the first bad row.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    lines = text.rstrip().splitlines()
    if not lines or (len(lines) == 1 and not lines[0].strip()):
        if allow_blank_file:
            return np.zeros((0, columns))
        raise DatasetError(f"{path}: file is empty")
    rows = np.empty((len(lines), columns), dtype=np.float64)
    for number, line in enumerate(lines, start=1):
        fields = [f for f in _SPLIT.split(line.strip()) if f]
        if len(fields) != columns:
            raise DatasetError(f"{path}:{number}: expected {columns} numbers, got "
                               f"{len(fields)} ({line.strip()[:60]!r})")
        try:
            rows[number - 1] = [float(f) for f in fields]
        except ValueError:
            raise DatasetError(f"{path}:{number}: not a number in {line.strip()[:60]!r}") from None
    return rows


def _frame_files(folder: Path) -> list[Path]:
    """Image files of a folder in frame order, checked for gaps in their numbering."""
    try:
        entries = [e for e in os.scandir(folder)
                   if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    except FileNotFoundError:
        raise DatasetError(f"frame folder not found: {folder}") from None
    if not entries:
        raise DatasetError(f"no frames (.jpg/.png) in {folder}")
    numbered = []
    for entry in entries:
        stem, ext = os.path.splitext(entry.name)
        if not stem.isdigit():
            raise DatasetError(f"frame file name is not a frame number: {Path(entry.path)}")
        numbered.append((int(stem), len(stem), ext, Path(entry.path)))
    numbered.sort()
    numbers = np.array([n for n, *_ in numbered])
    gaps = np.flatnonzero(np.diff(numbers) != 1)
    if gaps.size:
        first_gap = gaps[0]
        n, width, ext, _ = numbered[first_gap]
        if numbers[first_gap + 1] == n:
            raise DatasetError(f"duplicate frame number {n} in {folder}")
        missing = folder / f"{n + 1:0{width}d}{ext}"
        raise DatasetError(f"missing frame {missing} (frames jump from {n} to "
                           f"{numbers[first_gap + 1]})")
    return [p for *_, p in numbered]


def _check_first_box(boxes: np.ndarray, gt_file: Path) -> None:
    """The first row initialises the tracker: it must be a real box."""
    first = boxes[0]
    if not (np.isfinite(first).all() and first[2] > 0 and first[3] > 0):
        raise DatasetError(f"{gt_file}:1: the first-frame box {first.tolist()} is not a valid "
                           "box (width and height must be positive)")


def _read_labels(path: Path, length: int, dtype) -> np.ndarray | None:
    if not path.is_file():
        return None
    values = _read_table(path, 1)[:, 0]
    if len(values) != length:
        raise DatasetError(f"{path}: {len(values)} rows but the sequence has {length} frames")
    return values.astype(dtype)


def _read_extras(folder: Path, length: int) -> tuple:
    """angle.txt, polygon.txt and rotation.txt of a sequence folder, if present (row counts
    checked). rotation.txt holds the target's axis angle measured clockwise on screen (atan2 in
    image coordinates, y down, modulo 180): it is returned counter-clockwise like angle.txt."""
    tables = []
    for name, columns in (("angle.txt", 1), ("polygon.txt", 8), ("rotation.txt", 1)):
        path = folder / name
        values = None
        if path.is_file():
            values = _read_table(path, columns)
            if len(values) != length:
                raise DatasetError(f"{path}: {len(values)} rows but the sequence has {length} frames")
            if columns == 1:
                values = values[:, 0]
        tables.append(values)
    angles, polygons, rotation = tables
    return angles, polygons, (None if rotation is None else -rotation)


def _read_meta(folder: Path) -> dict:
    """frame_stride and source of a sequence folder's meta.json (defaults when there is none)."""
    path = folder / "meta.json"
    if not path.is_file():
        return {}
    import json

    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    stride = meta.get("frame_stride", 1)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise DatasetError(f"{path}: frame_stride must be a positive integer, got {stride!r}")
    group, name = meta.get("source_group", ""), meta.get("source_sequence", "")
    return {"frame_stride": stride, "source": f"{group}/{name}" if name else ""}


# --------------------------------------------------------------------------------------------
# layout detection
def _is_got10k_seq(folder: Path) -> bool:
    return (folder / "groundtruth.txt").is_file() and not (folder / "img").is_dir()


def _is_otb_seq(folder: Path) -> bool:
    return (folder / "img").is_dir()


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def detect_layout(root) -> str:
    """Return "got10k", "otb" or a benchmark layout of ``evaluation.benchmarks`` ("lasot",
    "uav123", "vot", "trackingnet") for a dataset folder; DatasetError if none fits."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    from .benchmarks import detect_benchmark_layout

    benchmark = detect_benchmark_layout(root)
    if benchmark is not None:
        return benchmark
    if (root / "list.txt").is_file():
        return "got10k"
    if any((root / s).is_dir() and ((root / s / "list.txt").is_file()
                                    or any(_is_got10k_seq(d) for d in _subdirs(root / s)))
           for s in GOT10K_SUBSETS):
        return "got10k"
    children = _subdirs(root)
    n_got = sum(_is_got10k_seq(d) for d in children)
    n_otb = sum(_is_otb_seq(d) for d in children)
    if n_got == 0 and n_otb == 0:
        raise DatasetError(f"cannot recognise the dataset layout of {root}: expected GOT-10k "
                           "(list.txt, <seq>/groundtruth.txt) or OTB (<seq>/img/, "
                           "<seq>/groundtruth_rect.txt)")
    return "got10k" if n_got >= n_otb else "otb"


def _got10k_subset_dir(root: Path, subset: str | None) -> Path:
    if subset is not None:
        if (root / subset).is_dir():
            return root / subset
        if root.name == subset:
            return root
        raise DatasetError(f"GOT-10k subset folder not found: {root / subset}")
    if (root / "list.txt").is_file() or any(_is_got10k_seq(d) for d in _subdirs(root)):
        return root
    for name in GOT10K_SUBSETS:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"no GOT-10k subset folder (list.txt or sequence folders) in {root}")


# --------------------------------------------------------------------------------------------
# per-layout sequence loaders
def _load_got10k_sequence(folder: Path) -> Sequence:
    if not folder.is_dir():
        raise DatasetError(f"sequence folder not found: {folder}")
    frames = _frame_files(folder)
    n = len(frames)
    gt_file = folder / "groundtruth.txt"
    boxes = _read_table(gt_file, 4)
    _check_first_box(boxes, gt_file)
    if len(boxes) == 1 and n > 1:
        # GOT-10k test set: only the first frame is annotated
        boxes = np.vstack([boxes, np.full((n - 1, 4), np.nan)])
    elif len(boxes) != n:
        raise DatasetError(f"{gt_file}: {len(boxes)} ground-truth rows but {n} frames in "
                           f"{folder}")
    absent = _read_labels(folder / "absence.label", n, bool)
    cover = _read_labels(folder / "cover.label", n, np.int64)
    angles, polygons, axis_angles = _read_extras(folder, n)
    return Sequence(folder.name, [str(p) for p in frames], boxes, absent, cover, angles,
                    polygons, axis_angles=axis_angles, **_read_meta(folder))


def _otb_gt_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("groundtruth*.txt"))
    nonempty = []
    for f in files:
        if f.stat().st_size == 0 or not f.read_text().strip():
            continue       # e.g. the empty groundtruth_rect.1.txt of Human4
        nonempty.append(f)
    return nonempty


def _load_otb_sequences(folder: Path) -> list[Sequence]:
    """One or more sequences (one per target) of an OTB sequence folder."""
    if not folder.is_dir():
        raise DatasetError(f"sequence folder not found: {folder}")
    gt_files = _otb_gt_files(folder)
    if not gt_files:
        raise DatasetError(f"no ground-truth file (groundtruth_rect.txt) in {folder}")
    frames = _frame_files(folder / "img")
    meta = {"source": "", **_read_meta(folder)}
    meta["source"] = meta["source"] or folder.name     # the targets of one folder share its video
    key = folder.name.lower()
    sequences = []
    for index, gt_file in enumerate(gt_files, start=1):
        boxes = _read_table(gt_file, 4)
        seq_frames = frames
        if key in _OTB_FRAME_RANGES and len(boxes) != len(frames):
            first, last = _OTB_FRAME_RANGES[key]
            seq_frames = [f for f in frames if first <= int(f.stem) <= last]
        if len(boxes) != len(seq_frames):
            raise DatasetError(f"{gt_file}: {len(boxes)} ground-truth rows but "
                               f"{len(seq_frames)} frames in {folder / 'img'}")
        omit = _OTB_INIT_OMIT.get(key, 0)
        if omit and len(seq_frames) > omit:
            seq_frames, boxes = seq_frames[omit:], boxes[omit:]
        else:
            omit = 0
        if not (np.isfinite(boxes[0]).all() and boxes[0, 2] > 0 and boxes[0, 3] > 0):
            raise DatasetError(f"{gt_file}:{omit + 1}: the first-frame box {boxes[0].tolist()} "
                               "is not a valid box (width and height must be positive)")
        name = folder.name if len(gt_files) == 1 else f"{folder.name}.{index}"
        extras = (None, None, None)
        if len(gt_files) == 1:
            extras = _read_extras(folder, len(seq_frames) + omit)
            extras = tuple(None if v is None else v[omit:] for v in extras)
        angles, polygons, axis_angles = extras
        sequences.append(Sequence(name, [str(p) for p in seq_frames], boxes, angles=angles,
                                  polygons=polygons, axis_angles=axis_angles, **meta))
    return sequences


# --------------------------------------------------------------------------------------------
def _handle_bad(exc: DatasetError, skip_bad: bool) -> None:
    if not skip_bad:
        raise exc
    warnings.warn(f"skipping sequence: {exc}", DatasetWarning, stacklevel=3)


def _base_name(name: str) -> str:
    """"Jogging.1" -> "Jogging" (target index of a two-target OTB sequence dropped)."""
    head, _, tail = name.rpartition(".")
    return head if head and tail.isdigit() else name


def _select(candidates: list[str], names, folder: Path, skip_bad: bool) -> list[str]:
    """Folder names to load: all candidates, or those matching ``names`` (exact or base)."""
    if names is None:
        return candidates
    def matches(candidate: str, name: str) -> bool:
        # "Jogging" selects the folder Jogging (both targets) or rotated folders Jogging.1/.2;
        # "Jogging.1" selects the folder Jogging (then filtered) or the folder Jogging.1
        return candidate in (name, _base_name(name)) or _base_name(candidate) == name

    wanted = sorted({str(n) for n in names})
    for name in wanted:
        if not any(matches(c, name) for c in candidates):
            _handle_bad(DatasetError(f"sequence {name!r} not found in {folder}"), skip_bad)
    return [c for c in candidates if any(matches(c, n) for n in wanted)]


def load_sequences(root, layout: str = "auto", subset: str | None = None, names=None,
                   skip_bad: bool = False, frame_ranges=None) -> list[Sequence]:
    """Load the sequences of a local dataset folder.

    root: dataset folder; layout: "auto", "got10k" or "otb"; subset: GOT-10k subset
    ("val", "test", "train"; default: ``root`` itself if it is a subset folder, else val,
    test, train, whichever exists first); names: only these sequences (a two-target OTB name
    such as "Jogging" selects Jogging.1 and Jogging.2); skip_bad: skip a broken sequence with a
    DatasetWarning instead of raising DatasetError. The layouts "lasot", "uav123", "vot" and
    "trackingnet" are read by ``evaluation.benchmarks.load_benchmark`` (its ``subset`` meanings;
    ``frame_ranges``: UAV123's configSeqs.m).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if layout == "auto":
        layout = detect_layout(root)
    from .benchmarks import BENCHMARK_LAYOUTS, load_benchmark

    if layout in BENCHMARK_LAYOUTS:
        return load_benchmark(root, layout, subset=subset, names=names, skip_bad=skip_bad,
                              frame_ranges=frame_ranges)
    if frame_ranges is not None:
        raise DatasetError("a frame-ranges file is only used with the UAV123 layout")
    if layout not in ("got10k", "otb"):
        raise DatasetError(f"unknown dataset layout {layout!r} (use auto, got10k, otb, "
                           f"{', '.join(BENCHMARK_LAYOUTS)})")

    sequences: list[Sequence] = []
    if layout == "got10k":
        subset_dir = _got10k_subset_dir(root, subset)
        list_file = subset_dir / "list.txt"
        if list_file.is_file():
            candidates = [line.strip() for line in list_file.read_text().splitlines()
                          if line.strip()]
            if not candidates:
                raise DatasetError(f"{list_file}: no sequence names")
        else:
            candidates = [d.name for d in _subdirs(subset_dir) if _is_got10k_seq(d)]
        for name in _select(candidates, names, subset_dir, skip_bad):
            try:
                sequences.append(_load_got10k_sequence(subset_dir / name))
            except DatasetError as exc:
                _handle_bad(exc, skip_bad)
    else:
        candidates = [d.name for d in _subdirs(root) if _is_otb_seq(d)]
        for name in _select(candidates, names, root, skip_bad):
            try:
                loaded = _load_otb_sequences(root / name)
            except DatasetError as exc:
                _handle_bad(exc, skip_bad)
                continue
            if names is not None:
                wanted = {str(n) for n in names}
                loaded = [s for s in loaded if s.name in wanted or name in wanted]
            sequences.extend(loaded)

    if not sequences:
        raise DatasetError(f"no usable sequences in {root}")
    return sequences


def split_by_source(sequences: list[Sequence], fraction: float, seed: int = 0) -> tuple[list, list]:
    """(kept, held_out): about ``fraction`` of the source videos held out, chosen by ``seed``.

    Sequences cut from the same video (``Sequence.source``; a sequence without one is its own
    video) land on the same side, so a validation split never shares footage with training.
    The choice depends only on the set of source names and the seed, not on their order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    sources = sorted({s.source or s.name for s in sequences})
    count = int(round(fraction * len(sources)))
    if fraction > 0 and len(sources) > 1:
        count = min(max(count, 1), len(sources) - 1)
    order = np.random.default_rng([int(seed), 20241129]).permutation(len(sources))
    held = {sources[i] for i in order[:count]}
    kept = [s for s in sequences if (s.source or s.name) not in held]
    return kept, [s for s in sequences if (s.source or s.name) in held]
