"""tools/tune_tracking.py end to end on a tiny OTB folder with a tiny network: the grid is run, the
best combination is stored in the written checkpoint, and build_tracker applies it (an explicit
option still wins); the orientation penalty keeps an upright target's estimate where it is."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from common.checkpoints import load_checkpoint, save_atomic
from common.config import to_dict
from tracker import build_tracker, stored_tracking_options
from tracker.models import build_model

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _tool():
    spec = importlib.util.spec_from_file_location("_tool_tune", ROOT / "tools" / "tune_tracking.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    torch.manual_seed(0)
    model = build_model({"type": "siamfc", "backbone": {"name": "resnet22", "group": "R8", "width_mult": 0.0625}})
    ckpt = tmp / "net.pth"
    save_atomic({"config": {"model": to_dict(model.config), "train": {}}, "model": model.state_dict()}, ckpt)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        folder = tmp / "data" / name
        (folder / "img").mkdir(parents=True)
        boxes = []
        for t in range(4):
            img = rng.integers(60, 120, (72, 96, 3), dtype=np.uint8)
            img[20 + t:40 + t, 30 + 2 * t:50 + 2 * t] = (220, 40, 40)
            cv2.imwrite(str(folder / "img" / f"{t + 1:04d}.jpg"), img)
            boxes.append([30 + 2 * t, 20 + t, 20, 20])
        np.savetxt(folder / "groundtruth_rect.txt", boxes, fmt="%d", delimiter=",")
    return tmp, ckpt


def test_grid_is_run_and_the_choice_is_stored_and_applied(setup, capsys):
    tmp, ckpt = setup
    tool = _tool()
    out = tmp / "tuned.pth"
    code = tool.main(["--tracker", "siamfc", "--checkpoint", str(ckpt), "--root", str(tmp / "data"),
                      "--grid", "scale_penalty=0.95,0.99", "--grid", "window_influence=0.2,0.4",
                      "--out", str(tmp / "eval"), "--write", str(out), "--no-progress"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1                                    # stdout is the JSON summary alone
    summary = json.loads(lines[0])
    assert len(summary["tried"]) == 4 and summary["table"] == "upright"
    best = max(summary["tried"], key=lambda r: r["success_auc"])
    assert summary["score"] == best["success_auc"]
    stored = load_checkpoint(out)["tracking"]
    assert stored["upright"] == summary["chosen"]
    [record] = stored["chosen_on"]["upright"]
    assert record["tried"] == 4 and record["chosen"] == summary["chosen"]
    assert record["grid"] == {"scale_penalty": [0.95, 0.99], "window_influence": [0.2, 0.4]}
    assert stored_tracking_options(load_checkpoint(out), rotated=True) == {}
    tracker = build_tracker("siamfc", checkpoint=out, device="cpu")
    assert tracker.params.scale_penalty == summary["chosen"]["scale_penalty"]
    assert tracker.params.window_influence == summary["chosen"]["window_influence"]
    explicit = build_tracker("siamfc", checkpoint=out, device="cpu", window_influence=0.33)
    assert explicit.params.window_influence == 0.33
    # a second upright grid on another option keeps the first grid's choices too
    code = tool.main(["--tracker", "siamfc", "--checkpoint", str(out), "--root", str(tmp / "data"),
                      "--grid", "template_lr=0.05", "--grid", "ridge_lambda=1", "--out", str(tmp / "eval2"),
                      "--write", str(out), "--no-progress"])
    assert code == 0
    assert load_checkpoint(out)["tracking"]["upright"] == {**summary["chosen"], "template_lr": 0.05, "ridge_lambda": 1}
    first, second = load_checkpoint(out)["tracking"]["chosen_on"]["upright"]   # both grids on record
    assert first == record and second["chosen"] == {"template_lr": 0.05, "ridge_lambda": 1} and second["tried"] == 1
    assert build_tracker("siamfc", checkpoint=out, device="cpu").params.ridge_lambda == 1
    upright = {**summary["chosen"], "template_lr": 0.05, "ridge_lambda": 1}
    summary["chosen"] = {**summary["chosen"], "template_lr": 0.05}     # what a rotated-template search keeps
    # the rotated table goes to the trackers that search rotated templates
    code = tool.main(["--tracker", "siamfc-ien-rot", "--checkpoint", str(out), "--root", str(tmp / "data"),
                      "--grid", "orientation_penalty=0.8", "--out", str(tmp / "eval-rot"), "--write", str(out),
                      "--no-progress"])
    assert code == 0
    both = load_checkpoint(out)["tracking"]
    # upright choices kept, but not the first-frame fit of one upright template (banks refuse it)
    assert both["rotated"] == {**summary["chosen"], "orientation_penalty": 0.8}
    assert both["upright"] == upright
    assert build_tracker("siamfc-ien-rot", checkpoint=out, device="cpu").params.orientation_penalty == 0.8
    assert build_tracker("siamfc", checkpoint=out, device="cpu").params.orientation_penalty == 1.0
    # a second rotated grid on another option keeps the first grid's choice in the stored table
    code = tool.main(["--tracker", "siamfc-ien-rot", "--checkpoint", str(out), "--root", str(tmp / "data"),
                      "--grid", "orientation_margin=0.5", "--out", str(tmp / "eval-rot2"), "--write", str(out),
                      "--no-progress"])
    assert code == 0
    rotated = load_checkpoint(out)["tracking"]["rotated"]
    assert rotated == {**summary["chosen"], "orientation_penalty": 0.8, "orientation_margin": 0.5}


def test_angle_error_metric_chooses_the_smallest_error(setup, capsys):
    """--metric angle_error minimises the mean angle error (sequences with rotation.txt), and is one
    error where there is no angle truth or the tracker estimates no rotation."""
    import shutil

    tmp, ckpt = setup
    tool = _tool()
    data = tmp / "data-angles"
    for name in ("a", "b"):
        shutil.copytree(tmp / "data" / name, data / name)
        np.savetxt(data / name / "rotation.txt", np.full(4, 30.0))       # the target never turns
    code = tool.main(["--tracker", "siamfc-ien-rot", "--checkpoint", str(ckpt), "--root", str(data),
                      "--grid", "orientation_margin=0,1000", "--metric", "angle_error",
                      "--out", str(tmp / "eval-angle"), "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    errors = [row["angle_error"] for row in summary["tried"]]
    assert summary["tried"][1]["angle_error"] == 0.0           # a huge margin never turns: no error
    assert summary["chosen"]["orientation_margin"] == 1000 and summary["score"] == min(errors)
    for tracker, root in (("siamfc-ien-rot", tmp / "data"), ("siamfc", data)):
        assert tool.main(["--tracker", tracker, "--checkpoint", str(ckpt), "--root", str(root),
                          "--grid", "window_influence=0.3", "--metric", "angle_error",
                          "--out", str(tmp / "eval-angle-bad"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "error: no angle_error" in err and "Traceback" not in err


def test_bad_grids_give_one_error(setup, capsys):
    tmp, ckpt = setup
    tool = _tool()
    for grid in (["--grid", "scale_penalty"], ["--grid", "a=1", "--grid", "a=2"], []):
        assert tool.main(["--tracker", "siamfc", "--checkpoint", str(ckpt), "--root", str(tmp / "data"), *grid]) == 2
        assert capsys.readouterr().err.startswith("error:")
    assert tool.main(["--tracker", "siamfc", "--checkpoint", str(tmp / "none.pth"), "--root", str(tmp / "data"),
                      "--grid", "scale_lr=0.5"]) == 2


def test_orientation_penalty_keeps_the_current_orientation_unless_clearly_beaten():
    torch.manual_seed(0)
    model = build_model({"type": "siamfc", "backbone": {"name": "resnet22", "group": "R8", "width_mult": 0.0625}})
    trk = build_tracker("siamfc-ien-rot", model=model, device="cpu", orientation_window=0.0, orientation_penalty=0.5)
    trk.orientation_index = 0
    s, n, r = 3, 8, trk.score_size
    responses = np.zeros((s, n, r, r), np.float32)
    responses[:, 0, r // 2, r // 2] = 1.0         # the current orientation
    responses[:, 2, r // 2, r // 2] = 1.5         # two steps away: 1.5 * 0.25 < 1
    assert trk.locate_peak(responses, np.arange(n)).orientation_index == 0
    responses[:, 1, r // 2, r // 2] = 2.5         # one step away: 2.5 * 0.5 > 1
    assert trk.locate_peak(responses, np.arange(n)).orientation_index == 1
    free = build_tracker("siamfc-ien-rot", model=model, device="cpu", orientation_window=0.0)
    free.orientation_index = 0
    assert free.locate_peak(responses, np.arange(n)).orientation_index == 1
    responses[:, 1] = 0
    assert free.locate_peak(responses, np.arange(n)).orientation_index == 2    # no prior: the best peak


def test_a_record_written_before_the_history_is_kept(setup, tmp_path):
    """Files tuned before chosen_on held a list (one record per table) keep that record first."""
    _, ckpt = setup
    tool = _tool()
    old = load_checkpoint(ckpt)
    old["tracking"] = {"upright": {"window_influence": 0.3}, "chosen_on": {"upright": {"metric": "success_auc"}}}
    save_atomic(old, tmp_path / "old.pth")
    tool.store_tracking_options(tmp_path / "old.pth", tmp_path / "new.pth", {"window_influence": 0.4}, False,
                                {"metric": "angle_error"})
    tracking = load_checkpoint(tmp_path / "new.pth")["tracking"]
    assert tracking["upright"] == {"window_influence": 0.4}
    assert tracking["chosen_on"]["upright"] == [{"metric": "success_auc"}, {"metric": "angle_error"}]
