"""OpenCV classical trackers as got10k baselines (evaluation/opencv_baselines.py)."""
import cv2
import numpy as np
import pytest
from got10k.trackers import Tracker
from PIL import Image

from tracker.baselines.opencv import OPENCV_TRACKERS, OpenCVTracker, build_opencv_tracker
from tracker.siamfc import TrackerError


@pytest.fixture(autouse=True)
def _one_cv_thread():
    """The machine is shared: one OpenCV thread while these tests run."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(threads)


def make_sequence(n=15, size=(96, 80), start=(20, 16), step=(2, 1), target=(16, 20), seed=0):
    """RGB frames of a textured rectangle moving ``step`` px per frame over a noisy background,
    and its true [x, y, w, h] boxes."""
    rng = np.random.default_rng(seed)
    width, height = size
    background = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)
    tw, th = target
    yy, xx = np.mgrid[:th, :tw]
    checker = ((yy // 4 + xx // 4) % 2).astype(np.uint8)[..., None]
    patch = np.where(checker, np.array([230, 40, 40], np.uint8), np.array([20, 20, 120], np.uint8))
    patch = np.clip(patch + rng.integers(-20, 21, patch.shape), 0, 255).astype(np.uint8)
    frames, boxes = [], []
    for i in range(n):
        x, y = start[0] + step[0] * i, start[1] + step[1] * i
        frame = background.copy()
        frame[y:y + th, x:x + tw] = patch
        frames.append(frame)
        boxes.append([x, y, tw, th])
    return frames, np.asarray(boxes, dtype=np.float64)


def iou(a, b):
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    w = np.clip(np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    return inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)


def run(tracker, frames, box):
    tracker.init(frames[0], box)
    return np.array([box] + [tracker.update(f) for f in frames[1:]], dtype=np.float64)


def test_available_trackers():
    assert "cv2-mil" in OPENCV_TRACKERS
    assert set(OPENCV_TRACKERS) <= {"cv2-mil", "cv2-kcf", "cv2-csrt"}
    contrib = hasattr(cv2, "TrackerKCF") or hasattr(getattr(cv2, "legacy", None), "TrackerKCF_create")
    assert ("cv2-kcf" in OPENCV_TRACKERS) == contrib


@pytest.mark.parametrize("name", OPENCV_TRACKERS)
def test_got10k_contract(name):
    frames, truth = make_sequence(n=3)
    tracker = build_opencv_tracker(name)
    assert isinstance(tracker, Tracker) and isinstance(tracker, OpenCVTracker)
    assert tracker.name == name and tracker.is_deterministic
    tracker.init(Image.fromarray(frames[0]), truth[0].tolist())
    assert tracker.last_score is None
    for frame in frames[1:]:
        box = tracker.update(Image.fromarray(frame))
        assert isinstance(box, np.ndarray) and box.dtype == np.float64 and box.shape == (4,)
        assert np.isfinite(box).all() and (box[2:] > 0).all()
        assert tracker.last_score in (0.0, 1.0)


@pytest.mark.parametrize("name", OPENCV_TRACKERS)
def test_track_image_files(name, tmp_path):
    frames, truth = make_sequence(n=6)
    files = []
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{i:04d}.png")
        files.append(str(tmp_path / f"{i:04d}.png"))
    boxes, times = build_opencv_tracker(name).track(files, truth[0])
    assert boxes.shape == (6, 4) and len(times) == 6
    assert np.isfinite(boxes).all() and np.array_equal(boxes[0], truth[0])


def test_mil_follows_moving_target():
    frames, truth = make_sequence(n=15)
    boxes = run(build_opencv_tracker("cv2-mil"), frames, truth[0])
    tracked = iou(boxes[1:], truth[1:]).mean()
    static = iou(np.repeat(truth[:1], len(truth) - 1, axis=0), truth[1:]).mean()
    assert tracked > 0.5 and tracked > static + 0.2, (tracked, static)   # seed 0: ~0.79 vs ~0.15


@pytest.mark.parametrize("name", OPENCV_TRACKERS)
def test_pil_and_numpy_inputs_agree(name):
    frames, truth = make_sequence(n=8)
    tracker = build_opencv_tracker(name)
    from_arrays = run(tracker, frames, truth[0])
    from_pil = run(tracker, [Image.fromarray(f) for f in frames], truth[0])
    np.testing.assert_array_equal(from_arrays, from_pil)


@pytest.mark.parametrize("name", OPENCV_TRACKERS)
def test_bad_input(name):
    frames, truth = make_sequence(n=2)
    tracker = build_opencv_tracker(name)
    with pytest.raises(TrackerError, match="before init"):
        tracker.update(frames[0])
    with pytest.raises(TrackerError, match="zero or negative size"):
        tracker.init(frames[0], [10, 10, 0, 5])
    with pytest.raises(TrackerError, match="outside"):
        tracker.init(frames[0], [200, 10, 10, 10])
    with pytest.raises(TrackerError):
        tracker.init(frames[0], [1, 2, 3])
    tracker.init(frames[0], truth[0])
    with pytest.raises(TrackerError, match="frame size changed from 96x80 at init to 64x80"):
        tracker.update(frames[1][:, :64])
    with pytest.raises(TrackerError, match=r"expected \[0, 1\] or \[0, 255\]"):   # floats are never clipped
        tracker.update(frames[1].astype(np.float32) * 4)


@pytest.mark.parametrize("name", ["cv2-goturn", "siamfc", ""])
def test_unknown_name(name):
    with pytest.raises(TrackerError, match="cv2-mil"):
        build_opencv_tracker(name)


@pytest.mark.parametrize("name", OPENCV_TRACKERS)
def test_reinit_on_second_sequence(name):
    first, first_truth = make_sequence(n=5)
    second, second_truth = make_sequence(n=8, size=(72, 64), start=(40, 30), step=(-2, 1), target=(14, 12), seed=1)
    tracker = build_opencv_tracker(name)
    run(tracker, first, first_truth[0])
    again = run(tracker, second, second_truth[0])      # another frame size: accepted after init
    fresh = run(build_opencv_tracker(name), second, second_truth[0])
    np.testing.assert_array_equal(again, fresh)
    assert iou(again[1:], second_truth[1:]).mean() > 0.5


@pytest.mark.parametrize("name", OPENCV_TRACKERS)
@pytest.mark.parametrize("box", [
    [40, 30, 2, 2],          # MIL's Haar generator never ends on such boxes
    [40.2, 30.7, 1.0, 8.0],
    [95, 79, 1, 1],          # the last pixel
    [0, 0, 96, 80],          # the whole frame (MIL: no room for negative samples)
    [-10, -10, 30, 30],      # partly outside
    [85.5, 70.25, 20, 20],
])
def test_awkward_boxes_do_not_break_opencv(name, box):
    frames, _ = make_sequence(n=3)
    tracker = build_opencv_tracker(name)
    tracker.init(frames[0], box)
    for frame in frames[1:]:
        out = tracker.update(frame)
        assert np.isfinite(out).all()
        if name != "cv2-csrt":                           # fixed-size trackers: the caller's box size
            np.testing.assert_allclose(out[2:], box[2:])


def test_lost_target_keeps_last_box():
    frames, truth = make_sequence(n=4)
    tracker = build_opencv_tracker("cv2-mil")
    tracker.init(frames[0], truth[0])
    good = tracker.update(frames[1])
    assert tracker.last_score == 1.0

    class Lost:
        def update(self, image):
            return False, (0, 0, 0, 0)

    tracker._cv = Lost()
    for frame in frames[2:]:
        np.testing.assert_array_equal(tracker.update(frame), good)
        assert tracker.last_score == 0.0


def test_frame_too_small():
    with pytest.raises(TrackerError, match="too small"):
        build_opencv_tracker("cv2-mil").init(np.zeros((6, 6, 3), np.uint8), [0, 0, 6, 6])


@pytest.mark.parametrize("name", ["cv2-nano", "cv2-vit"])
def test_the_dnn_baselines_honour_the_contract_and_refuse_missing_files(name, tmp_path, monkeypatch):
    from tracker.registry import model_file_paths, tracker_spec

    spec = tracker_spec(name)
    if not all(p.is_file() for p in model_file_paths(spec)):
        pytest.skip(f"{name}'s model files are not in {model_file_paths(spec)[0].parent}")
    frames, boxes = make_sequence(n=12, size=(160, 128), target=(32, 36), step=(3, 1))
    tracker = build_opencv_tracker(name)
    assert isinstance(tracker, Tracker)
    tracker.init(Image.fromarray(frames[0]), boxes[0])
    out = [tracker.update(Image.fromarray(f)) for f in frames[1:]]
    assert all(b.shape == (4,) and np.isfinite(b).all() and (b[2:] > 0).all() for b in out)
    assert abs(out[-1][0] - boxes[-1][0]) < 12          # it follows the rectangle
    monkeypatch.setenv("IEN_MODELS", str(tmp_path))     # an empty folder: the first missing file is named
    with pytest.raises(TrackerError, match=str(model_file_paths(spec)[0].name)):
        build_opencv_tracker(name)
