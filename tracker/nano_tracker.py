"""The NanoTrack tracker: one search crop per frame, box from the best cell of an anchor-free head.

Post-processing as the author's v3 tracker (HonglinChu/SiamTrackers, SiamBAN-style): foreground
probability of each of the 15x15 cells, a box from the cell's point and its four edge distances,
a penalty on changes of scale and aspect ratio (``penalty_k``), a Hanning window
(``window_influence``), and the size damped by ``lr`` x penalty x score.

Rotation (``orientations = N > 0``, the toolkit's addition): the tracker keeps an estimate of the
target's rotation since the first frame, cuts the search crop turned by it (so the target shows
as it did in the template), and matches it against three templates turned by ``-360/N``, 0 and
``+360/N``: the winner (a turned one only when its peak beats the upright one's by
``orientation_margin``) moves the estimate by its turn. Boxes are found in the turned crop, so
the size is the target's own; the returned box bounds it (``axis_box``, as the SiamFC trackers),
and ``last_angle`` / ``last_polygon`` report it. One backbone pass per frame, three head passes
(measured: 0.58x the upright tracker's frame rate, docs/results.md).

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

from common.config import ConfigError, from_dict
from data.frames import check_frame_size

from .crops import context_size, crop_and_resize, crop_matrix, mean_color
from .orientation import AXIS_BOX_MODES, axis_aligned_box
from .siamfc import MAX_ORIENTATIONS, TrackerError, as_rgb_frame, check_init_box, rotated_box_polygon
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
    orientations: int = 0              # N > 0: follow the target's rotation in steps of 360/N degrees
    orientation_margin: float = 0.0    # a turned template must beat the upright one's peak by this
    axis_box: str = "ellipse"          # the axis-aligned box of a turned target (orientation.axis_aligned_box)

    def __post_init__(self):
        super().__post_init__()
        n = self.orientations
        if isinstance(n, bool) or not isinstance(n, int) or not (n == 0 or 4 <= n <= MAX_ORIENTATIONS):
            raise ConfigError(f"orientations must be 0 (off) or an integer in [4, {MAX_ORIENTATIONS}], got {n!r}")
        if not 0.0 <= self.orientation_margin <= 1.0:
            raise ConfigError(f"orientation_margin must be in [0, 1], got {self.orientation_margin}")
        if self.axis_box not in AXIS_BOX_MODES:
            raise ConfigError(f"axis_box must be one of {', '.join(AXIS_BOX_MODES)}, got {self.axis_box!r}")


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
        self.head_session = onnx_session(head, threads)
        self.bgr = bool(bgr)
        self._x_name = self.backbone.get_inputs()[0].name
        self._head_names = [i.name for i in self.head_session.get_inputs()]

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

    def features(self, crop: np.ndarray) -> np.ndarray:
        return self.backbone.run(None, {self._x_name: self._images(crop)})[0]

    def head(self, template: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cls, loc = self.head_session.run(None, dict(zip(self._head_names, (template, features))))
        return cls, loc

    def search(self, template: np.ndarray, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.head(template, self.features(crop))


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
    def features(self, crop: np.ndarray):
        return self.model.extract(self._images(crop)).out

    @torch.inference_mode()
    def head(self, template, features) -> tuple[np.ndarray, np.ndarray]:
        cls, loc = self.model.head_prepared(template, features)
        return cls.float().cpu().numpy(), loc.float().cpu().numpy()

    def search(self, template, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.head(template, self.features(crop))


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
    """got10k tracker over NanoTrack networks (see module doc); sets ``last_score`` each frame, and
    ``last_angle`` / ``last_polygon`` when it follows rotation."""

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
        step = 360.0 / self.params.orientations if self.params.orientations else 0.0
        self.turns = np.array([0.0, -step, step]) if step else np.zeros(1)   # the templates' turns (degrees)
        self.center = self.size = None
        self.angle = 0.0
        self.last_score: float | None = None
        self.last_angle = self.last_polygon = None

    @property
    def estimates_orientation(self) -> bool:
        return self.params.orientations > 0

    def init(self, image, box) -> None:
        frame = as_rgb_frame(image)
        box = check_init_box(box, frame.shape)
        self.frame_size = (frame.shape[1], frame.shape[0])
        self.center = box[:2] + box[2:] / 2
        self.size = box[2:].copy()
        self.angle = 0.0
        self.avg_color = mean_color(frame)
        z_sz = context_size(self.size[0], self.size[1], CONTEXT)
        # template i shows the target turned by turns[i] (the crop is sampled turned the other way)
        self.templates = [self.networks.template(crop_and_resize(frame, self.center, z_sz, EXEMPLAR, self.avg_color,
                                                                 angle_deg=-turn)) for turn in self.turns]
        self.last_score = None
        self.last_angle, self.last_polygon = (0.0, rotated_box_polygon(self.center, self.size, 0.0)) \
            if self.estimates_orientation else (None, None)

    def _candidates(self, cls: np.ndarray, loc: np.ndarray, scale_z: float):
        """Per cell: foreground score, box (cx, cy, w, h) in crop pixels, penalised score."""
        p = self.params
        logits = cls.reshape(2, -1).astype(np.float64)
        score = 1.0 / (1.0 + np.exp(logits[0] - logits[1]))                   # softmax, foreground
        dist = loc.reshape(4, -1).astype(np.float64)
        x1, y1 = self.points[:, 0] - dist[0], self.points[:, 1] - dist[1]
        x2, y2 = self.points[:, 0] + dist[2], self.points[:, 1] + dist[3]
        box = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        tw, th = self.size * scale_z
        penalty = shape_change_penalty(box[2], box[3], tw, th, CONTEXT, p.penalty_k)
        pscore = penalty * score * (1 - p.window_influence) + self.window * p.window_influence
        return score, box, penalty, pscore

    def _turn(self, peaks: np.ndarray) -> tuple[int, float]:
        """The winning template (0 = upright; a turned one must beat its peak by the margin) and
        the estimate's change in degrees (that template's turn)."""
        best = int(np.argmax(peaks))
        if best and peaks[best] < peaks[0] + self.params.orientation_margin:
            best = 0
        return best, float(self.turns[best])

    def update(self, image) -> np.ndarray:
        if self.center is None:
            raise TrackerError(f"{type(self).__name__}.update() called before init()")
        frame = as_rgb_frame(image)
        check_frame_size(self.frame_size, frame)
        p = self.params
        z_sz = context_size(self.size[0], self.size[1], CONTEXT)
        scale_z = EXEMPLAR / z_sz
        x_sz = z_sz * INSTANCE / EXEMPLAR
        crop = crop_and_resize(frame, self.center, x_sz, INSTANCE, self.avg_color, angle_deg=self.angle)
        features = self.networks.features(crop)
        results = [self._candidates(*self.networks.head(t, features), scale_z) for t in self.templates]
        which, turn = self._turn(np.array([r[3].max() for r in results])) if len(results) > 1 else (0, 0.0)
        score, (cx, cy, w, h), penalty, pscore = results[which]
        best = int(np.argmax(pscore))
        lr = penalty[best] * score[best] * p.lr
        # the crop's axes are the frame's turned by the estimate: its offsets turn back with it
        shift = crop_matrix(self.center, x_sz, INSTANCE, self.angle)[:, :2] @ np.array([cx[best], cy[best]])
        self.center = self.center + shift
        self.size = self.size * (1 - lr) + np.array([w[best], h[best]]) / scale_z * lr
        self.angle = float((self.angle + turn + 180.0) % 360.0 - 180.0)
        width, height = self.frame_size
        self.center = np.clip(self.center, 0.0, [width, height])
        self.size = np.clip(self.size, MIN_SIDE, [width, height])
        self.last_score = float(score[best])
        if not self.estimates_orientation:
            return np.concatenate([self.center - self.size / 2, self.size])
        self.last_angle = self.angle
        self.last_polygon = rotated_box_polygon(self.center, self.size, self.angle)
        return axis_aligned_box(self.center, self.size, self.angle, p.axis_box)
