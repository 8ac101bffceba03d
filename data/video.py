"""Videos as trackers read them: a video file, a folder of frames (natural order: 2.jpg before
10.jpg), a numbered file pattern, a stream URL or a camera, as HxWx3 uint8 RGB frames.

:class:`FrameSource` is what ``tools/track.py --video`` and :func:`tracker.track_video` read; a
source that cannot be opened or read is one :class:`VideoError` naming it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from .frames import TrackerError
from .sequence import IMAGE_EXTENSIONS

__all__ = ["FrameSource", "VideoError", "natural_key", "bgr_to_rgb"]



class VideoError(TrackerError):
    """A video, frame folder or camera that cannot be opened or read (the message names it)."""


def bgr_to_rgb(frame: np.ndarray, where: str) -> np.ndarray:
    """An OpenCV-decoded frame (gray, BGR, BGRA; 8/16-bit or float: data.frames.to_uint8) as HxWx3 uint8 RGB."""
    from data.frames import as_rgb

    if frame is None or frame.size == 0:
        raise VideoError(f"cannot read {where}")
    return as_rgb(frame, where, bgr=True)


def quiet_capture(target) -> cv2.VideoCapture:
    """cv2.VideoCapture without OpenCV's and FFmpeg's log lines (we report failures ourselves)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")   # AV_LOG_QUIET, read when FFmpeg starts
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    old = logging.getLogLevel() if logging is not None else None
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(target)
    finally:
        if logging is not None:
            logging.setLogLevel(old)


def natural_key(path: Path) -> list:
    """Sort key that orders the numbers in a name by value: frame2 < frame10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower())
            for part in re.split(r"(\d+)", path.name)]


class FrameSource:
    """Frames of a video file, an image folder or a camera, as RGB arrays; ``fps`` and ``count`` when known."""

    def __init__(self, spec: str):
        self.spec = spec
        self.files: list[Path] | None = None
        self.capture = None
        self.fps = None
        self.count = None
        path = Path(spec)
        if path.is_dir():
            # natural order: 2.jpg before 10.jpg (a plain text sort would track 1, 10, 11, 2, ...)
            self.files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                                key=natural_key)
            if not self.files:
                raise VideoError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {spec}")
            self.count = len(self.files)
        elif path.is_file():
            self.capture = quiet_capture(str(path))
            if not self.capture.isOpened():
                raise VideoError(f"cannot open video {spec} (not a video OpenCV can decode)")
            count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.count = count if count > 0 else None
            fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0)
            self.fps = fps if 0 < fps < 1000 else None
        elif spec.isdigit():
            self.capture = quiet_capture(int(spec))
            if not self.capture.isOpened():
                raise VideoError(f"cannot open camera {spec}")
        elif "://" in spec or "%" in path.name or spec.startswith("/dev/"):
            # a stream URL (rtsp://, http://...), a numbered file pattern (frame_%04d.jpg) or a
            # capture device: all through OpenCV
            self.capture = quiet_capture(spec)
            if not self.capture.isOpened():
                raise VideoError(f"cannot open {spec} (a stream URL, a file pattern such as frame_%04d.jpg, "
                                    "or a capture device that OpenCV can read)")
            count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.count = count if count > 0 and "%" in path.name else None
        else:
            raise VideoError(f"video not found: {spec} (give a video file, a folder of frames or a camera index)")

    def __iter__(self):
        if self.files is not None:
            from data.frames import read_frame

            first = None
            for path in self.files:
                frame = read_frame(path)            # FrameError: unreadable or truncated, named
                first = first or frame.shape[:2]
                if frame.shape[:2] != first:
                    raise VideoError(f"frame {path} is {frame.shape[1]}x{frame.shape[0]} but the folder's first "
                                        f"frame is {first[1]}x{first[0]}: the frames of one video share one size")
                yield frame
            return
        self.read, self.exhausted = 0, False
        while True:
            ok, frame = self.capture.read()
            if not ok:
                if self.read == 0:
                    raise VideoError(f"cannot read any frame from {self.spec}")
                self.exhausted = True
                return
            yield bgr_to_rgb(frame, f"frame {self.read} of {self.spec}")
            self.read += 1

    def short_read(self) -> str | None:
        """A message when a video file ended before the frame count its header announced."""
        read = getattr(self, "read", None)
        if self.count is None or read is None or not self.exhausted or read >= self.count:
            return None
        return (f"the video {self.spec} ended after {read} of the {self.count} frames its header announces "
                "(corrupt or truncated?)")

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
