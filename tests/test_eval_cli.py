"""End to end: tiny OTB- and GOT-10k-layout datasets evaluated with the identity tracker
through the command-line functions (in-process), result reuse, and bad input."""
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from got10k.trackers import Tracker
from PIL import Image

from data import Sequence
from evaluation.experiment import ResultStore, run_trackers

ROOT = Path(__file__).resolve().parents[1]


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluate = _load_tool("evaluate")
make_rotating_tool = _load_tool("make_rotating")

STATIC = [[20, 15, 16, 12]] * 5
MOVING = [[20 + 3 * t, 15, 16, 12] for t in range(5)]     # IoU with the first box (16-d)/(16+d)


def _write_frames(folder, boxes, fmt):
    folder.mkdir(parents=True, exist_ok=True)
    for t, (x, y, w, h) in enumerate(boxes):
        image = Image.new("RGB", (64, 48), (40, 40, 40))
        image.paste((255, 200, 0), (x, y, x + w, y + h))
        image.save(folder / fmt.format(t + 1), quality=90)


def _otb_dataset(root):
    for name, boxes in (("Static", STATIC), ("Moving", MOVING)):
        _write_frames(root / name / "img", boxes, "{:04d}.jpg")
        np.savetxt(root / name / "groundtruth_rect.txt", boxes, fmt="%d", delimiter=",")
    return root


def _got_dataset(root):
    val = root / "val"
    for name, boxes in (("GOT-10k_Val_000001", STATIC), ("GOT-10k_Val_000002", MOVING)):
        _write_frames(val / name, boxes, "{:08d}.jpg")
        np.savetxt(val / name / "groundtruth.txt", boxes, fmt="%d", delimiter=",")
        np.savetxt(val / name / "cover.label", [8, 8, 8, 8, 8], fmt="%d")
    # the moving target is absent in frame 4 (index 3): that frame is not scored
    np.savetxt(val / "GOT-10k_Val_000002" / "absence.label", [0, 0, 0, 1, 0], fmt="%d")
    np.savetxt(val / "GOT-10k_Val_000002" / "cover.label", [8, 8, 8, 0, 8], fmt="%d")
    (val / "list.txt").write_text("GOT-10k_Val_000001\nGOT-10k_Val_000002\n")
    return root


def _moving_ious():
    return [(16 - d) / (16 + d) for d in (0, 3, 6, 9, 12)]


def test_otb_end_to_end_with_identity_tracker(tmp_path, capsys):
    data, out = _otb_dataset(tmp_path / "OTB"), tmp_path / "out"
    args = ["--dataset", "otb", "--root", str(data), "--trackers", "identity",
            "--out", str(out), "--no-progress"]
    assert evaluate.main(args) == 0
    captured = capsys.readouterr()
    assert "| identity |" in captured.out and "Success AUC" in captured.out

    boxes = np.loadtxt(out / "results" / "identity" / "Moving.txt", delimiter=",")
    np.testing.assert_allclose(boxes, [MOVING[0]] * 5)                 # identity: first box
    assert (out / "results" / "identity" / "times" / "Moving_time.txt").is_file()
    for name in ("report.json", "report.md", "success_plot.png", "precision_plot.png"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "report.json").read_text())
    o = report["trackers"]["identity"]["overall"]
    thresholds = [i / 20 for i in range(21)]
    auc_moving = np.mean([sum(iou > t for iou in _moving_ious()) / 5 for t in thresholds])
    assert o["success_auc"] == pytest.approx((20 / 21 + auc_moving) / 2)
    assert o["precision20"] == pytest.approx(1.0)                     # centre errors <= 12 px
    norm = [d / 16 for d in (0, 3, 6, 9, 12)]
    norm_moving = np.mean([sum(e <= t for e in norm) / 5
                           for t in np.linspace(0, 0.5, 51)])
    assert o["norm_precision"] == pytest.approx((1.0 + norm_moving) / 2)
    assert report["trackers"]["identity"]["sequences"]["Static"]["success_auc"] == \
        pytest.approx(20 / 21)
    md = (out / "report.md").read_text()
    assert "| Moving | 5 |" in md and "| Static | 5 |" in md

    # re-run: finished sequences are reused, not tracked again (a hand-edited result stays)
    result_file = out / "results" / "identity" / "Static.txt"
    np.savetxt(result_file, [[0, 0, 1, 1]] * 5, fmt="%.3f", delimiter=",")
    assert evaluate.main(args) == 0
    assert "reusing results of 2 of 2" in capsys.readouterr().err
    assert np.loadtxt(result_file, delimiter=",")[1].tolist() == [0, 0, 1, 1]
    # an incomplete result file (wrong row count) is tracked again
    np.savetxt(result_file, [[0, 0, 1, 1]] * 3, fmt="%.3f", delimiter=",")
    assert evaluate.main(args) == 0
    np.testing.assert_allclose(np.loadtxt(result_file, delimiter=","), STATIC)
    # --overwrite re-runs everything
    np.savetxt(result_file, [[0, 0, 1, 1]] * 5, fmt="%.3f", delimiter=",")
    assert evaluate.main(args + ["--overwrite"]) == 0
    np.testing.assert_allclose(np.loadtxt(result_file, delimiter=","), STATIC)


def test_got10k_end_to_end_excludes_absent_frames(tmp_path, capsys):
    data, out = _got_dataset(tmp_path / "GOT-10k"), tmp_path / "out"
    assert evaluate.main(["--dataset", "got10k", "--root", str(data), "--subset", "val",
                          "--trackers", "identity", "--out", str(out), "--no-progress",
                          "--no-plots"]) == 0
    assert "| identity |" in capsys.readouterr().out
    seq_dir = out / "results" / "identity" / "GOT-10k_Val_000002"
    assert (seq_dir / "GOT-10k_Val_000002_001.txt").is_file()
    assert (seq_dir / "GOT-10k_Val_000002_time.txt").is_file()
    assert not (out / "success_plot.png").exists()
    o = json.loads((out / "report.json").read_text())["trackers"]["identity"]["overall"]
    # frames 1..4 of both sequences, frame 3 of the moving one absent
    ious = [1.0] * 4 + [_moving_ious()[i] for i in (1, 2, 4)]
    assert o["ao"] == pytest.approx(np.mean(ious))
    assert o["sr50"] == pytest.approx(np.mean([i > 0.5 for i in ious]))
    assert o["sr75"] == pytest.approx(np.mean([i > 0.75 for i in ious]))
    assert o["scored_frames"] == 7


def test_rotating_evaluation_and_make_rotating_tool(tmp_path, capsys):
    data, out = _got_dataset(tmp_path / "GOT-10k"), tmp_path / "out"
    assert evaluate.main(["--root", str(data / "val"), "--trackers", "identity", "--out",
                          str(out), "--rotating", "20", "--no-progress", "--no-plots"]) == 0
    assert "Polygon IoU" in capsys.readouterr().out
    rot = out / "rotating" / "20deg-replicate"
    assert (rot / "GOT-10k_Val_000001" / "polygon.txt").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["root"] == str(rot.resolve())
    o = report["trackers"]["identity"]["overall"]
    assert 0 < o["poly_iou"] < 1 and o["ao"] < 1

    dst = tmp_path / "Rot-OTB"
    assert make_rotating_tool.main(["--src", str(_otb_dataset(tmp_path / "OTB")), "--dst",
                                    str(dst), "--deg-per-frame", "2", "--no-progress"]) == 0
    assert "wrote 2 rotating sequences" in capsys.readouterr().out
    np.testing.assert_allclose(np.loadtxt(dst / "Moving" / "angle.txt"), [0, 2, 4, 6, 8])
    assert make_rotating_tool.main(["--src", str(tmp_path / "nope"), "--dst", str(dst)]) == 2
    assert capsys.readouterr().err.startswith("error: dataset folder not found")


def test_default_dataset_is_the_generated_one(tmp_path, monkeypatch, capsys):
    data = _got_dataset(tmp_path / "gen") / "val"
    calls = []
    fake = types.ModuleType("data.generated")

    def default_dataset(split="test", rotating=True):
        calls.append((split, rotating))
        return data
    fake.default_dataset = default_dataset
    monkeypatch.setitem(sys.modules, "data.generated", fake)
    assert evaluate.main(["--trackers", "identity", "--out", str(tmp_path / "out"),
                          "--no-progress", "--no-plots"]) == 0
    assert calls == [("test", True)]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["protocol"] == "generated" and report["dataset"] == "generated"
    assert "AO" in capsys.readouterr().out


def _single_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert evaluate.main(["--root", str(tmp_path / "missing"), "--trackers", "identity",
                          "--out", out]) == 2
    assert "dataset folder not found" in _single_error_line(capsys)

    data = _otb_dataset(tmp_path / "OTB")
    (data / "Moving" / "groundtruth_rect.txt").write_text("20,15,16,12\n23,15,oops,12\n")
    base = ["--root", str(data), "--trackers", "identity", "--out", out, "--no-progress",
            "--no-plots"]
    assert evaluate.main(base) == 2
    line = _single_error_line(capsys)
    assert "Moving/groundtruth_rect.txt:2" in line

    assert evaluate.main(base + ["--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "warning: skipping sequence:" in captured.err and "Moving" in captured.err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["sequences"] == 1

    (data / "Static" / "img" / "0002.jpg").unlink()
    assert evaluate.main(base + ["--sequences", "Static"]) == 2
    assert "missing frame" in _single_error_line(capsys)

    good = str(_otb_dataset(tmp_path / "OTB2"))
    for trackers, message in ((["identity", "identity"], "tracker given twice"),
                              (["siamfc=" + str(tmp_path / "no.pth")], "checkpoint not found"),
                              (["=x"], "bad tracker")):
        assert evaluate.main(["--root", good, "--trackers", *trackers, "--out", out]) == 2
        assert message in _single_error_line(capsys)
    assert evaluate.main(["--dataset", "otb", "--trackers", "identity", "--out", out]) == 2
    assert "needs --root" in _single_error_line(capsys)


class _RotatingTracker(Tracker):
    """Reports a fixed angle step and a polygon, like a rotation-aware tracker."""

    def __init__(self):
        super().__init__("rot", is_deterministic=True)

    def init(self, image, box):
        self.box, self.step = np.asarray(box, float), 0

    def update(self, image):
        self.step += 1
        self.last_angle = 10.0 * self.step
        x, y, w, h = self.box
        self.last_polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
        return self.box


@pytest.mark.parametrize("layout", ["got10k", "otb"])
def test_angles_and_polygons_are_recorded(tmp_path, layout):
    frame = tmp_path / "f.png"
    Image.new("RGB", (32, 32)).save(frame)
    seq = Sequence("s", [str(frame)] * 3, np.array([[4, 4, 8, 8]] * 3, float))
    store = ResultStore(tmp_path / "results", layout)
    results = run_trackers({"rot": _RotatingTracker}, [seq], store, progress=False)
    r = results["rot"]["s"]
    np.testing.assert_allclose(r.angles, [0, 10, 20])
    np.testing.assert_allclose(r.polygons[2], [4, 4, 12, 4, 12, 12, 4, 12])
    assert store.paths("rot", "s")["angles"].is_file()
    assert store.is_complete("rot", seq)


def test_scores_match_the_got10k_toolkit(tmp_path, capsys):
    """Our GOT-10k and OTB numbers equal those of got10k's own ExperimentGOT10k /
    ExperimentOTB reading the same result files."""
    from got10k.experiments import ExperimentGOT10k, ExperimentOTB

    from data import load_sequences

    data, out = _got_dataset(tmp_path / "GOT-10k"), tmp_path / "out"
    for seq in ("GOT-10k_Val_000001", "GOT-10k_Val_000002"):   # what the toolkit also reads
        (data / "val" / seq / "meta_info.ini").write_text("[METAINFO]\nresolution: (64, 48)\n")
        for label in ("absence", "cut_by_image"):
            if not (data / "val" / seq / f"{label}.label").exists():
                np.savetxt(data / "val" / seq / f"{label}.label", [0] * 5, fmt="%d")
    assert evaluate.main(["--dataset", "got10k", "--root", str(data), "--trackers", "identity",
                          "--out", str(out), "--no-progress", "--no-plots"]) == 0
    ours = json.loads((out / "report.json").read_text())["trackers"]["identity"]["overall"]
    (tmp_path / "tk").mkdir()
    (tmp_path / "tk" / "GOT-10k").symlink_to(out / "results")
    exp = ExperimentGOT10k(str(data), subset="val", result_dir=str(tmp_path / "tk"),
                           report_dir=str(tmp_path / "tk_reports"))
    theirs = exp.report(["identity"])["identity"]["overall"]
    assert ours["ao"] == pytest.approx(theirs["ao"], abs=1e-12)
    assert ours["sr50"] == pytest.approx(theirs["sr"], abs=1e-12)
    assert ours["sr75"] == pytest.approx(theirs["succ_curve"][75], abs=1e-12)

    otb, out = _otb_dataset(tmp_path / "OTB"), tmp_path / "out_otb"
    assert evaluate.main(["--root", str(otb), "--trackers", "identity", "--out", str(out),
                          "--no-progress", "--no-plots"]) == 0
    ours = json.loads((out / "report.json").read_text())["trackers"]["identity"]["overall"]
    seqs = load_sequences(otb)

    class LocalOTB:                        # the toolkit's OTB class would try to download
        seq_names = [s.name for s in seqs]

        def __len__(self):
            return len(seqs)

        def __getitem__(self, i):
            return seqs[i].img_files, seqs[i].boxes

    exp = ExperimentOTB.__new__(ExperimentOTB)
    exp.dataset, exp.nbins_iou, exp.nbins_ce = LocalOTB(), 21, 51
    exp.result_dir, exp.report_dir = str(out / "results"), str(tmp_path / "otb_reports")
    theirs = exp.report(["identity"])["identity"]["overall"]
    assert ours["success_auc"] == pytest.approx(theirs["success_score"], abs=1e-12)
    assert ours["precision20"] == pytest.approx(theirs["precision_score"], abs=1e-12)
    capsys.readouterr()


def test_a_tracker_rejecting_its_input_names_tracker_and_sequence(tmp_path):
    from evaluation.experiment import TrackingError

    class Picky(_RotatingTracker):
        def update(self, image):
            raise ValueError("box outside the frame")

    frame = tmp_path / "f.png"
    Image.new("RGB", (32, 32)).save(frame)
    seq = Sequence("s", [str(frame)] * 2, np.array([[4, 4, 8, 8]] * 2, float))
    store = ResultStore(tmp_path / "results", "got10k")
    with pytest.raises(TrackingError, match="picky on sequence s: box outside the frame"):
        run_trackers({"picky": Picky}, [seq], store, progress=False)
    assert not store.paths("picky", "s")["boxes"].exists()


def test_tracker_options_reach_the_trackers_and_label_their_results(tmp_path, capsys):
    from common.checkpoints import save_atomic
    from tracker.models import build_model

    cfg = {"type": "siamfc", "backbone": {"name": "resnet22", "group": "R4", "width_mult": 0.0625}}
    ckpt = tmp_path / "tiny.pth"
    save_atomic({"config": {"model": cfg}, "model": build_model(cfg).state_dict()}, ckpt)
    data, out = _got_dataset(tmp_path / "GOT-10k"), tmp_path / "out"
    base = ["--dataset", "got10k", "--root", str(data), "--subset", "val", "--out", str(out),
            "--no-progress", "--no-plots", "--trackers", "identity", f"siamfc={ckpt}"]
    assert evaluate.main(base + ["--tracker-option", "orientations=4",
                                 "--tracker-option", "orientation_margin=0.5"]) == 0
    label = "siamfc@tiny[orientation_margin=0.5,orientations=4]"
    assert set(json.loads((out / "report.json").read_text())["trackers"]) == {"identity", label}
    assert list((out / "results" / label).rglob("*angle*"))   # the rotation estimate was on
    capsys.readouterr()
    assert evaluate.main(base + ["--tracker-option", "orientations=-1"]) == 2
    assert "orientations" in capsys.readouterr().err


def test_baseline_adds_paired_differences(tmp_path, capsys):
    from common.checkpoints import save_atomic
    from tracker.models import build_model

    cfg = {"type": "siamfc", "backbone": {"name": "resnet22", "group": "R4", "width_mult": 0.0625}}
    ckpt = tmp_path / "tiny.pth"
    save_atomic({"config": {"model": cfg}, "model": build_model(cfg).state_dict()}, ckpt)
    data, out = _otb_dataset(tmp_path / "OTB"), tmp_path / "out"
    base = ["--root", str(data), "--out", str(out), "--no-progress", "--no-plots",
            "--trackers", "identity", f"siamfc={ckpt}"]
    assert evaluate.main(base + ["--baseline", "identity"]) == 0
    printed = capsys.readouterr().out
    assert "Paired differences to `identity`" in printed
    report = json.loads((out / "report.json").read_text())
    comp = report["comparison"]
    assert comp["baseline"] == "identity" and list(comp["trackers"]) == ["siamfc@tiny"]
    rows = report["trackers"]
    expected = np.mean([rows["siamfc@tiny"]["sequences"][s]["success_auc"]
                        - rows["identity"]["sequences"][s]["success_auc"] for s in ("Moving", "Static")])
    d = comp["trackers"]["siamfc@tiny"]["success_auc"]
    assert d["n"] == 2 and d["mean"] == pytest.approx(expected)
    assert d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert "## Paired comparison" in (out / "report.md").read_text()
    assert evaluate.main(base + ["--baseline", "nope"]) == 2
    assert "--baseline 'nope' is not one of the trackers" in _single_error_line(capsys)
    # chosen pairs: the same difference, its sign set by the order
    assert evaluate.main(base + ["--pair", "identity:siamfc@tiny", "--pair", "siamfc@tiny:identity"]) == 0
    assert "| identity | siamfc@tiny |" in capsys.readouterr().out
    pairs = json.loads((out / "report.json").read_text())["pairs"]
    assert [(p["tracker"], p["baseline"]) for p in pairs] == [("identity", "siamfc@tiny"), ("siamfc@tiny", "identity")]
    assert pairs[0]["metrics"]["success_auc"]["mean"] == pytest.approx(-expected)
    assert pairs[1]["metrics"]["success_auc"]["mean"] == pytest.approx(expected)
    assert "## Paired comparison of chosen pairs" in (out / "report.md").read_text()
    for bad, match in (("identity", "LABEL:BASELINE"), ("identity:nope", "LABEL:BASELINE"),
                       ("identity:identity", "compared with itself")):
        assert evaluate.main(base + ["--pair", bad]) == 2
        assert match in _single_error_line(capsys)


def test_identity_angle_error_is_the_constant_estimate_reference(tmp_path):
    """The identity tracker reports angle 0 on every frame, so its angle error is that of a
    constant estimate: with rotation.txt (clockwise axis angles, modulo 180) the mean of
    |angle(t) - angle(0)| folded into [0, 90]."""
    data, out = _otb_dataset(tmp_path / "OTB"), tmp_path / "out"
    np.savetxt(data / "Moving" / "rotation.txt", [10, 30, 60, 115, 175], fmt="%.1f")   # turns 0, 20, 50, 105, 165
    assert evaluate.main(["--dataset", "otb", "--root", str(data), "--trackers", "identity",
                          "--out", str(out), "--no-progress", "--no-plots"]) == 0
    angles = np.loadtxt(out / "results" / "identity" / "angles" / "Moving_angle.txt")
    np.testing.assert_array_equal(angles, np.zeros(5))
    rows = json.loads((out / "report.json").read_text())["trackers"]["identity"]
    assert rows["sequences"]["Moving"]["angle_error"] == pytest.approx((20 + 50 + 75 + 15) / 4)
    assert "angle_error" not in rows["sequences"]["Static"]                # no angle truth there
