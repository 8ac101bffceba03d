"""Training losses of the Siamese heads (the model's ``losses()`` calls these).

SiamFC: balanced logistic loss on the response map, positives within ``r_pos`` crop pixels of the
target centre (siamfc-pytorch). SiamRPN: pysot's anchor targets (IoU > 0.6 positive, < 0.3
negative, at most 16 positives and 48 negatives sampled per pair), cross-entropy with positives
and negatives weighted equally, and smooth-L1 on the positives' box deltas.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .anchors import box_iou_matrix, cxcywh_to_xyxy, encode_boxes, xyxy_to_cxcywh

__all__ = ["siamfc_labels", "balanced_bce", "rpn_targets", "rpn_losses"]


def siamfc_labels(box_x: torch.Tensor, score_size: int, stride: int, instance_size: int,
                  r_pos: float = 16.0) -> torch.Tensor:
    """(B, 1, R, R) float labels: 1 where a response cell lies within ``r_pos`` crop px of the box centre."""
    centre = (box_x[:, :2] + box_x[:, 2:]) / 2 - instance_size / 2.0          # (B, 2) offset from crop centre
    grid = (torch.arange(score_size, device=box_x.device, dtype=box_x.dtype) - (score_size - 1) / 2.0) * stride
    dx = grid.view(1, 1, score_size) - centre[:, 0].view(-1, 1, 1)
    dy = grid.view(1, score_size, 1) - centre[:, 1].view(-1, 1, 1)
    return (dx * dx + dy * dy <= r_pos * r_pos).to(box_x.dtype).unsqueeze(1)


def balanced_bce(response: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logistic loss with positives and negatives of each map weighted 1/2 each (SiamFC)."""
    labels = labels.to(response.dtype)
    b = response.shape[0]
    flat = labels.reshape(b, -1)
    num_pos = flat.sum(1, keepdim=True)
    num_neg = flat.shape[1] - num_pos
    # Half the weight to each class; a map without positives gives all of it to the negatives.
    pos_w = torch.where(num_pos > 0, 0.5 / num_pos.clamp(min=1), torch.zeros_like(num_pos))
    neg_w = torch.where(num_pos > 0, 0.5, 1.0) / num_neg.clamp(min=1)
    weight = flat * pos_w + (1 - flat) * neg_w
    loss = F.binary_cross_entropy_with_logits(response.reshape(b, -1), flat, weight=weight, reduction="sum")
    return loss / b


def _sample(mask: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """Keep at most ``count`` randomly chosen True entries of each row of ``mask`` (B, N)."""
    count = min(count, mask.shape[1])
    if count <= 0:
        return torch.zeros_like(mask)
    device = generator.device if generator is not None else mask.device
    key = torch.rand(mask.shape, generator=generator, device=device).to(mask.device)
    key = torch.where(mask, key, torch.full_like(key, -1.0))
    top_key, top_idx = key.topk(count, dim=1)
    keep = torch.zeros_like(mask)
    keep.scatter_(1, top_idx, top_key >= 0)
    return keep


def rpn_targets(anchors: torch.Tensor, box_x: torch.Tensor, pos_iou: float = 0.6, neg_iou: float = 0.3,
                num_pos: int = 16, num_neg: int = 48, generator: torch.Generator | None = None):
    """Anchor labels (B, N) in {1 positive, 0 negative, -1 ignored} and regression targets (B, N, 4).

    ``anchors`` (N, 4) ``cx,cy,w,h``; ``box_x`` (B, 4) ``x1,y1,x2,y2``, both in search-crop pixels.
    """
    anchors = anchors.to(box_x.device, box_x.dtype)
    iou = box_iou_matrix(box_x, cxcywh_to_xyxy(anchors))                      # (B, N)
    pos = _sample(iou > pos_iou, num_pos, generator)
    neg = _sample(iou < neg_iou, num_neg, generator)
    labels = torch.full(iou.shape, -1, dtype=torch.long, device=box_x.device)
    labels[neg] = 0
    labels[pos] = 1
    deltas = encode_boxes(xyxy_to_cxcywh(box_x)[:, None, :], anchors[None])   # (B, N, 4)
    return labels, deltas


def rpn_losses(cls: torch.Tensor, loc: torch.Tensor, anchors: torch.Tensor, box_x: torch.Tensor,
               loc_weight: float = 1.2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """{"total", "cls", "reg"} of RPN outputs cls (B, 2A, R, R), loc (B, 4A, R, R)."""
    b = cls.shape[0]
    labels, deltas = rpn_targets(anchors, box_x.detach(), generator=generator)
    logp = F.log_softmax(cls.reshape(b, 2, -1).float(), dim=1)               # (B, 2, N), N in (A, R, R) order
    pos, neg = labels == 1, labels == 0
    zero = cls.sum() * 0.0
    pos_loss = -logp[:, 1][pos].mean() if pos.any() else zero
    neg_loss = -logp[:, 0][neg].mean() if neg.any() else zero
    cls_loss = 0.5 * pos_loss + 0.5 * neg_loss
    pred = loc.reshape(b, 4, -1).transpose(1, 2).float()                      # (B, N, 4)
    if pos.any():
        per_anchor = F.smooth_l1_loss(pred, deltas, beta=1.0 / 9.0, reduction="none").sum(-1)
        weight = pos.float() / pos.sum(1, keepdim=True).clamp(min=1)
        reg_loss = (per_anchor * weight).sum() / b
    else:
        reg_loss = loc.sum() * 0.0
    return {"total": cls_loss + loc_weight * reg_loss, "cls": cls_loss, "reg": reg_loss}
