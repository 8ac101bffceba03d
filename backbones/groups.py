"""Orientation-group specifications and group max-pooling.

A layer's channels are split into groups of ``k`` consecutive channels (one group per "orientation
field"). A homogeneous spec uses one ``k`` for every group (R4: k=4, R8: k=8, R4R: k=8 = 4 rotations
x 2 flips). A heterogeneous spec splits the channels into parts by a ratio and gives each part its
own ``k`` ("R8-4-2-1": ratio 32:8:2:1, k 8,4,2,1). ``P(f)`` is the max over each group.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

# Ratios of the heterogeneous specs used by the paper's authors (the IEN paper; docs/equivariance.md).
KNOWN_RATIOS = {
    (8, 4, 2, 1): (32, 8, 2, 1),
    (8, 4, 2): (8, 2, 1),
    (4, 2, 1): (8, 2, 1),
}


class GroupSpecError(ValueError):
    """A group specification string that cannot be parsed or channels that do not fit it."""


@dataclass(frozen=True)
class GroupSpec:
    """A parsed group specification.

    name: canonical string ("R4", "R8", "R4R", "R8-4-2-1", "none").
    sizes: group size k of each part; ratios: relative channel share of each part.
    rotations: order N of the rotation group the transformations T are drawn from (1 = none).
    flips: whether T also contains reflections (R4R).
    """

    name: str
    sizes: tuple[int, ...]
    ratios: tuple[int, ...]
    rotations: int
    flips: bool = False

    @property
    def is_plain(self) -> bool:
        return self.rotations == 1 and not self.flips

    @property
    def is_heterogeneous(self) -> bool:
        return len(self.sizes) > 1

    @property
    def channel_unit(self) -> int:
        """Smallest channel count that splits into whole groups in every part."""
        total = sum(self.ratios)
        for m in range(1, 1 + max(self.sizes)):
            if all((m * r) % k == 0 for r, k in zip(self.ratios, self.sizes)):
                return m * total
        raise AssertionError("unreachable: m = lcm of sizes always works")

    def round_channels(self, channels: float) -> int:
        """Nearest valid channel count (at least one unit)."""
        unit = self.channel_unit
        return max(unit, int(round(channels / unit)) * unit)

    def split(self, channels: int) -> list[tuple[int, int]]:
        """[(part_channels, k), ...] for a layer of ``channels`` channels."""
        unit = self.channel_unit
        if channels % unit:
            raise GroupSpecError(
                f"{channels} channels do not split into {self.name} groups "
                f"(need a multiple of {unit})"
            )
        m = channels // sum(self.ratios)
        return [(m * r, k) for r, k in zip(self.ratios, self.sizes)]

    def pooled_channels(self, channels: int) -> int:
        return sum(c // k for c, k in self.split(channels))

    def __str__(self) -> str:
        return self.name


def parse_group(spec: str | GroupSpec | None) -> GroupSpec:
    """Parse "R4", "R8", "R16", "R4R", "R8-4-2-1", "R8-4-2:8,2,1" or "none"/None.

    Heterogeneous specs take the authors' ratios when known; others must give them after a colon.
    """
    if isinstance(spec, GroupSpec):
        return spec
    if spec is None:
        spec = "none"
    if not isinstance(spec, str):
        raise GroupSpecError(f"group spec must be a string, got {type(spec).__name__}")
    text = spec.strip()
    if text.lower() in ("none", "plain", "", "r1"):
        return GroupSpec("none", (1,), (1,), rotations=1)
    m = re.fullmatch(r"R(\d+)R", text, flags=re.IGNORECASE)
    if m:
        n = int(m.group(1))
        if n != 4:
            raise GroupSpecError(f"unsupported group spec {spec!r}: only R4R has flips")
        return GroupSpec("R4R", (8,), (1,), rotations=4, flips=True)
    m = re.fullmatch(r"R(\d+(?:-\d+)*)(?::(\d+(?:,\d+)*))?", text, flags=re.IGNORECASE)
    if not m:
        raise GroupSpecError(
            f"malformed group spec {spec!r}: expected e.g. R4, R8, R4R, R8-4-2-1, "
            "R8-4-2:8,2,1 or none"
        )
    sizes = tuple(int(s) for s in m.group(1).split("-"))
    for k in sizes:
        if k < 1 or k & (k - 1) or k > 64:
            raise GroupSpecError(
                f"malformed group spec {spec!r}: group sizes must be powers of two up to 64"
            )
    if list(sizes) != sorted(sizes, reverse=True) or len(set(sizes)) != len(sizes):
        raise GroupSpecError(
            f"malformed group spec {spec!r}: group sizes must strictly decrease (e.g. R8-4-2-1)"
        )
    if m.group(2):
        ratios = tuple(int(r) for r in m.group(2).split(","))
        if len(ratios) != len(sizes) or min(ratios) < 1:
            raise GroupSpecError(
                f"malformed group spec {spec!r}: give one positive ratio per group size"
            )
    elif len(sizes) == 1:
        ratios = (1,)
    elif sizes in KNOWN_RATIOS:
        ratios = KNOWN_RATIOS[sizes]
    else:
        raise GroupSpecError(
            f"heterogeneous spec {spec!r} has no known channel ratios: append them, "
            f"e.g. {text}:{','.join(str(2 ** (len(sizes) - i)) for i in range(len(sizes)))}"
        )
    name = "R" + "-".join(str(k) for k in sizes)
    if m.group(2) and (len(sizes) == 1 or KNOWN_RATIOS.get(sizes) != ratios):
        name += ":" + ",".join(str(r) for r in ratios)
    if sizes == (1,):
        return GroupSpec("none", (1,), (1,), rotations=1)
    return GroupSpec(name, sizes, ratios, rotations=sizes[0])


def group_max_pool(x: torch.Tensor, spec: GroupSpec | str) -> torch.Tensor:
    """P(f): max over each group of consecutive channels. (B, C, H, W) -> (B, C', H, W)."""
    spec = parse_group(spec)
    if spec.is_plain:
        return x
    b, c, h, w = x.shape
    parts = spec.split(c)
    if len(parts) == 1:
        k = parts[0][1]
        return x.view(b, c // k, k, h, w).amax(dim=2)
    pooled, start = [], 0
    for channels, k in parts:
        part = x[:, start : start + channels]
        pooled.append(part.reshape(b, channels // k, k, h, w).amax(dim=2))
        start += channels
    return torch.cat(pooled, dim=1)


def rotation_angles(spec: GroupSpec) -> list[float]:
    """The rotation angles (degrees) of the spec's rotation group."""
    return [i * 360.0 / spec.rotations for i in range(spec.rotations)]


def is_multiple_of_90(angle: float) -> bool:
    return math.isclose((angle % 90.0 + 90.0) % 90.0, 0.0, abs_tol=1e-9) or math.isclose(
        angle % 90.0, 90.0, abs_tol=1e-9
    )
