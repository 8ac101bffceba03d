"""The colour-histogram target model (tracker/colour.py) and its fusion into SiamFC (colour_weight)."""
import cv2
import numpy as np
import pytest
from test_trackers import moving_sequence, run, tiny_model

from tracker import build_tracker
from tracker.colour import ColourModel, colour_bins
from tracker.siamfc import TrackerError

pytestmark = pytest.mark.usefixtures("one_thread")

RED, GREEN = (220, 40, 40), (90, 120, 90)


def scene(rng, centre, axes=(9, 9), angle=0.0, size=(200, 160)):
    """A noisy green frame with a red ellipse (the target) at ``centre``."""
    noise = rng.integers(0, 20, (size[1], size[0], 3)).astype(np.uint8)
    frame = np.full((size[1], size[0], 3), GREEN, np.uint8) + noise
    cv2.ellipse(frame, tuple(int(round(v)) for v in centre), axes, angle, 0, 360, RED, -1)
    return frame


def test_colour_bins_and_probabilities_separate_target_from_background():
    crop = np.zeros((40, 40, 3), np.uint8)
    crop[:] = GREEN
    crop[15:25, 15:25] = RED
    bins = colour_bins(crop)
    assert bins[20, 20] == (220 >> 3) * 1024 + (40 >> 3) * 32 + (40 >> 3) and bins.dtype == np.uint16
    model = ColourModel(40)
    model.learn(bins, center=(20.0, 20.0), size=(10.0, 10.0), valid=(0, 0, 40, 40))
    assert model.target_hist.sum() == pytest.approx(1) and model.background_hist.sum() == pytest.approx(1)
    prob = model.probability(bins)
    assert prob[20, 20] == 1.0 and prob[2, 2] == 0.0
    unseen = np.full((4, 4, 3), 255, np.uint8)
    assert np.all(model.probability(colour_bins(unseen)) == 0.0)          # a colour neither histogram holds
    scores = model.box_scores(bins, (10, 10))
    assert np.unravel_index(np.argmax(scores), scores.shape) in {(20, 20), (19, 19), (19, 20), (20, 19)}
    # pixels outside ``valid`` (the frame) are not learnt: here the whole background
    model.learn(bins, center=(20.0, 20.0), size=(10.0, 10.0), valid=(14, 14, 26, 26))
    assert model.background_hist.sum() > 0 and model.probability(bins)[2, 2] == 0.0


def test_learning_rate_blends_histograms():
    a = np.full((20, 20, 3), GREEN, np.uint8)
    a[5:15, 5:15] = RED
    b = a.copy()
    b[5:15, 5:15] = (40, 40, 220)                             # the target turns blue
    model = ColourModel(20)
    model.learn(colour_bins(a), (10.0, 10.0), (10.0, 10.0), (0, 0, 20, 20))
    red, blue = colour_bins(a)[10, 10], colour_bins(b)[10, 10]
    model.learn(colour_bins(b), (10.0, 10.0), (10.0, 10.0), (0, 0, 20, 20), rate=0.25)
    assert model.target_hist[red] == pytest.approx(0.75) and model.target_hist[blue] == pytest.approx(0.25)


def test_colour_scores_line_up_with_the_response_map():
    """With colour_weight 1 the tracker follows the colour score alone: a red disc that jumps
    between frames is found to within a pixel or two, so the score map is placed on the response
    map's pixel grid (crop -> upsampled response coordinates) correctly."""
    rng = np.random.default_rng(0)
    trk = build_tracker("siamfc", model=tiny_model(), device="cpu", colour_weight=1.0, window_influence=0.0)
    trk.init(scene(rng, (80, 70)), [71, 61, 18, 18])
    for centre in ((92, 64), (99, 80), (90, 91)):
        box = trk.update(scene(rng, centre))
        assert np.hypot(*(box[:2] + box[2:] / 2 - centre)) < 2.0, (centre, box)


def test_tracker_learns_the_colours_where_it_tracks():
    """A disc that moves and turns from red to blue over 12 frames, tracked on colour alone: with
    a learning rate the histograms follow it (they are learnt at the tracked box, mapped into the
    search crop), frozen histograms (colour_lr 0) lose it once it is no longer red."""
    def frame(rng, centre, colour):
        image = np.full((160, 200, 3), GREEN, np.uint8) + rng.integers(0, 20, (160, 200, 3)).astype(np.uint8)
        cv2.circle(image, (int(centre[0]), int(centre[1])), 9, colour, -1)
        return image

    def errors(rate):
        rng = np.random.default_rng(0)
        trk = build_tracker("siamfc", model=tiny_model(), device="cpu", colour_weight=1.0, colour_lr=rate,
                            window_influence=0.0)
        trk.init(frame(rng, (60, 60), RED), [51, 51, 18, 18])
        out = []
        for k in range(1, 13):
            t = k / 12
            centre = np.array([60 + 5 * k, 60 + 3 * k])
            box = trk.update(frame(rng, centre, (round(220 - 180 * t), 40, round(40 + 180 * t))))
            out.append(np.hypot(*(box[:2] + box[2:] / 2 - centre)))
        return np.array(out)

    assert errors(0.3).max() < 3.0
    assert errors(0.0)[-4:].min() > 20.0


def test_colour_weight_zero_is_the_default_search_and_bad_values_are_rejected():
    model = tiny_model()
    frames, boxes = moving_sequence(n=6)
    default = run(build_tracker("siamfc", model=model, device="cpu"), frames, boxes[0])
    assert np.array_equal(run(build_tracker("siamfc", model=model, device="cpu", colour_weight=0.0), frames, boxes[0]),
                          default)
    assert not np.array_equal(run(build_tracker("siamfc", model=model, device="cpu", colour_weight=0.5), frames,
                                  boxes[0]), default)
    rot = build_tracker("siamfc", model=model, device="cpu", orientations=4, colour_weight=0.3)
    assert run(rot, frames, boxes[0]).shape == (6, 4)                # rotated templates: the turned box's colours
    for name, bad in (("colour_weight", 1.5), ("colour_weight", -0.1), ("colour_lr", 2.0)):
        with pytest.raises(TrackerError, match=name):
            build_tracker("siamfc", model=model, device="cpu", **{name: bad})


def test_histograms_match_the_full_mask_definition():
    """The histograms are computed on rectangles; they equal the definition on whole-crop masks
    (target: the inscribed ellipse within the frame; background: the frame minus the box), also
    for boxes and frames that cut the crop's edges."""
    rng = np.random.default_rng(3)
    size = 64
    centres = np.arange(size, dtype=np.float32) + 0.5
    xs, ys = centres[None, :], centres[:, None]
    for _ in range(40):
        bins = colour_bins(rng.integers(0, 256, (size, size, 3)).astype(np.uint8))
        center = rng.uniform(-10, size + 10, 2)
        box = rng.uniform(1, 50, 2)
        valid = np.sort(rng.uniform(-20, size + 20, (2, 2)), axis=0).T.reshape(-1)[[0, 2, 1, 3]]
        model = ColourModel(size)
        model.learn(bins, center, box, valid)
        dx, dy = (xs - center[0]) / (box[0] / 2), (ys - center[1]) / (box[1] / 2)
        x0, y0, x1, y1 = valid
        in_frame = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        target = np.bincount(bins[(dx * dx + dy * dy <= 1.0) & in_frame], minlength=32 ** 3).astype(np.float32)
        background = np.bincount(bins[((np.abs(dx) > 1) | (np.abs(dy) > 1)) & in_frame], minlength=32 ** 3)
        background = background.astype(np.float32)
        assert np.array_equal(model.target_hist, target / max(target.sum(), 1.0))
        assert np.array_equal(model.background_hist, background / max(background.sum(), 1.0))
