"""Synthetic tracking sequences with exact ground truth, for rotation-aware training and tests.

Each sequence shows one target object on a real-photo background: the target is a patch cut from
a real photo (scikit-image's bundled photos, or a folder the user names) under a shape mask, or a
procedural texture with an off-centre marker so that its rotation is visible. Over the sequence
it translates smoothly, rotates in-plane (either direction, smoothly varying speed, sometimes
reversing), changes scale; the frame gets lighting changes, motion-blur episodes and sensor
noise; distractor objects move about (behind or in front of the target) and an occluding bar
may pass over the target. Everything is a deterministic function of the seed.

Ground truth per frame (continuous pixel coordinates: pixel (col j, row i) covers
[j, j+1) x [i, i+1); see tracker/crops.py):

- ``angles``: the target's in-plane rotation in degrees, counter-clockwise on screen,
  cumulative (not wrapped), 0 at the first frame;
- ``polygons``: the target's rotated rectangle (its texture rectangle at the current scale),
  corners x1,y1,...,x4,y4 in the order top-left, top-right, bottom-right, bottom-left of the
  upright object;
- ``boxes``: x, y, w, h, the tight axis-aligned box of the pixels the target's mask covers
  (opacity >= 0.5), clipped to the frame; occluders do not shrink it (they lower ``cover``);
- ``cover``: GOT-10k visible-ratio class of the target (visible drawn area over its full
  area: 0 = none, 1..7 = steps of 15 %, 8 = >= 98 %); ``absent``: visible ratio < 1 %.

:mod:`data.generated` writes such sequences in the GOT-10k layout and keeps the cached embedded
default dataset.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from common.threads import memory_bytes

from .sprites import (
    GeneratorInputError,
    _bar_sprite,
    _composite,
    _ImagePool,
    _make_object,
    _motion_kernel,
    _placement,
    _rot,
    _rotation_profile,
    _smooth_signal,
    _Sprite,
    _trajectory,
    _warp_sprite,
    visible_ratio_to_cover,
)

__all__ = [
    "GENERATOR_VERSION",
    "GeneratorOptions",
    "GeneratorInputError",
    "GeneratedSequence",
    "generate_sequence",
    "visible_ratio_to_cover",
]

# Bump when the generator's output for a given seed changes: cached default datasets are keyed on it.
GENERATOR_VERSION = 2

_DEFAULT_SPECS = {
    "train": dict(num_sequences=40, num_frames=100, seed=20_240_001, subset="train"),
    # "val": got10k's ExperimentGOT10k evaluates a val subset locally (its test subset needs a server)
    "test": dict(num_sequences=12, num_frames=120, seed=20_240_002, subset="val"),
}
_DEFAULT_FRAME_SIZE = (320, 240)


MAX_FRAME_SIDE = 4096
MAX_FRAMES = 100_000      # frames of one sequence (all of them are held in memory until written)
MEMORY_SHARE = 0.5        # the frames being generated at once may fill at most this share of the machine's memory


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GeneratorInputError(f"the seed must be a non-negative integer, got {seed!r}")
    return int(seed)


@dataclass(frozen=True)
class GeneratorOptions:
    """Tunable ranges of the generator (pass as keyword ``**options``; unknown keys are rejected)."""

    object_size: tuple = (0.16, 0.28)      # sqrt(w*h) of the target as a fraction of min(frame W, H)
    aspect_ratio: tuple = (0.55, 1.8)      # w/h of the target rectangle (log-uniform)
    scale_range: tuple = (0.8, 1.3)        # scale change over the sequence
    max_speed: float = 5.0                 # px/frame, upper bound of the target's translation speed
    texture_prob: float = 0.35             # procedural texture instead of a photo patch
    num_distractors: tuple = (0, 2)        # inclusive range
    distractor_front_prob: float = 0.3     # a distractor passes in front of the target
    similar_distractor_prob: float = 0.5   # a distractor cut from the same source as the target
    occlusion_prob: float = 0.4            # an occluding bar crosses the target
    full_occlusion_prob: float = 0.1      # ... and is wide enough to hide it completely
    reverse_prob: float = 0.3              # the rotation reverses direction once
    blur_prob: float = 0.4                 # the sequence has motion-blur episodes
    lighting: float = 0.25                 # amplitude of the global gain change (0 = off)
    noise_std: float = 2.0                 # sensor noise (grey levels)
    background_pan: float = 12.0           # amplitude (px) of the slow background drift

    @classmethod
    def from_kwargs(cls, options: dict) -> "GeneratorOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise GeneratorInputError(f"unknown generator option(s): {', '.join(unknown)} "
                                      f"(known: {', '.join(sorted(names))})")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        opts = cls(**values)
        for f in dataclasses.fields(cls):
            v = getattr(opts, f.name)
            if isinstance(f.default, tuple):
                if not (isinstance(v, tuple) and len(v) == 2
                        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                        and 0 <= v[0] <= v[1] < math.inf):
                    raise GeneratorInputError(f"option {f.name} must be a (low, high) pair, got {v!r}")
            elif not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < math.inf:
                raise GeneratorInputError(f"option {f.name} must be a non-negative number, got {v!r}")
            elif f.name.endswith("_prob") and v > 1:
                raise GeneratorInputError(f"option {f.name} is a probability (0..1), got {v!r}")
        # bounds that keep the target's sprite and the distractors inside a frame-sized budget
        # (a huge object_size or aspect ratio would try to allocate terabytes)
        if not (0 < opts.object_size[0] and opts.object_size[1] <= 1):
            raise GeneratorInputError(f"option object_size is a fraction of the frame's short side, in (0, 1]: "
                                      f"got {opts.object_size!r}")
        if not (opts.aspect_ratio[0] >= 0.05 and opts.aspect_ratio[1] <= 20):
            raise GeneratorInputError(f"option aspect_ratio (w/h) must lie in [0.05, 20], got {opts.aspect_ratio!r}")
        if not (opts.scale_range[0] > 0 and opts.object_size[1] * opts.scale_range[1] <= 2):
            raise GeneratorInputError(f"option scale_range must be positive and keep the target within twice the "
                                      f"frame's short side (object_size high x scale_range high <= 2), got "
                                      f"{opts.scale_range!r}")
        if opts.num_distractors[1] > 50 or not all(float(x).is_integer() for x in opts.num_distractors):
            raise GeneratorInputError(f"option num_distractors must be whole numbers up to 50, got {opts.num_distractors!r}")
        return opts


@dataclass
class GeneratedSequence:
    """A generated sequence and its exact ground truth (conventions in the module docstring)."""

    frames: list                  # N x (H, W, 3) uint8 RGB
    boxes: np.ndarray             # (N, 4) x, y, w, h
    angles: np.ndarray            # (N,) degrees CCW on screen, cumulative
    polygons: np.ndarray          # (N, 8)
    absent: np.ndarray            # (N,) bool
    cover: np.ndarray             # (N,) int 0..8
    centers: np.ndarray = None    # (N, 2) target centre (= polygon centre)
    scales: np.ndarray = None     # (N,) target scale relative to its base size
    blur: np.ndarray = None       # (N,) motion-blur kernel length in px (0 = none)
    cut_by_image: np.ndarray = None   # (N,) bool, the target's rectangle crosses the frame border
    object_rgb: np.ndarray = None     # upright target texture (h, w, 3) uint8 at sprite resolution
    object_alpha: np.ndarray = None   # its opacity (h, w) float32 0..1
    sprite_resolution: float = 1.0    # sprite pixels per frame pixel at scale 1
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)


# ------------------------------------------------------------------------------------------------
def _check_arguments(num_frames, frame_size, rotation_speed, sequences_at_once: int = 1) -> tuple:
    """(num_frames, (width, height), (low, high) speed), checked before anything is drawn: at most
    ``MAX_FRAMES`` frames, and ``sequences_at_once`` sequences' frames (one per worker process)
    within ``MEMORY_SHARE`` of the machine's memory."""
    try:
        width, height = (int(v) for v in frame_size)
        lo_speed, hi_speed = (float(v) for v in rotation_speed)
    except (TypeError, ValueError):
        raise GeneratorInputError(f"bad num_frames / frame_size / rotation_speed: {num_frames!r}, "
                                  f"{frame_size!r}, {rotation_speed!r}") from None
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) \
            or not 1 <= num_frames <= MAX_FRAMES:
        raise GeneratorInputError(f"num_frames must be a whole number from 1 to {MAX_FRAMES}, got {num_frames!r}")
    n = int(num_frames)
    if width < 32 or height < 32 or width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE:
        raise GeneratorInputError(f"frame_size must be between 32x32 and {MAX_FRAME_SIDE}x{MAX_FRAME_SIDE}, "
                                  f"got {tuple(frame_size)}")
    need, memory = n * width * height * 3 * sequences_at_once, memory_bytes()
    if memory is not None and need > MEMORY_SHARE * memory:
        raise GeneratorInputError(f"{sequences_at_once} x {n} frames of {width}x{height} take {need / 2 ** 30:.1f} GiB, "
                                  f"more than {MEMORY_SHARE:.0%} of this machine's {memory / 2 ** 30:.1f} GiB: "
                                  "fewer frames, smaller frames or fewer workers")
    if not 0 <= lo_speed <= hi_speed <= 360:
        raise GeneratorInputError(f"rotation_speed must be (low, high) degrees per frame with 0 <= low <= high <= 360, "
                                  f"got {tuple(rotation_speed)}")
    return n, (width, height), (lo_speed, hi_speed)


@dataclass
class _Scene:
    """Everything drawn before the frames are rendered (one random stream per component)."""

    width: int
    height: int
    target: _Sprite
    centers: np.ndarray
    scales: np.ndarray
    angles: np.ndarray
    extent: float
    distractors: list
    background: tuple             # (zoomed photo, origin, drift, name, photo)
    occluder: tuple | None
    effects: tuple                # (gain, gradient, ramp, blur)


def _plan_target(rng, opts, object_pool, n, width, height, speeds) -> tuple:
    short = min(width, height)
    size = rng.uniform(*opts.object_size) * short
    aspect = math.exp(rng.uniform(math.log(opts.aspect_ratio[0]), math.log(opts.aspect_ratio[1])))
    target = _make_object(rng, object_pool, size * math.sqrt(aspect), size / math.sqrt(aspect), opts.texture_prob)
    base_w, base_h = (s / target.resolution for s in target.size)
    log_lo, log_hi = math.log(opts.scale_range[0]), math.log(opts.scale_range[1])
    scales = np.exp((log_lo + log_hi) / 2 + (log_hi - log_lo) / 2 * _smooth_signal(rng, n))
    extent = math.hypot(base_w, base_h) * scales.max()
    margin = min(0.35 * extent, short / 2 - 2)
    centers = _trajectory(rng, n, (margin, margin), (width - margin, height - margin), opts.max_speed)
    angles = _rotation_profile(rng, n, speeds, opts.reverse_prob)
    return target, size, scales, extent, centers, angles


def _plan_distractors(rng, opts, object_pool, n, width, height, speeds, target, size, centers, extent) -> list:
    distractors = []
    count = int(rng.integers(opts.num_distractors[0], opts.num_distractors[1] + 1))
    for _ in range(count):
        similar = rng.random() < opts.similar_distractor_prob
        d_size = size * rng.uniform(0.7, 1.2)
        d_aspect = math.exp(rng.uniform(math.log(opts.aspect_ratio[0]), math.log(opts.aspect_ratio[1])))
        sprite = _make_object(rng, object_pool, d_size * math.sqrt(d_aspect), d_size / math.sqrt(d_aspect),
                              opts.texture_prob, like=target if similar else None)
        d_scales = np.exp(0.15 * _smooth_signal(rng, n))
        d_centers = _trajectory(rng, n, (0, 0), (width, height), opts.max_speed * 1.2)
        d_angles = rng.uniform(-180, 180) + _rotation_profile(rng, n, speeds, opts.reverse_prob)
        front = rng.random() < opts.distractor_front_prob
        # a distractor in front passes over the target once (relative speed 4..8 px/frame), so
        # that it occludes for a while instead of hovering on the target
        direction = _rot(rng.uniform(-180, 180)) @ [1.0, 0.0]
        t_cross, pass_speed = rng.uniform(0.2, 0.8) * n, rng.uniform(4.0, 8.0)
        side = (_rot(90) @ direction) * rng.uniform(-0.4, 0.4) * extent
        if front:
            d_centers = centers + side + direction[None] * pass_speed * (np.arange(n)[:, None] - t_cross)
        distractors.append((sprite, d_centers, d_scales, d_angles, front))
    return distractors


def _plan_background(rng, opts, background_pool, n, width, height) -> tuple:
    """A zoomed photo drifting slowly: (zoomed, origin, drift, name, photo)."""
    bg_photo, _, bg_name = background_pool.get(int(rng.integers(len(background_pool))), rng)
    bh, bw = bg_photo.shape[:2]
    pan = opts.background_pan
    cover_scale = max((width + 2 * pan + 2) / bw, (height + 2 * pan + 2) / bh)
    zoom = cover_scale * rng.uniform(1.0, 1.8)
    bg = cv2.resize(bg_photo, (max(1, int(math.ceil(bw * zoom))), max(1, int(math.ceil(bh * zoom)))),
                    interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
    origin = np.array([rng.uniform(pan, bg.shape[1] - width - pan), rng.uniform(pan, bg.shape[0] - height - pan)])
    drift = pan * np.stack([_smooth_signal(rng, n, period=(80, 300)), _smooth_signal(rng, n, period=(80, 300))], 1)
    return bg, origin, drift, bg_name, bg_photo


def _plan_occluder(rng, opts, n, width, height, bg_photo, centers, extent):
    """An occluding bar crossing the target's path, or None."""
    if not rng.random() < opts.occlusion_prob:
        rng.random()
        return None
    full = rng.random() < opts.full_occlusion_prob
    bar_w = extent * (rng.uniform(1.0, 1.2) if full else rng.uniform(0.2, 0.5))
    bar = _bar_sprite(rng, bg_photo, bar_w, 2.5 * max(width, height))
    bar_angle = rng.uniform(-180, 180)       # the bar's long axis; it moves across it
    normal = _rot(bar_angle) @ [1.0, 0.0]
    t_cross = rng.uniform(0.25, 0.75) * n
    speed = rng.uniform(4.0, 7.0) + (2.0 if full else 0.0)   # px/frame across the target
    # relative to the target: the crossing takes (bar width + target extent) / speed frames
    bar_centers = centers + normal[None] * speed * (np.arange(n)[:, None] - t_cross)
    return bar, bar_centers, bar_angle


def _plan_effects(rng, opts, n, width, height) -> tuple:
    """Lighting gain and gradient, its ramp, and the motion blur length per frame."""
    gain = 1.0 + opts.lighting * _smooth_signal(rng, n, period=(40, 150))
    gradient = 0.5 * opts.lighting * _smooth_signal(rng, n, period=(40, 150))
    light_dir = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    ramp = ((xx - width / 2) * math.cos(light_dir) + (yy - height / 2) * math.sin(light_dir)) / (width / 2)
    has_blur = rng.random() < opts.blur_prob
    blur_signal = _smooth_signal(rng, n, period=(15, 60))
    blur = np.where(has_blur & (blur_signal > 0.45), 3 + 2 * np.round(3 * (blur_signal - 0.45) / 0.55), 0).astype(int)
    return gain, gradient, ramp, blur


def _visible_area(placed, front_layers) -> tuple:
    """(box, visible alpha) of the placed target seen through the layers in front of it."""
    x0, y0, warped = placed
    alpha = warped[:, :, 3]
    mask = alpha >= 0.5
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = [x0 + cols[0], y0 + rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1] if rows.size else np.nan
    transmit = np.ones_like(alpha)
    h, w = alpha.shape
    for layer in front_layers:
        if layer is None:
            continue
        lx0, ly0, lw = layer
        ox0, oy0 = max(x0, lx0), max(y0, ly0)
        ox1, oy1 = min(x0 + w, lx0 + lw.shape[1]), min(y0 + h, ly0 + lw.shape[0])
        if ox1 > ox0 and oy1 > oy0:
            transmit[oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0] *= 1.0 - lw[oy0 - ly0:oy1 - ly0, ox0 - lx0:ox1 - lx0, 3]
    return box, float((alpha * transmit).sum())


def _render_frame(scene: _Scene, t: int, opts, rng_noise) -> tuple:
    """Frame t: (uint8 frame, box, polygon corners, visible target alpha, cut by the image border)."""
    width, height, n = scene.width, scene.height, len(scene.centers)
    bg, origin, drift = scene.background[:3]
    m_bg = np.array([[1.0, 0, origin[0] + drift[t, 0]], [0, 1.0, origin[1] + drift[t, 1]]])
    frame = cv2.warpAffine(bg, m_bg, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    front_layers = []
    for sprite, d_centers, d_scales, d_angles, front in scene.distractors:
        placed = _warp_sprite(sprite, *_placement(sprite, d_centers[t], d_scales[t], d_angles[t]), width, height)
        if placed is None:
            continue
        if front:
            front_layers.append(placed)
        else:
            _composite(frame, placed)
    a, b, corners = _placement(scene.target, scene.centers[t], scene.scales[t], scene.angles[t])
    placed = _warp_sprite(scene.target, a, b, corners, width, height)
    if scene.occluder is not None:
        bar, bar_centers, bar_angle = scene.occluder
        front_layers.append(_warp_sprite(bar, *_placement(bar, bar_centers[t], 1.0, bar_angle), width, height))
    box, visible = np.nan, 0.0
    if placed is not None:
        _composite(frame, placed)
        box, visible = _visible_area(placed, front_layers)
    for layer in front_layers:
        if layer is not None:
            _composite(frame, layer)
    cut = corners[:, 0].min() < 0 or corners[:, 1].min() < 0 or corners[:, 0].max() > width \
        or corners[:, 1].max() > height
    # lighting, blur, noise
    gain, gradient, ramp, blur = scene.effects
    frame *= (gain[t] * (1.0 + gradient[t] * ramp))[..., None]
    if blur[t]:
        if t + 1 < n:
            motion = scene.centers[t + 1] - scene.centers[t]
        else:
            motion = scene.centers[t] - scene.centers[t - 1] if n > 1 else np.array([1.0, 0.0])
        direction = math.degrees(math.atan2(motion[1], motion[0])) if np.any(motion) else 0.0
        frame = cv2.filter2D(frame, -1, _motion_kernel(int(blur[t]), direction), borderType=cv2.BORDER_REFLECT)
    if opts.noise_std > 0:
        frame += rng_noise.standard_normal(frame.shape, dtype=np.float32) * opts.noise_std
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8), box, corners.reshape(-1), visible, cut


def generate_sequence(seed: int, num_frames: int = 100, frame_size=(320, 240), rotation_speed=(0.5, 4.0),
                      rotating: bool = True, object_dir=None, background_dir=None,
                      **options) -> GeneratedSequence:
    """Generate one sequence (deterministic in ``seed`` and the arguments).

    frame_size: (width, height); rotation_speed: (low, high) degrees per frame, the speed varies
    smoothly in this range and the direction is random; rotating=False draws exactly the same
    sequence without any in-plane rotation (the non-rotating twin). object_dir / background_dir:
    folders of images to cut objects / backgrounds from (default: scikit-image's photos; an
    object image with an alpha channel is used with its own mask). options: see GeneratorOptions.
    """
    opts = GeneratorOptions.from_kwargs(options)
    seed = _check_seed(seed)
    n, (width, height), speeds = _check_arguments(num_frames, frame_size, rotation_speed)
    object_pool = _ImagePool(object_dir, "object")
    background_pool = _ImagePool(background_dir, "background")
    # independent streams per component: changing one does not shift the others
    streams = np.random.SeedSequence(int(seed)).spawn(6)
    rng_target, rng_distract, rng_occl, rng_bg, rng_effects, rng_noise = (np.random.default_rng(s) for s in streams)
    target, size, scales, extent, centers, angles = _plan_target(rng_target, opts, object_pool, n, width, height, speeds)
    distractors = _plan_distractors(rng_distract, opts, object_pool, n, width, height, speeds, target, size, centers,
                                    extent)
    background = _plan_background(rng_bg, opts, background_pool, n, width, height)
    occluder = _plan_occluder(rng_occl, opts, n, width, height, background[4], centers, extent)
    effects = _plan_effects(rng_effects, opts, n, width, height)
    if not rotating:
        angles = np.zeros(n)
        distractors = [(s, c, sc, np.full(n, a[0]), f) for s, c, sc, a, f in distractors]
    scene = _Scene(width, height, target, centers, scales, angles, extent, distractors, background, occluder, effects)

    frames, boxes, polygons, ratios, cut = [], np.zeros((n, 4)), np.zeros((n, 8)), np.zeros(n), np.zeros(n, bool)
    target_area_unit = target.alpha_sum / target.resolution ** 2
    for t in range(n):
        frame, boxes[t], polygons[t], visible, cut[t] = _render_frame(scene, t, opts, rng_noise)
        frames.append(frame)
        ratios[t] = min(1.0, visible / (target_area_unit * scales[t] ** 2))
    return _sequence_record(scene, frames, boxes, polygons, ratios, cut, seed, rotating, speeds, opts)


def _sequence_record(scene: _Scene, frames, boxes, polygons, ratios, cut, seed, rotating, speeds, opts):
    absent = ratios < 0.01
    cover = visible_ratio_to_cover(ratios)
    cover[absent] = 0
    target, bg_name = scene.target, scene.background[3]
    sprite_alpha = target.rgba[:, :, 3]
    object_rgb = np.clip(target.rgba[:, :, :3] / np.maximum(sprite_alpha, 1e-6)[..., None] + 0.5, 0, 255)
    meta = {
        "generator": "ien-tracking synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "rotating": bool(rotating),
        "rotation_speed": list(speeds),
        "frame_size": [scene.width, scene.height],
        "object": target.description,
        "background": bg_name if isinstance(bg_name, str) else str(bg_name),
        "distractors": len(scene.distractors),
        "occluder": scene.occluder is not None,
        "options": dataclasses.asdict(opts),
    }
    return GeneratedSequence(frames=frames, boxes=boxes, angles=scene.angles.astype(np.float64), polygons=polygons,
                             absent=absent, cover=cover, centers=scene.centers, scales=scene.scales,
                             blur=scene.effects[3], cut_by_image=cut, object_rgb=object_rgb.astype(np.uint8),
                             object_alpha=sprite_alpha.copy(), sprite_resolution=target.resolution, meta=meta)
