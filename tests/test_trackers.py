import cv2
import numpy as np
import pytest
import torch
from got10k.trackers import Tracker
from PIL import Image

import tracker as tracker_pkg
from common.checkpoints import save_atomic
from common.config import to_dict
from evaluation.metrics import box_iou
from tracker import build_tracker
from tracker.crops import crop_many
from tracker.models import build_model
from tracker.siamfc import SiamFCTracker, TrackerError, as_rgb_frame, resolve_device
from tracker.siamrpn import SiamRPNTracker

TINY = {"name": "resnet22", "group": "R8", "width_mult": 0.0625}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(model_type="siamfc", seed=0):
    torch.manual_seed(seed)
    return build_model({"type": model_type, "backbone": dict(TINY)})


def save_checkpoint(model, path):
    save_atomic({"config": {"model": to_dict(model.config), "train": {}}, "model": model.state_dict()}, path)
    return path


def background(rng, width=128, height=96):
    """A smooth, low-contrast textured background."""
    coarse = rng.integers(80, 150, (height // 8, width // 8, 3)).astype(np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


def blocky_target(rng, size, blocks=6):
    """A distinctive high-contrast block pattern (not rotation-symmetric)."""
    return cv2.resize(rng.integers(0, 256, (blocks, blocks, 3)).astype(np.uint8), (size, size),
                      interpolation=cv2.INTER_NEAREST)


def moving_sequence(seed=0, n=16, size=24, step=(3, 2)):
    rng = np.random.default_rng(seed)
    bg, target = background(rng), blocky_target(rng, size)
    frames, boxes = [], []
    for t in range(n):
        x, y = 20 + t * step[0], 20 + t * step[1]
        frame = bg.copy()
        frame[y:y + size, x:x + size] = target
        frames.append(frame)
        boxes.append([x, y, size, size])
    return frames, np.array(boxes, dtype=np.float64)


def run(trk, frames, box):
    trk.init(frames[0], box)
    return np.array([box] + [trk.update(f) for f in frames[1:]], dtype=np.float64)


def test_build_tracker_is_a_got10k_tracker_with_contract_attributes(tmp_path):
    path = save_checkpoint(tiny_model(), tmp_path / "fc.pth")
    trk = build_tracker("siamfc", checkpoint=path, device="cpu")
    assert isinstance(trk, Tracker) and trk.is_deterministic
    assert trk.device == torch.device("cpu") and not trk.model.training
    assert torch.equal(trk.model.backbone.stem[0].weight, torch.load(path)["model"]["backbone.stem.0.weight"])
    frames, boxes = moving_sequence(n=3)
    paths = []
    for i, frame in enumerate(frames):
        paths.append(str(tmp_path / f"{i:04d}.png"))
        Image.fromarray(frame).save(paths[-1])
    out, times = trk.track(paths, boxes[0])           # got10k's own loop (PIL frames)
    assert out.shape == (3, 4) and np.allclose(out[0], boxes[0]) and times.shape == (3,)
    assert 0.0 <= trk.last_score <= 1.0
    assert trk.last_angle is None and trk.last_polygon is None
    rpn = build_tracker("siamrpn-plain", model=tiny_model("siamrpn"), device=None)
    assert isinstance(rpn, SiamRPNTracker) and rpn.name == "siamrpn-plain"
    assert run(rpn, frames, boxes[0]).shape == (3, 4) and 0.0 <= rpn.last_score <= 1.0


def test_got10k_experiment_runs_the_tracker_unchanged(tmp_path):
    from got10k.experiments import ExperimentGOT10k

    frames, boxes = moving_sequence(n=6)
    seq_dir = tmp_path / "data" / "val" / "GOT-10k_Val_000001"
    seq_dir.mkdir(parents=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(seq_dir / f"{i + 1:08d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    np.savetxt(seq_dir / "groundtruth.txt", boxes, fmt="%.1f", delimiter=",")
    np.savetxt(seq_dir / "absence.label", np.zeros(6, int), fmt="%d")
    np.savetxt(seq_dir / "cover.label", np.full(6, 8), fmt="%d")
    np.savetxt(seq_dir / "cut_by_image.label", np.zeros(6, int), fmt="%d")
    (seq_dir / "meta_info.ini").write_text("[METAINFO]\nresolution: (128, 96)\n")
    (tmp_path / "data" / "val" / "list.txt").write_text("GOT-10k_Val_000001\n")
    trk = build_tracker("siamfc", model=tiny_model(), device="cpu")
    exp = ExperimentGOT10k(str(tmp_path / "data"), subset="val", result_dir=str(tmp_path / "results"),
                           report_dir=str(tmp_path / "reports"))
    exp.run(trk)
    perf = exp.report([trk.name])[trk.name]["overall"]
    assert perf["ao"] > 0.5


def test_untrained_siamfc_follows_a_moving_target_the_identity_tracker_loses():
    model = tiny_model()
    for seed in (0, 1):
        frames, boxes = moving_sequence(seed, n=12, step=(4, 3))
        trk = build_tracker("siamfc", model=model, device="cpu")
        iou = box_iou(run(trk, frames, boxes[0]), boxes)
        still = box_iou(np.repeat(boxes[:1], len(boxes), 0), boxes)
        assert iou.mean() > 0.75 and iou[-1] > 0.5, iou
        assert still.mean() < 0.3 and still[-1] == 0.0


def test_rot_variants_estimate_rotation_and_defaults_do_not():
    from tracker import TRACKERS

    assert TRACKERS["siamfc-ien-rot"].options == {"orientations": 8, "orientation_window": 45.0}
    assert TRACKERS["siamfc-ien-rot"].estimates_orientation() and not TRACKERS["siamfc-ien"].estimates_orientation()
    model = tiny_model()
    rot = build_tracker("siamfc-ien-rot", model=model, device="cpu")
    fast = build_tracker("siamfc-plain", model=model, device="cpu")
    frame = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    for trk in (rot, fast):
        trk.init(frame, [30, 30, 24, 24])
        trk.update(frame)
    assert rot.last_angle is not None and rot.last_polygon.shape == (8,)
    assert fast.last_angle is None and fast.last_polygon is None


def test_orientation_margin_keeps_the_current_orientation():
    """With a margin larger than any response, the template bank never changes orientation."""
    frames = [np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8) for i in range(4)]
    trk = build_tracker("siamfc", model=tiny_model(), device="cpu", orientations=8, orientation_margin=1e6)
    trk.init(frames[0], [30, 30, 24, 24])
    for f in frames[1:]:
        trk.update(f)
        assert trk.last_angle == 0.0
    with pytest.raises(TrackerError, match="orientation_margin"):
        build_tracker("siamfc", model=tiny_model(), device="cpu", orientations=8, orientation_margin=-1)
    with pytest.raises(TrackerError, match="axis_box"):
        build_tracker("siamfc", model=tiny_model(), device="cpu", orientations=8, axis_box="circle")


def test_template_update_blends_the_current_appearance_in():
    """template_lr: 0 keeps the init template, 1 replaces it by the target where the tracker now
    puts it (every rotated copy from the current orientation), a confidence gate can skip frames."""
    frames, boxes = moving_sequence(1, n=4)
    for options in ({}, {"orientations": 8}):
        fixed = build_tracker("siamfc", model=tiny_model(), device="cpu", **options)
        fixed.init(frames[0], boxes[0])
        first = fixed.template.clone()
        fixed.update(frames[1])
        assert torch.equal(fixed.template, first)
        gated = build_tracker("siamfc", model=tiny_model(), device="cpu", template_lr=0.5, template_min_score=1.0,
                              **options)
        gated.init(frames[0], boxes[0])
        gated.update(frames[1])
        assert torch.equal(gated.template, first)
        full = build_tracker("siamfc", model=tiny_model(), device="cpu", template_lr=1.0, **options)
        full.init(frames[0], boxes[0])
        for frame in frames[1:]:
            full.update(frame)
            turned = float(full.orientation_angles[full.orientation_index])
            assert torch.allclose(full.template, full.build_template(frame, turned), atol=1e-5)
        assert not torch.allclose(full.template, first, atol=1e-3)
        half = build_tracker("siamfc", model=tiny_model(), device="cpu", template_lr=0.25, **options)
        half.init(frames[0], boxes[0])
        half.update(frames[1])
        fresh = half.build_template(frames[1], float(half.orientation_angles[half.orientation_index]))
        assert torch.allclose(half.template, 0.75 * first + 0.25 * fresh, atol=1e-5)
    for bad in (-0.1, 1.5):
        with pytest.raises(TrackerError, match="template_lr"):
            build_tracker("siamfc", model=tiny_model(), device="cpu", template_lr=bad)


def test_orientation_patience_turns_only_after_wins_in_a_row():
    from tracker.siamfc import Peak

    frame = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    trk = build_tracker("siamfc", model=tiny_model(), device="cpu", orientations=8, orientation_patience=3)
    trk.init(frame, [30, 30, 24, 24])
    taken = []
    for winner in (1, 1, 0, 7, 7, 7, 7, 6):
        trk.apply_peak(Peak(1, winner, np.zeros(2), 0.5))
        taken.append(trk.orientation_index)
    # 1 wins twice (not enough), the current 0 wins and resets, 7 wins three times in a row: turned
    assert taken == [0, 0, 0, 0, 0, 7, 7, 7]
    with pytest.raises(TrackerError, match="orientation_patience"):
        build_tracker("siamfc", model=tiny_model(), device="cpu", orientations=8, orientation_patience=0)


def test_siamfc_estimates_rotation_with_a_template_bank():
    """Target rotated exactly by 90° per frame (np.rot90 is CCW on screen): the bank finds the angle."""
    model = tiny_model()
    correct, flipped = 0, 0
    truth = [90.0, -180.0, -90.0, 0.0, 90.0]
    for seed in (0, 3):
        rng = np.random.default_rng(seed)
        bg, target = background(rng), blocky_target(rng, 32, blocks=4)
        frames = []
        for t in range(6):
            frame = bg.copy()
            frame[30:62, 40:72] = np.rot90(target, t)
            frames.append(frame)
        trk = build_tracker("siamfc", model=model, device="cpu", orientations=8)
        trk.init(frames[0], [40, 30, 32, 32])
        for frame, angle in zip(frames[1:], truth):
            box = trk.update(frame)
            correct += trk.last_angle == angle
            flipped += trk.last_angle == ((-angle + 180) % 360 - 180) and angle not in (0.0, -180.0)
            assert trk.last_polygon.shape == (8,)
            # the reported box is the bounding box of the polygon
            assert np.allclose(box[:2], trk.last_polygon.reshape(4, 2).min(0))
    assert correct >= 8 and flipped == 0


def test_axis_box_of_a_rotated_target():
    """The box reported for an orientation 45 degrees off: ellipse bounds (default), polygon bounds
    or the upright box, all about the same centre."""
    frame = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    boxes = {}
    for mode in ("ellipse", "polygon", "upright"):
        trk = build_tracker("siamfc", model=tiny_model(), device="cpu", orientations=8, axis_box=mode)
        trk.init(frame, [30, 40, 40, 20])
        trk.orientation_index = 1                   # 45 degrees
        boxes[mode] = trk.current_box()
        assert trk.last_angle == 45.0
    side = np.sqrt((40 ** 2 + 20 ** 2) / 2)         # the ellipse's bounds at 45 degrees
    np.testing.assert_allclose(boxes["ellipse"], [50 - side / 2, 50 - side / 2, side, side])
    np.testing.assert_allclose(boxes["polygon"][2:], [60 / np.sqrt(2)] * 2)
    np.testing.assert_allclose(boxes["upright"], [30, 40, 40, 20])


def test_orientation_window_limits_the_search():
    trk = build_tracker("siamfc", model=tiny_model(), device="cpu", orientations=8, orientation_window=45)
    trk.orientation_index = 0
    assert sorted(trk.orientation_angles[trk.allowed_orientations()]) == [0.0, 45.0, 315.0]
    trk.orientation_index = 4
    assert sorted(trk.orientation_angles[trk.allowed_orientations()]) == [135.0, 180.0, 225.0]


def test_siamrpn_decodes_the_best_anchor():
    """With a controlled head output the tracker moves to the chosen anchor, damped by lr*score*penalty."""
    model = tiny_model("siamrpn")
    trk = build_tracker("siamrpn", model=model, device="cpu", window_influence=0.0)
    frames, boxes = moving_sequence(n=2)
    trk.init(frames[0], boxes[0])
    n = model.anchors().shape[0]
    r = model.score_size
    best = 2 * r * r + 8 * r + 10              # anchor 2 (ratio 1), row 8, col 10: +16 crop px in x
    score = np.full(n, 0.01)
    score[best] = 0.9
    deltas = np.zeros((n, 4))
    deltas[best] = [0.0, 0.25, 0.0, 0.0]       # and + 0.25 * 64 = 16 crop px in y
    trk.compute_outputs = lambda search: (score, deltas)
    centre = trk.center.copy()
    z_sz = np.sqrt(np.prod(boxes[0, 2:] + 0.5 * boxes[0, 2:].sum()))
    scale_z = 127 / z_sz
    box = trk.update(frames[1])
    assert np.allclose(trk.center, centre + np.array([16.0, 16.0]) / scale_z)
    anchor = model.anchors()[best, 2:].numpy().astype(np.float64)        # 64 x 64 crop px
    target = boxes[0, 2:] * scale_z
    change = (anchor.sum() * 1.5) / (target.sum() * 1.5)               # context sizes, square boxes
    lr = np.exp(-(change - 1) * 0.04) * 0.9 * 0.4                      # penalty * score * lr
    assert np.allclose(trk.target_sz, boxes[0, 2:] * (1 - lr) + anchor / scale_z * lr)
    assert np.allclose(box, np.concatenate([trk.center - trk.target_sz / 2, trk.target_sz]))
    assert trk.last_score == pytest.approx(0.9)


def test_frames_in_every_format_give_the_same_result():
    frames, boxes = moving_sequence(n=4)
    model = tiny_model()
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    reference = run(build_tracker("siamfc", model=model, device="cpu"), [np.stack([g] * 3, -1) for g in gray], boxes[0])
    for variant in (gray, [g[:, :, None] for g in gray], [Image.fromarray(g) for g in gray],
                    [np.dstack([np.stack([g] * 3, -1), np.full_like(g, 7)]) for g in gray],
                    [np.stack([g] * 3, -1).astype(np.uint16) * 257 for g in gray]):
        assert np.allclose(run(build_tracker("siamfc", model=model, device="cpu"), variant, boxes[0]), reference)
    assert as_rgb_frame(Image.fromarray(frames[0]).convert("RGBA")).shape == (96, 128, 3)


def test_bad_inputs_raise_tracker_errors(tmp_path, monkeypatch):
    model = tiny_model()
    trk = build_tracker("siamfc", model=model, device="cpu")
    frame = moving_sequence(n=1)[0][0]
    with pytest.raises(TrackerError, match="before init"):
        trk.update(frame)
    for box, msg in (([10, 10, 0, 5], "zero or negative size"), ([500, 10, 5, 5], "outside"),
                     ([-20, 10, 10, 5], "outside"), ([1, 2, 3], "4 numbers"), ([np.nan, 1, 2, 3], "size")):
        with pytest.raises(TrackerError, match=msg):
            trk.init(frame, box)
    with pytest.raises(TrackerError, match="float32 pixels in"):     # out of [0, 255]: refused, never clipped
        trk.init(frame.astype(np.float32) - 300, [10, 10, 20, 20])
    with pytest.raises(TrackerError, match="shape"):
        trk.init(np.zeros((4, 4, 2), np.uint8), [1, 1, 2, 2])
    with pytest.raises(TrackerError, match="unknown tracker"):
        build_tracker("siamxx", model=model)
    with pytest.raises(TrackerError, match="unknown key.*'scale_nm'"):
        build_tracker("siamfc", model=model, scale_nm=5)
    with pytest.raises(TrackerError, match="odd"):
        build_tracker("siamfc", model=model, scale_num=2)
    with pytest.raises(TrackerError, match="needs a siamrpn model"):
        build_tracker("siamrpn", model=model)
    # checkpoints: missing bundled weights, wrong type, corrupt, not ours
    monkeypatch.setattr(tracker_pkg, "WEIGHTS_DIR", tmp_path / "no-weights")
    with pytest.raises(TrackerError, match=r"bundled weights tracker/weights/siamfc_ien.pth not found.*--checkpoint"):
        build_tracker("siamfc")
    with pytest.raises(TrackerError, match="siamrpn_plain.pth"):
        build_tracker("siamrpn-plain")
    with pytest.raises(TrackerError, match="needs a siamfc model.*holds a siamrpn"):
        build_tracker("siamfc", checkpoint=save_checkpoint(tiny_model("siamrpn"), tmp_path / "rpn.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrackerError, match="cannot read checkpoint"):
        build_tracker("siamfc", checkpoint=bad)
    with pytest.raises(TrackerError, match="not found"):
        build_tracker("siamfc", checkpoint=tmp_path / "missing.pth")
    save_atomic({"config": {"train": {}}, "model": {}}, tmp_path / "cls.pth")
    with pytest.raises(TrackerError, match="no 'model' section"):
        build_tracker("siamfc", checkpoint=tmp_path / "cls.pth")
    state = model.state_dict()
    state.pop("head_fc.bias")
    save_atomic({"config": {"model": to_dict(model.config)}, "model": state}, tmp_path / "partial.pth")
    with pytest.raises(TrackerError, match="do not match"):
        build_tracker("siamfc", checkpoint=tmp_path / "partial.pth")
    with pytest.raises(TrackerError, match="unknown device"):
        resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(TrackerError, match="CUDA is not available"):
            resolve_device("cuda")


def test_tracker_classes_are_subclass_friendly():
    """The hooks RE-SiamNet-style trackers override exist and are used by update()."""
    calls = []

    class Recording(SiamFCTracker):
        def compute_responses(self, search):
            calls.append(search.shape)
            return super().compute_responses(search)

    trk = Recording(tiny_model(), device="cpu", scale_num=5)
    frames, boxes = moving_sequence(n=3)
    run(trk, frames, boxes[0])
    assert calls == [(5, 3, 255, 255)] * 2
    for hook in ("template_crops", "build_template", "compute_responses", "locate_peak", "apply_peak",
                 "current_box", "allowed_orientations"):
        assert callable(getattr(SiamFCTracker, hook))


def test_ridge_template_fit_suppresses_a_look_alike_and_keeps_the_target():
    """ridge_lambda: the first-frame fit lowers a near-copy of the target (a distractor the exemplar
    alone scores higher, with this untrained network) below the target, tracks, and
    tends to the exemplar's own template as the regularisation grows."""
    rng = np.random.default_rng(3)
    frame = background(rng, 160, 120)
    target = blocky_target(rng, 24)
    look_alike = target.copy()
    look_alike[:8, :8] = 255 - look_alike[:8, :8]          # one corner block differs
    frame[48:72, 40:64] = target                            # box (40, 48, 24, 24), centre (52, 60)
    frame[48:72, 70:94] = look_alike                        # 30 px to its right
    model = tiny_model()

    def first_frame_response(trk):
        # a search crop centred between the two, both inside its response map
        crop = crop_many(frame, trk.center + [15, 0], [trk.x_sz], trk.instance_size, trk.avg_color)
        return trk.compute_responses(trk._tensor(crop))[0, 0]

    def cells(trk):
        r = trk.score_size
        shift = int(round(15 * trk.instance_size / trk.x_sz / trk.stride))
        return r, r // 2 - shift, r // 2 + shift

    def contrast(response, trk):
        r, target_col, look_alike_col = cells(trk)
        rows = slice(r // 2 - 1, r // 2 + 2)
        at = response[rows, target_col - 1:target_col + 2].max()
        there = response[rows, look_alike_col - 1:look_alike_col + 2].max()
        floor = np.median(response)
        return (there - floor) / (at - floor)

    plain = build_tracker("siamfc", model=model, device="cpu")
    plain.init(frame, [40, 48, 24, 24])
    fitted = build_tracker("siamfc", model=model, device="cpu", ridge_lambda=0.1)
    fitted.init(frame, [40, 48, 24, 24])
    assert fitted.template.shape == plain.template.shape and fitted.template.dtype == plain.template.dtype
    before, after = first_frame_response(plain), first_frame_response(fitted)
    r, target_col, _ = cells(fitted)
    row, col = np.unravel_index(after.argmax(), after.shape)
    assert abs(row - r // 2) <= 1 and abs(col - target_col) <= 1
    # the exemplar's template scores the look-alike above the target; the fitted one does not
    assert contrast(before, plain) > 1.0 > contrast(after, fitted)
    loose = build_tracker("siamfc", model=model, device="cpu", ridge_lambda=1e9)
    loose.init(frame, [40, 48, 24, 24])
    assert torch.allclose(loose.template, plain.template, rtol=1e-4, atol=1e-6)

    frames, boxes = moving_sequence(0, n=12, step=(4, 3))
    iou = box_iou(run(build_tracker("siamfc", model=model, device="cpu", ridge_lambda=1.0), frames, boxes[0]), boxes)
    assert iou.mean() > 0.75 and iou[-1] > 0.5, iou
    for bad, match in (({"ridge_lambda": -1.0}, "ridge_lambda"), ({"ridge_lambda": float("inf")}, "ridge_lambda"),
                       ({"ridge_lambda": 1.0, "ridge_sigma": 0.0}, "ridge_sigma"),
                       ({"ridge_lambda": 1.0, "orientations": 8}, "orientations")):
        with pytest.raises(TrackerError, match=match):
            build_tracker("siamfc", model=model, device="cpu", **bad)


def test_larger_search_region_reaches_a_target_the_default_crop_cannot():
    """instance_size: a larger search crop at the same pixel scale (a larger response map) finds a
    target that jumped beyond the default crop's reach; the model's own size changes nothing."""
    rng = np.random.default_rng(0)
    first = background(rng, 192, 96)
    target = blocky_target(rng, 24)
    second = first.copy()
    first[36:60, 40:64] = target
    second[36:60, 74:98] = target                  # 34 px to the right: the default map reaches ~24 px
    model = tiny_model()
    truth = np.array([[74, 36, 24, 24]], dtype=np.float64)

    def after_jump(**options):
        trk = build_tracker("siamfc", model=model, device="cpu", **options)
        trk.init(first, [40, 36, 24, 24])
        return trk, box_iou(trk.update(second)[None], truth)[0]

    default, iou_default = after_jump()
    wide, iou_wide = after_jump(instance_size=351)
    assert (default.instance_size, default.score_size) == (255, 17)
    assert (wide.instance_size, wide.score_size) == (351, 29) and wide.window.shape == (29 * 16, 29 * 16)
    assert wide.x_init / default.x_init == pytest.approx(351 / 255)      # same scale, more context
    assert iou_default < 0.5 < 0.8 < iou_wide, (iou_default, iou_wide)
    frames, boxes = moving_sequence(n=6)
    assert np.array_equal(run(build_tracker("siamfc", model=model, device="cpu", instance_size=255), frames, boxes[0]),
                          run(build_tracker("siamfc", model=model, device="cpu"), frames, boxes[0]))
    for bad in (260, -8, 1.5, True, 255 - 18 * 8):
        with pytest.raises(TrackerError, match="instance_size"):
            build_tracker("siamfc", model=model, device="cpu", instance_size=bad)


def test_motion_prior_follows_a_target_that_outruns_the_search_region():
    """motion_gain: the search is centred ahead along the smoothed velocity, so a target whose
    per-frame move grows beyond the response map's reach (12, 24, 36, 48 px) is still followed;
    gain 0 is the default search, bit for bit; out-of-range values are rejected."""
    rng = np.random.default_rng(1)
    scene = background(rng, 288, 96)
    target = blocky_target(rng, 24)
    xs = [16, 28, 52, 88, 136]
    frames = []
    for x in xs:
        frame = scene.copy()
        frame[36:60, x:x + 24] = target
        frames.append(frame)
    truth = np.array([[xs[-1], 36, 24, 24]], dtype=np.float64)
    model = tiny_model()

    def final_iou(**options):
        trk = build_tracker("siamfc", model=model, device="cpu", **options)
        trk.init(frames[0], [xs[0], 36, 24, 24])
        for frame in frames[1:]:
            box = trk.update(frame)
        return trk, box_iou(box[None], truth)[0]

    _, iou_fixed = final_iou()
    led, iou_led = final_iou(motion_gain=1.0, motion_lr=1.0)
    assert iou_fixed < 0.3 < 0.7 < iou_led, (iou_fixed, iou_led)
    assert led.velocity[0] > 30 and abs(led.velocity[1]) < 4            # it learnt the rightward speed
    seq, boxes = moving_sequence(n=6)
    assert np.array_equal(run(build_tracker("siamfc", model=model, device="cpu", motion_gain=0.0), seq, boxes[0]),
                          run(build_tracker("siamfc", model=model, device="cpu"), seq, boxes[0]))
    for name, bad in (("motion_gain", 1.5), ("motion_gain", -0.1), ("motion_lr", 2.0)):
        with pytest.raises(TrackerError, match=name):
            build_tracker("siamfc", model=model, device="cpu", **{name: bad})


def test_the_default_is_an_ien_network_with_a_bundled_plain_twin():
    """The project's promise: the default tracker is IEN-regularised, and its plain twin (same data,
    budget and seed) ships beside it, both with a config that says so."""
    from common.checkpoints import load_checkpoint
    from tracker import DEFAULT_TRACKER, WEIGHTS_DIR
    from tracker.registry import tracker_spec

    spec = tracker_spec(DEFAULT_TRACKER)
    twin = tracker_spec(spec.twin)
    assert spec.network == "ien" and twin.network == "plain" and spec.baseline is None
    ien, plain = (load_checkpoint(WEIGHTS_DIR / s.weights)["config"] for s in (spec, twin))
    assert ien["train"]["beta"] > 0 and plain["train"]["beta"] == 0
    for key in ("seed", "epochs", "pairs_per_epoch", "batch_size", "lr", "init_from", "distill_weight"):
        assert ien["train"][key] == plain["train"][key], key
    assert ien["data"] == plain["data"] and ien["model"] == plain["model"]
