"""NanoTrack v3 in the toolkit: the weight import reproduces the author's ONNX outputs, the runner
honours the got10k contract and refuses a missing file, the training loss's labels, the teacher's
score maps turned with the target, and a fine-tune of a few steps from the imported weights
(distilling the teacher) runs and resumes bit-exactly. The model files
are read from ../shared/models/nanotrack (never copied into the project)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import trainer_stopping_after_first_step

from data.generated import generate_dataset
from tracker.nano_tracker import NanoTracker, OnnxNanoNetworks, TorchNanoNetworks, export_nanotrack_onnx
from tracker.nanotrack import import_nanotrack_v3, nanotrack_labels, score_points, turn_score_map
from tracker.siamfc import TrackerError
from training.tracking import RunConfig, Trainer

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models" / "nanotrack"
BACKBONE, HEAD = MODELS / "nanotrackv3_backbone.onnx", MODELS / "nanotrackv3_head.onnx"
needs_models = pytest.mark.skipif(not BACKBONE.is_file(), reason="../shared/models/nanotrack is not beside the project")


@pytest.fixture(scope="module")
def imported():
    return import_nanotrack_v3(BACKBONE, HEAD).eval()


@needs_models
def test_the_imported_weights_reproduce_the_onnx_outputs(imported):
    networks = OnnxNanoNetworks.from_files(BACKBONE, HEAD, threads=1)
    rng = np.random.default_rng(0)
    z_crop = rng.integers(0, 256, (127, 127, 3), dtype=np.uint8)
    x_crop = rng.integers(0, 256, (255, 255, 3), dtype=np.uint8)
    z_onnx = networks.template(z_crop)                                  # the author's graph, BGR in
    cls_onnx, loc_onnx = networks.search(z_onnx, x_crop)
    ours = TorchNanoNetworks(imported)                                  # our module, RGB in
    cls, loc = ours.search(ours.template(z_crop), x_crop)
    with torch.no_grad():
        z_ours = imported.extract(torch.from_numpy(z_crop).permute(2, 0, 1)[None].float()).out.numpy()
    assert z_ours.shape == (1, 96, 8, 8) and cls.shape == (1, 2, 15, 15) and loc.shape == (1, 4, 15, 15)
    assert np.abs(z_ours - z_onnx).max() < 1e-4
    assert np.abs(cls - cls_onnx).max() < 1e-4
    assert np.abs(loc - loc_onnx).max() < 1e-4 * max(1.0, np.abs(loc_onnx).max())
    # our export runs the same network through ONNX Runtime
    exported = OnnxNanoNetworks(*export_nanotrack_onnx(imported), bgr=False, threads=1)
    cls_x, loc_x = exported.search(exported.template(z_crop), x_crop)
    assert np.abs(cls_x - cls_onnx).max() < 1e-4 and np.abs(loc_x - loc_onnx).max() < 1e-3


def _moving_square(n=6, size=(160, 120)):
    frames = []
    for t in range(n):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        frame[40:70, 30 + 4 * t:60 + 4 * t] = (230, 40, 40)
        frames.append(frame)
    return frames


@needs_models
def test_the_runner_honours_the_got10k_contract_and_refuses_missing_files(tmp_path):
    tracker = NanoTracker(OnnxNanoNetworks.from_files(BACKBONE, HEAD, threads=1), name="nanotrack-v3")
    frames = _moving_square()
    tracker.init(frames[0], [30, 40, 30, 30])
    boxes = [tracker.update(f) for f in frames[1:]]
    assert all(b.shape == (4,) and np.isfinite(b).all() for b in boxes) and 0 <= tracker.last_score <= 1
    assert boxes[-1][0] > 35                                             # it follows the square to the right
    with pytest.raises(TrackerError, match="missing.onnx"):
        OnnxNanoNetworks.from_files(tmp_path / "missing.onnx", HEAD)
    with pytest.raises(TrackerError, match="before init"):
        NanoTracker(OnnxNanoNetworks.from_files(BACKBONE, HEAD, threads=1)).update(frames[0])


def test_score_maps_turn_with_the_target():
    points = score_points(15, 16, 255)
    one = torch.zeros(2, 1, 15, 15)
    one[:, 0, 7, 9] = 1                                       # two cells right of the target at the centre
    turned = turn_score_map(one, torch.tensor([90.0, 0.0]), torch.full((2, 2), 127.5), points)
    assert (turned[0, 0] > 0.5).nonzero().tolist() == [[5, 7]]   # counter-clockwise on screen: above it
    assert torch.equal(turned[1], one[1])


def test_labels_are_positive_at_the_centre_and_negative_far_away():
    points = score_points(15, 16, 255)
    box = torch.tensor([[127.5 - 32, 127.5 - 16, 127.5 + 32, 127.5 + 16]])      # 64 x 32 at the centre
    labels = nanotrack_labels(points, box).reshape(15, 15)
    assert labels[7, 7] == 1 and labels[0, 0] == 0 and labels[7, 9] == -1
    assert (labels == 1).sum() == 1 and (labels == -1).sum() > 0


@needs_models
def test_a_fine_tune_from_the_imported_weights_runs_and_resumes_bit_exactly(tmp_path):
    data = generate_dataset(tmp_path / "data", 2, seed=3, num_frames=6, frame_size=(200, 160))
    config = RunConfig.from_dict({
        "model": {"type": "nanotrack", "backbone": {"name": "nanotrack-v3", "group": "R8"}},
        "train": {"epochs": 1, "pairs_per_epoch": 6, "batch_size": 2, "num_workers": 0, "warmup_epochs": 0,
                  "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "beta": 0.01,
                  "init_from": str(MODELS), "checkpoint_every": 1, "distill_weight": 1.0},
        "data": {"path": str(data), "max_rotation_deg": 90.0}})
    straight = Trainer(config, tmp_path / "straight", device="cpu", progress=False)
    pair = straight.pairs()[0]
    assert pair["x_upright"].shape == pair["x"].shape and abs(float(pair["rotation_x"])) <= 90   # the teacher's view
    assert straight.fit()["steps"] == 3
    out = tmp_path / "killed"
    assert trainer_stopping_after_first_step()(config, out, device="cpu", progress=False).fit()["interrupted"]
    resumed = Trainer(config, out, device="cpu", progress=False)
    resumed.resume()
    resumed.fit()
    start = import_nanotrack_v3(BACKBONE, HEAD).state_dict()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert not all(torch.equal(a[k], start[k]) for k in a)               # it trained
    assert all(torch.equal(a[k], b[k]) for k in a)


def _turning_target(n=20, step=6.0, size=(224, 192)):
    """Frames of an elongated two-colour bar on a textured background, turning ``step`` degrees
    CCW per frame about a fixed centre; and the first box."""
    import cv2

    rng = np.random.default_rng(0)
    width, height = size
    background = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (9, 9), 0)
    centre = (width / 2, height / 2)
    frames = []
    for t in range(n):
        bar = np.zeros((height, width), np.uint8)
        cv2.rectangle(bar, (int(centre[0] - 40), int(centre[1] - 10)), (int(centre[0] + 40), int(centre[1] + 10)), 1, -1)
        head = np.zeros_like(bar)
        cv2.rectangle(head, (int(centre[0] + 15), int(centre[1] - 10)), (int(centre[0] + 40), int(centre[1] + 10)), 1, -1)
        turn = cv2.getRotationMatrix2D(centre, step * t, 1.0)        # CCW on screen for positive angles
        bar, head = (cv2.warpAffine(m, turn, (width, height), flags=cv2.INTER_NEAREST) for m in (bar, head))
        frame = background.copy()
        frame[bar > 0] = (230, 200, 30)
        frame[head > 0] = (200, 30, 30)
        frames.append(frame)
    return frames, np.array([centre[0] - 40, centre[1] - 10, 80, 20], dtype=np.float64)


@needs_models
def test_following_rotation_turns_the_estimate_with_the_target():
    frames, box = _turning_target()
    networks = OnnxNanoNetworks.from_files(BACKBONE, HEAD, threads=1)
    following = NanoTracker(networks, orientations=36)
    assert following.estimates_orientation and not NanoTracker(networks).estimates_orientation
    following.init(frames[0], box)
    boxes = [following.update(f) for f in frames[1:]]
    truth = 6.0 * (len(frames) - 1)                                    # 114 degrees by the last frame
    assert abs(following.last_angle - truth) <= 20.0, following.last_angle
    assert following.last_polygon.shape == (8,)
    centre = boxes[-1][:2] + boxes[-1][2:] / 2
    assert np.abs(centre - (112, 96)).max() < 12                       # still on the bar's centre
    with pytest.raises(Exception, match="orientations must be"):
        NanoTracker(networks, orientations=2)
