#!/usr/bin/env python
"""Choose a network's tracking hyper-parameters on a validation split and store them in its checkpoint.

    python tools/tune_tracking.py --tracker siamfc --checkpoint runs/real/siamfc_ien.pth \\
        --root ../shared/data/real/train --holdout 0.2 \\
        --grid scale_penalty=0.9745,0.99 --grid window_influence=0.176,0.3 \\
        --write runs/real/siamfc_ien_tuned.pth

Every combination of the --grid values is evaluated with tools/evaluate.py on the same sequences
(results under --out, reused on a re-run like evaluate's), with --also-rotating on their rotating
twin too; the one with the best success AUC (mean over both; ties: the earlier combination; --metric
angle_error: the smallest mean angle error, for the options of a rotation estimate) is printed, and with --write the checkpoint is copied with it
stored as ``ckpt["tracking"]["upright"]`` (or ``["rotated"]`` for trackers that search rotated
templates: their combinations start from the checkpoint's upright choices, less the first-frame fit, and earlier rotated choices), which ``tracker.build_tracker`` applies unless the caller overrides an option. A
network's own response shape decides them, not SiamFC's defaults. The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class TuneError(ValueError):
    """Bad command-line input."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracker", required=True, help="tracker name (siamfc, siamfc-ien-rot, re-siamfc, ...)")
    p.add_argument("--checkpoint", required=True, type=Path, help="the network's tracker checkpoint")
    p.add_argument("--root", required=True, type=Path, help="dataset folder of the validation sequences")
    p.add_argument("--holdout", type=float, default=None, metavar="FRACTION",
                   help="only the held-out source videos of --root (the training config's data.val_fraction)")
    p.add_argument("--holdout-seed", type=int, default=0, help="the training config's data.val_seed")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="values to try for one tracking option; repeatable (all combinations are run)")
    p.add_argument("--also-rotating", type=float, default=None, metavar="DEG_PER_FRAME",
                   help="score each combination on the rotating twin of the sequences too (evaluate "
                        "--rotating) and choose by the mean of both: upright and rotating targets alike")
    p.add_argument("--metric", default="success_auc", choices=["success_auc", "ao", "precision20", "angle_error"],
                   help="what the choice maximises (angle_error: minimises the mean axis-angle error of a "
                        "rotation-estimating tracker on the sequences with rotation.txt or angle.txt)")
    p.add_argument("--out", type=Path, default=None, help="evaluation folder (default runs/tune/<checkpoint stem>)")
    p.add_argument("--write", type=Path, default=None, metavar="PATH",
                   help="write the checkpoint with the chosen options stored in it here")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def parse_grid(items: list[str]) -> dict[str, list]:
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise TuneError(f"bad --grid {item!r}: use KEY=V1,V2,...")
        if key in grid:
            raise TuneError(f"--grid {key} given twice")
        parsed = []
        for text in values.split(","):
            try:
                parsed.append(json.loads(text))
            except json.JSONDecodeError:
                parsed.append(text.strip())
        grid[key] = parsed
    if not grid:
        raise TuneError("give at least one --grid KEY=V1,V2,...")
    return grid


def store_tracking_options(checkpoint: Path, out: Path, options: dict, rotated: bool, record: dict) -> None:
    """Copy ``checkpoint`` to ``out`` (atomically) with ``options`` as its stored tracking options."""
    from common.checkpoints import load_checkpoint, save_atomic

    ckpt = load_checkpoint(checkpoint)
    tracking = dict(ckpt.get("tracking") or {})
    table = "rotated" if rotated else "upright"
    tracking[table] = dict(options)
    # one record per grid, oldest first: a table is often chosen by several grids in turn
    chosen_on = dict(tracking.get("chosen_on") or {})
    history = chosen_on.get(table) or []
    history = [history] if isinstance(history, dict) else list(history)   # files written before the history
    chosen_on[table] = [*history, record]
    tracking["chosen_on"] = chosen_on
    ckpt["tracking"] = tracking
    save_atomic(ckpt, out)


def run(args) -> dict:
    from tracker import tracker_spec

    evaluate = _load_evaluate()
    grid = parse_grid(args.grid)
    if not args.checkpoint.is_file():
        raise TuneError(f"checkpoint not found: {args.checkpoint}")
    spec = tracker_spec(args.tracker)
    out = args.out or Path("runs") / "tune" / args.checkpoint.stem
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    rotated = spec.searches_rotated_templates(combos[0])
    # a grid starts from the choices already stored (a second grid on another option keeps the
    # first's choice: the stored table is what build_tracker applies, so it must hold every option,
    # not just this grid's); a rotated-template tracker also from the upright ones (scale, window...)
    from common.checkpoints import load_checkpoint
    from tracker import stored_tracking_options

    ckpt = load_checkpoint(args.checkpoint)
    stored = stored_tracking_options(ckpt, False)
    if rotated:     # not the options of one upright template (the first-frame fit: banks refuse it)
        from tracker.siamfc import UPRIGHT_TEMPLATE_OPTIONS

        stored = {k: v for k, v in stored.items() if k not in UPRIGHT_TEMPLATE_OPTIONS}
        stored = {**stored, **stored_tracking_options(ckpt, True)}
    base = {k: v for k, v in stored.items() if k not in grid}
    combos = [{**base, **combo} for combo in combos]
    variants = [("static", [])]
    if args.also_rotating is not None:
        variants.append(("rotating", ["--rotating", str(args.also_rotating)]))
    rows = []
    for combo in combos:
        row = {"options": combo}
        for variant, extra in variants:
            argv = ["--root", str(args.root), "--trackers", f"{args.tracker}={args.checkpoint}",
                    "--out", str(out / variant), "--no-plots", *extra]
            if args.holdout is not None:
                argv += ["--holdout", str(args.holdout), "--holdout-seed", str(args.holdout_seed)]
            if args.device:
                argv += ["--device", args.device]
            if args.no_progress:
                argv.append("--no-progress")
            for k, v in combo.items():
                argv += ["--tracker-option", f"{k}={json.dumps(v)}"]
            with contextlib.redirect_stdout(sys.stderr):      # evaluate's tables: stdout keeps the JSON
                code = evaluate.main(argv)
            if code != 0:
                raise TuneError(f"evaluation with {combo} failed (exit {code})")
            report = json.loads((out / variant / "report.json").read_text())
            overall = next(iter(report["trackers"].values()))["overall"]
            if overall.get(args.metric) is None:
                raise TuneError(f"no {args.metric} on {args.root} ({variant}): it needs a tracker that estimates "
                                "rotation and sequences with rotation.txt or angle.txt")
            row[variant] = {"success_auc": overall["success_auc"], args.metric: overall[args.metric],
                            "angle_error": overall.get("angle_error"), "sequences": report["sequences"]}
        row[args.metric] = sum(row[v][args.metric] for v, _ in variants) / len(variants)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    sign = -1.0 if args.metric == "angle_error" else 1.0        # an error is minimised
    best = max(range(len(rows)), key=lambda i: (sign * rows[i][args.metric], -i))
    chosen = rows[best]
    summary = {"tracker": args.tracker, "checkpoint": str(args.checkpoint), "metric": args.metric,
               "chosen": chosen["options"], "score": chosen[args.metric], "table": "rotated" if rotated else "upright",
               "tried": rows}
    if args.write is not None:
        record = {"root": str(args.root), "holdout": args.holdout, "holdout_seed": args.holdout_seed,
                  "also_rotating": args.also_rotating,
                  "metric": args.metric, "score": chosen[args.metric], "tried": len(rows),
                  "grid": grid, "chosen": {k: chosen["options"][k] for k in grid}}
        store_tracking_options(args.checkpoint, args.write, chosen["options"], rotated, record)
        summary["written"] = str(args.write)
    return summary


def _load_evaluate():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_ien_evaluate", Path(__file__).with_name("evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    args = parse_args(argv)
    from common.checkpoints import CheckpointError
    from tracker.siamfc import TrackerError

    try:
        summary = run(args)
    except (TuneError, CheckpointError, TrackerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
