#!/usr/bin/env python
"""Time tracker training steps with and without ``train.channels_last``, interleaved in one process.

    python tools/benchmark_training.py --config configs/tracking/siamfc_r8_ien.toml --steps 10 --threads 1
    python tools/benchmark_training.py --config configs/tracking/siamrpn_r8_ien.toml --batch-size 8 --rounds 5

Two ``training.tracking.Trainer`` objects are built from the same config and seed (so the same
initial weights), one with ``train.channels_last = false`` ("contiguous"), one with ``true``. The
``--steps`` batches are drawn once from the config's pair data (default: the generated rotating
sequences) and collated up front, so data loading is not timed. Each round runs every batch
through both modes back to back (which mode goes first alternates, so a change of machine load
hits both); the first ``--warmup`` steps of each mode are not timed. Reports the median / min / max
step time of each mode, their ratio contiguous / channels-last (> 1: channels-last is faster), the
median of the per-batch ratios, the relative loss difference of the two modes on the first step
(same weights) and the largest one over the run (they drift by float rounding), and the machine
(``evaluation.fps.machine_info``). JSON on stdout (and atomically to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("contiguous", "channels_last")


class BenchmarkError(ValueError):
    """Bad benchmark arguments (printed as one `error:` line)."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "tracking" / "siamfc_r8_ien.toml"),
                   help="tracker training config (TOML; default: the IEN SiamFC's)")
    p.add_argument("--steps", type=int, default=10, help="distinct batches, run by each mode in every round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (contiguous, channels-last) or the reverse")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each mode before the first round")
    p.add_argument("--batch-size", type=int, help="override train.batch_size")
    p.add_argument("--data", help="override data.path ('generated' or a GOT-10k/OTB folder)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and OpenCV threads (default 1; at most the machine's CPUs)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--out", help="also write the JSON report here (atomically)")
    return p.parse_args(argv)


def _check(args: argparse.Namespace) -> None:
    from common.threads import check_threads

    for name, low, high in (("steps", 1, 1000), ("rounds", 1, 100), ("warmup", 0, 100)):
        if not low <= getattr(args, name) <= high:
            raise BenchmarkError(f"--{name} must be from {low} to {high}, got {getattr(args, name)}")
    try:
        check_threads(args.threads)
    except ValueError as exc:
        raise BenchmarkError(f"--{exc}") from None
    if args.batch_size is not None and args.batch_size < 1:
        raise BenchmarkError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not Path(args.config).is_file():
        raise BenchmarkError(f"--config {args.config}: no such file")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def collate_batches(pairs, steps: int, batch_size: int) -> list[dict]:
    """``steps`` collated batches of consecutive pair indices (the data of one epoch's first steps)."""
    import torch

    needed = steps * batch_size
    if needed > len(pairs):
        raise BenchmarkError(f"--steps {steps} × batch {batch_size} = {needed} pairs, but an epoch has {len(pairs)}")
    return [torch.utils.data.default_collate([pairs[i] for i in range(s * batch_size, (s + 1) * batch_size)])
            for s in range(steps)]


def time_training(config, batches: list[dict], rounds: int, warmup: int, device: str = "cpu") -> dict:
    """Step times (s) and losses (every step, warm-up included) of each mode on the same
    ``batches``, interleaved by rounds.

    ``config``: a ``RunConfig``; its ``train.channels_last`` is set per mode. The trainers write
    nothing (``fit`` is never called).
    """
    import copy
    import tempfile

    from training.tracking import Trainer

    trainers = {}
    scratch = tempfile.mkdtemp(prefix="benchmark-training-")      # an empty OUT: no run there to clash with
    for mode in MODES:
        run = copy.deepcopy(config)
        run.train.channels_last = mode == "channels_last"
        trainers[mode] = Trainer(run, Path(scratch), device=device, num_workers=0, progress=False)
    dev = trainers[MODES[0]].device
    times = {mode: [] for mode in MODES}
    losses = {mode: [] for mode in MODES}
    for mode in MODES:                       # warm-up: allocator, kernels, thread pools
        for k in range(warmup):
            losses[mode].append(trainers[mode].train_step(batches[k % len(batches)])["loss"])
    for r in range(rounds):
        for k, batch in enumerate(batches):
            # step by step, the order alternating: a change of machine load hits both modes
            for mode in (MODES if (r * len(batches) + k) % 2 == 0 else MODES[::-1]):
                _sync(dev)
                start = time.perf_counter()
                values = trainers[mode].train_step(batch)
                _sync(dev)
                times[mode].append(time.perf_counter() - start)
                losses[mode].append(values["loss"])
    Path(scratch).rmdir()                    # the trainers never wrote to it (fit is not called)
    return {"times": times, "losses": losses, "device": str(dev)}


def summarize(measured: dict) -> dict:
    modes = {}
    for mode in MODES:
        t = measured["times"][mode]
        modes[mode] = {"median_ms": round(1e3 * statistics.median(t), 2), "min_ms": round(1e3 * min(t), 2),
                       "max_ms": round(1e3 * max(t), 2), "steps_timed": len(t)}
    a, b = (measured["losses"][m] for m in MODES)
    rel = [abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b)]
    paired = [x / y for x, y in zip(*(measured["times"][m] for m in MODES))]
    return {
        "modes": modes,
        "speedup_channels_last": round(modes["contiguous"]["median_ms"] / modes["channels_last"]["median_ms"], 4),
        # the same batch timed back to back in both modes: less sensitive to load drifts
        "paired_speedup_median": round(statistics.median(paired), 4),
        "paired_speedup_range": [round(min(paired), 4), round(max(paired), 4)],
        # step 1 starts from the same weights; later steps drift apart by float rounding
        "first_step_rel_loss_difference": float(f"{rel[0]:.3g}"),
        "max_rel_loss_difference": float(f"{max(rel):.3g}"),
        "first_step_loss": {m: measured["losses"][m][0] for m in MODES},
    }


def run(args: argparse.Namespace) -> dict:
    from common.threads import apply_thread_policy, memory_bytes
    from evaluation.fps import machine_info
    from training.tracking import load_pairs, read_config

    _check(args)
    apply_thread_policy(args.threads)            # torch and OpenCV (the crops of the pair sampler)
    overrides = {"train": {"batch_size": args.batch_size, "num_workers": 0}, "data": {"path": args.data}}
    config = read_config(args.config, overrides)
    batch = config.train.batch_size
    # every step's batch is held in memory: float32 template and search crops of each pair
    need, memory = args.steps * batch * 12 * (config.model.exemplar_size ** 2 + config.model.instance_size ** 2), \
        memory_bytes()
    if memory is not None and need > memory / 2:
        raise BenchmarkError(f"--steps {args.steps} x batch {batch} need {need / 2 ** 30:.1f} GiB of crops, more than "
                             f"half this machine's {memory / 2 ** 30:.1f} GiB")
    if config.train.pairs_per_epoch < args.steps * batch:
        config.train.pairs_per_epoch = args.steps * batch
    started = time.perf_counter()
    batches = collate_batches(load_pairs(config, workers=1), args.steps, batch)
    data_s = time.perf_counter() - started
    machine_before = machine_info()
    measured = time_training(config, batches, args.rounds, args.warmup, args.device)
    machine = machine_info()
    machine["load_average_before"] = machine_before["load_average"]
    return {
        "config": str(args.config), "model_type": config.model.type, "backbone": {
            "name": config.model.backbone.name, "group": config.model.backbone.group,
            "width_mult": config.model.backbone.width_mult},
        "beta": config.train.beta, "batch_size": batch, "steps": args.steps, "rounds": args.rounds,
        "warmup": args.warmup, "threads": args.threads, "device": measured["device"],
        "data_seconds": round(data_s, 2), **summarize(measured), "machine": machine,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        _check(args)                         # before the slow imports
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", category=UserWarning)
    from backbones import GroupSpecError
    from common.config import ConfigError
    from data import DatasetError
    from training.tracking import TrainingError

    try:
        if args.out:
            from common.atomic import check_output_path

            check_output_path(args.out)
        report = run(args)
        text = json.dumps(report, indent=1)
        if args.out:
            from common.atomic import write_text_atomic

            write_text_atomic(Path(args.out), text + "\n")
        print(text)
        return 0
    except (BenchmarkError, ConfigError, GroupSpecError, DatasetError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from common.atomic import describe_os_error

        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
