"""tracker/crops.py: geometry of the square crops (continuous coordinates, pixel (j, i) covers [j, j+1))."""
import math

import cv2
import numpy as np
import pytest

from tracker.crops import context_size, crop_and_resize, crop_many, crop_to_image, image_to_crop, mean_color


def _noise_image(h=40, w=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_context_size_matches_siamfc_formula():
    w, h = 40.0, 20.0
    p = 0.5 * (w + h)
    assert context_size(w, h) == pytest.approx(math.sqrt((w + p) * (h + p)))
    assert context_size(10, 10, context=0.0) == pytest.approx(10.0)


def test_unit_scale_crop_is_an_exact_slice():
    img = _noise_image()
    # square [12, 32) x [5, 25) has centre (22, 15)
    crop = crop_and_resize(img, (22.0, 15.0), 20, 20)
    assert crop.dtype == np.uint8 and crop.shape == (20, 20, 3)
    np.testing.assert_array_equal(crop, img[5:25, 12:32])


def test_known_square_lands_where_expected_when_downscaled():
    img = np.zeros((100, 100, 3), np.uint8)
    img[40:60, 20:40] = 255                     # square with centre (30, 50), side 20
    crop = crop_and_resize(img, (50.0, 50.0), 80, 40)   # 2 image px per crop px
    # the square maps to crop x in [(20-10)/2, (40-10)/2) = [5, 15), y in [15, 25)
    on = crop[:, :, 0] > 127
    ys, xs = np.nonzero(on)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 14, 15, 24)
    np.testing.assert_allclose(image_to_crop([[30.0, 50.0]], (50, 50), 80, 40), [[10.0, 20.0]])
    # sub-pixel: the intensity centroid (continuous coords: index + 0.5) is the square's centre
    for centre, size, out in (((50.0, 50.0), 80, 40), ((41.3, 47.9), 55.0, 64), ((30.0, 50.0), 30.0, 90)):
        crop = crop_and_resize(img, centre, size, out, border_value=(0, 0, 0)).astype(float)[:, :, 0]
        ys, xs = np.mgrid[0:out, 0:out] + 0.5
        centroid = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
        np.testing.assert_allclose(centroid, image_to_crop([[30.0, 50.0]], centre, size, out)[0], atol=0.05)


def test_border_is_filled_with_given_colour_or_image_mean():
    img = _noise_image()
    far = crop_and_resize(img, (-500.0, -500.0), 30, 15, border_value=(1, 2, 3))
    assert np.all(far == np.array([1, 2, 3], np.uint8))
    mean = np.round(img.reshape(-1, 3).mean(0))
    far_mean = crop_and_resize(img, (1000.0, 1000.0), 30, 15)
    np.testing.assert_allclose(far_mean[0, 0], mean, atol=1)
    np.testing.assert_allclose(mean_color(img), img.reshape(-1, 3).mean(0))
    # half outside: the left half of the crop is border, the right half image
    half = crop_and_resize(img, (0.0, 20.0), 20, 20, border_value=(7, 7, 7))
    assert np.all(half[:, :10] == 7)
    np.testing.assert_array_equal(half[:, 10:], img[10:30, 0:10])


def test_angle_undoes_a_counter_clockwise_rotation():
    upright = np.zeros((41, 41, 3), np.uint8)
    upright[4:18, 18:23] = 255                  # a bar above the centre, pointing up
    rotated = np.ascontiguousarray(np.rot90(upright))   # rot90 = 90 deg counter-clockwise on screen
    assert rotated[18:23, 4:18].min() == 255    # now it points left
    back = crop_and_resize(rotated, (20.5, 20.5), 41, 41, angle_deg=90)
    np.testing.assert_array_equal(back, upright)
    wrong = crop_and_resize(rotated, (20.5, 20.5), 41, 41, angle_deg=-90)
    assert np.abs(wrong.astype(int) - upright).mean() > 10


def test_angle_straightens_an_arbitrary_rotated_rectangle():
    img = np.zeros((120, 120, 3), np.uint8)
    centre, size, angle = (60.0, 60.0), (50.0, 16.0), 30.0
    # cv2.boxPoints angles are clockwise on screen: -30 there is +30 counter-clockwise here
    pts = cv2.boxPoints(((centre[0] - 0.5, centre[1] - 0.5), size, -angle))
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], (255, 255, 255), cv2.LINE_AA, 4)
    crop = crop_and_resize(img, centre, 80, 80, angle_deg=angle).astype(float)[:, :, 0] / 255
    # upright rectangle: 50 wide, 16 tall, centred at (40, 40)
    expected = np.zeros((80, 80))
    expected[32:48, 15:65] = 1
    inner = np.zeros((80, 80), bool)
    inner[34:46, 17:63] = True
    outer = np.ones((80, 80), bool)
    outer[30:50, 13:67] = False
    assert crop[inner].min() > 0.9 and crop[outer].max() < 0.1
    # the forward map agrees: crop corner (15, 32) is the rectangle's rotated top-left corner
    corner = crop_to_image([[15.0, 32.0]], centre, 80, 80, angle)[0]
    a = math.radians(angle)
    expect = np.array(centre) + np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) @ [-25.0, -8.0]
    np.testing.assert_allclose(corner, expect, atol=1e-9)


def test_round_trip_of_coordinate_maps():
    pts = np.array([[1.0, 2.0], [100.0, -3.5]])
    back = image_to_crop(crop_to_image(pts, (30, 40), 77.0, 127, 17.0), (30, 40), 77.0, 127, 17.0)
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_crop_many_stacks_individual_crops_and_accepts_gray():
    img = _noise_image()
    sizes = [20.0, 25.0, 31.25]
    many = crop_many(img, (25.0, 20.0), sizes, 17)
    assert many.shape == (3, 17, 17, 3) and many.dtype == np.uint8
    for i, s in enumerate(sizes):
        np.testing.assert_array_equal(many[i], crop_and_resize(img, (25.0, 20.0), s, 17))
    gray = img[:, :, 0]
    out = crop_and_resize(gray, (25.0, 20.0), 20, 20)
    assert out.shape == (20, 20, 3) and np.array_equal(out[:, :, 0], out[:, :, 2])
    with pytest.raises(ValueError):
        crop_and_resize(np.zeros((5, 5, 2), np.uint8), (2, 2), 4, 4)
