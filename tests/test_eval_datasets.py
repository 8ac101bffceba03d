"""GOT-10k / OTB loaders on tiny folders written in the real layouts, and bad input."""
import numpy as np
import pytest
from PIL import Image

from data import DatasetError, DatasetWarning, detect_layout, load_sequences


def _frames(folder, n, fmt, start=1):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.new("RGB", (64, 48), (i * 20 % 255, 0, 0)).save(folder / fmt.format(i))


def _boxes(n):
    return np.array([[10 + i, 12, 16, 10] for i in range(n)], float)


def _otb_seq(root, name, n, gt_name="groundtruth_rect.txt", delimiter=",", start=1, gt=None):
    _frames(root / name / "img", n, "{:04d}.jpg", start)
    gt = _boxes(n) if gt is None else gt
    np.savetxt(root / name / gt_name, gt, fmt="%g", delimiter=delimiter)


def _got_seq(subset_dir, name, n, gt=None):
    _frames(subset_dir / name, n, "{:08d}.jpg")
    gt = _boxes(n) if gt is None else gt
    np.savetxt(subset_dir / name / "groundtruth.txt", gt, fmt="%g", delimiter=",")


def test_otb_layout_delimiters_two_targets_and_frame_ranges(tmp_path):
    root = tmp_path / "OTB"
    _otb_seq(root, "Basketball", 4, delimiter="\t")
    _otb_seq(root, "Jogging", 3, gt_name="groundtruth_rect.1.txt")
    np.savetxt(root / "Jogging" / "groundtruth_rect.2.txt", _boxes(3) + 5, fmt="%g",
               delimiter=" ")
    _otb_seq(root, "Human4", 3, gt_name="groundtruth_rect.2.txt")
    (root / "Human4" / "groundtruth_rect.1.txt").write_text("")     # empty, as in OTB
    _otb_seq(root, "Tiger1", 8)                                     # first 5 frames omitted
    # Football1 is annotated on its first 74 frames only: use a 76-frame folder
    _otb_seq(root, "Football1", 76, gt=_boxes(74))
    assert detect_layout(root) == "otb"
    seqs = {s.name: s for s in load_sequences(root)}
    assert sorted(seqs) == ["Basketball", "Football1", "Human4", "Jogging.1", "Jogging.2",
                            "Tiger1"]
    np.testing.assert_array_equal(seqs["Basketball"].boxes, _boxes(4))
    np.testing.assert_array_equal(seqs["Jogging.2"].boxes, _boxes(3) + 5)
    assert seqs["Jogging.1"].img_files == seqs["Jogging.2"].img_files
    assert len(seqs["Tiger1"]) == 3 and seqs["Tiger1"].img_files[0].endswith("0006.jpg")
    np.testing.assert_array_equal(seqs["Tiger1"].boxes, _boxes(8)[5:])
    assert len(seqs["Football1"]) == 74 and seqs["Football1"].img_files[-1].endswith("0074.jpg")
    assert seqs["Basketball"].absent is None and seqs["Basketball"].angles is None
    # names: exact, or the folder name for both targets
    assert [s.name for s in load_sequences(root, names=["Jogging"])] == ["Jogging.1",
                                                                        "Jogging.2"]
    assert [s.name for s in load_sequences(root, names=["Jogging.2"])] == ["Jogging.2"]


def test_otb_first_frame_number_other_than_one(tmp_path):
    root = tmp_path / "OTB"
    _otb_seq(root, "BlurCar1", 3, start=247)          # BlurCar1 starts at 0247.jpg
    (seq,) = load_sequences(root, layout="otb")
    assert seq.img_files[0].endswith("0247.jpg") and len(seq) == 3


def test_got10k_layout_labels_extras_and_test_set(tmp_path):
    root = tmp_path / "GOT-10k"
    val = root / "val"
    _got_seq(val, "GOT-10k_Val_000001", 4)
    _got_seq(val, "GOT-10k_Val_000002", 3)
    (val / "list.txt").write_text("GOT-10k_Val_000002\nGOT-10k_Val_000001\n")
    seq_dir = val / "GOT-10k_Val_000001"
    np.savetxt(seq_dir / "absence.label", [0, 0, 1, 0], fmt="%d")
    np.savetxt(seq_dir / "cover.label", [8, 5, 0, 8], fmt="%d")
    np.savetxt(seq_dir / "angle.txt", [0, 1.5, 3, 4.5])
    np.savetxt(seq_dir / "polygon.txt", np.arange(32.0).reshape(4, 8), delimiter=",")
    test = root / "test"
    _got_seq(test, "GOT-10k_Test_000001", 3, gt=_boxes(1))     # only the first box known
    (test / "list.txt").write_text("GOT-10k_Test_000001\n")

    assert detect_layout(root) == "got10k"
    seqs = load_sequences(root, subset="val")
    assert [s.name for s in seqs] == ["GOT-10k_Val_000002", "GOT-10k_Val_000001"]
    s = seqs[1]
    assert s.absent.tolist() == [False, False, True, False]
    assert s.cover.tolist() == [8, 5, 0, 8]
    np.testing.assert_allclose(s.angles, [0, 1.5, 3, 4.5])
    assert s.polygons.shape == (4, 8) and s.polygons[1, 0] == 8
    assert s.boxes.dtype == np.float64 and s.img_files[0].endswith("00000001.jpg")
    # the subset folder itself, and the default subset (val before test)
    assert len(load_sequences(val)) == 2
    assert len(load_sequences(root)) == 2
    (t,) = load_sequences(root, subset="test")
    assert np.isnan(t.boxes[1:]).all() and t.boxes[0].tolist() == _boxes(1)[0].tolist()
    # a subset folder without list.txt: the sequence folders present
    (val / "list.txt").unlink()
    assert [s.name for s in load_sequences(val)] == ["GOT-10k_Val_000001",
                                                     "GOT-10k_Val_000002"]


def test_missing_folder_and_unknown_layout(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder not found: .*nowhere"):
        load_sequences(tmp_path / "nowhere")
    (tmp_path / "junk" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="cannot recognise the dataset layout"):
        load_sequences(tmp_path / "junk")


def test_missing_frame_names_the_file(tmp_path):
    root = tmp_path / "OTB"
    _otb_seq(root, "Car", 5)
    (root / "Car" / "img" / "0003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"missing frame .*Car/img/0003\.jpg"):
        load_sequences(root)


def test_frame_and_row_count_mismatch_names_the_groundtruth_file(tmp_path):
    val = tmp_path / "val"
    _got_seq(val, "seq1", 4, gt=_boxes(3))
    with pytest.raises(DatasetError, match=r"seq1/groundtruth\.txt: 3 ground-truth rows but 4"):
        load_sequences(val)


def test_malformed_groundtruth_names_file_and_line(tmp_path):
    val = tmp_path / "val"
    _got_seq(val, "seq1", 3)
    (val / "seq1" / "groundtruth.txt").write_text("1,2,3,4\n1,2,x,4\n1,2,3,4\n")
    with pytest.raises(DatasetError, match=r"seq1/groundtruth\.txt:2: not a number"):
        load_sequences(val)
    (val / "seq1" / "groundtruth.txt").write_text("1,2,3,4\n1,2,3,4\n1,2,3\n")
    with pytest.raises(DatasetError, match=r"groundtruth\.txt:3: expected 4 numbers, got 3"):
        load_sequences(val)
    (val / "seq1" / "groundtruth.txt").write_text("1,2,0,4\n1,2,3,4\n1,2,3,4\n")
    with pytest.raises(DatasetError, match=r"groundtruth\.txt:1: the first-frame box"):
        load_sequences(val)
    (val / "seq1" / "groundtruth.txt").write_text("1,2,3,4\n1,2,3,4\n1,2,3,4\n")
    (val / "seq1" / "angle.txt").write_text("0\n1\n")
    with pytest.raises(DatasetError, match=r"seq1/angle\.txt: 2 rows but the sequence has 3"):
        load_sequences(val)


def test_listed_but_missing_sequence_and_skip_bad(tmp_path):
    val = tmp_path / "val"
    _got_seq(val, "good", 3)
    _got_seq(val, "broken", 3, gt=_boxes(2))
    (val / "list.txt").write_text("good\nbroken\nabsent\n")
    with pytest.raises(DatasetError, match=r"broken/groundtruth\.txt"):
        load_sequences(val)
    with pytest.warns(DatasetWarning) as record:
        seqs = load_sequences(val, skip_bad=True)
    assert [s.name for s in seqs] == ["good"]
    messages = " ".join(str(w.message) for w in record)
    assert "broken/groundtruth.txt" in messages and "sequence folder not found" in messages
    assert "absent" in messages
    with pytest.raises(DatasetError, match="sequence 'nope' not found"):
        load_sequences(val, names=["good", "nope"])
    with pytest.raises(DatasetError, match="no usable sequences"):
        with pytest.warns(DatasetWarning):
            load_sequences(val, names=["broken"], skip_bad=True)


def test_names_select_rotated_two_target_sequences(tmp_path):
    val = tmp_path / "val"
    for name in ("Jogging.1", "Jogging.2", "Car"):
        _got_seq(val, name, 2)
    assert [s.name for s in load_sequences(val, names=["Jogging"])] == ["Jogging.1", "Jogging.2"]
    assert [s.name for s in load_sequences(val, names=["Jogging.2", "Car"])] == ["Car",
                                                                                "Jogging.2"]
