"""Square crops around a target, as Siamese trackers take them (one ``cv2.warpAffine`` per crop).

Coordinate convention (used by every function here, by the synthetic generator and by the pair
sampler): continuous image coordinates in which pixel ``(col j, row i)`` covers the unit square
``[j, j+1) x [i, i+1)``, so its centre is at ``(j + 0.5, i + 0.5)``. A box ``x, y, w, h`` covers
``[x, x+w] x [y, y+h]`` and its centre is ``(x + w/2, y + h/2)``. Angles are in degrees,
counter-clockwise as seen on screen (the image y axis points down).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = [
    "context_size",
    "crop_matrix",
    "crop_and_resize",
    "crop_many",
    "image_to_crop",
    "crop_to_image",
    "mean_color",
]


def context_size(w: float, h: float, context: float = 0.5) -> float:
    """Side of the SiamFC exemplar square: ``sqrt((w + p) * (h + p))`` with ``p = context * (w + h)``."""
    pad = context * (w + h)
    return math.sqrt((w + pad) * (h + pad))


def _rotation(angle_deg: float) -> np.ndarray:
    """2x2 matrix rotating a vector counter-clockwise on screen (y down) by ``angle_deg``."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, s], [-s, c]], dtype=np.float64)


def crop_matrix(center_xy, size: float, out_size: int, angle_deg: float = 0.0) -> np.ndarray:
    """2x3 affine map from crop coordinates to image coordinates (both continuous, see module doc).

    The crop is the square of side ``size`` image pixels centred at ``center_xy`` and rotated
    counter-clockwise on screen by ``angle_deg``, resampled to ``out_size`` pixels.
    """
    if not size > 0:
        raise ValueError(f"crop size must be positive, got {size}")
    scale = float(size) / float(out_size)
    a = _rotation(angle_deg) * scale
    half = out_size / 2.0
    b = np.asarray(center_xy, dtype=np.float64) - a @ np.array([half, half])
    return np.concatenate([a, b[:, None]], axis=1)


def crop_to_image(points, center_xy, size: float, out_size: int, angle_deg: float = 0.0) -> np.ndarray:
    """Map points (..., 2) from crop coordinates to image coordinates."""
    m = crop_matrix(center_xy, size, out_size, angle_deg)
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def image_to_crop(points, center_xy, size: float, out_size: int, angle_deg: float = 0.0) -> np.ndarray:
    """Map points (..., 2) from image coordinates to crop coordinates (inverse of crop_to_image)."""
    m = crop_matrix(center_xy, size, out_size, angle_deg)
    p = np.asarray(points, dtype=np.float64) - m[:, 2]
    return p @ np.linalg.inv(m[:, :2]).T


def mean_color(image: np.ndarray) -> tuple:
    """Per-channel mean of an image (the SiamFC padding colour)."""
    return tuple(float(v) for v in cv2.mean(image)[: image.shape[2]])


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def _warp_matrix(center_xy, size, out_size, angle_deg) -> np.ndarray:
    """The crop map in OpenCV's pixel-index coordinates (pixel centres at integers), for WARP_INVERSE_MAP."""
    m = crop_matrix(center_xy, size, out_size, angle_deg)
    # index = continuous - 0.5 on both sides: src_idx = A (dst_idx + 0.5) + b - 0.5
    b = m[:, 2] + m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return np.concatenate([m[:, :2], b[:, None]], axis=1)


def crop_and_resize(
    image: np.ndarray,
    center_xy,
    size: float,
    out_size: int,
    border_value=None,
    angle_deg: float = 0.0,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Square crop of side ``size`` image pixels centred at ``center_xy``, resampled to ``out_size``.

    ``center_xy`` is in continuous coordinates (module doc): the crop of a box ``x, y, w, h`` is
    centred at ``(x + w/2, y + h/2)``. Pixels outside the image take ``border_value`` (an RGB
    tuple; None = the per-channel mean of the image). ``angle_deg`` rotates the sampled square
    counter-clockwise on screen about its centre, so content rotated by ``+angle_deg`` appears
    upright in the output. Returns ``out_size x out_size x 3`` of the image's dtype (uint8).
    """
    image = _as_rgb(image)
    if border_value is None:
        border_value = mean_color(image)
    m = _warp_matrix(center_xy, size, int(out_size), angle_deg)
    return cv2.warpAffine(
        image,
        m,
        (int(out_size), int(out_size)),
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=tuple(float(v) for v in border_value),
    )


def crop_many(image: np.ndarray, center_xy, sizes, out_size: int, border_value=None, angle_deg: float = 0.0) -> np.ndarray:
    """Crops of several sizes about one centre (multi-scale search): array (S, out, out, 3)."""
    image = _as_rgb(image)
    if border_value is None:
        border_value = mean_color(image)
    out = np.empty((len(sizes), int(out_size), int(out_size), 3), dtype=image.dtype)
    for i, size in enumerate(sizes):
        out[i] = crop_and_resize(image, center_xy, size, out_size, border_value, angle_deg)
    return out
