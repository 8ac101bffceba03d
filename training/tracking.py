"""Training of the Siamese trackers (SiamFC, SiamRPN) with the implicit-equivariance (IEN) loss.

One step: a batch of (template z, search x, box_x) pairs from :class:`training.pairs.PairSampler`;
when β > 0 the template batch (and optionally the search batch) is doubled with a rotated copy
(``backbones.double_batch``) and run through ``model.extract`` once; the tracking loss
(``model.losses``) uses the first half, the IEN loss (``backbones.IENLoss``) the backbone's watched
maps of the doubled batch. Total = tracking + β · Σ_j L_j.

SGD (momentum 0.9, weight decay 5e-4) with a linear warm-up, then exponential decay 1e-2 → 1e-5 over
the run (SiamFC defaults, NOTES §3; ``torch.optim.lr_scheduler`` LinearLR + ExponentialLR in a
SequentialLR). Checkpoints (written atomically) hold the config, the model, optimizer, scheduler,
step counters, every RNG state and the history, so ``resume`` continues a killed run exactly.
Logs: OUT/history.json (at checkpoints), OUT/history.csv (a row per logged step, appended live and
rewritten from the checkpoint on resume) and TensorBoard events in OUT/tensorboard (when the
``tensorboard`` package is installed). With ``train.val_every`` a validation pass on a fixed set of
held-out pairs runs every N steps; OUT/best.pth (checkpoint format) keeps the lowest validation loss.
Under ``torchrun`` (WORLD_SIZE > 1) the run is data-parallel
(DistributedDataParallel); ``batch_size`` is the global batch, split evenly between processes.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backbones import IENLoss, double_batch, group_max_pool, parse_group
from common.checkpoints import CheckpointError, load_checkpoint, save_atomic
from common.config import ConfigError, deep_merge, from_dict, read_toml, to_dict
from common.device import DeviceError, resolve_device
from data import DatasetError
from tracker.models import ModelConfig, build_model

__all__ = [
    "TrainConfig", "DataConfig", "SourceConfig", "RunConfig", "TrainingError", "Trainer", "build_lr_scheduler",
    "read_config", "load_pairs", "load_validation_pairs", "export_weights", "distributed_env",
    "CHECKPOINT_NAME", "BEST_NAME",
]

CHECKPOINT_NAME = "checkpoint.pth"
BEST_NAME = "best.pth"                # the checkpoint of the lowest validation loss (train.val_every)
HISTORY_CSV = "history.csv"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_FORMAT = "ien-tracking/tracker-training"


class TrainingError(ValueError):
    """A training run that cannot start or go on (bad data, diverged loss, unusable output folder)."""


# ------------------------------------------------------------------------------------------------
# configuration
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
                     "grad_clip", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"train.{name} must be a number, got {value!r}")
            setattr(self, name, float(value))
        if self.epochs < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ConfigError("train.epochs, train.batch_size and train.log_every must be >= 1")
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
        for name in ("momentum", "weight_decay", "grad_clip", "beta"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.num_workers < 0 or self.checkpoint_every < 0 or self.val_every < 0:
            raise ConfigError("train.num_workers, train.checkpoint_every and train.val_every must be >= 0")
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
        if not isinstance(self.init_from, str):
            raise ConfigError(f"train.init_from must be a checkpoint path (a string), got {self.init_from!r}")


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


# ------------------------------------------------------------------------------------------------
# learning-rate schedule
def build_lr_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                       start_factor: float, end_factor: float) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from lr · ``start_factor`` to lr over ``warmup_steps`` (LinearLR), then
    exponential decay (ExponentialLR) reaching lr · ``end_factor`` at the run's last step."""
    from torch.optim.lr_scheduler import ExponentialLR, LinearLR, SequentialLR

    span = max(1, int(total_steps) - 1 - int(warmup_steps))
    decay = ExponentialLR(optimizer, gamma=float(end_factor) ** (1.0 / span))
    if warmup_steps <= 0:
        return decay
    warmup = LinearLR(optimizer, start_factor=float(start_factor), end_factor=1.0, total_iters=int(warmup_steps))
    return SequentialLR(optimizer, [warmup, decay], milestones=[int(warmup_steps)])


# ------------------------------------------------------------------------------------------------
# data
def load_pairs(config: RunConfig, workers: int = 1):
    """The pair dataset of a run config: one PairSampler (the embedded generated dataset or a
    GOT-10k/OTB folder), or a MixedPairs of the config's [[data.sources]]."""
    data = config.data
    sources = data.sources or [_lone_source(data)]
    samplers = [_source_pairs(config, source, k, workers) for k, source in enumerate(sources)]
    if not data.sources:
        return samplers[0]
    from training.pairs import MixedPairs

    return MixedPairs(samplers, [s.weight for s in sources], config.train.pairs_per_epoch, config.train.seed,
                      names=[f"{s.kind}:{s.path}" if s.path else s.kind for s in sources])


def load_validation_pairs(config: RunConfig, workers: int = 1, videos: str = "held-out"):
    """The held-out pairs of ``train.val_every``: ``train.val_pairs`` pairs of the sources' held-out
    videos (``data.val_fraction``), without augmentation and with fixed seeds (``data.val_seed``),
    so every pass sees the same crops. None when no source holds videos out.

    ``videos="training"``: as many pairs drawn the same way from the videos the run trains on, of
    the same sources, the other side of the generalisation gap (``Trainer.fit_gap``)."""
    if videos not in ("held-out", "training"):
        raise ValueError(f"videos must be 'held-out' or 'training', got {videos!r}")
    data = config.data
    sources = data.sources or [_lone_source(data)]
    samplers, weights, names = [], [], []
    for k, source in enumerate(sources):
        if not _is_split(config, source):
            continue
        seen, held = _source_sequences(config, source, workers)
        if held:
            items = held if videos == "held-out" else seen
            samplers.append(_sampler(config, source, k, items, config.train.val_pairs, validation=True))
            weights.append(source.weight)
            names.append(f"{source.kind}:{source.path}" if source.path else source.kind)
    if not samplers:
        return None
    if len(samplers) == 1:
        return samplers[0]
    from training.pairs import MixedPairs

    return MixedPairs(samplers, weights, config.train.val_pairs, data.val_seed, names=names)


def _lone_source(data: DataConfig) -> SourceConfig:
    return SourceConfig(kind="generated" if data.path == "generated" else "video", path=data.path)


def _is_split(config: RunConfig, source: SourceConfig) -> bool:
    """Whether ``source`` holds videos out: video sources, and the lone generated default."""
    if config.data.val_fraction <= 0:
        return False
    return source.kind == "video" or (source.kind == "generated" and not config.data.sources)


def _source_sequences(config: RunConfig, source: SourceConfig, workers: int) -> tuple[list, list]:
    """(training, held-out) sequences of a video or generated source."""
    from data import load_sequences, split_by_source

    data = config.data
    if source.kind == "generated":
        from data.generated import default_dataset

        root = default_dataset("train", workers=max(1, workers))
    else:
        root = Path(source.path).expanduser()
    sequences = load_sequences(root, layout=data.layout, subset=data.subset or None)
    if _is_split(config, source):
        return split_by_source(sequences, data.val_fraction, data.val_seed)
    return sequences, []


def _sampler(config: RunConfig, source: SourceConfig, index: int, items, pairs: int, validation: bool = False):
    from training.pairs import FrameFilter, PairSampler, PhotoPairSampler

    data, m = config.data, config.model
    # the sources of a mix draw independently; a lone source keeps the run's own seed
    seed = (data.val_seed if validation else config.train.seed) + 1000 * index
    rotation = source.max_rotation_deg
    if rotation < 0:                     # unset: photos turn any way, the rest as data.max_rotation_deg
        rotation = 180.0 if source.kind == "photos" else data.max_rotation_deg
    common = dict(exemplar_size=m.exemplar_size, instance_size=m.instance_size, context=m.context,
                  augment=data.augment and not validation, max_rotation_deg=rotation, seed=seed)
    common.update({name: getattr(source, name) for name in ("max_shift", "max_stretch") if getattr(source, name) >= 0})
    if not data.sources:                 # the single-folder form keeps SiamFC's frame filter
        rules = FrameFilter()
    else:
        rules = FrameFilter(min_side=source.min_side, max_relative=source.max_relative)
    if source.kind == "photos":
        return PhotoPairSampler(items, pairs, frame_filter=rules, **common)
    return PairSampler(items, pairs, frame_range=data.frame_range, frame_filter=rules, **common)


def _source_pairs(config: RunConfig, source: SourceConfig, index: int, workers: int):
    if source.kind == "photos":
        from data.photos import load_photos

        items = load_photos(Path(source.path).expanduser())
    else:
        items = _source_sequences(config, source, workers)[0]
    return _sampler(config, source, index, items, config.train.pairs_per_epoch)


class _StepBatches(torch.utils.data.Sampler):
    """Batches of pair indices, one per optimizer step from ``start_step`` on.

    Global step s covers pairs [s·B, (s+1)·B); process ``rank`` of ``world`` takes its contiguous
    share, so a step sees the same pairs whatever the number of processes.
    """

    def __init__(self, steps: int, batch_size: int, rank: int = 0, world: int = 1, start_step: int = 0):
        self.steps, self.batch_size, self.start_step = steps, batch_size, start_step
        self.local = batch_size // world
        self.offset = rank * self.local

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self):
        for s in range(self.start_step, self.steps):
            first = s * self.batch_size + self.offset
            yield list(range(first, first + self.local))


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _step_seed(seed: int, step: int, rank: int) -> int:
    """A seed for the random parts of one step (IEN transforms, RPN anchor sampling)."""
    return int(np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(1, np.uint32)[0])


def _worker_error_message(exc: BaseException) -> str:
    """The original message of an exception re-raised by a DataLoader worker (no traceback)."""
    text = str(exc)
    if "DataLoader worker" not in text:
        return text
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else text
    head, sep, tail = last.partition(": ")
    return tail if sep and (head.endswith("Error") or head.endswith("Exception")) else last


# ------------------------------------------------------------------------------------------------
# distributed helpers
def distributed_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment ((0, 1, 0) otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def _resolve_device(device: str | torch.device | None, local_rank: int, world: int) -> torch.device:
    try:
        device = resolve_device(device, local_rank if world > 1 else None)
    except DeviceError as exc:
        raise TrainingError(str(exc)) from None
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise TrainingError(f"unsupported device {str(device)!r} (use auto, cpu or cuda[:N])")
    return device


def _rng_state(device: torch.device) -> dict:
    """Every generator's state as tensors and plain data (a checkpoint is read as data only)."""
    numpy_state = np.random.get_state(legacy=False)
    key = numpy_state["state"]["key"]
    numpy_state["state"] = {**numpy_state["state"], "key": torch.from_numpy(key.astype(np.int64))}
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": numpy_state,
        "python": random.getstate(),
    }


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):      # older checkpoints hold numpy's legacy tuple
        key = numpy_state["state"]["key"]
        numpy_state = {**numpy_state, "state": {**numpy_state["state"], "key": np.asarray(key, dtype=np.uint32)}}
    np.random.set_state(numpy_state)
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def initialize_from(model: nn.Module, path: str | Path) -> dict:
    """Start ``model`` from the weights of a tracker checkpoint (fine-tuning).

    Every backbone tensor must be there with the same shape (same backbone config); head and neck
    tensors are taken where names and shapes match and otherwise keep their fresh initialisation
    (e.g. a SiamRPN head on SiamFC weights). Returns which tensors were loaded and which were not.
    """
    from common.checkpoints import CheckpointError, load_checkpoint

    if Path(path).is_dir():
        state = _imported_weights(model, Path(path))
    else:
        state = load_checkpoint(path, "cpu").get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no model weights to start from")
    own = model.state_dict()
    missing = [k for k in own if k.startswith("backbone.") and
               (k not in state or tuple(state[k].shape) != tuple(own[k].shape))]
    if missing:
        raise CheckpointError(f"train.init_from {path}: its backbone does not match the config's "
                              f"({len(missing)} tensors differ, e.g. {missing[0]}); use a checkpoint of the same "
                              "backbone name, group and width")
    loaded = {k: state[k].to(own[k].dtype) for k in own if k in state and tuple(state[k].shape) == tuple(own[k].shape)}
    model.load_state_dict(loaded, strict=False)
    return {"loaded": len(loaded), "fresh": sorted(set(own) - set(loaded))}


def _imported_weights(model: nn.Module, folder: Path) -> dict:
    """The weights of a pretrained tracker's files in ``folder`` (NanoTrack v3's two ONNX files,
    ``nanotrackv3_backbone.onnx`` and ``nanotrackv3_head.onnx``) as a state dict of ``model``."""
    from common.checkpoints import CheckpointError
    from tracker.nanotrack import import_nanotrack_v3

    if getattr(model.config, "type", None) != "nanotrack":
        raise CheckpointError(f"train.init_from {folder}: a folder of NanoTrack v3 files starts a nanotrack "
                              f"model, not a {model.config.type} model")
    try:
        imported = import_nanotrack_v3(folder / "nanotrackv3_backbone.onnx", folder / "nanotrackv3_head.onnx",
                                       group=model.config.backbone.group)
    except (FileNotFoundError, ValueError) as exc:
        raise CheckpointError(f"train.init_from: {exc}") from None
    return imported.state_dict()


# ------------------------------------------------------------------------------------------------
# the loss of one step, as a module (DistributedDataParallel synchronises through its forward)
class _LossModule(nn.Module):
    def __init__(self, model: nn.Module, train: TrainConfig):
        super().__init__()
        self.model = model
        self.beta = train.beta
        self.double_x = train.ien_inputs == "zx"
        weights = train.ien_layer_weights or None
        self.ien = IENLoss(model.backbone.spec, train.beta, weights) if train.beta > 0 else None

    def forward(self, z: torch.Tensor, x: torch.Tensor, box_x: torch.Tensor, step_seed: int) -> dict:
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
        parts = self.model.losses(z_out.out[:n], x_out.out[:n], box_x, generator=gen)
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


@torch.no_grad()
def response_peaks(model: nn.Module, z_feat: torch.Tensor, x_feat: torch.Tensor) -> torch.Tensor:
    """(B, 2) x, y in search-crop pixels of the model's most confident position (``model.peaks``)."""
    return model.peaks(model.head(z_feat, x_feat))


# ------------------------------------------------------------------------------------------------
class Trainer:
    """Trains one tracker config; ``fit`` runs (or continues) it, writing OUT/checkpoint.pth.

    ``device``: "auto" (CUDA when present), "cpu", "cuda", ...; under torchrun each process uses its
    LOCAL_RANK GPU. ``progress``: show a tqdm bar (rank 0 only).
    """

    def __init__(self, config: RunConfig, out_dir: str | Path, device: str | None = "auto",
                 num_workers: int | None = None, progress: bool = True):
        self.config = config
        self.out_dir = Path(out_dir)
        train = config.train
        self.num_workers = train.num_workers if num_workers is None else int(num_workers)
        self.rank, self.world, local_rank = distributed_env()
        if train.batch_size % self.world:
            raise TrainingError(f"train.batch_size {train.batch_size} does not split evenly between "
                                f"{self.world} processes")
        self.device = _resolve_device(device, local_rank, self.world)
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
        seed_everything(train.seed)
        self.model = build_model(config.model)
        self.initialized_from = None
        if train.init_from and not (self.out_dir / CHECKPOINT_NAME).is_file():   # (a resume loads its own)
            self.initialized_from = initialize_from(self.model, train.init_from)
        self.model = self.model.to(self.device)
        if train.channels_last:              # 4-D weights NHWC; load_state_dict/resume keep the format
            self.model = self.model.to(memory_format=torch.channels_last)
        if train.ien_layer_weights and len(train.ien_layer_weights) != len(self.model.backbone.watched_names):
            raise ConfigError(f"train.ien_layer_weights has {len(train.ien_layer_weights)} entries for the "
                              f"{len(self.model.backbone.watched_names)} watched layers "
                              f"({', '.join(self.model.backbone.watched_names)})")
        self.loss_module = _LossModule(self.model, train)
        self.step_module: nn.Module = self.loss_module
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = nn.parallel.DistributedDataParallel(self.loss_module, device_ids=ids)
        if train.optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=train.lr, momentum=train.momentum,
                                             weight_decay=train.weight_decay)
        self.steps_per_epoch = train.pairs_per_epoch // train.batch_size
        self.total_steps = train.epochs * self.steps_per_epoch
        self.scheduler = self._new_scheduler()
        self.step = 0
        self.epoch = 0                       # completed epochs
        self.history: dict = {"epochs": [], "steps": []}
        self.best_val: dict | None = None    # {"step", "val_loss", "val_peak_hit"} of OUT/best.pth
        self._val_pairs = None
        self._csv_fields: list | None = None
        self._tensorboard = None
        self._sums: dict[str, float] = {}
        self._count = 0
        self._reported_frames: set[int] = set()   # ids of unreadable training frames already warned about
        self._last_lr = train.lr
        # time and pairs the current epoch spent before this fit() call (a resumed run), and the
        # (wall time, step) this call's part of the epoch started at: history's rates span resumes
        self._epoch_carried: tuple[float, int] = (0.0, 0)
        self._epoch_mark: tuple[float, int] | None = None
        self._stop_requested = False
        self._pairs = None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    # -- state ---------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    @property
    def best_path(self) -> Path:
        return self.out_dir / BEST_NAME

    def _new_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        train = self.config.train
        return build_lr_scheduler(self.optimizer, self.total_steps, round(train.warmup_epochs * self.steps_per_epoch),
                                  train.warmup_start_factor, train.lr_end / train.lr)

    def _replay_scheduler(self, steps: int) -> None:
        """Bring a fresh scheduler to ``steps`` (a checkpoint of the former hand-written LambdaLR
        schedule, whose state does not fit the library schedulers')."""
        import warnings

        for group in self.optimizer.param_groups:
            group["lr"] = group.get("initial_lr", self.config.train.lr)
        self.scheduler = self._new_scheduler()
        with warnings.catch_warnings():          # "scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore")
            for _ in range(steps):
                self.scheduler.step()

    @property
    def watched_names(self) -> list[str]:
        return list(self.model.backbone.watched_names)

    def state_dict(self) -> dict:
        """The checkpoint: everything needed to continue the run exactly (RNG states of every process)."""
        rng = _rng_state(self.device)
        if self.world > 1:
            states = [None] * self.world
            torch.distributed.all_gather_object(states, rng)
        else:
            states = [rng]
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "epoch_sums": {"sums": dict(self._sums), "count": self._count,
                           **dict(zip(("seconds", "pairs"), self._epoch_progress()))},
            "rng": states,
            "world_size": self.world,
            "history": self.history,
            "best_val": self.best_val,
        }

    def load_state_dict(self, ckpt: dict) -> None:
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("not a tracker training checkpoint (no optimizer state to resume from)")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        scheduler = ckpt.get("scheduler")
        if isinstance(scheduler, dict) and scheduler.keys() == self.scheduler.state_dict().keys():
            self.scheduler.load_state_dict(scheduler)
        else:
            self._replay_scheduler(self.step)
        self._sums = dict(ckpt["epoch_sums"]["sums"])
        self._count = int(ckpt["epoch_sums"]["count"])
        self._epoch_carried = (float(ckpt["epoch_sums"].get("seconds", 0.0)), int(ckpt["epoch_sums"].get("pairs", 0)))
        self._epoch_mark = None
        self.history = ckpt["history"]
        self.best_val = ckpt.get("best_val")
        states = ckpt["rng"]
        _set_rng_state(states[self.rank] if self.rank < len(states) else states[0], self.device)

    def save_checkpoint(self) -> None:
        """Write OUT/checkpoint.pth and OUT/history.json atomically (rank 0; every rank must call)."""
        state = self.state_dict()
        if self.is_main:
            save_atomic(state, self.checkpoint_path)
            _write_json_atomic(self.history, self.out_dir / "history.json")
        if self.world > 1:
            torch.distributed.barrier()

    def resume(self, path: str | Path | None = None) -> None:
        # on the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest to the device
        ckpt = load_checkpoint(path or self.checkpoint_path, map_location="cpu")
        self.load_state_dict(ckpt)

    # -- one step ------------------------------------------------------------------------------
    def pairs(self):
        """The run's PairSampler (under torchrun rank 0 first: it may generate the cached dataset)."""
        if self._pairs is None:
            if self.world > 1 and not self.is_main:
                torch.distributed.barrier()
            self._pairs = load_pairs(self.config, workers=self.num_workers)
            if self.world > 1 and self.is_main:
                torch.distributed.barrier()
        return self._pairs

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        """An image batch in the run's memory format (``train.channels_last``: NHWC strides)."""
        if self.config.train.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimizer step on a collated batch {"z", "x", "box_x", ...}; returns the step's losses."""
        train = self.config.train
        self.model.train()
        dev = self.device
        z = self._images(torch.as_tensor(batch["z"]).to(dev, torch.float32, non_blocking=True))
        x = self._images(torch.as_tensor(batch["x"]).to(dev, torch.float32, non_blocking=True))
        box_x = torch.as_tensor(batch["box_x"]).to(dev, torch.float32, non_blocking=True)
        amp = train.amp and dev.type == "cuda"
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
        with ctx:
            out = self.step_module(z, x, box_x, _step_seed(train.seed, self.step, self.rank))
        loss = out["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        values = {k: v.detach().float() for k, v in out.items() if k != "ien_layers"}
        names = list(values)
        flat = torch.stack([values[k] for k in names])
        if "ien_layers" in out:
            flat = torch.cat([flat, out["ien_layers"].detach().float()])
        flat = flat.cpu().tolist()
        if not all(math.isfinite(v) for v in flat):
            raise TrainingError(f"the loss became non-finite at step {self.step + 1} "
                                f"({dict(zip(names, flat))}); lower train.lr or set train.grad_clip")
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        result = dict(zip(names, flat[: len(names)]))
        for name, value in zip(self.watched_names, flat[len(names):]):
            result[f"ien/{name}"] = value
        result["lr"] = self._last_lr = lr
        if "skipped_frames" in batch:        # unreadable frames the pair samplers skipped: warned once per file
            from training.pairs import report_skipped_frames

            result["skipped_frames"] = float(report_skipped_frames(batch, self._reported_frames, self.pairs()))
        return result

    # -- validation ----------------------------------------------------------------------------
    def validation_pairs(self):
        """The fixed held-out pairs of ``train.val_every`` (see :func:`load_validation_pairs`)."""
        if self._val_pairs is None:
            self._val_pairs = load_validation_pairs(self.config, workers=self.num_workers)
            if self._val_pairs is None:
                raise TrainingError("train.val_every: no source holds videos out (only video sources and the lone "
                                    "generated default are split by data.val_fraction)")
        return self._val_pairs

    @torch.no_grad()
    def validate(self, pairs=None) -> dict[str, float]:
        """Tracking loss and response-peak hit rate of the model (eval mode) on the held-out pairs
        (or on ``pairs``).

        A hit: the highest response lies within ``R_POS`` search-crop pixels of the target centre.
        The pairs, their crops and the RPN's anchor sampling are the same in every pass, so passes
        compare the weights alone. Uses no global random state (a resumed run stays exact).
        """
        pairs = self.validation_pairs() if pairs is None else pairs
        model, dev, train = self.model, self.device, self.config.train
        amp = train.amp and dev.type == "cuda"
        generator = torch.Generator().manual_seed(self.config.data.val_seed)
        loss_sum, hits, count = 0.0, 0.0, 0
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(pairs), train.batch_size):
                batch = torch.utils.data.default_collate(
                    [pairs[i] for i in range(start, min(len(pairs), start + train.batch_size))])
                z = self._images(torch.as_tensor(batch["z"]).to(dev, torch.float32))
                x = self._images(torch.as_tensor(batch["x"]).to(dev, torch.float32))
                box_x = torch.as_tensor(batch["box_x"]).to(dev, torch.float32)
                with torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext():
                    z_feat, x_feat = model.extract(z).out, model.extract(x).out
                    loss = model.losses(z_feat, x_feat, box_x, generator=generator)["total"]
                    peaks = response_peaks(model, z_feat, x_feat)
                centre = (box_x[:, :2] + box_x[:, 2:]) / 2
                hits += float(((peaks.float() - centre).norm(dim=1) <= model.R_POS).sum())
                loss_sum += float(loss) * z.shape[0]
                count += z.shape[0]
        finally:
            model.train(was_training)
        return {"val_loss": loss_sum / count, "val_peak_hit": hits / count}

    def fit_gap(self) -> dict[str, dict[str, float]]:
        """The validation pass on the held-out videos and the same pass on as many pairs of the
        training videos: how much better the weights fit the videos they learnt from (a large gap
        says more steps on the same videos will not carry to new ones)."""
        held = self.validate()
        seen = self.validate(load_validation_pairs(self.config, workers=self.num_workers, videos="training"))
        return {"held_out_videos": held, "training_videos": seen,
                "gap": {key: seen[key] - held[key] for key in held}}

    def _validate_and_keep_best(self) -> dict[str, float]:
        """A validation pass; a new lowest loss writes OUT/best.pth (every rank must call: rank 0
        measures and broadcasts, so every process takes the same best.pth decision)."""
        if self.world == 1:
            values = self.validate()
        else:
            measured = self.validate() if self.is_main else {"val_loss": 0.0, "val_peak_hit": 0.0}
            shared = torch.tensor([measured["val_loss"], measured["val_peak_hit"]], dtype=torch.float64,
                                  device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.broadcast(shared, src=0)
            values = dict(zip(("val_loss", "val_peak_hit"), shared.tolist()))
        if self.best_val is None or values["val_loss"] < self.best_val["val_loss"]:
            self.best_val = {"step": self.step, **values}
            state = self.state_dict()
            if self.is_main:
                save_atomic(state, self.best_path)
        return values

    # -- logs ----------------------------------------------------------------------------------
    def _open_logs(self) -> None:
        """Rewrite history.csv from the (resumed) history; open the TensorBoard writer (rank 0)."""
        if not self.is_main:
            return
        self._rewrite_csv()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("warning: the tensorboard package is not installed: no TensorBoard logs (pip install tensorboard); "
                  f"history.csv and history.json are written to {self.out_dir}", file=sys.stderr)
            return
        # purge_step: events of steps after the resumed checkpoint (a killed run's tail) are dropped
        self._tensorboard = SummaryWriter(str(self.out_dir / TENSORBOARD_DIR),
                                          purge_step=self.step + 1 if self.step else None)

    def _close_logs(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def _log(self, values: dict[str, float], val: dict[str, float] | None) -> None:
        """One logged step: a history row (history.json, a history.csv line) and TensorBoard scalars."""
        row = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
               **{k: round(v, 6) for k, v in values.items() if not k.startswith("ien/")}, **(val or {})}
        self.history["steps"].append(row)
        self._append_csv(row)
        if self._tensorboard is not None:
            for key, value in values.items():
                self._tensorboard.add_scalar(f"train/{key}", value, self.step)
            for key, value in (val or {}).items():
                self._tensorboard.add_scalar(f"val/{key[4:]}", value, self.step)

    def _csv_columns(self, rows: list[dict]) -> list[str]:
        columns = ["step", "epoch"]
        for row in rows:
            columns += [k for k in row if k not in columns]
        if self.config.train.val_every:
            columns += [k for k in ("val_loss", "val_peak_hit") if k not in columns]
        return columns

    def _rewrite_csv(self) -> None:
        import csv
        import io

        from common.atomic import write_text_atomic

        path, rows = self.out_dir / HISTORY_CSV, self.history["steps"]
        if not rows:
            path.unlink(missing_ok=True)
            self._csv_fields = None
            return
        self._csv_fields = self._csv_columns(rows)
        text = io.StringIO()
        writer = csv.DictWriter(text, self._csv_fields, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(path, text.getvalue())

    def _append_csv(self, row: dict) -> None:
        """Append one line; a killed run's partial last line is replaced by the rewrite on resume."""
        import csv

        if self._csv_fields is None or any(k not in self._csv_fields for k in row):
            self._rewrite_csv()               # the first row, or a new column: the whole file again
            return
        with open(self.out_dir / HISTORY_CSV, "a", newline="") as f:
            csv.DictWriter(f, self._csv_fields, restval="", lineterminator="\n").writerow(row)

    # -- the loop ------------------------------------------------------------------------------
    def _loader(self, epoch: int, start_step: int):
        train = self.config.train
        pairs = self.pairs()
        pairs.set_epoch(epoch)
        sampler = _StepBatches(self.steps_per_epoch, train.batch_size, self.rank, self.world, start_step)
        gen = torch.Generator().manual_seed(_step_seed(train.seed, epoch, 10_000 + self.rank))
        if self.num_workers > 0:
            # The workers are the parallelism: one OpenCV thread each. Set here, before the fork
            # (changing it inside a forked worker can deadlock on the parent's thread pool).
            import cv2

            cv2.setNumThreads(1)
        return torch.utils.data.DataLoader(
            pairs, batch_sampler=sampler, num_workers=self.num_workers, worker_init_fn=_seed_worker,
            generator=gen, pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.num_workers > 0 else None,
        )

    def _reduce_sums(self) -> tuple[dict, int]:
        if self.world == 1 or not self._sums:
            return dict(self._sums), self._count
        names = sorted(self._sums)
        t = torch.tensor([self._sums[k] for k in names] + [float(self._count)], dtype=torch.float64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t)
        vals = t.tolist()
        return dict(zip(names, vals[:-1])), int(vals[-1])

    def _epoch_progress(self) -> tuple[float, int]:
        """Seconds and pairs of the current epoch so far, counting the calls before a resume."""
        seconds, pairs = self._epoch_carried
        if self._epoch_mark is not None:
            started, first_step = self._epoch_mark
            seconds += time.time() - started
            pairs += (self.step - first_step) * self.config.train.batch_size
        return seconds, pairs

    def _finish_epoch(self, epoch: int, seconds: float, pairs: int) -> dict:
        sums, count = self._reduce_sums()
        record = {"epoch": epoch + 1, "step": self.step, "lr": self._last_lr}
        layers = {}
        for key, value in sums.items():
            mean = value / max(1, count)
            if key.startswith("ien/"):
                layers[key[4:]] = mean
            elif key == "skipped_frames":
                record[key] = value          # the epoch's total, not a mean per step
            elif key != "lr":
                record[key] = mean
        if layers:
            record["ien_layers"] = layers
        record["pairs"] = pairs
        record["time_s"] = round(seconds, 3)
        record["pairs_per_s"] = round(pairs / seconds, 2) if seconds > 0 else None
        self.history["epochs"].append(record)
        self._sums, self._count = {}, 0
        return record

    def fit(self, max_steps: int | None = None) -> dict:
        """Train until the config's last epoch, or for at most ``max_steps`` steps in this call.

        Checkpoints at every epoch end, every ``checkpoint_every`` steps, and where it stops early.
        Returns a summary (also the last JSON line the CLI prints).
        """
        train = self.config.train
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(self.config.to_dict(), self.out_dir / "config.json")
        self.pairs()                          # data errors before any progress output
        if train.val_every:
            self.validation_pairs()
        self._open_logs()
        try:
            return self._fit(max_steps)
        finally:
            self._close_logs()

    def _fit(self, max_steps: int | None) -> dict:
        train = self.config.train
        stop_at = self.total_steps if max_steps is None else min(self.total_steps, self.step + int(max_steps))
        started, start_step = time.time(), self.step
        stopped = False
        from tqdm import tqdm

        while self.step < stop_at and not stopped:
            epoch = self.step // self.steps_per_epoch
            first = self.step - epoch * self.steps_per_epoch
            self._epoch_mark = (time.time(), self.step)
            bar = tqdm(total=self.steps_per_epoch, initial=first, disable=not self.progress,
                       desc=f"epoch {epoch + 1}/{train.epochs}", unit="step", dynamic_ncols=True,
                       leave=True, file=sys.stderr)
            try:
                for batch in self._loader(epoch, first):
                    values = self.train_step(batch)
                    for key, value in values.items():
                        self._sums[key] = self._sums.get(key, 0.0) + value
                    self._count += 1
                    val = None
                    if train.val_every and self.step % train.val_every == 0:
                        val = self._validate_and_keep_best()
                        if self.is_main:
                            best = " (best)" if self.best_val["step"] == self.step else ""
                            tqdm.write(f"step {self.step}: val_loss {val['val_loss']:.4f}, "
                                       f"val_peak_hit {val['val_peak_hit']:.3f}{best}", file=sys.stderr)
                    if self.is_main and (self.step % train.log_every == 0 or val):
                        self._log(values, val)
                    shown = {"loss": values["loss"], "trk": values["tracking"]}
                    if "ien" in values:
                        shown["ien"] = values["ien"]
                    bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items()} | {"lr": f"{values['lr']:.1e}"})
                    bar.update()
                    end_of_epoch = self.step % self.steps_per_epoch == 0
                    if (train.checkpoint_every and self.step % train.checkpoint_every == 0
                            and not end_of_epoch and self.step < stop_at):
                        self.save_checkpoint()
                    if self.step >= stop_at:
                        break
                    if self._should_stop():
                        stopped = True
                        break
            except DatasetError as exc:          # a corrupt frame, maybe re-raised by a worker
                bar.leave = False
                raise DatasetError(_worker_error_message(exc)) from None
            except RuntimeError as exc:          # e.g. a worker killed by the OOM killer or a signal
                if "DataLoader worker" not in str(exc) or "Original Traceback" in str(exc):
                    raise
                if not self._stop_requested:
                    raise TrainingError(str(exc)) from None
                stopped = True                   # between two steps: the state is consistent
            finally:
                bar.close()
            if self.step % self.steps_per_epoch == 0:
                record = self._finish_epoch(epoch, *self._epoch_progress())
                self._epoch_carried, self._epoch_mark = (0.0, 0), (time.time(), self.step)
                self.epoch = epoch + 1
                if self.is_main:
                    brief = {k: round(v, 5) for k, v in record.items() if isinstance(v, float)}
                    print(f"epoch {epoch + 1}: {json.dumps(brief)}", file=sys.stderr)
            self.save_checkpoint()
        elapsed = time.time() - started
        summary = self.summary(elapsed, (self.step - start_step) * train.batch_size)
        summary["interrupted"] = stopped
        return summary

    def request_stop(self) -> None:
        """Ask ``fit`` to stop after the current step and write a checkpoint (e.g. from a signal handler)."""
        self._stop_requested = True

    def _should_stop(self) -> bool:
        if self.world == 1:
            return self._stop_requested
        flag = torch.tensor([float(self._stop_requested)],
                            device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)   # every rank stops together
        return bool(flag.item())

    def summary(self, seconds: float, pairs: int) -> dict:
        epochs = self.history["epochs"]
        first, last = (epochs[0], epochs[-1]) if epochs else ({}, {})
        return {
            "epochs": self.epoch,
            "steps": self.step,
            "finished": self.step >= self.total_steps,
            "final": {k: v for k, v in last.items() if k not in ("epoch", "step", "pairs", "time_s", "pairs_per_s")},
            "loss_first_epoch": first.get("loss"),
            "loss_last_epoch": last.get("loss"),
            "ien_first_epoch": first.get("ien"),
            "ien_last_epoch": last.get("ien"),
            "ien_rel_first_epoch": first.get("ien_rel"),
            "ien_rel_last_epoch": last.get("ien_rel"),
            "time_s": round(seconds, 2),
            "pairs_per_s": round(pairs / seconds, 2) if seconds > 0 else None,
            "world_size": self.world,
            "device": str(self.device),
            "checkpoint": str(self.checkpoint_path),
            "best_val": self.best_val,
            "best_checkpoint": str(self.best_path) if self.best_val else None,
        }


def _write_json_atomic(obj, path: Path) -> None:
    from common.atomic import write_text_atomic  # umask mode; a killed run's temporary is cleaned

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------
def export_weights(checkpoint: str | Path, out_path: str | Path, half: bool = False) -> dict:
    """Write a small inference checkpoint: {"config", "model"} (+ a brief training record).

    ``half``: store floating-point weights as float16 (load_state_dict casts them back to float32).
    Loadable by ``tracker.build_tracker(name, checkpoint=out_path)`` (it reads config["model"]).
    """
    ckpt = load_checkpoint(checkpoint)
    if "model" not in ckpt["config"]:
        raise CheckpointError(f"{checkpoint}: its config has no [model] section (not a tracker checkpoint)")
    build_model(ckpt["config"]["model"]).load_state_dict(ckpt["model"])   # check it loads
    state = {k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v.detach().cpu())
             for k, v in ckpt["model"].items()}
    epochs = ckpt.get("history", {}).get("epochs", []) if isinstance(ckpt.get("history"), dict) else []
    exported = {
        "config": ckpt["config"],
        "model": state,
        "trained": {"epochs": ckpt.get("epoch"), "steps": ckpt.get("step"),
                    "last_epoch": epochs[-1] if epochs else None,
                    "dtype": "float16" if half else "float32"},
    }
    save_atomic(exported, out_path)
    return {"export": str(out_path), "bytes": Path(out_path).stat().st_size, "dtype": exported["trained"]["dtype"]}
