"""Correlation heads of the Siamese trackers.

A template batch of 1 broadcasts over the search batch (the tracker: one template, several
scales); a template batch equal to the search batch pairs them one to one (training pairs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["xcorr", "xcorr_bank", "xcorr_gemm", "xcorr_depthwise", "SiamFCHead", "DepthwiseRPNHead"]


def _check_batches(z: torch.Tensor, x: torch.Tensor) -> None:
    if z.shape[1] != x.shape[1]:
        raise ValueError(f"template has {z.shape[1]} channels, search {x.shape[1]}")
    if z.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"template batch {z.shape[0]} must be 1 or the search batch {x.shape[0]}")


def xcorr(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Full cross-correlation: z (1|B, C, h, w), x (B, C, H, W) -> (B, 1, H-h+1, W-w+1)."""
    _check_batches(z, x)
    if z.shape[0] == 1:
        return F.conv2d(x, z)
    b, c, hx, wx = x.shape
    out = F.conv2d(x.reshape(1, b * c, hx, wx), z, groups=b)
    return out.view(b, 1, out.shape[-2], out.shape[-1])


def xcorr_bank(z_bank: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Every template of a bank against every search image: z (N, C, h, w), x (B, C, H, W) -> (B, N, R, R)."""
    if z_bank.shape[1] != x.shape[1]:
        raise ValueError(f"template bank has {z_bank.shape[1]} channels, search {x.shape[1]}")
    return F.conv2d(x, z_bank)


def xcorr_gemm(z_bank: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """:func:`xcorr_bank` as one GEMM and a shifted sum (conv2d is slow for one output channel).

    y[k] = z[:, k] . x for every template cell k (an (N h w, C) x (C, H W) product), then
    out = sum_k y[k] shifted by k, one strided view summed over k. The same sums in another order
    (equal up to float rounding). On the CPU at tracking sizes it is 4-7x faster than conv2d for
    one template (the upright trackers' every frame) and about as fast for a bank of 8 (its GEMM
    has h*w rows per template, over every search position): ``tools/benchmark_fps.py`` times both.
    """
    if z_bank.shape[1] != x.shape[1]:
        raise ValueError(f"template bank has {z_bank.shape[1]} channels, search {x.shape[1]}")
    n, c, h, w = z_bank.shape
    b, _, hx, wx = x.shape
    if h > hx or w > wx:
        raise ValueError(f"template {h}x{w} is larger than the search map {hx}x{wx}")
    rows, cols = hx - h + 1, wx - w + 1
    cells = z_bank.permute(0, 2, 3, 1).reshape(n * h * w, c)
    y = torch.matmul(cells, x.reshape(b, c, hx * wx)).view(b, n, h, w, hx, wx)
    sb, sn, sh, sw, sy, sx = y.stride()
    # element [.., i, j, r, s] of the view is y[.., i, j, i + r, j + s]
    return y.as_strided((b, n, h, w, rows, cols), (sb, sn, sh + sy, sw + sx, sy, sx)).sum((2, 3))


def xcorr_depthwise(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Channel-wise cross-correlation: z (1|B, C, h, w), x (B, C, H, W) -> (B, C, R, R)."""
    _check_batches(z, x)
    b, c, hx, wx = x.shape
    if z.shape[0] == 1:
        return F.conv2d(x, z.reshape(c, 1, z.shape[2], z.shape[3]), groups=c)
    out = F.conv2d(x.reshape(1, b * c, hx, wx), z.reshape(b * c, 1, z.shape[2], z.shape[3]), groups=b * c)
    return out.view(b, c, out.shape[-2], out.shape[-1])


class SiamFCHead(nn.Module):
    """SiamFC response: ``out_scale * (z ⋆ x) + bias``.

    The learnable bias is the original SiamFC "adjust" layer's offset. It matters because ResNet
    features end in a ReLU: without it every logit would be >= 0 and the balanced BCE could not
    push negatives below 0.5. It shifts every score equally, so tracking (argmax) ignores it.
    """

    def __init__(self, out_scale: float = 0.001):
        super().__init__()
        self.out_scale = float(out_scale)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return xcorr(z, x) * self.out_scale + self.bias

    def bank(self, z_bank: torch.Tensor, x: torch.Tensor, gemm: bool = False) -> torch.Tensor:
        """Responses (B, N, R, R) of N templates (e.g. rotated copies) against B search images
        (``gemm``: by :func:`xcorr_gemm` instead of conv2d)."""
        return (xcorr_gemm if gemm else xcorr_bank)(z_bank, x) * self.out_scale + self.bias


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _DepthwiseBranch(nn.Module):
    """pysot's DepthwiseXCorr: 3x3 convs on both sides, depthwise correlation, 1x1 conv head."""

    def __init__(self, channels: int, hidden: int, out_channels: int):
        super().__init__()
        self.conv_kernel = _conv_bn_relu(channels, hidden, 3)
        self.conv_search = _conv_bn_relu(channels, hidden, 3)
        self.head = nn.Sequential(
            nn.Conv2d(hidden, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def kernel(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_kernel(z)

    def from_kernel(self, kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.head(xcorr_depthwise(kernel, self.conv_search(x)))


class DepthwiseRPNHead(nn.Module):
    """SiamRPN head (depthwise correlation, pysot ``DepthwiseRPN``): cls (B, 2A, R, R), loc (B, 4A, R, R).

    Channels are laid out ``(class, anchor)`` and ``(coordinate, anchor)``. The template side
    (:meth:`kernels`) is separable so that the tracker computes it once at init.
    """

    def __init__(self, channels: int, num_anchors: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or channels
        self.num_anchors = num_anchors
        self.cls = _DepthwiseBranch(channels, hidden, 2 * num_anchors)
        self.loc = _DepthwiseBranch(channels, hidden, 4 * num_anchors)

    def kernels(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The template side, computed once per template: (cls kernel, loc kernel)."""
        return self.cls.kernel(z), self.loc.kernel(z)

    def from_kernels(self, kernels, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls.from_kernel(kernels[0], x), self.loc.from_kernel(kernels[1], x)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_kernels(self.kernels(z), x)
