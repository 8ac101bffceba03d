#!/usr/bin/env python
"""Frames per second of plain, IEN and RE-SiamNet trackers side by side, batch 1.

    python tools/benchmark_fps.py                          # default trackers, default device
    python tools/benchmark_fps.py --device cuda --json
    python tools/benchmark_fps.py --trackers siamfc=runs/siamfc.pth re-siamfc --frames 300
    python tools/benchmark_fps.py --trackers siamfc-plain=configs/tracking/siamfc_plain.toml

Each tracker is initialised on the first frame of a sequence (default: the first generated
rotating test sequence), updated on ``--warmup`` frames that are not timed, then on
``--frames`` timed frames (the sequence is cycled if it is shorter). A frame's time is one
``update()`` call: crop, resize, normalisation, network and box decoding included; decoding
the JPEG is not (frames are decoded beforehand, by :func:`data.frames.read_frame`: a truncated
or corrupt frame is an error naming it). The backbone alone (through the tracker's inference
backend: its feature extractor) is timed on a (1, 3, S, S) search-size tensor, S = the model's
instance size, by ``torch.utils.benchmark.Timer.blocked_autorange`` for ``--backbone-time``
seconds; so is a SiamFC tracker's correlation alone, on its own template bank and search
features, as conv2d and as one GEMM (``correlation``: which one its backend uses, both times and
their largest difference). Reported: median and interquartile range of the per-frame times,
FPS = 1 / median, and the FPS ratios IEN / RE-SiamNet (e.g. siamfc / re-siamfc) and plain / IEN
(siamfc-plain / siamfc).

``--re-equal-params`` adds the row ``re-siamfc-eqparams``: an untrained e2cnn C8 ResNet-22
RE-SiamNet as wide as needed to have the parameter count of the IEN SiamFC (``siamfc``), the
paper's comparison; the bundled ``re-siamfc`` is the equal-width one. ``--threads`` follows the
toolkit's thread policy (common.threads.apply_thread_policy: torch, OpenCV and ONNX Runtime get
the same count, by default the cores not busy); ``--backend`` picks the networks' inference
backend (tracker/backends.py), recorded per tracker in the output.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from data import DatasetError, load_sequences  # noqa: E402
from evaluation.experiment import TrackerSpecError, build_named_tracker, parse_tracker_spec  # noqa: E402
from evaluation.fps import (  # noqa: E402
    BenchmarkError,
    machine_info,
    time_backbone,
    time_correlation,
    time_interleaved,
    time_tracker,
)

DEFAULT_TRACKERS = ["nanotrack-ien", "nanotrack-plain", "siamfc-plain", "siamfc", "re-siamfc", "siamrpn-plain", "siamrpn"]
EQUAL_PARAMS_LABEL = "re-siamfc-eqparams"
BACKEND_CHOICES = ["auto", "onnxruntime", "torch", "torch-unfused"]
# the timed frames cycle over the sequence and each backbone / correlation timing runs for
# --backbone-time seconds per tracker: bounds that keep a typo from running for days
MAX_FRAMES, MAX_WARMUP, MAX_BACKBONE_TIME = 100_000, 10_000, 600.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="FPS of trackers and of their backbones, batch 1.")
    p.add_argument("--trackers", nargs="+", default=None, metavar="NAME[=PATH]",
                   help="tracker.build_tracker names, optionally =CHECKPOINT.pth or "
                        "=CONFIG.toml (untrained model of that architecture; FPS needs no "
                        f"weights). Default: {' '.join(DEFAULT_TRACKERS)}, skipping those "
                        "that cannot be built")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda if available, else cpu")
    p.add_argument("--root", type=Path, default=None,
                   help="dataset folder whose first sequence is used (default: generated)")
    p.add_argument("--warmup", type=int, default=10, help="untimed frames first (default 10)")
    p.add_argument("--frames", type=int, default=100, help="timed frames (default 100)")
    p.add_argument("--backbone-time", type=float, default=2.0, metavar="SECONDS",
                   help="time the backbone (and the SiamFC correlation) alone for at least this long "
                        "(torch.utils.benchmark "
                        "blocked_autorange; default 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch, OpenCV and ONNX Runtime (default: the cores not busy)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="the networks' inference backend (tracker/backends.py; default auto: ONNX Runtime "
                        "on the CPU where installed, else torch with BatchNorm folded)")
    p.add_argument("--re-equal-params", action="store_true",
                   help=f"add {EQUAL_PARAMS_LABEL}: an untrained e2cnn RE-SiamNet with the IEN SiamFC's "
                        "parameter count (speed only)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--interleaved", action="store_true",
                   help="end to end, side by side: every sequence of --root (or --video) tracked by all "
                        "trackers at once, frame by frame in a rotating order, init and every update "
                        "timed; FPS = frames / total tracker time, ratios to --reference")
    p.add_argument("--video", type=Path, default=None, help="--interleaved: a video file instead of --root")
    p.add_argument("--init-box", default=None, metavar="X,Y,W,H", help="--video: the target's first box")
    p.add_argument("--conv2d-twins", action="store_true",
                   help="--interleaved: every SiamFC tracker also runs as LABEL+conv2d, the same tracker "
                        "correlating by conv2d instead of one GEMM (an end-to-end A/B of the correlation)")
    p.add_argument("--reference", default=None, metavar="LABEL",
                   help="--interleaved: report every tracker's FPS ratio to this one (e.g. cv2-mil)")
    args = p.parse_args(argv)
    args.skip_unavailable = args.trackers is None
    if args.trackers is None:
        args.trackers = list(DEFAULT_TRACKERS)
    return args


def _model_of(tracker):
    model = getattr(tracker, "model", None)
    return model if model is not None else getattr(tracker, "net", None)


def _search_size(tracker, model) -> int:
    for owner, attr in ((getattr(model, "config", None), "instance_size"),
                        (getattr(tracker, "cfg", None), "instance_sz"),
                        (getattr(tracker, "config", None), "instance_size"),
                        (tracker, "instance_size")):
        value = getattr(owner, attr, None) if owner is not None else None
        if isinstance(value, int) and value > 0:
            return value
    return 255


def tracker_kind(name: str) -> tuple[str, str | None]:
    """(family, network) of a tracker from the registry: ("siamfc", "ien"), ("siamfc", "plain"),
    ("siamfc", "steerable") for RE-SiamNet (and the equal-parameters RE-SiamNet), baselines: network None."""
    from tracker import UnknownTracker, tracker_spec

    if name.lower() == EQUAL_PARAMS_LABEL:
        return "siamfc", "steerable"
    try:
        spec = tracker_spec(name)
    except UnknownTracker:
        return name.lower(), None
    return spec.family, spec.network


def fps_ratios(results: dict) -> dict:
    """FPS ratios IEN / RE-SiamNet and plain / IEN within each family (siamfc, siamrpn, nanotrack)."""
    kinds = {label: tracker_kind(data["name"]) for label, data in results.items()}
    ratios = {}
    for num_kind, den_kind in (("ien", "steerable"), ("plain", "ien")):
        for num, (num_family, nk) in kinds.items():
            for den, (den_family, dk) in kinds.items():
                if nk == num_kind and dk == den_kind and num_family == den_family:
                    ratios[f"{num} / {den}"] = _ratio(results[num], results[den])
    return ratios


def _ratio(a: dict, b: dict) -> dict:
    def div(x, y):
        return float(x / y) if x and y else None
    return {"tracker": div(a["tracker"]["fps"], b["tracker"]["fps"]),
            "backbone": div((a.get("backbone") or {}).get("fps"),
                            (b.get("backbone") or {}).get("fps"))}


def _benchmark_frames(root: Path | None) -> tuple[list, np.ndarray, str]:
    if root is None:
        try:
            from data.generated import default_dataset
        except ImportError as exc:
            raise BenchmarkError("the generated dataset is not available "
                                 f"(data.generated.default_dataset: {exc}); pass --root"
                                 ) from None
        try:
            root = Path(default_dataset(split="test", rotating=True))
        except ValueError as exc:
            raise BenchmarkError(f"generated dataset: {exc}") from None
    seq = load_sequences(root)[0]
    return _rgb_frames(seq), seq.boxes[0], f"{root}/{seq.name}"


def _rgb_frames(seq) -> list:
    """A sequence's frames decoded once (never timed) by the toolkit's one decoder, as HxWx3 uint8
    RGB arrays; a truncated or corrupt frame is a FrameError naming it."""
    from data.frames import read_frame

    return [read_frame(path) for path in seq.img_files]


def _build(name: str, path: Path | None, device: str, backend: str | None = None):
    """A tracker from its bundled weights, a checkpoint, or (``.toml``) an untrained model of
    the architecture a training config's [model] table describes: FPS needs no weights."""
    if path is None or path.suffix.lower() != ".toml":
        return build_named_tracker(name, path, device, backend)
    import tomllib

    try:
        model_table = tomllib.loads(path.read_text()).get("model")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BenchmarkError(f"cannot read {path}: {exc}") from None
    if not isinstance(model_table, dict):
        raise BenchmarkError(f"{path}: no [model] table")
    try:
        from tracker import build_tracker
        from tracker.models import build_model
    except ImportError as exc:
        raise TrackerSpecError(f"tracker.build_tracker is not available ({exc})") from None
    try:
        model = build_model(model_table)
        return build_tracker(name, model=model, device=device, **({"backend": backend} if backend else {}))
    except (KeyError, ValueError, RuntimeError) as exc:
        raise BenchmarkError(f"cannot build tracker {name!r} from {path}: {exc}") from None


def add_conv2d_twins(trackers: dict, specs: list, device: str, backend: str) -> dict:
    """``trackers`` with, after each SiamFC tracker (one that may correlate by GEMM), a second
    build of it, labelled LABEL+conv2d, that always correlates by the model's conv2d."""
    paths = {label: (name, path) for label, name, path in specs}
    out = {}
    for label, (name, tracker) in trackers.items():
        out[label] = (name, tracker)
        if hasattr(tracker, "correlates_by_gemm") and label in paths:
            twin = _build(*paths[label], device, backend)
            twin.gemm_correlation = False
            out[f"{label}+conv2d"] = (name, twin)
    return out


def _concrete_backend(backend: str, device: str) -> str:
    """--backend resolved for weights loaded from files (also used for untrained .toml models)."""
    from tracker.backends import BackendError, resolve_backend

    try:
        return resolve_backend(backend, device)
    except BackendError as exc:
        raise BenchmarkError(str(exc)) from None


def _parameter_count(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def equal_parameter_width(target: int, make_model, start: float = 0.25, tries: int = 4) -> tuple[float, object]:
    """(width_mult, model) of the ``make_model(width_mult)`` whose parameter count is closest to
    ``target``: parameters grow about with the width squared, so each try rescales the width by
    sqrt(target / count); channel counts are rounded to whole fields, so a few tries settle."""
    width, best = start, None
    for _ in range(tries):
        model = make_model(width)
        count = _parameter_count(model)
        if best is None or abs(count - target) < abs(best[2] - target):
            best = (width, model, count)
        if count == target:
            break
        new_width = round(width * (target / count) ** 0.5, 4)
        if new_width == width:
            break
        width = new_width
    return best[0], best[1]


def equal_parameter_re_siamfc(reference, device: str, backend: str | None):
    """An untrained RE-SiamNet (e2cnn C8 ResNet-22 SiamFC, the bundled re-siamfc's config) widened
    to the parameter count of ``reference``'s model (default: the bundled IEN SiamFC). Speed only:
    its boxes mean nothing. The tracker gets ``equal_parameters`` = {width_mult, parameters,
    reference_parameters}."""
    try:
        from tracker import build_tracker, default_checkpoint
        from tracker.models import build_model, model_config_of, model_from_checkpoint
    except ImportError as exc:
        raise TrackerSpecError(f"tracker.build_tracker is not available ({exc})") from None
    from common.checkpoints import load_checkpoint
    from common.config import to_dict

    ref_model = getattr(reference, "model", None)
    if ref_model is None:
        try:
            ref_model, _ = model_from_checkpoint(default_checkpoint("siamfc"))
        except (OSError, ValueError) as exc:
            raise BenchmarkError(f"--re-equal-params needs the IEN SiamFC's weights: {exc}") from None
    target = _parameter_count(ref_model)
    try:
        config = to_dict(model_config_of(load_checkpoint(default_checkpoint("re-siamfc")), "re-siamfc"))
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"--re-equal-params needs the bundled re-siamfc's config: {exc}") from None

    def make_model(width: float):
        return build_model({**config, "backbone": {**config["backbone"], "width_mult": width}})

    width, model = equal_parameter_width(target, make_model, start=float(config["backbone"]["width_mult"]))
    tracker = build_tracker("re-siamfc", model=model, device=device, **({"backend": backend} if backend else {}))
    tracker.equal_parameters = {"width_mult": width, "parameters": _parameter_count(model),
                                "reference_parameters": target}
    return tracker


def run(args: argparse.Namespace) -> dict:
    import torch

    if not (1 <= args.frames <= MAX_FRAMES and 0 <= args.warmup <= MAX_WARMUP
            and 0 < args.backbone_time <= MAX_BACKBONE_TIME):
        raise BenchmarkError(f"need 1 <= --frames <= {MAX_FRAMES}, 0 <= --warmup <= {MAX_WARMUP} and "
                             f"0 < --backbone-time <= {MAX_BACKBONE_TIME:g} seconds")
    if args.conv2d_twins and not args.interleaved:
        raise BenchmarkError("--conv2d-twins needs --interleaved")
    from common.threads import apply_thread_policy

    try:
        apply_thread_policy(args.threads)  # torch, the crops, OpenCV's trackers, ONNX Runtime: one budget
    except ValueError as exc:
        raise BenchmarkError(f"--{exc}") from None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda: no CUDA device is available")
    backend = _concrete_backend(args.backend, device)
    specs = [parse_tracker_spec(s) for s in args.trackers]
    labels = [label for label, _, _ in specs]
    if len(set(labels)) != len(labels):
        raise BenchmarkError("a tracker is given twice")
    trackers, skipped = {}, {}
    for label, name, path in specs:
        try:
            trackers[label] = (name, _build(name, path, device, backend))
        except (TrackerSpecError, BenchmarkError) as exc:
            if not args.skip_unavailable:
                raise
            skipped[label] = str(exc)
    if args.re_equal_params:
        if EQUAL_PARAMS_LABEL in trackers:
            raise BenchmarkError(f"a tracker is labelled {EQUAL_PARAMS_LABEL} already")
        reference = next((t for _, (n, t) in trackers.items() if tracker_kind(n) == ("siamfc", "ien")), None)
        trackers[EQUAL_PARAMS_LABEL] = ("re-siamfc", equal_parameter_re_siamfc(reference, device, backend))
    if not trackers:
        reasons = "; ".join(dict.fromkeys(skipped.values()))
        raise BenchmarkError(f"no tracker could be built ({reasons}); pass NAME=CHECKPOINT.pth "
                             "or NAME=CONFIG.toml")
    for label, reason in skipped.items():
        print(f"warning: skipping {label}: {reason}", file=sys.stderr)
    if args.conv2d_twins:
        trackers = add_conv2d_twins(trackers, specs, device, backend)
    if args.interleaved:
        return run_interleaved(args, trackers)
    if args.video is not None:
        raise BenchmarkError("--video needs --interleaved")
    frames, init_box, source = _benchmark_frames(args.root)

    results = {}
    for label, (name, tracker) in trackers.items():
        entry = {"name": name,
                 "tracker": time_tracker(tracker, frames, init_box, args.warmup, args.frames,
                                         device)}
        model = _model_of(tracker)
        backbone = getattr(model, "backbone", None) if model is not None else None
        if isinstance(backbone, torch.nn.Module):
            # through the tracker's inference backend (its feature extractor) where it has one
            entry["backbone"] = time_backbone(backbone, _search_size(tracker, model),
                                              max(3, args.warmup), args.backbone_time,
                                              forward=getattr(tracker, "features", None))
            # learnable parameters (RE-SiamNet: of its e2cnn backbone, not of the expanded export it runs)
            entry["parameters"] = getattr(tracker, "backbone_parameters", None) or int(
                sum(p.numel() for p in backbone.parameters()))
        else:
            entry["backbone"] = None
        entry["backend"] = getattr(tracker, "backend", None)
        entry["correlation"] = time_correlation(tracker, frames[-1], args.backbone_time)
        if label == EQUAL_PARAMS_LABEL:
            entry["equal_parameters"] = tracker.equal_parameters
        results[label] = entry
    return {"device": device, "torch_threads": torch.get_num_threads(), "backend": args.backend, "sequence": source,
            "warmup": args.warmup, "frames": args.frames, "batch": 1,
            "trackers": results, "skipped": skipped, "ratios": fps_ratios(results)}


def _video_sequence(path: Path, init_box: str | None):
    """(name, frames, first box) of a video file, frames as HxWx3 uint8 RGB arrays (data.video)."""
    from data.video import FrameSource, VideoError

    if init_box is None:
        raise BenchmarkError("--video needs --init-box X,Y,W,H")
    try:
        box = np.array([float(v) for v in init_box.split(",")], dtype=np.float64)
    except ValueError:
        box = np.zeros(0)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
        raise BenchmarkError(f"--init-box {init_box!r} must be four numbers X,Y,W,H with W, H > 0")
    try:
        source = FrameSource(str(path))
        try:
            frames = list(source)
        finally:
            source.close()
    except VideoError as exc:
        raise BenchmarkError(str(exc)) from None
    if len(frames) < 2:
        raise BenchmarkError(f"cannot read at least 2 frames from {path}")
    return path.name, frames, box


def _interleaved_sequences(args):
    if args.video is not None:
        yield _video_sequence(args.video, args.init_box)
        return
    root = args.root
    if root is None:
        frames, box, source = _benchmark_frames(None)
        yield source, frames, box
        return
    for seq in load_sequences(root):
        yield seq.name, _rgb_frames(seq), np.asarray(seq.boxes[0], dtype=np.float64)


def run_interleaved(args, trackers: dict) -> dict:
    if args.reference is not None and args.reference not in trackers:
        raise BenchmarkError(f"--reference {args.reference!r} is not one of the trackers: {', '.join(trackers)}")
    sequences = list(_interleaved_sequences(args))
    machine = machine_info()
    results = time_interleaved({label: t for label, (_, t) in trackers.items()}, sequences, args.warmup)
    machine["load_average_after"] = machine_info()["load_average"]
    for label, (name, tracker) in trackers.items():
        results[label]["name"] = name
        results[label]["backend"] = getattr(tracker, "backend", None)
        if label == EQUAL_PARAMS_LABEL:
            results[label]["equal_parameters"] = tracker.equal_parameters
    ratios = {}
    if args.reference is not None:
        ref = results[args.reference]["fps"]
        ratios = {f"{label} / {args.reference}": (r["fps"] / ref if r["fps"] and ref else None)
                  for label, r in results.items() if label != args.reference}
    kinds = {label: tracker_kind(name) for label, (name, _) in trackers.items()}
    for num, (num_family, num_kind) in kinds.items():      # IEN / RE-SiamNet, equal width and equal parameters
        for den, (den_family, den_kind) in kinds.items():
            if (num_kind, den_kind) == ("ien", "steerable") and num_family == den_family:
                a, b = results[num]["fps"], results[den]["fps"]
                ratios[f"{num} / {den}"] = a / b if a and b else None
    return {"mode": "interleaved", "machine": machine, "backend": args.backend,
            "source": str(args.video or args.root or "generated"),
            "sequences": len(sequences), "warmup": args.warmup, "trackers": results, "ratios": ratios}


def format_interleaved(report: dict) -> str:
    m = report["machine"]
    lines = [f"{m['cpu']}, {m['cores']} cores, load {m['load_average']} -> {m['load_average_after']}, "
             f"torch {m['torch']} ({m['torch_threads']} threads), OpenCV {m['opencv']} "
             f"({m['opencv_threads']} threads); {report['sequences']} sequences of {report['source']}, "
             "interleaved, init and updates timed", "",
             "| Tracker | backend | FPS (end to end) | median update ms | IQR ms |", "|---|---|---:|---:|---:|"]
    for label, r in report["trackers"].items():
        lines.append(f"| {label} | {r.get('backend') or '–'} | {r['fps']:.1f} | {r['update']['median_ms']:.2f} "
                     f"| {r['update']['iqr_ms']:.2f} |")
    for pair, ratio in report["ratios"].items():
        lines.append(f"FPS ratio {pair}: {'–' if ratio is None else f'{ratio:.2f}'}")
    return "\n".join(lines)


def format_table(report: dict) -> str:
    lines = [f"device {report['device']} (torch threads {report['torch_threads']}), batch 1, "
             f"{report['frames']} timed frames after {report['warmup']} warm-up, "
             f"sequence {report['sequence']}", "",
             "| Tracker | FPS | median ms | IQR ms | Backbone FPS | Backbone ms "
             "| Backbone params |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, e in report["trackers"].items():
        t, b = e["tracker"], e.get("backbone")
        bb = (f"{b['fps']:.1f} | {b['median_ms']:.2f} | {e['parameters']:,}" if b
              else "– | – | –")
        lines.append(f"| {label} | {t['fps']:.1f} | {t['median_ms']:.2f} | {t['iqr_ms']:.2f} | "
                     f"{bb} |")
    for label, reason in report.get("skipped", {}).items():
        lines.append(f"| {label} | skipped: {reason} | | | | | |")
    correlations = {label: e["correlation"] for label, e in report["trackers"].items() if e.get("correlation")}
    if correlations:
        lines += ["", "| Tracker | template | search features | conv2d ms | GEMM ms | speed-up | used |",
                  "|---|---|---|---:|---:|---:|---|"]
        for label, c in correlations.items():
            lines.append(f"| {label} | {'x'.join(map(str, c['template']))} | {'x'.join(map(str, c['search']))} | "
                         f"{c['conv2d_ms']:.3f} | {c['gemm_ms']:.3f} | {c['gemm_speedup']:.1f}x | {c['used']} |")
    if report["ratios"]:
        lines.append("")
        for pair, r in report["ratios"].items():
            tracker = "–" if r["tracker"] is None else f"{r['tracker']:.2f}"
            backbone = "–" if r["backbone"] is None else f"{r['backbone']:.2f}"
            lines.append(f"FPS ratio {pair}: tracker {tracker}, backbone {backbone}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)     # e2cnn's torch deprecation noise
            report = run(args)
    except (BenchmarkError, DatasetError, TrackerSpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_interleaved(report) if report.get("mode") == "interleaved" else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
