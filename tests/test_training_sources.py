"""Real-footage training sources: photo pairs (boxes checked by rotating back), frame_stride of
subsampled videos, source mixing, the validation split by source video, and the [[data.sources]]
config. Every file is written here, in the real formats (OTB folders with meta.json, boxes.csv)."""
import csv
import json
import math

import cv2
import numpy as np
import pytest
import torch

from common.config import ConfigError
from data import DatasetError, load_sequences, split_by_source
from data.photos import load_photos
from training.tracking import RunConfig, load_pairs
from training.tracking.pairs import FrameFilter, MixedPairs, PairSampler, PhotoPairSampler

PHOTO_W, PHOTO_H = 240, 180
OBJ_W, OBJ_H = 40, 16          # the photographed objects: bright bars


def _write_photos(root, objects_per_photo=(1, 3), seed=0):
    """A photo group in the real layout: images/*.jpg and boxes.csv (several bars per photo)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for p, count in enumerate(objects_per_photo):
        img = rng.integers(0, 60, (PHOTO_H, PHOTO_W, 3), dtype=np.uint8)
        for k in range(count):
            x, y = 20 + 70 * k, 30 + 40 * (k % 2)
            img[y:y + OBJ_H, x:x + OBJ_W] = (230, 220, 200)
            rows.append([f"photo{p}.jpg", x, y, OBJ_W, OBJ_H, "bar", PHOTO_W, PHOTO_H])
        cv2.imwrite(str(root / "images" / f"photo{p}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    with open(root / "boxes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "x", "y", "w", "h", "label", "img_w", "img_h"])
        w.writerows(rows)
    return root


def _write_otb_sequence(folder, n, stride, source=None, seed=0):
    """An OTB-layout sequence with meta.json: a bar moving 2 px per stored frame."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True)
    boxes = []
    for t in range(n):
        img = rng.integers(0, 50, (120, 160, 3), dtype=np.uint8)
        x, y = 30 + 2 * t, 50
        img[y:y + 20, x:x + 30] = 220
        cv2.imwrite(str(folder / "img" / f"{t + 1:04d}.jpg"), img)
        boxes.append([x, y, 30, 20])
    np.savetxt(folder / "groundtruth_rect.txt", boxes, fmt="%d", delimiter=",")
    meta = {"frames": n, "frame_stride": stride, "scale": 1.0, "name": folder.name}
    if source is not None:
        meta.update(source_group=source[0], source_sequence=source[1])
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def photos_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    _write_photos(root / "bars", (1, 3), seed=1)
    _write_photos(root / "more", (2,), seed=2)
    return root


def test_photos_load_from_a_group_or_a_folder_of_groups(photos_root):
    photos = load_photos(photos_root)
    assert len(photos) == 3 and sorted(len(p.boxes) for p in photos) == [1, 2, 3]
    assert all(p.size == (PHOTO_W, PHOTO_H) for p in photos)
    assert len(load_photos(photos_root / "bars")) == 2


def test_bad_photo_folders_give_one_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no boxes.csv"):
        load_photos(tmp_path)
    group = _write_photos(tmp_path / "g", (1,))
    (group / "boxes.csv").write_text("file,x,y,w,h,label,img_w,img_h\nphoto0.jpg,1,2,x,4,bar,10,10\n")
    with pytest.raises(DatasetError, match=r"boxes.csv:2: bad row"):
        load_photos(group)
    (group / "boxes.csv").write_text("file,x,y,w,h\nphoto0.jpg,1,2,3,4\n")
    with pytest.raises(DatasetError, match="expected the columns"):
        load_photos(group)
    (group / "boxes.csv").write_text("file,x,y,w,h,label,img_w,img_h\nmissing.jpg,1,2,30,40,bar,240,180\n")
    with pytest.raises(DatasetError, match="not found"):
        load_photos(group)


def test_photo_pair_boxes_rotate_back_onto_the_object(photos_root):
    """The search crop's target, rotated back by angle_x about box_x's centre, is an upright
    OBJ_W x OBJ_H bar (scaled like the crop) at that centre, and the template is centred."""
    sampler = PhotoPairSampler(load_photos(photos_root), pairs_per_epoch=30, seed=4, gray_prob=0.0,
                               blur_prob=0.0, color_jitter=0.0, max_stretch=0.0, max_shift=40.0,
                               frame_filter=FrameFilter(min_side=8))
    angles = []
    for i in range(12):
        item = sampler[i]
        box_z = item["box_z"].numpy()
        np.testing.assert_allclose((box_z[:2] + box_z[2:]) / 2, [63.5, 63.5], atol=1e-4)
        x = item["x"].numpy().mean(axis=0)
        box_x = item["box_x"].numpy()
        centre = (box_x[:2] + box_x[2:]) / 2
        angle = float(item["angle_x"])
        angles.append(angle)
        # undo the rotation: content was turned CCW on screen by `angle`, so turn it back
        m = cv2.getRotationMatrix2D((float(centre[0] - 0.5), float(centre[1] - 0.5)), -angle, 1.0)
        back = cv2.warpAffine(x.astype(np.float32), m, (255, 255), flags=cv2.INTER_LINEAR)
        # the target: the bright component that covers the crop position of box_x's centre
        n, labels = cv2.connectedComponents((back > 140).astype(np.uint8))
        label = labels[int(centre[1]), int(centre[0])]
        assert label > 0, (i, angle)
        ys, xs = np.nonzero(labels == label)
        drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
        scale = (box_z[2] - box_z[0]) / OBJ_W                    # z and x share the scale (no stretch)
        expected = np.concatenate([centre - scale * np.array([OBJ_W, OBJ_H]) / 2,
                                   centre + scale * np.array([OBJ_W, OBJ_H]) / 2])
        np.testing.assert_allclose(drawn, expected, atol=3.0)
    assert np.ptp(angles) > 90                                   # any rotation, not just small ones


def test_photo_sampler_keeps_other_objects_as_distractors(photos_root):
    sampler = PhotoPairSampler(load_photos(photos_root / "bars"), pairs_per_epoch=40, seed=0, max_rotation_deg=0,
                               max_shift=0, max_stretch=0, frame_filter=FrameFilter(min_side=8))
    counts = []
    for i in range(20):
        bright = (sampler[i]["x"].numpy().mean(axis=0) > 140).astype(np.uint8)
        counts.append(cv2.connectedComponents(bright)[0] - 1)
    assert max(counts) >= 2                      # neighbouring bars of the same photo are in the crop


def test_frame_stride_limits_the_stored_frame_gap(tmp_path):
    _write_otb_sequence(tmp_path / "dense", 12, stride=1)
    _write_otb_sequence(tmp_path / "sparse", 12, stride=5)
    sequences = load_sequences(tmp_path, layout="otb")
    assert {s.name: s.frame_stride for s in sequences} == {"dense": 1, "sparse": 5}
    sampler = PairSampler(sequences, pairs_per_epoch=400, frame_range=10, frame_filter=FrameFilter(min_side=8))
    gaps = {"dense": set(), "sparse": set()}
    for i in range(400):
        e, z, x, _ = sampler.sample_frames(i)
        gaps[sampler.entries[e].seq.name].add(abs(z - x))
    assert max(gaps["dense"]) == 10 and max(gaps["sparse"]) == 2      # 10 source frames = 2 stored ones


def test_bad_meta_json_is_a_dataset_error(tmp_path):
    _write_otb_sequence(tmp_path / "s", 3, stride=1)
    (tmp_path / "s" / "meta.json").write_text('{"frame_stride": 0}')
    with pytest.raises(DatasetError, match="frame_stride must be a positive integer"):
        load_sequences(tmp_path, layout="otb")


def test_validation_split_keeps_each_source_video_on_one_side(tmp_path):
    for k in range(10):
        _write_otb_sequence(tmp_path / f"v{k}a", 2, 1, source=("grp", f"video{k}"))
        _write_otb_sequence(tmp_path / f"v{k}b", 2, 1, source=("grp", f"video{k}"))
    sequences = load_sequences(tmp_path, layout="otb")
    kept, held = split_by_source(sequences, 0.2, seed=3)
    assert len(held) == 4 and len(kept) == 16                 # 2 of 10 videos, both of their clips
    assert {s.source for s in held}.isdisjoint({s.source for s in kept})
    again, _ = split_by_source(list(reversed(sequences)), 0.2, seed=3)
    assert {s.name for s in again} == {s.name for s in kept}   # order does not matter
    chosen = {frozenset(s.source for s in split_by_source(sequences, 0.2, seed=k)[1]) for k in range(6)}
    assert len(chosen) > 1                                     # the seed decides which videos
    assert split_by_source(sequences, 0.0)[1] == []
    with pytest.raises(ValueError):
        split_by_source(sequences, 1.0)


class _Numbered(torch.utils.data.Dataset):
    def __init__(self, tag, n):
        self.tag, self.n, self.epoch = tag, n, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"tag": self.tag, "index": i, "epoch": self.epoch}


def test_mixing_follows_the_weights_and_is_reproducible():
    mixed = MixedPairs([_Numbered("a", 3000), _Numbered("b", 3000), _Numbered("c", 3000)], [5, 3, 2], 3000, seed=1)
    mixed.set_epoch(2)
    tags = [mixed[i]["tag"] for i in range(3000)]
    shares = {t: tags.count(t) / 3000 for t in "abc"}
    assert shares == pytest.approx({"a": 0.5, "b": 0.3, "c": 0.2}, abs=0.03)
    assert all(mixed[i]["index"] == i and mixed[i]["epoch"] == 2 for i in range(5))
    again = MixedPairs([_Numbered("a", 3000), _Numbered("b", 3000), _Numbered("c", 3000)], [5, 3, 2], 3000, seed=1)
    again.set_epoch(2)
    assert [again[i]["tag"] for i in range(200)] == tags[:200]
    again.set_epoch(3)
    assert [again[i]["tag"] for i in range(200)] != tags[:200]
    with pytest.raises(ValueError):
        MixedPairs([_Numbered("a", 10)], [0], 10)
    with pytest.raises(ValueError):
        MixedPairs([_Numbered("a", 5)], [1], 10)


def _config(data):
    return RunConfig.from_dict({"model": {"backbone": {"name": "cnnbasic", "group": "R4", "width_mult": 0.25}},
                                "train": {"beta": 0.0, "pairs_per_epoch": 64, "batch_size": 8}, "data": data})


def test_config_sources_build_a_mix_and_reject_unknown_keys(tmp_path, photos_root):
    for k in range(5):
        _write_otb_sequence(tmp_path / "videos" / f"s{k}", 6, 2, source=("g", f"v{k}"))
    data = {"val_fraction": 0.2, "sources": [
        {"kind": "video", "path": str(tmp_path / "videos"), "weight": 2, "min_side": 8, "max_rotation_deg": 30},
        {"kind": "photos", "path": str(photos_root), "weight": 1, "min_side": 8}]}
    config = _config(data)
    pairs = load_pairs(config)
    assert isinstance(pairs, MixedPairs) and len(pairs) == 64
    video, photo = pairs.sources
    assert isinstance(photo, PhotoPairSampler) and photo.max_rotation_deg == 180.0
    assert video.max_rotation_deg == 30.0 and len(video.sequences) == 4        # one video of 5 held out
    item = pairs[0]
    assert item["z"].shape == (3, 127, 127) and item["x"].shape == (3, 255, 255)
    # the config round-trips through a checkpoint's dict
    assert RunConfig.from_dict(config.to_dict()).data.sources == config.data.sources
    with pytest.raises(ConfigError, match="unknown key.*'wieght'"):
        _config({"sources": [{"kind": "photos", "path": "x", "wieght": 1}]})
    with pytest.raises(ConfigError, match="kind must be one of"):
        _config({"sources": [{"kind": "webcam", "path": "x"}]})
    with pytest.raises(ConfigError, match="exclude each other"):
        _config({"path": str(tmp_path), "sources": [{"kind": "generated"}]})
    with pytest.raises(ConfigError, match="needs a path"):
        _config({"sources": [{"kind": "video"}]})


def test_rotation_txt_is_read_counter_clockwise_and_scored_modulo_180(tmp_path):
    from evaluation.experiment import SequenceResult
    from evaluation.report import sequence_scores

    _write_otb_sequence(tmp_path / "fish", 4, 1)
    # clockwise on screen (image atan2, y down), modulo 180: 170 -> 10 deg is a 20 deg clockwise turn
    np.savetxt(tmp_path / "fish" / "rotation.txt", [170.0, 180.0, 5.0, 10.0], fmt="%.1f")
    seq = load_sequences(tmp_path, layout="otb")[0]
    np.testing.assert_allclose(seq.axis_angles, [-170.0, -180.0, -5.0, -10.0])
    # a tracker that reports the turn counter-clockwise as -10, -15 and +160 (= -20 modulo 180)
    result = SequenceResult(seq.boxes.copy(), np.full(4, 0.01), angles=np.array([0.0, -10.0, -15.0, 160.0]))
    errors = sequence_scores(seq, result)["angle_errors"]
    np.testing.assert_allclose(errors, [0.0, 0.0, 0.0], atol=1e-9)
    result.angles = np.array([0.0, 10.0, 15.0, 20.0])        # the wrong way round
    np.testing.assert_allclose(sequence_scores(seq, result)["angle_errors"], [20.0, 30.0, 40.0], atol=1e-9)
    assert math.isfinite(float(np.mean(errors)))
