import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import tracker as tracker_pkg
from common.checkpoints import save_atomic
from common.config import to_dict
from data.video import FrameSource, VideoError
from evaluation.metrics import box_iou
from tracker.models import build_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import track  # noqa: E402

SIZE, N = 24, 10


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model({"type": "siamfc", "backbone": {"name": "resnet22", "group": "R8", "width_mult": 0.0625}})
    path = tmp_path_factory.mktemp("ckpt") / "siamfc.pth"
    save_atomic({"config": {"model": to_dict(model.config), "train": {}}, "model": model.state_dict()}, path)
    return path


def moving_frames(seed=0):
    """RGB frames of a block-pattern target moving over a smooth background, and its boxes."""
    rng = np.random.default_rng(seed)
    bg = cv2.resize(rng.integers(80, 150, (12, 16, 3)).astype(np.uint8), (128, 96), interpolation=cv2.INTER_LINEAR)
    target = cv2.resize(rng.integers(0, 256, (6, 6, 3)).astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
    frames, boxes = [], []
    for t in range(N):
        x, y = 20 + 4 * t, 20 + 3 * t
        frame = bg.copy()
        frame[y:y + SIZE, x:x + SIZE] = target
        frames.append(frame)
        boxes.append([x, y, SIZE, SIZE])
    return frames, np.array(boxes, dtype=np.float64)


def write_video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def count_video_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def call(capsys, *argv):
    argv = [str(a) for a in argv]
    if "--checkpoint" in argv and "--tracker" not in argv:
        argv += ["--tracker", "siamfc"]          # the tiny test checkpoints are SiamFC models
    code = track.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_orientations_write_the_angle_column(tmp_path, capsys, checkpoint):
    frames, boxes = moving_frames()
    video = tmp_path / "clip.avi"
    write_video(video, frames)
    out_boxes = tmp_path / "boxes.txt"
    code, out, err = call(capsys, "--video", video, "--init-box", "20,20,24,24", "--checkpoint", checkpoint,
                          "--boxes", out_boxes, "--no-display", "--device", "cpu", "--orientations", "4")
    assert code == 0, err
    pred = np.loadtxt(out_boxes, delimiter=",")
    assert pred.shape == (N, 5) and np.allclose(pred[0], [20, 20, 24, 24, 0])
    assert set(np.round(pred[:, 4] % 360).tolist()) <= {0.0, 90.0, 180.0, 270.0}


def test_axis_box_upright_keeps_the_box_unrotated(tmp_path, capsys, checkpoint):
    """--axis-box reaches the tracker: with ``upright`` every box keeps the initial box's shape."""
    frames, _ = moving_frames()
    video = tmp_path / "clip.avi"
    write_video(video, frames)
    rows = {}
    for mode in ("upright", "polygon", "ellipse"):
        out_boxes = tmp_path / f"{mode}.txt"
        code, out, err = call(capsys, "--video", video, "--init-box", "20,20,24,12", "--checkpoint", checkpoint,
                              "--boxes", out_boxes, "--no-display", "--device", "cpu", "--orientations", "8",
                              "--axis-box", mode)
        assert code == 0, err
        rows[mode] = np.loadtxt(out_boxes, delimiter=",")
    assert np.allclose(rows["upright"][:, 2] / rows["upright"][:, 3], 2.0)
    for a, b in (("upright", "polygon"), ("upright", "ellipse")):
        np.testing.assert_allclose(rows[a][:, 4], rows[b][:, 4])          # the same tracking, other boxes
    # no box is larger than the rotated box's own bounds (tests/test_trackers.py: oblique angles)
    assert np.all(rows["ellipse"][:, 2:4] <= rows["polygon"][:, 2:4] + 0.02)


def assert_one_error_line(code, err, match):
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("tracking:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err
    assert "Traceback" not in err


def test_tracks_a_video_file_writes_video_and_boxes(tmp_path, capsys, checkpoint):
    frames, boxes = moving_frames()
    video = tmp_path / "clip.avi"
    write_video(video, frames)
    out_video, out_boxes = tmp_path / "out" / "tracked.mp4", tmp_path / "out" / "boxes.txt"
    code, out, err = call(capsys, "--video", video, "--init-box", "20,20,24,24", "--checkpoint", checkpoint,
                          "--output", out_video, "--boxes", out_boxes, "--no-display", "--device", "cpu",
                          "--orientations", "0")
    assert code == 0, err
    assert "FPS" in out
    pred = np.loadtxt(out_boxes, delimiter=",")
    assert pred.shape == (N, 4) and np.allclose(pred[0], [20, 20, 24, 24])
    assert box_iou(pred, boxes).mean() > 0.6          # MJPG compression: a little below the raw frames
    assert count_video_frames(out_video) == N
    assert not [p for p in out_video.parent.iterdir() if p.name.startswith(".")]   # no temp files left


def test_folder_with_gray_rgba_and_16bit_frames(tmp_path, capsys, checkpoint):
    frames, boxes = moving_frames(1)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if i % 3 == 1:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        elif i % 3 == 2:
            bgr = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])
        if i == 4:
            bgr = bgr.astype(np.uint16) * 257
        cv2.imwrite(str(folder / f"{i:05d}.png"), bgr)
    (folder / "notes.txt").write_text("not a frame")
    out_boxes = tmp_path / "boxes.txt"
    code, out, err = call(capsys, "--video", folder, "--init-box", "20 20 24 24", "--checkpoint", checkpoint,
                          "--boxes", out_boxes, "--no-display", "--orientations", "0")
    assert code == 0, err
    pred = np.loadtxt(out_boxes, delimiter=",")
    assert pred.shape == (N, 4) and box_iou(pred, boxes).mean() > 0.6


def test_demo_writes_video_and_reports_iou(tmp_path, capsys, checkpoint):
    out_video = tmp_path / "demo.mp4"
    code, out, err = call(capsys, "--checkpoint", checkpoint, "--demo-frames", 4, "--output", out_video,
                          "--no-display")
    assert code == 0, err
    assert "mean IoU to the ground truth" in out and "FPS" in out
    assert count_video_frames(out_video) == 4
    assert np.loadtxt(tmp_path / "demo_boxes.txt", delimiter=",").shape == (4, 4)


def test_every_bad_input_gives_one_error_line(tmp_path, capsys, checkpoint, monkeypatch):
    frames, _ = moving_frames()
    video = tmp_path / "clip.avi"
    write_video(video, frames[:3])
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00" * 2000)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    bad_frames = tmp_path / "badframes"
    bad_frames.mkdir()
    (bad_frames / "00001.png").write_bytes(b"not a png")
    base = ["--checkpoint", checkpoint, "--no-display"]
    cases = [
        (["--video", tmp_path / "missing.mp4", "--init-box", "1,1,5,5"], "video not found"),
        (["--video", garbage, "--init-box", "1,1,5,5"], "cannot open video"),
        (["--video", empty, "--init-box", "1,1,5,5"], "no image files"),
        (["--video", bad_frames, "--init-box", "1,1,5,5"], "cannot read frame"),
        (["--video", "7", "--init-box", "1,1,5,5"], "cannot open camera 7"),
        (["--video", video, "--init-box", "500,20,10,10"], "outside"),
        (["--video", video, "--init-box", "20,20,0,10"], "zero or negative size"),
        (["--video", video, "--init-box", "20,20,10"], "4 numbers"),
        (["--video", video, "--init-box", "a,b,c,d"], "x,y,w,h"),
        (["--video", video], "no --init-box"),
        (["--init-box", "1,1,2,2"], "needs --video"),
        (["--video", video, "--init-box", "20,20,9,9", "--device", "bogus"], "unknown device"),
        (["--video", video, "--init-box", "20,20,9,9", "--threads", "0"], "--threads"),
        (["--video", video, "--init-box", "20,20,9,9", "--tracker", "siamrpn", "--axis-box", "polygon"],
         "--axis-box"),
    ]
    for argv, match in cases:
        code, _, err = call(capsys, *argv, *base)
        assert_one_error_line(code, err, match)
    bad_ckpt = tmp_path / "bad.pth"
    bad_ckpt.write_bytes(b"junk")
    code, _, err = call(capsys, "--video", video, "--init-box", "20,20,9,9", "--checkpoint", bad_ckpt, "--no-display")
    assert_one_error_line(code, err, "cannot read checkpoint")
    monkeypatch.setattr(tracker_pkg, "WEIGHTS_DIR", tmp_path / "none")
    code, _, err = call(capsys, "--video", video, "--init-box", "20,20,9,9", "--no-display")
    assert_one_error_line(code, err, "bundled weights tracker/weights/nanotrack_ien.pth not found")
    code, _, err = call(capsys, "--no-display")                      # the demo needs weights too
    assert_one_error_line(code, err, "bundled weights")
    # an output folder that cannot be created
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = call(capsys, "--video", video, "--init-box", "20,20,9,9", "--checkpoint", checkpoint,
                        "--boxes", blocker / "sub" / "b.txt", "--no-display")
    assert_one_error_line(code, err, "error")


def test_script_exits_2_without_traceback_or_decoder_noise(tmp_path):
    """As a real process: exactly one stderr line, even where FFmpeg would log its own complaint."""
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00" * 2000)
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "track.py"), "--video", str(garbage),
                           "--init-box", "1,1,4,4", "--no-display"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: cannot open video {garbage} (not a video OpenCV can decode)"]


def test_overlay_label_is_white_on_a_filled_dark_box():
    frame = np.full((80, 200, 3), 200, np.uint8)              # a light frame, where white text alone vanishes
    out = track.draw(frame, [60, 30, 40, 30], None, "siamfc #3 score 0.91")
    (w, h), base = cv2.getTextSize("siamfc #3 score 0.91", cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    region = out[2:10 + h + base, 2:10 + w].astype(int)
    dark = (region.sum(axis=2) < 60).mean()
    white = (region.min(axis=2) > 200).mean()
    assert dark > 0.6 and white > 0.05                         # mostly background box, with text on it
    assert (out[50, 150] == [200, 200, 200]).all()             # the rest of the frame untouched


def test_frame_folders_are_read_in_natural_order_and_patterns_through_opencv(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (1, 2, 10, 11):                                   # a text sort gives 1, 10, 11, 2
        cv2.imwrite(str(folder / f"{i}.png"), np.full((8, 8, 3), i * 10, np.uint8))
    source = FrameSource(str(folder))
    assert [p.name for p in source.files] == ["1.png", "2.png", "10.png", "11.png"]
    assert [int(frame[0, 0, 0]) for frame in source] == [10, 20, 100, 110]
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f_{i:03d}.png"), np.full((8, 8, 3), 50 + i, np.uint8))
    pattern = FrameSource(str(tmp_path / "f_%03d.png"))
    values = [int(frame[0, 0, 0]) for frame in pattern]
    pattern.close()
    assert values == [50, 51, 52]
    with pytest.raises(VideoError, match="cannot open"):
        FrameSource(str(tmp_path / "none_%03d.png"))


def test_box_format_poly_rows_rebuild_the_drawn_rotated_box(tmp_path, capsys, checkpoint):
    frames, _ = moving_frames()
    video = tmp_path / "clip.avi"
    write_video(video, frames)
    rows = {}
    for fmt in ("xywha", "poly", "xywh"):
        out_boxes = tmp_path / f"{fmt}.txt"
        code, out, err = call(capsys, "--video", video, "--init-box", "20,20,24,12", "--checkpoint", checkpoint,
                              "--boxes", out_boxes, "--no-display", "--device", "cpu", "--orientations", "8",
                              "--axis-box", "upright", "--box-format", fmt)
        assert code == 0, err
        rows[fmt] = np.loadtxt(out_boxes, delimiter=",")
    assert rows["xywh"].shape == (N, 4) and rows["poly"].shape == (N, 8)
    np.testing.assert_allclose(rows["xywh"], rows["xywha"][:, :4])
    corners = rows["poly"].reshape(-1, 4, 2)
    np.testing.assert_allclose(corners[0], [[20, 20], [44, 20], [44, 32], [20, 32]], atol=0.01)
    box, angle = rows["xywha"][:, :4], rows["xywha"][:, 4]
    np.testing.assert_allclose(corners.mean(axis=1), box[:, :2] + box[:, 2:] / 2, atol=0.02)
    top, side = corners[:, 1] - corners[:, 0], corners[:, 3] - corners[:, 0]
    rebuilt = np.degrees(np.arctan2(-top[:, 1], top[:, 0]))             # CCW on screen, y down
    np.testing.assert_allclose((rebuilt - angle + 180) % 360 - 180, 0, atol=0.05)
    # the rotated box has the tracked size (upright axis box = the unrotated box here)
    np.testing.assert_allclose(np.linalg.norm(top, axis=1), box[:, 2], atol=0.02)
    np.testing.assert_allclose(np.linalg.norm(side, axis=1), box[:, 3], atol=0.02)
