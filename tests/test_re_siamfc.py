"""RE-SiamNet (tracker/re_siamfc.py): e2cnn export, equivariant responses, angle read-out, prior, got10k."""
import cv2
import numpy as np
import pytest
import torch
from got10k.trackers import Tracker
from PIL import Image

from common.config import ConfigError
from tracker.models import build_model
from tracker.orientation import axis_aligned_box, orientation_angles, rotated_template_bank
from tracker.re_siamfc import ExportedE2ResNet22, RESiamFCTracker, export_e2_backbone
from tracker.siamfc import TrackerError

pytestmark = pytest.mark.usefixtures("one_thread")


def e2_model(group="R4", seed=0):
    torch.manual_seed(seed)
    return build_model({"type": "siamfc", "backbone": {"name": "e2-resnet22", "group": group, "width_mult": 0.0625}})


@pytest.fixture(scope="module")
def r4_model():
    return e2_model("R4")


@pytest.fixture(scope="module")
def r8_model():
    return e2_model("R8")


def noise_frame(seed=0, size=255):
    """A textured frame (random blocks, bilinearly smoothed): every region is distinctive."""
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (size, size),
                      interpolation=cv2.INTER_LINEAR)


# the target: a 60x40 box centred on the frame centre (127.5, 127.5), so np.rot90 of the frame
# turns it about its own centre
BOX = [97.5, 107.5, 60.0, 40.0]


def test_exported_backbone_equals_the_e2cnn_backbone():
    model = e2_model("R8", seed=1)
    backbone = model.backbone
    backbone.train()
    with torch.no_grad():                      # non-trivial BN statistics
        backbone(torch.randn(4, 3, 127, 127))
    backbone.eval()
    x = torch.randn(2, 3, 135, 135)
    exported = export_e2_backbone(backbone)
    assert isinstance(exported, ExportedE2ResNet22)
    assert all(not type(m).__module__.startswith("e2cnn") for m in exported.modules())
    with torch.no_grad():
        ref, out = backbone(x), exported(x)
    assert out.out.shape == ref.out.shape and len(out.watched) == len(ref.watched) == 3
    for a, b in zip([ref.out] + ref.watched, [out.out] + out.watched):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    assert exported.out_channels == backbone.out_channels and exported.spec == backbone.spec
    with pytest.raises(TypeError):
        export_e2_backbone(build_model({"type": "siamfc", "backbone": {"width_mult": 0.0625}}).backbone)


def flat_frame(seed=0, size=255):
    """A 60x40 random block pattern (the target, centred on the frame) on a flat grey background."""
    rng = np.random.default_rng(seed)
    frame = np.full((size, size, 3), 128, np.uint8)
    frame[108:148, 98:158] = cv2.resize(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), (60, 40),
                                        interpolation=cv2.INTER_NEAREST)
    return frame


def test_bank_responses_are_equivariant_to_quarter_turns(r8_model):
    """Search crop turned by k * 90 deg: every response map turns with it and the bank index shifts by
    k * N/4 (float64: equal to rounding); at the target centre the bank's read-out is exact."""
    n = 8
    frame = noise_frame(2)
    bank = rotated_template_bank(frame, (127.5, 127.5), 127.0, 127, orientation_angles(n))
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).double()  # noqa: E731
    model = r8_model.eval().double()
    try:
        with torch.no_grad():
            z = model.extract(tensor(bank)).out
            turned = [model.head_bank(z, model.extract(tensor(np.rot90(frame, k)[None])).out)[0].numpy()
                      for k in range(4)]                                            # (N, R, R) each
    finally:
        model.float()
    responses, centre = turned[0], turned[0].shape[-1] // 2
    for k in (1, 2, 3):
        expected = np.rot90(np.roll(responses, k * n // 4, axis=0), k, axes=(1, 2))
        err = np.abs(turned[k] - expected).max(axis=(1, 2)) / np.abs(responses).max()
        # templates at multiples of 90 deg are exact pixel permutations of the crop; the 45 deg ones
        # go through OpenCV's fixed-point warp, whose rounding differs by up to one grey level
        assert err[0::2].max() < 1e-9 and err[1::2].max() < 1e-4, (k, err)
        # group max-pool read-out at the target: the template turned by k * 90 deg wins
        assert int(np.argmax(turned[k][:, centre, centre])) == k * n // 4
    assert int(np.argmax(responses[:, centre, centre])) == 0


def read_out(model, frame, k, **options):
    """Angle read by a fresh tracker initialised on ``frame`` and updated on it turned by k * 90 deg."""
    trk = RESiamFCTracker(model, device="cpu", **options)
    trk.init(frame, BOX)
    box = trk.update(np.rot90(frame, k))
    return trk, box


@pytest.mark.parametrize("group", ["R4", "R8"])
def test_whole_tracker_is_equivariant_to_quarter_turns(group, r4_model, r8_model):
    """Turning the frame about the target by k * 90 deg adds exactly k * 90 deg to the read-out
    (whatever an untrained net reads on the unturned frame) and turns the box with it."""
    model = {"R4": r4_model, "R8": r8_model}[group]
    for frame in (noise_frame(0), noise_frame(1), flat_frame(0)):
        base, base_box = read_out(model, frame, 0, orientation_window=0.0)
        for k in (1, 2, 3):
            trk, box = read_out(model, frame, k, orientation_window=0.0)
            assert (trk.last_angle - base.last_angle) % 360.0 == k * 90.0, (group, k)
            w, h = (base_box[3], base_box[2]) if k % 2 else (base_box[2], base_box[3])
            assert box[2:] == pytest.approx([w, h], abs=0.05)
            # the box: the bounds of the ellipse inscribed in the polygon (axis_box's default)
            centre = trk.last_polygon.reshape(4, 2).mean(0)
            assert np.allclose(box, axis_aligned_box(centre, trk.target_sz, trk.last_angle, "ellipse"))
            _, polygon_box = read_out(model, frame, k, orientation_window=0.0, axis_box="polygon")
            assert np.allclose(polygon_box, np.r_[trk.last_polygon.reshape(4, 2).min(0),
                                                  np.ptp(trk.last_polygon.reshape(4, 2), 0)])


def test_angle_read_out_on_a_rotated_target(r4_model):
    """A block pattern on a flat background turned by k * 90 deg: the read-out is k * 90 deg."""
    for seed in (0, 1, 2):
        for k, angle in ((0, 0.0), (1, 90.0), (2, -180.0), (3, -90.0)):
            trk, _ = read_out(r4_model, flat_frame(seed), k, orientation_window=0.0)
            assert trk.last_angle == angle, (seed, k)


def test_motion_prior_follows_a_turning_target_step_by_step(r4_model):
    trk = RESiamFCTracker(r4_model, device="cpu")                  # default window: ±360/Λ = ±90 deg
    assert trk.params.orientations == 4 and trk.params.orientation_window == 90.0
    for seed in (1, 2):
        frame = flat_frame(seed)
        trk.init(frame, BOX)
        angles = []
        for k in (1, 2, 3, 4, 5):
            trk.update(np.rot90(frame, k))
            angles.append(trk.last_angle)
        assert angles == [90.0, -180.0, -90.0, 0.0, 90.0], seed


def rig(trk, boost_index):
    """Make one orientation's response far higher than every other, everywhere (replaces earlier rigs)."""
    real = type(trk).compute_responses.__get__(trk)

    def rigged(search):
        responses = real(search)
        responses[:, boost_index] += 100.0
        return responses

    trk.compute_responses = rigged


def test_motion_prior_never_chooses_an_orientation_outside_the_window(r8_model):
    frame = noise_frame(0)
    trk = RESiamFCTracker(r8_model, device="cpu")                  # R8: ±45 deg
    free = RESiamFCTracker(r8_model, device="cpu", orientation_window=0.0)
    assert trk.params.orientation_window == 45.0
    for t in (trk, free):
        t.init(frame, BOX)
    assert trk.allowed_orientations().tolist() == [0, 1, 7]
    assert free.allowed_orientations().tolist() == list(range(8))
    trk.orientation_index = 7
    assert trk.allowed_orientations().tolist() == [0, 6, 7]
    trk.orientation_index = 0
    # the opposite orientation (index 4, 180 deg) is rigged to win: only the free tracker takes it
    for t in (trk, free):
        rig(t, 4)
    free.update(frame)
    assert free.orientation_index == 4 and free.last_angle == -180.0
    trk.update(frame)
    assert trk.orientation_index in (0, 1, 7)
    # rigging the neighbour inside the window walks the estimate one step per frame, never more
    for _ in range(3):
        before = trk.orientation_index
        rig(trk, (before + 1) % 8)
        trk.update(frame)
        assert trk.orientation_index == (before + 1) % 8


def test_angle_refinement_stays_within_half_a_step(r4_model):
    frame = flat_frame(1)
    trk = RESiamFCTracker(r4_model, device="cpu", angle_refine=True, orientation_window=0.0)
    plain = RESiamFCTracker(r4_model, device="cpu", orientation_window=0.0)
    for k in (1, 3):
        for t in (trk, plain):
            t.init(frame, BOX)
            t.update(np.rot90(frame, k))
        assert abs(trk.angle_offset) <= 0.5
        assert trk.orientation_index == plain.orientation_index
        assert abs((trk.last_angle - plain.last_angle + 180) % 360 - 180) == pytest.approx(abs(trk.angle_offset) * 90)
    trk.init(frame, BOX)
    assert trk.angle_offset == 0.0


def test_got10k_contract(tmp_path, r8_model):
    frame = noise_frame(3)
    files = []
    for t in range(4):
        shifted = np.roll(frame, (2 * t, 3 * t), axis=(0, 1))
        path = tmp_path / f"{t:08d}.jpg"
        Image.fromarray(shifted).save(path, quality=95)
        files.append(str(path))
    trk = RESiamFCTracker(r8_model, device="cpu")
    assert isinstance(trk, Tracker) and trk.name == "re-siamfc" and trk.is_deterministic
    assert isinstance(trk.model.backbone, ExportedE2ResNet22) and not trk.model.training
    boxes, times = trk.track(files, BOX)
    assert boxes.shape == (4, 4) and times.shape == (4,) and np.isfinite(boxes).all()
    assert np.allclose(boxes[0], BOX)
    assert 0.0 < trk.last_score < 1.0
    assert isinstance(trk.last_angle, float) and -180.0 <= trk.last_angle < 180.0
    assert trk.last_polygon.shape == (8,)
    # PIL images and arrays give the same result
    trk.init(Image.open(files[0]), BOX)
    a = trk.update(Image.open(files[1]))
    trk.init(np.asarray(Image.open(files[0])), BOX)
    assert np.allclose(a, trk.update(np.asarray(Image.open(files[1]))))


def test_tracker_leaves_the_callers_model_alone_and_loads_checkpoints(tmp_path):
    """The export lives in the tracker's shallow copy; a training-mode checkpoint (e2cnn drops its
    cached filters in train mode) rebuilds the same tracker."""
    from backbones.steerable import E2ResNet22
    from common.checkpoints import save_atomic
    from common.config import to_dict
    from tracker.models import model_from_checkpoint

    model = e2_model("R4", seed=3)
    model.train()
    path = tmp_path / "re.pth"
    save_atomic({"config": {"model": to_dict(model.config), "train": {}}, "model": model.state_dict()}, path)
    trk = RESiamFCTracker(model, device="cpu")
    assert isinstance(model.backbone, E2ResNet22) and isinstance(trk.model.backbone, ExportedE2ResNet22)
    assert trk.model.config is model.config and trk.model.head_fc is model.head_fc
    loaded = RESiamFCTracker(model_from_checkpoint(path)[0], device="cpu")
    raw = RESiamFCTracker(model, device="cpu", export_backbone=False)
    frame = flat_frame(2)
    boxes = []
    for t in (trk, loaded, raw):
        t.init(frame, BOX)
        boxes.append((t.update(np.rot90(frame)), t.last_angle))
    assert boxes[0][1] == boxes[1][1] == boxes[2][1]
    assert np.allclose(boxes[0][0], boxes[1][0], atol=1e-3) and np.allclose(boxes[0][0], boxes[2][0], atol=1e-3)


def test_e2cnn_filters_are_expanded_once_not_per_frame(r4_model, monkeypatch):
    """In eval mode R2Conv caches its expanded filter: tracking frames never expands the basis."""
    from e2cnn.nn import R2Conv

    calls = []
    original = R2Conv.expand_parameters
    monkeypatch.setattr(R2Conv, "expand_parameters", lambda self: calls.append(1) or original(self))
    r4_model.train()                                               # drop the cached filters
    trk = RESiamFCTracker(r4_model, device="cpu", export_backbone=False)
    assert not trk.model.training and len(calls) > 0               # expanded once, by eval()
    calls.clear()
    frame = flat_frame(0)
    trk.init(frame, BOX)
    for k in (1, 2):
        trk.update(np.rot90(frame, k))
    assert calls == []


def test_bad_models_and_options_are_rejected(r8_model):
    plain = build_model({"type": "siamfc", "backbone": {"name": "resnet22", "group": "R8", "width_mult": 0.0625}})
    with pytest.raises(TrackerError, match="e2cnn backbone"):
        RESiamFCTracker(plain, device="cpu")
    with pytest.raises(TrackerError, match="orientations"):
        RESiamFCTracker(r8_model, device="cpu", orientations=0)
    with pytest.raises(ConfigError):
        RESiamFCTracker(r8_model, device="cpu", angle_refine="yes")
    with pytest.raises(ConfigError, match="angle_refine"):         # the message lists every option
        RESiamFCTracker(r8_model, device="cpu", no_such_option=1)
    with pytest.raises(TrackerError):
        RESiamFCTracker(r8_model, device="cpu").update(noise_frame())


def test_colour_model_blends_into_the_rotated_template_search(r4_model):
    """colour_weight reaches RE-SiamNet's peak search (its locate_peak passes the colour score on):
    on colour alone (weight 1, no window) a red disc that jumps between frames is found to within
    two pixels, with the angle refinement on as well."""
    from test_colour_model import scene  # a red disc on a noisy green frame

    rng = np.random.default_rng(0)
    trk = RESiamFCTracker(r4_model, device="cpu", colour_weight=1.0, window_influence=0.0, angle_refine=True)
    trk.init(scene(rng, (80, 70)), [71, 61, 18, 18])
    for centre in ((92, 64), (99, 80), (90, 91)):
        box = trk.update(scene(rng, centre))
        assert np.hypot(*(box[:2] + box[2:] / 2 - np.array(centre))) < 2.0, (centre, box)
