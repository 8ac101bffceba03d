"""Score tracker results and write report.json, report.md and success/precision plots.

Protocols:
  got10k  AO, SR0.5, SR0.75 over all scored frames together (frame-weighted, as the GOT-10k
          toolkit does); frame 0 and frames whose target is absent (absence.label = 1 or
          cover.label = 0) are not scored; boxes are clipped to the image first.
  otb     success AUC (21 IoU thresholds), precision at 20 px, normalized precision (AUC over
          [0, 0.5]); curves are averaged over sequences (sequence-weighted), frame 0 included
          with the ground-truth box, as in the OTB toolkit.
  generated  both sets of columns.
  uav123, trackingnet  the OTB scores (frames whose ground truth is NaN are not scored, as in
          the got10k toolkit's UAV123 experiment).
  lasot   the OTB scores as the official LaSOT toolkit computes them: frames where the target is
          fully occluded or out of view (and frames without a valid box) are removed before
          scoring but stay in each sequence's frame count (``eval_tracker.m`` divides by all
          frames), so they count as misses.
  vot     one-pass (no re-initialisation, no EAO) OTB scores where the overlap is the IoU of
          the tracker's rotated box (its box without one) with the ground-truth polygon
          (shapely); the centre errors use the polygon's bounds.
Frames without a usable ground-truth box (NaN or non-positive size) are never scored.
Rotated ground truth (polygon.txt / angle.txt), when present, adds polygon IoU (the tracker's
polygon if it gave one, else its box, against the rotated ground-truth polygon) and the mean
absolute angle error: the tracker's ``last_angle`` is its estimate of the target's rotation
since the first frame, compared with angle(t) - angle(0) (with rotation.txt's axis angles,
modulo 180: an error is at most 90 degrees there).
"""
from __future__ import annotations

import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from common.atomic import write_bytes_atomic
from data import Sequence, box_to_polygon

from .experiment import SequenceResult
from .metrics import (
    GOT10K_IOU_THRESHOLDS,
    OTB_CE_THRESHOLDS,
    OTB_IOU_THRESHOLDS,
    OTB_NCE_THRESHOLDS,
    angle_errors,
    box_iou,
    center_errors,
    got10k_scores,
    normalized_center_errors,
    otb_curves,
    paired_difference,
    polygon_iou,
)

__all__ = ["PROTOCOLS", "sequence_scores", "build_report", "write_report", "markdown_summary",
           "compare_to_baseline", "markdown_comparison", "compare_pairs", "markdown_pairs",
           "attribute_report", "markdown_attributes", "has_attributes"]

PROTOCOLS = ("got10k", "otb", "generated", "lasot", "uav123", "vot", "trackingnet")

_COLUMNS = {  # key -> (header, format)
    "ao": ("AO", "{:.3f}"), "sr50": ("SR0.5", "{:.3f}"), "sr75": ("SR0.75", "{:.3f}"),
    "success_auc": ("Success AUC", "{:.3f}"), "precision20": ("Prec@20px", "{:.3f}"),
    "norm_precision": ("Norm. prec.", "{:.3f}"), "poly_iou": ("Polygon IoU", "{:.3f}"),
    "angle_error": ("Angle err (deg)", "{:.1f}"), "fps": ("FPS", "{:.1f}"),
}
_PROTOCOL_COLUMNS = {
    "got10k": ["ao", "sr50", "sr75"],
    "otb": ["success_auc", "precision20", "norm_precision"],
    "generated": ["ao", "sr50", "sr75", "success_auc", "precision20", "norm_precision"],
    **{name: ["success_auc", "precision20", "norm_precision"]
       for name in ("lasot", "uav123", "vot", "trackingnet")},
}


def _image_size(seq: Sequence) -> tuple[int, int]:
    with Image.open(seq.img_files[0]) as image:   # reads the header only
        return image.size


def _usable_gt(seq: Sequence) -> np.ndarray:
    gt = seq.boxes
    ok = np.isfinite(gt).all(axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)
    if seq.absent is not None:
        ok &= ~seq.absent.astype(bool)
    if seq.cover is not None:
        ok &= seq.cover > 0
    return ok


def _fps(times: np.ndarray) -> np.ndarray:
    times = np.asarray(times, dtype=np.float64)
    times = times[np.isfinite(times) & (times > 0)]
    return 1.0 / times


def sequence_scores(seq: Sequence, result: SequenceResult, protocol: str | None = None) -> dict:
    """Per-frame scores of one tracker on one sequence (arrays, for aggregation).

    ``otb_frames`` holds the frame index of each entry of ``otb_ious`` / ``errors``; the
    "lasot" and "vot" protocols change the OTB-style arrays (see the module docstring)."""
    if len(result.boxes) != len(seq):
        raise ValueError(f"sequence {seq.name}: {len(result.boxes)} result rows for "
                         f"{len(seq)} frames")
    usable = _usable_gt(seq)
    later = usable.copy()
    later[0] = False                                 # GOT-10k: the init frame is not scored
    bound = _image_size(seq)
    pred = np.asarray(result.boxes, dtype=np.float64).copy()
    gt = seq.boxes
    # a missing (NaN) prediction scores as a miss: IoU 0, infinite centre error
    got_ious = np.nan_to_num(box_iou(pred[later], gt[later], bound=bound), nan=0.0)
    otb_pred = pred.copy()
    otb_pred[0] = gt[0]                              # OTB toolkit: frame 0 = ground truth
    otb_ious = np.nan_to_num(box_iou(otb_pred[usable], gt[usable]), nan=0.0)
    errors = center_errors(otb_pred[usable], gt[usable])
    norm_errors = normalized_center_errors(otb_pred[usable], gt[usable])
    otb_frames = np.flatnonzero(usable)
    if protocol == "vot" and seq.polygons is not None:
        region = result.polygons if result.polygons is not None else pred
        region = np.array(region if region.shape[1] == 8 else box_to_polygon(region))
        region[0] = seq.polygons[0]                  # frame 0 = ground truth, as above
        otb_ious = np.nan_to_num(polygon_iou(region[usable], seq.polygons[usable]), nan=0.0)
    if protocol == "lasot":
        # official toolkit: absent / invalid frames are dropped, the count stays all frames
        n = len(seq)
        full_ious, full_err, full_norm = np.zeros(n), np.full(n, np.inf), np.full(n, np.inf)
        full_ious[usable], full_err[usable], full_norm[usable] = otb_ious, errors, norm_errors
        otb_ious, errors, norm_errors, otb_frames = full_ious, full_err, full_norm, np.arange(n)
    scores = {"length": len(seq), "got_ious": got_ious, "otb_ious": otb_ious,
              "errors": errors, "norm_errors": norm_errors, "otb_frames": otb_frames,
              "fps": _fps(result.times)}
    if seq.polygons is not None:
        region = result.polygons if result.polygons is not None else pred
        rows = later & np.isfinite(seq.polygons).all(axis=1)
        scores["poly_ious"] = np.nan_to_num(
            polygon_iou(region[rows], seq.polygons[rows], bound=bound), nan=0.0)
        scores["poly_source"] = "polygon" if result.polygons is not None else "box"
    # the target's own axis angle (rotation.txt, modulo 180) when known, else angle.txt
    truth, period = ((seq.axis_angles, 180.0) if seq.axis_angles is not None else (seq.angles, 360.0))
    if truth is not None and result.angles is not None:
        gt_rel = truth - truth[0]
        rows = later & np.isfinite(result.angles) & np.isfinite(gt_rel)
        scores["angle_errors"] = angle_errors(result.angles[rows], gt_rel[rows], period)
    return scores


def _mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.mean(values)) if values.size else float("nan")


def _summarise(scores: dict) -> dict:
    """Scalar scores of one sequence (or of frames pooled over sequences)."""
    got = got10k_scores(scores["got_ious"])
    otb = otb_curves(scores["otb_ious"], scores["errors"], scores["norm_errors"])
    n_otb = len(scores["otb_ious"])
    row = {"frames": int(scores["length"]), "scored_frames": int(len(scores["got_ious"])),
           "ao": got["ao"], "sr50": got["sr50"], "sr75": got["sr75"],
           "success_auc": otb["success_auc"] if n_otb else float("nan"),
           "precision20": otb["precision20"] if n_otb else float("nan"),
           "norm_precision": otb["norm_precision"] if n_otb else float("nan"),
           "fps": _mean(scores["fps"])}
    if "poly_ious" in scores:
        row["poly_iou"] = _mean(scores["poly_ious"])
        row["poly_source"] = scores["poly_source"]
    if "angle_errors" in scores:
        row["angle_error"] = _mean(scores["angle_errors"])
    return row


def build_report(protocol: str, sequences: list[Sequence],
                 results: dict[str, dict[str, SequenceResult]], dataset: str = "") -> dict:
    """Scores of every tracker: overall (GOT-10k pooled over frames, OTB averaged over
    sequences) and per sequence."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}")
    report = {"protocol": protocol, "dataset": dataset, "sequences": len(sequences),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "trackers": {}}
    for label, per_seq in results.items():
        seq_rows, curves, pooled = {}, [], {}
        for seq in sequences:
            scores = sequence_scores(seq, per_seq[seq.name], protocol)
            seq_rows[seq.name] = _summarise(scores)
            if len(scores["otb_ious"]):
                curves.append(otb_curves(scores["otb_ious"], scores["errors"],
                                         scores["norm_errors"]))
            for key in ("got_ious", "fps", "poly_ious", "angle_errors"):
                if key in scores:
                    pooled.setdefault(key, []).append(scores[key])
        got = got10k_scores(np.concatenate(pooled["got_ious"]))
        overall = {"ao": got["ao"], "sr50": got["sr50"], "sr75": got["sr75"],
                   "got10k_success_curve": got["success_curve"].tolist()}
        if curves:
            succ = np.mean([c["success_curve"] for c in curves], axis=0)
            prec = np.mean([c["precision_curve"] for c in curves], axis=0)
            norm = np.mean([c["norm_precision_curve"] for c in curves], axis=0)
        else:
            succ = np.full(len(OTB_IOU_THRESHOLDS), np.nan)
            prec = np.full(len(OTB_CE_THRESHOLDS), np.nan)
            norm = np.full(len(OTB_NCE_THRESHOLDS), np.nan)
        seq_fps = [r["fps"] for r in seq_rows.values() if np.isfinite(r["fps"])]
        overall.update({
            "success_auc": float(np.mean(succ)), "precision20": float(prec[20]),
            "norm_precision": float(np.mean(norm)),
            "success_curve": succ.tolist(), "precision_curve": prec.tolist(),
            "norm_precision_curve": norm.tolist(),
            # GOT-10k toolkit: mean over all frames; OTB toolkit: mean of sequence means
            "fps": (_mean(np.concatenate(pooled["fps"])) if protocol == "got10k"
                    else _mean(seq_fps)),
            "frames": int(sum(r["frames"] for r in seq_rows.values())),
            "scored_frames": int(sum(r["scored_frames"] for r in seq_rows.values())),
        })
        if "poly_ious" in pooled:
            poly = np.concatenate(pooled["poly_ious"])
            overall["poly_iou"] = _mean(poly)
            overall["poly_sr50"] = _mean(poly > 0.5) if poly.size else float("nan")
        if "angle_errors" in pooled:
            overall["angle_error"] = _mean(np.concatenate(pooled["angle_errors"]))
        report["trackers"][label] = {"overall": overall, "sequences": seq_rows}
    return report


def _sequence_attributes(seq: Sequence, attribute_map: dict | None) -> list[str]:
    """Names of the per-sequence attributes a sequence has (flags set, plus ``attribute_map``)."""
    names = [k for k, v in getattr(seq, "attributes", {}).items() if v]
    if attribute_map is not None:
        names += [a for a in attribute_map.get(seq.name, []) if a not in names]
    return names


def has_attributes(sequences: list[Sequence], attribute_map: dict | None = None) -> bool:
    """Whether any sequence carries per-sequence attributes or per-frame tags."""
    return any(getattr(s, "attributes", {}) or getattr(s, "frame_tags", {})
               or (attribute_map and s.name in attribute_map) for s in sequences)


def attribute_report(protocol: str, sequences: list[Sequence],
                     results: dict[str, dict[str, SequenceResult]],
                     attribute_map: dict | None = None) -> dict:
    """Success AUC, precision at 20 px and normalized precision per attribute.

    Per-sequence attributes (UAV123's att/ files, or ``attribute_map`` {sequence: [names]}):
    curves averaged over the sequences that have the attribute, as the OTB / UAV123 toolkits
    do. Per-frame tags (VOT's *.tag files): frames pooled over all sequences, only the tagged
    frames after the first (the first is the ground truth the tracker starts from).
    Scored with the protocol's OTB-style overlap (polygon IoU for VOT). Returns
    {"attributes": {name: {"kind", "sequences", "frames"}}, "trackers": {label: {name: scores}}}.
    """
    names: dict[str, dict] = {}
    for seq in sequences:
        for name in list(getattr(seq, "attributes", {})) + _sequence_attributes(seq, attribute_map):
            names.setdefault(name, {"kind": "sequence", "sequences": 0, "frames": 0})
        for name in getattr(seq, "frame_tags", {}):
            names.setdefault(name, {"kind": "frame", "sequences": 0, "frames": 0})
    for seq in sequences:
        has = set(_sequence_attributes(seq, attribute_map))
        for name, info in names.items():
            if info["kind"] == "sequence" and name in has:
                info["sequences"] += 1
                info["frames"] += len(seq)
            elif info["kind"] == "frame" and name in getattr(seq, "frame_tags", {}):
                tagged = int(np.count_nonzero(seq.frame_tags[name][1:]))
                info["sequences"] += tagged > 0
                info["frames"] += tagged
    trackers = {}
    for label, per_seq in results.items():
        curves, pooled = {}, {}
        for seq in sequences:
            scores = sequence_scores(seq, per_seq[seq.name], protocol)
            has = set(_sequence_attributes(seq, attribute_map))
            for name, info in names.items():
                if info["kind"] == "sequence" and name in has and len(scores["otb_ious"]):
                    curves.setdefault(name, []).append(
                        otb_curves(scores["otb_ious"], scores["errors"], scores["norm_errors"]))
                elif info["kind"] == "frame" and name in getattr(seq, "frame_tags", {}):
                    frames = scores["otb_frames"]
                    rows = seq.frame_tags[name][frames] & (frames > 0)
                    bucket = pooled.setdefault(name, ([], [], []))
                    for store, key in zip(bucket, ("otb_ious", "errors", "norm_errors")):
                        store.append(scores[key][rows])
        rows = {}
        for name, info in names.items():
            nan = float("nan")
            row = {"success_auc": nan, "precision20": nan, "norm_precision": nan}
            if info["kind"] == "sequence" and curves.get(name):
                succ = np.mean([c["success_curve"] for c in curves[name]], axis=0)
                prec = np.mean([c["precision_curve"] for c in curves[name]], axis=0)
                norm = np.mean([c["norm_precision_curve"] for c in curves[name]], axis=0)
                row = {"success_auc": float(np.mean(succ)), "precision20": float(prec[20]),
                       "norm_precision": float(np.mean(norm))}
            elif info["kind"] == "frame" and name in pooled:
                ious, errors, norm_errors = (np.concatenate(v) for v in pooled[name])
                if ious.size:
                    curve = otb_curves(ious, errors, norm_errors)
                    row = {k: curve[k] for k in row}
            rows[name] = row
        trackers[label] = rows
    return {"attributes": names, "trackers": trackers}


def markdown_attributes(report: dict) -> str:
    """Per-attribute table: one row per attribute, success AUC and precision per tracker."""
    table = report.get("attributes")
    if not table or not table["attributes"]:
        return ""
    labels = list(table["trackers"])
    lines = ["| Attribute | Kind | Sequences | Frames | "
             + " | ".join(f"{lb} AUC | {lb} Prec@20px" for lb in labels) + " |",
             "|---|---|---:|---:|" + "---:|---:|" * len(labels)]
    for name, info in table["attributes"].items():
        cells = []
        for label in labels:
            row = table["trackers"][label][name]
            cells += [_fmt(row["success_auc"], "{:.3f}"), _fmt(row["precision20"], "{:.3f}")]
        lines.append(f"| {name} | {'per frame' if info['kind'] == 'frame' else 'per sequence'} | "
                     f"{info['sequences']} | {info['frames']} | " + " | ".join(cells) + " |")
    return ("Per-attribute scores (per-sequence attributes: curves averaged over the sequences "
            "with the attribute; per-frame tags: the tagged frames pooled):\n\n" + "\n".join(lines))


def compare_to_baseline(report: dict, baseline: str, metrics=("success_auc", "ao")) -> dict:
    """Paired per-sequence differences of every tracker against ``baseline`` (a tracker label of
    the report), with bootstrap 95% intervals; stored as ``report["comparison"]``."""
    trackers = report["trackers"]
    if baseline not in trackers:
        raise ValueError(f"baseline {baseline!r} is not among the evaluated trackers: {', '.join(trackers)}")
    comparison = {"baseline": baseline, "metrics": list(metrics), "trackers": {}}
    for label in trackers:
        if label != baseline:
            comparison["trackers"][label] = _paired(report, label, baseline, metrics)
    report["comparison"] = comparison
    return comparison


def _paired(report: dict, label: str, baseline: str, metrics) -> dict:
    """{metric: paired_difference} of tracker ``label`` minus ``baseline`` over the baseline's sequences."""
    rows, base_rows = report["trackers"][label]["sequences"], report["trackers"][baseline]["sequences"]
    names = list(base_rows)
    return {m: paired_difference([rows[n].get(m, float("nan")) for n in names],
                                 [base_rows[n].get(m, float("nan")) for n in names])
            for m in metrics}


def compare_pairs(report: dict, pairs, metrics=("success_auc", "ao")) -> list:
    """Paired per-sequence differences of chosen (tracker, baseline) label pairs, e.g. each IEN
    tracker against its plain twin; stored as ``report["pairs"]``."""
    trackers = report["trackers"]
    out = []
    for label, baseline in pairs:
        for name in (label, baseline):
            if name not in trackers:
                raise ValueError(f"{name!r} is not among the evaluated trackers: {', '.join(trackers)}")
        out.append({"tracker": label, "baseline": baseline, "metrics": _paired(report, label, baseline, metrics)})
    report["pairs"] = out
    return out


def _difference_cells(diffs: dict) -> str:
    """Table cells of {metric: paired_difference}: mean [CI] per metric, then wins / losses."""
    cells = [f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if math.isfinite(d["mean"]) else "–"
             for d in diffs.values()]
    first = next(iter(diffs.values()))
    return " | ".join(cells) + f" | {first['wins']} / {first['losses']}"


def markdown_comparison(report: dict) -> str:
    """Table of the paired differences against the baseline (empty without a comparison)."""
    comp = report.get("comparison")
    if not comp or not comp["trackers"]:
        return ""
    lines = ["| Tracker | " + " | ".join(f"Δ {_COLUMNS[m][0]} [95% CI]" for m in comp["metrics"])
             + " | better / worse sequences |",
             "|---|" + "---:|" * (len(comp["metrics"]) + 1)]
    for label, diffs in comp["trackers"].items():
        lines.append(f"| {label} | {_difference_cells(diffs)} |")
    return (f"Paired differences to `{comp['baseline']}` over sequences (mean of per-sequence "
            "differences; paired bootstrap 95% interval; better / worse counted on the first "
            "metric):\n\n" + "\n".join(lines))


def markdown_pairs(report: dict) -> str:
    """Table of the chosen pairs' differences (empty without any)."""
    pairs = report.get("pairs")
    if not pairs:
        return ""
    metrics = list(pairs[0]["metrics"])
    lines = ["| Tracker | minus | " + " | ".join(f"Δ {_COLUMNS[m][0]} [95% CI]" for m in metrics)
             + " | better / worse sequences |",
             "|---|---|" + "---:|" * (len(metrics) + 1)]
    for pair in pairs:
        lines.append(f"| {pair['tracker']} | {pair['baseline']} | {_difference_cells(pair['metrics'])} |")
    return ("Paired differences of chosen pairs (mean of per-sequence differences; paired bootstrap "
            "95% interval):\n\n" + "\n".join(lines))


# --------------------------------------------------------------------------------------------
def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return fmt.format(value)


def _columns(report: dict) -> list[str]:
    cols = list(_PROTOCOL_COLUMNS[report["protocol"]])
    overalls = [t["overall"] for t in report["trackers"].values()]
    for extra in ("poly_iou", "angle_error"):
        if any(extra in o for o in overalls):
            cols.append(extra)
    return cols + ["fps"]


def markdown_summary(report: dict) -> str:
    """One row per tracker with the protocol's scores."""
    cols = _columns(report)
    lines = ["| Tracker | " + " | ".join(_COLUMNS[c][0] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for label, data in report["trackers"].items():
        o = data["overall"]
        lines.append(f"| {label} | " + " | ".join(_fmt(o.get(c), _COLUMNS[c][1]) for c in cols)
                     + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    cols = _columns(report)
    parts = [f"# Tracking evaluation: {report['dataset'] or report['protocol']}", "",
             f"Protocol `{report['protocol']}`, {report['sequences']} sequences, "
             f"created {report['created']}.", "", "## Summary", "", markdown_summary(report)]
    if report.get("comparison"):
        parts += ["", "## Paired comparison", "", markdown_comparison(report)]
    if report.get("pairs"):
        parts += ["", "## Paired comparison of chosen pairs", "", markdown_pairs(report)]
    if report.get("attributes"):
        parts += ["", "## Per attribute", "", markdown_attributes(report)]
    for label, data in report["trackers"].items():
        parts += ["", f"## {label}: per sequence", "",
                  "| Sequence | Frames | " + " | ".join(_COLUMNS[c][0] for c in cols) + " |",
                  "|---|---:|" + "---:|" * len(cols)]
        for name, row in data["sequences"].items():
            parts.append(f"| {name} | {row['frames']} | "
                         + " | ".join(_fmt(row.get(c), _COLUMNS[c][1]) for c in cols) + " |")
    return "\n".join(parts) + "\n"


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _plot(report: dict, key: str, score_key: str, x: np.ndarray, xlabel: str, ylabel: str,
          title: str) -> bytes:
    """A curve per tracker (sorted by score), rendered with the Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    styles = ["-", "--", "-.", ":"]
    items = sorted(report["trackers"].items(),
                   key=lambda kv: -np.nan_to_num(kv[1]["overall"][score_key], nan=-1.0))
    for i, (label, data) in enumerate(items):
        curve = np.asarray(data["overall"][key], dtype=np.float64)
        ax.plot(x, curve, styles[(i // 10) % len(styles)], linewidth=1.6,
                label=f"{label} [{_fmt(data['overall'][score_key], '{:.3f}')}]")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(x[0], x[-1]), ylim=(0, 1.02))
    ax.grid(True, alpha=0.4)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def write_report(report: dict, out_dir, plots: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and (if ``plots``) success_plot.png, precision_plot.png,
    norm_precision_plot.png into ``out_dir``, each atomically. Returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    write_bytes_atomic(written["json"],
                        (json.dumps(_json_safe(report), indent=2) + "\n").encode())
    write_bytes_atomic(written["markdown"], markdown_report(report).encode())
    if plots and report["trackers"]:
        name = report["dataset"] or report["protocol"]
        if report["protocol"] == "got10k":
            success = ("got10k_success_curve", "ao", GOT10K_IOU_THRESHOLDS,
                       f"Success plot ({name}), [AO]")
        else:
            success = ("success_curve", "success_auc", OTB_IOU_THRESHOLDS,
                       f"Success plot ({name}), [AUC]")
        specs = {
            "success_plot": success + ("Overlap threshold", "Success rate"),
            "precision_plot": ("precision_curve", "precision20", OTB_CE_THRESHOLDS,
                               f"Precision plot ({name}), [at 20 px]",
                               "Location error threshold (px)", "Precision"),
            "norm_precision_plot": ("norm_precision_curve", "norm_precision",
                                    OTB_NCE_THRESHOLDS,
                                    f"Normalized precision ({name}), [AUC]",
                                    "Normalized location error threshold", "Precision"),
        }
        for stem, (key, score, x, title, xlabel, ylabel) in specs.items():
            path = out_dir / f"{stem}.png"
            write_bytes_atomic(path, _plot(report, key, score, x, xlabel, ylabel, title))
            written[stem] = path
    return written
