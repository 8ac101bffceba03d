"""tools/evaluate.py reuses a finished result only when it was made by the same tracker (name,
weights, options), on the same sequence and benchmark variant: a result key file beside it says so."""
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("_tool_evaluate_keys", ROOT / "tools" / "evaluate.py")
evaluate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evaluate)

SEQ = "GOT-10k_Val_000001"
QUIET = ["--no-progress", "--no-plots"]


def _got_val(root, x0):
    """A GOT-10k-layout subset folder ``root`` (often named val) with one 3-frame sequence whose
    target starts at x = x0."""
    boxes = [[x0 + 2 * t, 15, 16, 12] for t in range(3)]
    folder = root / SEQ
    folder.mkdir(parents=True)
    for t, (x, y, w, h) in enumerate(boxes):
        image = Image.new("RGB", (64, 48), (40, 40, 40))
        image.paste((255, 200, 0), (x, y, x + w, y + h))
        image.save(folder / f"{t + 1:08d}.jpg")
    np.savetxt(folder / "groundtruth.txt", boxes, fmt="%d", delimiter=",")
    (root / "list.txt").write_text(SEQ + "\n")
    return root


def _otb(root, x0=20):
    folder = root / "Moving"
    (folder / "img").mkdir(parents=True)
    for t in range(3):
        Image.new("RGB", (64, 48), (40, 40, 40)).save(folder / "img" / f"{t + 1:04d}.jpg")
    np.savetxt(folder / "groundtruth_rect.txt", [[x0 + 2 * t, 15, 16, 12] for t in range(3)],
               fmt="%d", delimiter=",")
    return root


def _last_box(out, label, layout="got10k"):
    results = out / "results" / label
    path = results / SEQ / f"{SEQ}_001.txt" if layout == "got10k" else results / "Moving.txt"
    return np.loadtxt(path, delimiter=",")[-1].tolist()


class _Shift:
    """Moves the box right by ``shift`` px a frame: its output shows which weights it was given."""

    def __init__(self, shift):
        self.shift = shift

    def init(self, image, box):
        self.box = np.asarray(box, float)

    def update(self, image):
        self.box = self.box + [self.shift, 0, 0, 0]
        return self.box


@pytest.fixture
def builds(monkeypatch, tmp_path):
    """tracker.build_tracker replaced by a fake whose shift is the number in its weights file;
    the bundled weights live in tmp_path/weights. Returns the list of builds."""
    import tracker
    import tracker.registry

    made = []
    real = tracker.build_tracker

    def build_tracker(name, checkpoint=None, device=None, **options):
        if not tracker.tracker_spec(name).learned:       # the baselines are built for real
            return real(name)
        path = Path(checkpoint) if checkpoint else tracker.default_checkpoint(name)
        made.append((name, device))
        return _Shift(float(path.read_text()) + options.get("extra", 0))

    monkeypatch.setattr(tracker, "build_tracker", build_tracker)
    monkeypatch.setattr(tracker.registry, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    return made


def test_another_checkpoint_with_the_same_file_name_is_re_run(tmp_path, capsys, builds):
    data, out = _otb(tmp_path / "OTB"), tmp_path / "out"
    for run, shift in (("A", 3), ("B", 7)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "checkpoint.pth").write_text(str(shift))
    base = ["--root", str(data), "--out", str(out), *QUIET, "--trackers"]
    assert evaluate.main(base + [f"siamfc={tmp_path / 'A' / 'checkpoint.pth'}"]) == 0
    assert _last_box(out, "siamfc@checkpoint", "otb")[0] == 20 + 2 * 3
    capsys.readouterr()
    assert evaluate.main(base + [f"siamfc={tmp_path / 'B' / 'checkpoint.pth'}"]) == 0
    err = capsys.readouterr().err
    assert "siamfc@checkpoint: 1 result was made by another checkpoint/options/dataset" in err
    assert "reusing" not in err and len(builds) == 2
    assert _last_box(out, "siamfc@checkpoint", "otb")[0] == 20 + 2 * 7
    assert (out / "results" / "siamfc@checkpoint" / "keys" / "Moving_key.json").is_file()


def test_retrained_bundled_weights_are_re_run(tmp_path, capsys, builds):
    data, out = _got_val(tmp_path / "val", 20), tmp_path / "out"
    args = ["--root", str(data), "--out", str(out), *QUIET, "--trackers", "siamfc"]
    weights = tmp_path / "weights" / "siamfc_ien.pth"
    weights.write_text("1")
    assert evaluate.main(args) == 0
    assert _last_box(out, "siamfc")[0] == 22
    weights.write_text("10")                               # retrained and replaced
    capsys.readouterr()
    assert evaluate.main(args) == 0
    assert "siamfc: 1 result was made by another checkpoint" in capsys.readouterr().err
    assert _last_box(out, "siamfc")[0] == 40 and len(builds) == 2


def test_an_unchanged_re_run_reuses_without_building_the_tracker(tmp_path, capsys, builds):
    data, out = _got_val(tmp_path / "val", 20), tmp_path / "out"
    (tmp_path / "weights" / "siamfc_ien.pth").write_text("1")
    # an explicit backend: "auto" means ONNX Runtime on the CPU but torch on CUDA (tracker/backends.py)
    args = ["--root", str(data), "--out", str(out), *QUIET, "--trackers", "siamfc", "identity", "--backend", "torch"]
    assert evaluate.main(args + ["--device", "cpu"]) == 0
    assert len(builds) == 1
    capsys.readouterr()
    assert evaluate.main(args + ["--device", "cuda:1"]) == 0     # the device is not in the key
    err = capsys.readouterr().err
    assert "siamfc: reusing results of 1 of 1" in err and "identity: reusing results of 1 of 1" in err
    assert "re-running" not in err and len(builds) == 1
    key = json.loads((out / "results" / "siamfc" / SEQ / f"{SEQ}_key.json").read_text())
    assert key["tracker"]["name"] == "siamfc" and len(key["tracker"]["weights"]) == 64
    assert key["tracker"]["backend"] == "torch"
    assert key["variant"]["root"] == str(data.resolve())
    # results of the older version (no key file) are re-run; --overwrite re-runs everything
    (out / "results" / "siamfc" / SEQ / f"{SEQ}_key.json").unlink()
    assert evaluate.main(args) == 0
    assert "siamfc: 1 result was made by another" in capsys.readouterr().err and len(builds) == 2
    assert evaluate.main(args + ["--overwrite"]) == 0
    assert len(builds) == 3


def test_static_after_rotating_with_the_default_out(tmp_path, monkeypatch, capsys):
    sets = {True: _got_val(tmp_path / "rot" / "val", 20), False: _got_val(tmp_path / "static" / "val", 30)}
    fake = types.ModuleType("data.generated")
    fake.default_dataset = lambda split="test", rotating=True: sets[rotating]
    monkeypatch.setitem(sys.modules, "data.generated", fake)
    monkeypatch.chdir(tmp_path)
    base = ["--trackers", "identity", *QUIET]
    assert evaluate.main(base) == 0
    assert evaluate.main(base + ["--static"]) == 0
    assert _last_box(Path("runs/eval/generated"), "identity") == [20, 15, 16, 12]
    assert _last_box(Path("runs/eval/generated-static"), "identity") == [30, 15, 16, 12]
    # the same --out for both: the static run tracks again instead of reusing
    capsys.readouterr()
    assert evaluate.main(base + ["--static", "--out", "runs/eval/generated"]) == 0
    assert "identity: 1 result was made by another" in capsys.readouterr().err
    assert _last_box(Path("runs/eval/generated"), "identity") == [30, 15, 16, 12]


def test_two_sets_named_val_are_kept_apart(tmp_path, monkeypatch, capsys):
    a, b = _got_val(tmp_path / "a" / "val", 20), _got_val(tmp_path / "b" / "val", 30)
    out = tmp_path / "out"
    assert evaluate.main(["--root", str(a), "--trackers", "identity", "--out", str(out), *QUIET]) == 0
    capsys.readouterr()
    assert evaluate.main(["--root", str(b), "--trackers", "identity", "--out", str(out), *QUIET]) == 0
    assert "identity: 1 result was made by another" in capsys.readouterr().err
    assert _last_box(out, "identity") == [30, 15, 16, 12]
    report = json.loads((out / "report.json").read_text())
    # b's boxes scored against b's truth (frame 0 is not scored)
    assert report["trackers"]["identity"]["sequences"][SEQ]["ao"] == pytest.approx((14 / 18 + 12 / 20) / 2)
    # default --out: one folder per dataset root, though both are named val
    monkeypatch.chdir(tmp_path)
    for data in (a, b):
        assert evaluate.main(["--root", str(data), "--trackers", "identity", *QUIET]) == 0
    folders = sorted(p.name for p in Path("runs/eval").iterdir())
    assert len(folders) == 2 and all(f.startswith("got10k-val-") for f in folders)
    assert json.loads(Path("runs/eval", folders[0], "report.json").read_text())["dataset"] == "got10k-val"


def test_results_follow_frame_content_not_file_times(tmp_path, capsys, builds):
    """A dataset copied again (same bytes, new file times) keeps its results; a frame rewritten with
    other pixels of the same file size is re-run."""
    import os

    data, out = _got_val(tmp_path / "val", 20), tmp_path / "out"
    (tmp_path / "weights" / "siamfc_ien.pth").write_text("1")
    args = ["--root", str(data), "--out", str(out), *QUIET, "--trackers", "siamfc", "--backend", "torch"]
    assert evaluate.main(args) == 0 and len(builds) == 1
    frames = sorted((data / SEQ).glob("*.jpg"))
    for f in frames:                                      # "copied again": new times, same bytes
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**10))
    capsys.readouterr()
    assert evaluate.main(args) == 0
    assert "siamfc: reusing results of 1 of 1" in capsys.readouterr().err and len(builds) == 1
    raw = bytearray(frames[1].read_bytes())              # same size, other bytes, same file time
    stamp = frames[1].stat().st_mtime_ns
    raw[-3] ^= 0xFF
    frames[1].write_bytes(bytes(raw))
    os.utime(frames[1], ns=(stamp, stamp))
    from data import sequence

    sequence._SHA256.clear()                              # a new process: no hash cached by (size, time)
    assert evaluate.main(args) == 0
    assert "siamfc: 1 result was made by another" in capsys.readouterr().err and len(builds) == 2
