"""Training and evaluation of the IEN classifiers (one code path for IEN, plain CNN and e2cnn models).

Classifier = backbone -> group max-pool P -> global average pool -> head (the IEN paper: pooling before
the classifier; the head is one linear layer, or the authors' Linear -> BatchNorm1d -> ELU -> Linear). Each batch x is doubled with a transformed copy Tx; the loss is cross-entropy on both
halves plus β · IEN over the backbone's watched layers (β = 0: the plain-CNN baseline, trained on the
same doubled batches). Optimizer and schedule default to the authors' recipe: Adam (weight decay 1e-7)
with a cosine learning rate from 5e-3 down to 1e-5 over the run.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from backbones import IENLoss, build_backbone, double_batch, group_max_pool, parse_group
from backbones.diagnostics import equivariance_errors
from backbones.transforms import BatchTransform, GroupElement, group_elements, sample_transform
from common.checkpoints import CheckpointError, load_checkpoint
from common.config import ConfigError, from_dict, to_dict
from common.device import DeviceError
from common.device import resolve_device as common_resolve_device
from data.classification import DEFAULT_IMAGE_SIZE, ClassificationData, load_dataset
from training.run import HistoryLog, RunFolder, non_finite

from .config import (
    DIVERGED_CE_FACTOR,
    HEADS,
    TrainConfig,
    TrainError,
    config_differences,
)


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


# an epoch's training accuracy at or below this many times chance (1 / classes) is reported as a collapse
CHANCE_FACTOR = 1.5


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


def resolve_device(name: str | None) -> torch.device:
    """:func:`common.device.resolve_device` with its error as a ConfigError."""
    try:
        return common_resolve_device(name)
    except DeviceError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class _Run:
    """What one classification run trains with (built by :func:`_prepare`)."""

    cfg: TrainConfig
    data: ClassificationData
    normalizer: "Normalizer"
    model: nn.Module
    optimizer: torch.optim.Optimizer
    ien: IENLoss | None
    device: torch.device
    history: list
    start_epoch: int
    test_transform: BatchTransform | None


def _existing_checkpoint(cfg: TrainConfig, folder: RunFolder, resume: bool) -> dict | None:
    """The run's checkpoint to continue (``resume``), None for a new run; refuses a mismatch."""
    ckpt_path = folder.checkpoint_path
    if not ckpt_path.exists():
        return None
    if not resume:
        raise TrainError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
    ckpt = folder.load()
    saved = from_dict(TrainConfig, ckpt["config"], f"{ckpt_path} config")
    diffs = config_differences(cfg, saved)
    if diffs:
        raise TrainError(f"--resume: {folder.path} was trained with a different config ({'; '.join(diffs)}; saved vs "
                         "requested): drop those options or choose another --out")
    return ckpt


def _prepare(cfg: TrainConfig, ckpt: dict | None, device, data, data_cache, log) -> _Run:
    torch.manual_seed(cfg.seed)
    # built before the data: the default input size depends on the network (Backbone.aligned_size)
    probe = build_backbone(cfg.backbone)
    size = int(ckpt["image_size"]) if ckpt is not None and ckpt.get("image_size") else resolve_image_size(cfg, probe)
    if cfg.image_size is not None and hasattr(probe, "aligned_size") and probe.aligned_size(size) != size:
        log(f"note: {cfg.backbone.name} is not exactly equivariant at {size} px (nearest aligned size "
            f"{probe.aligned_size(size)}): its strided layers sample an off-centre grid")
    if data is None:
        key = (cfg.dataset, cfg.data, size, cfg.seed)
        data = data_cache.get(key) if data_cache is not None else None
        if data is None:
            data = load_dataset(cfg.dataset, cfg.data, size, seed=cfg.seed)
            if data_cache is not None:
                data_cache[key] = data
    data = data.subset(cfg.train_limit, cfg.test_limit)
    normalizer = Normalizer(**ckpt["normalization"]) if ckpt is not None else make_normalizer(cfg, data)
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg, data.num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr_max, weight_decay=cfg.weight_decay)
    ien = IENLoss(model.spec, cfg.beta, cfg.layer_weights, normalize=cfg.ien_normalize) if cfg.beta > 0 else None
    watched = model.backbone.watched_names
    if ien is not None and cfg.layer_weights is not None and len(cfg.layer_weights) != len(watched):
        raise ConfigError(f"{len(cfg.layer_weights)} layer weights for the {len(watched)} watched layers "
                          f"of {cfg.backbone.name} ({', '.join(watched)})")
    start_epoch, history = 0, []
    if ckpt is not None:
        load_portable_state(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, history = int(ckpt["epoch"]), list(ckpt.get("history", []))
    test_transform = doubled_test_transform(cfg, len(data.test_labels)) if cfg.eval_each_epoch else None
    return _Run(cfg, data, normalizer, model, optimizer, ien, device, history, start_epoch, test_transform)


def _train_epoch(run: _Run, epoch: int, progress: bool, ckpt_path: Path) -> dict:
    """One epoch over the doubled batches; its history record (diverged losses raise TrainError)."""
    cfg, data, model = run.cfg, run.data, run.model
    n_train = len(data.train_labels)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    double_spec, scales = _doubling_spec(cfg), tuple(cfg.ien_scales) if cfg.ien_scales is not None else None
    t0 = time.time()
    gen = _epoch_generator(cfg.seed, epoch)
    order = torch.randperm(n_train, generator=gen)
    sums = {"ce": 0.0, "ien": 0.0, "correct": 0, "seen": 0}
    per_layer, lr = None, cfg.lr_max
    bar = _progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", progress)
    for i in range(steps_per_epoch):
        lr = learning_rate(epoch * steps_per_epoch + i, steps_per_epoch, cfg)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        x = run.normalizer.unit(data.train_images[idx].to(run.device))
        y = data.train_labels[idx].to(run.device)
        # T acts on [0, 1] pixels so that its zero fill is black, as in the data
        xx, transform = double_batch(x, double_spec, generator=gen, scales=scales)
        logits, watched = model(run.normalizer.standardize(xx))
        yy = torch.cat([y, y])
        ce = F.cross_entropy(logits, yy)
        loss = ce
        if run.ien is not None:
            ien_out = run.ien(watched, transform)
            progress_epochs = epoch + i / steps_per_epoch
            ramp = min(1.0, progress_epochs / cfg.beta_warmup_epochs) if cfg.beta_warmup_epochs > 0 else 1.0
            loss = loss + ramp * ien_out.total
            sums["ien"] += float(ien_out.total.detach()) * len(idx)
            per_layer = ien_out.per_layer * len(idx) if per_layer is None else per_layer + ien_out.per_layer * len(idx)
        if non_finite({"loss": float(loss.detach())}):
            raise TrainError(f"training diverged: loss is {float(loss.detach())} at epoch {epoch + 1}, step {i + 1} "
                             f"(lower lr_max or beta){_kept(ckpt_path)}")
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        sums["ce"] += float(ce.detach()) * len(idx)
        sums["correct"] += int((logits.argmax(1) == yy).sum())
        sums["seen"] += len(idx)
        bar.set_postfix(ce=f"{sums['ce'] / sums['seen']:.3f}", ien=f"{sums['ien'] / sums['seen']:.3g}", lr=f"{lr:.1e}")
        bar.update()
    bar.close()
    seen = max(1, sums["seen"])
    record = {"epoch": epoch + 1, "lr_end": lr, "ce": sums["ce"] / seen, "ien": sums["ien"] / seen,
              "train_accuracy": sums["correct"] / (2 * seen), "seconds": time.time() - t0}
    if per_layer is not None:
        record["ien_per_layer"] = [float(v) / seen for v in per_layer]
    return record


def _check_epoch(run: _Run, record: dict, ckpt_path: Path, log) -> None:
    """A diverged epoch stops the run; an epoch still at chance level is said in the log."""
    classes = max(2, run.data.num_classes)
    if record["ce"] > DIVERGED_CE_FACTOR * math.log(classes):
        raise TrainError(f"training diverged: mean cross-entropy {record['ce']:.3g} in epoch {record['epoch']} "
                         f"(chance level is {math.log(classes):.2f}; lower lr_max or beta){_kept(ckpt_path)}")
    check_finite_model(run.model, f"in epoch {record['epoch']}")
    if record["train_accuracy"] <= CHANCE_FACTOR / classes:
        log(f"warning: epoch {record['epoch']}: training accuracy {100 * record['train_accuracy']:.1f}% is at chance "
            f"level ({100 / classes:.1f}%): the network is not learning (a collapse; try a smaller beta, a warm-up "
            f"of beta, or a lower lr_max)")


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

    Writes ``checkpoint.pth`` atomically after every epoch, ``history.csv`` (a row per epoch) and
    ``metrics.json`` at the end; a second process writing the same ``out_dir`` is refused
    (:class:`training.run.RunFolder`). ``data`` skips loading the dataset; ``data_cache`` (a dict)
    shares loaded datasets between runs (the study), keyed by what defines them. A non-finite loss,
    weight or metric stops the run with a :class:`TrainError` (nothing non-finite is saved).
    """
    folder = RunFolder(out_dir)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    with folder.claim():
        ckpt = _existing_checkpoint(cfg, folder, resume)
        metrics_path = folder.path / "metrics.json"
        if ckpt is not None and ckpt.get("epoch", 0) >= cfg.epochs and metrics_path.is_file():
            log(f"{folder.path}: already finished ({cfg.epochs} epochs); metrics in {metrics_path}")
            return json.loads(metrics_path.read_text())
        run = _prepare(cfg, ckpt, device, data, data_cache, log)
        if ckpt is not None:
            log(f"resuming {folder.path} at epoch {run.start_epoch + 1}/{cfg.epochs}")
        history_csv = HistoryLog(folder)
        history_csv.open(run.history, 0, tensorboard=False)
        base = {"config": to_dict(cfg), "normalization": run.normalizer.to_dict(), "num_classes": run.data.num_classes,
                "dataset": run.data.name, "image_size": run.data.image_size}
        run.model.train()
        for epoch in range(run.start_epoch, cfg.epochs):
            record = _train_epoch(run, epoch, progress, folder.checkpoint_path)
            _check_epoch(run, record, folder.checkpoint_path, log)
            if run.test_transform is not None:
                record["doubled_test_accuracy"] = evaluate_doubled(
                    run.model, run.data.test_images, run.data.test_labels, run.normalizer, device, run.test_transform)
            run.history.append(record)
            folder.save({**base, "model": portable_state(run.model), "optimizer": run.optimizer.state_dict(),
                         "epoch": epoch + 1, "history": run.history})
            history_csv.log([{k: v for k, v in r.items() if k != "ien_per_layer"} for r in run.history])
            doubled = (f"  doubled test acc {100 * record['doubled_test_accuracy']:.2f}%"
                       if "doubled_test_accuracy" in record else "")
            log(f"epoch {epoch + 1}/{cfg.epochs}  ce {record['ce']:.4f}  ien {record['ien']:.4g}  "
                f"train acc {100 * record['train_accuracy']:.2f}%{doubled}  ({record['seconds']:.1f}s)")
        metrics = evaluate_run(run.model, cfg, run.data, run.normalizer, device, run.history)
        metrics["run"] = folder.path.name
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
