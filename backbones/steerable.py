"""e2cnn steerable counterparts of the small CNN, the authors' Rot-MNIST CNN and ResNet-22 (the baselines).

Each layer holds regular fields of the cyclic group C_N, so a field's
N channels are consecutive, exactly like the IEN networks' orientation groups: the same
group max-pool, loss and diagnostics apply. Same interface as :mod:`backbones.cnn`; outputs are plain
tensors. In eval mode R2Conv caches its expanded filters, so inference costs a plain convolution.
"""
from __future__ import annotations

import torch
from e2cnn import gspaces
from e2cnn import nn as enn
from torch import nn

from .cnn import AuthorsCNNBasic, Backbone, BackboneOutput, CNNBasic, ResNet22, layer_channels
from .groups import GroupSpec, GroupSpecError, parse_group


def _gspace(spec: GroupSpec):
    if spec.is_plain or spec.is_heterogeneous or spec.flips:
        # e2cnn 0.2.3's reflection groups call np.array(copy=False), which numpy 2 rejects.
        raise GroupSpecError(
            f"e2cnn backbones need a rotation group C_N (R4, R8, R16), got {spec.name}"
        )
    return gspaces.Rot2dOnR2(spec.rotations)


class _Steerable(Backbone):
    def _init_space(self, group, in_channels: int):
        self.spec = parse_group(group)
        self.gspace = _gspace(self.spec)
        self.group_order = self.gspace.fibergroup.order()
        self.in_type = enn.FieldType(self.gspace, [self.gspace.trivial_repr] * in_channels)

    def regular(self, channels: int) -> enn.FieldType:
        return enn.FieldType(self.gspace, [self.gspace.regular_repr] * (channels // self.group_order))

    def _wrap(self, x: torch.Tensor) -> enn.GeometricTensor:
        return enn.GeometricTensor(x, self.in_type)


def _conv_bn_relu(tin, tout, kernel=3, stride=1, padding=1) -> enn.SequentialModule:
    return enn.SequentialModule(
        enn.R2Conv(tin, tout, kernel, stride=stride, padding=padding, bias=False),
        enn.InnerBatchNorm(tout),
        enn.ReLU(tout, inplace=True),
    )


class E2CNNBasic(_Steerable):
    """Steerable twin of :class:`backbones.cnn.CNNBasic` (same layer widths as its R_N version)."""

    def __init__(self, group="R4", width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        self._init_space(group, in_channels)
        widths = [
            layer_channels(self.spec, r8 * width_mult, r4 * width_mult)
            for r8, r4 in zip(CNNBasic.R8_WIDTHS, CNNBasic.R4_WIDTHS)
        ]
        layers, tin = [], self.in_type
        for cout in widths:
            tout = self.regular(cout)
            layers.append(_conv_bn_relu(tin, tout))
            tin = tout
        self.convs = nn.ModuleList(layers)
        self.pools = nn.ModuleList(
            [enn.PointwiseMaxPool(layers[i].out_type, 2) for i in (1, 3)]
        )
        self.out_channels = tin.size
        self.watched_names = [f"conv{i + 1}" for i in range(len(widths))]
        self.total_stride = 4
        self.canonical_size = 64

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        g = self._wrap(x)
        watched = []
        for i, conv in enumerate(self.convs):
            g = conv(g)
            watched.append(g.tensor)
            if i in (1, 3):
                g = self.pools[0 if i == 1 else 1](g)
        return BackboneOutput(g.tensor, watched)


class E2AuthorsCNNBasic(_Steerable):
    """Steerable twin of :class:`backbones.cnn.AuthorsCNNBasic`: the same kernels (7x7, then 5x5), paddings,
    widths, pooling and ELU, with regular C_N fields (e2cnn's ``ELU`` and ``InnerBatchNorm``). The trainer's
    ``init = "xavier"`` reaches only its head: e2cnn initialises the steerable filters itself."""

    def __init__(self, group="R4", width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        self._init_space(group, in_channels)
        layers, tin = [], self.in_type
        for width, kernel, padding in zip(AuthorsCNNBasic.WIDTHS, AuthorsCNNBasic.KERNELS, AuthorsCNNBasic.PADDINGS):
            tout = self.regular(layer_channels(self.spec, width * width_mult, width * width_mult))
            layers.append(enn.SequentialModule(
                enn.R2Conv(tin, tout, kernel, padding=padding, bias=False),
                enn.InnerBatchNorm(tout),
                enn.ELU(tout, inplace=True),
            ))
            tin = tout
        self.convs = nn.ModuleList(layers)
        self.pools = nn.ModuleList([enn.PointwiseMaxPool(layers[i].out_type, 2) for i in (1, 3)])
        self.out_channels = tin.size
        self.watched_names = [f"conv{i + 1}" for i in range(len(layers))]
        self.total_stride = 4
        self.canonical_size = 28

    forward = E2CNNBasic.forward      # the same six-layer pass: pooling after the 2nd and 4th conv


class E2CIRUnit(enn.EquivariantModule):
    """Steerable cropping-inside-residual bottleneck unit."""

    def __init__(self, tin, tmid, tout, downsample: bool = False):
        super().__init__()
        self.in_type, self.out_type = tin, tout
        self.branch = enn.SequentialModule(
            enn.R2Conv(tin, tmid, 1, bias=False),
            enn.InnerBatchNorm(tmid),
            enn.ReLU(tmid, inplace=True),
            enn.R2Conv(tmid, tmid, 3, padding=1, bias=False),
            enn.InnerBatchNorm(tmid),
            enn.ReLU(tmid, inplace=True),
            enn.R2Conv(tmid, tout, 1, bias=False),
            enn.InnerBatchNorm(tout),
        )
        self.shortcut = (
            enn.SequentialModule(enn.R2Conv(tin, tout, 1, bias=False), enn.InnerBatchNorm(tout))
            if tin != tout
            else None
        )
        self.relu = enn.ReLU(tout, inplace=True)
        self.pool = enn.PointwiseMaxPool(tout, 2) if downsample else None

    def forward(self, x: enn.GeometricTensor) -> enn.GeometricTensor:
        res = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.branch(x) + res)
        out = enn.GeometricTensor(out.tensor[:, :, 1:-1, 1:-1], out.type)
        return self.pool(out) if self.pool is not None else out

    def evaluate_output_shape(self, input_shape):
        b, _, h, w = input_shape
        h, w = h - 2, w - 2
        if self.pool is not None:
            h, w = h // 2, w // 2
        return b, self.out_type.size, h, w


class E2ResNet22(_Steerable):
    """Steerable twin of :class:`backbones.cnn.ResNet22` (RE-SiamNet's backbone), total stride 8."""

    def __init__(self, group="R8", width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        self._init_space(group, in_channels)
        ch = lambda c: self.regular(layer_channels(self.spec, c * width_mult))  # noqa: E731
        tstem = ch(ResNet22.STEM)
        tmid1, tmid2 = ch(ResNet22.MID[0]), ch(ResNet22.MID[1])
        tout1, tout2 = ch(ResNet22.OUT[0]), ch(ResNet22.OUT[1])
        self.stem = enn.SequentialModule(
            enn.R2Conv(self.in_type, tstem, 7, stride=2, padding=0, bias=False),
            enn.InnerBatchNorm(tstem),
            enn.ReLU(tstem, inplace=True),
            enn.PointwiseMaxPool(tstem, 3, stride=2),
        )
        self.layer1 = enn.SequentialModule(
            E2CIRUnit(tstem, tmid1, tout1), E2CIRUnit(tout1, tmid1, tout1), E2CIRUnit(tout1, tmid1, tout1)
        )
        self.layer2 = enn.SequentialModule(
            E2CIRUnit(tout1, tmid2, tout2, downsample=True),
            *[E2CIRUnit(tout2, tmid2, tout2) for _ in range(3)],
        )
        self.out_channels = tout2.size
        self.watched_names = ["stem", "layer1", "layer2"]
        self.total_stride = 8
        self.canonical_size = 127

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        s = self.stem(self._wrap(x))
        l1 = self.layer1(s)
        l2 = self.layer2(l1)
        return BackboneOutput(l2.tensor, [s.tensor, l1.tensor, l2.tensor])
