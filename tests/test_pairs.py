"""training/tracking/pairs.py on a tiny GOT-10k-layout folder written here (a bright bar on a dark, noisy background)."""
import math
import warnings

import cv2
import numpy as np
import pytest
import torch

from data import DatasetError, load_sequences
from training.tracking.pairs import PairSampler, valid_frames

W, H, N = 200, 150, 16
BAR = (46.0, 22.0)           # target rectangle (width, height) when upright


def _bar_polygon(centre, angle_deg):
    """Corners (continuous coords) of the target rectangle rotated counter-clockwise on screen."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * np.array(BAR) / 2
    return np.asarray(centre) + half @ rot.T


def _write_sequence(folder, centres, angles, *, write_angles, absent=None, size_scale=1.0, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    boxes = []
    for t, (c, a) in enumerate(zip(centres, angles)):
        img = rng.integers(0, 50, (H, W, 3), dtype=np.uint8)
        poly = _bar_polygon(c, a) * size_scale + np.asarray(c) * (1 - size_scale)
        if absent is None or not absent[t]:
            cv2.fillPoly(img, [np.round((poly - 0.5) * 16).astype(np.int32)], (230, 220, 210), cv2.LINE_AA, 4)
        cv2.imwrite(str(folder / f"{t + 1:08d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        lo, hi = poly.min(0), poly.max(0)
        boxes.append([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
    np.savetxt(folder / "groundtruth.txt", np.array(boxes), fmt="%.3f", delimiter=",")
    if absent is not None:
        np.savetxt(folder / "absence.label", absent.astype(int), fmt="%d")
        np.savetxt(folder / "cover.label", np.where(absent, 0, 8), fmt="%d")
    if write_angles:
        np.savetxt(folder / "angle.txt", np.asarray(angles), fmt="%.4f")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("got10k") / "train"
    t = np.arange(N)
    rotating = np.stack([50 + 6 * t, 60 + 2 * t], axis=1)
    absent = np.zeros(N, bool)
    absent[3] = True
    _write_sequence(root / "rot", rotating, 4.0 * t, write_angles=True, absent=absent, seed=1)
    _write_sequence(root / "still", np.stack([150 - 5 * t, 80 + 0 * t], 1), np.zeros(N), write_angles=False, seed=2)
    _write_sequence(root / "tiny", np.stack([100 + 0 * t, 70 + 0 * t], 1), np.zeros(N), write_angles=False,
                    size_scale=0.2, seed=3)          # target 9x4 px: fails the SiamFC size filter
    (root / "list.txt").write_text("rot\nstill\ntiny\n")
    return load_sequences(root)


def _bright_blob(img_chw, threshold=140.0):
    mask = img_chw.numpy().mean(axis=0) > threshold
    ys, xs = np.nonzero(mask)
    return mask, xs, ys


def _orientation(mask):
    """Major-axis direction of a blob, degrees counter-clockwise on screen, in [0, 180)."""
    m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    theta = 0.5 * math.degrees(math.atan2(2 * m["mu11"], m["mu20"] - m["mu02"]))
    return (-theta) % 180


def _sampler(dataset, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PairSampler(dataset, **kw)


def test_filter_drops_bad_sequence_with_warning_and_errors_when_none_left(dataset):
    with pytest.warns(UserWarning, match=r"dropped 1 of 3 sequences.*tiny"):
        sampler = PairSampler(dataset, pairs_per_epoch=8)
    assert [s.name for s in sampler.sequences] == ["rot", "still"]
    with pytest.raises(DatasetError, match="none of the 1 sequences"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PairSampler([s for s in dataset if s.name == "tiny"])
    boxes = np.array([[0, 0, 40, 20], [0, 0, 40, 5], [0, 0, 200, 20], [0, 0, 70, 20], [0, 0, np.nan, 20]])
    assert list(valid_frames(boxes, (300, 300))) == [0, 3]
    assert list(valid_frames(boxes[:1].repeat(3, 0), (300, 300), absent=[0, 1, 0], cover=[8, 8, 2])) == [0]


def test_item_shapes_dtypes_and_centred_template(dataset):
    sampler = _sampler(dataset, pairs_per_epoch=12, augment=False)
    assert len(sampler) == 12
    for i in range(6):
        item = sampler[i]
        assert item["z"].shape == (3, 127, 127) and item["x"].shape == (3, 255, 255)
        assert item["z"].dtype == torch.float32 and item["x"].dtype == torch.float32
        assert 0 <= item["z"].min() and item["x"].max() <= 255
        for key in ("box_z", "box_x"):
            assert item[key].shape == (4,) and item[key].dtype == torch.float32
        assert item["angle_x"].shape == () and item["angle_x"].dtype == torch.float32
        box_z = item["box_z"].numpy()
        np.testing.assert_allclose((box_z[:2] + box_z[2:]) / 2, [63.5, 63.5], atol=1e-4)
        np.testing.assert_allclose((item["box_x"][:2] + item["box_x"][2:]).numpy() / 2, [127.5, 127.5], atol=1e-4)
        # the drawn bar really is at the centre of z, inside box_z
        _, xs, ys = _bright_blob(item["z"])
        assert abs(xs.mean() + 0.5 - 63.5) < 1.5 and abs(ys.mean() + 0.5 - 63.5) < 1.5


@pytest.mark.parametrize("augment,max_rotation", [(False, 0.0), (True, 0.0), (True, 60.0)])
def test_box_x_matches_where_the_target_is_drawn(dataset, augment, max_rotation):
    sampler = _sampler(dataset, pairs_per_epoch=40, augment=augment, max_rotation_deg=max_rotation,
                       gray_prob=0.0, blur_prob=0.0, max_shift=12.0, seed=3)
    angle_checks, centre_errors = 0, []
    for i in range(12):
        item = sampler[i]
        mask, xs, ys = _bright_blob(item["x"])
        # drawn extent: thresholded anti-aliased edges, about 2 crop px per image px here
        drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
        box_x = item["box_x"].numpy()
        centre_errors.append((drawn[:2] + drawn[2:]) / 2 - (box_x[:2] + box_x[2:]) / 2)
        assert np.abs(centre_errors[-1]).max() < 1.5
        if max_rotation == 0:
            np.testing.assert_allclose(drawn, box_x, atol=3.0)
        # rotated: box_x bounds the ellipse inscribed in the turned ground-truth box, not this bar
        # (test_rotated_box_x_bounds_the_turned_target_ellipse)
        e, z_frame, x_frame, _ = sampler.sample_frames(i)
        if sampler.entries[e].seq.name == "rot" or max_rotation > 0:
            z_mask, _, _ = _bright_blob(item["z"])
            measured = (_orientation(mask) - _orientation(z_mask)) % 180
            expected = float(item["angle_x"]) % 180
            assert min(abs(measured - expected), 180 - abs(measured - expected)) < 4.0, (i, measured, expected)
            angle_checks += 1
        if not augment and sampler.entries[e].seq.name == "rot":
            assert float(item["angle_x"]) == pytest.approx(4.0 * (x_frame - z_frame), abs=1e-3)
    assert angle_checks >= 3
    assert np.abs(np.mean(centre_errors, axis=0)).max() < 0.5       # no systematic offset


def test_frames_respect_range_and_labels(dataset):
    sampler = _sampler(dataset, pairs_per_epoch=300, frame_range=3)
    for i in range(300):
        e, z, x, _ = sampler.sample_frames(i)
        assert z != x and abs(z - x) <= 3
        if sampler.entries[e].seq.name == "rot":
            assert 3 not in (z, x)                      # the frame labelled absent


def test_sampling_is_a_function_of_seed_epoch_index(dataset):
    a = _sampler(dataset, pairs_per_epoch=20, seed=5, max_rotation_deg=30)
    b = _sampler(dataset, pairs_per_epoch=20, seed=5, max_rotation_deg=30)
    a.set_epoch(2)
    b.set_epoch(2)
    order = [7, 3, 7]
    items_a = [a[i] for i in order]
    items_b = [b[i] for i in reversed(order)][::-1]
    for ia, ib in zip(items_a, items_b):
        for key in ia:
            assert torch.equal(ia[key], ib[key])
    assert torch.equal(items_a[0]["x"], items_a[2]["x"])
    b.set_epoch(3)
    assert any(not torch.equal(a[i]["x"], b[i]["x"]) for i in range(5))
    c = _sampler(dataset, pairs_per_epoch=20, seed=6, max_rotation_deg=30)
    c.set_epoch(2)
    assert any(not torch.equal(a[i]["x"], c[i]["x"]) for i in range(5))


def test_dataloader_workers_give_the_same_batches(dataset):
    sampler = _sampler(dataset, pairs_per_epoch=8, seed=1)
    sampler.set_epoch(4)
    single = next(iter(torch.utils.data.DataLoader(sampler, batch_size=8, num_workers=0)))
    multi = next(iter(torch.utils.data.DataLoader(sampler, batch_size=8, num_workers=2)))
    assert single["x"].shape == (8, 3, 255, 255)
    for key in single:
        assert torch.equal(single[key], multi[key])


def test_bad_arguments_are_rejected(dataset):
    with pytest.raises(ValueError):
        _sampler(dataset, pairs_per_epoch=0)
    with pytest.raises(ValueError):
        _sampler(dataset, exemplar_size=300, instance_size=255)
    with pytest.raises(DatasetError):
        PairSampler([])
    with pytest.raises(IndexError):
        _sampler(dataset, pairs_per_epoch=2)[2]


@pytest.mark.parametrize("seed", range(4))
def test_rotated_box_x_bounds_the_turned_target_ellipse(tmp_path, seed):
    """A round target keeps its size in a rotated search crop: box_x bounds the drawn, turned ellipse
    (the corners of the turned box would give a box up to 41% wider, and SiamRPN would learn to grow)."""
    from tracker.crops import context_size

    img = np.full((240, 320, 3), 20, np.uint8)
    box = (130.0, 95.0, 60.0, 40.0)                       # x, y, w, h; the ellipse inscribed in it is drawn
    cv2.ellipse(img, ((160.0, 115.0), (60.0, 40.0), 0.0), (230, 220, 210), -1, cv2.LINE_AA)
    cv2.imwrite(str(tmp_path / "f.png"), img)
    sampler = PairSampler.__new__(PairSampler)            # make_pair reads only these settings
    sampler.augment, sampler.max_rotation_deg, sampler.max_stretch, sampler.max_shift = False, 90.0, 0.0, 0.0
    sampler.exemplar_size, sampler.instance_size, sampler.context = 127, 255, 0.5
    sampler.gray_prob, sampler.color_jitter, sampler.blur_prob = 0.0, 0.0, 0.0
    sampler.upright_twin = False
    item = sampler.make_pair(np.random.default_rng(seed), str(tmp_path / "f.png"), box, str(tmp_path / "f.png"), box)
    c, s = abs(np.cos(np.radians(float(item["angle_x"])))), abs(np.sin(np.radians(float(item["angle_x"]))))
    assert min(c, s) > 0.15                                 # a real turn, not near a multiple of 90 degrees
    scale = 127 / context_size(60.0, 40.0, 0.5)             # crop px per image px (exemplar and search alike)
    box_x = item["box_x"].numpy()
    np.testing.assert_allclose(box_x[2:] - box_x[:2], [np.hypot(60 * c, 40 * s) * scale,
                                                       np.hypot(60 * s, 40 * c) * scale], rtol=1e-4)
    _, xs, ys = _bright_blob(item["x"])
    drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
    np.testing.assert_allclose(box_x, drawn, atol=2.5)
    corners_w = (60 * c + 40 * s) * scale                  # the old rule: clearly wider than what is drawn
    assert corners_w - (drawn[2] - drawn[0]) > 5
