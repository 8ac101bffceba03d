"""The training loop of the Siamese trackers (SiamFC, SiamRPN, NanoTrack) with the implicit-equivariance (IEN) loss.

One step: a batch of (template z, search x, box_x) pairs from :class:`training.tracking.pairs.PairSampler`;
when β > 0 the template batch (and optionally the search batch) is doubled with a rotated copy
(``backbones.double_batch``) and run through ``model.extract`` once; the tracking loss
(``model.losses``) uses the first half, the IEN loss (``backbones.IENLoss``) the backbone's watched
maps of the doubled batch. Total = tracking + β · Σ_j L_j.

SGD (momentum 0.9, weight decay 5e-4) with a linear warm-up, then exponential decay 1e-2 → 1e-5 over
the run (SiamFC defaults, siamfc-pytorch; ``torch.optim.lr_scheduler`` LinearLR + ExponentialLR in a
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
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from common.checkpoints import CheckpointError, load_checkpoint
from common.config import ConfigError
from common.device import DeviceError, resolve_device
from data import DatasetError
from tracker.models import build_model
from training.run import (
    HistoryLog,
    RunFolder,
    distributed_env,
    non_finite,
    rng_state,
    seed_everything,
    set_rng_state,
)

from .config import RunConfig, TrainingError
from .data import StepBatches, load_pairs, load_validation_pairs, seed_worker, step_seed, worker_error_message
from .export import initialize_from
from .loss import TrackingLoss, response_peaks

__all__ = ["Trainer", "build_lr_scheduler", "BEST_NAME", "CHECKPOINT_FORMAT"]

BEST_NAME = "best.pth"                # the checkpoint of the lowest validation loss (train.val_every)
CHECKPOINT_FORMAT = "ien-tracking/tracker-training"


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


class Trainer:
    """Trains one tracker config; ``fit`` runs (or continues) it, writing OUT/checkpoint.pth.

    ``device``: "auto" (CUDA when present), "cpu", "cuda", ...; under torchrun each process uses its
    LOCAL_RANK GPU. ``progress``: show a tqdm bar (rank 0 only).
    """

    def __init__(self, config: RunConfig, out_dir: str | Path, device: str | None = "auto",
                 num_workers: int | None = None, progress: bool = True):
        self.config = config
        self.folder = RunFolder(out_dir)
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
        if train.init_from and not self.folder.checkpoint_path.is_file():   # (a resume loads its own)
            self.initialized_from = initialize_from(self.model, train.init_from)
        self.model = self.model.to(self.device)
        if train.channels_last:              # 4-D weights NHWC; load_state_dict/resume keep the format
            self.model = self.model.to(memory_format=torch.channels_last)
        if train.ien_layer_weights and len(train.ien_layer_weights) != len(self.model.backbone.watched_names):
            raise ConfigError(f"train.ien_layer_weights has {len(train.ien_layer_weights)} entries for the "
                              f"{len(self.model.backbone.watched_names)} watched layers "
                              f"({', '.join(self.model.backbone.watched_names)})")
        self.loss_module = TrackingLoss(self.model, train)
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
        self.log = HistoryLog(self.folder, extra_columns=("val_loss", "val_peak_hit") if train.val_every else (),
                              enabled=self.is_main)
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
    def out_dir(self) -> Path:
        return self.folder.path

    @property
    def checkpoint_path(self) -> Path:
        return self.folder.checkpoint_path

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
        rng = rng_state(self.device)
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
        set_rng_state(states[self.rank] if self.rank < len(states) else states[0], self.device)

    def save_checkpoint(self) -> None:
        """Write OUT/checkpoint.pth and OUT/history.json atomically (rank 0; every rank must call)."""
        state = self.state_dict()
        if self.is_main:
            self.folder.save(state)
            self.folder.write_json("history.json", self.history)
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
        twin = {}
        if "x_upright" in batch:          # distillation: the teacher's view of the search crop, unturned
            twin = {"x_upright": self._images(torch.as_tensor(batch["x_upright"]).to(dev, torch.float32)),
                    "rotation": torch.as_tensor(batch["rotation_x"]).to(dev, torch.float32)}
        with ctx:
            out = self.step_module(z, x, box_x, step_seed(train.seed, self.step, self.rank), **twin)
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
        if non_finite(dict(enumerate(flat))):
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
            from training.tracking.pairs import report_skipped_frames

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
                self.folder.save(state, BEST_NAME)
        return values

    # -- logs ----------------------------------------------------------------------------------
    def _log_step(self, values: dict[str, float], val: dict[str, float] | None) -> None:
        """One logged step: a history row (history.json, a history.csv line) and TensorBoard scalars."""
        row = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
               **{k: round(v, 6) for k, v in values.items() if not k.startswith("ien/")}, **(val or {})}
        self.history["steps"].append(row)
        scalars = {f"train/{k}": v for k, v in values.items()} | {f"val/{k[4:]}": v for k, v in (val or {}).items()}
        self.log.log(self.history["steps"], scalars, self.step)

    # -- the loop ------------------------------------------------------------------------------
    def _loader(self, epoch: int, start_step: int):
        train = self.config.train
        pairs = self.pairs()
        pairs.set_epoch(epoch)
        sampler = StepBatches(self.steps_per_epoch, train.batch_size, self.rank, self.world, start_step)
        gen = torch.Generator().manual_seed(step_seed(train.seed, epoch, 10_000 + self.rank))
        if self.num_workers > 0:
            # The workers are the parallelism: one OpenCV thread each. Set here, before the fork
            # (changing it inside a forked worker can deadlock on the parent's thread pool).
            import cv2

            cv2.setNumThreads(1)
        return torch.utils.data.DataLoader(
            pairs, batch_sampler=sampler, num_workers=self.num_workers, worker_init_fn=seed_worker,
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
            self.folder.claim()               # one writer: a second run into this folder is refused here
            self.folder.write_json("config.json", self.config.to_dict())
        try:
            self.pairs()                      # data errors before any progress output
            if train.val_every:
                self.validation_pairs()
            self.log.open(self.history["steps"], self.step)
            try:
                return self._fit(max_steps)
            finally:
                self.log.close()
        finally:
            self.folder.release()

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
                    last = self.step >= stop_at or self._stop_requested
                    if self.is_main and (self.step % train.log_every == 0 or val or self.step == start_step + 1 or last):
                        self._log_step(values, val)   # the first and last steps too: a short run has a history
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
                raise DatasetError(worker_error_message(exc)) from None
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
