"""The pieces of a generated scene: photo pools (scikit-image's photos or a user's folder), smooth
motion and rotation profiles, objects cut from photos or drawn as textures (sprites), their
placement, warping and compositing, and the GOT-10k cover classes (see :mod:`data.synthetic`)."""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .sequence import IMAGE_EXTENSIONS

MIN_IMAGE_SIDE = 16     # a user's object or background picture
MIN_OPAQUE_SIDE = 8     # the opaque part of an object picture with an alpha channel (the sprites' least side)

_COLOR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                 "immunohistochemistry", "retina", "colorwheel")
_GRAY_PHOTOS = ("camera", "coins", "clock", "text", "page", "brick", "grass", "gravel", "moon")

# Fixed specification of the embedded default datasets (see default_dataset).

class GeneratorInputError(ValueError):
    """Bad generator input (unknown option, empty image folder, unreadable image ...)."""


# ------------------------------------------------------------------------------------------------
# image sources
@functools.lru_cache(maxsize=None)
def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3]).astype(np.uint8)


def _list_images(folder, what: str) -> list:
    folder = Path(folder)
    if not folder.is_dir():
        raise GeneratorInputError(f"{what} folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise GeneratorInputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {what} folder {folder}")
    return [str(p) for p in files]


@functools.lru_cache(maxsize=64)
def _read_user_image(path: str) -> tuple:
    """(RGB uint8, alpha float32 or None) of an image file; alpha when the file has one."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise GeneratorInputError(f"cannot read image {path}")
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    alpha = None
    if image.ndim == 2:
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        alpha = image[:, :, 3].astype(np.float32) / 255.0
        if alpha.min() > 0.99:
            alpha = None
    else:
        rgb = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    if min(rgb.shape[:2]) < MIN_IMAGE_SIDE:
        raise GeneratorInputError(f"image too small ({rgb.shape[1]}x{rgb.shape[0]} px, less than {MIN_IMAGE_SIDE} "
                                  f"px a side): {path}")
    return rgb, alpha


def _check_opaque_part(alpha: np.ndarray, path: str) -> None:
    """An object cut out by its alpha: its opaque part is scaled to the target's size, so a few
    opaque pixels would be blown up into a blurred, featureless target."""
    rows, cols = np.flatnonzero((alpha >= 0.5).any(axis=1)), np.flatnonzero((alpha >= 0.5).any(axis=0))
    if rows.size and min(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 < MIN_OPAQUE_SIDE:
        raise GeneratorInputError(f"the opaque part of {path} is {cols[-1] - cols[0] + 1}x{rows[-1] - rows[0] + 1} px, "
                                  f"less than {MIN_OPAQUE_SIDE} px a side")


class _ImagePool:
    """Photos to cut objects or backgrounds from: scikit-image's bundled photos or a user folder."""

    def __init__(self, folder=None, what="object"):
        self.files = _list_images(folder, what) if folder is not None else None
        self.names = tuple(self.files) if self.files else _COLOR_PHOTOS + _GRAY_PHOTOS
        self.what = what

    def __len__(self):
        return len(self.names)

    def get(self, index: int, rng) -> tuple:
        """(RGB uint8, alpha or None, name). Grey builtin photos get a random tint."""
        name = self.names[index]
        tint = rng.uniform(0.55, 1.0, 3)      # drawn always, so the stream does not depend on the source
        if self.files is not None:
            rgb, alpha = _read_user_image(name)
            if alpha is not None and self.what == "object":
                _check_opaque_part(alpha, name)
            return rgb, alpha, os.path.basename(name)
        rgb = _skimage_photo(name)
        if name in _GRAY_PHOTOS:
            rgb = np.clip(rgb.astype(np.float32) * tint, 0, 255).astype(np.uint8)
        return rgb, None, name


# ------------------------------------------------------------------------------------------------
# random smooth signals
def _smooth_signal(rng, n: int, period=(50.0, 200.0), terms: int = 3) -> np.ndarray:
    """A smooth random signal in [-1, 1] (sum of sinusoids with periods in ``period`` frames)."""
    t = np.arange(n, dtype=np.float64)
    amp = rng.uniform(0.3, 1.0, terms)
    freq = 1.0 / rng.uniform(period[0], period[1], terms)
    phase = rng.uniform(0, 2 * np.pi, terms)
    s = (amp[:, None] * np.sin(2 * np.pi * freq[:, None] * t[None] + phase[:, None])).sum(0)
    return s / amp.sum()


def _trajectory(rng, n, lo, hi, max_speed) -> np.ndarray:
    """(n, 2) smooth path inside the box lo..hi (per axis) whose speed never exceeds max_speed."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    mid, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, 0)
    reach = rng.uniform(0.4, 1.0, 2)
    path = mid + half * reach * np.stack([_smooth_signal(rng, n), _smooth_signal(rng, n)], axis=1)
    if n > 1:
        speed = np.linalg.norm(np.diff(path, axis=0), axis=1).max()
        if speed > max_speed:
            anchor = path[0].copy()
            path = anchor + (path - anchor) * (max_speed / speed)
    return path


def _rotation_profile(rng, n, speed_range, reverse_prob) -> np.ndarray:
    """(n,) cumulative angle in degrees: random sign, smoothly varying speed, maybe one reversal."""
    lo, hi = speed_range
    sign = 1.0 if rng.random() < 0.5 else -1.0
    speed = lo + (hi - lo) * (0.5 + 0.5 * _smooth_signal(rng, n, period=(40.0, 160.0)))
    reverse = rng.random() < reverse_prob
    t_rev, width = rng.uniform(0.3, 0.7) * n, rng.uniform(3.0, 10.0)
    direction = np.full(n, sign)
    if reverse:
        direction = sign * -np.tanh((np.arange(n) - t_rev) / width)
    omega = direction * speed
    return np.concatenate([[0.0], np.cumsum(omega[:-1])])


# ------------------------------------------------------------------------------------------------
# sprites
def _random_color(rng) -> np.ndarray:
    return rng.uniform(20, 235, 3)


def _shape_alpha(rng, hs: int, ws: int, kind: str) -> np.ndarray:
    """Anti-aliased mask (hs, ws) of an ellipse, rounded rectangle or irregular blob."""
    u = (np.arange(ws) + 0.5) / ws * 2 - 1
    v = (np.arange(hs) + 0.5) / hs * 2 - 1
    uu, vv = np.meshgrid(u, v)
    if kind == "ellipse":
        level = np.sqrt(uu ** 2 + vv ** 2)
    elif kind == "rounded":
        p = rng.uniform(3.0, 7.0)
        level = (np.abs(uu) ** p + np.abs(vv) ** p) ** (1.0 / p)
    else:  # blob: radius modulated by low harmonics (asymmetric outline)
        phi = np.arctan2(vv, uu)
        k = np.arange(2, 5)
        amp = rng.uniform(0.0, 0.12, k.size)
        ph = rng.uniform(0, 2 * np.pi, k.size)
        radius = 1.0 + (amp[:, None, None] * np.cos(k[:, None, None] * phi + ph[:, None, None])).sum(0)
        radius /= 1.0 + amp.sum()
        level = np.sqrt(uu ** 2 + vv ** 2) / radius
    pixel = 2.0 / min(hs, ws)        # one pixel in normalised units
    return np.clip(0.5 - (level - 1.0) / pixel, 0.0, 1.0).astype(np.float32)


def _procedural_texture(rng, hs: int, ws: int) -> np.ndarray:
    """Stripes, checkerboard or smooth colour blobs, with an off-centre marker (rotation visible)."""
    kind = rng.integers(3)
    c1, c2, c3 = _random_color(rng), _random_color(rng), _random_color(rng)
    yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float32) + 0.5
    if kind == 0:
        a = rng.uniform(0, np.pi)
        period = rng.uniform(6, 16)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period)
        tex = c1 * t[..., None] + c2 * (1 - t[..., None])
    elif kind == 1:
        cell = rng.uniform(6, 14)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2)[..., None]
        tex = c1 * t + c2 * (1 - t)
    else:
        low = rng.uniform(20, 235, (int(rng.integers(2, 5)), int(rng.integers(2, 5)), 3)).astype(np.float32)
        tex = cv2.resize(low, (ws, hs), interpolation=cv2.INTER_CUBIC)
    tex = np.ascontiguousarray(tex, dtype=np.float32)
    # marker: a triangle near one corner and a disc on another side -> no rotational symmetry
    corner = np.array([rng.uniform(0.12, 0.3) * ws, rng.uniform(0.12, 0.3) * hs])
    r = 0.22 * min(hs, ws)
    tri = np.array([corner, corner + [r * 1.6, r * 0.3], corner + [r * 0.4, r * 1.4]], np.float32)
    cv2.fillPoly(tex, [np.round(tri * 16).astype(np.int32)], c3.tolist(), cv2.LINE_AA, 4)
    disc = (int(round(rng.uniform(0.6, 0.8) * ws * 16)), int(round(rng.uniform(0.55, 0.8) * hs * 16)))
    cv2.circle(tex, disc, int(round(0.12 * min(hs, ws) * 16)), (255 - c3).tolist(), -1, cv2.LINE_AA, 4)
    tex += rng.normal(0, 5, tex.shape).astype(np.float32)
    return np.clip(tex, 0, 255)


def _photo_patch(rng, pool: _ImagePool, hs: int, ws: int, exclude=None):
    """A patch (hs, ws) cut from a random photo of the pool; alpha from the file if it has one."""
    n = len(pool)
    index = int(rng.integers(n))
    if exclude is not None and n > 1 and index == exclude:
        index = (index + 1 + int(rng.integers(n - 1))) % n
    else:
        rng.integers(max(n - 1, 1))         # keep the number of draws fixed
    photo, alpha, name = pool.get(index, rng)
    if alpha is not None:
        # a cut-out object (image with transparency): the whole object, at the requested area
        rows = np.flatnonzero((alpha >= 0.5).any(axis=1))
        cols = np.flatnonzero((alpha >= 0.5).any(axis=0))
        if rows.size:
            photo = photo[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            alpha = alpha[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            ph, pw = photo.shape[:2]
            k = math.sqrt(ws * hs / (pw * ph))
            size = (max(8, round(pw * k)), max(8, round(ph * k)))
            interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
            return (cv2.resize(photo, size, interpolation=interp).astype(np.float32),
                    cv2.resize(alpha, size, interpolation=interp), name, index)
    ph, pw = photo.shape[:2]
    # a few candidate regions; keep the most textured (a flat patch would make rotation invisible)
    best = -1.0
    for _ in range(4):
        z = min(rng.uniform(0.8, 3.0), ph / hs, pw / ws)      # the patch must fit into the photo
        cx0, cy0 = rng.uniform(0, max(0.0, pw - ws * z)), rng.uniform(0, max(0.0, ph - hs * z))
        step = max(1, int(min(ws, hs) * z / 16))
        region = photo[int(cy0):int(cy0 + hs * z):step, int(cx0):int(cx0 + ws * z):step]
        texture = float(region.reshape(-1, 3).std(axis=0).mean())
        if texture > best:
            best, zoom, x0, y0 = texture, z, cx0, cy0
    # one affine resample of the photo region onto the sprite canvas (pre-shrunk with an area
    # filter when the patch is reduced a lot: warpAffine has none)
    src, a_src, sx, sy = photo, alpha, 1.0, 1.0
    if zoom > 1.5:
        size = (max(1, round(pw / zoom)), max(1, round(ph / zoom)))
        src = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
        a_src = None if alpha is None else cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
        sx, sy = src.shape[1] / pw, src.shape[0] / ph
    # sprite continuous coords -> source continuous coords, then OpenCV pixel-index coords
    m = np.array([[zoom * sx, 0.0, x0 * sx], [0.0, zoom * sy, y0 * sy]])
    m[:, 2] += m[:, :2] @ [0.5, 0.5] - 0.5
    rgb = cv2.warpAffine(src, m, (ws, hs), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT)
    a = None
    if a_src is not None:
        a = cv2.warpAffine(a_src, m, (ws, hs), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return rgb.astype(np.float32), a, name, index


@dataclass
class _Sprite:
    rgba: np.ndarray         # (hs, ws, 4) float32, RGB premultiplied by alpha
    resolution: float        # sprite px per frame px at scale 1
    alpha_sum: float         # sum of alpha (sprite px)
    description: str
    source_index: int        # index in the pool (-1 = procedural)

    @property
    def size(self) -> tuple:
        return self.rgba.shape[1], self.rgba.shape[0]


def _make_object(rng, pool, base_w, base_h, texture_prob, resolution=1.5, like: _Sprite = None,
                 exclude=None) -> _Sprite:
    """A target-like sprite of base size (base_w, base_h) frame px; ``like`` = cut from the same source."""
    ws = max(8, int(round(base_w * resolution)))
    hs = max(8, int(round(base_h * resolution)))
    procedural = rng.random() < texture_prob
    if like is not None:
        procedural = like.source_index < 0
    shape = ("ellipse", "rounded", "blob")[int(rng.integers(3))]
    if procedural:
        rgb, file_alpha, name, index = _procedural_texture(rng, hs, ws), None, "procedural", -1
    else:
        if like is not None:
            # same photo as the target: a look-alike distractor
            pool_like = _SinglePhotoPool(pool, like.source_index)
            rgb, file_alpha, name, _ = _photo_patch(rng, pool_like, hs, ws)
            index = like.source_index
        else:
            rgb, file_alpha, name, index = _photo_patch(rng, pool, hs, ws, exclude=exclude)
    alpha = _shape_alpha(rng, hs, ws, shape)
    if file_alpha is not None and file_alpha.max() > 0.5:
        alpha = file_alpha.astype(np.float32)
        shape = "file-alpha"
    # crop to the tight box of the mask so that the rectangle (polygon) hugs the object
    rows = np.flatnonzero((alpha >= 0.5).any(axis=1))
    cols = np.flatnonzero((alpha >= 0.5).any(axis=0))
    if rows.size == 0:
        alpha = np.ones_like(alpha)
    else:
        rgb = rgb[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        alpha = alpha[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    rgba = np.concatenate([rgb * alpha[..., None], alpha[..., None]], axis=2)
    return _Sprite(np.ascontiguousarray(rgba, np.float32), resolution, float(alpha.sum()),
                   f"{name}:{shape}", index)


class _SinglePhotoPool:
    def __init__(self, pool, index):
        self.pool, self.index = pool, index

    def __len__(self):
        return 1

    def get(self, index, rng):
        return self.pool.get(self.index, rng)


def _bar_sprite(rng, photo: np.ndarray, width: float, length: float) -> _Sprite:
    """An occluding bar (width x length frame px) textured from a region of the background photo."""
    ws, hs = max(4, int(round(width))), max(4, int(round(length)))
    ph, pw = photo.shape[:2]
    small = cv2.resize(photo, (max(8, pw // 3), max(8, ph // 3)), interpolation=cv2.INTER_AREA)
    tex = cv2.resize(small, (ws, hs), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    tex = tex * rng.uniform(0.4, 0.8) + _random_color(rng) * 0.3
    alpha = np.ones((hs, ws), np.float32)
    alpha[:, 0] = alpha[:, -1] = 0.5
    rgba = np.concatenate([np.clip(tex, 0, 255) * alpha[..., None], alpha[..., None]], axis=2)
    return _Sprite(np.ascontiguousarray(rgba, np.float32), 1.0, float(alpha.sum()), "bar", -2)


def _rot(angle_deg: float) -> np.ndarray:
    """Counter-clockwise on screen (y down)."""
    a = math.radians(angle_deg)
    return np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])


def _placement(sprite: _Sprite, center, scale, angle_deg) -> tuple:
    """(A, b, corners): sprite continuous coords -> frame continuous coords, and the 4 corners."""
    ws, hs = sprite.size
    a = _rot(angle_deg) * (scale / sprite.resolution)
    half = np.array([ws / 2.0, hs / 2.0])
    b = np.asarray(center, float) - a @ half
    corners = np.array([[0, 0], [ws, 0], [ws, hs], [0, hs]], float) @ a.T + b
    return a, b, corners


def _warp_sprite(sprite: _Sprite, a, b, corners, width, height):
    """Warp the sprite into the frame region it covers: (x0, y0, warped (h, w, 4)) or None."""
    x0 = max(0, int(math.floor(corners[:, 0].min())) - 1)
    y0 = max(0, int(math.floor(corners[:, 1].min())) - 1)
    x1 = min(width, int(math.ceil(corners[:, 0].max())) + 1)
    y1 = min(height, int(math.ceil(corners[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    # OpenCV index coordinates (pixel centres at integers), shifted to the region's origin
    m = np.concatenate([a, (b + a @ [0.5, 0.5] - 0.5 - [x0, y0])[:, None]], axis=1)
    warped = cv2.warpAffine(sprite.rgba, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    return x0, y0, warped


def _composite(frame, placed) -> None:
    x0, y0, warped = placed
    h, w = warped.shape[:2]
    region = frame[y0:y0 + h, x0:x0 + w]
    region *= 1.0 - warped[:, :, 3:4]
    region += warped[:, :, :3]


def visible_ratio_to_cover(ratio) -> np.ndarray:
    """GOT-10k cover class: 0 = nothing visible, 1..7 = steps of 15 %, 8 = (almost) all visible."""
    r = np.asarray(ratio, dtype=np.float64)
    steps = np.clip(np.ceil(r / 0.15 - 1e-9), 1, 7)
    return np.where(r >= 0.98, 8, np.where(r <= 0.0, 0, steps)).astype(np.int64)


def _motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2.0
    dx, dy = math.cos(math.radians(angle_deg)) * c, math.sin(math.radians(angle_deg)) * c
    cv2.line(k, (int(round((c - dx) * 16)), int(round((c - dy) * 16))),
             (int(round((c + dx) * 16)), int(round((c + dy) * 16))), 1.0, 1, cv2.LINE_AA, 4)
    return k / max(k.sum(), 1e-6)
