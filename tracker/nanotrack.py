"""NanoTrack v3's network as a torch model of the toolkit, and its import from the author's ONNX files.

NanoTrack (HonglinChu/SiamTrackers, Apache-2.0) is a light Siamese tracker: the MobileNetV3-style
backbone of :mod:`backbones.mobilenet` (96 channels at stride 16) and an anchor-free head. The
head correlates the template (8x8 features of a 127-px crop) with the search features (16x16 of a
255-px crop) twice: pixel-wise (every template cell against every search cell, 64 maps, with
channel attention) and depthwise (the template's central 4x4 cells), then two towers of six
depthwise-separable convolutions give, on a 15x15 grid, two-class logits and the distances from
each cell's point to the box's left, top, right and bottom edges (search-crop pixels).

:func:`import_nanotrack_v3` reads the ONNX initialisers into :class:`NanoTrackNet` in graph order
(shapes checked one by one; ``tests/test_nanotrack.py`` checks the outputs against ONNX Runtime),
reversing the stem's input channels so that the model reads RGB like every model of the toolkit.
Trained further (``tools/train_tracker.py`` with ``model.type = "nanotrack"``), its backbone
channels form orientation groups and learn the IEN loss beside the tracking loss of
:meth:`NanoTrackNet.losses`.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.config import ConfigError

from .models import SiamNet

__all__ = ["NanoTrackHead", "NanoTrackNet", "import_nanotrack_v3", "nanotrack_labels", "nanotrack_losses",
           "score_points", "turn_score_map", "build_nano_tracker"]

FEATURES = 96          # backbone output channels
CORR = 64              # pixel-wise correlation maps (template cells, 8 x 8)
TOWER_DEPTH = 6


class ChannelAttention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels, 1)
        self.fc2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class PixelwiseCorrelation(nn.Module):
    """Every template cell against every search cell: (B, h*w, H, W), attention, 2x2 depthwise, 1x1."""

    def __init__(self, channels: int = FEATURES, cells: int = CORR):
        super().__init__()
        self.adjust_z = nn.Conv2d(channels, channels, 1)
        self.adjust_x = nn.Conv2d(channels, channels, 1)
        self.attention = ChannelAttention(cells)
        self.depthwise = nn.Conv2d(cells, cells, 2, groups=cells)
        self.pointwise = nn.Conv2d(cells, cells, 1)

    def prepare(self, z: torch.Tensor) -> torch.Tensor:
        """(B, h*w, C): the template side, once per template."""
        z = self.adjust_z(z)
        return z.flatten(2).transpose(1, 2)

    def forward(self, kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = self.adjust_x(x)
        b, c, h, w = x.shape
        corr = torch.matmul(kernel, x.reshape(b, c, h * w)).reshape(b, kernel.shape[1], h, w)
        corr = self.attention(corr)
        return self.pointwise(F.relu6(self.depthwise(corr)))


class DepthwiseCorrelation(nn.Module):
    """The template's central 4x4 cells correlated channel by channel (padding 1)."""

    def __init__(self, channels: int = FEATURES):
        super().__init__()
        self.adjust_z = nn.Conv2d(channels, channels, 1)
        self.adjust_x = nn.Conv2d(channels, channels, 1)

    def prepare(self, z_centre: torch.Tensor) -> torch.Tensor:
        return self.adjust_z(z_centre)

    def forward(self, kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = self.adjust_x(x)
        b, c, h, w = x.shape
        kb = kernel.shape[0]
        if kb == 1 and b > 1:
            kernel = kernel.expand(b, -1, -1, -1)
        out = F.conv2d(x.reshape(1, b * c, h, w), kernel.reshape(b * c, 1, *kernel.shape[-2:]),
                       padding=1, groups=b * c)
        return out.reshape(b, c, out.shape[-2], out.shape[-1])


def _tower(channels: int) -> nn.Sequential:
    layers = []
    for _ in range(TOWER_DEPTH):
        layers += [nn.Conv2d(channels, channels, 3, 1, 1, groups=channels), nn.ReLU6(),
                   nn.Conv2d(channels, channels, 1)]
    return nn.Sequential(*layers)


class NanoTrackHead(nn.Module):
    """NanoTrack v3's head; the registration order of the submodules is the ONNX graph's order."""

    def __init__(self, channels: int = FEATURES):
        super().__init__()
        self.pw_reg = PixelwiseCorrelation(channels)
        self.pw_cls = PixelwiseCorrelation(channels)
        self.dw_reg = DepthwiseCorrelation(channels)
        self.dw_cls = DepthwiseCorrelation(channels)
        self.down_reg = nn.Conv2d(CORR + channels, channels, 1)
        self.down_cls = nn.Conv2d(CORR + channels, channels, 1)
        self.cls_tower = _tower(channels)
        self.cls_logits = nn.Conv2d(channels, 2, 1)
        self.reg_tower = _tower(channels)
        self.bbox_pred = nn.Conv2d(channels, 4, 1)

    def prepare(self, z: torch.Tensor) -> tuple:
        """The template side of the head (B, C, 8, 8) -> kernels, computed once per template."""
        centre = z[:, :, 2:6, 2:6]
        return (self.pw_reg.prepare(z), self.pw_cls.prepare(z), self.dw_reg.prepare(centre),
                self.dw_cls.prepare(centre))

    def from_prepared(self, kernels: tuple, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cls logits (B, 2, R, R) and box distances l, t, r, b (B, 4, R, R) in search-crop pixels."""
        pw_reg, pw_cls, dw_reg, dw_cls = kernels
        if pw_reg.shape[0] == 1 and x.shape[0] > 1:
            pw_reg, pw_cls = pw_reg.expand(x.shape[0], -1, -1), pw_cls.expand(x.shape[0], -1, -1)
        reg = self.down_reg(torch.cat([self.pw_reg(pw_reg, x), self.dw_reg(dw_reg, x)], 1))
        cls = self.down_cls(torch.cat([self.pw_cls(pw_cls, x), self.dw_cls(dw_cls, x)], 1))
        return self.cls_logits(self.cls_tower(cls)), torch.exp(self.bbox_pred(self.reg_tower(reg)))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_prepared(self.prepare(z), x)


def score_points(score_size: int, stride: int, instance_size: int) -> torch.Tensor:
    """(R*R, 2) x, y in search-crop pixels of each score cell's point (row-major), the crop centre
    at the middle cell."""
    offsets = (torch.arange(score_size, dtype=torch.float32) - (score_size - 1) / 2.0) * stride
    ys, xs = torch.meshgrid(offsets, offsets, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], 1) + instance_size / 2.0


def nanotrack_labels(points: torch.Tensor, box_x: torch.Tensor) -> torch.Tensor:
    """(B, R*R) labels 1 (positive), 0 (negative), -1 (ignored) as SiamBAN: positive inside the
    ellipse of semi-axes w/4, h/4 about the box centre, negative outside the one of w/2, h/2.
    ``box_x`` (B, 4) x1, y1, x2, y2 in search-crop pixels."""
    centre = (box_x[:, :2] + box_x[:, 2:]) / 2
    size = (box_x[:, 2:] - box_x[:, :2]).clamp_min(1.0)
    d = (points[None] - centre[:, None]) / size[:, None]                  # (B, N, 2) in box sizes
    r2 = d.pow(2).sum(-1)
    labels = torch.full(r2.shape, -1.0, dtype=box_x.dtype, device=box_x.device)
    labels[r2 > 0.25] = 0.0
    labels[r2 < 0.0625] = 1.0
    return labels


def nanotrack_losses(cls: torch.Tensor, loc: torch.Tensor, points: torch.Tensor, box_x: torch.Tensor,
                     loc_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """{"total", "cls", "reg"}: cross-entropy with positives and negatives weighted 1/2 each, and
    the IoU loss -log IoU of the predicted edge distances on the positives (SiamBAN's)."""
    b = cls.shape[0]
    labels = nanotrack_labels(points.to(box_x), box_x)                    # (B, N)
    logp = F.log_softmax(cls.reshape(b, 2, -1).float(), dim=1)            # (B, 2, N)
    pos, neg = labels == 1, labels == 0
    pos_loss = -(logp[:, 1] * pos).sum() / pos.sum().clamp_min(1)
    neg_loss = -(logp[:, 0] * neg).sum() / neg.sum().clamp_min(1)
    cls_loss = 0.5 * pos_loss + 0.5 * neg_loss
    dist = loc.reshape(b, 4, -1).permute(0, 2, 1).float()                  # (B, N, 4) l, t, r, b
    p = points.to(dist)[None]
    target = torch.cat([p - box_x[:, None, :2], box_x[:, None, 2:] - p], -1)   # (B, N, 4)
    if pos.any():
        d, t = dist[pos], target[pos]
        area_p = (d[:, 0] + d[:, 2]) * (d[:, 1] + d[:, 3])
        area_t = (t[:, 0] + t[:, 2]) * (t[:, 1] + t[:, 3])
        iw = torch.minimum(d[:, 0], t[:, 0]) + torch.minimum(d[:, 2], t[:, 2])
        ih = torch.minimum(d[:, 1], t[:, 1]) + torch.minimum(d[:, 3], t[:, 3])
        inter = iw.clamp_min(0) * ih.clamp_min(0)
        iou = (inter + 1.0) / (area_p + area_t - inter + 1.0)
        reg_loss = -torch.log(iou.clamp_min(1e-6)).mean()
    else:
        reg_loss = dist.sum() * 0.0
    return {"total": cls_loss + loc_weight * reg_loss, "cls": cls_loss, "reg": reg_loss}


def turn_score_map(scores: torch.Tensor, angle_deg: torch.Tensor, pivot: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Score maps (B, 1, R, R) on the score grid ``points`` (R*R, 2 crop px) turned by ``angle_deg``
    (B,) counter-clockwise on screen about ``pivot`` (B, 2 crop px); cells from outside the map get 0."""
    side = scores.shape[-1]
    a = torch.deg2rad(angle_deg.float())[:, None]
    c, s = torch.cos(a), torch.sin(a)
    d = points.to(scores)[None] - pivot[:, None]                      # (B, N, 2) output cell - pivot
    # the value at p' comes from p = pivot + R(-angle)(p' - pivot); R is CCW on screen (y down)
    src = torch.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1]], -1) + pivot[:, None]
    first, last = points[0], points[-1]
    grid = 2 * (src - first.to(scores)) / (last - first).to(scores) - 1
    grid = grid.reshape(scores.shape[0], side, side, 2)
    return F.grid_sample(scores, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class NanoTrackNet(SiamNet):
    """NanoTrack v3 as a Siamese model of the toolkit: ``head`` gives (cls, loc); images enter as
    float RGB 0..255 without normalisation (the author's convention, channels reordered at import)."""

    SEARCH_BATCH_EXPORTS_DYNAMIC = False   # one search crop a frame; its depthwise correlation reshapes by batch
    NORMALISES_INPUT = False               # the author's network reads raw 0..255 pixels

    def __init__(self, config):
        if config.backbone.name != "nanotrack-v3":
            raise ConfigError(f"a nanotrack model needs the nanotrack-v3 backbone, got {config.backbone.name!r}")
        if config.neck_channels or config.pool_groups:
            raise ConfigError("a nanotrack model has no neck and no pooled head (neck_channels 0, pool_groups false)")
        super().__init__(config)
        self.nano_head = NanoTrackHead(self.feature_channels)
        self.score_size = self._measure_score_size()
        self.register_buffer("points", score_points(self.score_size, self.stride, config.instance_size),
                             persistent=False)

    def head(self, z_feat: torch.Tensor, x_feat: torch.Tensor):
        return self.nano_head(z_feat, x_feat)

    def prepare_template(self, z_feat: torch.Tensor):
        return self.nano_head.prepare(z_feat)

    def head_prepared(self, template, x_feat: torch.Tensor):
        return self.nano_head.from_prepared(template, x_feat)

    def losses(self, z_feat: torch.Tensor, x_feat: torch.Tensor, box_x: torch.Tensor, **kwargs) -> dict:
        cls, loc = self.head(z_feat, x_feat)
        return nanotrack_losses(cls, loc, self.points, box_x.to(cls.dtype))

    def distillation_losses(self, z_feat: torch.Tensor, x_feat: torch.Tensor, box_x: torch.Tensor, teacher: tuple,
                            rotation: torch.Tensor | None = None, label_weight: float = 1.0,
                            distill_weight: float = 1.0) -> dict:
        """Learning from a teacher's outputs on the same pairs, turned with the target.

        ``teacher``: its (cls, loc) on the search crop before the pair's extra rotation
        (``rotation``, degrees counter-clockwise, about the target: None = no rotation). Its
        foreground probabilities, turned by ``rotation`` about the target's position, are the
        student's targets on the turned crop (cross-entropy on every cell): the student learns to
        answer a turned target as the teacher answers the upright one. Its edge distances are
        targets only on unturned pairs (a turned target's box is another box); the box is learnt
        from the ground truth too (IoU loss on its positives, weighted ``label_weight``).
        """
        cls, loc = self.head(z_feat, x_feat)
        b = cls.shape[0]
        box_x = box_x.to(cls.dtype)
        t_cls, t_loc = teacher
        t_fg = torch.softmax(t_cls.reshape(b, 2, -1).float(), dim=1)[:, 1]
        upright = torch.ones(b, device=cls.device)
        if rotation is not None:
            t_fg = turn_score_map(t_fg.reshape(b, 1, *cls.shape[-2:]), rotation, (box_x[:, :2] + box_x[:, 2:]) / 2,
                                  self.points).reshape(b, -1)
            upright = (rotation.abs() < 1.0).float()
        logp = F.log_softmax(cls.reshape(b, 2, -1).float(), dim=1)
        distill_cls = -(t_fg * logp[:, 1] + (1 - t_fg) * logp[:, 0]).mean()
        weight = t_fg * upright[:, None]
        gap = loc.reshape(b, 4, -1).float().clamp_min(1e-3).log() - t_loc.reshape(b, 4, -1).float().clamp_min(1e-3).log()
        distill_reg = (gap.abs().mean(1) * weight).sum() / weight.sum().clamp_min(1e-6)
        parts = nanotrack_losses(cls, loc, self.points, box_x)
        distill = distill_cls + distill_reg
        total = label_weight * parts["reg"] + distill_weight * distill
        return {"total": total, "cls": distill_cls, "reg": parts["reg"], "distill_reg": distill_reg}

    def peaks(self, head_out) -> torch.Tensor:
        """(B, 2) x, y in search-crop pixels of the cell with the highest foreground probability."""
        cls = head_out[0]
        foreground = torch.softmax(cls.reshape(cls.shape[0], 2, -1).float(), dim=1)[:, 1]
        return self.points.to(cls.device)[foreground.argmax(1)]


def _onnx_parameters(path: Path) -> list:
    """The weight and bias initialisers of every Conv and Gemm node, in graph order."""
    import onnx
    from onnx import numpy_helper

    if not path.is_file():
        raise FileNotFoundError(f"NanoTrack model file not found: {path}")
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:                      # a truncated or foreign file
        raise ValueError(f"cannot read ONNX model {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    inits = {i.name: i for i in graph.initializer}
    tensors = []
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            names = [n for n in node.input[1:] if n in inits]
            tensors += [torch.from_numpy(numpy_helper.to_array(inits[n]).copy()) for n in names]
    return tensors


def _fill(module: nn.Module, tensors: list, where: Path) -> None:
    params = list(module.parameters())
    if len(params) != len(tensors):
        raise ValueError(f"{where}: {len(tensors)} weight tensors, the NanoTrack v3 graph has {len(params)}: "
                         f"not a NanoTrack v3 model")
    with torch.no_grad():
        for i, (param, value) in enumerate(zip(params, tensors)):
            if tuple(param.shape) != tuple(value.shape):
                raise ValueError(f"{where}: tensor {i} has shape {tuple(value.shape)}, the NanoTrack v3 "
                                 f"graph expects {tuple(param.shape)}: not a NanoTrack v3 model")
            param.copy_(value)


def import_nanotrack_v3(backbone_onnx: str | Path, head_onnx: str | Path, group: str = "R8") -> NanoTrackNet:
    """A :class:`NanoTrackNet` holding the weights of the author's two ONNX files (its backbone's
    channels grouped by ``group`` for the IEN loss; the weights do not depend on it)."""
    from .models import build_model

    model = build_model({"type": "nanotrack", "backbone": {"name": "nanotrack-v3", "group": group, "width_mult": 1.0}})
    backbone_onnx, head_onnx = Path(backbone_onnx), Path(head_onnx)
    _fill(model.backbone, _onnx_parameters(backbone_onnx), backbone_onnx)
    _fill(model.nano_head, _onnx_parameters(head_onnx), head_onnx)
    with torch.no_grad():                         # the author's network reads BGR; ours RGB
        model.backbone.stem.weight.copy_(model.backbone.stem.weight.flip(1))
    return model


def build_nano_tracker(model: NanoTrackNet, device=None, name: str = "nanotrack-ien", backend: str = "auto",
                       **options):
    """A :class:`tracker.nano_tracker.NanoTracker` over ``model`` (the registry's factory for the
    toolkit's NanoTrack networks): on the ``onnxruntime`` backend the backbone and head exported
    to ONNX Runtime, as the ``nanotrack-v3`` baseline runs the author's files (so their speeds
    compare like for like); otherwise the torch model itself."""
    from .nano_tracker import NanoTracker, OnnxNanoNetworks, TorchNanoNetworks, export_nanotrack_onnx

    if backend == "onnxruntime":
        networks = OnnxNanoNetworks(*export_nanotrack_onnx(model), bgr=False)
    else:
        networks = TorchNanoNetworks(model.to(device) if device is not None else model, device)
    tracker = NanoTracker(networks, name=name, **options)
    tracker.backend = backend
    return tracker
