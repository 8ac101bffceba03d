#!/usr/bin/env python
"""Generate synthetic rotating tracking sequences with exact ground truth (GOT-10k layout).

    python tools/generate_sequences.py --out data/synthetic --num 40 --frames 100 --seed 0
    python tools/generate_sequences.py --out data/synthetic --subset val --num 12 --no-rotation
    python tools/generate_sequences.py --out data/mine --objects my_objects/ --backgrounds my_photos/
    python tools/generate_sequences.py --default train        # build/locate the cached default set

Writes OUT/SUBSET/list.txt and one folder per sequence (frames, groundtruth.txt, absence.label,
cover.label, cut_by_image.label, angle.txt, polygon.txt, meta_info.ini); see data/synthetic.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.atomic import describe_os_error  # noqa: E402
from common.threads import max_workers  # noqa: E402
from data.generated import MAX_SEQUENCES, default_dataset, generate_dataset  # noqa: E402
from data.synthetic import MAX_FRAMES, GeneratorInputError, GeneratorOptions  # noqa: E402


def _frame_size(text: str) -> tuple:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 320x240, got {text!r}") from None
    return w, h


def _speed_range(text: str) -> tuple:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH degrees per frame, got {text!r}") from None
    return lo, hi


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Generate synthetic rotating tracking sequences (GOT-10k layout).")
    p.add_argument("--out", type=Path, help="output root; sequences go to OUT/SUBSET/")
    # whole numbers are read by _whole, not argparse: its type errors print the usage as well
    p.add_argument("--num", default="40", help=f"number of sequences (default 40, at most {MAX_SEQUENCES})")
    p.add_argument("--frames", default="100", help=f"frames per sequence (default 100, at most {MAX_FRAMES}; "
                   "a sequence's frames must fit in half the machine's memory)")
    p.add_argument("--seed", default="0", help="base seed; sequence i uses a seed derived from (seed, i)")
    p.add_argument("--subset", default="train", help="subset folder name (train, val, test ...; default train)")
    p.add_argument("--size", type=_frame_size, default=(320, 240), metavar="WxH", help="frame size (default 320x240)")
    p.add_argument("--rotation-speed", type=_speed_range, default=(0.5, 4.0), metavar="LOW,HIGH",
                   help="in-plane rotation speed range in degrees/frame (default 0.5,4)")
    p.add_argument("--no-rotation", action="store_true", help="the non-rotating twin: same content, no in-plane rotation")
    p.add_argument("--objects", type=Path, default=None, help="folder of images to cut target objects from "
                   "(PNG alpha is used as the mask; default: scikit-image's photos)")
    p.add_argument("--backgrounds", type=Path, default=None, help="folder of background photos (default: scikit-image's photos)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="generator option, VALUE in JSON (e.g. occlusion_prob=0 or num_distractors=[0,0]); "
                        "repeatable; known keys: " + ", ".join(f.name for f in GeneratorOptions.__dataclass_fields__.values()))
    p.add_argument("--workers", default="1", help="processes (default 1; at most the machine's CPUs are used)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT/SUBSET")
    p.add_argument("--default", choices=["train", "test"], default=None,
                   help="build (once) the cached default dataset of this split and print its folder; "
                        "--no-rotation gives its non-rotating twin, --out its cache root")
    return p.parse_args(argv)


def _parse_options(items) -> dict:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GeneratorInputError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            raise GeneratorInputError(f"--option {key}: value is not JSON: {value!r}") from None
    return options


def _whole(text: str, option: str, least: int, most: int | None = None) -> int:
    """The whole number ``text`` of ``option``, from ``least`` to ``most``; else a GeneratorInputError."""
    try:
        value = int(text)
    except ValueError:
        raise GeneratorInputError(f"{option} must be a whole number, got {text!r}") from None
    if value < least or (most is not None and value > most):
        bound = f"from {least} to {most}" if most is not None else f"at least {least}"
        raise GeneratorInputError(f"{option} must be {bound}, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    args.workers = _whole(args.workers, "--workers", 1, max_workers())
    if args.default is not None:
        path = default_dataset(args.default, rotating=not args.no_rotation, root=args.out, workers=args.workers)
        print(path)
        return 0
    if args.out is None:
        raise GeneratorInputError("--out is required (or use --default)")
    args.num = _whole(args.num, "--num", 1, MAX_SEQUENCES)
    args.frames = _whole(args.frames, "--frames", 1, MAX_FRAMES)
    args.seed = _whole(args.seed, "--seed", 0)
    options = _parse_options(args.option)
    GeneratorOptions.from_kwargs(options)
    start = time.perf_counter()
    out = generate_dataset(args.out, args.num, seed=args.seed, subset=args.subset, num_frames=args.frames,
                           frame_size=args.size, rotating=not args.no_rotation, object_dir=args.objects,
                           background_dir=args.backgrounds, workers=args.workers, overwrite=args.overwrite,
                           rotation_speed=args.rotation_speed, progress=sys.stderr.isatty(), **options)
    print(f"wrote {args.num} sequences x {args.frames} frames to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except GeneratorInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:      # unwritable or full --out, --out under a file ...
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
