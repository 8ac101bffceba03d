"""Metrics and report scoring against values computed by hand."""
import numpy as np
import pytest
from PIL import Image

from data import Sequence, box_to_polygon
from evaluation.experiment import SequenceResult
from evaluation.metrics import (
    angle_errors,
    box_iou,
    center_errors,
    got10k_scores,
    normalized_center_errors,
    otb_curves,
    polygon_iou,
    precision_curve,
    success_curve,
)
from evaluation.report import build_report, markdown_summary


def test_box_iou_by_hand():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    pred = np.array([[5, 0, 10, 10], [0, 0, 10, 10], [20, 20, 5, 5]], float)
    np.testing.assert_allclose(box_iou(pred, gt), [50 / 150, 1.0, 0.0], atol=1e-12)
    # clipped to an 8x10 image: pred [0,0,8,10] vs gt [5,0,3,10] -> 30 / 80
    np.testing.assert_allclose(box_iou([[0, 0, 10, 10]], [[5, 0, 10, 10]], bound=(8, 10)),
                               [30 / 80])
    # inputs are not modified by the clipping
    assert pred[0].tolist() == [5, 0, 10, 10]


def test_center_errors_by_hand():
    np.testing.assert_allclose(center_errors(np.array([[0, 0, 10, 10.]]),
                                             np.array([[3, 4, 10, 10.]])), [5.0])
    # x offset 5 over width 10, y offset 10 over height 20 -> |(0.5, 0.5)|
    np.testing.assert_allclose(
        normalized_center_errors(np.array([[5, 10, 10, 20.]]), np.array([[0, 0, 10, 20.]])),
        [np.sqrt(0.5)])


def test_curves_and_scores_by_hand():
    np.testing.assert_allclose(success_curve([0.0, 0.5, 1.0], np.array([0.0, 0.5, 1.0])),
                               [2 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(precision_curve([0.0, 20.0, 21.0, np.nan], np.array([20.0])),
                               [0.5])
    got = got10k_scores(np.array([0.2, 0.6, 0.8, 1.0]))
    assert got["ao"] == pytest.approx(0.65)
    assert got["sr50"] == pytest.approx(0.75)
    assert got["sr75"] == pytest.approx(0.5)
    assert got["success_curve"].shape == (101,)

    perfect = otb_curves(np.ones(4), np.zeros(4), np.zeros(4))
    assert perfect["success_auc"] == pytest.approx(20 / 21)   # IoU 1 is not > threshold 1
    assert perfect["precision20"] == 1.0 and perfect["norm_precision"] == 1.0
    # normalized error 0.255 passes the 25 thresholds 0.26 .. 0.50 of 51
    assert otb_curves(np.ones(2), np.zeros(2),
                      np.full(2, 0.255))["norm_precision"] == pytest.approx(25 / 51)
    # centre error 20 px is within "precision at 20 px", 20.5 px is not
    assert otb_curves(np.ones(2), np.array([20.0, 20.5]), np.zeros(2))["precision20"] == 0.5


def test_polygon_iou_by_hand():
    diamond = np.array([[1, 0, 2, 1, 1, 2, 0, 1]], float)        # area 2 inside box 2x2
    box = np.array([[0, 0, 2, 2]], float)
    np.testing.assert_allclose(polygon_iou(box, diamond), [0.5])
    np.testing.assert_allclose(polygon_iou(diamond, diamond), [1.0])
    np.testing.assert_allclose(polygon_iou(box_to_polygon(box), box), [1.0])
    # clipped to a 1x2 image: diamond's left half (area 1) vs box's left half (area 2)
    np.testing.assert_allclose(polygon_iou(box, diamond, bound=(1, 2)), [0.5])
    # crossed corner order (bow tie) is repaired, non-finite rows give NaN
    out = polygon_iou(np.array([[0, 0, 2, 2, 2, 0, 0, 2.], [np.nan] * 8]),
                      np.array([[0, 0, 2, 0, 2, 2, 0, 2.], [0, 0, 2, 0, 2, 2, 0, 2.]]))
    assert out[0] == pytest.approx(0.5) and np.isnan(out[1])


def test_angle_errors_wrap():
    np.testing.assert_allclose(angle_errors([350, -170, 90, 720], [10, 170, 0, 0]),
                               [20, 20, 90, 0])


def _tiny_image(tmp_path):
    path = tmp_path / "frame.png"
    Image.new("RGB", (64, 48)).save(path)
    return str(path)


def test_report_pools_got10k_frames_and_averages_otb_sequences(tmp_path):
    img = _tiny_image(tmp_path)
    g = [0, 0, 10, 10]
    seq_a = Sequence("A", [img] * 3, np.array([g] * 3, float),
                     angles=np.array([0.0, 10.0, 20.0]),
                     polygons=box_to_polygon(np.array([g] * 3, float)))
    absent = np.array([False, False, True, False, False])
    seq_b = Sequence("B", [img] * 5, np.array([g] * 5, float), absent=absent)
    res_a = SequenceResult(np.array([g, [5, 0, 10, 10], g], float),
                           np.array([0.5, 0.1, 0.2]), angles=np.array([0, 15, 380.0]))
    res_b = SequenceResult(np.array([g, g, [0, 0, 20, 10], [5, 0, 10, 10], g], float),
                           np.array([0.5, 0.25, 0.25, 0.25, 0.25]))
    report = build_report("generated", [seq_a, seq_b], {"t": {"A": res_a, "B": res_b}})
    o = report["trackers"]["t"]["overall"]
    # GOT-10k: frame 0 and the absent frame dropped, IoUs pooled: 1/3, 1 | 1, 1/3, 1
    assert o["ao"] == pytest.approx((3 + 2 / 3) / 5)
    assert o["sr50"] == pytest.approx(3 / 5) and o["sr75"] == pytest.approx(3 / 5)
    # OTB: per-sequence AUC (frame 0 included), then averaged over the two sequences
    auc_a = (7 * 1 + 13 * (2 / 3)) / 21       # IoUs 1, 1/3, 1
    auc_b = (7 * 1 + 13 * (3 / 4)) / 21       # IoUs 1, 1, 1/3, 1 (absent frame dropped)
    assert o["success_auc"] == pytest.approx((auc_a + auc_b) / 2)
    assert o["precision20"] == pytest.approx(1.0)          # worst centre error is 5 px
    norm_a = (50 * (2 / 3) + 1) / 51                        # normalized error 0.5 once
    norm_b = (50 * (3 / 4) + 1) / 51
    assert o["norm_precision"] == pytest.approx((norm_a + norm_b) / 2)
    # speed: GOT-10k pools frames, OTB averages sequence means -> reported per protocol
    seq_rows = report["trackers"]["t"]["sequences"]
    assert seq_rows["A"]["fps"] == pytest.approx((2 + 10 + 5) / 3)
    assert o["fps"] == pytest.approx(((2 + 10 + 5) / 3 + (2 + 4 * 4) / 5) / 2)
    # rotation: polygon IoU of the predicted boxes on A's frames 1, 2; angle error relative
    # to frame 0: |15 - 10| = 5 and |380 - 20| wraps to 0
    assert o["poly_iou"] == pytest.approx((1 / 3 + 1) / 2)
    assert seq_rows["A"]["poly_source"] == "box"
    assert o["angle_error"] == pytest.approx(2.5)
    assert "angle_error" not in seq_rows["B"]
    table = markdown_summary(report)
    assert "| t |" in table and "Polygon IoU" in table and "Angle err" in table

    got = build_report("got10k", [seq_a, seq_b], {"t": {"A": res_a, "B": res_b}})
    assert got["trackers"]["t"]["overall"]["fps"] == pytest.approx((2 + 10 + 5 + 2 + 16) / 8)


def test_report_scores_a_missing_prediction_as_a_miss(tmp_path):
    img = _tiny_image(tmp_path)
    seq = Sequence("S", [img] * 3, np.array([[0, 0, 10, 10]] * 3, float))
    res = SequenceResult(np.array([[0, 0, 10, 10], [np.nan] * 4, [0, 0, 10, 10]]), np.ones(3))
    o = build_report("got10k", [seq], {"t": {"S": res}})["trackers"]["t"]["overall"]
    assert o["ao"] == pytest.approx(0.5)
    assert o["precision20"] == pytest.approx(2 / 3)


def test_paired_difference_by_hand_and_its_interval():
    from evaluation.metrics import paired_difference

    a, b = [0.5, 0.6, 0.7, float("nan")], [0.4, 0.6, 0.5, 0.9]
    d = paired_difference(a, b, resamples=2000)
    assert d["n"] == 3 and d["mean"] == pytest.approx((0.1 + 0.0 + 0.2) / 3)
    assert (d["wins"], d["losses"], d["ties"]) == (2, 0, 1)
    assert 0.0 <= d["ci_low"] <= d["mean"] <= d["ci_high"] <= 0.2 + 1e-12
    # a constant shift has a zero-width interval; noise around zero straddles it
    assert paired_difference([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])["ci_low"] == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    noise = paired_difference(rng.normal(0, 1, 200), np.zeros(200))
    assert noise["ci_low"] < 0 < noise["ci_high"]
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0], [1.0, 2.0])
