"""The implicit equivariance loss (IEN), the one implementation used by every training loop.

For each watched layer j of a backbone run on the doubled batch [x, Tx]:
    L_j = MSE( P(f_j(x)), T⁻¹ P(f_j(Tx)) )
and the loss is β · Σ_j w_j L_j (w_j = 1 unless per-layer weights are given). P is the group
max-pool of :func:`backbones.groups.group_max_pool`; T⁻¹ acts spatially (the IEN paper; docs/equivariance.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .groups import GroupSpec, group_max_pool, parse_group
from .transforms import BatchTransform, sample_transform


@dataclass
class IENLossOutput:
    total: torch.Tensor  # β · Σ_j w_j L_j (differentiable)
    per_layer: torch.Tensor  # (J,) the unweighted L_j, detached, for logging


def double_batch(
    x: torch.Tensor,
    spec: GroupSpec | str,
    generator: torch.Generator | None = None,
    scales: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, BatchTransform]:
    """[x; Tx] with a random non-identity T per sample, and that T."""
    transform = sample_transform(spec, x.shape[0], generator=generator, scales=scales)
    return torch.cat([x, transform.apply(x)], dim=0), transform


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.mean((a - b) ** 2)
    diff = (a - b) ** 2 * mask
    return diff.sum() / (mask.sum() * a.shape[1]).clamp_min(1.0)


class IENLoss(nn.Module):
    """β · Σ_j w_j MSE(P f_j(x), T⁻¹ P f_j(Tx)) over a backbone's watched feature maps.

    ``normalize``: each L_j divided by mean(P f_j(x)²) (held constant in the gradient): the error
    relative to the features' own energy, which the network cannot lower by shrinking its features
    (the authors' loss is the raw MSE, ``normalize=False``)."""

    def __init__(
        self,
        spec: GroupSpec | str,
        beta: float = 1.0,
        layer_weights: Sequence[float] | None = None,
        normalize: bool = False,
    ):
        super().__init__()
        self.spec = parse_group(spec)
        self.normalize = bool(normalize)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if beta > 0 and self.spec.is_plain:
            raise ValueError("the IEN loss needs orientation groups: group 'none' allows only beta=0")
        self.beta = float(beta)
        self.layer_weights = None if layer_weights is None else [float(w) for w in layer_weights]

    def layer_losses(self, watched: Sequence[torch.Tensor], transform: BatchTransform) -> torch.Tensor:
        """(J,) L_j for feature maps computed on the doubled batch [x; Tx]."""
        if self.layer_weights is not None and len(self.layer_weights) != len(watched):
            raise ValueError(
                f"{len(self.layer_weights)} layer weights for {len(watched)} watched layers"
            )
        n = len(transform)
        losses = []
        for f in watched:
            if f.shape[0] != 2 * n:
                raise ValueError(
                    f"watched map of batch {f.shape[0]}: expected the doubled batch of {2 * n}"
                )
            pooled = group_max_pool(f, self.spec)
            p_x, p_tx = pooled[:n], pooled[n:]
            back = transform.invert(p_tx)
            mask = transform.valid_mask(*back.shape[-2:], device=back.device, dtype=back.dtype)
            loss = masked_mse(p_x, back, mask)
            if self.normalize:         # relative to the pooled features' energy: shrinking them gains nothing
                loss = loss / p_x.detach().pow(2).mean().clamp_min(1e-12)
            losses.append(loss)
        return torch.stack(losses)

    def forward(self, watched: Sequence[torch.Tensor], transform: BatchTransform) -> IENLossOutput:
        per_layer = self.layer_losses(watched, transform)
        weights = (
            torch.ones_like(per_layer)
            if self.layer_weights is None
            else torch.tensor(self.layer_weights, dtype=per_layer.dtype, device=per_layer.device)
        )
        total = self.beta * (weights * per_layer).sum()
        return IENLossOutput(total=total, per_layer=per_layer.detach())
