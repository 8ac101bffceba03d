"""Training pairs for Siamese trackers (SiamFC recipe), from any got10k-style sequence set.

A pair is a template crop ``z`` (exemplar_size, target centred, SiamFC context) and a search crop
``x`` (instance_size) of another frame of the same sequence at most ``frame_range`` frames away,
both taken at the target's own scale in their frame (as siamfc-pytorch's Pair dataset and
SiamFCTransforms do), with the SiamFC frame filter (target size and aspect limits, GOT-10k
absence / cover labels) and, when ``augment``: random stretch of both crops, random shift of the
target in ``x``, random interpolation, grey / colour / blur augmentation. ``max_rotation_deg > 0``
also rotates ``x`` about the target by a random angle (rotation-robustness augmentation).

Every random choice is a function of (seed, epoch, index), so a run resumes exactly.
Coordinates follow tracker/crops.py (continuous pixels; a box x, y, w, h has centre x + w/2).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from data import DatasetError
from data.frames import COLOR_FLAGS, FrameError, check_image_header
from tracker.crops import context_size, crop_and_resize, image_to_crop
from tracker.orientation import axis_aligned_box

__all__ = ["PairSampler", "PhotoPairSampler", "MixedPairs", "valid_frames", "FrameFilter",
           "UnreadableFrame", "report_skipped_frames"]

# SiamFC draws the resize interpolation at random; Lanczos is left out (10x slower in warpAffine)
_INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_NEAREST)
# cv2.imread flags that decode a JPEG at 1/2, 1/4, 1/8 resolution (much faster for big frames)
# (EXIF orientation ignored, as data.frames decodes every frame)
_REDUCED = tuple((factor, flag | cv2.IMREAD_IGNORE_ORIENTATION) for factor, flag in (
    (8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2)))


@dataclass(frozen=True)
class FrameFilter:
    """SiamFC's valid-frame conditions (siamfc-pytorch ``Pair._filter``)."""

    min_side: float = 20.0           # px, both sides
    max_side: float = 500.0
    min_relative: float = 0.01       # side / image side, both
    max_relative: float = 0.5
    max_aspect: float = 4.0          # w/h within [1/max_aspect, max_aspect]
    cover_fraction: float = 0.3      # cover > max(1, cover_fraction * max cover of the sequence)


def valid_frames(boxes: np.ndarray, image_size, absent=None, cover=None, rules: FrameFilter = FrameFilter()) -> np.ndarray:
    """Indices of frames usable for training (SiamFC filter); image_size = (width, height)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    w, h = boxes[:, 2], boxes[:, 3]
    size = np.asarray(image_size, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(boxes).all(axis=1)
        ok &= (w * h >= rules.min_side) & (np.minimum(w, h) >= rules.min_side) & (np.maximum(w, h) <= rules.max_side)
        rel = boxes[:, 2:] / size
        ok &= (rel.min(axis=1) >= rules.min_relative) & (rel.max(axis=1) <= rules.max_relative)
        aspect = w / np.maximum(h, 1.0)
        ok &= (aspect >= 1.0 / rules.max_aspect) & (aspect <= rules.max_aspect)
    if absent is not None:
        ok &= ~np.asarray(absent, dtype=bool)
    if cover is not None and len(cover):
        cover = np.asarray(cover, dtype=np.float64)
        ok &= cover > max(1.0, rules.cover_fraction * cover.max())
    return np.flatnonzero(ok)


def _image_size(path: str) -> tuple:
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


class UnreadableFrame(DatasetError):
    """A training frame that cannot be decoded (truncated JPEG, corrupt file): the samplers skip it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path, self.reason = path, reason
        self.frame_id = -1                    # set by the sampler: its id for frame_path


def report_skipped_frames(batch: dict, reported: set, pairs, stream=None) -> int:
    """The number of unreadable frames the samplers skipped for a collated ``batch`` of ``pairs``
    (the dataset it came from); prints one ``warning:`` line to ``stream`` (stderr) for each frame
    not in ``reported`` yet, and adds it. Runs in the training process, so a file is named once
    however many DataLoader workers (new processes every epoch) meet it."""
    import sys

    ids = torch.as_tensor(batch.get("skipped_ids", torch.empty(0))).flatten().tolist()
    for frame_id in ids:
        if frame_id < 0 or frame_id in reported:
            continue
        reported.add(frame_id)
        path = pairs.frame_path(frame_id)
        try:                              # the reason, decoded again once per file
            _read_rgb(path, 0.0, 1)
            reason = "unreadable when sampled"
        except DatasetError as exc:
            reason = getattr(exc, "reason", None) or str(exc)
        print(f"warning: skipping training frame {path}: {reason}", file=stream or sys.stderr)
    return int(torch.as_tensor(batch.get("skipped_frames", 0)).sum())


def _read_rgb(path: str, crop_side: float, out_size: int) -> tuple:
    """(RGB image, factor): the frame decoded at 1/factor resolution when the crop is reduced that much anyway.

    A JPEG that does not end with the end-of-image marker (FF D9) is decoded by Pillow, which
    tells a cut-off file (libjpeg, as cv2 uses it, fills the missing rows with grey and only
    warns) from one with padding after the marker; the rule is data.frames.read_frame's.
    Raises UnreadableFrame for a truncated or undecodable file, DatasetError when it cannot be read."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if data.size == 0:
        raise UnreadableFrame(path, "empty file")
    try:
        check_image_header(data.tobytes(), f"training frame {path}")
    except FrameError as exc:
        raise DatasetError(str(exc)) from None
    if data[:2].tobytes() == b"\xff\xd8" and data[-2:].tobytes() != b"\xff\xd9":
        return _read_rgb_pillow(path, data), 1
    for factor, flag in _REDUCED:
        if crop_side / factor >= out_size:
            image = cv2.imdecode(data, flag)
            break
    else:
        factor, image = 1, cv2.imdecode(data, COLOR_FLAGS)
    if image is None or image.size == 0:
        raise UnreadableFrame(path, "not an image OpenCV can decode (corrupt?)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), factor


def _read_rgb_pillow(path: str, data: np.ndarray) -> np.ndarray:
    import io

    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            image.load()                        # raises OSError on a truncated file
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableFrame(path, f"truncated or corrupt JPEG (no end-of-image marker; {exc})") from None


# draws of another pair for an item whose pair holds an unreadable frame, before giving up
_MAX_REDRAWS = 32


def _draw_key(seed: int, epoch: int, index: int, redraw: int) -> list:
    """The generator seed of an item's draw; the first draw's is the one used before redraws existed
    (a resumed run samples the same pairs)."""
    return [seed, epoch, int(index)] + ([0x726564, int(redraw)] if redraw else [])


def _wrap(angle: float) -> float:
    return (angle + 180.0) % 360.0 - 180.0


@dataclass
class _Entry:
    seq: object
    valid: np.ndarray         # valid frame indices (sorted)
    z_pos: np.ndarray         # positions in `valid` that have a partner within frame_range
    lo: np.ndarray            # per position: first position of its window in `valid`
    hi: np.ndarray            # per position: one past the last


class PairSampler(torch.utils.data.Dataset):
    """SiamFC training pairs from a list of ``data.Sequence``.

    Item: dict with "z" float32 (3, exemplar, exemplar) and "x" float32 (3, instance, instance),
    RGB 0..255; "box_z", "box_x" float32 (4,) target box x1, y1, x2, y2 in crop pixels (after
    augmentation; in x, when rotated, the bounds of the ellipse inscribed in the rotated target box);
    "angle_x" float32, the target's rotation in x relative to z in degrees, counter-clockwise
    (ground-truth angles when the sequences carry them, plus the rotation augmentation);
    "angle_known" float32, 1 when the sequences' angles were known; "skipped_frames" int64, the
    unreadable frames (truncated JPEG, corrupt file) skipped for this item by drawing another pair,
    and "skipped_ids" int64 (_MAX_REDRAWS,), their ids (``frame_path``), -1 padded.

    Sampling is a deterministic function of (seed, epoch, index): call ``set_epoch`` before each
    epoch (with DataLoader workers, before the loader is iterated; not with persistent_workers).
    """

    def __init__(self, sequences, pairs_per_epoch: int = 10000, exemplar_size=127, instance_size=255, context=0.5,
                 frame_range=100, augment=True, max_rotation_deg=0.0, seed=0, *, max_stretch=0.05,
                 max_shift=4.0, gray_prob=0.2, color_jitter=0.1, blur_prob=0.1, frame_filter: FrameFilter = FrameFilter(),
                 upright_twin: bool = False):
        super().__init__()
        if int(pairs_per_epoch) < 1:
            raise ValueError(f"pairs_per_epoch must be >= 1, got {pairs_per_epoch}")
        if not (0 < int(exemplar_size) <= int(instance_size)):
            raise ValueError(f"need 0 < exemplar_size <= instance_size, got {exemplar_size}, {instance_size}")
        if int(frame_range) < 1:
            raise ValueError(f"frame_range must be >= 1, got {frame_range}")
        if not (context >= 0 and max_rotation_deg >= 0 and max_stretch >= 0 and max_shift >= 0):
            raise ValueError("context, max_rotation_deg, max_stretch and max_shift must be >= 0")
        self.pairs_per_epoch = int(pairs_per_epoch)
        self.exemplar_size, self.instance_size = int(exemplar_size), int(instance_size)
        self.context, self.frame_range = float(context), int(frame_range)
        self.augment, self.max_rotation_deg = bool(augment), float(max_rotation_deg)
        self.seed, self.epoch = int(seed), 0
        self.max_stretch, self.max_shift = float(max_stretch), float(max_shift)
        self.gray_prob, self.color_jitter, self.blur_prob = float(gray_prob), float(color_jitter), float(blur_prob)
        self.frame_filter = frame_filter
        self.upright_twin = bool(upright_twin)    # also the search crop without the extra rotation
        self._unreadable: dict[str, str] = {}      # path -> reason: frames skipped in this process (for errors)
        self.entries = self._index(list(sequences))
        self._first_ids = np.cumsum([0] + [self._frames_of(k) for k in range(len(self.entries))])

    # -- indexing ---------------------------------------------------------------------------------
    def _index(self, sequences) -> list:
        if not sequences:
            raise DatasetError("PairSampler: no sequences given")
        entries, dropped = [], []
        for seq in sequences:
            if len(seq.img_files) == 0:
                dropped.append(seq.name)
                continue
            valid = valid_frames(seq.boxes, _image_size(seq.img_files[0]), seq.absent, seq.cover, self.frame_filter)
            # frame_range counts source frames: a subsampled video's stored frames lie frame_stride apart
            reach = max(1, self.frame_range // max(1, getattr(seq, "frame_stride", 1)))
            lo = np.searchsorted(valid, valid - reach, side="left")
            hi = np.searchsorted(valid, valid + reach, side="right")
            z_pos = np.flatnonzero(hi - lo > 1)          # at least one other valid frame in range
            if z_pos.size == 0:
                dropped.append(seq.name)
                continue
            entries.append(_Entry(seq, valid, z_pos, lo, hi))
        if dropped:
            shown = ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else "")
            warnings.warn(f"PairSampler: dropped {len(dropped)} of {len(sequences)} sequences with no valid "
                          f"frame pair within {self.frame_range} frames (SiamFC frame filter): {shown}",
                          stacklevel=3)
        if not entries:
            raise DatasetError(f"PairSampler: none of the {len(sequences)} sequences has two valid frames within "
                               f"{self.frame_range} frames of each other (target size/aspect limits, absence "
                               f"and cover labels of the SiamFC frame filter)")
        return entries

    @property
    def sequences(self) -> list:
        """The sequences kept (those with at least one valid pair)."""
        return [e.seq for e in self.entries]

    def _frames_of(self, entry: int) -> int:
        return len(self.entries[entry].seq.img_files)

    def _path_of(self, entry: int, frame: int) -> str:
        return self.entries[entry].seq.img_files[frame]

    @property
    def num_frames(self) -> int:
        """How many frame ids (``frame_path``) the sampler has."""
        return int(self._first_ids[-1])

    def frame_path(self, frame_id: int) -> str:
        """The file of a frame id, as items' "skipped_ids" give them."""
        entry = int(np.searchsorted(self._first_ids, int(frame_id), side="right")) - 1
        return self._path_of(entry, int(frame_id) - int(self._first_ids[entry]))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.pairs_per_epoch

    # -- sampling ---------------------------------------------------------------------------------
    def sample_frames(self, index: int, redraw: int = 0) -> tuple:
        """(entry index, z frame, x frame) of item ``index`` in the current epoch, and its generator;
        ``redraw`` > 0 draws another pair for the item (after an unreadable frame)."""
        rng = np.random.default_rng(_draw_key(self.seed, self.epoch, index, redraw))
        e = int(rng.integers(len(self.entries)))
        entry = self.entries[e]
        k = int(entry.z_pos[rng.integers(entry.z_pos.size)])
        j = int(rng.integers(entry.lo[k], entry.hi[k] - 1))
        if j >= k:
            j += 1                                        # any other valid frame in the window
        return e, int(entry.valid[k]), int(entry.valid[j]), rng

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.pairs_per_epoch:
            raise IndexError(index)
        return self._skipping_unreadable(index, self._pair)

    def _pair(self, index: int, redraw: int) -> dict:
        e, z_frame, x_frame, rng = self.sample_frames(index, redraw)
        seq = self.entries[e].seq
        angle_known = seq.angles is not None
        relative = float(seq.angles[x_frame] - seq.angles[z_frame]) if angle_known else 0.0
        try:
            return self.make_pair(rng, seq.img_files[z_frame], seq.boxes[z_frame], seq.img_files[x_frame],
                                  seq.boxes[x_frame], relative, angle_known)
        except UnreadableFrame as exc:
            frame = z_frame if exc.path == seq.img_files[z_frame] else x_frame
            exc.frame_id = int(self._first_ids[e]) + frame
            raise

    def _skipping_unreadable(self, index: int, make) -> dict:
        """``make(index, redraw)`` until its pair has no unreadable frame: a truncated or corrupt
        frame of a big dataset is skipped (drawing another pair), not fatal. The item's
        "skipped_frames" counts the frames skipped for it and "skipped_ids" names them, for
        :func:`report_skipped_frames` to warn about each file once in the training process."""
        skipped = torch.full((_MAX_REDRAWS,), -1, dtype=torch.int64)
        for redraw in range(_MAX_REDRAWS):
            try:
                item = make(index, redraw)
            except UnreadableFrame as exc:
                self._unreadable[exc.path] = exc.reason
                skipped[redraw] = exc.frame_id
                continue
            item["skipped_frames"] = torch.tensor(redraw, dtype=torch.int64)
            item["skipped_ids"] = skipped
            return item
        shown = "; ".join(f"{path}: {reason}" for path, reason in list(self._unreadable.items())[-3:])
        raise DatasetError(f"cannot read images for training pair {index}: {_MAX_REDRAWS} draws in a row met "
                           f"unreadable frames ({len(self._unreadable)} unreadable so far, e.g. {shown}); "
                           "check the dataset")

    def make_pair(self, rng, path_z, box_z, path_x, box_x, relative_angle: float = 0.0,
                  angle_known: bool = False) -> dict:
        """The augmented (z, x) crops of a target box in two images (the same image for photo pairs)."""
        aug = self.augment
        # draws in a fixed order, whether or not each is used
        stretch_z, stretch_x = 1.0 + rng.uniform(-self.max_stretch, self.max_stretch, 2) * aug
        shift = np.round(rng.uniform(-self.max_shift, self.max_shift, 2)) * aug
        rotation = rng.uniform(-self.max_rotation_deg, self.max_rotation_deg) if self.max_rotation_deg > 0 else 0.0
        interp_z, interp_x = (_INTERPOLATIONS[i] if aug else cv2.INTER_LINEAR for i in rng.integers(len(_INTERPOLATIONS), size=2))
        gray = aug and rng.random() < self.gray_prob
        jitter_z, jitter_x = rng.uniform(-1, 1, (2, 4)) * self.color_jitter
        blur_sigma = rng.uniform(0.5, 1.5) if (aug and rng.random() < self.blur_prob) else 0.0

        ez, ex = self.exemplar_size, self.instance_size
        # template: target centred, its SiamFC context square resized to the exemplar size
        side_z = context_size(box_z[2], box_z[3], self.context) / stretch_z
        centre_z = np.array([box_z[0] + box_z[2] / 2, box_z[1] + box_z[3] / 2])
        z, z_box = self._crop(path_z, box_z, centre_z, side_z, ez, 0.0, interp_z)
        # search: same scale from the target's own box in its frame, target shifted by `shift`
        # crop pixels and rotated by `rotation` degrees counter-clockwise about its centre
        side_x = context_size(box_x[2], box_x[3], self.context) * ex / ez / stretch_x
        target_x = np.array([box_x[0] + box_x[2] / 2, box_x[1] + box_x[3] / 2])
        sampling_angle = -rotation                       # content rotated by +rotation in the crop
        a = math.radians(sampling_angle)
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        centre_x = target_x - (side_x / ex) * rot @ shift
        x, x_box = self._crop(path_x, box_x, centre_x, side_x, ex, sampling_angle, interp_x)
        searches = [x]
        if self.upright_twin:     # the same search crop unturned: the target at the same crop position
            searches.append(self._crop(path_x, box_x, target_x - (side_x / ex) * shift, side_x, ex, 0.0, interp_x)[0])

        if aug:       # colour changes as one affine colour map per crop, on uint8 (fast)
            z = cv2.transform(z, _color_matrix(z, gray, jitter_z))
            colour = _color_matrix(x, gray, jitter_x)
            searches = [cv2.transform(crop, colour) for crop in searches]
            if blur_sigma > 0:
                searches = [cv2.GaussianBlur(crop, (0, 0), blur_sigma) for crop in searches]
        x = searches[0]
        twin = {}
        if self.upright_twin:
            twin = {"x_upright": torch.from_numpy(np.ascontiguousarray(searches[1].transpose(2, 0, 1), dtype=np.float32)),
                    "rotation_x": torch.tensor(rotation, dtype=torch.float32)}
        return {**twin,
            "z": torch.from_numpy(np.ascontiguousarray(z.transpose(2, 0, 1), dtype=np.float32)),
            "x": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)),
            "box_z": torch.tensor(z_box, dtype=torch.float32),
            "box_x": torch.tensor(x_box, dtype=torch.float32),
            "angle_x": torch.tensor(_wrap(relative_angle + rotation), dtype=torch.float32),
            "angle_known": torch.tensor(float(angle_known), dtype=torch.float32),
        }

    @staticmethod
    def _crop(path, box, centre, side, out_size, angle, interp) -> tuple:
        """Crop (uint8) and the target box x1, y1, x2, y2 in it.

        A rotated crop's box bounds the ellipse inscribed in the turned target box (the trackers'
        ``axis_box = "ellipse"`` rule), not the turned box's corners: those overstate a real target's
        extent (a round target's box would grow 41% at 45 degrees), and SiamRPN, which regresses
        this box, then learns to grow its box on every frame.
        """
        image, factor = _read_rgb(path, side, out_size)
        crop = crop_and_resize(image, centre / factor, side / factor, out_size, angle_deg=angle, interpolation=interp)
        x0, y0, w0, h0 = box
        box_centre = image_to_crop([x0 + w0 / 2, y0 + h0 / 2], centre, side, out_size, angle)
        scale = out_size / side
        x, y, w, h = axis_aligned_box(box_centre, (w0 * scale, h0 * scale), angle, "ellipse")
        return crop, np.array([x, y, x + w, y + h])


_LUMA = np.array([0.299, 0.587, 0.114])
_CAST = np.array([0.5, 0.0, -0.5]) * 255


def _color_matrix(img: np.ndarray, gray: bool, params: np.ndarray) -> np.ndarray:
    """3x4 affine colour map: optional grey, then saturation, contrast (about the crop's mean)
    and brightness changed by factors 1 + params[0..2], plus a warm/cool cast params[3]."""
    brightness, contrast, saturation, cast = params
    a = np.tile(_LUMA, (3, 1)) if gray else np.eye(3)
    a = ((1.0 + saturation) * np.eye(3) - saturation / 3.0 * np.ones((3, 3))) @ a
    mean = a @ np.asarray(cv2.mean(img)[:3])
    b = -contrast * mean
    a = (1.0 + contrast) * a
    a, b = (1.0 + brightness) * a, (1.0 + brightness) * b + cast * _CAST
    return np.concatenate([a, b[:, None]], axis=1)


# ------------------------------------------------------------------------------------------------
# still photos with boxes (data.photos): a pair is two augmented crops of one photo
class PhotoPairSampler(PairSampler):
    """SiamFC pairs from still photos: template and search crop of the same object in one photo.

    The motion a video gives is simulated by the augmentation, so it is stronger than for video
    pairs: the target shifted by up to ``max_shift`` crop pixels, its scale changed by up to
    ``max_stretch``, rotated by any angle up to ``max_rotation_deg`` (default: any rotation), plus
    blur and colour changes. The other objects of the photo stay in the crops as distractors (the
    blood-cell photos hold dozens of near-identical cells). Items as :class:`PairSampler`'s, with
    ``angle_x`` the applied rotation and ``angle_known`` 1.
    """

    def __init__(self, photos, pairs_per_epoch: int = 10000, exemplar_size=127, instance_size=255, context=0.5,
                 augment=True, max_rotation_deg=180.0, seed=0, *, max_stretch=0.25, max_shift=48.0,
                 gray_prob=0.2, color_jitter=0.15, blur_prob=0.2, frame_filter: FrameFilter = FrameFilter(),
                 upright_twin: bool = False):
        super().__init__(photos, pairs_per_epoch, exemplar_size, instance_size, context, 1, augment,
                         max_rotation_deg, seed, max_stretch=max_stretch, max_shift=max_shift,
                         gray_prob=gray_prob, color_jitter=color_jitter, blur_prob=blur_prob,
                         frame_filter=frame_filter, upright_twin=upright_twin)

    def _index(self, photos) -> list:
        if not photos:
            raise DatasetError("PhotoPairSampler: no photos given")
        entries = []
        for photo in photos:
            valid = valid_frames(photo.boxes, photo.size, rules=self.frame_filter)
            if valid.size:
                entries.append((photo, valid))
        if not entries:
            raise DatasetError(f"PhotoPairSampler: no box of the {len(photos)} photos passes the size filter")
        return entries

    @property
    def sequences(self) -> list:
        return [photo for photo, _ in self.entries]

    def _frames_of(self, entry: int) -> int:
        return 1

    def _path_of(self, entry: int, frame: int) -> str:
        return self.entries[entry][0].path

    def sample_frames(self, index: int, redraw: int = 0) -> tuple:
        """(photo index, box index, box index) of item ``index`` in the current epoch, and its generator."""
        rng = np.random.default_rng(_draw_key(self.seed, self.epoch, index, redraw))
        e = int(rng.integers(len(self.entries)))
        valid = self.entries[e][1]
        k = int(valid[rng.integers(valid.size)])
        return e, k, k, rng

    def _pair(self, index: int, redraw: int) -> dict:      # PairSampler.__getitem__ draws through it
        e, k, _, rng = self.sample_frames(index, redraw)
        photo = self.entries[e][0]
        try:
            return self.make_pair(rng, photo.path, photo.boxes[k], photo.path, photo.boxes[k], 0.0, True)
        except UnreadableFrame as exc:
            exc.frame_id = e
            raise


class MixedPairs(torch.utils.data.Dataset):
    """Pairs drawn from several samplers (video folders, photos, generated sequences) by weight.

    Item ``i`` of an epoch comes from source k with probability weight_k / Σ weights, chosen by
    (seed, epoch, i), and is that source's item ``i``: the mix is as reproducible as its parts.
    """

    def __init__(self, sources, weights, pairs_per_epoch: int, seed: int = 0, names=None):
        weights = np.asarray(weights, dtype=np.float64)
        if len(sources) == 0 or len(sources) != len(weights):
            raise ValueError("MixedPairs needs one weight per source and at least one source")
        if not (np.isfinite(weights).all() and (weights >= 0).all() and weights.sum() > 0):
            raise ValueError(f"source weights must be >= 0 with a positive sum, got {weights.tolist()}")
        for source in sources:
            if len(source) < pairs_per_epoch:
                raise ValueError(f"every source needs at least {pairs_per_epoch} pairs per epoch")
        self.sources = list(sources)
        self.names = list(names) if names is not None else [f"source{k}" for k in range(len(sources))]
        self.cumulative = np.cumsum(weights / weights.sum())
        self.pairs_per_epoch, self.seed, self.epoch = int(pairs_per_epoch), int(seed), 0
        # frame ids of the sources one range after another (a dataset without frame ids has none)
        self._first_ids = np.cumsum([0] + [getattr(source, "num_frames", 0) for source in self.sources])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for source in self.sources:
            source.set_epoch(epoch)

    def __len__(self) -> int:
        return self.pairs_per_epoch

    def source_index(self, index: int) -> int:
        u = np.random.default_rng([self.seed, self.epoch, int(index), 0x6D6978]).random()
        return min(int(np.searchsorted(self.cumulative, u, side="right")), len(self.sources) - 1)

    @property
    def num_frames(self) -> int:
        return int(self._first_ids[-1])

    def frame_path(self, frame_id: int) -> str:
        """The file of a frame id of the items' "skipped_ids" (the sources' ids, one range after another)."""
        k = int(np.searchsorted(self._first_ids, int(frame_id), side="right")) - 1
        return self.sources[k].frame_path(int(frame_id) - int(self._first_ids[k]))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.pairs_per_epoch:
            raise IndexError(index)
        k = self.source_index(index)
        item = self.sources[k][index]
        if "skipped_ids" in item:
            ids = item["skipped_ids"]
            item["skipped_ids"] = torch.where(ids >= 0, ids + int(self._first_ids[k]), ids)
        return item
