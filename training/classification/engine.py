"""Training and evaluation of the IEN classifiers (one code path for IEN, plain CNN and e2cnn models).

Classifier = backbone -> group max-pool P -> global average pool -> head (NOTES §1: pooling before
the classifier; the head is one linear layer, or the authors' Linear -> BatchNorm1d -> ELU -> Linear). Each batch x is doubled with a transformed copy Tx; the loss is cross-entropy on both
halves plus β · IEN over the backbone's watched layers (β = 0: the plain-CNN baseline, trained on the
same doubled batches). Optimizer and schedule default to the authors' recipe: Adam (weight decay 1e-7)
with a cosine learning rate from 5e-3 down to 1e-5 over the run.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from backbones import BackboneConfig, IENLoss, build_backbone, double_batch, group_max_pool, parse_group
from backbones.diagnostics import equivariance_errors
from backbones.transforms import BatchTransform, GroupElement, group_elements, sample_transform
from common.checkpoints import CheckpointError, load_checkpoint, save_atomic
from common.config import ConfigError, from_dict, to_dict
from common.device import DeviceError
from common.device import resolve_device as common_resolve_device
from data.classification import DATASETS, DEFAULT_IMAGE_SIZE, ClassificationData, load_dataset

DEFAULT_IEN_SCALES = (2.0 / 3.0, 1.5)  # zoom range of T for scale-mnist
AUTHORS_MODELS = ("authors-cnnbasic", "e2-authors-cnnbasic")  # networks whose defaults are the authors' head, init and raw input
HEADS = ("linear", "authors")
INITS = ("default", "xavier")
INPUT_NORMS = ("standardize", "unit")
LR_SCHEDULES = ("cosine", "authors")
# mean cross-entropy of an epoch above this many times chance level (ln classes) = a diverged run
DIVERGED_CE_FACTOR = 100.0


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
        for name in ("image_size", "lr_cycle_epochs", "train_limit", "test_limit"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.beta, (int, float)) and self.beta >= 0):
            raise ConfigError(f"beta must be a number >= 0, got {self.beta!r}")
        self.beta = float(self.beta)
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


def authors_head(model_name: str, features: int, num_classes: int, width_mult: float = 1.0) -> nn.Module:
    """The authors' classifier head for a network (after group pooling and global average pooling).

    Rot-MNIST CNNBasic: Linear(f, f) -> BatchNorm1d -> ELU -> Linear. VGG (Rot-TIM): Linear(f, 1024)
    -> BatchNorm1d -> ELU -> Dropout(0.5) -> Linear. ResNet-18: one linear layer (their ResNet has no
    hidden layer; its last block already ends in BatchNorm + ReLU here).
    """
    model_name = model_name.removeprefix("e2-")     # a steerable twin takes its plain network's head
    if model_name.startswith("resnet"):
        return nn.Linear(features, num_classes)
    if model_name == "vgg":
        hidden = max(1, int(round(1024 * width_mult)))
        return nn.Sequential(nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ELU(inplace=True),
                             nn.Dropout(0.5), nn.Linear(hidden, num_classes))
    return nn.Sequential(nn.Linear(features, features), nn.BatchNorm1d(features), nn.ELU(inplace=True),
                         nn.Linear(features, num_classes))


def xavier_init(model: nn.Module) -> None:
    """The authors' Rot-MNIST init: Xavier-uniform conv and linear weights, biases 0.01."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.01)


class GroupPoolClassifier(nn.Module):
    """backbone -> P (group max-pool) -> global average pool -> head (``fc``)."""

    def __init__(self, backbone: nn.Module, num_classes: int, head: str = "linear", model_name: str = "",
                 width_mult: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.spec = backbone.spec
        features = self.spec.pooled_channels(backbone.out_channels)
        if head == "authors":
            self.fc = authors_head(model_name, features, num_classes, width_mult)
        elif head == "linear":
            self.fc = nn.Linear(features, num_classes)
        else:
            raise ConfigError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = self.backbone(x)
        pooled = group_max_pool(out.out, self.spec).mean(dim=(2, 3))
        return self.fc(pooled), out.watched


def build_classifier(cfg: "TrainConfig", num_classes: int) -> GroupPoolClassifier:
    """The run's classifier, initialised as ``cfg.init`` says (call after seeding)."""
    model = GroupPoolClassifier(build_backbone(cfg.backbone), num_classes, cfg.head, cfg.backbone.name,
                                cfg.backbone.width_mult)
    if cfg.init == "xavier":
        xavier_init(model)
    return model


def resolve_image_size(cfg: "TrainConfig", backbone: nn.Module) -> int:
    """``cfg.image_size``, or the dataset's size moved up to one the backbone is exactly equivariant at."""
    if cfg.image_size is not None:
        return cfg.image_size
    nominal = DEFAULT_IMAGE_SIZE[cfg.dataset]
    return backbone.aligned_size(nominal) if hasattr(backbone, "aligned_size") else nominal


def conv_channels(backbone: nn.Module) -> list[int]:
    """Output channels of every convolution, plain (nn.Conv2d) or steerable (e2cnn R2Conv)."""
    counts = []
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            counts.append(int(m.out_channels))
        elif type(m).__name__ == "R2Conv" and hasattr(m, "out_type"):
            counts.append(int(m.out_type.size))
    return counts


def portable_state(model: nn.Module) -> dict:
    """state_dict as a freshly built model lays it out.

    e2cnn's R2Conv holds its expanded filter as a buffer when built and in eval mode, but drops it
    in train mode; saving in eval mode keeps that buffer (computed from the trained weights), so
    ``backbones.checkpoints.backbone_from_checkpoint`` and ``tools/equivariance.py`` load it strictly.
    """
    was_training = model.training
    model.eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train(was_training)
    return state


def load_portable_state(model: nn.Module, state: dict) -> None:
    was_training = model.training
    model.eval()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not match the config ({str(exc).splitlines()[0]})") from None
    model.train(was_training)


def learning_rate(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """``cosine``: from the cycle's peak (first step) down to lr_min (last step) of each cycle (one cycle by
    default). ``authors``: their OneCycle: lr_min at step 0, a cosine rise to lr_max over the first quarter
    of the cycle, a cosine fall back to lr_min at its end, then lr_min (they stop updating the rate)."""
    cycle = max(1, (cfg.lr_cycle_epochs or cfg.epochs) * steps_per_epoch)
    if cfg.lr_schedule == "authors":
        rise = max(1, cycle // 4)
        if step >= cycle:
            return cfg.lr_min
        if step <= rise:
            return cfg.lr_max - (cfg.lr_max - cfg.lr_min) * 0.5 * (1.0 + math.cos(math.pi * step / rise))
        return cfg.lr_min + (cfg.lr_max - cfg.lr_min) * 0.5 * (1.0 + math.cos(math.pi * (step - rise) / max(1, cycle - rise)))
    k, t = divmod(step, cycle)
    peak = max(cfg.lr_min, cfg.lr_max * cfg.lr_cycle_decay**k)
    return cfg.lr_min + (peak - cfg.lr_min) * 0.5 * (1.0 + math.cos(math.pi * t / max(1, cycle - 1)))


class Normalizer:
    """Stored pixels -> [0, 1] -> per-channel standardization."""

    def __init__(self, pixel_scale: float, mean: list[float], std: list[float]):
        self.pixel_scale = float(pixel_scale)
        self.mean, self.std = list(mean), list(std)

    def unit(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / self.pixel_scale

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.standardize(self.unit(images))

    def to_dict(self) -> dict:
        return {"pixel_scale": self.pixel_scale, "mean": self.mean, "std": self.std}


def make_normalizer(cfg: "TrainConfig", data: ClassificationData) -> Normalizer:
    """Standardization by the train set's channel statistics, or raw [0, 1] pixels (``input_norm = "unit"``)."""
    if cfg.input_norm == "unit":
        return Normalizer(data.pixel_scale, [0.0] * data.channels, [1.0] * data.channels)
    return Normalizer(data.pixel_scale, *data.channel_stats())


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=not enabled)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Shuffling and T of epoch e depend only on (seed, e): a resumed run repeats them exactly."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _doubling_spec(cfg: TrainConfig):
    spec = parse_group(cfg.backbone.group)
    return parse_group("R4") if spec.is_plain else spec


def equivariance_elements(cfg: TrainConfig) -> list[GroupElement]:
    """The transformations the equivariance error is measured on: the group's non-identity
    elements (90° rotations for group 'none'), or the two ends of ien_scales for scale runs."""
    if cfg.ien_scales is not None:
        return [GroupElement(scale=cfg.ien_scales[0]), GroupElement(scale=cfg.ien_scales[1])]
    return group_elements(_doubling_spec(cfg), include_identity=False)


@torch.no_grad()
def evaluate_accuracy(model: GroupPoolClassifier, images, labels, normalizer: Normalizer, device, batch_size: int = 256):
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(images), batch_size):
        x = normalizer(images[start : start + batch_size].to(device))
        y = labels[start : start + batch_size].to(device)
        logits, _ = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    n = max(1, len(images))
    return correct / n, loss_sum / n


DOUBLED_TEST_SALT = 7_919  # the doubled test set's T is drawn from (seed, salt): the same in every epoch


def doubled_test_transform(cfg: TrainConfig, n: int) -> BatchTransform:
    """One non-identity T per test image, drawn once per run (the authors' doubled test set)."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + DOUBLED_TEST_SALT)
    scales = tuple(cfg.ien_scales) if cfg.ien_scales is not None else None
    return sample_transform(_doubling_spec(cfg), n, generator=gen, scales=scales)


@torch.no_grad()
def evaluate_doubled(model: GroupPoolClassifier, images, labels, normalizer: Normalizer, device,
                     transform: BatchTransform, batch_size: int = 256) -> float:
    """Accuracy on the doubled test set [x; Tx] (the authors' validation: each test image and one
    transformed copy, 2N predictions)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = normalizer.unit(images[start : start + batch_size].to(device))
        y = labels[start : start + batch_size].to(device)
        tx = BatchTransform(transform.elements[start : start + len(x)]).apply(x)
        for part in (x, tx):
            logits, _ = model(normalizer.standardize(part))
            correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    return correct / max(1, 2 * len(images))


def protocols(history: list[dict], test_accuracy: float) -> dict:
    """Both evaluation protocols, labelled: ours (last epoch, the test set once) and the authors'
    (the best epoch by accuracy on the doubled test set, the number their tables report)."""
    ours = {"label": "ours: last epoch, test set once", "accuracy": test_accuracy,
            "epoch": history[-1]["epoch"] if history else None}
    scored = [h for h in history if h.get("doubled_test_accuracy") is not None]
    if not scored:
        authors = {"label": "authors': best epoch on the doubled test set (x and a rotated copy)",
                   "accuracy": None, "epoch": None, "epochs_scored": 0,
                   "note": "not measured (eval_each_epoch = false, or a run from before this option)"}
    else:
        best = max(scored, key=lambda h: (h["doubled_test_accuracy"], -h["epoch"]))
        authors = {"label": "authors': best epoch on the doubled test set (x and a rotated copy)",
                   "accuracy": best["doubled_test_accuracy"], "epoch": best["epoch"],
                   "epochs_scored": len(scored), "last_epoch_accuracy": scored[-1]["doubled_test_accuracy"]}
    return {"ours": ours, "authors": authors}


def _kept(ckpt_path: Path) -> str:
    return f"; {ckpt_path} keeps the last good epoch" if ckpt_path.is_file() else "; nothing was saved"


def check_finite_model(model: nn.Module, where: str) -> None:
    """A diverged run: any non-finite weight or BatchNorm statistic stops it (before it is saved)."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise TrainError(f"training diverged {where}: {name} holds NaN or inf (lower lr_max or beta)")


def summarize_equivariance(result: dict) -> dict:
    per_layer = {ly: sum(v.values()) / max(1, len(v)) for ly, v in result["errors"].items()}
    return {
        "layers": result["layers"], "elements": result["elements"], "per_layer": per_layer,
        "mean": sum(per_layer.values()) / max(1, len(per_layer)), "errors": result["errors"],
    }


def write_json_atomic(obj, path: Path) -> None:
    """JSON with NaN/inf refused (a diverged number must never reach a results file), written atomically."""
    from common.atomic import write_text_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        text = json.dumps(obj, indent=1, allow_nan=False)
    except ValueError:
        raise TrainError(f"refusing to write {path}: it would hold a non-finite number (NaN or inf)") from None
    write_text_atomic(path, text)


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


def resolve_device(name: str | None) -> torch.device:
    """:func:`common.device.resolve_device` with its error as a ConfigError."""
    try:
        return common_resolve_device(name)
    except DeviceError as exc:
        raise ConfigError(str(exc)) from None


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    data: ClassificationData | None = None,
    data_cache: dict | None = None,
) -> dict:
    """Train (or continue) the run of ``cfg`` in ``out_dir``; returns and writes its metrics.

    Writes ``checkpoint.pth`` atomically after every epoch and ``metrics.json`` at the end.
    ``data`` skips loading the dataset; ``data_cache`` (a dict) shares loaded datasets between runs
    (the study), keyed by what defines them. A non-finite loss, weight or metric stops the run with
    a :class:`TrainError` (nothing non-finite is saved).
    """
    out_dir = Path(out_dir)
    ckpt_path, metrics_path = out_dir / "checkpoint.pth", out_dir / "metrics.json"
    device = device if isinstance(device, torch.device) else resolve_device(device)
    ckpt = None
    if ckpt_path.exists():
        if not resume:
            raise TrainError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
        ckpt = load_checkpoint(ckpt_path)
        saved = from_dict(TrainConfig, ckpt["config"], f"{ckpt_path} config")
        diffs = config_differences(cfg, saved)
        if diffs:
            raise TrainError(
                f"--resume: {out_dir} was trained with a different config ({'; '.join(diffs)}; saved vs "
                "requested): drop those options or choose another --out"
            )
        if ckpt.get("epoch", 0) >= cfg.epochs and metrics_path.is_file():
            log(f"{out_dir}: already finished ({cfg.epochs} epochs); metrics in {metrics_path}")
            return json.loads(metrics_path.read_text())

    torch.manual_seed(cfg.seed)
    # built before the data: the default input size depends on the network (Backbone.aligned_size)
    probe = build_backbone(cfg.backbone)
    size = int(ckpt["image_size"]) if ckpt is not None and ckpt.get("image_size") else resolve_image_size(cfg, probe)
    if cfg.image_size is not None and hasattr(probe, "aligned_size") and probe.aligned_size(size) != size:
        log(f"note: {cfg.backbone.name} is not exactly equivariant at {size} px (nearest aligned size "
            f"{probe.aligned_size(size)}): its strided layers sample an off-centre grid")
    del probe
    if data is None:
        key = (cfg.dataset, cfg.data, size, cfg.seed)
        if data_cache is not None and key in data_cache:
            data = data_cache[key]
        else:
            data = load_dataset(cfg.dataset, cfg.data, size, seed=cfg.seed)
            if data_cache is not None:
                data_cache[key] = data
    data = data.subset(cfg.train_limit, cfg.test_limit)
    normalizer = Normalizer(**ckpt["normalization"]) if ckpt is not None else make_normalizer(cfg, data)

    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg, data.num_classes).to(device)
    backbone = model.backbone
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr_max, weight_decay=cfg.weight_decay)
    spec = model.spec
    ien = IENLoss(spec, cfg.beta, cfg.layer_weights) if cfg.beta > 0 else None
    if ien is not None and cfg.layer_weights is not None and len(cfg.layer_weights) != len(backbone.watched_names):
        raise ConfigError(
            f"{len(cfg.layer_weights)} layer weights for the {len(backbone.watched_names)} watched layers "
            f"of {cfg.backbone.name} ({', '.join(backbone.watched_names)})"
        )
    double_spec = _doubling_spec(cfg)
    scales = tuple(cfg.ien_scales) if cfg.ien_scales is not None else None
    test_transform = doubled_test_transform(cfg, len(data.test_labels)) if cfg.eval_each_epoch else None

    start_epoch, history = 0, []
    if ckpt is not None:
        load_portable_state(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, history = int(ckpt["epoch"]), list(ckpt.get("history", []))
        log(f"resuming {out_dir} at epoch {start_epoch + 1}/{cfg.epochs}")

    n_train = len(data.train_labels)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    ce_limit = DIVERGED_CE_FACTOR * math.log(max(2, data.num_classes))
    base = {"config": to_dict(cfg), "normalization": normalizer.to_dict(), "num_classes": data.num_classes,
            "dataset": data.name, "image_size": data.image_size}
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        gen = _epoch_generator(cfg.seed, epoch)
        order = torch.randperm(n_train, generator=gen)
        sums = {"ce": 0.0, "ien": 0.0, "correct": 0, "seen": 0}
        per_layer = None
        bar = _progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", progress)
        for i in range(steps_per_epoch):
            lr = learning_rate(epoch * steps_per_epoch + i, steps_per_epoch, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x = normalizer.unit(data.train_images[idx].to(device))
            y = data.train_labels[idx].to(device)
            # T acts on [0, 1] pixels so that its zero fill is black, as in the data
            xx, transform = double_batch(x, double_spec, generator=gen, scales=scales)
            logits, watched = model(normalizer.standardize(xx))
            yy = torch.cat([y, y])
            ce = F.cross_entropy(logits, yy)
            loss = ce
            if ien is not None:
                ien_out = ien(watched, transform)
                loss = loss + ien_out.total
                sums["ien"] += float(ien_out.total.detach()) * len(idx)
                per_layer = ien_out.per_layer * len(idx) if per_layer is None else per_layer + ien_out.per_layer * len(idx)
            if not torch.isfinite(loss):
                raise TrainError(f"training diverged: loss is {float(loss)} at epoch {epoch + 1}, step {i + 1} "
                                 f"(lower lr_max or beta){_kept(ckpt_path)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["ce"] += float(ce.detach()) * len(idx)
            sums["correct"] += int((logits.argmax(1) == yy).sum())
            sums["seen"] += len(idx)
            bar.set_postfix(ce=f"{sums['ce'] / sums['seen']:.3f}", ien=f"{sums['ien'] / sums['seen']:.3g}", lr=f"{lr:.1e}")
            bar.update()
        bar.close()
        seen = max(1, sums["seen"])
        record = {
            "epoch": epoch + 1, "lr_end": lr, "ce": sums["ce"] / seen, "ien": sums["ien"] / seen,
            "train_accuracy": sums["correct"] / (2 * seen), "seconds": time.time() - t0,
        }
        if record["ce"] > ce_limit:
            raise TrainError(f"training diverged: mean cross-entropy {record['ce']:.3g} in epoch {epoch + 1} "
                             f"(chance level is {math.log(max(2, data.num_classes)):.2f}; lower lr_max or beta)"
                             f"{_kept(ckpt_path)}")
        check_finite_model(model, f"in epoch {epoch + 1}")
        if per_layer is not None:
            record["ien_per_layer"] = [float(v) / seen for v in per_layer]
        if test_transform is not None:
            record["doubled_test_accuracy"] = evaluate_doubled(
                model, data.test_images, data.test_labels, normalizer, device, test_transform)
        history.append(record)
        save_atomic({**base, "model": portable_state(model), "optimizer": optimizer.state_dict(),
                     "epoch": epoch + 1, "history": history}, ckpt_path)
        doubled = (f"  doubled test acc {100 * record['doubled_test_accuracy']:.2f}%"
                   if "doubled_test_accuracy" in record else "")
        log(f"epoch {epoch + 1}/{cfg.epochs}  ce {record['ce']:.4f}  ien {record['ien']:.4g}  "
            f"train acc {100 * record['train_accuracy']:.2f}%{doubled}  ({record['seconds']:.1f}s)")

    metrics = evaluate_run(model, cfg, data, normalizer, device, history)
    metrics["run"] = out_dir.name
    write_json_atomic(metrics, metrics_path)
    authors = metrics["protocols"]["authors"]
    log(f"test accuracy {100 * metrics['test_accuracy']:.2f}% (ours: last epoch)"
        + (f", {100 * authors['accuracy']:.2f}% (authors': best epoch {authors['epoch']} on the doubled test set)"
           if authors["accuracy"] is not None else "")
        + f"  mean equivariance error {metrics['equivariance_error']['mean']:.4g}  -> {metrics_path}")
    return metrics


def evaluate_run(model, cfg: TrainConfig, data: ClassificationData, normalizer: Normalizer, device, history) -> dict:
    """Test accuracy (both protocols), sizes, per-layer equivariance error on test images, and timings."""
    t0 = time.time()
    acc, test_loss = evaluate_accuracy(model, data.test_images, data.test_labels, normalizer, device)
    if not math.isfinite(test_loss):
        raise TrainError(f"training diverged: the test loss is {test_loss} (lower lr_max or beta)")
    eq_images = normalizer.unit(data.test_images[: cfg.eq_images])
    eq = equivariance_errors(model.backbone, eq_images, equivariance_elements(cfg), normalize=normalizer.standardize)
    summary = summarize_equivariance(eq)
    if not all(math.isfinite(v) for v in summary["per_layer"].values()):
        raise TrainError("training diverged: the equivariance error is not finite (lower lr_max or beta)")
    channels = conv_channels(model.backbone)
    train_seconds = sum(h["seconds"] for h in history)
    return {
        "config": to_dict(cfg),
        "dataset": {"name": data.name, "train_images": len(data.train_labels), "test_images": len(data.test_labels),
                    "image_size": data.image_size, "num_classes": data.num_classes, "info": data.info},
        "test_accuracy": acc,
        "test_loss": test_loss,
        "protocols": protocols(history, acc),
        "final_train_accuracy": history[-1]["train_accuracy"] if history else None,
        "parameters": {"backbone": sum(p.numel() for p in model.backbone.parameters()),
                       "total": sum(p.numel() for p in model.parameters())},
        "channels": {"per_layer": channels, "total": sum(channels)},
        "equivariance_error": summary,
        "time": {"train_seconds": train_seconds, "seconds_per_epoch": train_seconds / max(1, len(history)),
                 "eval_seconds": time.time() - t0},
        "device": str(device),
        "epochs_trained": len(history),
        "history": history,
    }


def evaluate_checkpoint(path: str | Path, device=None, data: ClassificationData | None = None) -> dict:
    """Re-evaluate a saved run (its config, input size and normalization come from the checkpoint)."""
    ckpt = load_checkpoint(path)
    cfg = from_dict(TrainConfig, ckpt["config"], f"{path} config")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if data is None:
        size = ckpt.get("image_size") or resolve_image_size(cfg, build_backbone(cfg.backbone))
        data = load_dataset(cfg.dataset, cfg.data, int(size), seed=cfg.seed)
    data = data.subset(cfg.train_limit, cfg.test_limit)
    model = build_classifier(cfg, data.num_classes).to(device)
    load_portable_state(model, ckpt["model"])
    return evaluate_run(model, cfg, data, Normalizer(**ckpt["normalization"]), device, ckpt.get("history", []))
