"""Plain CNN backbones whose channels form orientation groups (the IEN networks).

Every backbone returns a :class:`BackboneOutput`: its output feature map and the list of watched
feature maps the IEN loss looks at. Channel counts come from the group spec (:func:`layer_channels`):
homogeneous specs use the paper's widths, heterogeneous specs keep the number of orientation fields
of their homogeneous twin with cheaper fields, which is where the paper's "over 30% fewer channels"
comes from (R8 192 channels -> R8-4-2-1 129).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .groups import GroupSpec, parse_group


class BackboneOutput(NamedTuple):
    out: torch.Tensor
    watched: list[torch.Tensor]


def layer_channels(spec: GroupSpec, r8_channels: float, r4_channels: float | None = None) -> int:
    """Channels of a layer whose R8 (and optionally R4) width is given.

    Plain: the R8 width. Homogeneous Rk: the R4 width for k=4 when given, else the R8 width, rounded
    to a multiple of k. Heterogeneous: as many orientation fields as its homogeneous twin R<kmax>.
    """
    if spec.is_plain:
        return max(1, int(round(r8_channels)))
    if not spec.is_heterogeneous:
        k = spec.sizes[0]
        base = r4_channels if (k == 4 and r4_channels is not None) else r8_channels
        return k * max(1, int(round(base / k)))
    kmax = spec.sizes[0]
    twin = layer_channels(parse_group(f"R{kmax}"), r8_channels, r4_channels)
    fields = twin / kmax
    unit = spec.channel_unit
    fields_per_unit = spec.pooled_channels(unit)
    return unit * max(1, int(round(fields / fields_per_unit)))


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Backbone(nn.Module):
    """Common attributes: ``spec``, ``out_channels``, ``watched_names``, ``total_stride``,
    ``canonical_size`` (an input size at which every strided op is mirror-symmetric, so that
    exactly equivariant filters give exactly equivariant maps for 90° rotations)."""

    spec: GroupSpec
    out_channels: int
    watched_names: list[str]
    total_stride: int
    canonical_size: int

    def aligned_size(self, nominal: int) -> int:
        """Smallest input size >= ``nominal`` congruent to ``canonical_size`` modulo ``total_stride``:
        there every strided op samples a grid centred on the image, so 90° rotations of the input
        rotate every feature map exactly (ResNet-18: odd sizes 8k+1, e.g. 65; VGG: multiples of 16)."""
        return nominal + (self.canonical_size - nominal) % self.total_stride

    def channel_counts(self) -> list[int]:
        """Output channels of each conv layer, in order (for the parameter/channel tables)."""
        counts = []
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                counts.append(m.out_channels)
            elif type(m).__name__ == "R2Conv":  # e2cnn steerable convolution
                counts.append(m.out_type.size)
        return counts


class CNNBasic(Backbone):
    """Six 3x3 conv layers (two per stage) with 2x2 max-pooling between stages."""

    R8_WIDTHS = (64, 64, 128, 128, 256, 256)
    R4_WIDTHS = (48, 48, 96, 96, 192, 192)

    def __init__(self, group="R4", width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        self.spec = parse_group(group)
        widths = [
            layer_channels(self.spec, r8 * width_mult, r4 * width_mult)
            for r8, r4 in zip(self.R8_WIDTHS, self.R4_WIDTHS)
        ]
        layers, cin = [], in_channels
        for i, cout in enumerate(widths):
            layers.append(conv_bn_relu(cin, cout))
            cin = cout
        self.convs = nn.ModuleList(layers)
        self.pool = nn.MaxPool2d(2)
        self.out_channels = cin
        self.watched_names = [f"conv{i + 1}" for i in range(len(widths))]
        self.total_stride = 4
        self.canonical_size = 64

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        watched = []
        for i, conv in enumerate(self.convs):
            x = conv(x)
            watched.append(x)
            if i in (1, 3):
                x = self.pool(x)
        return BackboneOutput(x, watched)


class AuthorsCNNBasic(Backbone):
    """The IEN authors' Rot-MNIST network (transmuteAI/implicit-networks, ``CNNBasic``).

    Six bias-free convolutions, BatchNorm and ELU: 7x7 (padding 1) then five 5x5 (padding 2, the last
    unpadded), 2x2 max-pooling after the 2nd and 4th; R4 widths 128, 192, 256, 256, 384, 512 (the
    heterogeneous R4-2-1 keeps the fields: 88, 132, ..., 352). At 28 px the maps are 24, 12, 6 and 2
    px: every pooling tiles its input exactly (``canonical_size`` 28). Their classifier head and
    Xavier init are options of the classification trainer (``head``, ``init``).
    """

    WIDTHS = (128, 192, 256, 256, 384, 512)
    KERNELS = (7, 5, 5, 5, 5, 5)
    PADDINGS = (1, 2, 2, 2, 2, 0)

    def __init__(self, group="R4", width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        self.spec = parse_group(group)
        layers, cin = [], in_channels
        for width, kernel, padding in zip(self.WIDTHS, self.KERNELS, self.PADDINGS):
            cout = layer_channels(self.spec, width * width_mult, width * width_mult)
            layers.append(nn.Sequential(
                nn.Conv2d(cin, cout, kernel, 1, padding, bias=False), nn.BatchNorm2d(cout), nn.ELU(inplace=True)
            ))
            cin = cout
        self.convs = nn.ModuleList(layers)
        self.pool = nn.MaxPool2d(2)
        self.out_channels = cin
        self.watched_names = [f"conv{i + 1}" for i in range(len(layers))]
        self.total_stride = 4
        self.canonical_size = 28

    forward = CNNBasic.forward      # the same six-layer pass: pooling after the 2nd and 4th conv


class VGG(Backbone):
    """VGG with 8 conv layers (VGG-11 layout) and 2x2 max-pooling; widths of the paper (the IEN paper; docs/equivariance.md)."""

    LAYOUT = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8)
    R8_FIRST, R4_FIRST = 200, 144

    def __init__(self, group="R4", width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        self.spec = parse_group(group)
        blocks, cin, names = [], in_channels, []
        pool_after = []
        for item in self.LAYOUT:
            if item == "M":
                pool_after[-1] = True
                continue
            cout = layer_channels(
                self.spec, self.R8_FIRST * item * width_mult, self.R4_FIRST * item * width_mult
            )
            blocks.append(conv_bn_relu(cin, cout))
            pool_after.append(False)
            names.append(f"conv{len(blocks)}")
            cin = cout
        self.convs = nn.ModuleList(blocks)
        self.pool_after = pool_after
        self.pool = nn.MaxPool2d(2)
        self.out_channels = cin
        self.watched_names = names
        self.total_stride = 16
        self.canonical_size = 64

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        watched = []
        for conv, pool in zip(self.convs, self.pool_after):
            x = conv(x)
            watched.append(x)
            if pool:
                x = self.pool(x)
        return BackboneOutput(x, watched)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(Backbone):
    """ResNet-18 (basic blocks [2,2,2,2]) with a 3x3 stride-1 stem for small images (64 px and less)."""

    R8_FIRST, R4_FIRST = 192, 136

    def __init__(self, group="R4", width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        self.spec = parse_group(group)
        widths = [
            layer_channels(self.spec, self.R8_FIRST * m * width_mult, self.R4_FIRST * m * width_mult)
            for m in (1, 2, 4, 8)
        ]
        self.stem = conv_bn_relu(in_channels, widths[0])
        stages, cin = [], widths[0]
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out_channels = cin
        self.watched_names = ["stem", "layer1", "layer2", "layer3", "layer4"]
        self.total_stride = 8
        self.canonical_size = 65

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        x = self.stem(x)
        watched = [x]
        for stage in self.stages:
            x = stage(x)
            watched.append(x)
        return BackboneOutput(x, watched)


class CIRUnit(nn.Module):
    """Cropping-inside-residual bottleneck unit (SiamDW): the padded border is cropped after the
    residual addition, so features do not depend on absolute position; ``downsample`` adds the
    CIR-D 2x2 max-pooling after the crop."""

    def __init__(self, cin: int, mid: int, cout: int, downsample: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
            if cin != cout
            else nn.Identity()
        )
        self.pool = nn.MaxPool2d(2) if downsample else None

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.relu(out + self.shortcut(x))[:, :, 1:-1, 1:-1]
        return self.pool(out) if self.pool is not None else out


class ResNet22(Backbone):
    """Tracking ResNet-22 of CIR units (SiamDW CIResNet-22 layout), total stride 8.

    127x127 -> 5x5 and 255x255 -> 21x21 feature maps (a 17x17 SiamFC response). Every strided op
    tiles its input exactly at those sizes, so 90° rotations of the input map to rotations of the
    feature grid.
    """

    STEM, MID, OUT = 64, (64, 128), (256, 512)

    def __init__(self, group="R8", width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        self.spec = parse_group(group)
        ch = lambda c: layer_channels(self.spec, c * width_mult)  # noqa: E731
        stem = ch(self.STEM)
        mid1, mid2 = ch(self.MID[0]), ch(self.MID[1])
        out1, out2 = ch(self.OUT[0]), ch(self.OUT[1])
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 7, 2, 0, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.layer1 = nn.Sequential(
            CIRUnit(stem, mid1, out1), CIRUnit(out1, mid1, out1), CIRUnit(out1, mid1, out1)
        )
        self.layer2 = nn.Sequential(
            CIRUnit(out1, mid2, out2, downsample=True),
            *[CIRUnit(out2, mid2, out2) for _ in range(3)],
        )
        self.out_channels = out2
        self.watched_names = ["stem", "layer1", "layer2"]
        self.total_stride = 8
        self.canonical_size = 127

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        s = self.stem(x)
        l1 = self.layer1(s)
        l2 = self.layer2(l1)
        return BackboneOutput(l2, [s, l1, l2])
