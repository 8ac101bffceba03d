"""Run a classification study (several configs) and write a markdown table, a JSON summary and a plot.

    python -m training.classification.study configs/classification/rot_digits.toml --out runs/study-digits

A study file is TOML: optional ``title``; ``[defaults]`` (any TrainConfig key, with a
``[defaults.backbone]`` table); one ``[[runs]]`` table per run with a unique ``name``, its own keys
(``backbone = {group = "R8"}`` is merged into the default backbone) and optionally ``twin = "<run>"``,
the run its channels and accuracy are compared with (heterogeneous vs homogeneous groups).
Each run trains in OUT/<name>/ exactly like ``training.classification.train`` (finished runs are
reused, interrupted ones resumed). Outputs: OUT/results.md, OUT/results.json, OUT/study.png.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from common.config import read_toml

from .train import CLIError, _Parser, set_threads

STUDY_KEYS = {"title", "defaults", "runs"}
RUN_KEYS = {"name", "twin"}


class StudyError(ValueError):
    """A study file that cannot be read or is inconsistent."""


@dataclass
class StudyRun:
    name: str
    config: object  # TrainConfig
    twin: str | None = None


def _merge(defaults: dict, run: dict) -> dict:
    merged = copy.deepcopy(defaults)
    for key, value in run.items():
        if key == "backbone" and isinstance(value, dict) and isinstance(merged.get("backbone"), dict):
            merged["backbone"] = {**merged["backbone"], **value}
        else:
            merged[key] = value
    return merged


def load_study(path: str | Path, epochs: int | None = None, only: list[str] | None = None) -> tuple[str, list[StudyRun]]:
    """Parse and validate a study file (every run's config is checked before anything trains)."""
    from backbones import BackboneConfig, GroupSpecError
    from common.config import ConfigError, from_dict, to_dict
    from training.classification.config import TrainConfig

    from .train import DEFAULT_WIDTH

    path = Path(path)
    doc = read_toml(path, StudyError)
    unknown = set(doc) - STUDY_KEYS
    if unknown:
        raise StudyError(f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(STUDY_KEYS)}")
    runs_doc = doc.get("runs")
    if not isinstance(runs_doc, list) or not runs_doc:
        raise StudyError(f"{path}: needs at least one [[runs]] table")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise StudyError(f"{path}: [defaults] must be a table")
    dataset = defaults.get("dataset", "rot-digits")
    base_backbone = to_dict(BackboneConfig(name="cnnbasic", group="R4", width_mult=DEFAULT_WIDTH.get(dataset, 1.0), in_channels=3))
    defaults = _merge({"backbone": base_backbone}, defaults)
    runs, names = [], set()
    for i, entry in enumerate(runs_doc):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise StudyError(f"{path}: run #{i + 1} needs a name")
        name = entry["name"]
        if name in names:
            raise StudyError(f"{path}: two runs are named {name!r}")
        if not all(c.isalnum() or c in "-_." for c in name):
            raise StudyError(f"{path}: run name {name!r} may use only letters, digits, '-', '_' and '.'")
        if name.startswith("."):       # '.', '..' would be --out itself or its parent; '.x' hidden
            raise StudyError(f"{path}: run name {name!r} must not start with '.' (it names a folder inside --out)")
        names.add(name)
        cfg_dict = _merge(defaults, {k: v for k, v in entry.items() if k not in RUN_KEYS})
        if epochs is not None:
            cfg_dict["epochs"] = epochs
        try:
            cfg = from_dict(TrainConfig, cfg_dict, f"run {name!r}")
        except (ConfigError, GroupSpecError) as exc:
            raise StudyError(f"{path}: {exc}") from None
        runs.append(StudyRun(name, cfg, entry.get("twin")))
    for run in runs:
        if run.twin is not None and run.twin not in names:
            raise StudyError(f"{path}: run {run.name!r} names an unknown twin {run.twin!r}")
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise StudyError(f"--only: no run named {', '.join(missing)} in {path}")
        runs = [r for r in runs if r.name in only]
    title = doc.get("title", path.stem)
    if epochs is not None:      # the file's title may name its own epoch count
        title += f" (every run: {epochs} epochs, --epochs)"
    return title, runs


def _authors_accuracy(m: dict) -> float | None:
    """The authors' protocol (best epoch on the doubled test set), in %; None when not measured."""
    acc = (m.get("protocols") or {}).get("authors", {}).get("accuracy")
    return None if acc is None else 100.0 * acc


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _row(run: StudyRun, m: dict, by_name: dict) -> dict:
    cfg = m["config"]
    row = {
        "run": run.name, "model": cfg["backbone"]["name"], "group": cfg["backbone"]["group"],
        "width": cfg["backbone"]["width_mult"], "beta": cfg["beta"], "epochs": m["epochs_trained"],
        "params": m["parameters"]["total"], "channels": m["channels"]["total"],
        "accuracy": 100.0 * m["test_accuracy"], "eq_error": m["equivariance_error"]["mean"],
        "accuracy_authors": _authors_accuracy(m), "authors_epoch": (m.get("protocols") or {}).get("authors", {}).get("epoch"),
        "eq_error_last": list(m["equivariance_error"]["per_layer"].values())[-1],
        "train_seconds": m["time"]["train_seconds"], "per_layer": m["equivariance_error"]["per_layer"],
    }
    twin = by_name.get(run.twin) if run.twin else None
    if twin is not None:
        row["twin"] = run.twin
        row["channels_vs_twin"] = m["channels"]["total"] / twin["channels"]["total"] - 1.0
        row["accuracy_vs_twin"] = 100.0 * (m["test_accuracy"] - twin["test_accuracy"])
    return row


def _err(v: float) -> str:
    return f"{v:.4f}" if v >= 1e-3 else f"{v:.1e}"


def seed_groups(runs: list[StudyRun], rows: list[dict]) -> list[dict]:
    """Runs whose configs differ only in the seed, summarised: mean and sample SD of accuracy and
    mean equivariance errors (only groups of two or more finished runs)."""
    import statistics

    from common.config import to_dict

    by_run = {r["run"]: r for r in rows}
    groups: dict[str, list[str]] = {}
    for run in runs:
        if run.name in by_run:
            key = json.dumps({k: v for k, v in to_dict(run.config).items() if k != "seed"}, sort_keys=True)
            groups.setdefault(key, []).append(run.name)
    summary = []
    for key, names in groups.items():
        if len(names) < 2:
            continue
        acc = [by_run[n]["accuracy"] for n in names]
        authors = [by_run[n].get("accuracy_authors") for n in names]
        cfg = json.loads(key)
        summary.append({
            "runs": names, "n": len(names), "beta": cfg["beta"], "group": cfg["backbone"]["group"],
            "layer_weights": cfg.get("layer_weights"),
            "accuracy_mean": statistics.fmean(acc), "accuracy_sd": statistics.stdev(acc),
            "accuracy_authors_mean": None if None in authors else statistics.fmean(authors),
            "accuracy_authors_sd": None if None in authors else statistics.stdev(authors),
            "eq_error_mean": statistics.fmean(by_run[n]["eq_error"] for n in names),
            "eq_error_last_mean": statistics.fmean(by_run[n]["eq_error_last"] for n in names),
        })
    return summary


def markdown_seed_table(summary: list[dict]) -> str:
    if not summary:
        return ""
    lines = ["Runs that differ only in the seed (mean over seeds; accuracy ± sample SD):", "",
             "| runs | group | β | IEN layer weights | n | test acc, ours: last epoch (%) | "
             "acc, authors': best epoch, doubled test (%) | eq. error (mean) | eq. error (last layer) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in summary:
        weights = "all 1" if not g["layer_weights"] else ", ".join(f"{w:g}" for w in g["layer_weights"])
        lines.append(f"| {', '.join(g['runs'])} | {g['group']} | {g['beta']:g} | {weights} | {g['n']} | "
                     f"{g['accuracy_mean']:.2f} ± {g['accuracy_sd']:.2f} | "
                     + ("–" if g.get("accuracy_authors_mean") is None else
                        f"{g['accuracy_authors_mean']:.2f} ± {g['accuracy_authors_sd']:.2f}")
                     + f" | {_err(g['eq_error_mean'])} | "
                     f"{_err(g['eq_error_last_mean'])} |")
    return "\n".join(lines) + "\n"


def markdown_table(title: str, rows: list[dict], command: str, seeds: list[dict] | None = None) -> str:
    lines = [
        f"## {title}", "", f"`{command}`", "",
        "| run | model | group | width | β | epochs | params | channels | test acc, ours: last epoch (%) | "
        "acc, authors': best epoch, doubled test (%) | eq. error (mean) | eq. error (last layer) | "
        "vs twin: channels / acc | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        twin = (f"{r['twin']}: {100 * r['channels_vs_twin']:+.0f}% / {r['accuracy_vs_twin']:+.2f}"
                if "twin" in r else "")
        lines.append(
            f"| {r['run']} | {r['model']} | {r['group']} | {r['width']:g} | {r['beta']:g} | {r['epochs']} | "
            f"{r['params']:,} | {r['channels']} | {r['accuracy']:.2f} | "
            f"{_pct(r.get('accuracy_authors'))}{'' if r.get('authors_epoch') is None else ' (ep. ' + str(r['authors_epoch']) + ')'} | "
            f"{_err(r['eq_error'])} | "
            f"{_err(r['eq_error_last'])} | {twin} | {r['train_seconds']:.0f} |"
        )
    lines += ["", "Ours: the last epoch's model on the test set once. Authors': the best epoch by accuracy on "
              "the doubled test set (each test image and one rotated copy), the protocol of their code; "
              "optimistic, since the test set picks the epoch.",
              "", "Equivariance error per watched layer (‖P f(Tx) − T P f(x)‖ / ‖P f(x)‖ on test images, "
              "mean over the group's non-identity elements):", "",
              "| run | per-layer error |", "|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | " + ", ".join(f"{k} {_err(v)}" for k, v in r["per_layer"].items()) + " |")
    if seeds:
        lines += ["", markdown_seed_table(seeds).rstrip("\n")]
    return "\n".join(lines) + "\n"


def save_plot(title: str, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["run"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    ax.bar(names, [r["accuracy"] for r in rows], color="tab:blue")
    lo = min(r["accuracy"] for r in rows)
    ax.set_ylim(max(0.0, lo - 5.0), 100.0)
    ax.set_ylabel("test accuracy (%)")
    ax = axes[0, 1]
    ax.bar(names, [max(r["eq_error"], 1e-9) for r in rows], color="tab:orange")
    ax.set_yscale("log")
    ax.set_ylabel("mean equivariance error")
    ax = axes[1, 0]
    ax.bar(names, [r["channels"] for r in rows], color="tab:green")
    ax.set_ylabel("conv channels (sum over layers)")
    ax = axes[1, 1]
    for r in rows:
        ax.plot(range(len(r["per_layer"])), [max(v, 1e-9) for v in r["per_layer"].values()], marker="o", label=r["run"])
    ax.set_yscale("log")
    ax.set_xlabel("watched layer")
    ax.set_ylabel("equivariance error")
    ax.legend(fontsize=7)
    for a in axes.flat[:3]:
        a.tick_params(axis="x", rotation=35, labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    from common.atomic import write_with_atomic  # umask mode, no link replaced, stale temporaries cleaned

    try:
        write_with_atomic(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    finally:
        plt.close(fig)


def write_outputs(title: str, rows: list[dict], out: Path, study_path, command: str,
                  seeds: list[dict] | None = None) -> None:
    from common.atomic import write_text_atomic

    from .engine import write_json_atomic

    write_text_atomic(out / "results.md", markdown_table(title, rows, command, seeds))
    write_json_atomic({"title": title, "study": str(study_path), "command": command, "rows": rows,
                       "seed_groups": seeds or []}, out / "results.json")
    try:
        save_plot(title, rows, out / "study.png")
    except ImportError:
        print("matplotlib is not installed: no study.png", file=sys.stderr)


def run_study(study_path, out, epochs=None, only=None, device=None, progress=True, command="", log=print) -> list[dict]:
    from .engine import resolve_device, train

    title, runs = load_study(study_path, epochs, only)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    cache: dict = {}
    metrics: dict = {}
    rows: list[dict] = []
    for i, run in enumerate(runs, 1):
        cfg = run.config
        log(f"[{i}/{len(runs)}] {run.name}: {cfg.backbone.name} {cfg.backbone.group} width {cfg.backbone.width_mult:g} "
            f"beta {cfg.beta:g}, {cfg.epochs} epochs")
        metrics[run.name] = train(cfg, out / run.name, resume=True, device=device, progress=progress,
                                  log=lambda s: log("    " + s), data_cache=cache)
        # the table and plot are rewritten after every run: an interrupted study still has them
        rows = [_row(r, metrics[r.name], metrics) for r in runs if r.name in metrics]
        write_outputs(title, rows, out, study_path, command, seed_groups(runs, rows))
    log(f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / 'study.png'}")
    return rows


def main(argv=None) -> int:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="study file (TOML), e.g. configs/classification/rot_digits.toml")
    p.add_argument("--out", required=True, help="study folder (one subfolder per run)")
    p.add_argument("--epochs", type=int, help="override every run's epochs")
    p.add_argument("--only", help="comma-separated run names to (re)run")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="CPU threads of torch and OpenCV (1 to the machine's CPUs)")
    p.add_argument("--no-progress", action="store_true")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    warnings.filterwarnings("ignore", category=UserWarning)
    from backbones import GroupSpecError
    from common.checkpoints import CheckpointError
    from common.config import ConfigError
    from common.locks import FolderBusy
    from data.classification import DatasetError
    from training.classification.config import TrainError

    try:
        set_threads(args.threads)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.epochs is not None and args.epochs < 1:
        print("error: --epochs must be positive", file=sys.stderr)
        return 2
    command = "python -m training.classification.study " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        rows = run_study(args.study, args.out, args.epochs, args.only.split(",") if args.only else None,
                         args.device, not args.no_progress, command)
    except (StudyError, ConfigError, GroupSpecError, DatasetError, CheckpointError, TrainError, FolderBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from common.atomic import describe_os_error

        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    print(json.dumps([{k: r[k] for k in ("run", "accuracy", "eq_error", "channels")} for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
