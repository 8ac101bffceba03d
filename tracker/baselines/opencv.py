"""OpenCV's trackers as got10k baselines: the classical MIL (KCF and CSRT where the build has them)
and the DNN trackers on public weights, NanoTrack v2 (``cv2-nano``, ``cv2.TrackerNano``) and VitTrack
(``cv2-vit``, ``cv2.TrackerVit``), whose files are read from :func:`tracker.registry.models_dir`.

They give the learned trackers of the toolkit reference points on the same benchmarks and metrics:
the classical ones weight-free, the DNN ones what a practitioner would run on a CPU. They run with
cv2's own thread setting (``cv2.setNumThreads``; this module never changes it). The DNN trackers
take BGR frames like the rest; their results depend on the OpenCV build (compare within one).

:class:`OpenCVTracker` honours the got10k ``Tracker`` contract: ``init(image, box)`` with a PIL RGB
image or an HxWx3 uint8 RGB array and a float box [x, y, w, h]; ``update(image)`` returns a float64
[x, y, w, h] array and sets ``last_score`` (1.0 when OpenCV reports success, else 0.0 and the last
box is kept). OpenCV works on an integer rectangle inside the frame; the wrapper maps its results
back to the caller's float box (same sub-pixel offset and, for the fixed-size trackers, the same
size), so a tracker that does not move returns exactly the initial box.

OpenCV 5 quirks handled here: ``init`` takes only an int rectangle; MIL asserts unless the box
leaves it room for negative samples (2 px clear of the right and bottom edges and some slack around
it), and its Haar feature generator loops forever on boxes too small for any feature (4x4, 1xN...);
CSRT asserts on a rectangle 1 px wide or high: such rectangles are grown or shrunk for OpenCV and
mapped back. MIL draws its features from the C
library's ``rand()``; with a ``seed`` (default 0) every ``init`` reseeds it and cv2's RNG, so runs
repeat exactly.
"""
from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from got10k.trackers import Tracker

from data.frames import check_frame_size
from tracker.siamfc import TrackerError, as_rgb_frame, check_init_box

__all__ = ["OPENCV_TRACKERS", "OpenCVTracker", "build_opencv_tracker"]


def _mil_usable(x: int, y: int, w: int, h: int, width: int, height: int) -> bool:
    """Whether OpenCV 5's MIL can start on the int rect (x, y, w, h) of a width x height frame.

    Its random Haar generator (``CvHaarEvaluator::FeatureHaar::generateRandomFeature``) retries
    forever unless some reachable feature type (2x1, 1x2, 4x1, 1x4 or 2x2 blocks of a base rectangle;
    the 3x3 type has probability 0) fits strictly inside the w x h patch and covers >= 9 px. Its
    sampler (``TrackerSamplerCSC::sampleImage``) takes patch origins in [0, width-w-2] x
    [0, height-h-2] and needs a negative one at a distance in [4.5, 50) from (x, y), else ``init``
    asserts ``!negSamples.empty()`` (and later ``update`` fails).
    """
    if not any(
        bw >= 1 and bh >= 1 and bw * fw * bh * fh >= 9
        for fh, fw in ((2, 1), (1, 2), (4, 1), (1, 4), (2, 2))
        for bw, bh in [((w - 1) // fw, (h - 1) // fh)]
    ):
        return False
    col_max, row_max = width - w - 2, height - h - 2
    if not (0 <= x <= col_max and 0 <= y <= row_max):
        return False
    far_x, far_y = max(x, col_max - x), max(y, row_max - y)
    return far_x * far_x + far_y * far_y >= 21


@dataclass(frozen=True)
class _Spec:
    create: Callable[[], object]   # a fresh OpenCV tracker
    margin: int = 0                # px the rect must stay clear of the right and bottom edges
    min_size: int = 1              # side a too-small rect is grown to
    usable: Callable[..., bool] = lambda x, y, w, h, width, height: True   # OpenCV can start on it
    quiet: bool = False            # a DNN tracker: OpenCV's notices while it sets its network up are hidden


def _find_factory(*paths: str):
    """The first of dotted cv2 attribute paths ('TrackerKCF.create', 'legacy.TrackerKCF_create') present."""
    for path in paths:
        obj = cv2
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if callable(obj):
            return obj
    return None


def _available() -> dict[str, _Spec]:
    specs = {}
    mil = _find_factory("TrackerMIL.create", "TrackerMIL_create")
    if mil is not None:
        specs["cv2-mil"] = _Spec(mil, margin=2, min_size=5, usable=_mil_usable)
    # contrib builds (opencv-contrib-python): the new API first, then cv2.legacy
    for name, cls in (("cv2-kcf", "TrackerKCF"), ("cv2-csrt", "TrackerCSRT")):
        factory = _find_factory(f"{cls}.create", f"{cls}_create", f"legacy.{cls}.create", f"legacy.{cls}_create")
        if factory is None:
            continue
        if name == "cv2-csrt":    # CSRT's resize asserts on a rect 1 px wide or high
            specs[name] = _Spec(factory, min_size=2, usable=lambda x, y, w, h, width, height: min(w, h) >= 2)
        else:
            specs[name] = _Spec(factory)
    return specs


def _dnn_spec(name: str, paths: list) -> _Spec:
    """cv2-nano / cv2-vit on the model files ``paths`` (checked: a missing one is named)."""
    for path in paths:
        if not path.is_file():
            raise TrackerError(f"model file not found: {path} (the public weights live in ../shared/models/, "
                               f"or set IEN_MODELS to their folder)")
    if name == "cv2-nano":
        params = cv2.TrackerNano_Params()
        params.backbone, params.neckhead = (str(p) for p in paths)
        return _Spec(lambda: cv2.TrackerNano.create(params), quiet=True)
    params = cv2.TrackerVit_Params()
    params.net = str(paths[0])
    return _Spec(lambda: cv2.TrackerVit.create(params), quiet=True)


@contextlib.contextmanager
def _opencv_log_level(quiet: bool):
    """OpenCV's log at errors only while a DNN tracker builds its network ("targets are not
    supported by the new graph engine" is printed for every sequence otherwise)."""
    if not quiet:
        yield
        return
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


_SPECS = _available()
OPENCV_TRACKERS: tuple[str, ...] = tuple(_SPECS)     # the classical ones this build offers


def _libc_srand():
    try:
        srand = ctypes.CDLL(None).srand   # seeds the process-wide C rand() that OpenCV's MIL uses (POSIX)
    except (OSError, AttributeError, TypeError):
        return None
    srand.argtypes, srand.restype = [ctypes.c_uint], None
    return srand


_SRAND = _libc_srand()


def _cv_rect(box: np.ndarray, frame_size: tuple[int, int], spec: _Spec) -> tuple[int, int, int, int]:
    """The float box as an int (x, y, w, h) OpenCV can start on: rounded corners, w,h >= 1, inside
    the frame less the tracker's margin; then, if the tracker cannot use it, grown about its centre
    when too small, shrunk when too big (a box filling the frame leaves MIL no negative samples)."""
    width, height = frame_size
    max_x, max_y = width - spec.margin, height - spec.margin     # exclusive right / bottom limits
    left, top, right, bottom = np.floor(np.array([box[0], box[1], box[0] + box[2], box[1] + box[3]]) + 0.5)
    x0, y0 = int(np.clip(left, 0, max(max_x - 1, 0))), int(np.clip(top, 0, max(max_y - 1, 0)))
    x1, y1 = int(np.clip(right, x0 + 1, max(max_x, x0 + 1))), int(np.clip(bottom, y0 + 1, max(max_y, y0 + 1)))

    def placed(w: int, h: int) -> tuple[int, int, int, int]:    # w x h about the clipped box's centre
        x = int(np.clip((x0 + x1 - w) // 2, 0, max(max_x - w, 0)))
        y = int(np.clip((y0 + y1 - h) // 2, 0, max(max_y - h, 0)))
        return x, y, w, h

    rect = (x0, y0, x1 - x0, y1 - y0)
    if not spec.usable(*rect, width, height):
        w, h = max(rect[2], spec.min_size), max(rect[3], spec.min_size)
        rect = placed(w, h)
        while not spec.usable(*rect, width, height) and (w > spec.min_size or h > spec.min_size):
            w, h = max(w - 2, spec.min_size), max(h - 2, spec.min_size)
            rect = placed(w, h)
        if not spec.usable(*rect, width, height):
            raise TrackerError(f"the {width}x{height} frame is too small for this OpenCV tracker")
    return rect


class OpenCVTracker(Tracker):
    """A got10k tracker around one OpenCV tracker (``name`` in :data:`OPENCV_TRACKERS`).

    ``seed`` (int, default 0) reseeds the C library's ``rand()`` and cv2's RNG at every ``init``
    (process-wide state) so that runs repeat exactly; ``None`` leaves them alone.
    """

    def __init__(self, name: str = "cv2-mil", seed: int | None = 0, spec: _Spec | None = None):
        key = str(name).strip().lower()
        if spec is None and key not in _SPECS:
            available = ", ".join(OPENCV_TRACKERS) or "none"
            raise TrackerError(f"unknown or unavailable OpenCV tracker {name!r} "
                               f"(this cv2 {cv2.__version__} offers: {available})")
        super().__init__(name=key, is_deterministic=seed is not None and _SRAND is not None)
        self.spec = spec or _SPECS[key]
        self.seed = seed
        self.frame_size: tuple[int, int] | None = None   # (width, height) of init's frame
        self.box: np.ndarray | None = None               # last float box returned
        self.last_score: float | None = None
        self._cv = None
        self._init_box = self._init_rect = None

    def init(self, image, box) -> None:
        frame = as_rgb_frame(image)
        box = check_init_box(box, frame.shape)
        size = (frame.shape[1], frame.shape[0])
        rect = _cv_rect(box, size, self.spec)
        if self.seed is not None:
            cv2.setRNGSeed(int(self.seed))
            if _SRAND is not None:
                _SRAND(int(self.seed) & 0xFFFFFFFF)
        try:
            with _opencv_log_level(self.spec.quiet):
                tracker = self.spec.create()      # a new object per sequence: OpenCV's re-init is unreliable
                ok = tracker.init(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), rect)
        except cv2.error as exc:
            raise TrackerError(f"OpenCV {self.name} rejected the box {box.tolist()} "
                               f"(as {rect}): {exc}") from None
        if ok is False:                   # the legacy API reports failure instead of raising
            raise TrackerError(f"OpenCV {self.name} could not start on the box {box.tolist()} (as {rect})")
        self._cv, self.frame_size = tracker, size
        self._init_box, self._init_rect = box.copy(), np.asarray(rect, dtype=np.float64)
        self.box = box.copy()
        self.last_score = None

    def update(self, image) -> np.ndarray:
        if self._cv is None:
            raise TrackerError(f"{type(self).__name__}.update() called before init()")
        frame = as_rgb_frame(image)
        check_frame_size(self.frame_size, frame)
        ok, rect = self._cv.update(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        rect = np.asarray(rect, dtype=np.float64).reshape(4)
        if ok and np.isfinite(rect).all() and rect[2] > 0 and rect[3] > 0:
            self.box = self._to_box(rect)
            self.last_score = 1.0
        else:
            self.last_score = 0.0          # lost: keep the last box (got10k-style evaluation)
        return self.box.copy()

    def _to_box(self, rect: np.ndarray) -> np.ndarray:
        """OpenCV's rectangle in the caller's terms: the initial rect -> the initial float box,
        preserving the centre offset and size ratio between them (scaled with the rect's size)."""
        r0, b0 = self._init_rect, self._init_box
        scale = rect[2:] / r0[2:]
        center = rect[:2] + rect[2:] / 2 + (b0[:2] + b0[2:] / 2 - r0[:2] - r0[2:] / 2) * scale
        size = b0[2:] * scale
        return np.concatenate([center - size / 2, size])


def build_opencv_tracker(spec, seed: int | None = 0) -> OpenCVTracker:
    """An :class:`OpenCVTracker` for a registry spec or name (``cv2-mil``, ``cv2-kcf``/``cv2-csrt``
    on contrib builds; ``cv2-nano``, ``cv2-vit`` with their model files)."""
    from tracker.registry import model_file_paths, tracker_spec

    spec = tracker_spec(spec) if isinstance(spec, str) else spec
    if spec.family != "opencv" and not spec.model_files:
        raise TrackerError(f"{spec.name} is not an OpenCV tracker (this cv2 {cv2.__version__} offers: "
                           f"{', '.join(OPENCV_TRACKERS + ('cv2-nano', 'cv2-vit'))})")
    if spec.model_files:
        return OpenCVTracker(spec.name, seed=seed, spec=_dnn_spec(spec.name, model_file_paths(spec)))
    return OpenCVTracker(spec.name, seed=seed)
