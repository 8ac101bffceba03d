#!/usr/bin/env python
"""Train a Siamese tracker (SiamFC or SiamRPN) with the IEN loss; checkpoints, resume, export.

    python tools/train_tracker.py --config configs/tracking/siamfc_r8_ien.toml --out runs/siamfc_ien
    python tools/train_tracker.py --out runs/siamfc_ien --resume          # continue a killed run
    python tools/train_tracker.py --checkpoint runs/siamfc_ien/checkpoint.pth \\
        --export tracker/weights/siamfc_ien.pth --half                     # small inference file
    python tools/train_tracker.py --config configs/tracking/siamfc_ien_real2.toml \\
        --fit-gap tracker/weights/siamfc_ien.pth       # held-out vs training videos, no training
    torchrun --nproc_per_node 2 tools/train_tracker.py --config ...        # data-parallel

Quick runs: --epochs, --pairs-per-epoch, --batch-size, --workers, --max-steps, --device.
The last stdout line is a JSON summary (epochs, losses, IEN term first vs last epoch, time, paths).
OUT gets checkpoint.pth, history.json, history.csv, tensorboard/ (with the tensorboard package:
`tensorboard --logdir OUT/tensorboard`) and, with --val-every / train.val_every, best.pth.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Options that change what is trained: not allowed together with --resume (the stored config rules).
_RUN_DEFINING = ("data", "group", "beta", "epochs", "pairs_per_epoch", "batch_size", "seed", "init_from", "lr",
                 "val_every")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TOML config: [model] (+ [model.backbone]), [train], [data]")
    p.add_argument("--data", help="'generated' (the embedded rotating dataset) or a GOT-10k/OTB-layout folder")
    p.add_argument("--group", help="override model.backbone.group (R4, R8, R4R, R8-4-2-1, ..., none)")
    p.add_argument("--beta", type=float, help="override train.beta, the weight of the IEN loss (0 = plain)")
    p.add_argument("--out", help="output folder (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--pairs-per-epoch", type=int, help="override train.pairs_per_epoch")
    p.add_argument("--batch-size", type=int, help="override train.batch_size (global batch)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--lr", type=float, help="override train.lr (peak learning rate)")
    p.add_argument("--init-from", metavar="CKPT",
                   help="fine-tune: start from this tracker checkpoint's weights (train.init_from)")
    p.add_argument("--val-every", type=int, metavar="STEPS",
                   help="override train.val_every: validate on the held-out videos (data.val_fraction) every "
                        "STEPS steps and keep OUT/best.pth (0 = off)")
    p.add_argument("--workers", type=int, help="DataLoader workers per process (default train.num_workers)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--max-steps", type=int,
                   help="stop when the run has made this many steps in all, counted from its start (also with "
                        "--resume: --max-steps 12 goes on up to step 12); a checkpoint is written")
    p.add_argument("--export", metavar="PATH", help="write an inference checkpoint (config + weights) here")
    p.add_argument("--half", action="store_true", help="export float16 weights")
    p.add_argument("--checkpoint", metavar="FILE", help="export this checkpoint only (no training); needs --export")
    p.add_argument("--fit-gap", metavar="CKPT",
                   help="no training: tracking loss and response-peak hit rate of this tracker checkpoint on "
                        "--config's held-out video pairs and on as many pairs of its training videos (JSON)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _overrides(args) -> dict:
    return {
        "model": {"backbone": {"group": args.group}} if args.group is not None else {},
        "train": {"beta": args.beta, "epochs": args.epochs, "pairs_per_epoch": args.pairs_per_epoch,
                  "batch_size": args.batch_size, "seed": args.seed, "lr": args.lr,
                  "init_from": args.init_from, "val_every": args.val_every},
        "data": {"path": args.data},
    }


def _out_dir(args) -> Path | None:
    """--out, by default runs/<config name>; None when neither is given."""
    if args.out:
        return Path(args.out)
    return Path("runs") / Path(args.config).stem if args.config else None


def _run(args) -> int:
    import torch

    from common.atomic import check_output_path
    from training.run import CHECKPOINT_NAME
    from training.tracking import Trainer, TrainingError, export_weights, read_config
    from training.tracking.config import check_num_workers

    if args.export:               # before hours of training: --export must be writable as a file
        check_output_path(args.export)
    if args.checkpoint:
        if not args.export:
            raise TrainingError("--checkpoint exports a checkpoint: give --export PATH as well")
        if args.config or args.resume:
            raise TrainingError("--checkpoint (export only) cannot be combined with --config or --resume")
        print(json.dumps(export_weights(args.checkpoint, args.export, half=args.half)))
        return 0
    if args.workers is not None:
        check_num_workers(args.workers, "--workers")
    if args.fit_gap:
        return _fit_gap(args)
    if args.max_steps is not None and args.max_steps < 1:
        raise TrainingError(f"--max-steps must be >= 1, got {args.max_steps}")
    out = _out_dir(args)
    if out is None:
        raise TrainingError("give --config CONFIG (a new run) or --out DIR --resume (continue a run)")
    check_output_path(out, folder=True)
    ckpt_path = out / CHECKPOINT_NAME
    resuming = args.resume and ckpt_path.is_file()
    if resuming:
        config = _resumed_config(args, ckpt_path)
    else:
        if args.resume and not args.config:
            raise TrainingError(f"no checkpoint to resume in {out} (and no --config to start a new run)")
        if ckpt_path.is_file():
            raise TrainingError(f"{out} already holds a run; use --resume to continue it or another --out")
        if not args.config:
            raise TrainingError("--config is required to start a run")
        config = read_config(args.config, _overrides(args))
        if args.resume:
            print(f"no checkpoint in {out}: starting a new run", file=sys.stderr)

    trainer = Trainer(config, out, device=args.device, num_workers=args.workers, progress=not args.no_progress)

    def stop_gracefully(signum, frame):
        if trainer._stop_requested:                      # a second signal: abort now
            raise KeyboardInterrupt
        trainer.request_stop()
        if trainer.is_main:
            print(f"\n{signal.Signals(signum).name}: stopping after this step (again to abort)", file=sys.stderr)

    signal.signal(signal.SIGINT, stop_gracefully)
    signal.signal(signal.SIGTERM, stop_gracefully)
    try:
        if resuming:
            trainer.resume(ckpt_path)
            if trainer.is_main:
                print(f"resuming {ckpt_path} at epoch {trainer.epoch}, step {trainer.step}", file=sys.stderr)
        # --max-steps counts the run's steps from its start: a resumed run goes on up to that step
        summary = trainer.fit(max_steps=None if args.max_steps is None else max(0, args.max_steps - trainer.step))
        if args.export and trainer.is_main and not summary["interrupted"]:
            summary.update(export_weights(ckpt_path, args.export, half=args.half))
        if trainer.is_main:
            print(json.dumps(summary))
        if summary["interrupted"]:
            if trainer.is_main:
                print(f"interrupted at step {trainer.step}: checkpoint written; continue with --resume"
                      + (" (nothing exported)" if args.export else ""), file=sys.stderr)
            return 130
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def _resumed_config(args, ckpt_path: Path):
    """The config stored in the checkpoint of a run being resumed (--config, if given, must match)."""
    from common.checkpoints import load_checkpoint
    from common.config import deep_merge
    from training.tracking import RunConfig, TrainingError, read_config

    given = [f"--{name.replace('_', '-')}" for name in _RUN_DEFINING if getattr(args, name) is not None]
    if given:
        raise TrainingError(f"{', '.join(given)} cannot change a run being resumed (its stored config is used)")
    # --workers is not run-defining: a run resumed on a machine with fewer CPUs than its own can
    # replace a stored train.num_workers that is more than this machine allows
    workers = {"train": {"num_workers": args.workers}}
    config = RunConfig.from_dict(deep_merge(load_checkpoint(ckpt_path)["config"], workers), f"{ckpt_path} config")
    if args.config and read_config(args.config, workers).to_dict() != config.to_dict():
        raise TrainingError(f"{args.config} differs from the config stored in {ckpt_path}; "
                            "resume without --config or start a new run in another --out")
    return config


def _fit_gap(args) -> int:
    """--fit-gap: the validation pass of a tracker checkpoint on the config's held-out and training
    videos (no training); prints JSON."""
    import tempfile

    from training.tracking import Trainer, TrainingError, read_config

    if not args.config:
        raise TrainingError("--fit-gap needs --config: its data sources and held-out split (data.val_fraction)")
    if args.resume or args.init_from or args.export:
        raise TrainingError("--fit-gap measures the checkpoint it names: no --resume, --init-from or --export")
    if not Path(args.fit_gap).is_file():
        raise TrainingError(f"--fit-gap: no checkpoint file {args.fit_gap}")
    args.init_from = args.fit_gap
    config = read_config(args.config, _overrides(args))
    if config.data.val_fraction <= 0:
        raise TrainingError(f"--fit-gap: {args.config} holds no videos out (data.val_fraction = 0)")
    with tempfile.TemporaryDirectory() as empty:      # a fresh out dir, so init_from loads the weights
        trainer = Trainer(config, empty, device=args.device, num_workers=args.workers, progress=False)
        fresh = trainer.initialized_from["fresh"]
        if fresh:      # init_from fills what matches; a measurement needs every tensor of the model
            raise TrainingError(f"--fit-gap: {args.fit_gap} lacks tensors of {args.config}'s model "
                                f"({len(fresh)}, e.g. {fresh[0]}); give the config it was trained with")
        result = trainer.fit_gap()
    print(json.dumps({"checkpoint": args.fit_gap, "config": args.config, "pairs": config.train.val_pairs,
                      **result}))
    return 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    # torch's and e2cnn's own UserWarnings (lr-scheduler order, e2cnn basis expansion) are noise to a user;
    # the toolkit's (a sequence the pair sampler dropped, skipped frames) must reach them
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|e2cnn)(\.|$)")
    from backbones import GroupSpecError
    from common.checkpoints import CheckpointError
    from common.config import ConfigError
    from common.locks import FolderBusy
    from data import DatasetError
    from training.tracking import TrainingError

    user_errors: tuple = (ConfigError, GroupSpecError, CheckpointError, DatasetError, TrainingError, FolderBusy)
    try:
        from data.synthetic import GeneratorInputError

        user_errors += (GeneratorInputError,)
    except ImportError:
        pass
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _terminate)      # before training starts: stop like Ctrl-C
    try:
        return _run(args)
    except user_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:      # unwritable or full --out, --export that is a folder or under a file ...
        from common.atomic import describe_os_error

        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = _out_dir(args)
        if out is not None and (out / "checkpoint.pth").is_file():
            print(f"error: interrupted; continue with --resume from the last checkpoint in {out}", file=sys.stderr)
        else:
            print("error: interrupted before the first checkpoint was written: nothing to resume "
                  "(start the run again)", file=sys.stderr)
        return 130
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
