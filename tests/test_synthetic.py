"""data/synthetic.py and data/generated.py: determinism, exact ground truth, GOT-10k layout, cached defaults, CLI."""
import json
import math

import cv2
import numpy as np
import pytest

from data import generated, load_sequences
from data.generated import default_dataset_spec, generate_dataset, sequence_seed
from data.synthetic import GeneratorInputError, generate_sequence
from tracker.crops import crop_and_resize

CLEAN = dict(lighting=0.0, noise_std=0.0, blur_prob=0.0, num_distractors=(0, 0), occlusion_prob=0.0,
             background_pan=0.0)
SMALL = dict(num_frames=12, frame_size=(200, 150))


def _upright_view(seq, t, side):
    """Frame t rotated back by the ground-truth angle about the ground-truth centre (crop of `side` px),
    and the target's own texture/mask rendered upright at the same scale and centre."""
    centre = seq.polygons[t].reshape(4, 2).mean(0)
    view = crop_and_resize(seq.frames[t], centre, side, side, angle_deg=seq.angles[t]).astype(float)
    h, w = seq.object_alpha.shape
    sprite_side = side * seq.sprite_resolution / seq.scales[t]
    texture = crop_and_resize(seq.object_rgb, (w / 2, h / 2), sprite_side, side, border_value=(0, 0, 0))
    alpha = cv2.warpAffine(seq.object_alpha, _sprite_matrix(w, h, sprite_side, side), (side, side),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return view, texture.astype(float), alpha


def _sprite_matrix(w, h, sprite_side, side):
    s = sprite_side / side
    m = np.array([[s, 0, w / 2 - s * side / 2], [0, s, h / 2 - s * side / 2]])
    m[:, 2] += m[:, :2] @ [0.5, 0.5] - 0.5
    return m


def test_same_seed_same_sequence_and_different_seed_differs():
    a = generate_sequence(7, **SMALL)
    b = generate_sequence(7, **SMALL)
    c = generate_sequence(8, **SMALL)
    assert len(a) == 12 and a.frames[0].shape == (150, 200, 3) and a.frames[0].dtype == np.uint8
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa, fb)
    for key in ("boxes", "angles", "polygons", "absent", "cover"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.frames[5], c.frames[5])
    assert a.boxes.shape == (12, 4) and a.polygons.shape == (12, 8) and a.cover.dtype.kind == "i"


def test_rotation_is_smooth_and_the_static_twin_has_same_content():
    rot = generate_sequence(3, num_frames=60, frame_size=(200, 150))
    static = generate_sequence(3, num_frames=60, frame_size=(200, 150), rotating=False)
    speed = np.abs(np.diff(rot.angles))
    assert rot.angles[0] == 0 and speed.max() <= 4.0 + 1e-9 and np.abs(rot.angles[-1]) > 20
    assert np.all(static.angles == 0)
    np.testing.assert_array_equal(rot.frames[0], static.frames[0])
    np.testing.assert_allclose(rot.centers, static.centers)
    assert not np.array_equal(rot.frames[30], static.frames[30])
    # both directions occur over seeds
    finals = [generate_sequence(s, num_frames=10, frame_size=(64, 48), **CLEAN).angles[-1] for s in range(8)]
    assert min(finals) < 0 < max(finals)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ground_truth_rotated_back_matches_the_drawn_object(seed):
    """Rotating each frame back by the ground-truth angle about the ground-truth centre must show
    the target's own texture upright, at the ground-truth scale (clean rendering: exact up to
    interpolation); a wrong angle or centre must not."""
    seq = generate_sequence(seed, num_frames=40, frame_size=(240, 180), **CLEAN)
    side = 96
    for t in (0, 13, 27, 39):
        view, texture, alpha = _upright_view(seq, t, side)
        inside = cv2.erode((alpha > 0.99).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert inside.sum() > 300
        err = np.abs(view - texture)[inside].mean()
        assert err < 6.0, (t, err)
        # same comparison with the angle off by 20 degrees, or the centre off by 4 px
        off = seq.polygons[t].reshape(4, 2).mean(0)
        wrong = crop_and_resize(seq.frames[t], off, side, side, angle_deg=seq.angles[t] + 20).astype(float)
        shifted = crop_and_resize(seq.frames[t], off + [4, 0], side, side, angle_deg=seq.angles[t]).astype(float)
        assert np.abs(wrong - texture)[inside].mean() > 2 * err + 5
        assert np.abs(shifted - texture)[inside].mean() > 1.5 * err + 3


def test_boxes_are_tight_boxes_of_the_object_inside_its_polygon():
    seq = generate_sequence(4, num_frames=30, frame_size=(240, 180), **CLEAN)
    h, w = seq.object_alpha.shape
    for t in range(0, 30, 5):
        corners = seq.polygons[t].reshape(4, 2)
        # the polygon is the object's rectangle at the current scale and angle
        sides = np.linalg.norm(np.roll(corners, -1, axis=0) - corners, axis=1)
        expected = np.array([w, h, w, h]) * seq.scales[t] / seq.sprite_resolution
        np.testing.assert_allclose(sides, expected, rtol=1e-6)
        edge = corners[1] - corners[0]
        assert math.degrees(math.atan2(-edge[1], edge[0])) == pytest.approx(
            (seq.angles[t] + 180) % 360 - 180, abs=1e-6)
        np.testing.assert_allclose(corners.mean(0), seq.centers[t], atol=1e-6)
        # the axis-aligned box lies within the polygon's bounding box (mask inside the rectangle)
        x, y, bw, bh = seq.boxes[t]
        assert x >= np.floor(corners[:, 0].min()) and x + bw <= np.ceil(corners[:, 0].max())
        assert y >= np.floor(corners[:, 1].min()) and y + bh <= np.ceil(corners[:, 1].max())
    assert np.all(seq.cover == 8) and not seq.absent.any()


def test_occluder_lowers_cover_and_can_hide_the_target():
    seq = generate_sequence(11, num_frames=60, frame_size=(200, 150), num_distractors=(0, 0),
                            occlusion_prob=1.0, full_occlusion_prob=1.0)
    assert seq.absent.any() and (seq.cover == 8).any()
    assert np.all(seq.cover[seq.absent] == 0) and np.all(seq.cover[~seq.absent] >= 1)
    assert not np.isnan(seq.boxes).any()       # the box stays where the object is


def test_dataset_layout_reads_back(tmp_path):
    out = generate_dataset(tmp_path, 2, seed=5, subset="train", num_frames=6, frame_size=(96, 72))
    assert out == tmp_path / "train"
    names = (out / "list.txt").read_text().split()
    assert names == ["SYN_train_00001", "SYN_train_00002"]
    folder = out / names[1]
    expected_files = {"groundtruth.txt", "absence.label", "cover.label", "cut_by_image.label", "angle.txt",
                      "polygon.txt", "meta_info.ini"} | {f"{i:08d}.jpg" for i in range(1, 7)}
    assert {p.name for p in folder.iterdir()} == expected_files
    assert all(len(line.split(",")) == 4 for line in (folder / "groundtruth.txt").read_text().splitlines())
    seqs = load_sequences(out)
    assert [s.name for s in seqs] == names
    # each sequence is the sequence generated with its derived seed
    direct = generate_sequence(sequence_seed(5, 1), num_frames=6, frame_size=(96, 72))
    s = seqs[1]
    np.testing.assert_allclose(s.boxes, direct.boxes, atol=0.006)
    np.testing.assert_allclose(s.angles, direct.angles, atol=6e-4)
    np.testing.assert_allclose(s.polygons, direct.polygons, atol=0.006)
    np.testing.assert_array_equal(s.cover, direct.cover)
    np.testing.assert_array_equal(s.absent, direct.absent)
    frame = cv2.cvtColor(cv2.imread(s.img_files[3]), cv2.COLOR_BGR2RGB)
    assert np.abs(frame.astype(int) - direct.frames[3]).mean() < 4       # JPEG
    meta = dict(line.split(": ", 1) for line in (folder / "meta_info.ini").read_text().splitlines()[1:])
    assert int(meta["seed"]) == sequence_seed(5, 1)
    assert json.loads(meta["options"])["occlusion_prob"] == pytest.approx(0.4)
    # the got10k toolkit reads it too
    from got10k.datasets import GOT10k
    img_files, anno, info = GOT10k(str(tmp_path), subset="train", return_meta=True)[1]
    assert len(img_files) == 6 and anno.shape == (6, 4) and info["cover"].shape == (6,)
    with pytest.raises(GeneratorInputError, match="not empty"):
        generate_dataset(tmp_path, 1, num_frames=2, frame_size=(64, 48))


def test_bad_input_gives_clear_errors(tmp_path):
    with pytest.raises(GeneratorInputError, match="unknown generator option"):
        generate_sequence(0, num_frames=2, no_such_option=1)
    with pytest.raises(GeneratorInputError, match="probability"):
        generate_sequence(0, num_frames=2, occlusion_prob=2.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GeneratorInputError, match="no images"):
        generate_sequence(0, num_frames=2, object_dir=tmp_path / "empty")
    with pytest.raises(GeneratorInputError, match="not found"):
        generate_dataset(tmp_path / "out", 1, object_dir=tmp_path / "missing")
    assert not (tmp_path / "out").exists()


def test_user_object_folder_with_alpha_is_used(tmp_path):
    objects = tmp_path / "objects"
    objects.mkdir()
    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[10:50, 10:70, 3] = 255                # opaque 60x40 rectangle inside a transparent margin
    rgba[15:25, 15:30, :3] = (0, 255, 0)
    cv2.imwrite(str(objects / "thing.png"), rgba)
    seq = generate_sequence(2, num_frames=4, frame_size=(160, 120), object_dir=objects, texture_prob=0.0, **{
        k: v for k, v in CLEAN.items()})
    assert seq.meta["object"].endswith("file-alpha") and seq.meta["object"].startswith("thing.png")
    h, w = seq.object_alpha.shape
    assert abs(w / h - 1.5) < 0.1               # cropped to the opaque part


def test_cached_default_is_atomic_and_reused(tmp_path, monkeypatch):
    spec = default_dataset_spec("train")
    spec.update(num_sequences=2, num_frames=3, frame_size=[64, 48])
    calls = []
    real = generated.generate_dataset

    def failing(*args, **kwargs):
        calls.append(1)
        real(*args, **kwargs)
        raise KeyboardInterrupt       # interrupted after writing

    monkeypatch.setattr(generated, "generate_dataset", failing)
    with pytest.raises(KeyboardInterrupt):
        generated._cached_dataset(tmp_path, spec)
    assert list(tmp_path.iterdir()) == []       # nothing half-written is left behind
    monkeypatch.setattr(generated, "generate_dataset", real)
    path = generated._cached_dataset(tmp_path, spec)
    assert path.name == "train" and (path / "list.txt").is_file()
    assert len(load_sequences(path)) == 2
    stamp = (path / "list.txt").stat().st_mtime_ns
    monkeypatch.setattr(generated, "generate_dataset", failing)   # a cache hit generates nothing
    assert generated._cached_dataset(tmp_path, spec) == path
    assert (path / "list.txt").stat().st_mtime_ns == stamp and len(calls) == 1
    # another option value is another folder
    other = dict(spec, options=dict(spec["options"], occlusion_prob=0.0))
    monkeypatch.setattr(generated, "generate_dataset", real)
    assert generated._cached_dataset(tmp_path, other) != path


def test_default_specs_train_and_test_seeds_are_disjoint():
    train, test = default_dataset_spec("train"), default_dataset_spec("test")
    seeds_train = {sequence_seed(train["seed"], i) for i in range(train["num_sequences"])}
    seeds_test = {sequence_seed(test["seed"], i) for i in range(test["num_sequences"])}
    assert len(seeds_train) == train["num_sequences"] and not seeds_train & seeds_test
    twin = default_dataset_spec("train", rotating=False)
    assert twin["seed"] == train["seed"] and twin["rotating"] is False
    with pytest.raises(GeneratorInputError):
        default_dataset_spec("val")


def test_cli_writes_dataset_and_rejects_bad_input(tmp_path, capsys):
    import tools.generate_sequences as cli

    assert cli.main(["--out", str(tmp_path), "--num", "1", "--frames", "3", "--size", "64x48",
                     "--option", "occlusion_prob=0", "--no-rotation"]) == 0
    seq = load_sequences(tmp_path / "train")[0]
    assert len(seq) == 3 and np.all(seq.angles == 0)
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    for argv in (["--out", str(tmp_path / "x"), "--objects", str(tmp_path / "empty")],
                 ["--out", str(tmp_path / "x"), "--option", "bogus=1"],
                 ["--out", str(tmp_path / "x"), "--num", "0"],
                 ["--out", str(tmp_path), "--num", "1"]):            # not empty
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_replaced_directory_swaps_only_complete_folders(tmp_path):
    from common.atomic import replaced_directory, write_text_atomic

    final = tmp_path / "seq"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with replaced_directory(final) as tmp:
            write_text_atomic(tmp / "new.txt", "new")
            raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["seq"]          # temp removed, old kept
    assert (final / "old.txt").read_text() == "old"
    with replaced_directory(final) as tmp:
        write_text_atomic(tmp / "new.txt", "new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["seq"]
