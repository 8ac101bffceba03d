#!/usr/bin/env python
"""Make a rotating benchmark (Rot-OTB style) from an OTB- or GOT-10k-layout folder.

    python tools/make_rotating.py --src /data/OTB100 --dst data/Rot-OTB100 --deg-per-frame 1
    python tools/make_rotating.py --src /data/GOT-10k --subset val --dst data/Rot-GOT-10k-val

Frame t is rotated about the image centre by t * DEG degrees (counter-clockwise on screen,
same image size, borders filled); the output is a GOT-10k-layout folder with groundtruth.txt
(axis-aligned box of the rotated target), polygon.txt (rotated box corners) and angle.txt.
Finished sequences are kept when the command is run again. Without --src, the generated
non-rotating test sequences (data.synthetic) are used.
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import DatasetError, DatasetWarning  # noqa: E402
from data.rotating import make_rotating  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Make a rotating version of a tracking dataset.")
    p.add_argument("--src", type=Path, default=None,
                   help="source dataset folder, OTB or GOT-10k layout (default: the generated "
                        "non-rotating test sequences)")
    p.add_argument("--dst", type=Path, default=None,
                   help="output folder (default data/rotating/<src name>-rot<DEG>)")
    p.add_argument("--deg-per-frame", type=float, default=1.0, metavar="DEG",
                   help="rotation added per frame, degrees counter-clockwise (default 1)")
    p.add_argument("--layout", choices=["auto", "got10k", "otb"], default="auto")
    p.add_argument("--subset", default=None, help="GOT-10k subset (val/test/train)")
    p.add_argument("--border", choices=["replicate", "constant"], default="replicate",
                   help="fill of the uncovered corners (default replicate)")
    p.add_argument("--max-sequences", type=int, default=None, metavar="N")
    p.add_argument("--sequences", nargs="+", default=None, metavar="NAME")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip broken sequences with a warning instead of stopping")
    p.add_argument("--overwrite", action="store_true", help="rebuild finished sequences")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _print_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if not math.isfinite(args.deg_per_frame):
        raise ValueError("--deg-per-frame must be a finite number")
    if args.max_sequences is not None and args.max_sequences < 1:
        raise ValueError("--max-sequences must be at least 1")
    src = args.src
    if src is None:
        try:
            from data.generated import default_dataset
        except ImportError as exc:
            raise ValueError("the generated dataset is not available "
                             f"(data.generated.default_dataset: {exc}); pass --src") from None
        src = Path(default_dataset(split="test", rotating=False))
    elif not src.is_dir():
        raise DatasetError(f"dataset folder not found: {src}")
    dst = args.dst
    if dst is None:
        name = src.resolve().name + (f"-{args.subset}" if args.subset else "")
        dst = Path("data") / "rotating" / f"{name}-rot{args.deg_per_frame:g}"
    out = make_rotating(src, dst, args.deg_per_frame, layout=args.layout, border=args.border,
                        max_sequences=args.max_sequences, subset=args.subset,
                        names=args.sequences, skip_bad=args.skip_bad, overwrite=args.overwrite,
                        progress=not args.no_progress)
    count = len((out / "list.txt").read_text().split())
    print(f"wrote {count} rotating sequences to {out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", DatasetWarning)
        warnings.showwarning = _print_warning
        try:
            return run(args)
        except (DatasetError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:      # unwritable or full --dst, --dst under a file ...
            from common.atomic import describe_os_error

            print(f"error: {describe_os_error(exc)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
