"""Frames as the trackers take them: one decoder and one conversion to HxWx3 uint8 RGB for every
tool (track.py, the evaluation, the rotating benchmark), so that no path clips or saturates.

Conversion of pixel types (:func:`to_uint8`), the same whatever decoded the frame:

- uint8: as is; bool: 0/255.
- 16-bit (uint16 arrays, PIL ``I;16`` images, 16-bit PNG/TIFF): the high byte (``>> 8``), as
  ``cv2.imread(..., IMREAD_COLOR)`` does, so a 16-bit frame looks like its 8-bit export.
- other integers (PIL ``I``): as is when all values lie in 0..255, ``>> 8`` when in 0..65535,
  refused otherwise.
- float (float32 TIFF, PIL ``F``): values in [0, 1] are scaled by 255, values in [0, 255] are
  rounded; NaN, infinities or values outside [0, 255] are refused (no min-max stretch: it would
  change the brightness from frame to frame).

:func:`read_frame` decodes a file: a JPEG that does not end with its end-of-image marker through
Pillow, which reports a truncated file (OpenCV returns the decoded part padded with gray and only
logs a warning), a complete JPEG and everything else through
OpenCV (16-bit and float TIFF, PNG...), with Pillow as a fallback. EXIF orientation is ignored
(the stored pixel order, which benchmarks annotate), whichever library decodes; a header claiming
more than MAX_FRAME_SIDE / MAX_FRAME_PIXELS is refused before decoding. Importing this module is
light (no torch).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["TrackerError", "FrameError", "to_uint8", "as_rgb", "read_frame", "frame_size",
           "check_frame_size", "check_image_header", "COLOR_FLAGS"]


class TrackerError(ValueError):
    """Bad input to a tracker or to build_tracker (bad box, frame, checkpoint, option or device)."""


class FrameError(TrackerError):
    """A frame cannot be used: unreadable, truncated, of an unsupported pixel type, or of another
    size than the sequence's first frame. The message names the frame."""


_PIL_8BIT_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"}


def to_uint8(frame: np.ndarray, where: str = "frame") -> np.ndarray:
    """``frame`` (any channel count) as uint8, by the rules of the module docstring."""
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.bool_:
        return frame.astype(np.uint8) * 255
    if frame.size == 0:
        raise FrameError(f"{where}: empty image")
    if frame.dtype == np.uint16 or frame.dtype == np.dtype(">u2"):
        return (frame.astype(np.uint16) >> 8).astype(np.uint8)
    if np.issubdtype(frame.dtype, np.integer):
        low, high = int(frame.min()), int(frame.max())
        if low >= 0 and high <= 255:
            return frame.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return (frame.astype(np.uint16) >> 8).astype(np.uint8)
        raise FrameError(f"{where}: integer pixels in [{low}, {high}] fit neither 8 nor 16 bits")
    if np.issubdtype(frame.dtype, np.floating):
        if not np.isfinite(frame).all():
            raise FrameError(f"{where}: the {frame.dtype} image holds NaN or infinite pixels")
        low, high = float(frame.min()), float(frame.max())
        if low >= 0.0 and high <= 1.0:
            return np.rint(frame.astype(np.float64) * 255.0).astype(np.uint8)
        if low >= 0.0 and high <= 255.0:
            return np.rint(frame).astype(np.uint8)
        raise FrameError(f"{where}: {frame.dtype} pixels in [{low:g}, {high:g}]; expected [0, 1] or [0, 255] "
                         "(convert the frames to 8 bits first)")
    raise FrameError(f"{where}: unsupported pixel type {frame.dtype}")


def _channels_to_rgb(frame: np.ndarray, where: str, bgr: bool) -> np.ndarray:
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    elif frame.ndim == 3 and frame.shape[2] in (3, 4):
        frame = frame[:, :, :3]
        if bgr:
            frame = frame[:, :, ::-1]
    else:
        raise FrameError(f"{where}: expected an HxW, HxWx3 or HxWx4 image, got shape {frame.shape}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise FrameError(f"{where}: empty image of shape {frame.shape}")
    return np.ascontiguousarray(frame)


def as_rgb(image, where: str = "frame", bgr: bool = False) -> np.ndarray:
    """A PIL image of any mode, or an array HxW / HxWx1 / HxWx3 / HxWx4 (RGB order, BGR when
    ``bgr``; alpha dropped) of any pixel type :func:`to_uint8` accepts, as HxWx3 uint8 RGB."""
    if isinstance(image, Image.Image):
        if image.mode == "RGB":
            return np.asarray(image)
        if image.mode in _PIL_8BIT_MODES:
            return np.asarray(image.convert("RGB"))
        image = np.asarray(image)            # I;16*, I, F: converted by the rules above
    return _channels_to_rgb(to_uint8(np.asarray(image), where), where, bgr)


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


# The largest frame decoded: 16384 px a side and 2**27 pixels (Pillow refuses twice its 89 Mpixel
# limit anyway); a header claiming more (a typo, a damaged or hostile file) is refused before
# anything is allocated.
MAX_FRAME_SIDE, MAX_FRAME_PIXELS = 16384, 1 << 27
# EXIF orientation is ignored everywhere (stored pixel order): benchmarks annotate the stored
# pixels, and decoding JPEGs by one library or another must not turn a frame against its boxes.
COLOR_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def check_image_header(data: bytes, where: str) -> None:
    """Refuse an image whose header claims a size beyond MAX_FRAME_SIDE / MAX_FRAME_PIXELS (read
    from the header alone, nothing decoded)."""
    import io
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:  # beyond twice Pillow's own limit: larger than ours too
        raise FrameError(f"{where}: its header claims too many pixels to decode ({exc})") from None
    except (OSError, ValueError, UnidentifiedImageError):
        return                                   # not Pillow's format: the decoders say what is wrong
    if max(width, height) > MAX_FRAME_SIDE or width * height > MAX_FRAME_PIXELS:
        raise FrameError(f"{where}: its header claims {width}x{height} pixels, beyond the {MAX_FRAME_SIDE} px a side "
                         f"and {MAX_FRAME_PIXELS} pixels this toolkit decodes (a damaged or wrong file?)")


def read_frame(path) -> np.ndarray:
    """Decode an image file as HxWx3 uint8 RGB; FrameError naming the file when it cannot be read,
    is truncated or holds pixels that cannot be converted faithfully."""
    path = Path(path)
    where = f"frame {path}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FrameError(f"cannot read {where}: {exc.strerror or exc}") from None
    if not data:
        raise FrameError(f"{where}: empty file")
    check_image_header(data, where)
    if not _is_jpeg(data):
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded is not None and decoded.size:
            return as_rgb(decoded, where, bgr=True)
    elif data.endswith(b"\xff\xd9"):
        # A complete JPEG (it ends with the end-of-image marker, which a cut-off file lacks): OpenCV
        # decodes it ~3x faster than Pillow, to the same pixels (both use libjpeg-turbo's defaults;
        # checked on the real test frames). Anything else goes through Pillow, which reports truncation.
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), COLOR_FLAGS)
        if decoded is not None and decoded.size:
            return np.ascontiguousarray(decoded[:, :, ::-1])
    import io

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()                  # raises OSError on a truncated file
            return as_rgb(image, where)
    except FrameError:
        raise
    except UnidentifiedImageError:
        raise FrameError(f"cannot read {where}: not an image OpenCV or Pillow can decode "
                         "(corrupt or truncated?)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FrameError(f"cannot read {where}: truncated or corrupt ({exc})") from None


def frame_size(image) -> tuple[int, int]:
    """(width, height) of a PIL image or an image array, without converting it."""
    if isinstance(image, Image.Image):
        return image.size
    shape = np.shape(image)
    return int(shape[1]), int(shape[0])


def check_frame_size(expected: tuple[int, int] | None, image, where: str | None = None) -> None:
    """Refuse a frame whose size differs from the one the tracker was initialised on: its boxes
    would be in another coordinate frame (silently wrong)."""
    if expected is None:
        return
    size = frame_size(image)
    if tuple(size) != tuple(expected):
        where = f" ({where})" if where else ""
        raise FrameError(f"frame size changed from {expected[0]}x{expected[1]} at init to {size[0]}x{size[1]}"
                         f"{where}: its box would be in another image's coordinates; call init() to start a "
                         "new sequence")
