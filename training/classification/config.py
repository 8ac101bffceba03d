"""The configuration of a classification run (saved in its checkpoint and metrics.json)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from backbones import BackboneConfig, parse_group
from common.checkpoints import load_checkpoint
from common.config import ConfigError, from_dict, to_dict
from data.classification import DATASETS

__all__ = ["TrainConfig", "TrainError", "config_differences", "load_run_config", "AUTHORS_MODELS",
           "DEFAULT_IEN_SCALES", "HEADS", "INITS", "INPUT_NORMS", "LR_SCHEDULES", "DIVERGED_CE_FACTOR"]

DEFAULT_IEN_SCALES = (2.0 / 3.0, 1.5)  # zoom range of T for scale-mnist
AUTHORS_MODELS = ("authors-cnnbasic", "e2-authors-cnnbasic")  # networks whose defaults are the authors' head, init and raw input
HEADS = ("linear", "authors")
INITS = ("default", "xavier")
INPUT_NORMS = ("standardize", "unit")
LR_SCHEDULES = ("cosine", "authors")
# mean cross-entropy of an epoch above this many times chance level (ln classes) = a diverged run
DIVERGED_CE_FACTOR = 100.0
# bounds of user-given sizes: the datasets' images are 28 to 96 px, and every image of a split is
# held in memory resized to image_size (50000 images of 1024 px are 150 GB already)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024
MAX_BATCH_SIZE = 65536          # batch_size and eq_images (doubled by IEN: one forward of 2x as many)


class TrainError(RuntimeError):
    """A run that cannot start or continue (existing output, mismatching resume)."""


def _default_backbone() -> BackboneConfig:
    return BackboneConfig(name="cnnbasic", group="R4", width_mult=0.5, in_channels=3)


@dataclass
class TrainConfig:
    """Everything that defines a classification run (saved in its checkpoint and metrics.json).

    lr_cycle_epochs: length of one cosine cycle (None = the whole run, i.e. one cycle); at each restart
    the peak is multiplied by lr_cycle_decay (the authors used 70-epoch cycles over 90 epochs).
    ien_scales: (lo, hi) zoom range of T instead of rotations (scale-mnist; None = rotations of the group).
    train_limit/test_limit: use only the first N images of a split (quick runs).
    eq_images: test images used for the per-layer equivariance error.
    head: "linear" (one linear layer) or "authors" (their head for this network: Linear -> BatchNorm1d ->
    ELU -> Linear; VGG: hidden 1024 and dropout 0.5; ResNet-18: one linear layer, as in their code).
    init: "default" (PyTorch's) or "xavier" (Xavier-uniform weights, biases 0.01, as the authors' Rot-MNIST code).
    input_norm: "standardize" (per-channel mean/std of the train set) or "unit" (raw [0, 1] pixels).
    head/init/input_norm None = the model's own: the authors' for authors-cnnbasic, else linear/default/standardize.
    image_size None = the dataset's size moved to the nearest larger size at which the network is
    exactly equivariant for 90° rotations (``Backbone.aligned_size``: ResNet-18 64 -> 65, VGG 28 -> 32).
    lr_schedule: "cosine" (above) or "authors" (their OneCycle: warm-up over the first quarter of the cycle,
    cosine down to lr_min at its end, lr_min after it; lr_cycle_epochs = their cyc_size, 70 of 90 epochs).
    eval_each_epoch: test on the doubled test set (x and one rotated copy Tx per image, T drawn once per
    run) after every epoch, for the authors' protocol (best epoch); False skips it.
    """

    dataset: str = "rot-digits"
    data: Optional[str] = None
    image_size: Optional[int] = None
    backbone: BackboneConfig = field(default_factory=_default_backbone)
    beta: float = 1.0
    beta_warmup_epochs: float = 0.0   # the IEN weight grows linearly from 0 to beta over these epochs (0: from the start)
    ien_normalize: bool = False       # each layer's IEN term relative to its pooled features' energy
    layer_weights: Optional[list] = None
    epochs: int = 90
    batch_size: int = 32
    lr_max: float = 5e-3
    lr_min: float = 1e-5
    weight_decay: float = 1e-7
    lr_cycle_epochs: Optional[int] = None
    lr_cycle_decay: float = 1.0
    seed: int = 0
    ien_scales: Optional[list] = None
    train_limit: Optional[int] = None
    test_limit: Optional[int] = None
    eq_images: int = 64
    head: Optional[str] = None
    init: Optional[str] = None
    input_norm: Optional[str] = None
    eval_each_epoch: bool = True
    lr_schedule: str = "cosine"

    def __post_init__(self):
        if isinstance(self.backbone, dict):
            self.backbone = from_dict(BackboneConfig, self.backbone, "backbone")
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.backbone.in_channels != 3:
            raise ConfigError("classification backbones take RGB input: backbone.in_channels must be 3")
        for name in ("epochs", "batch_size", "eq_images"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("batch_size", "eq_images"):
            if getattr(self, name) > MAX_BATCH_SIZE:
                raise ConfigError(f"{name} must be at most {MAX_BATCH_SIZE}, got {getattr(self, name)}")
        for name in ("image_size", "lr_cycle_epochs", "train_limit", "test_limit"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.image_size is not None and not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"image_size must be from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} px, got {self.image_size}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (isinstance(self.beta, (int, float)) and self.beta >= 0):
            raise ConfigError(f"beta must be a number >= 0, got {self.beta!r}")
        self.beta = float(self.beta)
        if isinstance(self.beta_warmup_epochs, bool) or not isinstance(self.beta_warmup_epochs, (int, float)) \
                or not 0 <= self.beta_warmup_epochs <= 1000:
            raise ConfigError(f"beta_warmup_epochs must be a number of epochs in [0, 1000], got {self.beta_warmup_epochs!r}")
        self.beta_warmup_epochs = float(self.beta_warmup_epochs)
        if not isinstance(self.ien_normalize, bool):
            raise ConfigError(f"ien_normalize must be true or false, got {self.ien_normalize!r}")
        spec = parse_group(self.backbone.group)
        if self.beta > 0 and spec.is_plain:
            raise ConfigError("beta > 0 needs orientation groups: group 'none' trains only with --beta 0")
        for name in ("lr_max", "lr_min", "weight_decay", "lr_cycle_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number, got {v!r}")
        if not 0 < self.lr_min <= self.lr_max:
            raise ConfigError(f"need 0 < lr_min <= lr_max, got {self.lr_min}, {self.lr_max}")
        if self.weight_decay < 0 or self.lr_cycle_decay <= 0:
            raise ConfigError("weight_decay must be >= 0 and lr_cycle_decay > 0")
        authors = self.backbone.name in AUTHORS_MODELS
        for name, choices, own in (("head", HEADS, "authors" if authors else "linear"),
                                   ("init", INITS, "xavier" if authors else "default"),
                                   ("input_norm", INPUT_NORMS, "unit" if authors else "standardize")):
            if getattr(self, name) is None:
                setattr(self, name, own)
            elif getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not isinstance(self.eval_each_epoch, bool):
            raise ConfigError(f"eval_each_epoch must be true or false, got {self.eval_each_epoch!r}")
        if self.ien_scales is not None:
            s = list(self.ien_scales)
            if len(s) != 2 or not 0 < s[0] < s[1]:
                raise ConfigError(f"ien_scales must be [lo, hi] with 0 < lo < hi, got {self.ien_scales!r}")
            self.ien_scales = [float(v) for v in s]
        elif self.dataset == "scale-mnist":
            self.ien_scales = list(DEFAULT_IEN_SCALES)
        if self.layer_weights is not None:
            try:
                self.layer_weights = [float(w) for w in self.layer_weights]
            except (TypeError, ValueError):
                raise ConfigError(f"layer_weights must be numbers, got {self.layer_weights!r}") from None
            if not self.layer_weights or not all(math.isfinite(w) and w >= 0 for w in self.layer_weights):
                raise ConfigError(f"layer_weights must be finite numbers >= 0, got {self.layer_weights!r}")
            if not any(self.layer_weights):
                raise ConfigError("layer_weights are all 0: use beta 0 for the plain CNN")


def config_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    da, db = to_dict(a), to_dict(b)
    diffs = []
    for key in da:
        if key == "backbone":
            diffs += [f"backbone.{k}: {db[key][k]!r} vs {da[key][k]!r}" for k in da[key] if da[key][k] != db[key][k]]
        elif da[key] != db[key]:
            diffs.append(f"{key}: {db[key]!r} vs {da[key]!r}")
    return diffs


def load_run_config(path: Path) -> TrainConfig:
    ckpt = load_checkpoint(path)
    return from_dict(TrainConfig, ckpt["config"], "checkpoint config")
