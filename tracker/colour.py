"""A colour-histogram target model for SiamFC's search (Staple's per-pixel score, Bertinetto et al.
2016), fused with the Siamese response by :class:`tracker.siamfc.SiamFCTracker` (``colour_weight``).

Why: the Siamese template is one fixed appearance at one orientation, while the colours of a
target do not change when it turns (and change slowly when it deforms). The model keeps two
histograms over 32 x 32 x 32 RGB bins, of the target (the ellipse inscribed in its box) and of
the background around it in the search crop, learnt at ``init`` and updated after every frame
with a learning rate. Each search-crop pixel gets P(target | colour) = h_t / (h_t + h_b); the
mean of that probability over a target-sized box about each response position is the colour
score the tracker blends into its response map. All of it is NumPy / OpenCV on the crop the
tracker already cut, so it costs no network forward.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ColourModel", "BINS_PER_CHANNEL"]

BINS_PER_CHANNEL = 32
_SHIFT = 3                       # 256 / 32 levels per bin
_NUM_BINS = BINS_PER_CHANNEL ** 3


def colour_bins(crop: np.ndarray) -> np.ndarray:
    """(H, W) uint16 histogram bin of every pixel of an (H, W, 3) uint8 crop."""
    q = crop >> _SHIFT
    return (q[..., 0].astype(np.uint16) << 10) | (q[..., 1].astype(np.uint16) << 5) | q[..., 2]


def _span(inside: np.ndarray) -> slice:
    """The run of True of a 1-D mask that is True on one contiguous run (or nowhere)."""
    hits = np.flatnonzero(inside)
    return slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, 0)


class ColourModel:
    """Target and background colour histograms of one tracked target, in search-crop pixels.

    Coordinates are the crop's continuous pixel coordinates (pixel (i, j) covers [j, j+1) x
    [i, i+1)), as :func:`tracker.crops.image_to_crop` returns them. Every method takes the crop's
    bins (:func:`colour_bins`), computed once per frame.
    """

    def __init__(self, crop_size: int):
        self.crop_size = int(crop_size)
        self._centres = np.arange(self.crop_size, dtype=np.float32) + 0.5
        self.target_hist = self.background_hist = None

    def _histograms(self, bins: np.ndarray, center, size, valid) -> tuple[np.ndarray, np.ndarray]:
        """Normalised histograms of the target ellipse and of the background: the crop's pixels
        inside ``valid`` (x0, y0, x1, y1: the part of the crop inside the frame) and outside the
        target's box. The masks are products of 1-D ones, so the work is done on rectangles."""
        (cx, cy), (w, h) = center, np.maximum(size, 1.0)
        x0, y0, x1, y1 = valid
        c = self._centres
        dx, dy = (c - cx) / (w / 2), (c - cy) / (h / 2)
        in_x, in_y = (c >= x0) & (c <= x1), (c >= y0) & (c <= y1)
        frame_x, frame_y = _span(in_x), _span(in_y)
        box_x, box_y = _span((np.abs(dx) <= 1.0) & in_x), _span((np.abs(dy) <= 1.0) & in_y)   # box within frame
        count = lambda values: np.bincount(values.ravel(), minlength=_NUM_BINS)   # noqa: E731
        in_box = bins[box_y, box_x]
        ex, ey = dx[box_x], dy[box_y]
        target = count(in_box[ey[:, None] * ey[:, None] + ex[None, :] * ex[None, :] <= 1.0]).astype(np.float32)
        background = (count(bins[frame_y, frame_x]) - count(in_box)).astype(np.float32)
        return target / max(target.sum(), 1.0), background / max(background.sum(), 1.0)

    def learn(self, bins: np.ndarray, center, size, valid, rate: float = 1.0) -> None:
        """Blend the histograms of this crop's target (box ``center``, ``size`` in crop pixels)
        into the model at ``rate`` (1: replace, as at ``init``)."""
        target, background = self._histograms(bins, center, size, valid)
        if self.target_hist is None or rate >= 1.0:
            self.target_hist, self.background_hist = target, background
            return
        self.target_hist += rate * (target - self.target_hist)
        self.background_hist += rate * (background - self.background_hist)

    def probability(self, bins: np.ndarray) -> np.ndarray:
        """(H, W) float32 P(target | colour) of every crop pixel (0 for colours neither histogram holds)."""
        total = self.target_hist + self.background_hist
        table = np.divide(self.target_hist, total, out=np.zeros_like(total), where=total > 0)
        return np.take(table, bins)

    def box_scores(self, bins: np.ndarray, size) -> np.ndarray:
        """(H, W) mean target probability over a box of ``size`` (w, h crop pixels) centred on each pixel."""
        kw, kh = (max(int(round(float(v))), 1) for v in size)
        return cv2.boxFilter(self.probability(bins), -1, (kw, kh), normalize=True,
                             borderType=cv2.BORDER_CONSTANT)
