"""One registry of dataset layouts: ``load_sequences(root, layout="auto")`` for every reader.

Each :class:`Layout` has a ``detect`` test and a ``load`` function; ``auto`` takes the first
layout, in registry order, whose test accepts the folder (the specific benchmark layouts before
the generic GOT-10k and OTB ones). A new reader is one module with those two functions and one
entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import benchmarks, got10k_otb
from .sequence import DatasetError, Sequence

__all__ = ["Layout", "LAYOUTS", "detect_layout", "load_sequences"]


@dataclass(frozen=True)
class Layout:
    name: str
    detect: Callable[[Path], bool]
    load: Callable[..., list[Sequence]]     # load(root, subset, names, skip_bad[, frame_ranges])
    frame_ranges: bool = False              # takes a frame-ranges file (UAV123's configSeqs.m)


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("uav123", benchmarks.is_uav123, benchmarks.load_uav123, frame_ranges=True),
    Layout("trackingnet", benchmarks.is_trackingnet, benchmarks.load_trackingnet),
    Layout("vot", benchmarks.is_vot, benchmarks.load_vot),
    Layout("lasot", benchmarks.is_lasot, benchmarks.load_lasot),
    Layout("got10k", got10k_otb.is_got10k, got10k_otb.load_got10k),
    Layout("otb", got10k_otb.is_otb, got10k_otb.load_otb),
)}


def detect_layout(root) -> str:
    """The name of the first layout whose test accepts ``root``; DatasetError if none does."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    for layout in LAYOUTS.values():
        if layout.detect(root):
            return layout.name
    raise DatasetError(f"cannot recognise the dataset layout of {root}: expected GOT-10k "
                       "(list.txt, <seq>/groundtruth.txt) or OTB (<seq>/img/, "
                       "<seq>/groundtruth_rect.txt), or LaSOT, UAV123, VOT, TrackingNet")


def load_sequences(root, layout: str = "auto", subset: str | None = None, names=None,
                   skip_bad: bool = False, frame_ranges=None) -> list[Sequence]:
    """Load the sequences of a local dataset folder.

    root: dataset folder; layout: "auto" or a name of :data:`LAYOUTS`; subset: the layout's
    subset (GOT-10k "val", "test", "train", default: ``root`` itself if it is a subset folder,
    else whichever exists first; LaSOT, UAV123, TrackingNet: see :mod:`data.benchmarks`); names:
    only these sequences (a two-target OTB name such as "Jogging" selects Jogging.1 and Jogging.2);
    skip_bad: skip a broken sequence with a DatasetWarning instead of raising DatasetError;
    frame_ranges: UAV123 only, a configSeqs.m or JSON table of frame ranges.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {layout!r} (use auto, {', '.join(LAYOUTS)})")
    reader = LAYOUTS[layout]
    if frame_ranges is not None and not reader.frame_ranges:
        raise DatasetError("a frame-ranges file is only used with the UAV123 layout")
    extra = {"frame_ranges": frame_ranges} if reader.frame_ranges else {}
    sequences = reader.load(root, subset, names, skip_bad, **extra)
    if not sequences:
        raise DatasetError(f"no usable sequences in {root}")
    return sequences
