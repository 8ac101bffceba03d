"""The MobileNetV3-style backbone of NanoTrack v3 (HonglinChu/SiamTrackers), with orientation groups.

Same graph as the author's ``nanotrackv3_backbone.onnx`` (BatchNorm already folded into the
convolutions, so every conv has a bias): a stride-2 stem, nine inverted-residual blocks with
squeeze-and-excitation, 96 channels at stride 16 (255 px -> 16x16, 127 px -> 8x8).
``tracker.nanotrack.import_nanotrack_v3`` fills it from the ONNX file; trained further with the IEN
loss, its channels form orientation groups of the config's ``group`` (the block widths 24, 40, 48
and 96 split into groups of 4 or 8).

Input: RGB in 0..255, not normalised (the importer reverses the stem's channel order: the author's
network reads BGR).
"""
from __future__ import annotations

import torch
from torch import nn

from common.config import ConfigError

from .cnn import Backbone, BackboneOutput
from .groups import parse_group

# (expanded channels, out channels, kernel, stride, squeeze-excite channels (0: none), hard-swish)
V3_BLOCKS = (
    (16, 16, 3, 2, 8, False),
    (72, 24, 3, 2, 0, False),
    (88, 24, 3, 1, 0, False),
    (96, 40, 5, 2, 24, True),
    (240, 40, 5, 1, 64, True),
    (240, 40, 5, 1, 64, True),
    (120, 48, 5, 1, 32, True),
    (144, 48, 5, 1, 40, True),
    (288, 96, 5, 1, 72, True),
)
STEM_CHANNELS = 16


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, squeezed)
        self.fc2 = nn.Linear(squeezed, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3))
        s = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class InvertedResidual(nn.Module):
    """[1x1 expand, act] -> depthwise k x k -> (SE) -> act -> 1x1 project (+ input when shapes agree).

    As in the author's network: without an expansion conv the activation comes before the SE;
    with one, after it."""

    def __init__(self, cin: int, hidden: int, cout: int, kernel: int, stride: int, se: int, hswish: bool):
        super().__init__()
        self.act = nn.Hardswish() if hswish else nn.ReLU()
        self.expand = None if hidden == cin else nn.Conv2d(cin, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden)
        self.se = SqueezeExcite(hidden, se) if se else None
        self.project = nn.Conv2d(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.act(self.expand(x))
        y = self.depthwise(y)
        if self.expand is None:
            y = self.act(y)
            if self.se is not None:
                y = self.se(y)
        else:
            if self.se is not None:
                y = self.se(y)
            y = self.act(y)
        y = self.project(y)
        return x + y if self.residual else y


class NanoTrackV3Backbone(Backbone):
    """NanoTrack v3's backbone; watched layers: the stride-8 block, the stride-16 40-channel stage
    and the output (the maps the IEN loss makes rotate with the input)."""

    WATCHED = {2: "block3", 5: "block6", 8: "block9"}

    def __init__(self, group="R8", width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        self.spec = parse_group(group)
        if width_mult != 1.0 or in_channels != 3:
            raise ConfigError("the nanotrack-v3 backbone has the author's fixed widths: width_mult 1, 3 input channels")
        for _, cout, *_ in V3_BLOCKS:
            if not self.spec.is_plain and cout % self.spec.channel_unit:
                raise ConfigError(f"group {group}: nanotrack-v3's block widths (24, 40, 48, 96) do not split "
                                  f"into its orientation groups; use R4 or R8")
        self.stem = nn.Conv2d(in_channels, STEM_CHANNELS, 3, 2, 1)
        self.stem_act = nn.Hardswish()
        blocks, cin = [], STEM_CHANNELS
        for hidden, cout, kernel, stride, se, hswish in V3_BLOCKS:
            blocks.append(InvertedResidual(cin, hidden, cout, kernel, stride, se, hswish))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = cin
        self.watched_names = list(self.WATCHED.values())
        self.total_stride = 16
        self.canonical_size = 257          # 1 mod 16: every stride-2 conv samples a centred grid

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        x = self.stem_act(self.stem(x))
        watched = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.WATCHED:
                watched.append(x)
        return BackboneOutput(x, watched)
