"""Still photos with object boxes (``<group>/boxes.csv`` + ``<group>/images/``): the photo pairs of
tracker training (two augmented crops of one photo, :class:`training.tracking.pairs.PhotoPairSampler`)."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sequence import DatasetError

__all__ = ["Photo", "load_photos"]


@dataclass
class Photo:
    """One still photo and the boxes (x, y, w, h) of the objects in it."""

    path: str
    boxes: np.ndarray             # (K, 4)
    size: tuple                   # (width, height)


def _read_boxes_csv(csv_path) -> list:
    csv_path = Path(csv_path)
    images = csv_path.parent / "images"
    by_file: dict = {}
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {csv_path}: {exc}") from None
    header = [c.strip() for c in rows[0]] if rows else []
    needed = ("file", "x", "y", "w", "h", "img_w", "img_h")
    if any(c not in header for c in needed):
        raise DatasetError(f"{csv_path}:1: expected the columns {', '.join(needed)} (file,x,y,w,h,label,img_w,img_h)")
    col = {c: header.index(c) for c in needed}
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            box = [float(row[col[c]]) for c in ("x", "y", "w", "h")]
            size = (int(float(row[col["img_w"]])), int(float(row[col["img_h"]])))
            name = row[col["file"]].strip()
        except (IndexError, ValueError):
            raise DatasetError(f"{csv_path}:{number}: bad row {','.join(row)[:80]!r}") from None
        if not name or not all(math.isfinite(v) for v in box) or min(size) < 1:
            raise DatasetError(f"{csv_path}:{number}: bad row {','.join(row)[:80]!r}")
        entry = by_file.setdefault(name, ([], size))
        if entry[1] != size:
            raise DatasetError(f"{csv_path}:{number}: {name} listed with two image sizes")
        entry[0].append(box)
    photos = []
    for name, (boxes, size) in sorted(by_file.items()):
        path = images / name
        if not path.is_file():
            raise DatasetError(f"{csv_path}: image {path} not found")
        photos.append(Photo(str(path), np.asarray(boxes, dtype=np.float64), size))
    return photos


def load_photos(root) -> list:
    """Photos of ``root``: a folder with ``boxes.csv`` and ``images/``, or a folder of such folders.

    ``boxes.csv`` has the header ``file,x,y,w,h,label,img_w,img_h`` (one row per object box, pixels).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"photo folder not found: {root}")
    files = [root / "boxes.csv"] if (root / "boxes.csv").is_file() else sorted(root.glob("*/boxes.csv"))
    if not files:
        raise DatasetError(f"no boxes.csv in {root} or its sub-folders (photos: <group>/boxes.csv, <group>/images/)")
    photos = [p for f in files for p in _read_boxes_csv(f)]
    if not photos:
        raise DatasetError(f"no photo boxes in {root}")
    return photos
