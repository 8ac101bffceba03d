"""Readers of the GOT-10k and OTB folder layouts (registered in :mod:`data.layouts`).

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

from pathlib import Path

import numpy as np

from .sequence import (
    DatasetError,
    Sequence,
    _check_first_box,
    _frame_files,
    _handle_bad,
    _read_table,
    _select,
    _subdirs,
    read_text_file,
)

__all__ = ["is_got10k", "is_otb", "load_got10k", "load_otb"]

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


def _sequence_counts(root: Path) -> tuple[int, int]:
    children = _subdirs(root)
    return sum(_is_got10k_seq(d) for d in children), sum(_is_otb_seq(d) for d in children)


def is_got10k(root: Path) -> bool:
    """A GOT-10k subset folder (list.txt, or more GOT-10k than OTB sequence folders), or a root
    holding subset folders."""
    if (root / "list.txt").is_file():
        return True
    if any((root / s).is_dir() and ((root / s / "list.txt").is_file()
                                    or any(_is_got10k_seq(d) for d in _subdirs(root / s)))
           for s in GOT10K_SUBSETS):
        return True
    n_got, n_otb = _sequence_counts(root)
    return n_got > 0 and n_got >= n_otb


def is_otb(root: Path) -> bool:
    n_got, n_otb = _sequence_counts(root)
    return n_otb > n_got


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
        if f.stat().st_size == 0 or not read_text_file(f).strip():
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
def load_got10k(root: Path, subset=None, names=None, skip_bad: bool = False) -> list[Sequence]:
    subset_dir = _got10k_subset_dir(root, subset)
    list_file = subset_dir / "list.txt"
    if list_file.is_file():
        candidates = [line.strip() for line in read_text_file(list_file).splitlines() if line.strip()]
        if not candidates:
            raise DatasetError(f"{list_file}: no sequence names")
    else:
        candidates = [d.name for d in _subdirs(subset_dir) if _is_got10k_seq(d)]
    sequences = []
    for name in _select(candidates, names, subset_dir, skip_bad):
        try:
            sequences.append(_load_got10k_sequence(subset_dir / name))
        except DatasetError as exc:
            _handle_bad(exc, skip_bad)
    return sequences


def load_otb(root: Path, subset=None, names=None, skip_bad: bool = False) -> list[Sequence]:
    sequences = []
    for name in _select([d.name for d in _subdirs(root) if _is_otb_seq(d)], names, root, skip_bad):
        try:
            loaded = _load_otb_sequences(root / name)
        except DatasetError as exc:
            _handle_bad(exc, skip_bad)
            continue
        if names is not None:
            wanted = {str(n) for n in names}
            loaded = [s for s in loaded if s.name in wanted or name in wanted]
        sequences.extend(loaded)
    return sequences
