"""Tracking metrics: GOT-10k (AO, SR0.5, SR0.75), OTB (success AUC, precision@20 px,
normalized precision) and rotated-box metrics (polygon IoU, angle error).

Boxes are [x, y, w, h] arrays of shape (N, 4); polygons are (N, 8) arrays of corners
x1, y1, ..., x4, y4. IoU and centre error follow the got10k toolkit's definitions
(``got10k.utils.metrics``), whose helpers are used directly.
"""
from __future__ import annotations

import numpy as np
import shapely
from got10k.utils.metrics import center_error, rect_iou

from data import box_to_polygon

__all__ = [
    "box_iou", "center_errors", "normalized_center_errors", "polygon_iou",
    "angle_errors", "success_curve", "precision_curve", "got10k_scores", "otb_curves",
    "OTB_IOU_THRESHOLDS", "OTB_CE_THRESHOLDS", "OTB_NCE_THRESHOLDS", "GOT10K_IOU_THRESHOLDS",
    "paired_difference",
]

GOT10K_IOU_THRESHOLDS = np.linspace(0.0, 1.0, 101)   # success curve of the GOT-10k toolkit
OTB_IOU_THRESHOLDS = np.linspace(0.0, 1.0, 21)       # success plot of OTB (AUC = mean)
OTB_CE_THRESHOLDS = np.arange(0, 51, dtype=float)    # precision plot, 0..50 px
OTB_NCE_THRESHOLDS = np.linspace(0.0, 0.5, 51)       # normalized precision, 0..0.5


def box_iou(pred: np.ndarray, gt: np.ndarray, bound=None) -> np.ndarray:
    """Per-row IoU of [x,y,w,h] boxes; ``bound`` = (width, height) clips both to the image."""
    pred = np.array(pred, dtype=np.float64, ndmin=2)   # copies: rect_iou clips in place
    gt = np.array(gt, dtype=np.float64, ndmin=2)
    return rect_iou(pred, gt, bound=None if bound is None else tuple(bound))


def center_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) between box centres."""
    return center_error(np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64))


def normalized_center_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Centre error with x divided by the ground-truth width and y by its height."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    offset = (pred[:, :2] + pred[:, 2:] / 2) - (gt[:, :2] + gt[:, 2:] / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.hypot(offset[:, 0] / gt[:, 2], offset[:, 1] / gt[:, 3])


def _shapes(regions: np.ndarray):
    regions = np.asarray(regions, dtype=np.float64)
    if regions.ndim == 1:
        regions = regions[None]
    if regions.shape[1] == 4:
        regions = box_to_polygon(regions)
    if regions.shape[1] != 8:
        raise ValueError(f"regions must be (N,4) boxes or (N,8) polygons, got {regions.shape}")
    geoms = shapely.polygons(regions.reshape(-1, 4, 2))
    # a predicted polygon with crossed corners is not a valid polygon: repair it
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    return geoms


def polygon_iou(pred: np.ndarray, gt: np.ndarray, bound=None) -> np.ndarray:
    """Per-row IoU of regions given as (N,4) boxes or (N,8) polygons (shapely, vectorized).

    ``bound`` = (width, height) clips both regions to the image first. Rows with a
    non-finite coordinate give NaN.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim == 1:
        pred, gt = pred[None], gt[None]
    if len(pred) != len(gt):
        raise ValueError(f"{len(pred)} predictions but {len(gt)} ground-truth regions")
    finite = np.isfinite(pred).all(axis=1) & np.isfinite(gt).all(axis=1)
    ious = np.full(len(pred), np.nan)
    if not finite.any():
        return ious
    a, b = _shapes(pred[finite]), _shapes(gt[finite])
    if bound is not None:
        frame = shapely.box(0.0, 0.0, float(bound[0]), float(bound[1]))
        a, b = shapely.intersection(a, frame), shapely.intersection(b, frame)
    inter = shapely.area(shapely.intersection(a, b))
    union = shapely.area(a) + shapely.area(b) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        ious[finite] = np.clip(np.where(union > 0, inter / union, 0.0), 0.0, 1.0)
    return ious


def angle_errors(pred_deg: np.ndarray, gt_deg: np.ndarray, period: float = 360.0) -> np.ndarray:
    """Absolute angle difference in degrees, wrapped into [0, period / 2] (period 180: axis
    angles, where a turn by 180 degrees leaves the axis as it was)."""
    diff = np.asarray(pred_deg, dtype=np.float64) - np.asarray(gt_deg, dtype=np.float64)
    return np.abs((diff + period / 2) % period - period / 2)


def success_curve(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of frames with IoU strictly above each threshold (toolkit convention)."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        return np.full(len(thresholds), np.nan)
    return np.mean(ious[:, None] > np.asarray(thresholds)[None, :], axis=0)


def precision_curve(errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of frames with error at most each threshold (NaN errors count as misses)."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.size == 0:
        return np.full(len(thresholds), np.nan)
    with np.errstate(invalid="ignore"):
        return np.mean(errors[:, None] <= np.asarray(thresholds)[None, :], axis=0)


def got10k_scores(ious: np.ndarray) -> dict:
    """AO, SR0.5, SR0.75 and the 101-bin success curve of a set of frame IoUs."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        nan = float("nan")
        return {"ao": nan, "sr50": nan, "sr75": nan,
                "success_curve": success_curve(ious, GOT10K_IOU_THRESHOLDS)}
    return {"ao": float(np.mean(ious)),
            "sr50": float(np.mean(ious > 0.5)),
            "sr75": float(np.mean(ious > 0.75)),
            "success_curve": success_curve(ious, GOT10K_IOU_THRESHOLDS)}


def otb_curves(ious: np.ndarray, errors: np.ndarray, norm_errors: np.ndarray) -> dict:
    """OTB success / precision / normalized-precision curves and their scores.

    success AUC = mean over 21 IoU thresholds in [0, 1]; precision = curve at 20 px;
    normalized precision = mean (AUC) of the curve over 51 thresholds in [0, 0.5].
    """
    succ = success_curve(ious, OTB_IOU_THRESHOLDS)
    prec = precision_curve(errors, OTB_CE_THRESHOLDS)
    norm_prec = precision_curve(norm_errors, OTB_NCE_THRESHOLDS)
    return {"success_curve": succ, "precision_curve": prec, "norm_precision_curve": norm_prec,
            "success_auc": float(np.mean(succ)),
            "success_rate50": float(succ[len(succ) // 2]),
            "precision20": float(prec[20]),
            "norm_precision": float(np.mean(norm_prec))}


def paired_difference(scores, baseline_scores, confidence: float = 0.95, resamples: int = 10_000,
                      seed: int = 0) -> dict:
    """Mean of per-sequence differences ``scores - baseline_scores`` with a paired bootstrap
    confidence interval (``scipy.stats.bootstrap``, ``paired=True``: sequences resampled with
    replacement, both trackers' scores of a sequence kept together; percentile interval).

    Per-sequence scores of trackers on the same sequences are strongly correlated; the paired
    interval says whether a difference of means is larger than the sequence-to-sequence noise.
    Sequences where either score is NaN are left out; with fewer than two sequences left there
    is no interval (NaN). Returns mean, ci_low, ci_high, wins / losses / ties (sequences where
    the tracker is better / worse / equal) and n.
    """
    from scipy.stats import bootstrap

    a = np.asarray(scores, dtype=np.float64).reshape(-1)
    b = np.asarray(baseline_scores, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    n = int(d.size)
    out = {"n": n, "mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
           "wins": int(np.sum(d > 0)), "losses": int(np.sum(d < 0)), "ties": int(np.sum(d == 0)),
           "confidence": float(confidence)}
    if n == 0:
        return out
    out["mean"] = float(d.mean())
    if n < 2:
        return out

    def mean_difference(x, y, axis=-1):
        return np.mean(x - y, axis=axis)

    result = bootstrap((a, b), mean_difference, paired=True, vectorized=True,
                       n_resamples=int(resamples), confidence_level=confidence,
                       method="percentile", rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    out.update(ci_low=float(interval.low), ci_high=float(interval.high))
    return out
