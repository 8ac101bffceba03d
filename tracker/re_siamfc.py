"""RE-SiamNet (Gupta, Arya, Gavves, CVPR 2021), built from the paper's description (docs/re_siamnet.md).

A SiamFC whose backbone is the e2cnn rotation-equivariant ResNet-22 (``e2-resnet22``, regular
fields of C_Λ, Λ = 4, 8 or 16): the model is an ordinary ``type = "siamfc"`` :class:`ModelConfig`
trained by ``tools/train_tracker.py`` (``configs/tracking/re_siamfc_r8.toml``). At init the
tracker precomputes Λ rotated copies of the template (one batched forward), correlates each frame's
search crops with all of them in one convolution, group-max-pools the Λ response maps and reads
the target's rotation θ = i·360°/Λ off the winning map (:mod:`tracker.orientation`); the motion
prior searches only orientations within ±γ of the last one (default γ = 360°/Λ, one step).

Inference cost is honest: the tracker runs the backbone in eval mode, where e2cnn caches every
expanded filter, and by default replaces it by e2cnn's plain-PyTorch export
(:func:`export_e2_backbone`: same outputs, no GeometricTensor bookkeeping), so a frame costs the
same convolutions as the plain ResNet-22 of the same width.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from backbones import BackboneOutput
from backbones.cnn import Backbone
from backbones.steerable import E2ResNet22
from common.config import ConfigError, from_dict

from .orientation import angle_difference, axis_aligned_box, refine_orientation, scores_at
from .siamfc import Peak, SiamFCParams, SiamFCTracker, TrackerError, rotated_box_polygon

__all__ = ["RESiamFCOptions", "RESiamFCTracker", "ExportedE2ResNet22", "export_e2_backbone"]


# ---- e2cnn export -------------------------------------------------------------------------
class _ExportedCIRUnit(nn.Module):
    """Plain twin of :class:`backbones.steerable.E2CIRUnit` (same forward on plain tensors)."""

    def __init__(self, unit):
        super().__init__()
        self.branch = unit.branch.export()
        self.shortcut = unit.shortcut.export() if unit.shortcut is not None else None
        self.relu = nn.ReLU(inplace=True)
        self.pool = unit.pool.export() if unit.pool is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.branch(x) + res)[:, :, 1:-1, 1:-1]
        return self.pool(out) if self.pool is not None else out


class ExportedE2ResNet22(Backbone):
    """Inference-only plain-PyTorch copy of an :class:`backbones.steerable.E2ResNet22`.

    Built with e2cnn's ``export()`` (expanded filters as ``nn.Conv2d``, InnerBatchNorm as
    ``nn.BatchNorm2d``); equal outputs and watched maps, the same attributes (``spec``,
    ``out_channels``, ...). Its weights are a snapshot: re-export after changing the source.
    (``copy.deepcopy`` of an e2cnn model in eval mode fails on its cached filters: export instead.)
    """

    def __init__(self, source):
        super().__init__()
        source.eval()
        self.spec = source.spec
        self.out_channels = source.out_channels
        self.watched_names = list(source.watched_names)
        self.total_stride = source.total_stride
        self.canonical_size = source.canonical_size
        self.group_order = source.group_order
        self.stem = source.stem.export()
        self.layer1 = nn.Sequential(*[_ExportedCIRUnit(u) for u in source.layer1._modules.values()])
        self.layer2 = nn.Sequential(*[_ExportedCIRUnit(u) for u in source.layer2._modules.values()])
        self.eval()

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        s = self.stem(x)
        l1 = self.layer1(s)
        l2 = self.layer2(l1)
        return BackboneOutput(l2, [s, l1, l2])


def export_e2_backbone(backbone) -> Backbone:
    """A plain-PyTorch export of an e2cnn ``E2ResNet22`` (puts the source in eval mode)."""
    if not isinstance(backbone, E2ResNet22):
        raise TypeError(f"can only export an E2ResNet22, got {type(backbone).__name__}")
    with torch.no_grad():
        return ExportedE2ResNet22(backbone)


def _with_backbone(model: nn.Module, backbone: nn.Module) -> nn.Module:
    """A shallow copy of ``model`` whose ``backbone`` is replaced; the other submodules, parameters
    and buffers are shared, and ``model`` itself is left unchanged."""
    twin = copy.copy(model)
    twin._modules = dict(model._modules)      # its own module table, so the swap stays local
    twin.backbone = backbone
    return twin


# ---- the tracker ---------------------------------------------------------------------------
@dataclass
class RESiamFCOptions:
    """RE-SiamNet's own options (the rest go to :class:`tracker.siamfc.SiamFCParams`)."""

    angle_refine: bool = False      # parabolic sub-step refinement of θ (the paper reads i·360/Λ)
    export_backbone: bool = True    # run e2cnn's plain-PyTorch export of the backbone

    def __post_init__(self):
        for name in ("angle_refine", "export_backbone"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")


class RESiamFCTracker(SiamFCTracker):
    """got10k tracker of RE-SiamNet over a SiamFC model with an e2cnn backbone.

    Options: ``orientations`` (default Λ of the backbone's group), ``orientation_window`` ±γ in
    degrees (default 360/Λ; 0 = search every orientation), ``angle_refine``, ``export_backbone``,
    and every SiamFC option. After each ``update``: ``last_score``, ``last_angle`` (degrees CCW
    since the first frame, in [-180, 180)), ``last_polygon`` (the initial box, scaled, rotated by
    it); ``update`` returns an axis-aligned box of the rotated target (``axis_box``, default the
    bounds of the ellipse inscribed in that polygon).

    Like every tracker here it moves the model to the device and sets it to eval mode; with
    ``export_backbone`` ``.model`` is a shallow copy of it whose backbone is the plain export (the
    caller's model keeps its e2cnn backbone, so a model in training is not altered).
    """

    def __init__(self, model, device=None, name: str = "re-siamfc", backend: str = "auto", **options):
        allowed = set(RESiamFCOptions.__dataclass_fields__) | set(SiamFCParams.__dataclass_fields__)
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConfigError(f"tracker options: unknown key(s) {', '.join(map(repr, unknown))}; "
                              f"allowed: {', '.join(sorted(allowed))}")
        own = {k: options.pop(k) for k in list(options) if k in RESiamFCOptions.__dataclass_fields__}
        self.options = from_dict(RESiamFCOptions, own, "tracker options")
        config = getattr(model, "config", None)
        backbone_name = getattr(getattr(config, "backbone", None), "name", "")
        if getattr(config, "type", None) != "siamfc" or not hasattr(model, "head_bank"):
            raise TrackerError("re-siamfc needs a SiamFC model (model type 'siamfc')")
        if not backbone_name.startswith("e2-"):
            raise TrackerError(f"re-siamfc needs an e2cnn backbone (e2-resnet22), got {backbone_name!r}; "
                               "for other backbones use siamfc with orientations=N")
        group_order = int(model.backbone.spec.rotations)
        options.setdefault("orientations", group_order)
        if options["orientations"] == 0:
            raise TrackerError("re-siamfc estimates orientation: orientations must be >= 1")
        if isinstance(options["orientations"], int) and options["orientations"] > 0:
            options.setdefault("orientation_window", 360.0 / options["orientations"])
        super().__init__(model, device, name, backend, **options)
        self.angle_step = 360.0 / len(self.orientation_angles)
        self.angle_offset = 0.0     # sub-step refinement of the current orientation, in steps
        self._pending_offset = 0.0

    # ---- hook overrides ----------------------------------------------------------------
    def inference_model(self, model):
        # learnable parameters of the e2cnn backbone: its export holds the expanded filters instead
        self.backbone_parameters = int(sum(p.numel() for p in model.backbone.parameters()))
        if self.options.export_backbone and isinstance(model.backbone, E2ResNet22):
            return _with_backbone(model, export_e2_backbone(model.backbone).to(self.device))
        return model

    def locate_peak(self, responses: np.ndarray, allowed: np.ndarray, colour: np.ndarray | None = None) -> Peak:
        peak = super().locate_peak(responses, allowed, colour)
        self._pending_offset = 0.0
        if self.options.angle_refine:
            # upsampled-map pixel -> response cell (cv2.resize's pixel-centre convention)
            pixel = peak.displacement + (self.upscale_size - 1) / 2.0
            cell = (pixel + 0.5) / self.params.response_up - 0.5
            scores = scores_at(responses, peak.scale_index, cell)
            self._pending_offset = refine_orientation(scores, peak.orientation_index)
        return peak

    def apply_peak(self, peak: Peak) -> None:
        super().apply_peak(peak)
        # the refinement belongs to the winning orientation (orientation_patience may keep the current one)
        self.angle_offset = self._pending_offset if self.orientation_index == peak.orientation_index else 0.0

    def current_angle(self) -> float:
        """The orientation estimate in degrees CCW, wrapped into [-180, 180)."""
        angle = self.orientation_angles[self.orientation_index] + self.angle_offset * self.angle_step
        return float(angle_difference(angle, 0.0))

    def current_box(self) -> np.ndarray:
        self.last_angle = self.current_angle()
        self.last_polygon = rotated_box_polygon(self.center, self.target_sz, self.last_angle)
        return axis_aligned_box(self.center, self.target_sz, self.last_angle, self.params.axis_box)

    def init(self, image, box) -> None:
        super().init(image, box)
        self.angle_offset = self._pending_offset = 0.0
