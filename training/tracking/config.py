"""The configuration of a tracker training run: the [model], [train] and [data] sections of a TOML
config (strict: unknown keys and bad values are one ConfigError naming them), read by
:func:`read_config` (``extends`` and command-line overrides merged in first)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from backbones import parse_group
from common.config import ConfigError, deep_merge, from_dict, read_toml, to_dict
from common.threads import WORKERS_PER_CPU, max_workers
from tracker.models import ModelConfig

__all__ = ["TrainConfig", "SourceConfig", "DataConfig", "RunConfig", "TrainingError", "read_config", "SOURCE_KINDS",
           "check_num_workers", "MAX_PAIRS", "MAX_BATCH_SIZE"]

MAX_PAIRS = 10_000_000        # train.pairs_per_epoch and train.val_pairs: an epoch's index permutation stays < 100 MB
MAX_BATCH_SIZE = 4096         # train.batch_size: 4096 pairs of 127/255 px crops are ~4 GB of float32 per step


def check_num_workers(value, where: str = "train.num_workers") -> int:
    """A DataLoader worker count: a whole number from 0 to :func:`common.threads.max_workers` (a few
    per CPU of this machine; each worker is a forked process with its own copy of the sampler and
    a prefetch queue). ConfigError otherwise."""
    most = max_workers()
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ConfigError(f"{where} must be a whole number from 0 to {most} ({WORKERS_PER_CPU} per CPU of this "
                          f"machine), got {value!r}")
    return value


class TrainingError(ValueError):
    """A training run that cannot start or go on (bad data, diverged loss, unusable output folder)."""


@dataclass
class TrainConfig:
    """Optimisation settings of a tracker training run (the [train] section of a config)."""

    epochs: int = 50
    pairs_per_epoch: int = 50_000
    batch_size: int = 32              # global batch (split between processes under torchrun)
    lr: float = 1e-2                  # after warm-up
    lr_end: float = 1e-5              # at the last step (exponential decay in between)
    warmup_epochs: float = 1.0        # linear warm-up from lr * warmup_start_factor to lr
    warmup_start_factor: float = 0.1
    optimizer: str = "sgd"            # "sgd" (with momentum) or "adam" (fine-tuning pretrained weights)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 0.0            # max global grad norm; 0 = no clipping
    beta: float = 1.0                 # weight of the IEN loss; 0 = plain-CNN baseline
    ien_inputs: str = "z"             # which batches get a rotated twin: "z" (templates) or "zx"
    ien_layer_weights: list = field(default_factory=list)   # per watched layer; [] = all 1
    seed: int = 0
    num_workers: int = 2              # DataLoader worker processes (per process)
    checkpoint_every: int = 0         # also checkpoint every N steps (0 = at epoch ends only)
    log_every: int = 10               # steps between entries of the per-step history
    amp: bool = False                 # bfloat16 autocast on CUDA (ignored on CPU)
    init_from: str = ""               # tracker checkpoint whose weights start the run (fine-tuning)
    distill_weight: float = 0.0       # weight of matching a frozen teacher's outputs on the same pairs (0 = off)
    distill_from: str = ""            # the teacher: a checkpoint or model folder like init_from ("" = init_from)
    label_weight: float = 1.0         # weight of the tracking loss on the ground-truth labels
    val_every: int = 0                # steps between validation passes on held-out pairs (0 = none)
    val_pairs: int = 128              # held-out pairs of each validation pass (the same ones every time)
    channels_last: bool = False       # model and image batches in torch.channels_last memory format (NHWC)

    def __post_init__(self):
        ints = ("epochs", "pairs_per_epoch", "batch_size", "seed", "num_workers", "checkpoint_every",
                "log_every", "val_every", "val_pairs")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"train.{name} must be an integer, got {value!r}")
        for name in ("lr", "lr_end", "warmup_epochs", "warmup_start_factor", "momentum", "weight_decay",
                     "grad_clip", "beta", "distill_weight", "label_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"train.{name} must be a number, got {value!r}")
            setattr(self, name, float(value))
        if self.epochs < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ConfigError("train.epochs, train.batch_size and train.log_every must be >= 1")
        for name, most in (("batch_size", MAX_BATCH_SIZE), ("pairs_per_epoch", MAX_PAIRS), ("val_pairs", MAX_PAIRS)):
            if getattr(self, name) > most:
                raise ConfigError(f"train.{name} must be at most {most}, got {getattr(self, name)}")
        check_num_workers(self.num_workers)
        if self.seed < 0:
            raise ConfigError(f"train.seed must be a non-negative integer, got {self.seed}")
        if self.pairs_per_epoch < self.batch_size:
            raise ConfigError(f"train.pairs_per_epoch ({self.pairs_per_epoch}) must be at least "
                              f"train.batch_size ({self.batch_size})")
        if not (self.lr > 0 and self.lr_end > 0):
            raise ConfigError("train.lr and train.lr_end must be positive")
        if not 0 < self.warmup_start_factor <= 1:
            raise ConfigError("train.warmup_start_factor must be in (0, 1]")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"train.warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        for name in ("momentum", "weight_decay", "grad_clip", "beta", "distill_weight", "label_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.checkpoint_every < 0 or self.val_every < 0:
            raise ConfigError("train.checkpoint_every and train.val_every must be >= 0")
        if self.val_pairs < 1:
            raise ConfigError(f"train.val_pairs must be >= 1, got {self.val_pairs}")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"train.optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.ien_inputs not in ("z", "zx"):
            raise ConfigError(f"train.ien_inputs must be 'z' or 'zx', got {self.ien_inputs!r}")
        if not isinstance(self.ien_layer_weights, (list, tuple)):
            raise ConfigError("train.ien_layer_weights must be a list of numbers")
        try:
            self.ien_layer_weights = [float(w) for w in self.ien_layer_weights]
        except (TypeError, ValueError):
            raise ConfigError(f"train.ien_layer_weights must be numbers, got {self.ien_layer_weights!r}") from None
        for name in ("amp", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"train.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("init_from", "distill_from"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"train.{name} must be a checkpoint path (a string), got {getattr(self, name)!r}")
        if self.distill_weight > 0 and not (self.distill_from or self.init_from):
            raise ConfigError("train.distill_weight > 0 needs a teacher: train.distill_from or train.init_from")
        if self.distill_weight == 0 and self.label_weight == 0:
            raise ConfigError("train.label_weight = 0 needs train.distill_weight > 0 (nothing to learn from)")


SOURCE_KINDS = ("video", "photos", "generated")


@dataclass
class SourceConfig:
    """One source of training pairs in a mix (a [[data.sources]] table of a config)."""

    kind: str = "video"               # "video" (GOT-10k/OTB folder), "photos" (boxes.csv folders), "generated"
    path: str = ""                    # the folder ("generated": unused)
    weight: float = 1.0               # share of the pairs (relative to the other sources)
    max_rotation_deg: float = -1.0    # random relative rotation of the search crop; < 0: photos 180,
                                      # other kinds data.max_rotation_deg
    min_side: float = 20.0            # frame filter: smallest target side in stored pixels
    max_relative: float = 0.5         # frame filter: largest target side / image side
    max_shift: float = -1.0           # random shift of the target in the search crop (crop px);
                                      # < 0: the sampler's own (videos 4, SiamFC's; photos 48)
    max_stretch: float = -1.0         # random relative scale change of the crops; < 0: videos 0.05, photos 0.25

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ConfigError(f"kind must be one of {', '.join(SOURCE_KINDS)}, got {self.kind!r}")
        if not isinstance(self.path, str) or (self.kind != "generated" and not self.path):
            raise ConfigError(f"a {self.kind} source needs a path (a folder)")
        for name in ("weight", "max_rotation_deg", "min_side", "max_relative", "max_shift", "max_stretch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            setattr(self, name, float(value))
        if self.weight <= 0 or self.min_side < 1 or not 0 < self.max_relative <= 1 or self.max_rotation_deg > 180:
            raise ConfigError("need weight > 0, min_side >= 1, 0 < max_relative <= 1 and max_rotation_deg <= 180")
        if self.max_shift > 128 or self.max_stretch >= 1:
            raise ConfigError(f"need max_shift <= 128 crop px and max_stretch < 1, got {self.max_shift}, {self.max_stretch}")


@dataclass
class DataConfig:
    """Where the training pairs come from (the [data] section of a config).

    Either one folder (``path``), or a weighted mix of ``sources`` ([[data.sources]] tables; then
    ``path`` must stay "generated", its default). ``val_fraction`` > 0 holds that share of the
    video sources' source videos out of training (``data.split_by_source`` with
    ``val_seed``): the validation split that ``tools/evaluate.py --holdout`` evaluates and that
    ``train.val_every`` validates on. The lone generated default (no ``sources``) is split the
    same way; generated and photo sources inside a mix are never split.
    """

    path: str = "generated"           # "generated" = the embedded default dataset, else a folder
    layout: str = "auto"              # "auto", "got10k" or "otb"
    subset: str = ""                  # GOT-10k subset folder ("" = the folder itself, or train/val/test)
    frame_range: int = 100            # max distance between template and search frame (source frames)
    augment: bool = True
    max_rotation_deg: float = 0.0     # extra random in-plane rotation of search crops
    sources: list = field(default_factory=list)   # [[data.sources]]: a weighted mix (SourceConfig)
    val_fraction: float = 0.0         # share of the video sources' source videos held out for validation
    val_seed: int = 0

    def __post_init__(self):
        if not isinstance(self.sources, (list, tuple)):
            raise ConfigError("data.sources must be a list of tables ([[data.sources]])")
        self.sources = [s if isinstance(s, SourceConfig) else from_dict(SourceConfig, s, f"data.sources[{i}]")
                        for i, s in enumerate(self.sources)]
        if self.sources and self.path != "generated":
            raise ConfigError("data.path and data.sources exclude each other: list the folder as a source")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        self.val_fraction = float(self.val_fraction)
        if isinstance(self.val_seed, bool) or not isinstance(self.val_seed, int) or self.val_seed < 0:
            raise ConfigError(f"data.val_seed must be a non-negative integer, got {self.val_seed!r}")
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError(f"data.path must be a folder or 'generated', got {self.path!r}")
        if self.layout not in ("auto", "got10k", "otb"):
            raise ConfigError(f"data.layout must be auto, got10k or otb, got {self.layout!r}")
        if not isinstance(self.subset, str):
            raise ConfigError(f"data.subset must be a string, got {self.subset!r}")
        if isinstance(self.frame_range, bool) or not isinstance(self.frame_range, int) or self.frame_range < 1:
            raise ConfigError(f"data.frame_range must be a positive integer, got {self.frame_range!r}")
        if not isinstance(self.augment, bool):
            raise ConfigError(f"data.augment must be true or false, got {self.augment!r}")
        if isinstance(self.max_rotation_deg, bool) or not isinstance(self.max_rotation_deg, (int, float)) \
                or not 0 <= self.max_rotation_deg <= 180:
            raise ConfigError(f"data.max_rotation_deg must be in [0, 180], got {self.max_rotation_deg!r}")
        self.max_rotation_deg = float(self.max_rotation_deg)


@dataclass
class RunConfig:
    """A whole training config: [model], [train], [data]."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self):
        for name, cls in (("model", ModelConfig), ("train", TrainConfig), ("data", DataConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, from_dict(cls, value, name))
            elif not isinstance(value, cls):
                raise ConfigError(f"[{name}] must be a table, got {type(value).__name__}")
        if self.train.val_every and self.data.val_fraction == 0:
            raise ConfigError(f"train.val_every = {self.train.val_every} needs held-out videos: "
                              "set data.val_fraction > 0 (e.g. 0.2)")
        group = self.model.backbone.group
        if self.train.beta > 0 and parse_group(group).is_plain:
            raise ConfigError(f"train.beta = {self.train.beta:g} needs orientation groups, but "
                              "model.backbone.group is 'none' (use beta = 0 for a plain network)")

    def to_dict(self) -> dict:
        return {"model": to_dict(self.model), "train": to_dict(self.train), "data": to_dict(self.data)}

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "RunConfig":
        return from_dict(cls, data, where)


def read_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Read a TOML config (sections [model] incl. [model.backbone], [train], [data]) strictly.

    ``overrides`` is a nested dict merged in before validation, e.g. {"train": {"beta": 0}}.
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        raw = read_toml(path)
    raw = deep_merge(raw, overrides or {})
    where = path.name if path is not None else "config"
    return from_dict(RunConfig, raw, where)
