"""The NanoTrack tracker: one search crop per frame, box from the best cell of an anchor-free head.

Post-processing as the author's v3 tracker (HonglinChu/SiamTrackers, SiamBAN-style): foreground
probability of each of the 15x15 cells, a box from the cell's point and its four edge distances,
a penalty on changes of scale and aspect ratio (``penalty_k``), a Hanning window
(``window_influence``), and the size damped by ``lr`` x penalty x score.

The networks run through :class:`OnnxNanoNetworks` (ONNX Runtime; the author's files, which read
BGR, or a :class:`tracker.nanotrack.NanoTrackNet` exported in memory) or :class:`TorchNanoNetworks`
(the live torch model, e.g. during training). The same tracker code serves the ``nanotrack-v3``
baseline and the toolkit's own NanoTrack-derived networks, so their speeds compare like for like.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from got10k.trackers import Tracker

from common.config import from_dict
from data.frames import check_frame_size

from .crops import context_size, crop_and_resize, mean_color
from .siamfc import TrackerError, as_rgb_frame, check_init_box
from .siamrpn import SiamRPNParams, shape_change_penalty

__all__ = ["NanoTrackParams", "NanoTracker", "OnnxNanoNetworks", "TorchNanoNetworks", "export_nanotrack_onnx"]

EXEMPLAR, INSTANCE, CONTEXT = 127, 255, 0.5
MIN_SIDE = 10.0            # the author's smallest box side (px)


@dataclass
class NanoTrackParams(SiamRPNParams):
    """Tracking hyper-parameters: SiamRPN's, with the author's v3 values (``../shared/models/README.md``)."""

    penalty_k: float = 0.138
    window_influence: float = 0.455
    lr: float = 0.348


def _dynamic_backbone(path: Path) -> bytes:
    """The author's backbone with its spatial input sizes made dynamic (the file pins 255 x 255;
    the template crop is 127 x 127, and the graph itself does not depend on the size)."""
    import onnx

    model = onnx.load(str(path))
    for value in (model.graph.input[0], model.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        for i, dim in enumerate(dims[2:]):
            dim.dim_param = f"{value.name}_{'hw'[i]}"
    return model.SerializeToString()


class OnnxNanoNetworks:
    """Backbone and head through ONNX Runtime (one intra-op thread per ``threads``)."""

    def __init__(self, backbone, head, bgr: bool, threads: int | None = None):
        from .backends import onnx_session

        self.backbone = onnx_session(backbone, threads)
        self.head = onnx_session(head, threads)
        self.bgr = bool(bgr)
        self._x_name = self.backbone.get_inputs()[0].name
        self._head_names = [i.name for i in self.head.get_inputs()]

    @classmethod
    def from_files(cls, backbone_path: str | Path, head_path: str | Path, threads: int | None = None):
        """The author's two ONNX files (BGR input). A missing file is a TrackerError naming it."""
        backbone_path, head_path = Path(backbone_path), Path(head_path)
        for path in (backbone_path, head_path):
            if not path.is_file():
                raise TrackerError(f"model file not found: {path} (the NanoTrack files live in "
                                   f"../shared/models/nanotrack/; see its README)")
        try:
            return cls(_dynamic_backbone(backbone_path), str(head_path), bgr=True, threads=threads)
        except Exception as exc:                  # a truncated or foreign file
            raise TrackerError(f"cannot load NanoTrack model files {backbone_path}, {head_path}: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    def _images(self, crop: np.ndarray) -> np.ndarray:
        if self.bgr:
            crop = crop[:, :, ::-1]
        return np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)

    def template(self, crop: np.ndarray) -> np.ndarray:
        return self.backbone.run(None, {self._x_name: self._images(crop)})[0]

    def search(self, template: np.ndarray, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.backbone.run(None, {self._x_name: self._images(crop)})[0]
        cls, loc = self.head.run(None, dict(zip(self._head_names, (template, x))))
        return cls, loc


class TorchNanoNetworks:
    """The live torch model (follows later changes to its weights; e.g. validation in training)."""

    def __init__(self, model, device=None):
        self.model = model.eval()
        self.device = device or next(model.parameters()).device

    def _images(self, crop: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(crop)).to(self.device).permute(2, 0, 1)[None].float()

    @torch.inference_mode()
    def template(self, crop: np.ndarray):
        return self.model.prepare_template(self.model.extract(self._images(crop)).out)

    @torch.inference_mode()
    def search(self, template, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cls, loc = self.model.head_prepared(template, self.model.extract(self._images(crop)).out)
        return cls.float().cpu().numpy(), loc.float().cpu().numpy()


def export_nanotrack_onnx(model) -> tuple[bytes, bytes]:
    """A NanoTrackNet's backbone (dynamic height and width) and head as two in-memory ONNX models."""
    model = model.eval().cpu()

    class Backbone(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, images):
            return self.net.extract(images).out

    def export(module, args, names, dynamic):
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, buffer, dynamo=False, opset_version=17, input_names=names,
                              dynamic_axes=dynamic)
        return buffer.getvalue()

    backbone = export(Backbone().eval(), (torch.zeros(1, 3, INSTANCE, INSTANCE),), ["images"],
                      {"images": {2: "height", 3: "width"}})
    z = torch.zeros(1, model.feature_channels, 8, 8)
    x = torch.zeros(1, model.feature_channels, 16, 16)
    head = export(model.nano_head.eval(), (z, x), ["template", "search"], None)
    return backbone, head


class NanoTracker(Tracker):
    """got10k tracker over NanoTrack networks (see module doc); sets ``last_score`` each frame."""

    def __init__(self, networks, name: str = "nanotrack", **options):
        super().__init__(name=name, is_deterministic=True)
        self.networks = networks
        self.params = from_dict(NanoTrackParams, options, "tracker options")
        side = 15
        offsets = (np.arange(side) - (side - 1) / 2.0) * 16.0
        xs, ys = np.meshgrid(offsets, offsets)
        self.points = np.stack([xs.reshape(-1), ys.reshape(-1)], 1)        # relative to the crop centre
        hann = np.hanning(side)
        self.window = np.outer(hann, hann).reshape(-1)
        self.center = self.size = None
        self.last_score: float | None = None
        self.last_angle = self.last_polygon = None

    def init(self, image, box) -> None:
        frame = as_rgb_frame(image)
        box = check_init_box(box, frame.shape)
        self.frame_size = (frame.shape[1], frame.shape[0])
        self.center = box[:2] + box[2:] / 2
        self.size = box[2:].copy()
        self.avg_color = mean_color(frame)
        z_sz = context_size(self.size[0], self.size[1], CONTEXT)
        crop = crop_and_resize(frame, self.center, z_sz, EXEMPLAR, self.avg_color)
        self.template = self.networks.template(crop)
        self.last_score = None

    def update(self, image) -> np.ndarray:
        if self.center is None:
            raise TrackerError(f"{type(self).__name__}.update() called before init()")
        frame = as_rgb_frame(image)
        check_frame_size(self.frame_size, frame)
        p = self.params
        z_sz = context_size(self.size[0], self.size[1], CONTEXT)
        scale_z = EXEMPLAR / z_sz
        crop = crop_and_resize(frame, self.center, z_sz * INSTANCE / EXEMPLAR, INSTANCE, self.avg_color)
        cls, loc = self.networks.search(self.template, crop)
        logits = cls.reshape(2, -1).astype(np.float64)
        score = 1.0 / (1.0 + np.exp(logits[0] - logits[1]))                   # softmax, foreground
        dist = loc.reshape(4, -1).astype(np.float64)
        x1, y1 = self.points[:, 0] - dist[0], self.points[:, 1] - dist[1]
        x2, y2 = self.points[:, 0] + dist[2], self.points[:, 1] + dist[3]
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        tw, th = self.size * scale_z
        penalty = shape_change_penalty(w, h, tw, th, CONTEXT, p.penalty_k)
        pscore = penalty * score * (1 - p.window_influence) + self.window * p.window_influence
        best = int(np.argmax(pscore))
        lr = penalty[best] * score[best] * p.lr
        self.center = self.center + np.array([cx[best], cy[best]]) / scale_z
        self.size = self.size * (1 - lr) + np.array([w[best], h[best]]) / scale_z * lr
        width, height = self.frame_size
        self.center = np.clip(self.center, 0.0, [width, height])
        self.size = np.clip(self.size, MIN_SIDE, [width, height])
        self.last_score = float(score[best])
        return np.concatenate([self.center - self.size / 2, self.size])
