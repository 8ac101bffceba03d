"""Audit "Safe to open any file...": resources a typo could exhaust are refused with one ``error:``
line before anything is allocated, forked or run (worker processes, threads, widths, image and
batch sizes, tracking options, frame and sequence counts, timings, tiny object pictures), and the
smaller CLI faults (negative seeds, a box of 1e308 pixels, an --output without an extension, the
angle column's unit, the overlay video's codec). In-process ``main(argv)`` calls on tiny inputs."""
import importlib
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from backbones import BackboneConfig
from common.config import ConfigError
from common.threads import apply_thread_policy, check_threads, max_workers
from data.synthetic import GeneratorInputError, generate_sequence
from data.video import FrameSource
from tools import benchmark_fps, equivariance, generate_sequences, track, train_tracker
from tracker.siamfc import SiamFCParams, TrackerError, check_init_box
from training.classification.config import TrainConfig as ClassificationConfig
from training.tracking.config import TrainConfig, read_config

HUGE_THREADS = 100_000
# the module (the package's own `train` is the engine's function)
classification = importlib.import_module("training.classification.train")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv2_threads)


def one_error(capsys, rc, pattern):
    """Exit status 2 and exactly one ``error:`` line (the tracking progress bar aside) matching."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("tracking:", "\r"))]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.fixture
def frames(tmp_path) -> Path:
    """A folder of three 64x48 PNG frames."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    return folder


def tracker_toml(tmp_path, train: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(f"[model.backbone]\nwidth_mult = 0.125\n[train]\n{train}\n")
    return path


# 1. DataLoader workers -------------------------------------------------------------------------
def test_num_workers_are_bounded_by_the_machine(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert max_workers() == 12
    assert TrainConfig(num_workers=12).num_workers == 12
    with pytest.raises(ConfigError, match="num_workers must be a whole number from 0 to 12"):
        TrainConfig(num_workers=13)
    monkeypatch.undo()
    out = tmp_path / "out"
    rc = train_tracker.main(["--config", str(tracker_toml(tmp_path, "num_workers = 100000")), "--out", str(out)])
    one_error(capsys, rc, "num_workers must be a whole number")
    rc = train_tracker.main(["--config", str(tracker_toml(tmp_path, "")), "--out", str(out), "--workers", "100000"])
    one_error(capsys, rc, "--workers must be a whole number")
    assert not (out / "checkpoint.pth").exists()


# 2. width multipliers ----------------------------------------------------------------------------
def test_width_mult_is_bounded_in_one_place(tmp_path, capsys):
    for bad in (1e6, 16.5, 0, -1, math.nan, math.inf, "2"):
        with pytest.raises(ConfigError, match="width_mult"):
            BackboneConfig(name="cnnbasic", group="R4", width_mult=bad)
    assert BackboneConfig(name="cnnbasic", group="R4", width_mult=16).width_mult == 16
    rc = equivariance.main(["--backbone", "cnnbasic", "--group", "R4", "--width-mult", "1e6"])
    one_error(capsys, rc, "width_mult must be a number in (0, 16]")
    rc = classification.main(["--width-mult", "1e6", "--out", str(tmp_path / "c"), "--no-progress"])
    one_error(capsys, rc, "width_mult must be a number in (0, 16]")


# 3. and 4. image sizes and batch sizes ------------------------------------------------------------
@pytest.mark.parametrize("argv,pattern", [
    (["--image-size", "100000"], "image_size must be from 8 to 1024"),
    (["--image-size", "4"], "image_size must be from 8 to 1024"),
    (["--batch-size", "100000"], "batch_size must be at most 65536"),
    (["--eq-images", "100000"], "eq_images must be at most 65536"),
    (["--seed", "-1"], "seed must be a non-negative integer"),                         # 9.
    (["--threads", str(HUGE_THREADS)], "--threads must be at most"),                  # 6.
])
def test_classification_trainer_bounds(tmp_path, capsys, argv, pattern):
    rc = classification.main(argv + ["--out", str(tmp_path / "c"), "--no-progress", "--train-limit", "8"])
    one_error(capsys, rc, pattern)
    assert not (tmp_path / "c").exists()


def test_classification_config_bounds():
    for bad, pattern in (({"image_size": 1025}, "image_size"), ({"batch_size": 65537}, "batch_size"),
                         ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed")):
        with pytest.raises(ConfigError, match=pattern):
            ClassificationConfig(**bad)
    assert ClassificationConfig(image_size=1024, batch_size=65536).image_size == 1024


def test_equivariance_size_stays_bounded(capsys):
    rc = equivariance.main(["--backbone", "cnnbasic", "--group", "R4", "--size", "100000"])
    one_error(capsys, rc, "--size must be between 16 and 1024")


def test_tracker_training_batch_and_pairs_are_bounded(tmp_path):
    with pytest.raises(ConfigError, match="batch_size must be at most 4096"):
        TrainConfig(batch_size=100_000, pairs_per_epoch=100_000)
    with pytest.raises(ConfigError, match="at least train.batch_size"):
        TrainConfig(batch_size=64, pairs_per_epoch=32)
    # 7. pairs per epoch: integers only, at most ten million (TOML 1e14 is a float)
    with pytest.raises(ConfigError, match="pairs_per_epoch must be an integer"):
        read_config(tracker_toml(tmp_path, "pairs_per_epoch = 1e14"))
    with pytest.raises(ConfigError, match="pairs_per_epoch must be at most 10000000"):
        read_config(tracker_toml(tmp_path, "pairs_per_epoch = 100_000_000_000_000"))
    with pytest.raises(ConfigError, match="val_pairs must be at most"):
        TrainConfig(val_pairs=10 ** 9)


def test_pairs_per_epoch_typo_is_one_line(tmp_path, capsys):
    rc = train_tracker.main(["--config", str(tracker_toml(tmp_path, "pairs_per_epoch = 100000000000000")),
                             "--out", str(tmp_path / "out")])
    one_error(capsys, rc, "pairs_per_epoch must be at most")


# 5. tracking options -----------------------------------------------------------------------------
@pytest.mark.parametrize("option,pattern", [
    ({"response_up": 1_000_000}, "response_up must be at most 32"),
    ({"scale_num": 100_001}, "scale_num must be at most 15"),
    ({"instance_size": 800_255}, "instance_size must be at most 1023"),
    ({"orientations": 100_000}, "orientations must be at most 360"),
    ({"scale_step": 1e308}, "scale_step must be in [1, 2]"),
    ({"scale_step": 0.5}, "scale_step must be in [1, 2]"),
    ({"ridge_sigma": math.inf}, "ridge_sigma must be a finite number"),
    ({"ridge_sigma": 1e6}, "ridge_sigma must be in (0, 10]"),
    ({"orientation_margin": math.nan}, "orientation_margin must be a finite number"),
    ({"scale_lr": "0.5"}, "scale_lr must be a finite number"),
])
def test_tracking_options_are_bounded(option, pattern):
    with pytest.raises(ConfigError) as info:
        SiamFCParams(**option)
    assert pattern in str(info.value)


def test_tracking_option_typo_through_the_cli(frames, capsys):
    rc = track.main(["--video", str(frames), "--init-box", "10,10,20,20", "--no-display", "--backend", "torch",
                     "--tracker", "siamfc", "--tracker-option", "response_up=1000000"])
    one_error(capsys, rc, "response_up must be at most 32")


# 6. counts, timings and threads ------------------------------------------------------------------
def test_threads_are_bounded_by_the_machine(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert check_threads(3) == 3
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match=r"threads must be at most 3 \(the CPUs of this machine\), got 4"):
        apply_thread_policy(4)
    assert torch.get_num_threads() == before                     # nothing was set


@pytest.mark.parametrize("argv,pattern", [
    (["--demo-frames", "100000000"], "--demo-frames must be from 2 to 10000"),
    (["--demo-seed", "-1"], "--demo-seed must be a non-negative integer"),             # 9.
    (["--threads", str(HUGE_THREADS)], "--threads must be at most"),
    (["--output", "runs/noext"], "has no file extension"),                            # 11.
])
def test_track_cli_bounds_before_building_anything(capsys, monkeypatch, argv, pattern):
    monkeypatch.setattr(track, "build", lambda args: pytest.fail("built a tracker"))
    rc = track.main(argv + ["--no-display"])
    one_error(capsys, rc, pattern)


@pytest.mark.parametrize("argv,pattern", [
    (["--num", "1e19"], "--num must be a whole number, got '1e19'"),
    (["--num", "10000000000000000000"], "--num must be from 1 to 100000"),
    (["--frames", "1000000"], "--frames must be from 1 to 100000"),
    (["--frames", "ten"], "--frames must be a whole number"),
    (["--workers", str(HUGE_THREADS)], "--workers must be from 1 to"),
    (["--seed", "-1"], "--seed must be at least 0"),
])
def test_generate_sequences_counts(tmp_path, capsys, argv, pattern):
    rc = generate_sequences.main(["--out", str(tmp_path / "g")] + argv)
    one_error(capsys, rc, pattern)
    assert not (tmp_path / "g").exists()


def test_generated_frames_must_fit_in_the_machines_memory(tmp_path, monkeypatch):
    import data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "memory_bytes", lambda: 1_000_000)
    with pytest.raises(GeneratorInputError, match="more than 50% of this machine's"):
        generate_sequence(0, num_frames=100, frame_size=(64, 48))                 # 0.9 MB of frames
    with pytest.raises(GeneratorInputError, match="num_frames must be a whole number"):
        generate_sequence(0, num_frames=2.5, frame_size=(64, 48))


@pytest.mark.parametrize("argv", [["--backbone-time", "inf"], ["--backbone-time", "1e9"],
                                  ["--frames", "1000000000"]])
def test_benchmark_fps_runs_for_a_bounded_time(capsys, argv):
    rc = benchmark_fps.main(["--trackers", "identity", "--device", "cpu"] + argv)
    one_error(capsys, rc, "0 < --backbone-time <= 600 seconds")


def test_benchmark_fps_threads(capsys):
    rc = benchmark_fps.main(["--trackers", "identity", "--device", "cpu", "--threads", str(HUGE_THREADS)])
    one_error(capsys, rc, "--threads must be at most")


# 8. object pictures ------------------------------------------------------------------------------
def test_a_tiny_object_picture_is_one_error_naming_it(tmp_path, capsys):
    objects = tmp_path / "objects"
    objects.mkdir()
    tiny = objects / "tiny.png"
    cv2.imwrite(str(tiny), np.full((1, 1, 3), 200, np.uint8))
    with pytest.raises(GeneratorInputError, match=f"image too small .*: {re.escape(str(tiny))}"):
        generate_sequence(0, num_frames=2, frame_size=(64, 48), object_dir=objects, texture_prob=0.0)
    speck = np.zeros((64, 64, 4), np.uint8)                     # a 64 px picture, 1 px of it opaque
    speck[30, 30] = (200, 100, 50, 255)
    cv2.imwrite(str(tiny), speck)
    with pytest.raises(GeneratorInputError, match=f"the opaque part of {re.escape(str(tiny))} is 1x1 px"):
        generate_sequence(1, num_frames=2, frame_size=(64, 48), object_dir=objects, texture_prob=0.0)
    rc = generate_sequences.main(["--out", str(tmp_path / "g"), "--num", "1", "--frames", "2", "--size", "64x48",
                                  "--objects", str(objects), "--option", "texture_prob=0"])
    one_error(capsys, rc, f"the opaque part of {tiny}")


# 10. initial boxes -------------------------------------------------------------------------------
def test_initial_box_must_be_finite_and_at_most_100_frames_large(frames, capsys):
    for box in ([10, 10, 1e308, 1e308], [10, 10, 6401, 20], [10, 10, 20, 4801]):
        with pytest.raises(TrackerError, match="more than 100 times as large as the 64x48 frame"):
            check_init_box(box, (48, 64, 3))
    with pytest.raises(TrackerError, match="finite"):
        check_init_box([10, 10, math.inf, 20], (48, 64, 3))
    assert check_init_box([10, 10, 6400, 4800], (48, 64, 3)).tolist() == [10, 10, 6400, 4800]
    rc = track.main(["--video", str(frames), "--init-box", "10,10,1e308,1e308", "--tracker", "identity",
                     "--no-display"])
    one_error(capsys, rc, "more than 100 times as large")


# 12. and 13. --help: the angle's unit and direction, the video's codec --------------------------
def test_track_help_states_the_angle_convention_and_the_codec(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")                       # no line wrapping inside a phrase
    with pytest.raises(SystemExit):
        track.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "degrees, counter-clockwise as seen on screen, in [-180, 180)" in text
    assert "fourcc mp4v" in text and "web browsers do not" in text


def test_the_cli_reads_frames_as_rgb(tmp_path):
    """OpenCV decodes BGR; the frames that reach the tracker from the CLI are RGB."""
    blue_bgr = np.zeros((48, 64, 3), np.uint8)
    blue_bgr[..., 0] = 255
    folder = tmp_path / "blue"
    folder.mkdir()
    cv2.imwrite(str(folder / "0001.png"), blue_bgr)
    video = tmp_path / "blue.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for _ in range(2):
        writer.write(blue_bgr)
    writer.release()
    for spec in (folder, video):
        source = FrameSource(str(spec))
        try:
            frame = next(iter(source))
        finally:
            source.close()
        assert frame[..., 2].mean() > 200 and frame[..., 0].mean() < 50, spec


# the same kind of typo in the other tools -------------------------------------------------------
@pytest.mark.parametrize("tool,argv,pattern", [
    ("export", ["--out", "x", "--batch", "100000"], "--batch must be at most 64"),
    ("export", ["--out", "x", "--seed", "-1"], "--seed must be a non-negative integer"),
    ("benchmark_training", ["--steps", "100000"], "--steps must be from 1 to 1000"),
    ("benchmark_training", ["--threads", str(HUGE_THREADS)], "--threads must be at most"),
    ("make_rot_tinyimagenet", ["--src", ".", "--out", "x", "--size", "100000"], "--size must be from 8 to 1024"),
])
def test_other_tools_bound_their_counts(capsys, tool, argv, pattern):
    module = importlib.import_module(f"tools.{tool}")
    one_error(capsys, module.main(argv), pattern)


def test_crop_sizes_are_bounded():
    from common.config import ConfigError
    from tracker.models import MAX_CROP_SIZE, ModelConfig

    with pytest.raises(ConfigError, match="instance_size must be at most"):
        ModelConfig(instance_size=MAX_CROP_SIZE + 1)
    assert ModelConfig(instance_size=MAX_CROP_SIZE).instance_size == MAX_CROP_SIZE
