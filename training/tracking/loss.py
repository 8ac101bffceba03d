"""The loss of one tracker training step, as a module (DistributedDataParallel synchronises through
its forward): the model's tracking loss on the pairs, plus β · Σ_j L_j, the IEN loss of the
backbone's watched maps on the templates doubled with a rotated copy (and the search crops with
``train.ien_inputs = "zx"``)."""
from __future__ import annotations

import torch
from torch import nn

from backbones import IENLoss, double_batch, group_max_pool
from common.config import ConfigError

from .config import TrainConfig

__all__ = ["TrackingLoss", "response_peaks"]


class TrackingLoss(nn.Module):
    def __init__(self, model: nn.Module, train: TrainConfig):
        super().__init__()
        self.model = model
        self.beta = train.beta
        self.double_x = train.ien_inputs == "zx"
        weights = train.ien_layer_weights or None
        self.ien = IENLoss(model.backbone.spec, train.beta, weights) if train.beta > 0 else None
        self.label_weight, self.distill_weight = train.label_weight, train.distill_weight
        self.teacher = None
        if train.distill_weight > 0:
            if not hasattr(model, "distillation_losses"):
                raise ConfigError(f"train.distill_weight: a {model.config.type} model has no distillation loss "
                                  "(the nanotrack models have one)")
            self.teacher = _frozen_teacher(model, train.distill_from or train.init_from)

    def forward(self, z: torch.Tensor, x: torch.Tensor, box_x: torch.Tensor, step_seed: int,
                x_upright: torch.Tensor | None = None, rotation: torch.Tensor | None = None) -> dict:
        n = z.shape[0]
        gen = torch.Generator().manual_seed(step_seed)
        spec = self.model.backbone.spec
        tz = tx = None
        if self.ien is not None:
            z, tz = double_batch(z, spec, gen)
            if self.double_x:
                x, tx = double_batch(x, spec, gen)
        z_out = self.model.extract(z)
        x_out = self.model.extract(x)
        z_feat, x_feat = z_out.out[:n], x_out.out[:n]
        if self.teacher is None:
            parts = self.model.losses(z_feat, x_feat, box_x, generator=gen)
        else:
            seen = x[:n] if x_upright is None else x_upright
            with torch.no_grad():
                self.teacher.eval()
                taught = self.teacher.head(self.teacher.extract(z[:n]).out, self.teacher.extract(seen).out)
            parts = self.model.distillation_losses(z_feat, x_feat, box_x, taught, rotation, self.label_weight,
                                                   self.distill_weight)
        result = {"tracking": parts["total"]}
        result.update({k: v for k, v in parts.items() if k != "total"})
        if self.ien is None:
            result["loss"] = parts["total"]
            return result
        ien = self.ien([f.float() for f in z_out.watched], tz)
        ien_total, per_layer = ien.total, ien.per_layer
        relative = self._relative(per_layer, z_out.watched, n)
        if tx is not None:
            ien_x = self.ien([f.float() for f in x_out.watched], tx)
            ien_total = (ien_total + ien_x.total) / 2
            relative = (relative + self._relative(ien_x.per_layer, x_out.watched, n)) / 2
            per_layer = (per_layer + ien_x.per_layer) / 2
        result["loss"] = parts["total"] + ien_total
        result["ien"] = per_layer.sum()          # Σ_j L_j, unweighted by β (comparable across β)
        result["ien_rel"] = relative
        result["ien_layers"] = per_layer
        return result

    @torch.no_grad()
    def _relative(self, per_layer: torch.Tensor, watched, n: int) -> torch.Tensor:
        """Mean over layers of L_j / mean(P f_j(x)²): the IEN term relative to the pooled features'
        energy, which (unlike the raw MSE) cannot go down by merely shrinking the features."""
        spec = self.model.backbone.spec
        energy = torch.stack([group_max_pool(f[:n].float(), spec).pow(2).mean() for f in watched])
        return (per_layer / energy.clamp_min(1e-12)).mean()


def _frozen_teacher(model: nn.Module, source: str) -> nn.Module:
    """A frozen copy of ``model``'s architecture holding the teacher's weights (a checkpoint, or a
    folder of a public model's files, as ``train.init_from``); not part of the student's state."""
    import copy

    from .export import initialize_from

    teacher = copy.deepcopy(model)
    initialize_from(teacher, source)
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


@torch.no_grad()
def response_peaks(model: nn.Module, z_feat: torch.Tensor, x_feat: torch.Tensor) -> torch.Tensor:
    """(B, 2) x, y in search-crop pixels of the model's most confident position (``model.peaks``)."""
    return model.peaks(model.head(z_feat, x_feat))
