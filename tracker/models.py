"""Siamese networks of the trackers: SiamFC (cross-correlation response) and SiamRPN (anchors).

One config object (:class:`ModelConfig`) describes a model completely; it is stored in every
tracker checkpoint (``ckpt["config"]["model"]``) so that trackers rebuild exactly the trained
network. Images enter as float RGB in 0..255; ImageNet normalisation happens inside.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import torch
from torch import nn

from backbones import Backbone, BackboneConfig, BackboneOutput, build_backbone, group_max_pool
from common.config import ConfigError, from_dict

from .anchors import generate_anchors
from .heads import DepthwiseRPNHead, SiamFCHead
from .losses import balanced_bce, rpn_losses, siamfc_labels

__all__ = [
    "ModelConfig", "SiamNet", "SiamFCNet", "SiamRPNNet", "build_model", "model_class", "model_config_of",
    "model_from_checkpoint", "MODEL_TYPES",
]

# Model type -> "module:Class"; looked up lazily so that a type may live in its own module.
MODEL_TYPES = {
    "siamfc": "tracker.models:SiamFCNet",
    "siamrpn": "tracker.models:SiamRPNNet",
    "nanotrack": "tracker.nanotrack:NanoTrackNet",
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _float_tuple(values, name: str) -> tuple:
    if isinstance(values, (int, float)):
        values = (values,)
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of numbers, got {values!r}") from None
    if not out or not all(v > 0 for v in out):
        raise ConfigError(f"{name} must be non-empty and positive, got {values!r}")
    return out


MAX_CROP_SIZE = 2048


@dataclass
class ModelConfig:
    """The one config object of a Siamese model (strict: build it with ``from_dict``)."""

    type: str = "siamfc"                 # "siamfc" | "siamrpn" | "nanotrack"
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig("resnet22", "R8", 0.25))
    out_scale: float = 0.001             # siamfc response scale
    neck_channels: int = 0               # 1x1 conv + BN adjusting the backbone output (0 = none)
    pool_groups: bool = False            # heads see P(f), the group max-pool of the backbone output
    anchor_ratios: tuple = (0.33, 0.5, 1.0, 2.0, 3.0)
    anchor_scales: tuple = (8.0,)
    exemplar_size: int = 127
    instance_size: int = 255
    context: float = 0.5

    def __post_init__(self):
        if isinstance(self.backbone, dict):
            self.backbone = from_dict(BackboneConfig, self.backbone, "model.backbone")
        if not isinstance(self.backbone, BackboneConfig):
            raise ConfigError(f"model.backbone must be a mapping, got {type(self.backbone).__name__}")
        if self.type not in MODEL_TYPES:
            raise ConfigError(f"unknown model type {self.type!r}; choose from {', '.join(MODEL_TYPES)}")
        self.anchor_ratios = _float_tuple(self.anchor_ratios, "anchor_ratios")
        self.anchor_scales = _float_tuple(self.anchor_scales, "anchor_scales")
        for name in ("exemplar_size", "instance_size", "neck_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        if self.instance_size > MAX_CROP_SIZE:     # a crop is a network input: bounded like a frame side
            raise ConfigError(f"instance_size must be at most {MAX_CROP_SIZE}, got {self.instance_size}")
        if not 0 < self.exemplar_size < self.instance_size:
            raise ConfigError(
                f"need 0 < exemplar_size < instance_size, got {self.exemplar_size}, {self.instance_size}"
            )
        if not isinstance(self.pool_groups, bool):
            raise ConfigError(f"pool_groups must be true or false, got {self.pool_groups!r}")
        if self.pool_groups and self.neck_channels:
            raise ConfigError("pool_groups pools the backbone's orientation groups: it needs neck_channels = 0")
        if not self.out_scale > 0:
            raise ConfigError(f"out_scale must be positive, got {self.out_scale}")
        if not self.context >= 0:
            raise ConfigError(f"context must be non-negative, got {self.context}")


def _as_config(config) -> ModelConfig:
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, dict):
        return from_dict(ModelConfig, config, "model")
    raise ConfigError(f"model config must be a ModelConfig or a mapping, got {type(config).__name__}")


class SiamNet(nn.Module):
    """Shared part of the Siamese models: normalisation, backbone, optional neck, head API.

    Subclasses implement :meth:`head`, :meth:`losses`, and the template-caching pair
    :meth:`prepare_template` / :meth:`head_prepared` that trackers use (template work once at init).
    """

    R_POS = 16.0   # SiamFC positive radius in search-crop pixels
    SEARCH_BATCH_EXPORTS_DYNAMIC = True   # the head exports to ONNX with a dynamic search batch (scales)
    NORMALISES_INPUT = True               # extract() standardises the images with pixel_mean / pixel_std

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone: Backbone = build_backbone(config.backbone)
        channels = self.backbone.out_channels
        if config.pool_groups:
            channels = self.backbone.spec.pooled_channels(channels)
        if config.neck_channels:
            self.neck = nn.Sequential(
                nn.Conv2d(channels, config.neck_channels, 1, bias=False), nn.BatchNorm2d(config.neck_channels)
            )
            channels = config.neck_channels
        else:
            self.neck = nn.Identity()
        self.feature_channels = channels
        self.stride = self.backbone.total_stride
        # Not in the state_dict: constants of the input convention, not learned.
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def extract(self, images: torch.Tensor) -> BackboneOutput:
        """Features of images (B, 3, H, W) float RGB 0..255: ``out`` (after the neck) and the backbone's watched maps."""
        x = (images - self.pixel_mean) / self.pixel_std if self.NORMALISES_INPUT else images
        feats = self.backbone(x)
        out = group_max_pool(feats.out, self.backbone.spec) if self.config.pool_groups else feats.out
        return BackboneOutput(self.neck(out), feats.watched)

    def forward(self, z: torch.Tensor, x: torch.Tensor):
        return self.head(self.extract(z).out, self.extract(x).out)

    def head(self, z_feat: torch.Tensor, x_feat: torch.Tensor):
        raise NotImplementedError

    def prepare_template(self, z_feat: torch.Tensor):
        """Template-side work of the head, done once per template (identity unless the head has some)."""
        return z_feat

    def head_prepared(self, template, x_feat: torch.Tensor):
        """``head`` with the template side already prepared by :meth:`prepare_template`."""
        return self.head(template, x_feat)

    def losses(self, z_feat: torch.Tensor, x_feat: torch.Tensor, box_x: torch.Tensor, **kwargs) -> dict:
        raise NotImplementedError

    def peaks(self, head_out) -> torch.Tensor:
        """(B, 2) x, y in search-crop pixels of the most confident position of ``head``'s output."""
        raise NotImplementedError

    def _measure_score_size(self) -> int:
        """Side of the response map at the configured crop sizes (one dry run; BN statistics untouched)."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                z = torch.zeros(1, 3, self.config.exemplar_size, self.config.exemplar_size)
                x = torch.zeros(1, 3, self.config.instance_size, self.config.instance_size)
                out = self.forward(z, x)
        finally:
            self.train(was_training)
        out = out[0] if isinstance(out, tuple) else out
        if out.shape[-1] < 1:
            raise ConfigError("the template is larger than the search region after the backbone")
        return int(out.shape[-1])


class SiamFCNet(SiamNet):
    """SiamFC: response = out_scale * (template ⋆ search) + bias, shape (B, 1, R, R)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.head_fc = SiamFCHead(config.out_scale)
        self.score_size = self._measure_score_size()

    def head(self, z_feat: torch.Tensor, x_feat: torch.Tensor) -> torch.Tensor:
        return self.head_fc(z_feat, x_feat)

    def head_bank(self, z_bank: torch.Tensor, x_feat: torch.Tensor, gemm: bool = False) -> torch.Tensor:
        """Responses (B, N, R, R) of a bank of N templates (e.g. rotated copies) against B search
        crops (``gemm``: correlated by :func:`tracker.heads.xcorr_gemm`)."""
        return self.head_fc.bank(z_bank, x_feat, gemm)

    def labels(self, box_x: torch.Tensor, score_size: int | None = None) -> torch.Tensor:
        return siamfc_labels(box_x, score_size or self.score_size, self.stride, self.config.instance_size, self.R_POS)

    def peaks(self, response: torch.Tensor) -> torch.Tensor:
        """The highest response cell (B, 1, R, R) as crop pixels."""
        side = response.shape[-1]
        best = response.reshape(response.shape[0], -1).argmax(1)
        cells = torch.stack([best % side, best // side], 1).float()
        return (cells - (side - 1) / 2.0) * self.stride + self.config.instance_size / 2.0

    def losses(self, z_feat: torch.Tensor, x_feat: torch.Tensor, box_x: torch.Tensor, **kwargs) -> dict:
        """{"total", "cls"}: balanced BCE, positives within R_POS crop px of box_x's centre."""
        response = self.head(z_feat, x_feat)
        labels = self.labels(box_x.to(response.dtype), response.shape[-1])
        loss = balanced_bce(response, labels)
        return {"total": loss, "cls": loss}


class SiamRPNNet(SiamNet):
    """SiamRPN with a depthwise-correlation RPN head: cls (B, 2A, R, R), loc (B, 4A, R, R)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.num_anchors = len(config.anchor_ratios) * len(config.anchor_scales)
        self.rpn = DepthwiseRPNHead(self.feature_channels, self.num_anchors)
        self.score_size = self._measure_score_size()
        anchors = generate_anchors(
            self.score_size, self.stride, config.anchor_ratios, config.anchor_scales, config.instance_size
        )
        self.register_buffer("anchor_boxes", anchors, persistent=False)

    def head(self, z_feat: torch.Tensor, x_feat: torch.Tensor):
        return self.rpn(z_feat, x_feat)

    def prepare_template(self, z_feat: torch.Tensor):
        return self.rpn.kernels(z_feat)

    def head_prepared(self, template, x_feat: torch.Tensor):
        return self.rpn.from_kernels(template, x_feat)

    def anchors(self) -> torch.Tensor:
        """(A*R*R, 4) anchors cx, cy, w, h in search-crop pixels, ordered (anchor, row, col)."""
        return self.anchor_boxes

    def peaks(self, head_out) -> torch.Tensor:
        """The centre of the anchor with the highest foreground probability."""
        cls = head_out[0]
        foreground = torch.softmax(cls.reshape(cls.shape[0], 2, -1).float(), dim=1)[:, 1]   # (B, A·R·R)
        return self.anchors().to(cls.device)[foreground.argmax(1), :2]

    def losses(self, z_feat: torch.Tensor, x_feat: torch.Tensor, box_x: torch.Tensor,
               generator: torch.Generator | None = None, **kwargs) -> dict:
        """{"total", "cls", "reg"} (pysot-style anchor targets and sampling)."""
        cls, loc = self.head(z_feat, x_feat)
        if cls.shape[-1] != self.score_size:
            raise ValueError(f"response is {cls.shape[-1]}x{cls.shape[-1]}, anchors are for {self.score_size}; "
                             f"train with {self.config.exemplar_size}/{self.config.instance_size} crops")
        return rpn_losses(cls, loc, self.anchor_boxes, box_x.to(cls.dtype), generator=generator)


def model_class(model_type: str) -> type[SiamNet]:
    try:
        target = MODEL_TYPES[model_type]
    except KeyError:
        raise ConfigError(f"unknown model type {model_type!r}; choose from {', '.join(MODEL_TYPES)}") from None
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def build_model(config: ModelConfig | dict) -> SiamNet:
    """Build the Siamese model a config describes (a dict is checked strictly)."""
    config = _as_config(config)
    return model_class(config.type)(config)


def model_config_of(ckpt: dict, where: str = "checkpoint") -> ModelConfig:
    """The ModelConfig stored in a tracker checkpoint dict (``ckpt["config"]["model"]``)."""
    from common.checkpoints import CheckpointError

    config = ckpt.get("config")
    model_cfg = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict):
        raise CheckpointError(f"{where}: not a tracker checkpoint (its config has no 'model' section)")
    try:
        return from_dict(ModelConfig, model_cfg, "model")
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def model_from_checkpoint(path, map_location="cpu") -> tuple[SiamNet, dict]:
    """Rebuild the Siamese model of a tracker checkpoint and load its weights: (model, checkpoint dict)."""
    from common.checkpoints import CheckpointError, load_checkpoint, load_weights

    ckpt = load_checkpoint(path, map_location)
    model = build_model(model_config_of(ckpt, str(path)))
    state = ckpt["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its 'model' entry is not a state dict")
    load_weights(model, state, f"{path}: weights")
    return model, ckpt
