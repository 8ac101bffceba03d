"""Results you can trust, items 4, 5, 6 and 10: frames decoded faithfully or refused (mixed sizes,
16-bit, float, truncated JPEGs), filesystem errors as one ``error:`` line, ``--skip-bad`` skipping a
sequence with a corrupt frame, and the smaller bad inputs. Tiny files the tests write themselves."""
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from common.atomic import remove_stale_temporaries, write_text_atomic
from data.frames import FrameError, TrackerError, as_rgb, read_frame
from tracker.baselines.identity import IdentityTracker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def _one_error(rc, err, pattern, code=2):
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith(("warning:", "\r"))]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert rc == code and len(errors) == 1, err
    assert pattern in errors[0], errors[0]
    assert "Traceback" not in err


def _got_folder(root: Path, sizes=((64, 48),) * 4, name="seq1", jpeg=True) -> Path:
    """A GOT-10k val folder with one sequence whose frames have the given sizes."""
    seq = root / name
    seq.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes, 1):
        frame = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(seq / f"{i:08d}.{'jpg' if jpeg else 'png'}"), frame)
    (seq / "groundtruth.txt").write_text("".join("10,10,20,20\n" for _ in sizes))
    return seq


# ------------------------------------------------------------------------------------------------
# item 4: frames converted faithfully, size changes refused
def test_float_and_16_bit_frames_are_scaled_not_clipped(tmp_path):
    rng = np.random.default_rng(0)
    unit = rng.random((20, 30, 3)).astype(np.float32)                  # a float TIFF in [0, 1]
    cv2.imwrite(str(tmp_path / "f.tiff"), unit)
    frame = read_frame(tmp_path / "f.tiff")
    assert frame.dtype == np.uint8 and np.array_equal(frame, np.rint(unit[:, :, ::-1] * 255).astype(np.uint8))
    deep = (rng.random((20, 30)) * 65535).astype(np.uint16)             # a PIL I;16 image
    Image.fromarray(deep).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as image:
        assert image.mode.startswith("I;16")
        assert np.array_equal(as_rgb(image)[:, :, 0], (deep >> 8).astype(np.uint8))   # not saturated at 255
    assert np.array_equal(read_frame(tmp_path / "d.png")[:, :, 1], (deep >> 8).astype(np.uint8))
    single = Image.fromarray((unit[:, :, 0] * 0.5).astype(np.float32))  # PIL mode F: not black
    assert single.mode == "F" and abs(as_rgb(single).mean() - unit[:, :, 0].mean() * 127.5) < 1
    for bad in (unit * 1000, unit - 1, np.full((4, 4), np.nan, np.float32)):
        with pytest.raises(FrameError, match="NaN|expected \\[0, 1\\] or \\[0, 255\\]"):
            as_rgb(bad)


def test_update_with_a_frame_of_another_size_is_a_value_error():
    from tracker import build_tracker
    from tracker.models import build_model

    frame = np.zeros((48, 64, 3), np.uint8)
    model = build_model({"type": "siamfc", "backbone": {"name": "resnet22", "group": "R8", "width_mult": 0.0625}})
    for tracker in (IdentityTracker(), build_tracker("siamfc", model=model, device="cpu")):
        tracker.init(frame, [10, 10, 20, 20])
        tracker.update(frame)
        with pytest.raises(ValueError, match="frame size changed from 64x48 at init to 32x48"):
            tracker.update(frame[:, :32])
        with pytest.raises(TrackerError):
            tracker.update(Image.fromarray(frame).resize((64, 40)))


def test_a_folder_mixing_frame_sizes_is_one_error_naming_the_frame(tmp_path, capsys):
    import evaluate
    import track

    seq = _got_folder(tmp_path / "val", sizes=[(64, 48), (64, 48), (80, 48), (64, 48)])
    rc = evaluate.main(["--root", str(tmp_path / "val"), "--out", str(tmp_path / "out"), "--trackers", "identity",
                        "--no-progress", "--no-plots"])
    _one_error(rc, capsys.readouterr().err, f"frame {seq / '00000003.jpg'} is 80x48 but the first frame is 64x48")
    from common.checkpoints import save_atomic
    from common.config import to_dict
    from tracker.models import build_model

    model = build_model({"type": "siamfc", "backbone": {"name": "resnet22", "group": "R8", "width_mult": 0.0625}})
    ckpt = tmp_path / "tiny.pth"
    save_atomic({"config": {"model": to_dict(model.config), "train": {}}, "model": model.state_dict()}, ckpt)
    rc = track.main(["--video", str(seq), "--init-box", "10,10,20,20", "--no-display", "--threads", "1",
                     "--tracker", "siamfc", "--checkpoint", str(ckpt), "--boxes", str(tmp_path / "boxes.txt")])
    _one_error(rc, capsys.readouterr().err, f"frame {seq / '00000003.jpg'} is 80x48 but the folder's first frame")
    assert not (tmp_path / "boxes.txt").exists()


# ------------------------------------------------------------------------------------------------
# item 6: truncated JPEGs are refused; --skip-bad skips the sequence
def test_a_truncated_jpeg_is_refused(tmp_path):
    seq = _got_folder(tmp_path, sizes=[(64, 48)])
    path = seq / "00000001.jpg"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    assert cv2.imread(str(path)) is not None                     # OpenCV returns the half it decoded
    with pytest.raises(FrameError, match="truncated"):
        read_frame(path)


def test_evaluate_skip_bad_skips_a_sequence_with_a_truncated_frame(tmp_path, capsys):
    import evaluate

    root = tmp_path / "val"
    _got_folder(root, name="good")
    bad = _got_folder(root, name="bad")
    frame = bad / "00000003.jpg"
    frame.write_bytes(frame.read_bytes()[:300])
    args = ["--root", str(root), "--trackers", "identity", "--no-progress", "--no-plots"]
    rc = evaluate.main(args + ["--out", str(tmp_path / "a")])
    _one_error(rc, capsys.readouterr().err, f"sequence bad: cannot read frame {frame}: truncated")
    rc = evaluate.main(args + ["--out", str(tmp_path / "b"), "--skip-bad"])
    err = capsys.readouterr().err
    assert rc == 0 and "warning: skipping sequence: sequence bad" in err, err
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["sequences"] == 1 and list(report["trackers"]["identity"]["sequences"]) == ["good"]


# ------------------------------------------------------------------------------------------------
# item 5: filesystem errors are one error line
def test_outputs_under_a_file_or_at_a_folder_are_one_error_line(tmp_path, capsys):
    import equivariance
    import evaluate
    import generate_sequences
    import make_rotating
    import train_tracker

    blocker = tmp_path / "file"
    blocker.write_text("x")
    root = tmp_path / "val"
    _got_folder(root)
    cases = [
        (evaluate, ["--root", str(root), "--out", str(blocker / "out"), "--trackers", "identity", "--no-progress"]),
        (generate_sequences, ["--out", str(blocker / "gen"), "--num", "1", "--frames", "2"]),
        (make_rotating, ["--src", str(root), "--dst", str(blocker / "rot"), "--deg-per-frame", "2", "--no-progress"]),
        (equivariance, ["--backbone", "cnnbasic", "--group", "R4", "--plot", str(blocker / "p.png")]),
        (equivariance, ["--backbone", "cnnbasic", "--group", "R4", "--plot", str(tmp_path)]),
        (train_tracker, ["--checkpoint", str(blocker), "--export", str(tmp_path)]),
        (train_tracker, ["--config", str(blocker), "--out", str(blocker / "run")]),
        (train_tracker, ["--config", str(blocker), "--out", str(tmp_path / "run"), "--export", str(blocker / "x.pth")]),
    ]
    for tool, argv in cases:
        rc = tool.main(argv)
        _one_error(rc, capsys.readouterr().err, "")
    assert blocker.read_text() == "x"


def _subprocess(argv, limit=None):
    def preexec():
        if limit is not None:                 # a small disk: writes past `limit` bytes fail (EFBIG)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, preexec_fn=preexec,
                          env=env, timeout=300)


def test_make_rot_tinyimagenet_on_a_full_disk_is_one_error_and_leaves_no_temporary(tmp_path):
    src = tmp_path / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    for k, wnid in enumerate(("n01", "n02")):
        images = src / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(images / f"{wnid}_{i}.JPEG"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (src / "val" / "images").mkdir(parents=True)
    lines = []
    for i, wnid in enumerate(("n01", "n02")):
        cv2.imwrite(str(src / "val" / "images" / f"val_{i}.JPEG"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t10\t10\n")
    (src / "val" / "val_annotations.txt").write_text("".join(lines))
    out = tmp_path / "out"
    tool = ROOT / "tools" / "make_rot_tinyimagenet.py"
    full = _subprocess([tool, "--src", src, "--out", out, "--classes", "2"], limit=20_000)
    _one_error(full.returncode, full.stderr, "cannot write (")
    assert not [p.name for p in out.iterdir() if "tmp" in p.name]          # no *.tmp.npy or temporary
    assert not (out / "meta.json").exists()
    good = _subprocess([tool, "--src", src, "--out", out, "--classes", "2", "--overwrite"])
    assert good.returncode == 0, good.stderr
    assert sorted(p.name for p in out.iterdir())[0] == "meta.json"
    truncated = src / "train" / "n01" / "images" / "n01_0.JPEG"
    truncated.write_bytes(truncated.read_bytes()[:400])
    bad = _subprocess([tool, "--src", src, "--out", tmp_path / "out2", "--classes", "2"])
    _one_error(bad.returncode, bad.stderr, "truncated")


# ------------------------------------------------------------------------------------------------
# item 10: the smaller ones
def test_small_bad_inputs_give_one_error_line(tmp_path, capsys):
    import equivariance
    import evaluate
    import generate_sequences
    import track

    from data.synthetic import GeneratorInputError, generate_sequence

    for options in ({"scale_range": [0, 0]}, {"object_size": [0.2, 1e6]}, {"aspect_ratio": [1, 1e9]}):
        with pytest.raises(GeneratorInputError, match="option"):
            generate_sequence(0, num_frames=2, **options)
    with pytest.raises(GeneratorInputError, match="seed"):
        generate_sequence(-1, num_frames=2)
    root = tmp_path / "val"
    _got_folder(root)
    cases = [
        (generate_sequences, ["--out", str(tmp_path / "g"), "--num", "1", "--frames", "2", "--seed", "-1"], "seed"),
        (equivariance, ["--backbone", "cnnbasic", "--group", "R4", "--angles", "nan"], "finite"),
        (equivariance, ["--backbone", "cnnbasic", "--group", "R4", "--size", "5000"], "--size"),
        (equivariance, ["--backbone", "cnnbasic", "--group", "R4", "--seed", "-3"], "--seed"),
        (evaluate, ["--root", str(root), "--trackers", "identity", "--rotating", "1e308"], "--rotating"),
        (evaluate, ["--root", str(root), "--out", str(tmp_path / "e"), "--trackers", "siamfc", "--device", "mps",
                    "--no-progress"], "mps"),
        (track, ["--video", str(root / "seq1"), "--init-box", "10,10,20,20", "--device", "mps", "--no-display"], "mps"),
    ]
    for tool, argv, pattern in cases:
        rc = tool.main(argv)
        _one_error(rc, capsys.readouterr().err, pattern)
    assert track.parse_args(["--video", "v.mp4", "--init-box", "-50,20,30,40"]).init_box == "-50,20,30,40"


def test_ctrl_c_in_evaluate_keeps_finished_sequences(tmp_path, capsys, monkeypatch):
    import evaluate

    from evaluation import experiment

    root = tmp_path / "val"
    _got_folder(root, name="a")
    _got_folder(root, name="b")
    real = experiment.track_sequence
    calls = []

    def interrupted_on_the_second(tracker, seq):
        calls.append(seq.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(tracker, seq)

    monkeypatch.setattr(experiment, "track_sequence", interrupted_on_the_second)
    argv = ["--root", str(root), "--out", str(tmp_path / "out"), "--trackers", "identity", "--no-progress", "--no-plots"]
    rc = evaluate.main(argv)
    _one_error(rc, capsys.readouterr().err, "interrupted", code=130)
    assert (tmp_path / "out" / "results" / "identity" / "a" / "a_001.txt").is_file()
    monkeypatch.setattr(experiment, "track_sequence", real)
    assert evaluate.main(argv) == 0
    assert "reusing results of 1 of 2" in capsys.readouterr().err


def test_a_section_that_is_not_a_table_is_an_error(tmp_path):
    from common.config import ConfigError
    from training.tracking import read_config

    config = tmp_path / "c.toml"
    config.write_text('train = 5\n[model]\ntype = "siamfc"\n')
    for overrides in (None, {"train": {"beta": None}}, {"train": {"beta": 0.5}}):
        with pytest.raises(ConfigError, match="train"):
            read_config(config, overrides)
    with pytest.raises(ConfigError, match="train.seed"):
        read_config(None, {"train": {"seed": -1}})


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "boxes.txt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".boxes.txt.{dead.pid}.abc123.tmp"
    stale.write_text("half")
    stale_video = tmp_path / f".out.mp4.{dead.pid}.x_y.tmp.mp4"
    stale_video.write_text("half")
    live = tmp_path / f".boxes.txt.{os.getpid()}.zzz.tmp"           # a writer still running: kept
    live.write_text("busy")
    other = tmp_path / ".other.txt.1.abc.tmp"
    other.write_text("not ours")
    write_text_atomic(target, "1,2,3,4\n")
    assert target.read_text() == "1,2,3,4\n" and not stale.exists() and live.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path / "out.mp4") == 1 and not stale_video.exists()


def test_history_rates_span_a_resume_and_ctrl_c_before_a_checkpoint_suggests_no_resume(tmp_path, capsys, monkeypatch):
    import train_tracker

    from data.generated import generate_dataset
    from training import tracking
    from training.tracking import RunConfig, Trainer

    data = generate_dataset(tmp_path / "data", 2, seed=3, num_frames=6, frame_size=(160, 128))
    config = RunConfig.from_dict({"model": {"type": "siamfc", "backbone": {"name": "resnet22", "group": "R8",
                                                                           "width_mult": 0.0625}},
                                  "train": {"epochs": 1, "pairs_per_epoch": 4, "batch_size": 2, "num_workers": 0,
                                            "warmup_epochs": 0.5},
                                  "data": {"path": str(data)}})
    out = tmp_path / "run"
    first = Trainer(config, out, device="cpu", progress=False)
    first.fit(max_steps=1)                                  # stops mid-epoch with a checkpoint
    second = Trainer(config, out, device="cpu", progress=False)
    second.resume()
    second.fit()
    epoch = json.loads((out / "history.json").read_text())["epochs"][0]
    assert epoch["pairs"] == 4                              # both parts of the epoch, not the resumed half
    assert epoch["pairs_per_s"] == pytest.approx(4 / epoch["time_s"], rel=0.05)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking, "Trainer", interrupted)
    config_file = tmp_path / "c.toml"
    config_file.write_text(f'[model]\ntype = "siamfc"\n[data]\npath = "{data}"\n')
    rc = train_tracker.main(["--config", str(config_file), "--out", str(tmp_path / "new")])
    err = capsys.readouterr().err
    _one_error(rc, err, "before the first checkpoint", code=130)
    assert "--resume" not in err
