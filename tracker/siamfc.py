"""The SiamFC tracker (multi-scale search, cosine window, scale penalty and damping; siamfc-pytorch).

Also the base class every Siamese tracker of the toolkit shares (:class:`SiameseTracker`: frame
conversion, device, box checks). Per frame SiamFC does one batched forward of its ``scale_num``
search crops against the template features cached at init, upsamples all responses in one
``cv2.resize`` call and moves to the best peak.

Orientation estimation (``orientations=N > 0``): N rotated copies of the template (360/N degrees
apart) are built once at init and correlated in the same forward; the best (scale, orientation)
peak wins, and the tracker reports ``last_angle`` (degrees CCW) and ``last_polygon`` (the initial
box rotated by it); ``update`` returns an axis-aligned box of the rotated target, by default the
bounds of the ellipse inscribed in that polygon (``axis_box``: the polygon's own bounds
over-estimate round and irregular targets). ``orientation_window`` limits the search to
orientations near the last one (the RE-SiamNet motion prior); ``orientation_margin``,
``orientation_penalty`` and ``orientation_patience`` keep an upright target upright. With
``template_lr > 0`` the template features follow the target's current appearance (a linear
update after every frame). With ``ridge_lambda > 0`` the template is fitted to the first frame at
init (:meth:`SiamFCTracker.fit_template`: closed-form ridge regression that suppresses the
background and look-alikes). With ``colour_weight > 0`` colour histograms of the target and its
surroundings (:mod:`tracker.colour`, Staple's per-pixel score) are blended into the response
map. Subclasses override :meth:`template_crops`,
:meth:`build_template`, :meth:`compute_responses` or :meth:`locate_peak`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch
from got10k.trackers import Tracker

from common.config import ConfigError, from_dict
from common.device import DeviceError
from common.device import resolve_device as common_resolve_device
from data.frames import TrackerError, as_rgb, check_frame_size  # TrackerError is defined there (no torch)

from .backends import REFERENCE_BACKEND, BackendError, build_features, resolve_backend
from .colour import ColourModel, colour_bins
from .crops import context_size, crop_and_resize, crop_many, image_to_crop, mean_color
from .orientation import AXIS_BOX_MODES, axis_aligned_box, orientation_mask, rotated_template_bank

__all__ = ["TrackerError", "SiameseTracker", "SiamFCParams", "SiamFCTracker", "Peak", "as_rgb_frame",
           "check_init_box", "resolve_device", "rotated_box_polygon", "UPRIGHT_TEMPLATE_OPTIONS"]

MIN_SCALE, MAX_SCALE = 0.1, 10.0   # target size stays within these factors of the initial size
MAX_BOX_FACTOR = 100.0             # an initial box is at most this many frame widths/heights large
# tracking options' upper bounds (each frame upsamples scale_num maps of score_size * response_up
# pixels and crops scale_num searches of instance_size pixels): far above any useful value, low
# enough that a typo cannot allocate gigabytes per frame
MAX_RESPONSE_UP, MAX_SCALE_NUM, MAX_INSTANCE_SIZE, MAX_ORIENTATIONS = 32, 15, 1023, 360
MAX_SCALE_STEP, MAX_RIDGE_SIGMA = 2.0, 10.0
# options of a single upright template (the first-frame fit): a rotated-template search does not
# take them from a checkpoint's upright choices (tools/tune_tracking.py)
UPRIGHT_TEMPLATE_OPTIONS = ("ridge_lambda", "ridge_sigma")


def resolve_device(device=None) -> torch.device:
    """:func:`common.device.resolve_device` with its error as a TrackerError."""
    try:
        return common_resolve_device(device)
    except DeviceError as exc:
        raise TrackerError(str(exc)) from None


def as_rgb_frame(image) -> np.ndarray:
    """A frame as an HxWx3 uint8 RGB array: PIL images of any mode, or arrays HxW, HxWx1, HxWx3, HxWx4
    (alpha dropped) of 8-bit, 16-bit or float pixels (:func:`data.frames.to_uint8`: no clipping)."""
    return as_rgb(image)


def check_init_box(box, frame_shape) -> np.ndarray:
    """The initial box as float64 [x, y, w, h]: finite numbers, a positive size of at most
    ``MAX_BOX_FACTOR`` times the frame's, overlapping the frame."""
    try:
        b = np.asarray(box, dtype=np.float64).reshape(4)
    except (TypeError, ValueError):
        raise TrackerError(f"the initial box must be 4 numbers x,y,w,h, got {box!r}") from None
    if not np.isfinite(b).all():
        raise TrackerError(f"the initial box {b.tolist()} must have a finite position and size")
    if b[2] <= 0 or b[3] <= 0:
        raise TrackerError(f"the initial box {b.tolist()} has zero or negative size")
    height, width = frame_shape[:2]
    if b[2] > MAX_BOX_FACTOR * width or b[3] > MAX_BOX_FACTOR * height:
        raise TrackerError(f"the initial box {b.tolist()} is more than {MAX_BOX_FACTOR:g} times as large as the "
                           f"{width}x{height} frame")
    if b[0] >= width or b[1] >= height or b[0] + b[2] <= 0 or b[1] + b[3] <= 0:
        raise TrackerError(f"the initial box {b.tolist()} lies outside the {width}x{height} frame")
    return b


def rotated_box_polygon(center, size, angle_deg: float) -> np.ndarray:
    """Corners (8,) of a w x h rectangle rotated CCW on screen about its centre: TL, TR, BR, BL of the upright box."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    w, h = size
    offsets = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], dtype=np.float64) / 2
    rot = np.array([[c, s], [-s, c]])            # CCW on screen with y pointing down
    return (offsets @ rot.T + np.asarray(center, dtype=np.float64)).reshape(8)


class SiameseTracker(Tracker):
    """A got10k tracker around a Siamese model: holds ``.model`` (eval mode) and ``.device``.

    After every ``update`` the tracker sets ``last_score`` (the peak's confidence in 0..1); trackers
    estimating orientation also set ``last_angle`` and ``last_polygon``. ``features(images)`` is
    ``model.extract(images).out`` through the inference ``backend`` (:mod:`tracker.backends`;
    "auto" here means the live model, ``build_tracker`` picks a faster one for weights from a file).
    """

    def __init__(self, model, device=None, name: str = "siamese", backend: str = "auto"):
        super().__init__(name=name, is_deterministic=True)
        self.device = resolve_device(device)
        self.model = self.inference_model(model.to(self.device).eval())
        try:
            self.backend = resolve_backend(backend, self.device, live_model=True)
            self.features = build_features(self.model, self.backend, self.device)
        except BackendError as exc:
            raise TrackerError(str(exc)) from None
        self.config = model.config
        self.last_score: float | None = None
        self.last_angle: float | None = None
        self.last_polygon: np.ndarray | None = None
        self.center = self.target_sz = None

    def inference_model(self, model):
        """The model the tracker runs, given the caller's (on the device, eval mode); subclasses
        may return a twin with inference-only parts."""
        return model

    def _tensor(self, crops: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 crops -> (N, 3, H, W) float tensor on the model's device (the
        backend's own conversion where it has one: ONNX Runtime reads contiguous float32 arrays)."""
        convert = getattr(self.features, "images_from_crops", None)
        if convert is not None:
            return convert(crops, self.device)
        return torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float()

    def _start(self, image, box) -> np.ndarray:
        frame = as_rgb_frame(image)
        box = check_init_box(box, frame.shape)
        self.frame_size = (frame.shape[1], frame.shape[0])
        self.center = box[:2] + box[2:] / 2
        self.target_sz = box[2:].copy()
        self.init_sz = box[2:].copy()
        self.avg_color = mean_color(frame)
        self.last_score = self.last_angle = self.last_polygon = None
        return frame

    def _clamp_state(self) -> None:
        width, height = self.frame_size
        self.center = np.clip(self.center, 0.0, [width, height])
        self.target_sz = np.clip(self.target_sz, self.init_sz * MIN_SCALE, self.init_sz * MAX_SCALE)

    def _require_init(self) -> None:
        if self.center is None:
            raise TrackerError(f"{type(self).__name__}.update() called before init()")


@dataclass
class SiamFCParams:
    """Tracking hyper-parameters of SiamFC (defaults: siamfc-pytorch, siamfc-pytorch)."""

    scale_num: int = 3
    scale_step: float = 1.0375
    scale_lr: float = 0.59
    scale_penalty: float = 0.9745
    window_influence: float = 0.176
    response_up: int = 16
    instance_size: int = 0             # search crop side in crop pixels (0: the model's); larger searches farther, same scale
    orientations: int = 0              # N > 0: estimate rotation with N rotated templates
    orientation_window: float = 0.0    # search orientations within ± this many degrees of the last (0: all)
    orientation_margin: float = 0.0    # a new orientation must beat the current one's peak by this (logits)
    orientation_penalty: float = 1.0   # peak factor per template step away from the current orientation (1: none)
    orientation_patience: int = 1      # a new orientation must win this many frames in a row before the tracker turns
    axis_box: str = "ellipse"          # axis-aligned output box of a rotated target (orientation.axis_aligned_box)
    template_lr: float = 0.0           # per frame, blend this much of the target's current appearance into the template (0: fixed)
    template_min_score: float = 0.0    # ... only on frames whose peak confidence (0..1) reaches this
    ridge_lambda: float = 0.0          # > 0: fit the template to the first frame, this ridge regularisation (0: off)
    ridge_sigma: float = 0.1           # ... its label: a Gaussian of this many target sizes (sqrt(w h))
    motion_gain: float = 0.0           # centre the search this far along the target's smoothed velocity (0: off, 1: all of it)
    motion_lr: float = 0.5             # ... the velocity's per-frame update rate (exponential average of the moves)
    colour_weight: float = 0.0         # blend this much of a colour-histogram score into the response (0: off; tracker.colour)
    colour_lr: float = 0.04            # ... the histograms' per-frame update rate

    def __post_init__(self):
        for name in ("scale_num", "response_up", "orientations", "orientation_patience", "instance_size"):
            value, least = getattr(self, name), 0 if name in ("orientations", "instance_size") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
        for name, most in (("scale_num", MAX_SCALE_NUM), ("response_up", MAX_RESPONSE_UP),
                           ("instance_size", MAX_INSTANCE_SIZE), ("orientations", MAX_ORIENTATIONS)):
            if getattr(self, name) > most:
                raise ConfigError(f"{name} must be at most {most}, got {getattr(self, name)}")
        if self.scale_num % 2 == 0:
            raise ConfigError(f"scale_num must be odd (a centre scale), got {self.scale_num}")
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name != "axis_box" and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                       or not math.isfinite(value)):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if not 1.0 <= self.scale_step <= MAX_SCALE_STEP:
            raise ConfigError(f"scale_step must be in [1, {MAX_SCALE_STEP:g}], got {self.scale_step}")
        for name in ("scale_lr", "scale_penalty", "window_influence", "orientation_penalty", "template_lr",
                     "template_min_score", "motion_gain", "motion_lr", "colour_weight", "colour_lr"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.ridge_lambda >= 0:
            raise ConfigError(f"ridge_lambda must be a finite number >= 0, got {self.ridge_lambda}")
        if not 0 < self.ridge_sigma <= MAX_RIDGE_SIGMA:
            raise ConfigError(f"ridge_sigma must be in (0, {MAX_RIDGE_SIGMA:g}] target sizes, got {self.ridge_sigma}")
        if self.ridge_lambda and self.orientations:
            raise ConfigError("ridge_lambda fits one upright template; it cannot be combined with orientations > 0")
        if not self.orientation_window >= 0:
            raise ConfigError(f"orientation_window must be >= 0, got {self.orientation_window}")
        if not self.orientation_margin >= 0:
            raise ConfigError(f"orientation_margin must be >= 0, got {self.orientation_margin}")
        if self.axis_box not in AXIS_BOX_MODES:
            raise ConfigError(f"axis_box must be one of {', '.join(AXIS_BOX_MODES)}, got {self.axis_box!r}")


class Peak(NamedTuple):
    scale_index: int
    orientation_index: int    # index into the template bank
    displacement: np.ndarray  # (dx, dy) in upsampled-response pixels from the map centre
    score: float              # confidence in 0..1


class SiamFCTracker(SiameseTracker):
    """SiamFC over a :class:`tracker.models.SiamFCNet` (any model with ``extract``/``head_bank``)."""

    def __init__(self, model, device=None, name: str = "siamfc", backend: str = "auto", **options):
        super().__init__(model, device, name, backend)
        self.params = p = from_dict(SiamFCParams, options, "tracker options")
        self.stride = int(getattr(model, "stride", 8))
        self.instance_size, self.score_size = self.search_geometry(model, p.instance_size)
        self.upscale_size = self.score_size * p.response_up
        half = (p.scale_num - 1) / 2
        self.scale_factors = p.scale_step ** np.linspace(-half, half, p.scale_num)
        self.scale_weights = np.full(p.scale_num, p.scale_penalty, dtype=np.float32)
        self.scale_weights[p.scale_num // 2] = 1.0
        hann = np.hanning(self.upscale_size).astype(np.float32)
        window = np.outer(hann, hann)
        self.window = window / window.sum()
        self.orientation_angles = (
            np.arange(p.orientations, dtype=np.float64) * 360.0 / p.orientations if p.orientations else np.zeros(1)
        )
        self.template = None
        self.gemm_correlation = True    # False: always the model's conv2d (an A/B switch, not an option)

    @property
    def estimates_orientation(self) -> bool:
        return self.params.orientations > 0

    def search_geometry(self, model, instance_size: int) -> tuple[int, int]:
        """(search crop side, response side) for ``instance_size`` (0: the model's own).

        The network is fully convolutional, so a larger crop at the same pixel scale (the search
        region grows, the target's size in the crop does not) gives a larger response map: one
        more cell per ``stride`` crop pixels. The crop must differ from the model's by whole
        strides, so that the map's centre stays on the crop's centre.
        """
        own = int(model.config.instance_size)
        size = instance_size or own
        extra = size - own
        if extra % self.stride or int(model.score_size) + extra // self.stride < 1:
            raise ConfigError(f"instance_size must be the model's {own} plus a multiple of its stride "
                              f"{self.stride} (e.g. {own + 4 * self.stride}), and leave a response; got {instance_size}")
        return size, int(model.score_size) + extra // self.stride

    # ---- template bank -------------------------------------------------------------------
    def template_crops(self, frame: np.ndarray, turned: float = 0.0) -> np.ndarray:
        """(N, e, e, 3) exemplar crops: the target, or N rotated copies (copy k shows it rotated by
        angle k), of a target that has turned by ``turned`` degrees since the first frame."""
        return rotated_template_bank(frame, self.center, self.z_sz, self.config.exemplar_size,
                                     self.orientation_angles - turned, self.avg_color)

    @torch.inference_mode()
    def build_template(self, frame: np.ndarray, turned: float = 0.0):
        """Template features (N, C, h, w) of the target where it is now (at init: once per init)."""
        feats = self.features(self._tensor(self.template_crops(frame, turned)))
        return self.model.prepare_template(feats)

    @torch.inference_mode()
    def update_template(self, frame: np.ndarray) -> None:
        """Linear template update (``template_lr``): the template follows slow changes of the
        target's appearance (a turning target above all) at the cost of one exemplar forward per
        frame; with a bank, every rotated copy is refreshed from the target's current orientation."""
        p = self.params
        if not p.template_lr or self.last_score < p.template_min_score:     # after apply_peak: scored
            return
        turned = float(self.orientation_angles[self.orientation_index]) if self.estimates_orientation else 0.0
        fresh = self.build_template(frame, turned)
        self.template = self.template * (1.0 - p.template_lr) + fresh * p.template_lr

    # centres of the first-frame crops the ridge fit learns from, in fractions of the response
    # map's half span: the target at the centre and towards each corner (more background seen)
    RIDGE_SHIFTS = np.array([[0.0, 0.0], [0.6, 0.6], [0.6, -0.6], [-0.6, 0.6], [-0.6, -0.6]])

    @torch.inference_mode()
    def fit_template(self, frame: np.ndarray) -> None:
        """First-frame learning (``ridge_lambda > 0``), in closed form.

        SiamFC's template is the linear filter of its correlation, fixed by the exemplar's features.
        This replaces it by the filter nearest to them whose responses on search crops of the
        first frame (target at the centre and off-centre) match a label: the exemplar's own peak
        value at the target, falling as a Gaussian (``ridge_sigma``) to the crops' median response
        everywhere else. Background and look-alikes that the offline-trained features confuse
        with the target are pushed down, which is what discriminative trackers (DCF, DiMP) learn
        at init. Dual ridge regression: w = z0 + A^T (A A^T + lambda * mean(diag A A^T) I)^-1 (y - A z0),
        A the (crops * R * R, C h w) patches; costs a few search forwards once per ``init``.
        """
        p = self.params
        z0 = self.template                                              # (1, C, h, w)
        size = self.instance_size
        half_span = (self.score_size - 1) / 2 * self.stride             # crop px from the map centre to its edge
        shifts = self.RIDGE_SHIFTS * half_span * self.x_sz / size       # image px
        centres = self.center[None, :] + shifts
        crops = np.stack([crop_and_resize(frame, c, self.x_sz, size, self.avg_color) for c in centres])
        # forwards in batches of scale_num: the shape the per-frame search already uses (backends pin shapes)
        n, chunk = len(crops), p.scale_num
        padded = np.concatenate([crops, np.repeat(crops[-1:], -n % chunk, axis=0)])
        feats = torch.cat([self.features(self._tensor(padded[i:i + chunk]))
                           for i in range(0, len(padded), chunk)])[:n]
        patches = torch.nn.functional.unfold(feats.double(), z0.shape[-2:])        # (n, D, R*R)
        patches = patches.transpose(1, 2).reshape(-1, patches.shape[1])             # (n*R*R, D)
        w0 = z0.double().reshape(-1)
        response = patches @ w0
        r = self.score_size
        cells = (np.arange(r) - (r - 1) / 2) * self.stride                           # crop px of each cell
        target_px = -shifts * size / self.x_sz                                      # target in each crop, from its centre
        sigma = p.ridge_sigma * float(np.sqrt(np.prod(self.target_sz))) * size / self.x_sz
        dx = cells[None, None, :] - target_px[:, 0, None, None]
        dy = cells[None, :, None] - target_px[:, 1, None, None]
        gauss = torch.from_numpy(np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2)).reshape(-1)).to(response)
        centre = response.view(n, r, r)[0, r // 2 - 1:r // 2 + 2, r // 2 - 1:r // 2 + 2].max()
        floor = response.median()
        label = floor + (centre - floor) * gauss
        gram = patches @ patches.T
        ridge = p.ridge_lambda * gram.diagonal().mean()
        gram.diagonal().add_(ridge)
        alpha = torch.linalg.solve(gram, label - response)
        w = w0 + patches.T @ alpha
        self.template = w.reshape(z0.shape).to(z0.dtype)

    # ---- per frame -----------------------------------------------------------------------
    def search_crops(self, frame: np.ndarray) -> np.ndarray:
        """The ``scale_num`` search crops (S, H, W, 3) about the current centre."""
        return crop_many(frame, self.center, self.x_sz * self.scale_factors, self.instance_size, self.avg_color)

    def correlates_by_gemm(self) -> bool:
        """Whether this frame's correlation is :func:`tracker.heads.xcorr_gemm`: on the optimised
        backends, for one template (4-7x faster than conv2d there, the same sums up to float
        rounding); the reference backend and template banks (no faster by GEMM) keep the model's
        own conv2d."""
        return self.gemm_correlation and self.backend != REFERENCE_BACKEND and self.template.shape[0] == 1

    @torch.inference_mode()
    def compute_responses(self, search: torch.Tensor) -> np.ndarray:
        """(S, N, R, R) float32 responses of the S search crops to the N templates."""
        x_feat = self.features(search)
        return self.model.head_bank(self.template, x_feat, gemm=self.correlates_by_gemm()).float().cpu().numpy()

    def allowed_orientations(self) -> np.ndarray:
        """Indices of the templates searched this frame (all, or those near the last orientation)."""
        last = self.orientation_angles[self.orientation_index]
        return np.flatnonzero(orientation_mask(self.orientation_angles, last, self.params.orientation_window))

    def locate_peak(self, responses: np.ndarray, allowed: np.ndarray, colour: np.ndarray | None = None) -> Peak:
        """Best (scale, orientation) after upsampling, scale penalty and cosine window (siamfc-pytorch).

        With a template bank, each scale's best orientation is chosen on the raw 17x17 peaks, so
        only ``scale_num`` maps are upsampled. ``colour`` (the upsampled map's shape, values in
        0..1: :meth:`colour_scores`) is blended into the chosen scale's map, scaled to 0..1, with
        weight ``colour_weight`` before the window.
        """
        s, _, r, _ = responses.shape
        candidates = responses[:, allowed]                               # (S, n, R, R)
        # each scale's best orientation, chosen on the raw peaks (with no bank: the one template)
        peaks = candidates.reshape(s, len(allowed), -1).max(axis=2)      # (S, n)
        if self.params.orientation_margin and len(allowed) > 1:
            # a change of orientation needs a clearly better match
            peaks = peaks - self.params.orientation_margin * (allowed != self.orientation_index)[None, :]
        if self.params.orientation_penalty < 1.0 and len(allowed) > 1:
            # like the scale penalty: peaks (shifted to start at 0) scaled by penalty ** steps turned
            n = len(self.orientation_angles)
            steps = np.abs((allowed - self.orientation_index + n // 2) % n - n // 2)
            peaks = (peaks - peaks.min()) * self.params.orientation_penalty ** steps[None, :]
        keep = peaks.argmax(axis=1)
        maps = candidates[np.arange(s), keep]                            # (S, R, R)
        u = self.upscale_size
        up = cv2.resize(np.ascontiguousarray(maps.transpose(1, 2, 0)), (u, u), interpolation=cv2.INTER_CUBIC)
        up = np.ascontiguousarray(up.reshape(u * u, s).T)                # (S, U*U): fast row reductions
        # penalise the non-centre scales on responses shifted to start at 0 (the head's bias is arbitrary)
        best = int(np.argmax((up.max(axis=1) - up.min()) * self.scale_weights))
        response = up[best].reshape(u, u)
        response = response - response.min()
        if colour is not None:
            w = self.params.colour_weight
            response = (1 - w) * response / (response.max() + 1e-16) + w * colour
            response = response - response.min()
        response = response / (response.sum() + 1e-16)
        response = (1 - self.params.window_influence) * response + self.params.window_influence * self.window
        row, col = np.unravel_index(np.argmax(response), response.shape)
        disp = np.array([col, row], dtype=np.float64) - (u - 1) / 2.0
        score = 1.0 / (1.0 + math.exp(-float(maps[best].max())))
        return Peak(best, int(allowed[keep[best]]), disp, score)

    def apply_peak(self, peak: Peak) -> None:
        """Move the target state to a peak: centre, damped scale, orientation."""
        p = self.params
        scale = self.scale_factors[peak.scale_index]
        disp_crop = peak.displacement * self.stride / p.response_up
        self.center = self.center + disp_crop * self.x_sz * scale / self.instance_size
        damped = (1 - p.scale_lr) + p.scale_lr * scale
        self.target_sz = self.target_sz * damped
        self._clamp_state()
        factor = float(np.sqrt(np.prod(self.target_sz / self.init_sz)))
        self.z_sz, self.x_sz = self.z_init * factor, self.x_init * factor
        self.orientation_index = self._patient_orientation(peak.orientation_index)
        self.last_score = peak.score

    def _patient_orientation(self, winner: int) -> int:
        """The orientation the tracker takes: ``winner`` once it has won ``orientation_patience``
        frames in a row (a brief change of pose does not turn an upright target), else the current one."""
        if winner == self.orientation_index:
            self._challenger = (winner, 0)
            return winner
        index, wins = self._challenger
        wins = wins + 1 if index == winner else 1
        self._challenger = (winner, wins)
        if wins >= self.params.orientation_patience:
            self._challenger = (winner, 0)
            return winner
        return self.orientation_index

    def current_box(self) -> np.ndarray:
        if self.estimates_orientation:
            angle = float(self.orientation_angles[self.orientation_index])
            polygon = rotated_box_polygon(self.center, self.target_sz, angle)
            self.last_angle = (angle + 180.0) % 360.0 - 180.0
            self.last_polygon = polygon
            return axis_aligned_box(self.center, self.target_sz, angle, self.params.axis_box)
        return np.concatenate([self.center - self.target_sz / 2, self.target_sz])

    # ---- got10k API ----------------------------------------------------------------------
    def init(self, image, box) -> None:
        frame = self._start(image, box)
        ratio = self.instance_size / self.config.exemplar_size
        self.z_init = context_size(self.target_sz[0], self.target_sz[1], self.config.context)
        self.x_init = self.z_init * ratio
        self.z_sz, self.x_sz = self.z_init, self.x_init
        self.orientation_index = 0
        self.velocity = np.zeros(2)   # image px per frame, for motion_gain
        self._challenger = (0, 0)     # (orientation, frames in a row it has won) for orientation_patience
        self.template = self.build_template(frame)
        if self.params.ridge_lambda:
            self.fit_template(frame)
        self.colour_model = None
        if self.params.colour_weight:
            self.colour_model = ColourModel(self.instance_size)
            crop = crop_and_resize(frame, self.center, self.x_sz, self.instance_size, self.avg_color)
            self.learn_colours(colour_bins(crop), self.center.copy(), self.x_sz, rate=1.0)

    def update(self, image) -> np.ndarray:
        self._require_init()
        frame = as_rgb_frame(image)
        check_frame_size(self.frame_size, frame)
        previous = self.center.copy()
        lead = self.motion_lead()
        if lead.any():                  # the search (and its window) is centred ahead, in the frame
            self.center = self.center + lead
            self._clamp_state()
        crops = self.search_crops(frame)
        responses = self.compute_responses(self._tensor(crops))
        colour = None
        if self.colour_model is not None:   # on the centre scale's crop (the scales differ by a few %)
            search_centre, search_side = self.center.copy(), self.x_sz
            bins = colour_bins(crops[len(crops) // 2])
            colour = self.colour_scores(bins)
        self.apply_peak(self.locate_peak(responses, self.allowed_orientations(), colour))
        if colour is not None:
            self.learn_colours(bins, search_centre, search_side, rate=self.params.colour_lr)
        self.velocity += self.params.motion_lr * (self.center - previous - self.velocity)
        self.update_template(frame)
        return self.current_box()

    # ---- colour model (colour_weight > 0) -----------------------------------------------------
    def colour_scores(self, bins: np.ndarray) -> np.ndarray:
        """The colour model's box score (0..1) at every position of the upsampled response map:
        the mean target probability over a box of the target's (unturned) size there, in the
        search crop whose colour bins are ``bins``."""
        size = self.target_sz * self.instance_size / self.x_sz
        scores = self.colour_model.box_scores(bins, size)
        u, step = self.upscale_size, self.stride / self.params.response_up
        offset = self.instance_size / 2.0 - 0.5 - (u - 1) / 2.0 * step      # map pixel -> crop pixel index
        m = np.array([[step, 0.0, offset], [0.0, step, offset]])
        return cv2.warpAffine(scores, m, (u, u), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def learn_colours(self, bins: np.ndarray, crop_centre: np.ndarray, crop_side: float, rate: float) -> None:
        """Update the colour histograms from a crop's ``bins`` (the crop cut about ``crop_centre``,
        ``crop_side`` image pixels) at the target's current box (the axis-aligned box
        ``current_box`` reports)."""
        size = self.current_box()[2:] * self.instance_size / crop_side
        centre = image_to_crop(self.center, crop_centre, crop_side, self.instance_size)
        width, height = self.frame_size
        valid = image_to_crop(np.array([[0.0, 0.0], [width, height]]), crop_centre, crop_side, self.instance_size)
        self.colour_model.learn(bins, centre, size, valid.reshape(-1), rate)

    def motion_lead(self) -> np.ndarray:
        """How far ahead of the last centre this frame's search is centred: ``motion_gain`` times
        the smoothed velocity, at most a quarter of the search side (zero by default). A target that
        keeps moving fast (a turning camera carries off-centre targets along circles) stays near
        the middle of the response map, where the window does not hold it back and the map still
        reaches it."""
        lead = self.params.motion_gain * self.velocity
        reach = self.x_sz / 4.0
        norm = float(np.hypot(*lead))
        return lead * (reach / norm) if norm > reach else lead
