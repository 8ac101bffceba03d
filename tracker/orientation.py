"""Orientation estimation with a bank of rotated templates (RE-SiamNet, and the IEN trackers' option).

The tracker crops the target at init once per orientation ``theta_i = i * 360 / N`` (one
``crop_and_resize`` each, one batched feature extraction for all), correlates every search crop
with all N templates in one convolution, and reads the target's rotation off the winning
template: RE-SiamNet's group max-pool over the N response maps, whose arg-max index ``i`` gives
``theta = i * 360 / N`` (docs/re_siamnet.md). Optionally the read-out is refined below one step by a
parabola through the winning orientation's score and its two circular neighbours, all taken
at the response peak. The motion prior searches only orientations within ``±gamma`` of the last
estimate (circular distance).

Angles are degrees, counter-clockwise on screen (tracker/crops.py convention). Template ``i``
shows the target rotated by ``+theta_i``, so it matches a target that has turned by ``theta_i``
since the first frame.
"""
from __future__ import annotations

import math

import numpy as np

from .crops import crop_and_resize

__all__ = [
    "orientation_angles",
    "angle_difference",
    "orientation_mask",
    "rotated_template_bank",
    "scores_at",
    "refine_orientation",
    "AXIS_BOX_MODES",
    "axis_aligned_box",
]

# How a tracker that estimates rotation reports its axis-aligned box (see axis_aligned_box).
AXIS_BOX_MODES = ("ellipse", "polygon", "upright")


def orientation_angles(count: int) -> np.ndarray:
    """The N template angles ``i * 360 / N`` (degrees), i = 0..N-1."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"the number of orientations must be a positive integer, got {count!r}")
    return np.arange(count, dtype=np.float64) * (360.0 / count)


def angle_difference(a, b) -> np.ndarray:
    """Signed difference ``a - b`` wrapped into [-180, 180) degrees (elementwise)."""
    return (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64) + 180.0) % 360.0 - 180.0


def orientation_mask(angles: np.ndarray, last_angle: float, gamma_deg: float) -> np.ndarray:
    """Motion prior: True for the orientations within ``±gamma_deg`` of ``last_angle`` (circular).

    ``gamma_deg <= 0`` or ``>= 180`` disables the prior (every orientation is searched). The
    orientation nearest to ``last_angle`` is always allowed, so the mask is never empty.
    """
    angles = np.asarray(angles, dtype=np.float64)
    if not gamma_deg > 0 or gamma_deg >= 180.0:
        return np.ones(angles.shape, dtype=bool)
    dist = np.abs(angle_difference(angles, last_angle))
    mask = dist <= gamma_deg + 1e-9
    mask[np.argmin(dist)] = True
    return mask


def rotated_template_bank(frame: np.ndarray, center_xy, size: float, out_size: int, angles,
                          border_value=None) -> np.ndarray:
    """(N, out, out, 3) exemplar crops; crop ``i`` shows the target rotated CCW by ``angles[i]``.

    Each crop is one ``crop_and_resize`` of the same square, sampled rotated by ``-angles[i]``,
    so it reads real image content in the corners (no black wedges) and is one interpolation
    away from the frame, like the upright template.
    """
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    out = np.empty((len(angles), int(out_size), int(out_size), 3), dtype=np.uint8)
    for i, angle in enumerate(angles):
        out[i] = crop_and_resize(frame, center_xy, size, out_size, border_value, angle_deg=-float(angle))
    return out


def scores_at(responses: np.ndarray, scale_index: int, xy) -> np.ndarray:
    """Scores (N,) of every orientation's response map at a sub-pixel position (bilinear).

    ``responses``: (S, N, R, R); ``xy``: (x, y) in response-map cells (cell centres at integers),
    clipped to the map.
    """
    maps = np.asarray(responses)[scale_index]                     # (N, R, R)
    r_h, r_w = maps.shape[-2:]
    x = float(np.clip(xy[0], 0.0, r_w - 1))
    y = float(np.clip(xy[1], 0.0, r_h - 1))
    x0, y0 = min(math.floor(x), max(r_w - 2, 0)), min(math.floor(y), max(r_h - 2, 0))
    x1, y1 = min(x0 + 1, r_w - 1), min(y0 + 1, r_h - 1)
    fx, fy = x - x0, y - y0
    top = maps[:, y0, x0] * (1 - fx) + maps[:, y0, x1] * fx
    bottom = maps[:, y1, x0] * (1 - fx) + maps[:, y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float64)


def refine_orientation(scores, index: int) -> float:
    """Sub-step offset in [-0.5, 0.5] of the best orientation: vertex of the parabola through
    the scores of orientations ``index - 1``, ``index``, ``index + 1`` (circular indices).

    Returns 0 when there are fewer than 3 orientations or the scores are not concave there.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(scores)
    if n < 3:
        return 0.0
    left, mid, right = scores[(index - 1) % n], scores[index % n], scores[(index + 1) % n]
    curvature = left - 2.0 * mid + right
    if not curvature < 0 or not np.isfinite(curvature):
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def axis_aligned_box(center, size, angle_deg: float, mode: str = "ellipse") -> np.ndarray:
    """Axis-aligned box x, y, w, h of a w x h target turned by ``angle_deg`` about ``center``.

    ``"polygon"`` bounds the rotated rectangle, right only for a target that fills its box: at 45
    degrees it is (w + h) / sqrt(2) wide where the outline of a round target spans only
    sqrt((w^2 + h^2) / 2). ``"ellipse"`` bounds the ellipse inscribed in the rotated box,
    sqrt((w cos)^2 + (h sin)^2) wide, never wider than ``"polygon"`` and equal to it at multiples
    of 90 degrees; ``"upright"`` ignores the angle.
    """
    w, h = (float(v) for v in size)
    a = math.radians(angle_deg)
    c, s = abs(math.cos(a)), abs(math.sin(a))
    if mode == "ellipse":
        width, height = math.hypot(w * c, h * s), math.hypot(w * s, h * c)
    elif mode == "polygon":
        width, height = w * c + h * s, w * s + h * c
    elif mode == "upright":
        width, height = w, h
    else:
        raise ValueError(f"unknown axis-box mode {mode!r}; choose from {', '.join(AXIS_BOX_MODES)}")
    cx, cy = (float(v) for v in center)
    return np.array([cx - width / 2, cy - height / 2, width, height])
