"""NanoTrack v3 on the author's weights, run by this toolkit's NanoTrack runner (ONNX Runtime)."""
from __future__ import annotations

from tracker.nano_tracker import NanoTracker, OnnxNanoNetworks
from tracker.registry import TrackerSpec, model_file_paths

__all__ = ["build_nanotrack_v3"]


def build_nanotrack_v3(spec: TrackerSpec) -> NanoTracker:
    backbone, head = model_file_paths(spec)
    return NanoTracker(OnnxNanoNetworks.from_files(backbone, head), name=spec.name, **spec.options)
