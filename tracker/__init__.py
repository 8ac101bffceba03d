"""Siamese trackers (SiamFC, SiamRPN) over IEN or plain backbones, usable as got10k trackers.

``build_tracker(name)`` loads the bundled weights of ``tracker/weights/``; a checkpoint decides
the network (IEN or plain backbone, widths). Importing this package is light: torch, the models
and the trackers are imported when a tracker is built.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["TRACKERS", "WEIGHTS_DIR", "build_tracker", "default_checkpoint", "tracker_names",
           "stored_tracking_options", "searches_rotated_templates"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# name -> (tracker class "module:Class", model type it needs, bundled checkpoint file)
TRACKERS = {
    "siamfc-ien": ("tracker.siamfc:SiamFCTracker", "siamfc", "siamfc_ien.pth"),
    "siamfc-plain": ("tracker.siamfc:SiamFCTracker", "siamfc", "siamfc_plain.pth"),
    "siamrpn-ien": ("tracker.siamrpn:SiamRPNTracker", "siamrpn", "siamrpn_ien.pth"),
    "siamrpn-plain": ("tracker.siamrpn:SiamRPNTracker", "siamrpn", "siamrpn_plain.pth"),
    "re-siamfc": ("tracker.re_siamfc:RESiamFCTracker", "siamfc", "re_siamfc.pth"),
    "siamfc-ien-rot": ("tracker.siamfc:SiamFCTracker", "siamfc", "siamfc_ien.pth"),
    "siamfc-plain-rot": ("tracker.siamfc:SiamFCTracker", "siamfc", "siamfc_plain.pth"),
}
# Tracking options a name gets unless the caller overrides them. The "-rot" SiamFC trackers
# estimate the target's rotation like RE-SiamNet: 8 rotated templates, searched within ±45° of
# the last angle, so they output rotated boxes (any SiamFC: orientations=N, tools/track.py
# --orientations N). Off by default: on the validation split and on upright real targets the
# search cost accuracy (README, "Results").
_ROTATED_TEMPLATES = {"orientations": 8, "orientation_window": 45.0}
DEFAULT_OPTIONS: dict[str, dict] = {
    "siamfc-ien-rot": _ROTATED_TEMPLATES,
    "siamfc-plain-rot": _ROTATED_TEMPLATES,
}
ALIASES = {"siamfc": "siamfc-ien", "siamrpn": "siamrpn-ien"}


def tracker_names() -> list[str]:
    return sorted(set(TRACKERS) | set(ALIASES))


def _canonical(name: str) -> str:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in TRACKERS:
        from .siamfc import TrackerError

        raise TrackerError(f"unknown tracker {name!r}; choose from {', '.join(tracker_names())}")
    return key


def default_checkpoint(name: str) -> Path:
    """Path of the bundled weights of tracker ``name`` (which may not exist yet)."""
    return WEIGHTS_DIR / TRACKERS[_canonical(name)][2]


def stored_tracking_options(ckpt: dict, rotated: bool) -> dict:
    """The tracking hyper-parameters a checkpoint carries (``ckpt["tracking"]``, chosen on
    validation for its network by ``tools/tune_tracking.py``): its "upright" table, or its
    "rotated" one for trackers that search rotated templates."""
    tracking = ckpt.get("tracking") if isinstance(ckpt, dict) else None
    if not isinstance(tracking, dict):
        return {}
    table = tracking.get("rotated" if rotated else "upright", {})
    return dict(table) if isinstance(table, dict) else {}


def searches_rotated_templates(name: str, options: dict | None = None) -> bool:
    """Whether tracker ``name`` with ``options`` searches rotated templates (RE-SiamNet always,
    SiamFC with orientations > 0): it then takes a checkpoint's "rotated" tracking options."""
    key = _canonical(name)
    return key == "re-siamfc" or bool({**DEFAULT_OPTIONS.get(key, {}), **(options or {})}.get("orientations"))


def build_tracker(name: str = "siamfc", checkpoint=None, device=None, model=None, backend: str = "auto",
                  **options):
    """A got10k ``Tracker`` named ``name`` (see :data:`TRACKERS`).

    checkpoint: a tracker checkpoint (default: the bundled weights); model: an in-memory Siamese
    model instead (e.g. during training; it is put in eval mode, call ``.train()`` afterwards);
    device: None = CUDA when available, else CPU (for ``model``: the device it is on);
    backend: how the per-frame feature extractor runs (:mod:`tracker.backends`): "auto" =
    ONNX Runtime on the CPU where installed, else torch with BatchNorm folded; for ``model`` the
    live model ("torch-unfused"), since a snapshot would miss later training;
    options: tracking hyper-parameters (SiamFCParams / SiamRPNParams; unknown ones are rejected);
    they override the name's defaults and those stored in the checkpoint (``stored_tracking_options``).
    Raises TrackerError for every bad input (unknown name/option/device, missing or mismatched
    checkpoint).
    """
    import importlib

    from common.checkpoints import CheckpointError
    from common.config import ConfigError
    from common.threads import keep_freed_memory

    from .models import model_from_checkpoint
    from .siamfc import TrackerError

    keep_freed_memory()          # per-frame buffers reused, not returned to the OS (common/threads.py)

    key = _canonical(name)
    target, model_type, weights_file = TRACKERS[key]
    source = "the given model"
    stored: dict = {}
    if model is not None and device is None:
        # an in-memory model stays where it is (e.g. a model being trained on the CPU)
        device = next(iter(model.parameters()), None)
        device = device.device if device is not None else None
    if model is None:
        if checkpoint is None:
            path = WEIGHTS_DIR / weights_file
            if not path.is_file():
                raise TrackerError(
                    f"bundled weights tracker/weights/{weights_file} not found; train them with "
                    f"tools/train_tracker.py (see docs/sections/tracking.md) or pass --checkpoint"
                )
        else:
            path = Path(checkpoint)
        try:
            model, ckpt = model_from_checkpoint(path)
        except (CheckpointError, ConfigError) as exc:
            raise TrackerError(str(exc)) from None
        source = str(path)
        stored = stored_tracking_options(ckpt, searches_rotated_templates(key, options))
    found = getattr(getattr(model, "config", None), "type", None)
    if found != model_type:
        raise TrackerError(f"tracker {key} needs a {model_type} model, but {source} holds a {found} model")
    from .backends import BackendError, resolve_backend
    from .siamfc import resolve_device

    device = resolve_device(device)
    try:
        backend = resolve_backend(backend, device, live_model=source == "the given model")
    except BackendError as exc:
        raise TrackerError(str(exc)) from None
    module, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    options = {**DEFAULT_OPTIONS.get(key, {}), **stored, **options}
    try:
        return cls(model, device=device, name=key, backend=backend, **options)
    except ConfigError as exc:
        raise TrackerError(str(exc)) from None
