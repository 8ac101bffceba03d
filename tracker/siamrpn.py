"""The SiamRPN tracker (pysot's SiamRPNTracker: anchors, scale/aspect penalty, cosine window, damping)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common.config import ConfigError, from_dict
from data.frames import check_frame_size

from .crops import context_size, crop_and_resize
from .siamfc import SiameseTracker, as_rgb_frame

__all__ = ["SiamRPNParams", "SiamRPNTracker", "shape_change_penalty"]


@dataclass
class SiamRPNParams:
    """Tracking hyper-parameters of SiamRPN (pysot defaults, siamfc-pytorch)."""

    penalty_k: float = 0.04
    window_influence: float = 0.44
    lr: float = 0.4

    def __post_init__(self):
        if not 0 <= self.penalty_k < float("inf"):
            raise ConfigError(f"penalty_k must be a finite number >= 0, got {self.penalty_k}")
        for name in ("window_influence", "lr"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def _change(r: np.ndarray) -> np.ndarray:
    return np.maximum(r, 1.0 / r)


def _context_sizes(w: np.ndarray, h: np.ndarray, context: float) -> np.ndarray:
    pad = context * (w + h)
    return np.sqrt((w + pad) * (h + pad))


def shape_change_penalty(w: np.ndarray, h: np.ndarray, tw: float, th: float, context: float,
                         penalty_k: float) -> np.ndarray:
    """SiamRPN's penalty on candidate boxes (w, h) that change the target's (tw, th) scale and
    aspect ratio, all in crop pixels: exp(-(r_c s_c - 1) penalty_k) (also NanoTrack's)."""
    s_c = _change(_context_sizes(w, h, context) / _context_sizes(tw, th, context))
    r_c = _change((tw / th) / np.maximum(w / np.maximum(h, 1e-6), 1e-6))
    return np.exp(-(r_c * s_c - 1) * penalty_k)


class SiamRPNTracker(SiameseTracker):
    """SiamRPN over a :class:`tracker.models.SiamRPNNet`: one search crop per frame, box from the best anchor."""

    def __init__(self, model, device=None, name: str = "siamrpn", backend: str = "auto", **options):
        super().__init__(model, device, name, backend)
        self.params = from_dict(SiamRPNParams, options, "tracker options")
        anchors = model.anchors().detach().cpu().numpy().astype(np.float64)
        anchors[:, :2] -= self.config.instance_size / 2.0          # relative to the crop centre
        self.anchors = anchors                                       # (A*R*R, 4), (anchor, row, col) order
        r = int(model.score_size)
        hann = np.hanning(r)
        self.window = np.tile(np.outer(hann, hann).reshape(-1), len(anchors) // (r * r))
        self.template = None

    @torch.inference_mode()
    def build_template(self, frame: np.ndarray):
        z_sz = context_size(self.target_sz[0], self.target_sz[1], self.config.context)
        crop = crop_and_resize(frame, self.center, z_sz, self.config.exemplar_size, self.avg_color)
        feats = self.features(self._tensor(crop[None]))
        return self.model.prepare_template(feats)

    @torch.inference_mode()
    def compute_outputs(self, search: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Foreground probability (N,) and box deltas (N, 4) of every anchor."""
        cls, loc = self.model.head_prepared(self.template, self.features(search))
        score = torch.softmax(cls.reshape(2, -1).float(), dim=0)[1]
        deltas = loc.reshape(4, -1).t().float()
        return score.cpu().numpy().astype(np.float64), deltas.cpu().numpy().astype(np.float64)

    def init(self, image, box) -> None:
        frame = self._start(image, box)
        self.template = self.build_template(frame)

    def update(self, image) -> np.ndarray:
        self._require_init()
        frame = as_rgb_frame(image)
        check_frame_size(self.frame_size, frame)
        cfg, p = self.config, self.params
        z_sz = context_size(self.target_sz[0], self.target_sz[1], cfg.context)
        scale_z = cfg.exemplar_size / z_sz
        x_sz = z_sz * cfg.instance_size / cfg.exemplar_size
        crop = crop_and_resize(frame, self.center, x_sz, cfg.instance_size, self.avg_color)
        score, deltas = self.compute_outputs(self._tensor(crop[None]))

        a = self.anchors
        cx = deltas[:, 0] * a[:, 2] + a[:, 0]
        cy = deltas[:, 1] * a[:, 3] + a[:, 1]
        w = np.exp(np.minimum(deltas[:, 2], 10.0)) * a[:, 2]
        h = np.exp(np.minimum(deltas[:, 3], 10.0)) * a[:, 3]
        # scale and aspect-ratio change penalties, measured in crop pixels
        tw, th = self.target_sz * scale_z
        penalty = shape_change_penalty(w, h, tw, th, cfg.context, p.penalty_k)
        pscore = penalty * score
        pscore = pscore * (1 - p.window_influence) + self.window * p.window_influence
        best = int(np.argmax(pscore))

        lr = penalty[best] * score[best] * p.lr
        self.center = self.center + np.array([cx[best], cy[best]]) / scale_z
        size = np.array([w[best], h[best]]) / scale_z
        self.target_sz = self.target_sz * (1 - lr) + size * lr
        self._clamp_state()
        self.last_score = float(score[best])
        return np.concatenate([self.center - self.target_sz / 2, self.target_sz])
