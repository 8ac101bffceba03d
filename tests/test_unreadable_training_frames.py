"""Truncated or corrupt frames in tracker training (issue 15): the reduced-resolution JPEG fast path
of training/tracking/pairs.py stays, a JPEG cut in half (which cv2.imread accepts, grey-filled) is detected,
the pair samplers skip it and count it, training warns once per file and its log sums the skipped
frames. JPEGs are written (and cut) by the tests."""
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import write_tiny_siamfc_toml

from data import DatasetError, load_sequences
from data.generated import generate_dataset
from training.tracking.pairs import MixedPairs, PairSampler, UnreadableFrame, _read_rgb, report_skipped_frames


def _jpeg(path: Path, size=(320, 240), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), (0, 0), 3)
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_the_reduced_resolution_fast_path_is_kept(tmp_path):
    path = _jpeg(tmp_path / "a.jpg")
    image, factor = _read_rgb(str(path), crop_side=600.0, out_size=255)      # 600 / 2 >= 255
    assert factor == 2
    reference = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_2), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(image, reference)
    image, factor = _read_rgb(str(path), crop_side=100.0, out_size=127)
    assert factor == 1
    np.testing.assert_array_equal(image, cv2.imread(str(path))[:, :, ::-1])


def test_a_truncated_jpeg_is_detected_and_names_the_file(tmp_path):
    path = _jpeg(tmp_path / "cut.jpg")
    _cut_in_half(path)
    assert cv2.imread(str(path)) is not None            # what the old decoder silently accepted
    for crop_side in (100.0, 600.0):                     # full and reduced resolution
        with pytest.raises(UnreadableFrame, match="truncated") as caught:
            _read_rgb(str(path), crop_side, 127)
        assert caught.value.path == str(path) and str(path) in str(caught.value)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableFrame, match="empty"):
        _read_rgb(str(empty), 100.0, 127)
    with pytest.raises(DatasetError, match="missing.jpg"):
        _read_rgb(str(tmp_path / "missing.jpg"), 100.0, 127)


def test_padding_after_the_end_marker_is_not_truncation(tmp_path):
    path = _jpeg(tmp_path / "padded.jpg")
    complete = cv2.imread(str(path))[:, :, ::-1]
    path.write_bytes(path.read_bytes() + b"\x00" * 64)   # some cameras pad their files
    image, factor = _read_rgb(str(path), 600.0, 255)
    assert factor == 1 and image.shape == complete.shape
    assert np.abs(image.astype(int) - complete).mean() < 1.0     # Pillow's decode of the same data


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A tiny GOT-10k-layout dataset from the generator (3 sequences of 8 real JPEG frames)."""
    return generate_dataset(tmp_path_factory.mktemp("frames"), 3, seed=7, num_frames=8, frame_size=(200, 160))


def _items(sampler):
    sampler.set_epoch(0)
    return [sampler[i] for i in range(len(sampler))]


def test_the_sampler_skips_a_truncated_frame_and_training_warns_once(tmp_path, dataset):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    bad = sorted(broken.glob("*/00000003.jpg"))[0]
    _cut_in_half(bad)
    clean = PairSampler(load_sequences(dataset), pairs_per_epoch=48, frame_range=3, seed=1)
    sampler = PairSampler(load_sequences(broken), pairs_per_epoch=48, frame_range=3, seed=1)
    items = _items(sampler)
    skipped = [int(item["skipped_frames"]) for item in items]
    assert sum(skipped) >= 2, "the test needs pairs that draw the cut frame more than once"
    for item, n in zip(items, skipped):
        ids = item["skipped_ids"][item["skipped_ids"] >= 0].tolist()
        assert len(ids) == n and {sampler.frame_path(i) for i in ids} <= {str(bad)}
    stream, reported = io.StringIO(), set()
    batches = [torch.utils.data.default_collate(items[i:i + 8]) for i in range(0, len(items), 8)]
    assert sum(report_skipped_frames(batch, reported, sampler, stream) for batch in batches) == sum(skipped)
    lines = stream.getvalue().splitlines()
    assert lines == [f"warning: skipping training frame {bad}: " + lines[0].split(": ", 2)[2]]   # once per file
    assert "truncated" in lines[0] and len(reported) == 1
    # in a mix of sources the ids stay unique: the clean source's frames come first
    mixed = MixedPairs([clean, sampler], [1.0, 1.0], 48, seed=3)
    mixed.set_epoch(0)
    ids = {i for k in range(48) for i in mixed[k]["skipped_ids"].tolist() if i >= 0}
    assert ids and {mixed.frame_path(i) for i in ids} == {str(bad)} and min(ids) >= clean.num_frames
    # items that met no bad frame are exactly the ones of the intact dataset (the first draw is unchanged)
    reference = _items(clean)
    for item, ref, n in zip(items, reference, skipped):
        assert int(ref["skipped_frames"]) == 0
        if n == 0:
            assert torch.equal(item["x"], ref["x"]) and torch.equal(item["box_x"], ref["box_x"])
    # and a resumed run (a new sampler) skips the same frames
    again = PairSampler(load_sequences(broken), pairs_per_epoch=48, frame_range=3, seed=1)
    assert [int(item["skipped_frames"]) for item in _items(again)] == skipped


def test_a_dataset_of_unreadable_frames_is_one_clear_error(tmp_path, dataset):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    for frame in broken.glob("*/*.jpg"):
        _cut_in_half(frame)
    sampler = PairSampler(load_sequences(broken), pairs_per_epoch=2, frame_range=3, seed=1)
    with pytest.raises(DatasetError, match="cannot read images for training pair 0: 32 draws") as caught:
        sampler[0]
    assert str(broken) in str(caught.value)


def test_the_training_log_counts_skipped_frames(capsys, tmp_path, dataset):
    from tools import train_tracker as tool

    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    for frame in broken.glob("*/0000000[5-8].jpg"):
        _cut_in_half(frame)
    config = write_tiny_siamfc_toml(tmp_path / "c.toml", broken, "log_every = 1", epochs=2)
    rc = tool.main(["--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    warned = [line for line in err.splitlines() if line.startswith("warning: skipping training frame")]
    files = [line.split(": ")[1].removeprefix("skipping training frame ") for line in warned]
    assert 1 <= len(files) == len(set(files)) <= 12 and all(f.startswith(str(broken)) for f in files)   # once per file
    for epoch in history["epochs"]:
        assert f'"skipped_frames": {epoch["skipped_frames"]}' in err            # the epoch line shows the total
    steps = [row.get("skipped_frames", 0) for row in history["steps"]]
    assert sum(epoch["skipped_frames"] for epoch in history["epochs"]) == sum(steps) >= len(files)
    assert "Traceback" not in err
