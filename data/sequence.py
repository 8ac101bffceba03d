"""The sequence type every reader returns, the dataset errors, and the file parsing the readers share.

Nothing here downloads anything; every parse error names the file and line.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DatasetError", "DatasetWarning", "Sequence", "IMAGE_EXTENSIONS", "box_to_polygon", "file_sha256", "sequence_identity",
           "split_by_source"]

# every image suffix a frame folder may hold: each such file is a frame (or an error), never skipped
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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


def read_text_file(path: Path) -> str:
    """A dataset's text file (ground truth, list.txt, labels): DatasetError naming it when it is
    missing, unreadable or not UTF-8 text."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"cannot read {path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_table(path: Path, columns: int, *, allow_blank_file: bool = False) -> np.ndarray:
    """Parse a numeric text table (comma, tab or whitespace separated) into (rows, columns).

    Raises DatasetError naming the file and the 1-based line of the first bad row.
    """
    lines = read_text_file(path).rstrip().splitlines()
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
        raise DatasetError(f"no frames ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
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


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


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


def box_to_polygon(boxes: np.ndarray) -> np.ndarray:
    """[x,y,w,h] boxes -> (N, 8) corners, clockwise on screen from the top-left."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    return np.stack([x0, y0, x1, y0, x1, y1, x0, y1], axis=1)


_SHA256: dict[tuple, str] = {}


def file_sha256(path) -> str | None:
    """SHA-256 of a file's content (None when there is no such file), computed once per process
    for each (path, size, mtime)."""
    path = Path(path).resolve()
    try:
        st = path.stat()
    except OSError:
        return None
    cache = (str(path), st.st_size, st.st_mtime_ns)
    if cache not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA256[cache] = digest.hexdigest()
    return _SHA256[cache]


def sequence_identity(seq: Sequence, root=None) -> str:
    """SHA-256 of a sequence's annotations and frames (path relative to ``root`` and the SHA-256 of
    each frame file's bytes). Content, not file times: a dataset copied again (new mtimes, same
    bytes) keeps its stored results, and a frame rewritten with other pixels at the same size does
    not. Hashing is cheap next to tracking (about 0.1 s per 10 MB of JPEGs; once per process)."""
    digest = hashlib.sha256()
    for field in ("boxes", "absent", "cover", "angles", "polygons"):
        values = getattr(seq, field)
        if values is not None:
            values = np.ascontiguousarray(values)
            digest.update(f"{field} {values.dtype} {values.shape}\n".encode() + values.tobytes())
    for path in seq.img_files:
        content = file_sha256(path)
        if content is None:
            raise FileNotFoundError(path)
        name = os.path.relpath(path, root) if root is not None else str(path)
        digest.update(f"{name} {content}\n".encode())
    return digest.hexdigest()
