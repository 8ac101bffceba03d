"""The rotating-benchmark maker: frames and ground truth rotate together."""
import json

import cv2
import numpy as np
import pytest
import shapely

from data import DatasetError, load_sequences
from data.rotating import cover_classes, make_rotating, polygon_bounding_boxes, rotate_polygons, rotation_matrices

W, H = 64, 48
BOX = (40, 20, 12, 8)          # right of the image centre (32, 24)


def _otb_source(root, n=4, box=BOX):
    img_dir = root / "Target" / "img"
    img_dir.mkdir(parents=True)
    x, y, w, h = box
    for t in range(n):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[y:y + h, x:x + w] = (0, 0, 255)           # red in BGR
        cv2.imwrite(str(img_dir / f"{t + 1:04d}.png"), frame)
    np.savetxt(root / "Target" / "groundtruth_rect.txt", [box] * n, fmt="%d", delimiter="\t")
    return root


def _red_pixel_centres(path):
    frame = cv2.imread(path)
    ys, xs = np.nonzero((frame[:, :, 2] > 128) & (frame[:, :, 1] < 100))
    return xs + 0.5, ys + 0.5


def test_rotated_frames_match_rotated_ground_truth(tmp_path):
    src = _otb_source(tmp_path / "src")
    dst = make_rotating(src, tmp_path / "rot", 30.0, border="constant")
    (seq,) = load_sequences(dst)
    assert seq.name == "Target" and len(seq) == 4
    np.testing.assert_allclose(seq.angles, [0, 30, 60, 90])
    assert cv2.imread(seq.img_files[2]).shape == (H, W, 3)
    for t in range(4):
        polygon = shapely.Polygon(seq.polygons[t].reshape(4, 2))
        assert polygon.area == pytest.approx(12 * 8, abs=1e-2)      # rotation keeps area
        xs, ys = _red_pixel_centres(seq.img_files[t])
        inside = shapely.contains_xy(polygon.buffer(1.0), xs, ys)
        assert inside.all()                                          # pixels lie in the gt
        assert len(xs) >= 0.8 * polygon.area                         # and fill it
        # axis-aligned ground truth = bounding box of the polygon
        pts = seq.polygons[t].reshape(4, 2)
        np.testing.assert_allclose(seq.boxes[t], [pts[:, 0].min(), pts[:, 1].min(),
                                                  np.ptp(pts[:, 0]), np.ptp(pts[:, 1])],
                                   atol=1e-3)
    # 90 degrees counter-clockwise on screen: the target right of the centre goes above it
    centre = seq.polygons[3].reshape(4, 2).mean(axis=0)
    np.testing.assert_allclose(centre, [32, 24 - (46 - 32)], atol=1e-3)
    np.testing.assert_allclose(seq.boxes[3], [28, 4, 8, 12], atol=1e-3)
    np.testing.assert_allclose(seq.boxes[0], BOX, atol=1e-3)
    assert seq.cover.tolist() == [8, 8, 8, 8] and not seq.absent.any()


def test_rotating_a_rotating_dataset_adds_angles_and_reuses_finished_sequences(tmp_path):
    src = _otb_source(tmp_path / "src", n=3)
    first = make_rotating(src, tmp_path / "rot1", 45.0, border="constant")
    second = make_rotating(first, tmp_path / "rot2", 45.0, border="constant")
    (a,) = load_sequences(first)
    (b,) = load_sequences(second)
    np.testing.assert_allclose(b.angles, [0, 90, 180])
    # the source polygon (not its bounding box) is rotated again: area is preserved
    np.testing.assert_allclose(shapely.area(shapely.polygons(b.polygons.reshape(-1, 4, 2))),
                               96, atol=1e-2)
    info = json.loads((second / "rotating_info.json").read_text())
    assert info["sequences"] == ["Target"] and info["settings"]["deg_per_frame"] == 45.0
    stamp = (second / "Target" / "00000002.jpg").stat().st_mtime_ns
    make_rotating(first, tmp_path / "rot2", 45.0, border="constant")
    assert (second / "Target" / "00000002.jpg").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="other settings"):
        make_rotating(first, tmp_path / "rot2", 10.0, border="constant")
    assert a.polygons.shape == (3, 8)


def test_target_leaving_the_image_is_clipped_and_marked(tmp_path):
    # a box at the right border rotated by 180 degrees ends at the left border; at 90 degrees
    # a wide box near the right edge sticks out of the 48-pixel-high image
    src = _otb_source(tmp_path / "src", n=2, box=(2, 20, 60, 8))
    dst = make_rotating(src, tmp_path / "rot", 90.0)
    (seq,) = load_sequences(dst)
    x, y, w, h = seq.boxes[1]
    assert y == 0 and y + h == H                     # clipped to the image
    assert seq.cover[1] < 8 and seq.cover[0] == 8
    cut = np.loadtxt(dst / "Target" / "cut_by_image.label")
    assert cut.tolist() == [0, 1]


def test_geometry_helpers():
    m = rotation_matrices(np.array([90.0]), 10, 10)
    np.testing.assert_allclose(rotate_polygons(np.array([[10, 5, 10, 5, 10, 5, 10, 5.]]), m),
                               [[5, 0] * 4], atol=1e-12)
    np.testing.assert_allclose(polygon_bounding_boxes(np.array([[-5, 2, 4, 2, 4, 6, -5, 6.]]),
                                                      10, 10), [[0, 2, 4, 4]])
    assert cover_classes(np.array([0.0, 0.1, 0.15, 0.5, 0.95, 1.0])).tolist() == [
        0, 1, 1, 4, 7, 8]


def test_bad_arguments(tmp_path):
    src = _otb_source(tmp_path / "src", n=2)
    with pytest.raises(ValueError, match="border"):
        make_rotating(src, tmp_path / "o", 1.0, border="wrap")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        make_rotating(src, tmp_path / "full", 1.0)
    with pytest.raises(DatasetError, match="dataset folder not found"):
        make_rotating(tmp_path / "missing", tmp_path / "o2", 1.0)


def test_a_rotating_copy_is_rebuilt_when_its_source_changes(tmp_path, capsys):
    """A rotating copy is keyed by its source's content: new ground truth or new frame pixels
    rebuild it (the audit measured AO 0.602 reported from a stale copy where a fresh one gave 0.427)."""
    src = _otb_source(tmp_path / "src", n=3)
    dst = make_rotating(src, tmp_path / "rot", 30.0, border="constant")
    before = load_sequences(dst)[0].boxes.copy()
    stamp = (dst / "Target" / "00000002.jpg").stat().st_mtime_ns
    make_rotating(src, dst, 30.0, border="constant")                       # unchanged: reused
    assert (dst / "Target" / "00000002.jpg").stat().st_mtime_ns == stamp
    np.savetxt(src / "Target" / "groundtruth_rect.txt", [(10, 10, 12, 8)] * 3, fmt="%d", delimiter="\t")
    make_rotating(src, dst, 30.0, border="constant")
    after = load_sequences(dst)[0].boxes
    assert "its source changed" in capsys.readouterr().err
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after[0], (10, 10, 12, 8), atol=1e-3)
    frame = cv2.imread(str(src / "Target" / "img" / "0002.png"))
    frame[0:4, 0:4] = 255                                                  # new pixels, same size
    cv2.imwrite(str(src / "Target" / "img" / "0002.png"), frame)
    stamp = (dst / "Target" / "00000002.jpg").stat().st_mtime_ns
    make_rotating(src, dst, 30.0, border="constant")
    assert (dst / "Target" / "00000002.jpg").stat().st_mtime_ns != stamp
