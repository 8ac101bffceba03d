"""The orientation machinery (tracker/orientation.py): rotated-template bank, motion prior, read-out."""
import cv2
import numpy as np
import pytest

from tracker.crops import crop_and_resize
from tracker.orientation import (
    angle_difference,
    axis_aligned_box,
    orientation_angles,
    orientation_mask,
    refine_orientation,
    rotated_template_bank,
    scores_at,
)
from tracker.siamfc import rotated_box_polygon


def smooth_texture(seed=0, width=320, height=300):
    """A smooth random colour texture (low frequencies: interpolation changes it little)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16, width // 16, 3)).astype(np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def test_orientation_angles_and_wrapping():
    assert orientation_angles(8).tolist() == [0, 45, 90, 135, 180, 225, 270, 315]
    assert orientation_angles(1).tolist() == [0]
    for bad in (0, -4, 2.5, True):
        with pytest.raises(ValueError):
            orientation_angles(bad)
    assert angle_difference([350, 10, 180, -190], [10, 350, 0, 0]).tolist() == [-20, 20, -180, 170]


def test_motion_prior_window_is_circular():
    angles = orientation_angles(8)
    allowed = lambda last, gamma: np.flatnonzero(orientation_mask(angles, last, gamma)).tolist()  # noqa: E731
    assert allowed(0, 45) == [0, 1, 7]
    assert allowed(315, 45) == [0, 6, 7]
    assert allowed(180, 90) == [2, 3, 4, 5, 6]
    assert allowed(20, 45) == [0, 1]                  # 315 is 65 degrees away
    assert allowed(90, 10) == [2]                     # narrower than a step: the nearest only
    assert allowed(100, 1) == [2]                     # never empty
    assert allowed(45, 0) == allowed(45, 180) == list(range(8))   # no prior


def test_rotated_bank_shapes_and_exact_quarter_turns():
    frame = np.random.default_rng(1).integers(0, 256, (300, 320, 3), dtype=np.uint8)
    for size, center in ((127.0, (160.0, 150.0)), (93.7, (100.3, 120.6))):
        bank = rotated_template_bank(frame, center, size, 127, orientation_angles(4))
        assert bank.shape == (4, 127, 127, 3) and bank.dtype == np.uint8
        assert np.array_equal(bank[0], crop_and_resize(frame, center, size, 127))
        for k in range(1, 4):
            # crop k shows the target turned by k * 90 deg CCW (np.rot90 turns CCW on screen);
            # OpenCV's fixed-point warp may differ by one grey level
            diff = np.abs(bank[k].astype(int) - np.rot90(bank[0], k).astype(int))
            assert diff.max() <= 1, (size, k)


def test_bank_crop_i_equals_the_target_rotated_by_i_steps():
    """Crop i of the bank of frame F equals the upright crop of F rotated by i * 45 deg about the target."""
    frame = smooth_texture()
    center, size = (161.0, 148.0), 90.0
    bank = rotated_template_bank(frame, center, size, 63, orientation_angles(8))
    for i, angle in enumerate(orientation_angles(8)):
        # cv2: positive angle = CCW on screen; its centre is in pixel-index coordinates
        m = cv2.getRotationMatrix2D((center[0] - 0.5, center[1] - 0.5), angle, 1.0)
        rotated = cv2.warpAffine(frame, m, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_CUBIC)
        upright = crop_and_resize(rotated, center, size, 63)
        err = np.abs(bank[i].astype(float) - upright.astype(float)).mean()
        wrong = np.abs(bank[(i + 1) % 8].astype(float) - upright.astype(float)).mean()
        assert err < 2.0 and wrong > 5 * err, (angle, err, wrong)


def test_scores_at_is_bilinear_and_clipped():
    r = 9
    ys, xs = np.mgrid[0:r, 0:r].astype(np.float64)
    maps = np.stack([1.0 + 2.0 * xs - 0.5 * ys, -3.0 * xs + ys])            # (N=2, R, R), linear
    responses = np.stack([maps, 10 * maps])                                   # (S=2, N, R, R)
    assert np.allclose(scores_at(responses, 0, (3.25, 5.5)), [1 + 6.5 - 2.75, -9.75 + 5.5])
    assert np.allclose(scores_at(responses, 1, (8.0, 8.0)), 10 * maps[:, 8, 8])
    assert np.allclose(scores_at(responses, 0, (-4.0, 20.0)), maps[:, 8, 0])   # clipped to the map


def test_sub_step_refinement_finds_the_peak_between_templates():
    angles = orientation_angles(8)
    for true in (20.0, -15.0, 3.0, 200.0):
        scores = np.cos(np.radians(angle_difference(angles, true)))
        index = int(np.argmax(scores))
        refined = angles[index] + refine_orientation(scores, index) * 45.0
        assert abs(angle_difference(refined, true)) < 1.5, true
    # index 0 uses index N-1 as its left neighbour
    scores = np.cos(np.radians(angle_difference(angles, -15.0)))
    assert refine_orientation(scores, 0) < 0
    assert refine_orientation([0.0, 1.0, 0.0, 0.5], 1) == 0.0      # symmetric neighbours
    assert refine_orientation([1.0, 0.0, 1.0, 1.0], 1) == 0.0      # not a maximum: no refinement
    assert refine_orientation([0.2, 1.0], 1) == 0.0                 # too few orientations
    assert refine_orientation([0.0, 1.0, 1.5, 0.0], 1) == 0.5   # clipped to half a step


@pytest.mark.parametrize("angle", [0.0, 30.0, 45.0, 90.0, 135.0, -60.0, 180.0])
def test_axis_aligned_box_modes(angle):
    center, size = (50.0, 40.0), (40.0, 10.0)
    polygon = axis_aligned_box(center, size, angle, "polygon")
    corners = rotated_box_polygon(center, size, angle).reshape(4, 2)
    np.testing.assert_allclose(polygon, np.r_[corners.min(0), np.ptp(corners, 0)], atol=1e-9)
    np.testing.assert_allclose(axis_aligned_box(center, size, angle, "upright"), [30, 35, 40, 10])
    # the ellipse inscribed in the rotated box, traced point by point
    t = np.linspace(0, 2 * np.pi, 20001)
    a = np.radians(angle)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])    # CCW on screen, y down
    pts = np.c_[20 * np.cos(t), 5 * np.sin(t)] @ rot.T + center
    traced = np.r_[pts.min(0), pts.max(0) - pts.min(0)]
    ellipse = axis_aligned_box(center, size, angle, "ellipse")
    np.testing.assert_allclose(ellipse, traced, atol=1e-3)
    # between the upright box's short side and the polygon's bounds, equal at multiples of 90 degrees
    assert np.all(ellipse[2:] <= polygon[2:] + 1e-9) and np.all(ellipse[2:] >= 10 - 1e-9)
    if angle % 90 == 0:
        np.testing.assert_allclose(ellipse, polygon, atol=1e-9)


def test_ellipse_box_bounds_a_rotated_ellipse_mask():
    """A rasterised ellipse turned by 30 degrees: its pixel bounds are the ellipse box (±1 px); the
    rotated rectangle's bounds are far too large."""
    mask = np.zeros((200, 200), np.uint8)
    cv2.ellipse(mask, (100, 100), (60, 20), -30.0, 0, 360, 255, -1)  # cv2 angle: clockwise on screen
    ys, xs = np.nonzero(mask)
    truth = np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], float)
    ellipse = axis_aligned_box((100.5, 100.5), (121, 41), 30.0, "ellipse")
    np.testing.assert_allclose(ellipse, truth, atol=1.5)
    polygon = axis_aligned_box((100.5, 100.5), (121, 41), 30.0, "polygon")
    assert polygon[2] > truth[2] + 10 and polygon[3] > truth[3] + 20


def test_axis_aligned_box_rejects_unknown_mode():
    with pytest.raises(ValueError, match="axis-box mode"):
        axis_aligned_box((0, 0), (1, 1), 0.0, "circle")
