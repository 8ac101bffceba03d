#!/usr/bin/env python
"""Evaluate trackers offline on a local GOT-10k, OTB, LaSOT, UAV123, VOT, TrackingNet or
generated-layout dataset (docs/benchmarks.md: the command for each).

    python tools/evaluate.py --trackers identity siamfc re-siamfc=runs/re_siamfc.pth
    python tools/evaluate.py --dataset otb --root /data/OTB100 --trackers siamfc siamfc-plain
    python tools/evaluate.py --dataset got10k --root /data/GOT-10k --subset val \\
        --trackers siamfc --rotating 1.0

Results go to <out>/results/<tracker>/... in the got10k toolkit's layout (finished sequences
are reused on a re-run unless --overwrite, and only when made by the same tracker name,
weights and options on the same sequences and benchmark variant); report.json, report.md and
the success / precision plots go to <out> (default runs/eval/<dataset>[-static], with --root
runs/eval/<protocol>-<folder>[-<subset>]-<digest of the folder's path>[-rot<deg>]). The
summary table is printed.
Without --root, the generated rotating test sequences (data.synthetic) are used.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.atomic import describe_os_error  # noqa: E402
from common.locks import FolderBusy, FolderLock  # noqa: E402
from common.threads import check_threads  # noqa: E402
from data import DatasetError, DatasetWarning, detect_layout, load_sequences  # noqa: E402
from data.sequence import sequence_identity  # noqa: E402
from evaluation.experiment import (  # noqa: E402
    ResultStore,
    TrackerSpecError,
    TrackingError,
    build_named_tracker,
    options_label,
    parse_tracker_options,
    parse_tracker_spec,
    result_key,
    run_trackers,
    tracker_identity,
)
from evaluation.report import (  # noqa: E402
    attribute_report,
    build_report,
    compare_pairs,
    compare_to_baseline,
    has_attributes,
    markdown_attributes,
    markdown_comparison,
    markdown_pairs,
    markdown_summary,
    write_report,
)
from evaluation.submission import write_submission  # noqa: E402


class EvaluationError(ValueError):
    """Bad command-line input (tracker names, checkpoints, options)."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run trackers over a local dataset and report GOT-10k / OTB metrics.")
    p.add_argument("--dataset", choices=["got10k", "otb", "generated", "lasot", "uav123", "vot",
                                         "trackingnet"], default=None,
                   help="evaluation protocol (default: generated without --root, else the "
                        "layout of --root)")
    p.add_argument("--root", type=Path, default=None,
                   help="dataset folder (default: the generated rotating test sequences)")
    p.add_argument("--subset", default=None,
                   help="GOT-10k subset (val/test/train); LaSOT test/train or a file of names; "
                        "UAV123/UAV20L; TrackingNet test/train/TRAIN_<k>; for generated data "
                        "the split (default test)")
    p.add_argument("--layout", choices=["auto", "got10k", "otb", "lasot", "uav123", "vot",
                                        "trackingnet"], default="auto",
                   help="folder layout of --root (default: detected)")
    p.add_argument("--frame-ranges", type=Path, default=None, metavar="FILE",
                   help="UAV123: the benchmark's configSeqs.m (or a JSON table) giving each "
                        "sequence's frame folder and first/last frame (default: <root>/configSeqs.m "
                        "if present, else the got10k toolkit's table)")
    p.add_argument("--attributes", nargs="?", const=True, default=None, metavar="FILE",
                   help="also report success AUC / precision per attribute: the dataset's own "
                        "attribute files (UAV123 att/, VOT *.tag), or FILE, a JSON object "
                        "{sequence: [attribute, ...]} (e.g. OTB's attribute lists)")
    p.add_argument("--submission", choices=["got10k", "trackingnet"], default=None,
                   help="also write each tracker's results as the evaluation server's zip "
                        "(<out>/<tracker>-<format>-submission.zip)")
    p.add_argument("--trackers", nargs="+", required=True, metavar="NAME[=CKPT]",
                   help="'identity', an OpenCV baseline ('cv2-mil'; 'cv2-kcf', 'cv2-csrt' with "
                        "opencv-contrib), or a tracker.build_tracker name, optionally with a "
                        "checkpoint: siamfc=runs/siamfc.pth")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: tracker's)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch, OpenCV and ONNX Runtime (default: the cores not busy with other work)")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "torch", "torch-unfused"], default="auto",
                   help="how the learned trackers' networks run (tracker/backends.py; default auto: ONNX "
                        "Runtime on the CPU where installed, else torch with BatchNorm folded); part of "
                        "the results' key")
    p.add_argument("--rotating", type=float, default=None, metavar="DEG_PER_FRAME",
                   help="evaluate on the rotating version of the dataset (built once, cached "
                        "under <out>/rotating/)")
    p.add_argument("--border", choices=["replicate", "constant"], default="replicate",
                   help="border fill of rotated frames (default replicate)")
    p.add_argument("--sequences", nargs="+", default=None, metavar="NAME",
                   help="only these sequences")
    p.add_argument("--max-sequences", type=int, default=None, metavar="N",
                   help="only the first N sequences")
    p.add_argument("--holdout", type=float, default=None, metavar="FRACTION",
                   help="only the source videos that a training config with data.val_fraction = "
                        "FRACTION holds out of --root (its validation split)")
    p.add_argument("--holdout-seed", type=int, default=0, metavar="SEED",
                   help="the training config's data.val_seed (default 0)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default runs/eval/<dataset>[-static]; with --root the "
                        "folder name gets a short digest of the folder's path)")
    p.add_argument("--overwrite", action="store_true", help="re-run finished sequences")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip broken sequences with a warning instead of stopping")
    p.add_argument("--tracker-option", action="append", default=[], metavar="KEY=VALUE",
                   help="tracking option for every tracker (e.g. orientations=8, orientation_margin=1); "
                        "repeatable; the result labels carry it")
    p.add_argument("--static", action="store_true",
                   help="--dataset generated: the non-rotating twin of the generated test set")
    p.add_argument("--baseline", metavar="LABEL", default=None,
                   help="also report every tracker's paired per-sequence difference to this one "
                        "(a label of --trackers), with bootstrap 95%% intervals")
    p.add_argument("--pair", action="append", default=[], metavar="LABEL:BASELINE",
                   help="also report LABEL's paired per-sequence difference to BASELINE (both labels "
                        "of --trackers), e.g. an IEN tracker and its plain twin; repeatable")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _generated_root(split: str, rotating: bool = True) -> Path:
    try:
        from data.generated import default_dataset
    except ImportError as exc:
        raise EvaluationError("the generated dataset is not available (data.synthetic."
                              f"default_dataset: {exc}); pass --root") from None
    try:
        return Path(default_dataset(split=split, rotating=rotating))
    except ValueError as exc:          # e.g. an unknown split
        raise EvaluationError(f"generated dataset: {exc}") from None


def parse_pair(text: str, labels: list) -> tuple:
    """``--pair LABEL:BASELINE`` -> (label, baseline), both labels of --trackers. Labels may hold
    ':' themselves (none does by default), so the split is on the one colon that gives two labels."""
    splits = [(text[:i], text[i + 1:]) for i, c in enumerate(text) if c == ":"]
    for label, baseline in splits:
        if label in labels and baseline in labels:
            if label == baseline:
                raise EvaluationError(f"--pair {text!r}: a tracker compared with itself")
            return label, baseline
    raise EvaluationError(f"--pair {text!r} must be LABEL:BASELINE with both labels among the trackers: "
                          f"{', '.join(labels)}")


def _attribute_map(value) -> dict | None:
    """--attributes FILE: a JSON object {sequence: [attribute, ...]}; None for the dataset's own."""
    if value is None or value is True:
        return None
    import json

    try:
        table = json.loads(Path(value).read_text())
    except FileNotFoundError:
        raise EvaluationError(f"--attributes: file not found: {value}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"--attributes: cannot read {value}: {exc}") from None
    if not isinstance(table, dict) or not all(
            isinstance(v, list) and all(isinstance(a, str) for a in v) for v in table.values()):
        raise EvaluationError(f"--attributes: {value} must be a JSON object "
                              "{sequence: [attribute, ...]}")
    return table


def _takes_options(name: str) -> bool:
    """--tracker-option and --backend apply to the toolkit's trackers, not to the baselines."""
    from tracker import UnknownTracker, tracker_spec

    try:
        return tracker_spec(name).learned
    except UnknownTracker:
        return True          # building it fails later, with the list of names


def _resolved_backend(backend: str, device: str | None) -> str:
    """The concrete inference backend --backend means on --device (it is part of the results' key)."""
    from tracker.backends import BackendError, resolve_backend

    try:
        return resolve_backend(backend, device)
    except BackendError as exc:
        raise EvaluationError(str(exc)) from None


def _print_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def _check_args(args) -> None:
    if args.rotating is not None and not (math.isfinite(args.rotating) and abs(args.rotating) <= 360):
        raise EvaluationError(f"--rotating must be a finite number of degrees per frame within ±360, got {args.rotating:g}")
    if args.holdout_seed < 0:
        raise EvaluationError(f"--holdout-seed must be a non-negative integer, got {args.holdout_seed}")
    if args.max_sequences is not None and args.max_sequences < 1:
        raise EvaluationError("--max-sequences must be at least 1")
    if args.holdout is not None and not 0 < args.holdout < 1:
        raise EvaluationError("--holdout must be a fraction between 0 and 1 (data.val_fraction)")
    if args.frame_ranges is not None and args.rotating is not None:
        raise EvaluationError("--frame-ranges cannot be combined with --rotating (put the file "
                              "in the dataset folder as configSeqs.m instead)")
    if args.threads is not None:
        try:
            check_threads(args.threads)
        except ValueError as exc:
            raise EvaluationError(f"--{exc}") from None


def _dataset(args) -> tuple:
    """(protocol, root, subset, dataset label, output folder, variant): the folder and protocol, and
    what besides the tracker and the sequence decides a result (part of its key)."""
    if args.root is None:
        if args.dataset not in (None, "generated"):
            raise EvaluationError(f"--dataset {args.dataset} needs --root (a local copy of the "
                                  "dataset; nothing is downloaded)")
        protocol, root, subset = "generated", _generated_root(args.subset or "test", rotating=not args.static), None
        dataset_label = "generated"
        out_name = "generated-static" if args.static else "generated"
    else:
        root = args.root
        if not root.is_dir():
            raise DatasetError(f"dataset folder not found: {root}")
        layout = detect_layout(root) if args.layout == "auto" else args.layout
        protocol = args.dataset or layout
        subset = args.subset
        dataset_label = f"{protocol}-{root.resolve().name}" + (f"-{subset}" if subset else "")
        out_name = f"{dataset_label}-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:6]}"
    if args.holdout is not None:
        dataset_label += f"-holdout{args.holdout:g}s{args.holdout_seed}"
        out_name += f"-holdout{args.holdout:g}s{args.holdout_seed}"
    if args.rotating is not None:
        dataset_label += f"-rot{args.rotating:g}"
        out_name += f"-rot{args.rotating:g}"
    out = args.out if args.out is not None else Path("runs") / "eval" / out_name
    variant = {"root": str(Path(root).resolve()), "subset": subset,
               "static": bool(args.root is None and args.static), "rotating": args.rotating,
               "border": args.border if args.rotating is not None else None}
    return protocol, root, subset, dataset_label, out, variant


def _sequences(args, root, subset, out) -> tuple:
    """(sequences, root they were read from): the held-out ones with --holdout, their rotating
    copies with --rotating, the first --max-sequences."""
    layout, names = args.layout, args.sequences
    if args.holdout is not None:         # chosen on the source folder (meta.json: source videos)
        from data import split_by_source

        _, held = split_by_source(load_sequences(root, layout=layout, subset=subset, names=names,
                                                 skip_bad=args.skip_bad, frame_ranges=args.frame_ranges),
                                  args.holdout, args.holdout_seed)
        names = [s.name for s in held]
    if args.rotating is not None:
        from data.rotating import make_rotating
        rot_dir = out / "rotating" / f"{args.rotating:g}deg-{args.border}"
        print(f"rotating dataset: {rot_dir}", file=sys.stderr)
        root = make_rotating(root, rot_dir, args.rotating, layout=layout, border=args.border,
                             max_sequences=args.max_sequences, subset=subset,
                             names=names, skip_bad=args.skip_bad,
                             progress=not args.no_progress)
        layout, subset = "got10k", None
    sequences = load_sequences(root, layout=layout, subset=subset, names=names,
                               skip_bad=args.skip_bad,
                               frame_ranges=None if args.rotating is not None else args.frame_ranges)
    if args.attributes is not None and not has_attributes(sequences, _attribute_map(args.attributes)):
        raise EvaluationError("--attributes: these sequences have no attribute files (UAV123 "
                              "anno/<version>/att/, VOT <seq>/*.tag); give a JSON file "
                              "{sequence: [attribute, ...]}")
    if args.max_sequences is not None:
        sequences = sequences[:args.max_sequences]
    return sequences, root


def _trackers(args, sequences, root, store, variant) -> tuple:
    """(labels, factories, keys, pairs): every tracker spec parsed first; those with unfinished
    sequences built up front, so a bad name or checkpoint fails before any tracking starts."""
    options = parse_tracker_options(args.tracker_option)
    specs = [parse_tracker_spec(s) for s in args.trackers]
    specs = [(label + (options_label(options) if _takes_options(name) else ""), name, ckpt)
             for label, name, ckpt in specs]
    labels = [label for label, _, _ in specs]
    if args.baseline is not None and args.baseline not in labels:
        raise EvaluationError(f"--baseline {args.baseline!r} is not one of the trackers: {', '.join(labels)}")
    pairs = [parse_pair(text, labels) for text in args.pair]
    duplicates = sorted({lb for lb in labels if labels.count(lb) > 1})
    if duplicates:
        raise EvaluationError(f"tracker given twice: {', '.join(duplicates)}")
    sequence_ids = {s.name: sequence_identity(s, root) for s in sequences}
    factories, keys = {}, {}
    for label, name, checkpoint in specs:
        opts = options if _takes_options(name) else {}
        backend = _resolved_backend(args.backend, args.device) if _takes_options(name) else None
        identity = tracker_identity(name, checkpoint, opts, backend)
        keys[label] = {s.name: result_key(identity, sequence_ids[s.name], variant) for s in sequences}
        needed = args.overwrite or not all(store.is_complete(label, s, keys[label][s.name]) for s in sequences)
        tracker = build_named_tracker(name, checkpoint, args.device, backend, **opts) if needed else None
        factories[label] = (lambda t=tracker: t)
    return labels, factories, keys, pairs


def _print_report(args, report: dict, protocol: str, pairs: list, written: dict) -> None:
    print(markdown_summary(report))
    if args.baseline is not None:
        print("\n" + markdown_comparison(report))
    if pairs:
        print("\n" + markdown_pairs(report))
    if args.attributes is not None:
        print("\n" + markdown_attributes(report))
    if all(t["overall"]["scored_frames"] == 0 for t in report["trackers"].values()):
        server = "trackingnet" if protocol == "trackingnet" else "got10k"
        print("note: cannot score these sequences here: no frame after the first has ground truth "
              "(a test split whose annotations are withheld: GOT-10k test, TrackingNet TEST); "
              + (f"the {args.submission} submission zip is written below" if args.submission else
                 f"write the evaluation server's zip with --submission {server}"), file=sys.stderr)
    for path in written.values():
        print(f"wrote {path}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    protocol, root, subset, dataset_label, out, variant = _dataset(args)
    with FolderLock(out):       # one evaluation per --out: its results and rotating copies are not shared
        return _run(args, protocol, root, subset, dataset_label, out, variant)


def _run(args, protocol, root, subset, dataset_label, out, variant) -> int:
    sequences, root = _sequences(args, root, subset, out)
    store = ResultStore(out / "results", "otb" if protocol == "otb" else "got10k")
    from common.threads import apply_thread_policy

    apply_thread_policy(args.threads)          # torch, OpenCV and ONNX Runtime alike
    labels, factories, keys, pairs = _trackers(args, sequences, root, store, variant)
    results = run_trackers(factories, sequences, store, overwrite=args.overwrite,
                           progress=not args.no_progress,
                           log=lambda m: print(m, file=sys.stderr), keys=keys, skip_bad=args.skip_bad)
    tracked = [s for s in sequences if all(s.name in per_seq for per_seq in results.values())]
    if not tracked:
        raise DatasetError("no sequence could be tracked (every one has a bad frame)")
    if len(tracked) < len(sequences):      # --skip-bad: a sequence is scored for all trackers or none
        results = {label: {s.name: per_seq[s.name] for s in tracked} for label, per_seq in results.items()}
        sequences = tracked
    report = build_report(protocol, sequences, results, dataset=dataset_label)
    report["root"] = str(Path(root).resolve())
    if args.baseline is not None:
        compare_to_baseline(report, args.baseline)
    if pairs:
        compare_pairs(report, pairs)
    if args.attributes is not None:
        report["attributes"] = attribute_report(protocol, sequences, results, _attribute_map(args.attributes))
    written = write_report(report, out, plots=not args.no_plots)
    if args.submission is not None:
        for label, per_seq in results.items():
            try:
                written[f"submission {label}"] = write_submission(args.submission, label, per_seq, out)
            except ValueError as exc:
                raise EvaluationError(f"--submission {args.submission}, tracker {label}: {exc}") from None
    _print_report(args, report, protocol, pairs, written)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", DatasetWarning)
        warnings.showwarning = _print_warning
        try:
            return run(args)
        except (DatasetError, EvaluationError, TrackerSpecError, TrackingError, FolderBusy) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:      # unwritable or full --out, a path under a file ...
            print(f"error: {describe_os_error(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:   # every finished sequence is already on disk (atomic writes)
            print("error: interrupted; the finished sequences are kept and reused when the same "
                  "command runs again", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
