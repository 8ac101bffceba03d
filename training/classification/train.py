"""Train one classifier of the IEN study: IEN (β > 0), plain CNN (β = 0) or steerable CNN (e2cnn).

    python -m training.classification.train --dataset rot-digits --model cnnbasic --group R4 \\
        --beta 1 --epochs 15 --out runs/digits-r4-ien
    python -m training.classification.train --out runs/digits-r4-ien --resume   # continue it

Writes OUT/checkpoint.pth (after every epoch, atomically; its backbone works with
tools/equivariance.py --checkpoint) and OUT/metrics.json (test accuracy, parameter and channel counts,
per-layer equivariance error on test images, timings, training history).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

DEFAULT_WIDTH = {"rot-digits": 0.5}  # paper widths (1.0) elsewhere

# (option, config key, type, help); defaults come from TrainConfig / BackboneConfig
CONFIG_OPTIONS = [
    ("--dataset", "dataset", str, "rot-digits (built in, default), rot-mnist, rot-mnist-built, rot-fashion-mnist, rot-tinyimagenet, r2-tinyimagenet, scale-mnist, stl10"),
    ("--data", "data", str, "folder with the dataset's files (all datasets but rot-digits)"),
    ("--image-size", "image_size", int, "resize images to this size (default: the dataset's 28/64/96 px moved up to a size the model is exactly equivariant at, e.g. 65 for resnet18 on 64 px data; 8 to 1024)"),
    ("--model", "backbone.name", str, "cnnbasic (default), authors-cnnbasic, vgg, resnet18, resnet22, e2-cnnbasic, e2-authors-cnnbasic, e2-resnet22"),
    ("--group", "backbone.group", str, "R4 (default), R8, R16, R4R, R8-4-2-1, R4-2-1, R8-4-2-1:8,4,2,1, ... or none"),
    ("--width-mult", "backbone.width_mult", float, "channel width multiplier, in (0, 16] (default 0.5 on rot-digits, else 1.0 = paper widths)"),
    ("--beta", "beta", float, "weight of the IEN loss; 0 = plain CNN baseline (default 1)"),
    ("--beta-warmup-epochs", "beta_warmup_epochs", float, "the IEN weight grows linearly from 0 to beta over these epochs (default 0: the authors' full weight from the start)"),
    ("--layer-weights", "layer_weights", "floats", "comma-separated weight per watched layer of the IEN loss (default all 1)"),
    ("--epochs", "epochs", int, "epochs (default 90, the authors')"),
    ("--batch-size", "batch_size", int, "images per batch before doubling (default 32, at most 65536)"),
    ("--lr-max", "lr_max", float, "peak learning rate (default 5e-3)"),
    ("--lr-min", "lr_min", float, "final learning rate (default 1e-5)"),
    ("--weight-decay", "weight_decay", float, "Adam weight decay (default 1e-7)"),
    ("--lr-cycle-epochs", "lr_cycle_epochs", int, "epochs per cosine cycle (default: the whole run)"),
    ("--lr-cycle-decay", "lr_cycle_decay", float, "peak factor at each restart (default 1)"),
    ("--lr-schedule", "lr_schedule", str, "cosine (default: from lr-max down) or authors (their warm-up quarter, then down; lr-min after the cycle)"),
    ("--seed", "seed", int, "seed (>= 0) of init, shuffling, transforms and rot-digits/scale-mnist generation (default 0)"),
    ("--ien-scales", "ien_scales", "floats", "lo,hi zoom range of T (scale-mnist default 0.667,1.5)"),
    ("--train-limit", "train_limit", int, "use only the first N training images"),
    ("--test-limit", "test_limit", int, "use only the first N test images"),
    ("--eq-images", "eq_images", int, "test images for the equivariance error (default 64)"),
    ("--head", "head", str, "classifier head: linear or authors (Linear-BatchNorm1d-ELU-Linear; default: authors for authors-cnnbasic, else linear)"),
    ("--init", "init", str, "default (PyTorch's) or xavier (Xavier-uniform, biases 0.01; default for authors-cnnbasic)"),
    ("--input-norm", "input_norm", str, "standardize (train-set mean/std) or unit (raw [0, 1] pixels; default for authors-cnnbasic)"),
]


class CLIError(ValueError):
    """A command-line value that cannot be parsed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, f"error: {message}\n")


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"expected comma-separated numbers, got {text!r}") from None


def set_threads(threads: int | None) -> None:
    """--threads of the classification CLIs: the toolkit's thread policy (common.threads: torch and
    OpenCV, at most the machine's CPUs); a bad count is a CLIError."""
    from common.threads import apply_thread_policy

    if threads is None:
        return
    if threads < 1:
        raise CLIError(f"--threads must be a positive integer, got {threads}")
    try:
        apply_thread_policy(threads)
    except ValueError as exc:
        raise CLIError(f"--{exc}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for option, _, kind, help_text in CONFIG_OPTIONS:
        p.add_argument(option, type=str if kind == "floats" else kind, default=argparse.SUPPRESS, help=help_text)
    p.add_argument("--out", help="run folder (default runs/<dataset>-<model>-<group>-beta<beta>)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--device", default="auto", help="auto (default: cuda if present), cpu, cuda, cuda:1")
    p.add_argument("--threads", type=int, help="CPU threads of torch and OpenCV (1 to the machine's CPUs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-eval-each-epoch", dest="eval_each_epoch", action="store_false", default=argparse.SUPPRESS,
                   help="skip the per-epoch doubled-test evaluation (no authors'-protocol accuracy)")
    return p


def explicit_overrides(args: argparse.Namespace) -> dict:
    """The config values given on the command line, as a nested dict."""
    over: dict = {}
    for _, key, kind, _ in CONFIG_OPTIONS:
        dest = key.split(".")[-1] if key.startswith("backbone.") else key
        attr = {"backbone.name": "model", "backbone.group": "group", "backbone.width_mult": "width_mult"}.get(key, key)
        if not hasattr(args, attr):
            continue
        value = getattr(args, attr)
        if kind == "floats":
            value = _floats(value)
        if key.startswith("backbone."):
            over.setdefault("backbone", {})[dest] = value
        else:
            over[key] = value
    if hasattr(args, "eval_each_epoch"):
        over["eval_each_epoch"] = args.eval_each_epoch
    return over


def make_config(over: dict):
    from backbones import BackboneConfig
    from common.config import from_dict, to_dict
    from training.classification.config import TrainConfig

    dataset = over.get("dataset", "rot-digits")
    backbone = to_dict(BackboneConfig(name="cnnbasic", group="R4", width_mult=DEFAULT_WIDTH.get(dataset, 1.0), in_channels=3))
    backbone.update(over.get("backbone", {}))
    return from_dict(TrainConfig, {**over, "backbone": backbone}, "train config")


def default_out(cfg) -> Path:
    group = str(cfg.backbone.group).replace(":", "_").replace(",", "-")
    return Path("runs") / f"{cfg.dataset}-{cfg.backbone.name}-{group}-beta{cfg.beta:g}"


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one line (or --help)
        return int(exc.code or 0)
    warnings.filterwarnings("ignore", category=UserWarning)
    from backbones import GroupSpecError
    from common.checkpoints import CheckpointError
    from common.config import ConfigError, from_dict, to_dict
    from common.locks import FolderBusy
    from data.classification import DatasetError
    from training.classification.config import TrainConfig, TrainError, load_run_config

    from .engine import train

    try:
        set_threads(args.threads)
        over = explicit_overrides(args)
        if args.resume and args.out and (Path(args.out) / "checkpoint.pth").is_file():
            saved = to_dict(load_run_config(Path(args.out) / "checkpoint.pth"))
            merged = {**saved, **over, "backbone": {**saved["backbone"], **over.get("backbone", {})}}
            cfg = from_dict(TrainConfig, merged, "train config")
        else:
            cfg = make_config(over)
        out = Path(args.out) if args.out else default_out(cfg)
        train(cfg, out, resume=args.resume, device=args.device, progress=not args.no_progress)
    except (CLIError, ConfigError, GroupSpecError, DatasetError, CheckpointError, TrainError, FolderBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from common.atomic import describe_os_error

        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
