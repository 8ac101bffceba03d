"""Trackers usable as got10k trackers: the toolkit's Siamese networks (SiamFC, SiamRPN, NanoTrack-
derived, RE-SiamNet) over IEN or plain backbones, and the baselines (OpenCV, NanoTrack v3, identity).

Every name is an entry of :mod:`tracker.registry` (what it is and can do); ``build_tracker(name)``
builds it: the toolkit's trackers from their bundled weights in ``tracker/weights/`` (or a
checkpoint, which decides the network), the baselines from their own files. Importing this package
is light: torch, the models and the trackers are imported when a tracker is built.
"""
from __future__ import annotations

from .registry import (
    ALIASES,
    DEFAULT_TRACKER,
    TRACKERS,
    WEIGHTS_DIR,
    TrackerSpec,
    UnknownTracker,
    default_checkpoint,
    models_dir,
    tracker_names,
    tracker_spec,
)

__all__ = ["ALIASES", "DEFAULT_TRACKER", "TRACKERS", "TrackerSpec", "UnknownTracker", "WEIGHTS_DIR", "build_tracker",
           "default_checkpoint", "models_dir", "tracker_names", "tracker_spec", "stored_tracking_options",
           "track_video"]


def stored_tracking_options(ckpt: dict, rotated: bool) -> dict:
    """The tracking hyper-parameters a checkpoint carries (``ckpt["tracking"]``, chosen on
    validation for its network by ``tools/tune_tracking.py``): its "upright" table, or its
    "rotated" one for trackers that search rotated templates."""
    tracking = ckpt.get("tracking") if isinstance(ckpt, dict) else None
    if not isinstance(tracking, dict):
        return {}
    table = tracking.get("rotated" if rotated else "upright", {})
    return dict(table) if isinstance(table, dict) else {}


def _factory(spec: TrackerSpec):
    import importlib

    module, name = spec.factory.split(":")
    return getattr(importlib.import_module(module), name)


def build_tracker(name: str = DEFAULT_TRACKER, checkpoint=None, device=None, model=None, backend: str = "auto",
                  **options):
    """A got10k ``Tracker`` named ``name`` (see :data:`TRACKERS`).

    The toolkit's trackers: checkpoint: a tracker checkpoint (default: the bundled weights); model:
    an in-memory model instead (e.g. during training; it is put in eval mode, call ``.train()``
    afterwards); device: None = CUDA when available, else CPU (for ``model``: the device it is on);
    backend: how the per-frame network runs (:mod:`tracker.backends`): "auto" = ONNX Runtime on
    the CPU where installed, else torch with BatchNorm folded; for ``model`` the live model
    ("torch-unfused"), since a snapshot would miss later training; options: tracking
    hyper-parameters (unknown ones are rejected); they override the name's defaults and those
    stored in the checkpoint (``stored_tracking_options``). Baselines take none of these.
    Raises TrackerError for every bad input (unknown name/option/device, missing or mismatched
    checkpoint or model file).
    """
    from data.frames import TrackerError

    spec = tracker_spec(name)
    if spec.baseline is not None:
        if checkpoint is not None or model is not None or options:
            raise TrackerError(f"the {spec.baseline} baseline {spec.name} takes no checkpoint, model or tracking options")
        return _factory(spec)(spec)
    return _build_learned(spec, checkpoint, device, model, backend, options)


def _build_learned(spec: TrackerSpec, checkpoint, device, model, backend: str, options: dict):
    from pathlib import Path

    from common.checkpoints import CheckpointError
    from common.config import ConfigError
    from common.threads import keep_freed_memory
    from data.frames import TrackerError

    from .backends import BackendError, resolve_backend
    from .models import model_from_checkpoint
    from .siamfc import resolve_device

    keep_freed_memory()          # per-frame buffers reused, not returned to the OS (common/threads.py)
    source, stored = "the given model", {}
    if model is not None and device is None:
        # an in-memory model stays where it is (e.g. a model being trained on the CPU)
        device = next(iter(model.parameters()), None)
        device = device.device if device is not None else None
    if model is None:
        path = WEIGHTS_DIR / spec.weights if checkpoint is None else Path(checkpoint)
        if checkpoint is None and not path.is_file():
            raise TrackerError(f"bundled weights tracker/weights/{spec.weights} not found; train them with "
                               f"tools/train_tracker.py (see docs/training.md) or pass --checkpoint")
        try:
            model, ckpt = model_from_checkpoint(path)
        except (CheckpointError, ConfigError) as exc:
            raise TrackerError(str(exc)) from None
        source = str(path)
        stored = stored_tracking_options(ckpt, spec.searches_rotated_templates(options))
    found = getattr(getattr(model, "config", None), "type", None)
    if found != spec.model_type:
        raise TrackerError(f"tracker {spec.name} needs a {spec.model_type} model, but {source} holds a {found} model")
    device = resolve_device(device)
    try:
        backend = resolve_backend(backend, device, live_model=source == "the given model")
    except BackendError as exc:
        raise TrackerError(str(exc)) from None
    options = {**spec.options, **stored, **options}
    try:
        return _factory(spec)(model, device=device, name=spec.name, backend=backend, **options)
    except ConfigError as exc:
        raise TrackerError(str(exc)) from None


def track_video(video, init_box, name: str = DEFAULT_TRACKER, **build_options):
    """Track one object through a whole video: the boxes (N, 4) x, y, w, h of every frame of
    ``video`` (a video file, a folder of frames, a frame pattern or a camera index, as
    ``tools/track.py --video`` takes them), the first being ``init_box``. ``build_options`` go to
    :func:`build_tracker`. Frames are decoded to RGB here, so OpenCV's BGR never reaches the tracker."""
    import numpy as np

    from data.video import FrameSource

    tracker = build_tracker(name, **build_options)
    source = FrameSource(str(video))
    boxes = []
    try:
        for index, frame in enumerate(source):
            if index == 0:
                tracker.init(frame, init_box)
                boxes.append(np.asarray(init_box, dtype=np.float64).reshape(4))
            else:
                boxes.append(np.asarray(tracker.update(frame), dtype=np.float64))
    finally:
        source.close()
    return np.stack(boxes)
