"""Rotating benchmarks (Rot-OTB style) made from any OTB- or GOT-10k-layout folder.

Frame t (0-based) of every sequence is rotated about the image centre by t * deg_per_frame
degrees, counter-clockwise as seen on screen, keeping the image size; the uncovered corners
are filled by replicating the border (or with black). The ground truth is rotated with the
frames: ``polygon.txt`` holds the rotated corners of the original box (or of the original
polygon), ``groundtruth.txt`` their axis-aligned bounding box clipped to the image, and
``angle.txt`` the original angle (0 if none) plus t * deg_per_frame. Output is a GOT-10k
layout subset folder, which every tool of this package reads.

Coordinates are continuous pixel coordinates (pixel (i, j) covers [i, i+1) x [j, j+1)), so
the image centre is (W/2, H/2); OpenCV's warpAffine works on pixel centres, whose rotation
centre is therefore ((W-1)/2, (H-1)/2).
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import shapely

from common.atomic import replaced_directory, write_text_atomic
from common.locks import LOCK_NAME, FolderLock

from .frames import FrameError, read_frame
from .layouts import load_sequences
from .sequence import DatasetError, DatasetWarning, Sequence, box_to_polygon, sequence_identity

__all__ = ["make_rotating", "rotation_matrices", "rotate_polygons", "polygon_bounding_boxes",
           "cover_classes", "INFO_FILE"]

INFO_FILE = "rotating_info.json"
SOURCE_FILE = "source.json"          # in each finished sequence: the content key of its source
MAX_DEG_PER_FRAME = 360.0     # beyond a turn per frame the rate is meaningless (and 1e308 overflows the angles)
_BORDERS = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}


def rotation_matrices(angles_deg: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 2, 3) affine matrices rotating continuous pixel coordinates about (W/2, H/2) by
    the given angles, counter-clockwise on screen (same convention as
    cv2.getRotationMatrix2D, whose y axis points down)."""
    theta = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    cos, sin = np.cos(theta), np.sin(theta)
    cx, cy = width / 2.0, height / 2.0
    m = np.empty((len(theta), 2, 3))
    m[:, 0, 0], m[:, 0, 1] = cos, sin
    m[:, 1, 0], m[:, 1, 1] = -sin, cos
    m[:, 0, 2] = cx - cos * cx - sin * cy
    m[:, 1, 2] = cy + sin * cx - cos * cy
    return m


def _pixel_centre_matrix(m: np.ndarray) -> np.ndarray:
    """The same rotation for OpenCV's pixel-centre coordinates (q = p - 0.5)."""
    out = m.copy()
    out[:, :, 2] = m[:, :, 2] + 0.5 * m[:, :, :2].sum(axis=2) - 0.5
    return out


def rotate_polygons(polygons: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply per-frame (N,2,3) affine matrices to (N,8) polygons."""
    pts = np.asarray(polygons, dtype=np.float64).reshape(-1, 4, 2)
    out = np.einsum("nij,nkj->nki", matrices[:, :, :2], pts) + matrices[:, None, :, 2]
    return out.reshape(-1, 8)


def polygon_bounding_boxes(polygons: np.ndarray, width: int, height: int) -> np.ndarray:
    """Axis-aligned [x,y,w,h] boxes of (N,8) polygons, clipped to the image."""
    pts = np.asarray(polygons, dtype=np.float64).reshape(-1, 4, 2)
    x0 = np.clip(pts[..., 0].min(axis=1), 0, width)
    x1 = np.clip(pts[..., 0].max(axis=1), 0, width)
    y0 = np.clip(pts[..., 1].min(axis=1), 0, height)
    y1 = np.clip(pts[..., 1].max(axis=1), 0, height)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def _visible_ratios(polygons: np.ndarray, width: int, height: int) -> np.ndarray:
    """Fraction of each polygon's area inside the image (NaN for non-finite rows)."""
    polygons = np.asarray(polygons, dtype=np.float64)
    ratios = np.full(len(polygons), np.nan)
    finite = np.isfinite(polygons).all(axis=1)
    if finite.any():
        geoms = shapely.polygons(polygons[finite].reshape(-1, 4, 2))
        frame = shapely.box(0.0, 0.0, float(width), float(height))
        area = shapely.area(geoms)
        inside = shapely.area(shapely.intersection(geoms, frame))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[finite] = np.where(area > 0, inside / area, 0.0)
    return ratios


def cover_classes(ratios: np.ndarray) -> np.ndarray:
    """GOT-10k cover classes of visible ratios: 0 = none, 1..7 = steps of 15 %, 8 = all."""
    r = np.nan_to_num(np.asarray(ratios, dtype=np.float64), nan=1.0)
    steps = np.clip(np.ceil(r / 0.15 - 1e-9), 1, 7)
    return np.where(r >= 1.0 - 1e-9, 8, np.where(r <= 1e-12, 0, steps)).astype(np.int64)


def _frame_size(path: str) -> tuple[int, int]:
    try:
        image = read_frame(path)
    except FrameError as exc:
        raise DatasetError(str(exc)) from None
    return image.shape[1], image.shape[0]


def _write_sequence(seq: Sequence, out_dir: Path, deg_per_frame: float, border: str,
                    source_dir: str, workers: int) -> None:
    width, height = _frame_size(seq.img_files[0])
    n = len(seq)
    step_angles = np.arange(n) * float(deg_per_frame)
    matrices = rotation_matrices(step_angles, width, height)
    cv_matrices = _pixel_centre_matrix(matrices)

    src_polygons = seq.polygons if seq.polygons is not None else box_to_polygon(seq.boxes)
    polygons = rotate_polygons(src_polygons, matrices)
    boxes = polygon_bounding_boxes(polygons, width, height)
    ratios = _visible_ratios(polygons, width, height)
    absent = np.nan_to_num(ratios, nan=1.0) <= 1e-12
    if seq.absent is not None:
        absent |= seq.absent.astype(bool)
    cover = cover_classes(ratios)
    if seq.cover is not None:
        cover = np.minimum(cover, seq.cover)
    cover[absent] = 0
    cut = (np.nan_to_num(ratios, nan=1.0) < 1.0 - 1e-9).astype(np.int64)
    angles = (seq.angles if seq.angles is not None else np.zeros(n)) + step_angles

    border_mode = _BORDERS[border]

    def rotate_frame(t: int) -> None:
        src = seq.img_files[t]
        try:
            image = read_frame(src)[:, :, ::-1]       # BGR, as cv2.imwrite takes it
        except FrameError as exc:
            raise DatasetError(f"sequence {seq.name}: {exc}") from None
        if image.shape[1] != width or image.shape[0] != height:
            raise DatasetError(f"{src}: frame size {image.shape[1]}x{image.shape[0]} differs "
                               f"from the sequence's first frame ({width}x{height})")
        rotated = cv2.warpAffine(image, cv_matrices[t], (width, height),
                                 flags=cv2.INTER_LINEAR, borderMode=border_mode,
                                 borderValue=(0, 0, 0))
        if not cv2.imwrite(str(out_dir / f"{t + 1:08d}.jpg"), rotated,
                           [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"cannot write {out_dir / f'{t + 1:08d}.jpg'}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(rotate_frame, range(n)))

    np.savetxt(out_dir / "groundtruth.txt", boxes, fmt="%.4f", delimiter=",")
    np.savetxt(out_dir / "polygon.txt", polygons, fmt="%.4f", delimiter=",")
    np.savetxt(out_dir / "angle.txt", angles, fmt="%.4f")
    if seq.axis_angles is not None:      # rotation.txt's convention: clockwise, modulo 180
        np.savetxt(out_dir / "rotation.txt", -(seq.axis_angles + step_angles) % 180.0, fmt="%.4f")
    np.savetxt(out_dir / "absence.label", absent.astype(np.int64), fmt="%d")
    np.savetxt(out_dir / "cover.label", cover, fmt="%d")
    np.savetxt(out_dir / "cut_by_image.label", cut, fmt="%d")
    (out_dir / "meta_info.ini").write_text(
        "[METAINFO]\n"
        f"source: {source_dir}\n"
        f"rotation_deg_per_frame: {float(deg_per_frame)}\n"
        f"border: {border}\n"
        f"resolution: ({width}, {height})\n")


def _made_from(folder: Path) -> str | None:
    """The source content key a finished rotating sequence was made from (None: unknown)."""
    try:
        return json.loads((folder / SOURCE_FILE).read_text()).get("source_sequence")
    except (OSError, ValueError, AttributeError):
        return None


def make_rotating(src_root, dst_root, deg_per_frame: float, layout: str = "auto",
                  border: str = "replicate", max_sequences: int | None = None, *,
                  subset: str | None = None, names=None, skip_bad: bool = False,
                  overwrite: bool = False, progress: bool = False,
                  workers: int | None = None) -> Path:
    """Write the rotating version of a dataset folder into ``dst_root`` (GOT-10k layout).

    Each sequence is written into a temporary folder and renamed into place when complete,
    so an interrupted run resumes where it stopped: finished sequences are kept (unless
    ``overwrite``). ``dst_root`` remembers the settings it was made with; reusing it with
    other settings is refused. Each finished sequence remembers the content it was made from
    (:func:`data.sequence.sequence_identity`: annotations and the bytes of every frame); one whose
    source changed since is rebuilt, never reused. Returns ``dst_root`` as a Path.
    """
    if border not in _BORDERS:
        raise ValueError(f"unknown border mode {border!r} (use replicate or constant)")
    deg_per_frame = float(deg_per_frame)
    if not np.isfinite(deg_per_frame) or abs(deg_per_frame) > MAX_DEG_PER_FRAME:
        raise ValueError(f"deg_per_frame must be a finite number of degrees within ±{MAX_DEG_PER_FRAME:g}, "
                         f"got {deg_per_frame:g}")
    if max_sequences is not None and max_sequences < 1:
        raise ValueError("max_sequences must be at least 1")
    src_root, dst_root = Path(src_root), Path(dst_root)
    sequences = load_sequences(src_root, layout=layout, subset=subset, names=names,
                               skip_bad=skip_bad)
    if max_sequences is not None:
        sequences = sequences[:max_sequences]

    settings = {"source": str(src_root.resolve()), "deg_per_frame": deg_per_frame,
                "border": border, "layout": layout, "subset": subset}
    with FolderLock(dst_root):          # one writer: a second maker would replace what the first reads
        return _make(sequences, src_root, dst_root, settings, deg_per_frame, border, skip_bad, overwrite,
                     progress, workers)


def _make(sequences, src_root: Path, dst_root: Path, settings: dict, deg_per_frame: float, border: str,
          skip_bad: bool, overwrite: bool, progress: bool, workers: int | None) -> Path:
    info_file = dst_root / INFO_FILE
    if info_file.is_file() and not overwrite:
        try:
            previous = json.loads(info_file.read_text())
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or previous.get("settings") != settings:
            raise DatasetError(f"{dst_root} already holds a rotating dataset made with other "
                               f"settings (see {info_file}); choose another folder or "
                               "overwrite it")
    elif not info_file.is_file() and any(p.name != LOCK_NAME for p in dst_root.iterdir()) and not overwrite:
        raise DatasetError(f"{dst_root} is not empty and was not made by make_rotating; "
                           "choose an empty folder")
    # settings first, so that an interrupted run is recognised and resumed
    write_text_atomic(info_file, json.dumps({"settings": settings, "sequences": None},
                                             indent=2) + "\n")

    workers = workers or max(1, min(8, os.cpu_count() or 1))
    iterator = sequences
    if progress:
        from tqdm import tqdm
        iterator = tqdm(sequences, desc="rotating", unit="seq", dynamic_ncols=True)
    written = []
    for seq in iterator:
        final = dst_root / seq.name
        source = sequence_identity(seq, src_root)   # the content the copy derives from
        if final.is_dir() and not overwrite:
            if _made_from(final) == source:
                written.append(seq)
                continue             # renamed into place only when complete, from this very source
            print(f"{seq.name}: its source changed since the rotating copy was made (or the copy predates "
                  f"source keys): rebuilt", file=sys.stderr)
        try:
            with replaced_directory(final) as tmp:
                source_dir = str(Path(seq.img_files[0]).parent.resolve())
                _write_sequence(seq, tmp, deg_per_frame, border, source_dir, workers)
                write_text_atomic(tmp / SOURCE_FILE, json.dumps({"source_sequence": source}) + "\n")
        except DatasetError as exc:  # an unreadable or truncated frame
            if not skip_bad:
                raise
            warnings.warn(f"skipping sequence: {exc}", DatasetWarning, stacklevel=2)
            continue
        written.append(seq)
    if not written:
        raise DatasetError(f"no sequence of {src_root} could be rotated (every one has a bad frame)")
    sequences = written

    write_text_atomic(dst_root / "list.txt", "".join(f"{s.name}\n" for s in sequences))
    write_text_atomic(info_file, json.dumps(
        {"settings": settings, "sequences": [s.name for s in sequences]}, indent=2) + "\n")
    return dst_root
