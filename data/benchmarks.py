"""Readers for the LaSOT, UAV123, VOT (short-term) and TrackingNet folder layouts.

They return :class:`BenchmarkSequence` objects (a :class:`~data.sequence.Sequence` with
per-sequence attributes, per-frame tags and a few benchmark facts) and are reached through
``data.load_sequences(root, layout=...)`` / ``data.detect_layout`` (:mod:`data.layouts`). As there, nothing
is downloaded and every file is checked, with errors that name the file.

LaSOT (the whole root, or one category folder)::

    <root>/<category>/<category>-<n>/img/00000001.jpg ...
    <root>/<category>/<category>-<n>/groundtruth.txt     x,y,w,h per frame
    <root>/<category>/<category>-<n>/full_occlusion.txt  one line: 0/1 per frame, comma separated
    <root>/<category>/<category>-<n>/out_of_view.txt     one line: 0/1 per frame
    <root>/<category>/<category>-<n>/nlp.txt             one-sentence description

  A frame with full occlusion or out of view is an absent-target frame (``Sequence.absent``).
  ``subset``: "test" / "train" (the official split lists shipped with the got10k toolkit), or a
  text file with one sequence name per line (e.g. LaSOT's testing_set.txt).

UAV123 (``subset`` "UAV123", the default, or "UAV20L")::

    <root>/data_seq/UAV123/<folder>/000001.jpg ...
    <root>/anno/UAV123/<seq>.txt          x,y,w,h per frame; NaN rows: target absent
    <root>/anno/UAV123/att/<seq>.txt      one line of 12 comma-separated 0/1 attribute flags

  Sequences such as bird1_1, bird1_2 are cut from one folder (bird1): each one's folder and first
  and last frame come from the benchmark's configSeqs.m (``frame_ranges=<file>``, or
  ``<root>/configSeqs.m`` when present), else from the table shipped with the got10k toolkit.

VOT short-term (2018-2022)::

    <root>/list.txt                       sequence names
    <root>/<seq>/color/00000001.jpg ...   (older editions: <root>/<seq>/00000001.jpg; a
                                          ``sequence`` file's channels.color pattern wins)
    <root>/<seq>/groundtruth.txt          per frame: x,y,w,h or x1,y1,...,x4,y4 or a mask
                                          "m<x0>,<y0>,<w>,<h>,<RLE>" (VOT2020+)
    <root>/<seq>/<tag>.tag                per-frame 0/1 (camera_motion, illum_change,
                                          occlusion, size_change, motion_change)

  Polygons are kept (``Sequence.polygons``) and their axis-aligned bounds are the boxes; a mask
  is converted to the bounding box of its pixels (its polygon is that box): mask overlap is not
  computed.

TrackingNet::

    <root>/TRAIN_<k>/frames/<seq>/0.jpg ...   and   <root>/TRAIN_<k>/anno/<seq>.txt
    <root>/TEST/frames/<seq>/0.jpg ...        and   <root>/TEST/anno/<seq>.txt (first box only)

  ``subset``: "test" (TEST, the default when present), "train" (every TRAIN_<k>), or a chunk
  folder name ("TRAIN_3"); ``root`` may also be a chunk folder itself.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
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

__all__ = ["BenchmarkSequence", "UAV123_ATTRIBUTES", "VOT_TAGS",
           "is_lasot", "is_trackingnet", "is_uav123", "is_vot", "load_lasot", "load_trackingnet", "load_uav123", "load_vot", "uav123_frame_ranges", "lasot_split",
           "parse_config_seqs", "decode_vot_mask"]


# the 12 flags of anno/UAV123/att/<seq>.txt, in the benchmark's order
UAV123_ATTRIBUTES = ("Scale Variation", "Aspect Ratio Change", "Low Resolution", "Fast Motion",
                     "Full Occlusion", "Partial Occlusion", "Out-of-View", "Background Clutter",
                     "Illumination Variation", "Viewpoint Change", "Camera Motion",
                     "Similar Object")
VOT_TAGS = ("camera_motion", "illum_change", "occlusion", "size_change", "motion_change")


@dataclass
class BenchmarkSequence(Sequence):
    """A sequence with its benchmark's annotations beyond the boxes."""

    attributes: dict = field(default_factory=dict)   # per-sequence flags: name -> bool
    frame_tags: dict = field(default_factory=dict)   # per-frame flags: name -> (N,) bool
    description: str = ""                            # LaSOT nlp.txt
    first_frame_only: bool = False                   # ground truth withheld after frame 0


# --------------------------------------------------------------------------------------------
# small parsers
_SPLIT = re.compile(r"[,\s]+")


def _read_flags(path: Path, length: int | None = None, *, pad: bool = False) -> np.ndarray:
    """0/1 flags, comma or whitespace separated, on one line or one per line."""
    fields = [f for f in _SPLIT.split(read_text_file(path).strip()) if f]
    if not fields:
        raise DatasetError(f"{path}: file is empty")
    try:
        values = np.array([float(f) for f in fields])
    except ValueError:
        raise DatasetError(f"{path}: expected 0/1 flags, got {' '.join(fields[:8])!r}") from None
    if not np.isin(values, (0.0, 1.0)).all():
        bad = values[~np.isin(values, (0.0, 1.0))][0]
        raise DatasetError(f"{path}: expected 0/1 flags, found {bad:g}")
    if length is not None:
        if len(values) > length or (len(values) < length and not pad):
            raise DatasetError(f"{path}: {len(values)} flags but the sequence has {length} frames")
        values = np.concatenate([values, np.zeros(length - len(values))])
    return values.astype(bool)


def _names_file(path: Path) -> list[str]:
    names = [line.strip() for line in read_text_file(path).splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path}: no sequence names")
    return names


def _load_each(candidates: dict, names, folder: Path, skip_bad: bool, load) -> list[Sequence]:
    """``load(name)`` for each selected candidate name; a DatasetError is one bad sequence
    (skipped with a warning under ``skip_bad``, else raised)."""
    sequences = []
    for name in _select(list(candidates), names, folder, skip_bad):
        try:
            sequences.append(load(name))
        except DatasetError as exc:
            _handle_bad(exc, skip_bad)
    return sequences


# --------------------------------------------------------------------------------------------
# layout detection
def _lasot_seq(folder: Path) -> bool:
    return (folder / "img").is_dir() and (folder / "full_occlusion.txt").is_file()


def _trackingnet_chunk(folder: Path) -> bool:
    return (folder / "frames").is_dir() and (folder / "anno").is_dir()


def _trackingnet_chunks(root: Path) -> list[Path]:
    return [d for d in _subdirs(root)
            if re.fullmatch(r"TRAIN_\d+|TEST", d.name) and _trackingnet_chunk(d)]


def _vot_frames_dir(folder: Path) -> Path:
    sequence_file = folder / "sequence"
    if sequence_file.is_file():
        for line in read_text_file(sequence_file).splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "channels.color" and value.strip():
                return (folder / value.strip()).parent
    return folder / "color" if (folder / "color").is_dir() else folder


def is_vot(root: Path) -> bool:
    if not (root / "list.txt").is_file():
        return False
    names = [n for n in (root / "list.txt").read_text(errors="replace").split() if n]
    if not names or not (root / names[0]).is_dir():
        return False
    seq = root / names[0]
    if (seq / "color").is_dir() or (seq / "sequence").is_file() or any(seq.glob("*.tag")):
        return True
    gt = seq / "groundtruth.txt"
    if gt.is_file():
        first = gt.read_text(errors="replace").split("\n", 1)[0].strip()
        return first.startswith("m") or len([f for f in _SPLIT.split(first) if f]) == 8
    return False


# --------------------------------------------------------------------------------------------
# LaSOT
def lasot_split(subset: str) -> list[str]:
    """The official LaSOT "test" (280) / "train" (1120) sequence names, as shipped with the
    got10k toolkit (got10k/datasets/lasot.json)."""
    from importlib.resources import files

    splits = json.loads(files("got10k.datasets").joinpath("lasot.json").read_text())
    return list(splits[subset])


def _load_lasot(root: Path, subset, names, skip_bad) -> list[Sequence]:
    if any(_lasot_seq(d) for d in _subdirs(root)):          # one category folder
        folders = {d.name: d for d in _subdirs(root) if _lasot_seq(d)}
    else:
        folders = {s.name: s for d in _subdirs(root) for s in _subdirs(d) if (s / "img").is_dir()}
    if subset is not None:
        if subset in ("test", "train"):
            wanted = lasot_split(subset)
        elif Path(subset).is_file():
            wanted = _names_file(Path(subset))
        else:
            raise DatasetError(f"LaSOT subset must be test, train or a file of sequence names, "
                               f"got {subset!r}")
        for name in wanted:
            if name not in folders:
                _handle_bad(DatasetError(f"LaSOT {subset} sequence {name!r} not found in {root}"),
                            skip_bad)
        folders = {n: folders[n] for n in wanted if n in folders}
    return _load_each(folders, names, root, skip_bad, lambda name: _lasot_sequence(folders[name]))


def _lasot_sequence(folder: Path) -> BenchmarkSequence:
    frames = _frame_files(folder / "img")
    n = len(frames)
    gt_file = folder / "groundtruth.txt"
    boxes = _read_table(gt_file, 4)
    if len(boxes) != n:
        raise DatasetError(f"{gt_file}: {len(boxes)} ground-truth rows but {n} frames in "
                           f"{folder / 'img'}")
    _check_first_box(boxes, gt_file)
    flags = {}
    for name in ("full_occlusion", "out_of_view"):
        path = folder / f"{name}.txt"
        if path.is_file():
            flags[name] = _read_flags(path, n)
    absent = None
    if flags:
        absent = np.logical_or.reduce(list(flags.values()))
    nlp = folder / "nlp.txt"
    description = read_text_file(nlp).strip() if nlp.is_file() else ""
    return BenchmarkSequence(folder.name, [str(p) for p in frames], boxes, absent=absent,
                             source=folder.name, description=description)


# --------------------------------------------------------------------------------------------
# UAV123
_CONFIG_SEQ = re.compile(
    r"struct\(\s*'name'\s*,\s*'(?P<name>[^']+)'\s*,\s*'path'\s*,\s*'(?P<path>[^']*)'\s*,"
    r"\s*'startFrame'\s*,\s*(?P<start>\d+)\s*,\s*'endFrame'\s*,\s*(?P<end>\d+)")


def parse_config_seqs(path) -> dict[str, tuple[str, int, int]]:
    """The UAV123 benchmark's configSeqs.m (MATLAB structs with name, path, startFrame,
    endFrame) -> {name: (frame folder name, first frame, last frame)}."""
    path = Path(path)
    ranges = {}
    for match in _CONFIG_SEQ.finditer(read_text_file(path)):
        folder = [p for p in re.split(r"[\\/]", match["path"]) if p]
        if not folder:
            raise DatasetError(f"{path}: sequence {match['name']!r} has an empty path")
        first, last = int(match["start"]), int(match["end"])
        if last < first:
            raise DatasetError(f"{path}: sequence {match['name']!r} ends ({last}) before it "
                               f"starts ({first})")
        ranges[match["name"]] = (folder[-1], first, last)
    if not ranges:
        raise DatasetError(f"{path}: no struct('name',...,'path',...,'startFrame',...,"
                           "'endFrame',...) entries")
    return ranges


def uav123_frame_ranges(version: str = "UAV123") -> dict[str, tuple[str, int, int]]:
    """{name: (frame folder, first frame, last frame)} of UAV123 / UAV20L, from the table
    shipped with the got10k toolkit (got10k/datasets/uav123.json, taken from configSeqs.m)."""
    from importlib.resources import files

    table = json.loads(files("got10k.datasets").joinpath("uav123.json").read_text())[version]
    return {name: (m["folder_name"], int(m["start_frame"]), int(m["end_frame"]))
            for name, m in table.items()}


def _load_uav123(root: Path, subset, names, skip_bad, frame_ranges=None) -> list[Sequence]:
    version = subset or "UAV123"
    if version not in ("UAV123", "UAV20L", "UAV123_10fps"):
        raise DatasetError(f"UAV123 subset must be UAV123, UAV20L or UAV123_10fps, got {version!r}")
    anno_dir = root / "anno" / version
    if not anno_dir.is_dir():
        raise DatasetError(f"annotation folder not found: {anno_dir}")
    frames_root = root / "data_seq" / ("UAV123_10fps" if version == "UAV123_10fps" else "UAV123")
    if frame_ranges is not None:
        ranges = parse_config_seqs(frame_ranges) if str(frame_ranges).endswith(".m") else \
            _json_ranges(Path(frame_ranges))
    elif (root / "configSeqs.m").is_file():
        ranges = parse_config_seqs(root / "configSeqs.m")
    elif version == "UAV123_10fps":
        raise DatasetError("UAV123_10fps needs its configSeqs.m (frame ranges): put it in "
                           f"{root} or pass it as the frame-ranges file")
    else:
        ranges = uav123_frame_ranges(version)
    candidates = {p.stem: p for p in sorted(anno_dir.glob("*.txt"))}
    if not candidates:
        raise DatasetError(f"no annotation files (*.txt) in {anno_dir}")

    def load(name: str) -> BenchmarkSequence:
        if name not in ranges:
            raise DatasetError(f"no frame range for UAV123 sequence {name!r} (give the "
                               "benchmark's configSeqs.m as the frame-ranges file)")
        return _uav_sequence(name, candidates[name], frames_root, ranges[name])

    return _load_each(candidates, names, anno_dir, skip_bad, load)


def _json_ranges(path: Path) -> dict:
    """A JSON file {name: {"folder_name", "start_frame", "end_frame"}} (the got10k table's form)."""
    try:
        table = json.loads(read_text_file(path))
        return {n: (m["folder_name"], int(m["start_frame"]), int(m["end_frame"]))
                for n, m in table.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DatasetError(f"{path}: expected {{name: {{folder_name, start_frame, end_frame}}}} "
                           f"({exc})") from None


def _uav_sequence(name: str, gt_file: Path, frames_root: Path, span) -> BenchmarkSequence:
    folder_name, first, last = span
    folder = frames_root / folder_name
    if not folder.is_dir():
        raise DatasetError(f"frame folder not found: {folder}")
    frames = [folder / f"{i:06d}.jpg" for i in range(first, last + 1)]
    missing = next((f for f in frames if not f.is_file()), None)
    if missing is not None:
        raise DatasetError(f"missing frame {missing} (sequence {name}: frames {first}-{last})")
    boxes = _read_table(gt_file, 4)
    if len(boxes) != len(frames):
        raise DatasetError(f"{gt_file}: {len(boxes)} ground-truth rows but sequence {name} has "
                           f"{len(frames)} frames ({folder_name} {first}-{last})")
    _check_first_box(boxes, gt_file)
    attributes = {}
    att_file = gt_file.parent / "att" / gt_file.name
    if att_file.is_file():
        flags = _read_flags(att_file)
        if len(flags) != len(UAV123_ATTRIBUTES):
            raise DatasetError(f"{att_file}: {len(flags)} flags, expected "
                               f"{len(UAV123_ATTRIBUTES)} ({', '.join(UAV123_ATTRIBUTES)})")
        attributes = dict(zip(UAV123_ATTRIBUTES, map(bool, flags)))
    absent = ~np.isfinite(boxes).all(axis=1)
    return BenchmarkSequence(name, [str(f) for f in frames], boxes, absent=absent,
                             source=folder_name, attributes=attributes)


# --------------------------------------------------------------------------------------------
# VOT
def decode_vot_mask(fields: list[str]) -> tuple[np.ndarray, tuple[int, int]]:
    """VOT mask encoding x0,y0,w,h,RLE (RLE: alternating runs of 0s and 1s over the w x h
    region, row by row, starting with 0s) -> (h, w) bool mask and its (x0, y0) offset."""
    x0, y0, w, h, *runs = (int(f) for f in fields)
    runs = np.asarray(runs, dtype=np.int64)
    if w < 0 or h < 0 or (runs < 0).any() or runs.sum() > w * h:
        raise ValueError("inconsistent mask size and run lengths")
    values = np.arange(len(runs)) % 2 == 1
    flat = np.zeros(w * h, dtype=bool)
    flat[:runs.sum()] = np.repeat(values, runs)
    return flat.reshape(h, w), (x0, y0)


def _vot_region(line: str, path: Path, number: int) -> np.ndarray:
    """One groundtruth.txt line -> 8 polygon values (NaN for an empty mask)."""
    text = line.strip()
    try:
        if text.startswith("m"):
            mask, (x0, y0) = decode_vot_mask([f for f in text[1:].split(",") if f.strip()])
            ys, xs = np.nonzero(mask)
            if xs.size == 0:
                return np.full(8, np.nan)
            x, y = x0 + xs.min(), y0 + ys.min()
            x1, y1 = x0 + xs.max() + 1, y0 + ys.max() + 1
            return np.array([x, y, x1, y, x1, y1, x, y1], dtype=np.float64)
        values = [float(f) for f in _SPLIT.split(text) if f]
    except ValueError as exc:
        raise DatasetError(f"{path}:{number}: cannot read the region {text[:60]!r} "
                           f"({exc})") from None
    if len(values) == 4:
        x, y, w, h = values
        return np.array([x, y, x + w, y, x + w, y + h, x, y + h])
    if len(values) == 8:
        return np.array(values)
    raise DatasetError(f"{path}:{number}: expected 4 (box) or 8 (polygon) numbers or a mask "
                       f"'m...', got {len(values)}")


def _polygon_bounds(polygons: np.ndarray) -> np.ndarray:
    xs, ys = polygons[:, 0::2], polygons[:, 1::2]
    with np.errstate(invalid="ignore"):
        x0, y0 = xs.min(axis=1), ys.min(axis=1)
        return np.stack([x0, y0, xs.max(axis=1) - x0, ys.max(axis=1) - y0], axis=1)


def _load_vot(root: Path, names, skip_bad) -> list[Sequence]:
    candidates = {n: root / n for n in _names_file(root / "list.txt")}
    return _load_each(candidates, names, root, skip_bad, lambda name: _vot_sequence(candidates[name]))


def _vot_sequence(folder: Path) -> BenchmarkSequence:
    if not folder.is_dir():
        raise DatasetError(f"sequence folder not found: {folder}")
    frames = _frame_files(_vot_frames_dir(folder))
    n = len(frames)
    gt_file = folder / "groundtruth.txt"
    lines = [line for line in read_text_file(gt_file).splitlines() if line.strip()]
    if len(lines) != n:
        raise DatasetError(f"{gt_file}: {len(lines)} ground-truth rows but {n} frames")
    polygons = np.stack([_vot_region(line, gt_file, i) for i, line in enumerate(lines, 1)])
    boxes = _polygon_bounds(polygons)
    _check_first_box(boxes, gt_file)
    tags = {}
    for path in sorted(folder.glob("*.tag")) + sorted(folder.glob("*.label")):
        tags[path.stem] = _read_flags(path, n, pad=True)   # frames past its end: untagged
    absent = ~np.isfinite(polygons).all(axis=1)
    return BenchmarkSequence(folder.name, [str(p) for p in frames], boxes, absent=absent,
                             polygons=polygons, source=folder.name, frame_tags=tags)


# --------------------------------------------------------------------------------------------
# TrackingNet
def _trackingnet_chunk_dirs(root: Path, subset) -> list[Path]:
    if _trackingnet_chunk(root):
        return [root]
    chunks = {d.name: d for d in _trackingnet_chunks(root)}
    train = [d for n, d in sorted(chunks.items(), key=lambda kv: kv[0]) if n.startswith("TRAIN_")]
    if subset is None:
        chosen = [chunks["TEST"]] if "TEST" in chunks else train
    elif subset.lower() == "test":
        chosen = [chunks["TEST"]] if "TEST" in chunks else []
    elif subset.lower() == "train":
        chosen = train
    else:
        chosen = [chunks[subset]] if subset in chunks else []
    if not chosen:
        raise DatasetError(f"TrackingNet subset {subset!r} not found in {root} (present: "
                           f"{', '.join(chunks) or 'none'})")
    return chosen


def _load_trackingnet(root: Path, subset, names, skip_bad) -> list[Sequence]:
    candidates = {}
    for chunk in _trackingnet_chunk_dirs(root, subset):
        for anno in sorted((chunk / "anno").glob("*.txt")):
            candidates.setdefault(anno.stem, (chunk, anno))
    if not candidates:
        raise DatasetError(f"no annotation files (anno/*.txt) under {root}")
    return _load_each(candidates, names, root, skip_bad,
                      lambda name: _trackingnet_sequence(name, *candidates[name]))


def _trackingnet_sequence(name: str, chunk: Path, gt_file: Path) -> BenchmarkSequence:
    frames = _frame_files(chunk / "frames" / name)
    n = len(frames)
    boxes = _read_table(gt_file, 4)
    _check_first_box(boxes, gt_file)
    first_only = len(boxes) == 1 and n > 1
    if first_only:                                 # TEST split: only the first box is given
        boxes = np.vstack([boxes, np.full((n - 1, 4), np.nan)])
    elif len(boxes) != n:
        raise DatasetError(f"{gt_file}: {len(boxes)} ground-truth rows but {n} frames in "
                           f"{chunk / 'frames' / name}")
    return BenchmarkSequence(name, [str(p) for p in frames], boxes, source=name,
                             first_frame_only=first_only)


# --------------------------------------------------------------------------------------------
# the loaders data.layouts registers: load(root, subset, names, skip_bad[, frame_ranges])
def load_lasot(root: Path, subset=None, names=None, skip_bad: bool = False) -> list[Sequence]:
    return _load_lasot(root, subset, names, skip_bad)


def load_uav123(root: Path, subset=None, names=None, skip_bad: bool = False, frame_ranges=None) -> list[Sequence]:
    return _load_uav123(root, subset, names, skip_bad, frame_ranges)


def load_vot(root: Path, subset=None, names=None, skip_bad: bool = False) -> list[Sequence]:
    if subset is not None:
        raise DatasetError("the VOT layout has no subsets (give the edition's folder)")
    return _load_vot(root, names, skip_bad)


def load_trackingnet(root: Path, subset=None, names=None, skip_bad: bool = False) -> list[Sequence]:
    return _load_trackingnet(root, subset, names, skip_bad)


def is_uav123(root: Path) -> bool:
    return (root / "anno").is_dir() and (root / "data_seq").is_dir()


def is_trackingnet(root: Path) -> bool:
    return bool(_trackingnet_chunk(root) or _trackingnet_chunks(root))


def is_lasot(root: Path) -> bool:
    children = _subdirs(root)
    return any(_lasot_seq(d) for d in children) or any(_lasot_seq(s) for d in children for s in _subdirs(d))
