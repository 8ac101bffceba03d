"""Backbones with orientation-grouped channels, the IEN loss, and equivariance diagnostics."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from common.config import ConfigError, from_dict, to_dict

from .cnn import VGG, AuthorsCNNBasic, Backbone, BackboneOutput, CNNBasic, ResNet18, ResNet22, layer_channels
from .groups import GroupSpec, GroupSpecError, group_max_pool, parse_group
from .ien import IENLoss, IENLossOutput, double_batch
from .mobilenet import NanoTrackV3Backbone
from .transforms import BatchTransform, GroupElement, group_elements, sample_transform

BACKBONES = {
    "cnnbasic": CNNBasic,
    "authors-cnnbasic": AuthorsCNNBasic,
    "vgg": VGG,
    "resnet18": ResNet18,
    "resnet22": ResNet22,
    "nanotrack-v3": NanoTrackV3Backbone,
}
STEERABLE_BACKBONES = ("e2-cnnbasic", "e2-authors-cnnbasic", "e2-resnet22")
MAX_WIDTH_MULT = 16.0


@dataclass
class BackboneConfig:
    """The one config object of a backbone: which network, which orientation groups, how wide."""

    name: str = "resnet22"
    group: str = "R8"
    width_mult: float = 1.0
    in_channels: int = 3

    def __post_init__(self):
        if self.name not in BACKBONES and self.name not in STEERABLE_BACKBONES:
            raise ConfigError(
                f"unknown backbone {self.name!r}; choose from "
                f"{', '.join(list(BACKBONES) + list(STEERABLE_BACKBONES))}"
            )
        parse_group(self.group)
        # channels grow with width_mult and weights with its square: 16 (16x the paper's widths,
        # 256x its parameters) is far past any useful network and still far from exhausting memory
        if isinstance(self.width_mult, bool) or not isinstance(self.width_mult, (int, float)) \
                or not 0 < self.width_mult <= MAX_WIDTH_MULT:
            raise ConfigError(f"width_mult must be a number in (0, {MAX_WIDTH_MULT:g}], got {self.width_mult!r}")


def build_backbone(config: BackboneConfig | dict | str, **overrides) -> Backbone:
    """Build a backbone from a :class:`BackboneConfig`, a dict, or a name plus keyword overrides."""
    if isinstance(config, str):
        config = BackboneConfig(name=config, **overrides)
    elif isinstance(config, dict):
        config = from_dict(BackboneConfig, {**config, **overrides}, "backbone")
    elif overrides:
        config = from_dict(BackboneConfig, {**to_dict(config), **overrides}, "backbone")
    kwargs = dict(group=config.group, width_mult=config.width_mult, in_channels=config.in_channels)
    if config.name in STEERABLE_BACKBONES:
        from .steerable import E2AuthorsCNNBasic, E2CNNBasic, E2ResNet22

        cls = {"e2-cnnbasic": E2CNNBasic, "e2-authors-cnnbasic": E2AuthorsCNNBasic,
               "e2-resnet22": E2ResNet22}[config.name]
        with warnings.catch_warnings():
            # e2cnn 0.2.3 builds its filter bases with a uint8 mask, which torch deprecates;
            # harmless, but it would print on every run of every tool that builds RE-SiamNet
            warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8", category=UserWarning)
            return cls(**kwargs)
    return BACKBONES[config.name](**kwargs)


__all__ = [
    "AuthorsCNNBasic", "Backbone", "BackboneConfig", "BackboneOutput", "BatchTransform", "CNNBasic",
    "GroupElement", "GroupSpec", "GroupSpecError", "IENLoss", "IENLossOutput", "ResNet18",
    "ResNet22", "VGG", "build_backbone", "double_batch", "group_elements",
    "group_max_pool", "layer_channels", "NanoTrackV3Backbone", "parse_group", "sample_transform",
]
