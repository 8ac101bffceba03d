"""Anchor boxes of SiamRPN and the box arithmetic around them.

Anchors live in search-crop pixel coordinates (the continuous convention of ``tracker.crops``):
the response cell ``(row i, col j)`` of an ``R x R`` map looks at the crop point
``centre + ((j - (R-1)/2) * stride, (i - (R-1)/2) * stride)`` with ``centre = instance_size / 2``.
Anchors are ordered ``(anchor, row, col)``, matching head outputs whose channels are laid out
``(class, anchor)`` / ``(coordinate, anchor)`` as in pysot.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "anchor_shapes",
    "generate_anchors",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
    "box_iou_matrix",
    "encode_boxes",
    "decode_boxes",
]


def anchor_shapes(stride: int, ratios, scales) -> torch.Tensor:
    """(A, 2) anchor widths and heights (pysot: area ``stride**2 * scale**2``, ``h / w = ratio``)."""
    shapes = []
    base_area = float(stride * stride)
    for ratio in ratios:
        ws = int(math.sqrt(base_area / float(ratio)))
        hs = int(ws * float(ratio))
        for scale in scales:
            shapes.append((ws * float(scale), hs * float(scale)))
    return torch.tensor(shapes, dtype=torch.float32)


def generate_anchors(score_size: int, stride: int, ratios, scales, instance_size: int) -> torch.Tensor:
    """(A * R * R, 4) anchors ``cx, cy, w, h`` in search-crop pixels, ordered (anchor, row, col)."""
    shapes = anchor_shapes(stride, ratios, scales)
    offsets = (torch.arange(score_size, dtype=torch.float32) - (score_size - 1) / 2.0) * stride
    offsets = offsets + instance_size / 2.0
    cy, cx = torch.meshgrid(offsets, offsets, indexing="ij")
    a, r = shapes.shape[0], score_size
    anchors = torch.empty(a, r, r, 4)
    anchors[..., 0] = cx
    anchors[..., 1] = cy
    anchors[..., 2] = shapes[:, 0].view(a, 1, 1)
    anchors[..., 3] = shapes[:, 1].view(a, 1, 1)
    return anchors.reshape(-1, 4)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def box_iou_matrix(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """IoU of every ``x1,y1,x2,y2`` box of (M,4) ``boxes_a`` with every box of (N,4) ``boxes_b``: (M,N)."""
    lt = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    rb = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (boxes_a[:, 2:] - boxes_a[:, :2]).clamp(min=0).prod(-1)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1e-12)


def encode_boxes(targets: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Regression targets ``(dx, dy, dw, dh)`` of ``cx,cy,w,h`` targets against anchors (broadcasting)."""
    return torch.stack(
        [
            (targets[..., 0] - anchors[..., 0]) / anchors[..., 2],
            (targets[..., 1] - anchors[..., 1]) / anchors[..., 3],
            torch.log(targets[..., 2].clamp(min=1e-6) / anchors[..., 2]),
            torch.log(targets[..., 3].clamp(min=1e-6) / anchors[..., 3]),
        ],
        dim=-1,
    )


def decode_boxes(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: ``cx,cy,w,h`` boxes from deltas (..., 4) and anchors."""
    return torch.stack(
        [
            deltas[..., 0] * anchors[..., 2] + anchors[..., 0],
            deltas[..., 1] * anchors[..., 3] + anchors[..., 1],
            torch.exp(deltas[..., 2].clamp(max=10.0)) * anchors[..., 2],
            torch.exp(deltas[..., 3].clamp(max=10.0)) * anchors[..., 3],
        ],
        dim=-1,
    )
