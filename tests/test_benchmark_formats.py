"""LaSOT, UAV123, VOT and TrackingNet readers on tiny folders written in the real layouts,
evaluated end to end with the identity tracker; attribute tables; submission zips; the paired
bootstrap through scipy."""
import importlib.util
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from data import DatasetError, detect_layout, load_sequences
from data.benchmarks import UAV123_ATTRIBUTES, decode_vot_mask, parse_config_seqs, uav123_frame_ranges

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("_tool_evaluate_bench", ROOT / "tools" / "evaluate.py")
evaluate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evaluate)

BOX = [8, 10, 12, 9]                      # the target stays put: identity IoU 1 where present
AUC_ALL_HIT = 20 / 21                     # IoU 1 passes 20 of the 21 thresholds (not "> 1")


def _frames(folder, names, box=BOX):
    """32x32 frames (cv2-written JPEG or PNG, by the names' extension) with a bright target."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y, w, h = box
    for i, name in enumerate(names):
        image = np.full((32, 32, 3), 40 + 10 * i, np.uint8)
        image[y:y + h, x:x + w] = (0, 200, 255)
        assert cv2.imwrite(str(folder / name), image)


def _run(args, tmp_path, capsys):
    out = tmp_path / "out"
    code = evaluate.main(args + ["--out", str(out), "--no-progress", "--no-plots",
                                 "--trackers", "identity"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads((out / "report.json").read_text()), captured, out


def _single_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ------------------------------------------------------------------------------------ LaSOT
def _lasot_seq(root, name, n, occlusion=(), out_of_view=()):
    folder = root / name.rsplit("-", 1)[0] / name
    _frames(folder / "img", [f"{i:08d}.jpg" for i in range(1, n + 1)])
    np.savetxt(folder / "groundtruth.txt", [BOX] * n, fmt="%d", delimiter=",")
    for file, frames in (("full_occlusion.txt", occlusion), ("out_of_view.txt", out_of_view)):
        (folder / file).write_text(",".join("1" if i in frames else "0" for i in range(n)) + "\n")
    (folder / "nlp.txt").write_text(f"the {name} in the sky\n")
    return folder


def test_lasot_whole_root_flags_split_and_official_scoring(tmp_path, capsys):
    root = tmp_path / "LaSOTBenchmark"
    _lasot_seq(root, "airplane-1", 5, occlusion=(2,), out_of_view=(3,))
    _lasot_seq(root, "airplane-9", 4)
    _lasot_seq(root, "airplane-10", 3)                  # a training sequence
    _lasot_seq(root, "bird-4", 3)
    assert detect_layout(root) == "lasot"
    assert detect_layout(root / "airplane") == "lasot"   # one category folder works too
    seqs = {s.name: s for s in load_sequences(root)}
    assert sorted(seqs) == ["airplane-1", "airplane-10", "airplane-9", "bird-4"]
    a1 = seqs["airplane-1"]
    np.testing.assert_array_equal(a1.absent, [False, False, True, True, False])
    assert a1.description == "the airplane-1 in the sky" and len(a1) == 5
    assert a1.img_files[0].endswith("airplane/airplane-1/img/00000001.jpg")
    # the official test split (280 names shipped with the got10k toolkit), or a names file
    with pytest.warns(UserWarning, match="not found"):
        test = load_sequences(root, subset="test", skip_bad=True)
    assert [s.name for s in test] == ["airplane-1", "airplane-9"]
    (tmp_path / "testing_set.txt").write_text("bird-4\nairplane-9\n")
    assert [s.name for s in load_sequences(root, subset=str(tmp_path / "testing_set.txt"))] == \
        ["bird-4", "airplane-9"]
    with pytest.raises(DatasetError, match="LaSOT test sequence 'airplane-13' not found"):
        load_sequences(root, subset="test")

    # end to end: absent frames are dropped but stay in the frame count (official toolkit)
    report, captured, _ = _run(["--root", str(root), "--sequences", "airplane-1", "airplane-9"],
                               tmp_path, capsys)
    assert report["protocol"] == "lasot"
    rows = report["trackers"]["identity"]["sequences"]
    assert rows["airplane-1"]["success_auc"] == pytest.approx(3 / 5 * AUC_ALL_HIT)
    assert rows["airplane-9"]["success_auc"] == pytest.approx(AUC_ALL_HIT)
    assert rows["airplane-1"]["precision20"] == pytest.approx(3 / 5)
    overall = report["trackers"]["identity"]["overall"]
    assert overall["success_auc"] == pytest.approx((3 / 5 + 1) / 2 * AUC_ALL_HIT)
    assert "| identity |" in captured.out
    # the OTB protocol on the same folder leaves the absent frames out altogether
    report, _, _ = _run(["--root", str(root), "--dataset", "otb", "--sequences", "airplane-1"],
                        tmp_path / "otb", capsys)
    assert report["trackers"]["identity"]["sequences"]["airplane-1"]["success_auc"] == \
        pytest.approx(AUC_ALL_HIT)


def test_lasot_bad_flag_file_names_the_file(tmp_path, capsys):
    root = tmp_path / "LaSOT"
    folder = _lasot_seq(root, "cat-3", 4)
    (folder / "out_of_view.txt").write_text("0,0,1\n")
    with pytest.raises(DatasetError, match=r"out_of_view.txt: 3 flags but the sequence has 4"):
        load_sequences(root)
    (folder / "out_of_view.txt").write_text("0,0,2,0\n")
    assert evaluate.main(["--root", str(root), "--trackers", "identity", "--no-progress",
                          "--out", str(tmp_path / "o")]) == 2
    assert "expected 0/1 flags, found 2" in _single_error(capsys)


# ----------------------------------------------------------------------------------- UAV123
CONFIG_SEQS = """function seqs=configSeqs
seqUAV123={struct('name','bird1_1','path','D:\\\\UAV123\\\\data_seq\\\\UAV123\\\\bird1\\\\','startFrame',1,'endFrame',3,'nz',6,'ext','jpg','init_rect',[0,0,0,0]),...
struct('name','bird1_2','path','D:\\\\UAV123\\\\data_seq\\\\UAV123\\\\bird1\\\\','startFrame',5,'endFrame',8,'nz',6,'ext','jpg','init_rect',[0,0,0,0]),...
struct('name','car1','path','D:\\\\UAV123\\\\data_seq\\\\UAV123\\\\car1\\\\','startFrame',1,'endFrame',4,'nz',6,'ext','jpg','init_rect',[0,0,0,0])};
seqs = seqUAV123;
"""


def _uav_root(tmp_path):
    root = tmp_path / "Dataset_UAV123" / "UAV123"
    _frames(root / "data_seq" / "UAV123" / "bird1", [f"{i:06d}.jpg" for i in range(1, 9)])
    _frames(root / "data_seq" / "UAV123" / "car1", [f"{i:06d}.jpg" for i in range(1, 5)])
    anno = root / "anno" / "UAV123"
    (anno / "att").mkdir(parents=True)
    (anno / "bird1_1.txt").write_text("8,10,12,9\n8,10,12,9\n8,10,12,9\n")
    (anno / "bird1_2.txt").write_text("8,10,12,9\nNaN,NaN,NaN,NaN\n8,10,12,9\n20,20,6,6\n")
    (anno / "car1.txt").write_text("8,10,12,9\n8,10,12,9\n20,20,6,6\n20,20,6,6\n")
    flags = {"bird1_1": [1] + [0] * 11, "bird1_2": [1, 0, 0, 1] + [0] * 8,
             "car1": [0, 0, 0, 1] + [0] * 8}
    for name, values in flags.items():
        (anno / "att" / f"{name}.txt").write_text(",".join(map(str, values)) + "\n")
    (root / "configSeqs.m").write_text(CONFIG_SEQS)
    return root


def test_uav123_frame_ranges_nan_rows_and_attribute_table(tmp_path, capsys):
    # the default ranges: the benchmark's configSeqs.m values as shipped with the got10k toolkit
    official = uav123_frame_ranges()
    assert official["bird1_2"] == ("bird1", 775, 1477) and len(official) == 123
    root = _uav_root(tmp_path)
    assert parse_config_seqs(root / "configSeqs.m")["bird1_2"] == ("bird1", 5, 8)
    assert detect_layout(root) == "uav123"
    seqs = {s.name: s for s in load_sequences(root)}
    b2 = seqs["bird1_2"]
    assert [Path(f).name for f in b2.img_files] == [f"{i:06d}.jpg" for i in range(5, 9)]
    np.testing.assert_array_equal(b2.absent, [False, True, False, False])
    assert b2.attributes["Fast Motion"] and not b2.attributes["Low Resolution"]
    assert list(b2.attributes) == list(UAV123_ATTRIBUTES)

    report, captured, out = _run(["--root", str(root), "--attributes"], tmp_path, capsys)
    assert report["protocol"] == "uav123"
    rows = report["trackers"]["identity"]["sequences"]
    # NaN frame not scored; the moved target (frame 4) misses: 2 of 3 scored frames hit
    assert rows["bird1_2"]["success_auc"] == pytest.approx(2 / 3 * AUC_ALL_HIT)
    assert rows["car1"]["success_auc"] == pytest.approx(2 / 4 * AUC_ALL_HIT)
    table = report["attributes"]
    assert table["attributes"]["Fast Motion"] == {"kind": "sequence", "sequences": 2, "frames": 8}
    fast = table["trackers"]["identity"]["Fast Motion"]["success_auc"]
    assert fast == pytest.approx((2 / 3 + 2 / 4) / 2 * AUC_ALL_HIT)
    assert table["trackers"]["identity"]["Scale Variation"]["success_auc"] == \
        pytest.approx((1 + 2 / 3) / 2 * AUC_ALL_HIT)
    assert table["attributes"]["Similar Object"]["sequences"] == 0
    assert "| Fast Motion | per sequence | 2 | 8 |" in captured.out
    assert "## Per attribute" in (out / "report.md").read_text()

    # a range that does not match the annotation is refused with the file named
    (root / "configSeqs.m").write_text(CONFIG_SEQS.replace("'endFrame',4", "'endFrame',3"))
    with pytest.raises(DatasetError, match=r"car1.txt: 4 ground-truth rows but sequence car1 has 3"):
        load_sequences(root, names=["car1"])
    # without configSeqs.m the official table applies: bird1_2 would need frame 775
    (root / "configSeqs.m").unlink()
    with pytest.raises(DatasetError, match=r"missing frame .*bird1/000775.jpg"):
        load_sequences(root, names=["bird1_2"])


# -------------------------------------------------------------------------------------- VOT
def _vot_root(tmp_path):
    root = tmp_path / "vot2018"
    diamond = "20,8,26,14,20,20,14,14"                 # a square turned by 45 degrees
    _frames(root / "rot" / "color", [f"{i:08d}.jpg" for i in range(1, 5)])
    (root / "rot" / "groundtruth.txt").write_text((diamond + "\n") * 4)
    (root / "rot" / "camera_motion.tag").write_text("0\n1\n1\n0\n")
    (root / "rot" / "occlusion.tag").write_text("0\n0\n1\n")            # shorter: untagged tail
    _frames(root / "old", [f"{i:08d}.png" for i in range(1, 4)])       # pre-2018: no color/
    (root / "old" / "groundtruth.txt").write_text("8,10,12,9\n8,10,12,9\n8,10,12,9\n")
    # VOT2020 masks: a 3x2 block at (9,11) (runs over a 4x3 region at offset (8,10))
    _frames(root / "mask" / "color", [f"{i:08d}.jpg" for i in range(1, 4)])
    mask = "m8,10,4,3,5,3,1,3\n"
    (root / "mask" / "groundtruth.txt").write_text(mask * 2 + "m0,0,0,0,0\n")
    (root / "list.txt").write_text("rot\nold\nmask\n")
    return root


def test_vot_polygons_masks_tags_and_rotated_iou(tmp_path, capsys):
    root = _vot_root(tmp_path)
    assert detect_layout(root) == "vot"
    seqs = {s.name: s for s in load_sequences(root)}
    rot = seqs["rot"]
    np.testing.assert_array_equal(rot.boxes[0], [14, 8, 12, 12])      # the polygon's bounds
    assert rot.polygons.shape == (4, 8)
    np.testing.assert_array_equal(rot.frame_tags["occlusion"], [False, False, True, False])
    assert seqs["old"].img_files[0].endswith("old/00000001.png")
    mask, offset = decode_vot_mask("8,10,4,3,5,3,1,3".split(","))
    assert offset == (8, 10) and mask.sum() == 6 and mask[1:, 1:].all()
    np.testing.assert_array_equal(seqs["mask"].boxes[0], [9, 11, 3, 2])
    assert seqs["mask"].absent.tolist() == [False, False, True]       # empty mask: absent

    report, captured, _ = _run(["--root", str(root), "--attributes"], tmp_path, capsys)
    assert report["protocol"] == "vot"
    rows = report["trackers"]["identity"]["sequences"]
    # the tracker's box is the diamond's bounds: polygon IoU 0.5 -> 10 of 21 thresholds
    assert rows["rot"]["success_auc"] == pytest.approx((20 / 21 + 3 * 10 / 21) / 4)
    assert rows["rot"]["poly_iou"] == pytest.approx(0.5)
    assert rows["old"]["success_auc"] == pytest.approx(AUC_ALL_HIT)
    table = report["attributes"]
    assert table["attributes"]["camera_motion"] == {"kind": "frame", "sequences": 1, "frames": 2}
    assert table["trackers"]["identity"]["camera_motion"]["success_auc"] == pytest.approx(10 / 21)
    assert "| camera_motion | per frame | 1 | 2 |" in captured.out

    (root / "old" / "groundtruth.txt").write_text("8,10,12,9\n8,10,12,9,1,1\n8,10,12,9\n")
    with pytest.raises(DatasetError, match=r"old/groundtruth.txt:2: expected 4 \(box\) or 8"):
        load_sequences(root)


# ------------------------------------------------------------------------------ TrackingNet
def test_trackingnet_train_scored_test_exported(tmp_path, capsys):
    root = tmp_path / "TrackingNet"
    for chunk, name, rows in (("TRAIN_0", "a1b2c3_0", 4), ("TEST", "zz99_1", 1)):
        _frames(root / chunk / "frames" / name, [f"{i}.jpg" for i in range(4)])
        (root / chunk / "anno").mkdir(parents=True)
        np.savetxt(root / chunk / "anno" / f"{name}.txt", [BOX] * rows, fmt="%d", delimiter=",")
    # natural order 0..11 (not 0, 1, 10, 11, 2...)
    _frames(root / "TRAIN_0" / "frames" / "long_0", [f"{i}.jpg" for i in range(12)])
    np.savetxt(root / "TRAIN_0" / "anno" / "long_0.txt", [BOX] * 12, fmt="%d", delimiter=",")
    assert detect_layout(root) == "trackingnet"
    (test_seq,) = load_sequences(root)                           # TEST by default
    assert test_seq.first_frame_only and np.isnan(test_seq.boxes[1:]).all()
    train = {s.name: s for s in load_sequences(root, subset="train")}
    assert [Path(f).name for f in train["long_0"].img_files][:4] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]

    report, _, _ = _run(["--root", str(root), "--subset", "TRAIN_0"], tmp_path / "train", capsys)
    assert report["trackers"]["identity"]["overall"]["success_auc"] == pytest.approx(AUC_ALL_HIT)

    _, captured, out = _run(["--root", str(root)], tmp_path / "test", capsys)
    assert "cannot score" in captured.err and "--submission trackingnet" in captured.err
    _, captured, out = _run(["--root", str(root), "--submission", "trackingnet"],
                            tmp_path / "test2", capsys)
    with zipfile.ZipFile(out / "identity-trackingnet-submission.zip") as archive:
        assert archive.namelist() == ["zz99_1.txt"]
        boxes = np.loadtxt(archive.open("zz99_1.txt"), delimiter=",")
    np.testing.assert_allclose(boxes, [BOX] * 4)


def test_got10k_submission_zip_matches_the_toolkit_layout(tmp_path, capsys):
    test = tmp_path / "GOT-10k" / "test"
    names = ["GOT-10k_Test_000001", "GOT-10k_Test_000002"]
    for name in names:
        _frames(test / name, [f"{i:08d}.jpg" for i in range(1, 5)])
        np.savetxt(test / name / "groundtruth.txt", [BOX], fmt="%d", delimiter=",")
    (test / "list.txt").write_text("\n".join(names) + "\n")
    _, captured, out = _run(["--root", str(test.parent), "--subset", "test",
                             "--submission", "got10k"], tmp_path, capsys)
    assert "cannot score" in captured.err
    path = out / "identity-got10k-submission.zip"
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == sorted(
            f"{n}/{n}_{kind}.txt" for n in names for kind in ("001", "time"))
        text = archive.read(f"{names[0]}/{names[0]}_001.txt").decode()
        times = np.loadtxt(archive.open(f"{names[0]}/{names[0]}_time.txt"), delimiter=",")
    # the same text the got10k toolkit's ExperimentGOT10k._record writes (np.savetxt %.3f)
    assert text.splitlines()[0] == "8.000,10.000,12.000,9.000" and len(text.splitlines()) == 4
    assert times.shape == (4,) and (times >= 0).all()
    assert not list(out.glob(".*.tmp"))                           # written atomically


# ------------------------------------------------------------------------ bad input, bootstrap
def test_attribute_flags_without_attribute_files(tmp_path, capsys):
    root = tmp_path / "OTB" / "Car"
    _frames(root / "img", [f"{i:04d}.jpg" for i in range(1, 4)])
    np.savetxt(root / "groundtruth_rect.txt", [BOX] * 3, fmt="%d", delimiter=",")
    base = ["--root", str(root.parent), "--trackers", "identity", "--no-progress", "--no-plots",
            "--out", str(tmp_path / "o")]
    assert evaluate.main(base + ["--attributes"]) == 2
    assert "have no attribute files" in _single_error(capsys)
    assert evaluate.main(base + ["--frame-ranges", str(tmp_path / "configSeqs.m")]) == 2
    assert "only used with the UAV123 layout" in _single_error(capsys)
    # OTB-style attribute lists as a JSON file
    (tmp_path / "att.json").write_text(json.dumps({"Car": ["IV", "SV"]}))
    assert evaluate.main(base + ["--attributes", str(tmp_path / "att.json")]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["attributes"]["attributes"]["SV"] == {"kind": "sequence", "sequences": 1,
                                                        "frames": 3}
    capsys.readouterr()
    (tmp_path / "att.json").write_text("[1, 2]")
    assert evaluate.main(base + ["--attributes", str(tmp_path / "att.json")]) == 2
    assert "must be a JSON object" in _single_error(capsys)


def test_paired_bootstrap_is_scipys_with_the_same_meaning():
    from evaluation.metrics import paired_difference

    rng = np.random.default_rng(3)
    base = rng.uniform(0.3, 0.7, 40)
    tracker = base + 0.02 + rng.normal(0, 0.03, 40)          # correlated with the baseline
    d = paired_difference(tracker, base, resamples=4000, seed=5)
    # a hand-written paired percentile bootstrap of the mean difference agrees
    diffs = tracker - base
    means = diffs[rng.integers(0, 40, (20000, 40))].mean(axis=1)
    assert d["ci_low"] == pytest.approx(np.quantile(means, 0.025), abs=3e-3)
    assert d["ci_high"] == pytest.approx(np.quantile(means, 0.975), abs=3e-3)
    # pairing matters: the interval is much narrower than the unpaired spread of the scores
    assert d["ci_high"] - d["ci_low"] < 0.5 * 2 * 1.96 * np.std(base) / np.sqrt(40)
    # reproducible with a seed; a single sequence has no interval
    assert paired_difference(tracker, base, resamples=4000, seed=5) == d
    one = paired_difference([0.6], [0.5])
    assert one["mean"] == pytest.approx(0.1) and np.isnan(one["ci_low"]) and one["n"] == 1
