"""The one registry of trackers: every name a tool or the Python API accepts, with what callers need.

A :class:`TrackerSpec` says what a tracker is (family, network, whether it is a baseline and of
which kind, whether and how it estimates rotation, its weights or model files, its default
tracking options), so that callers decide behaviour from these capabilities, never from the name.
Building is :func:`tracker.build_tracker`. Importing this module is light (no torch).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from data.frames import TrackerError

__all__ = ["TrackerSpec", "TRACKERS", "ALIASES", "DEFAULT_TRACKER", "WEIGHTS_DIR", "UnknownTracker", "tracker_spec",
           "tracker_names", "models_dir", "model_file_paths", "default_checkpoint"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODELS_ENV = "IEN_MODELS"


class UnknownTracker(TrackerError):
    """A tracker name that is not in the registry."""


@dataclass(frozen=True)
class TrackerSpec:
    name: str
    family: str                     # "siamfc", "siamrpn", "nanotrack", "vittrack", "opencv", "identity"
    factory: str                    # "module:callable" that builds the got10k tracker
    network: str | None = None      # the toolkit's networks: "ien", "plain" (its twin), "steerable" (e2cnn)
    baseline: str | None = None     # None: the toolkit's own; "classical" (OpenCV), "pretrained"
                                    # (a public model's files), "reference" (the box that never moves)
    model_type: str | None = None   # the model type its checkpoint must hold (the toolkit's trackers)
    weights: str | None = None      # its bundled checkpoint under tracker/weights/
    model_files: tuple = ()         # a pretrained baseline's files, relative to models_dir()
    rotation: str = "none"          # "none"; "optional": rotated templates with options["orientations"];
                                    # "always": searches rotated templates (RE-SiamNet)
    options: dict = field(default_factory=dict)   # tracking options it gets unless overridden
    twin: str | None = None         # an IEN tracker's plain twin (same data, budget and seed)
    runtime: str | None = None      # a baseline's engine ("opencv", "onnxruntime"): part of its results' key
    about: str = ""

    @property
    def learned(self) -> bool:
        """The toolkit's own trackers: a checkpoint, tracking options and an inference backend."""
        return self.baseline is None

    def searches_rotated_templates(self, options: dict | None = None) -> bool:
        """Whether it searches rotated templates with ``options`` (then it takes a checkpoint's
        "rotated" tracking options and reports angles)."""
        if self.rotation == "always":
            return True
        return self.rotation == "optional" and bool({**self.options, **(options or {})}.get("orientations"))

    def estimates_orientation(self, options: dict | None = None) -> bool:
        """Whether it reports the target's rotation (``last_angle``, rotated boxes)."""
        return self.searches_rotated_templates(options) or self.family == "identity"


_SIAMFC, _SIAMRPN, _RE = "tracker.siamfc:SiamFCTracker", "tracker.siamrpn:SiamRPNTracker", "tracker.re_siamfc:RESiamFCTracker"
_NANO = "tracker.nanotrack:build_nano_tracker"
# the "-rot" SiamFC trackers estimate the target's rotation like RE-SiamNet: 8 rotated templates,
# searched within ±45° of the last angle (any SiamFC: orientations=N, tools/track.py --orientations N)
_ROTATED_TEMPLATES = {"orientations": 8, "orientation_window": 45.0}
_OPENCV = "tracker.baselines.opencv:build_opencv_tracker"
# the "-rot" NanoTrack trackers follow the target's rotation in 10-degree steps (tracker/nano_tracker.py)
_FOLLOW_ROTATION = {"orientations": 36}

_SPECS = (
    TrackerSpec("siamfc-ien", "siamfc", _SIAMFC, "ien", None, "siamfc", "siamfc_ien.pth", rotation="optional",
                twin="siamfc-plain", about="SiamFC, ResNet-22 with R8 groups, IEN loss"),
    TrackerSpec("siamfc-plain", "siamfc", _SIAMFC, "plain", None, "siamfc", "siamfc_plain.pth", rotation="optional",
                about="the plain twin of siamfc-ien"),
    TrackerSpec("siamfc-ien-rot", "siamfc", _SIAMFC, "ien", None, "siamfc", "siamfc_ien.pth", rotation="optional",
                options=_ROTATED_TEMPLATES, twin="siamfc-plain-rot",
                about="siamfc-ien searching 8 rotated templates: rotated boxes"),
    TrackerSpec("siamfc-plain-rot", "siamfc", _SIAMFC, "plain", None, "siamfc", "siamfc_plain.pth",
                rotation="optional", options=_ROTATED_TEMPLATES, about="siamfc-plain searching 8 rotated templates"),
    TrackerSpec("re-siamfc", "siamfc", _RE, "steerable", None, "siamfc", "re_siamfc.pth", rotation="always",
                about="RE-SiamNet: e2cnn steerable SiamFC, the rotation-equivariant baseline"),
    TrackerSpec("siamrpn-ien", "siamrpn", _SIAMRPN, "ien", None, "siamrpn",
                "siamrpn_ien.pth", twin="siamrpn-plain", about="SiamRPN, ResNet-22 with R8 groups, IEN loss"),
    TrackerSpec("siamrpn-plain", "siamrpn", _SIAMRPN, "plain", None, "siamrpn", "siamrpn_plain.pth",
                about="the plain twin of siamrpn-ien"),
    TrackerSpec("nanotrack-ien", "nanotrack", _NANO, "ien", None, "nanotrack", "nanotrack_ien.pth", rotation="optional",
                twin="nanotrack-plain",
                about="NanoTrack v3's network (Apache-2.0) fine-tuned with the IEN loss on rotated pairs"),
    TrackerSpec("nanotrack-plain", "nanotrack", _NANO, "plain", None, "nanotrack", "nanotrack_plain.pth",
                rotation="optional", about="the plain twin of nanotrack-ien"),
    TrackerSpec("nanotrack-ien-rot", "nanotrack", _NANO, "ien", None, "nanotrack", "nanotrack_ien.pth",
                rotation="optional", options=_FOLLOW_ROTATION, twin="nanotrack-plain-rot",
                about="nanotrack-ien following the target's rotation: turned search crops, rotated boxes"),
    TrackerSpec("nanotrack-plain-rot", "nanotrack", _NANO, "plain", None, "nanotrack", "nanotrack_plain.pth",
                rotation="optional", options=_FOLLOW_ROTATION, about="nanotrack-plain following the target's rotation"),
    TrackerSpec("nanotrack-v3", "nanotrack", "tracker.baselines.pretrained:build_nanotrack_v3", baseline="pretrained",
                model_files=("nanotrack/nanotrackv3_backbone.onnx", "nanotrack/nanotrackv3_head.onnx"),
                runtime="onnxruntime", about="NanoTrack v3, the author's weights through ONNX Runtime (this toolkit's runner)"),
    TrackerSpec("cv2-nano", "nanotrack", _OPENCV, baseline="pretrained",
                model_files=("nanotrack/nanotrackv2_backbone.onnx", "nanotrack/nanotrackv2_head.onnx"),
                runtime="opencv", about="NanoTrack v2 in OpenCV (cv2.TrackerNano)"),
    TrackerSpec("cv2-vit", "vittrack", _OPENCV, baseline="pretrained", model_files=("vittrack/vitTracker.onnx",),
                runtime="opencv", about="VitTrack in OpenCV (cv2.TrackerVit)"),
    TrackerSpec("cv2-mil", "opencv", _OPENCV, baseline="classical", runtime="opencv", about="OpenCV's MIL tracker"),
    TrackerSpec("cv2-kcf", "opencv", _OPENCV, baseline="classical", runtime="opencv", about="OpenCV's KCF tracker (contrib)"),
    TrackerSpec("cv2-csrt", "opencv", _OPENCV, baseline="classical", runtime="opencv", about="OpenCV's CSRT tracker (contrib)"),
    TrackerSpec("identity", "identity", "tracker.baselines.identity:IdentityTracker", baseline="reference",
                about="the initial box on every frame, angle 0: the floor every tracker must beat"),
)
TRACKERS: dict[str, TrackerSpec] = {spec.name: spec for spec in _SPECS}
DEFAULT_TRACKER = "nanotrack-ien"
ALIASES = {"siamfc": "siamfc-ien", "siamrpn": "siamrpn-ien", "default": DEFAULT_TRACKER}


def tracker_names() -> list[str]:
    return sorted(set(TRACKERS) | set(ALIASES))


def tracker_spec(name: str) -> TrackerSpec:
    """The spec of a tracker name or alias (case-insensitive); UnknownTracker otherwise."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in TRACKERS:
        raise UnknownTracker(f"unknown tracker {name!r}; choose from {', '.join(tracker_names())}")
    return TRACKERS[key]


def models_dir() -> Path:
    """Where the pretrained baselines' files are read from: $IEN_MODELS, else ``../shared/models``
    beside the project's folder (never copied into the project)."""
    env = os.environ.get(MODELS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "models"


def model_file_paths(spec: TrackerSpec) -> list[Path]:
    return [models_dir() / name for name in spec.model_files]


def default_checkpoint(name: str) -> Path:
    """Path of the bundled weights of tracker ``name`` (which may not exist yet)."""
    spec = tracker_spec(name)
    if spec.weights is None:
        raise UnknownTracker(f"tracker {spec.name} has no bundled checkpoint (it is a {spec.baseline} baseline)")
    return WEIGHTS_DIR / spec.weights
