"""The transformations T of the IEN loss, applied per sample to image or feature batches.

Convention: angles are counter-clockwise as seen on screen (y axis pointing down), and
``T x = flip(rotate(x, angle))`` then scaled; ``T⁻¹`` undoes the flip, then rotates back (the IEN paper; docs/equivariance.md).
Multiples of 90° use exact ``torch.rot90``; other angles and scales use bilinear ``grid_sample``, for
which :meth:`BatchTransform.valid_mask` tells which pixels are comparable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .groups import GroupSpec, parse_group

FLIPS = (None, "h", "v")


@dataclass(frozen=True)
class GroupElement:
    """One transformation: rotate by ``angle`` degrees (CCW), then flip ('h', 'v' or None), then scale."""

    angle: float = 0.0
    flip: str | None = None
    scale: float = 1.0

    def __post_init__(self):
        if self.flip not in FLIPS:
            raise ValueError(f"flip must be one of {FLIPS}, got {self.flip!r}")
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    @property
    def quarter_turns(self) -> int | None:
        """k if the angle is k·90° exactly, else None."""
        q = self.angle / 90.0
        return int(round(q)) % 4 if abs(q - round(q)) < 1e-9 else None

    @property
    def is_exact(self) -> bool:
        """True when T is a pixel permutation (no interpolation)."""
        return self.quarter_turns is not None and self.scale == 1.0

    def __str__(self) -> str:
        s = f"rot{self.angle:g}"
        if self.flip:
            s += f"+flip{self.flip}"
        if self.scale != 1.0:
            s += f"+scale{self.scale:g}"
        return s


def _flip(x: torch.Tensor, flip: str | None) -> torch.Tensor:
    if flip == "h":
        return torch.flip(x, dims=(-1,))
    if flip == "v":
        return torch.flip(x, dims=(-2,))
    return x


def _warp(x: torch.Tensor, angle: float, scale: float) -> torch.Tensor:
    """Rotate CCW by ``angle`` degrees and zoom by ``scale`` about the centre (bilinear, zero fill)."""
    k = GroupElement(angle).quarter_turns
    if k is not None and scale == 1.0:
        return torch.rot90(x, k, dims=(-2, -1)) if k else x
    h, w = x.shape[-2:]
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    # output pixel p_o samples input at R⁻¹ p_o / scale, in pixel units (y down), then normalized
    inv = torch.tensor([[c, -s], [s, c]], dtype=torch.float64) / scale
    d = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)
    mat = inv * d[None, :] / d[:, None]  # D⁻¹ R⁻¹ D
    theta = torch.zeros(1, 2, 3, dtype=x.dtype, device=x.device)
    theta[0, :, :2] = mat.to(x.dtype)
    lead = x.shape[:-3]
    x4 = x.reshape(-1, *x.shape[-3:])
    grid = F.affine_grid(theta.expand(x4.shape[0], 2, 3), list(x4.shape), align_corners=False)
    out = F.grid_sample(x4, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(*lead, *out.shape[-3:])


def apply_element(x: torch.Tensor, g: GroupElement) -> torch.Tensor:
    """T x for one element, on (..., C, H, W)."""
    y = _warp(x, g.angle, 1.0) if g.angle else x
    y = _flip(y, g.flip)
    return _warp(y, 0.0, g.scale) if g.scale != 1.0 else y


def invert_element(y: torch.Tensor, g: GroupElement) -> torch.Tensor:
    """T⁻¹ y for one element: unscale, undo the flip, rotate back."""
    x = _warp(y, 0.0, 1.0 / g.scale) if g.scale != 1.0 else y
    x = _flip(x, g.flip)
    return _warp(x, -g.angle, 1.0) if g.angle else x


class BatchTransform:
    """A group element per sample of a batch, applied with one op per distinct element."""

    def __init__(self, elements: list[GroupElement]):
        self.elements = list(elements)
        groups: dict[GroupElement, list[int]] = {}
        for i, g in enumerate(self.elements):
            groups.setdefault(g, []).append(i)
        self._groups = groups

    def __len__(self) -> int:
        return len(self.elements)

    def _map(self, x: torch.Tensor, fn) -> torch.Tensor:
        if x.shape[0] != len(self.elements):
            raise ValueError(f"batch of {x.shape[0]} for a transform of {len(self.elements)} elements")
        if len(self._groups) == 1:
            return fn(x, self.elements[0])
        out = torch.empty_like(x)
        for g, idx in self._groups.items():
            index = torch.as_tensor(idx, device=x.device)
            out[index] = fn(x.index_select(0, index), g)
        return out

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self._map(x, apply_element)

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        return self._map(y, invert_element)

    @property
    def is_exact(self) -> bool:
        return all(g.is_exact for g in self.elements)

    def valid_mask(
        self, h: int, w: int, device=None, dtype=torch.float32, frame: str = "source"
    ) -> torch.Tensor | None:
        """(B,1,h,w) mask of the pixels whose comparison is meaningful (None: all of them).

        frame="source": x against T⁻¹(Tx), as in the loss; frame="target": Tx against T(x), as in
        the diagnostics. Rotations by non-multiples of 90° keep the inscribed disc; zooming in by
        s > 1 keeps the central square of relative side 1/s in the source frame, zooming out by
        s < 1 keeps the central square of side s in the target frame.
        """
        if frame not in ("source", "target"):
            raise ValueError(f"frame must be 'source' or 'target', got {frame!r}")
        if self.is_exact:
            return None
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w * 2 - 1
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        disc = (xx**2 + yy**2 <= 1.0).to(dtype)
        masks = torch.empty(len(self.elements), 1, h, w, device=device, dtype=dtype)
        for g, idx in self._groups.items():  # one mask per distinct element
            m = torch.ones(h, w, device=device, dtype=dtype)
            if g.quarter_turns is None:
                m = m * disc
            lim = 1.0 / g.scale if frame == "source" else g.scale
            if lim < 1.0:
                m = m * ((xx.abs() <= lim) & (yy.abs() <= lim)).to(dtype)
            masks[torch.as_tensor(idx, device=device)] = m
        return masks


def group_elements(spec: GroupSpec | str, include_identity: bool = True) -> list[GroupElement]:
    """All elements of the spec's group: N rotations (x 2 reflections for R4R)."""
    spec = parse_group(spec)
    angles = [i * 360.0 / spec.rotations for i in range(spec.rotations)]
    flips = (None, "h") if spec.flips else (None,)
    elems = [GroupElement(a, f) for f in flips for a in angles]
    return elems if include_identity else elems[1:]


def sample_transform(
    spec: GroupSpec | str,
    batch_size: int,
    generator: torch.Generator | None = None,
    scales: tuple[float, float] | None = None,
) -> BatchTransform:
    """Draw a non-identity T per sample (the IEN paper; docs/equivariance.md).

    R4: rot90 by k in 1..3; R8: multiples of 45°; R4R: rot90 by k, then a random horizontal or
    vertical flip or none (identity excluded). ``scales=(lo, hi)`` draws log-uniform zooms instead
    (Scale-MNIST) and ignores the rotations.
    """
    spec = parse_group(spec)
    if scales is not None:
        lo, hi = scales
        if not 0 < lo < hi:
            raise ValueError(f"scales must satisfy 0 < lo < hi, got {scales}")
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        s = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        return BatchTransform([GroupElement(scale=float(v)) for v in s])
    if spec.is_plain:
        raise ValueError("the plain spec 'none' has no transformations to draw")
    n = spec.rotations
    flips = FLIPS if spec.flips else (None,)
    choices = [(k, f) for f in flips for k in range(n) if (k, f) != (0, None)]
    idx = torch.randint(len(choices), (batch_size,), generator=generator)
    return BatchTransform(
        [GroupElement(choices[i][0] * 360.0 / n, choices[i][1]) for i in idx.tolist()]
    )
