#!/usr/bin/env python
"""Equivariance diagnostic: relative error ‖P f(Tx) − T P f(x)‖ / ‖P f(x)‖ per watched layer and
group element, on real image crops (default: scikit-image's photos).

    python tools/equivariance.py --backbone e2-resnet22 --group R8 --json
    python tools/equivariance.py --checkpoint runs/digits/checkpoint.pth --plot eq.png
    python tools/equivariance.py --checkpoint siamfc-ien --checkpoint siamfc-plain \\
        --checkpoint re-siamfc --plot ien_plain_e2cnn.png     # one figure, one line per network

Several --checkpoint (files, or tracker names for their bundled weights) are measured on the same
crops; their --plot has one line per network (the mean error over its group elements per layer).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_SIZE = 1024      # crop side: the activations of a few crops of this size already take GBs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet22", help="cnnbasic, authors-cnnbasic, vgg, resnet18, resnet22, e2-cnnbasic, e2-authors-cnnbasic, e2-resnet22")
    p.add_argument("--group", default="R8", help="R4, R8, R16, R4R, R8-4-2-1, R4-2-1, ... or none")
    p.add_argument("--width-mult", type=float, default=0.25, help="channel width multiplier, in (0, 16] (default 0.25)")
    p.add_argument("--checkpoint", action="append",
                   help="a checkpoint of this toolkit (its backbone's config and weights are used), or a tracker "
                        "name (siamfc-ien, siamfc-plain, re-siamfc, ...: its bundled weights); repeat to compare")
    p.add_argument("--label", action="append",
                   help="legend name of each --checkpoint, in order (default: the tracker name or file name)")
    p.add_argument("--image", action="append", help="image file(s) to crop from (repeatable)")
    p.add_argument("--size", type=int, help="crop size (default: the backbone's canonical input size)")
    p.add_argument("--angles", help="comma-separated rotation angles in degrees (default: the group's elements)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", help="save a PNG of error per layer (several --checkpoint: one line per network)")
    return p.parse_args(argv)


def _checkpoint_path(given: str) -> Path:
    """A --checkpoint value: an existing file, else a tracker name's bundled weights."""
    path = Path(given).expanduser()
    if path.exists():
        return path
    from tracker import default_checkpoint, tracker_names

    if given.strip().lower() in tracker_names():
        return default_checkpoint(given)
    return path                      # not found: backbone_from_checkpoint says so


def _default_labels(given: list[str]) -> list[str]:
    """Tracker names as given, files by name (by the path as given where two names collide)."""
    names = [g if not Path(g).expanduser().exists() else Path(g).name for g in given]
    return [n if names.count(n) == 1 else g for n, g in zip(names, given)]


def _networks(args) -> list:
    """(label, backbone, backbone name) of every --checkpoint, or of the random-init --backbone."""
    from backbones import build_backbone
    from backbones.checkpoints import backbone_config_of, backbone_from_checkpoint
    from common.config import ConfigError

    if args.label and len(args.label) != len(args.checkpoint or []):
        raise ConfigError(f"give one --label per --checkpoint ({len(args.label)} labels, "
                          f"{len(args.checkpoint or [])} checkpoints)")
    if not args.checkpoint:
        backbone = build_backbone(args.backbone, group=args.group, width_mult=args.width_mult)
        return [(f"{args.backbone} {args.group} (random init, seed {args.seed})", backbone, args.backbone)]
    networks = []
    for given, label in zip(args.checkpoint, args.label or _default_labels(args.checkpoint)):
        backbone, ckpt = backbone_from_checkpoint(_checkpoint_path(given))
        networks.append((label, backbone, backbone_config_of(ckpt)["name"]))
    return networks


def _elements(text: str | None):
    """The --angles as group elements (None: the groups' own rotations). Each must be a finite angle
    within ±360° that is not the identity (a multiple of 360° would report error 0 everywhere)."""
    from backbones import GroupElement
    from common.config import ConfigError

    if not text:
        return None
    try:
        angles = [float(a) for a in text.split(",")]
    except ValueError:
        raise ConfigError(f"--angles must be comma-separated numbers, got {text!r}") from None
    for angle in angles:
        if not (math.isfinite(angle) and abs(angle) <= 360):
            raise ConfigError(f"--angles must be finite numbers of degrees within ±360, got {angle:g}")
        if angle % 360 == 0:
            raise ConfigError(f"--angles {angle:g}: a whole turn is the identity (no rotation to test)")
    return [GroupElement(a) for a in angles]


def _measure(args, networks: list, elements) -> list[dict]:
    from backbones.diagnostics import equivariance_errors, load_crops
    from backbones.transforms import group_elements
    from common.config import ConfigError

    results, crops = [], {}
    for label, backbone, name in networks:
        size = args.size or backbone.canonical_size
        if size not in crops:                      # the same crops for every network of one size
            crops[size] = load_crops(args.image, size, seed=args.seed)
        if elements is None and not group_elements(backbone.spec, include_identity=False):
            raise ConfigError(f"{label}: group {backbone.spec} has no rotations to test; give --angles (e.g. 90)")
        try:
            result = equivariance_errors(backbone, crops[size], elements)
        except RuntimeError as exc:          # the feature maps vanish before the last layer
            if "size" not in str(exc):
                raise
            raise ConfigError(f"--size {size} is too small for {label} ({name}); its canonical input is "
                              f"{backbone.canonical_size} px") from None
        result.update(model=label, backbone=name, group=str(backbone.spec), input_size=size,
                      images=len(crops[size]), parameters=sum(p.numel() for p in backbone.parameters()))
        results.append(result)
    return results


def _print_results(args, results: list[dict]) -> None:
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else {"networks": results}, indent=1))
        return
    for result in results:
        print(f"{result['model']}: relative equivariance error, {result['images']} crops of "
              f"{result['input_size']}px")
        width = max(9, max(len(e) for e in result["elements"]))
        print("layer".ljust(10) + "".join(e.rjust(width + 2) for e in result["elements"]))
        for layer in result["layers"]:
            row = "".join(f"{result['errors'][layer][e]:.2e}".rjust(width + 2) for e in result["elements"])
            print(layer.ljust(10) + row)
    if args.plot:
        print(f"plot written to {args.plot}")


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    import torch

    from backbones import GroupSpecError
    from backbones.diagnostics import ImageError, save_comparison_plot, save_error_plot
    from common.atomic import check_replaceable, describe_os_error
    from common.checkpoints import CheckpointError
    from common.config import ConfigError

    try:
        if args.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer, got {args.seed}")
        if args.size is not None and not 16 <= args.size <= MAX_SIZE:
            raise ConfigError(f"--size must be between 16 and {MAX_SIZE} pixels, got {args.size}")
        if args.plot:            # before the work: a plot path that is a folder, a link ...
            check_replaceable(args.plot)
        torch.manual_seed(args.seed)
        elements = _elements(args.angles)
        results = _measure(args, _networks(args), elements)
    except (ConfigError, GroupSpecError, CheckpointError, ImageError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            if len(results) == 1:
                save_error_plot(results[0], args.plot, title=results[0]["model"])
            else:
                save_comparison_plot(results, args.plot, title="relative equivariance error")
        except OSError as exc:       # unwritable or full folder, a path under a file ...
            print(f"error: cannot write the plot: {describe_os_error(exc)}", file=sys.stderr)
            return 2
    _print_results(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
