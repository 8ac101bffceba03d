#!/usr/bin/env python
"""Equivariance diagnostic: relative error ‖P f(Tx) − T P f(x)‖ / ‖P f(x)‖ per watched layer and
group element, on real image crops (default: scikit-image's photos).

    python tools/equivariance.py --backbone e2-resnet22 --group R8 --json
    python tools/equivariance.py --checkpoint runs/digits/checkpoint.pth --plot eq.png
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet22", help="cnnbasic, vgg, resnet18, resnet22, e2-cnnbasic, e2-resnet22")
    p.add_argument("--group", default="R8", help="R4, R8, R16, R4R, R8-4-2-1, R4-2-1, ... or none")
    p.add_argument("--width-mult", type=float, default=0.25, help="channel width multiplier (default 0.25)")
    p.add_argument("--checkpoint", help="a checkpoint of this toolkit: its backbone (config and weights) is used")
    p.add_argument("--image", action="append", help="image file(s) to crop from (repeatable)")
    p.add_argument("--size", type=int, help="crop size (default: the backbone's canonical input size)")
    p.add_argument("--angles", help="comma-separated rotation angles in degrees (default: the group's elements)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", help="save a PNG of error per layer")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    import torch

    from backbones import ConfigError, GroupElement, GroupSpecError, build_backbone
    from backbones.checkpoints import CheckpointError, backbone_config_of, backbone_from_checkpoint
    from backbones.diagnostics import ImageError, equivariance_errors, load_crops, save_error_plot

    torch.manual_seed(args.seed)
    try:
        if args.checkpoint:
            backbone, ckpt = backbone_from_checkpoint(args.checkpoint)
            label = f"{args.checkpoint}"
        else:
            backbone = build_backbone(args.backbone, group=args.group, width_mult=args.width_mult)
            label = f"{args.backbone} {args.group} (random init, seed {args.seed})"
        elements = None
        if args.angles:
            try:
                elements = [GroupElement(float(a)) for a in args.angles.split(",")]
            except ValueError:
                raise ConfigError(f"--angles must be comma-separated numbers, got {args.angles!r}") from None
        size = args.size or backbone.canonical_size
        if size < 16:
            raise ConfigError(f"--size must be at least 16, got {size}")
        images = load_crops(args.image, size, seed=args.seed)
        result = equivariance_errors(backbone, images, elements)
    except (ConfigError, GroupSpecError, CheckpointError, ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.update(
        model=label,
        backbone=args.backbone if not args.checkpoint else backbone_config_of(ckpt)["name"],
        group=str(backbone.spec),
        input_size=size,
        images=len(images),
        parameters=sum(p.numel() for p in backbone.parameters()),
    )
    if args.plot:
        save_error_plot(result, args.plot, title=label)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{label}: relative equivariance error, {len(images)} crops of {size}px")
        width = max(9, max(len(e) for e in result["elements"]))
        print("layer".ljust(10) + "".join(e.rjust(width + 2) for e in result["elements"]))
        for layer in result["layers"]:
            row = "".join(f"{result['errors'][layer][e]:.2e}".rjust(width + 2) for e in result["elements"])
            print(layer.ljust(10) + row)
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
