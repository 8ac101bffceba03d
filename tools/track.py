#!/usr/bin/env python
"""Track one object through a video, a folder of frames or a camera.

    python tools/track.py --video clip.mp4 --init-box 310,120,60,140 --output out.mp4 --boxes out.txt
    python tools/track.py --video frames/ --tracker siamrpn --checkpoint runs/siamrpn.pth
    python tools/track.py --video 0                  # camera 0; select the target with the mouse
    python tools/track.py                            # the embedded demo (a generated rotating sequence)

Without --init-box the target is selected with the mouse (cv2.selectROI) when a display exists.
The box file has one "x,y,w,h" row per frame, the first being the initial box; trackers that
estimate the rotation add its angle: degrees counter-clockwise as seen on screen, 0 at the first
frame, in [-180, 180). The video is MPEG-4 Part 2 (fourcc mp4v), which web browsers do not play.
The demo writes runs/demo/track_demo.mp4 and runs/demo/track_demo_boxes.txt and prints the mean
IoU to the generated ground truth. Bad input ends with one "error: ..." line and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from data.video import FrameSource, VideoError, quiet_capture  # noqa: E402

DEMO_DIR = Path("runs") / "demo"
MAX_DEMO_FRAMES = 10_000      # the demo's frames are all held in memory (10000 of 320x240: 2.3 GB)
BOX_COLOR = (0, 255, 0)       # BGR
POLYGON_COLOR = (0, 200, 255)


class TrackCLIError(Exception):
    """A user error: printed as one line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# outputs
class AtomicVideoWriter:
    """cv2.VideoWriter (fourcc mp4v: MPEG-4 Part 2, the one MP4 codec OpenCV's pip wheels encode;
    web browsers do not play it) writing to a temporary file that is renamed into place on close()."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        from common.atomic import check_replaceable, temp_path_beside

        self.path = Path(path)
        check_replaceable(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path_beside(self.path, self.path.suffix or ".mp4")   # a killed run's is cleaned next time
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
        if not self.writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise TrackCLIError(f"cannot write video {self.path} (try an .mp4 name)")
        self.size = size
        self.frames = 0

    def write(self, frame_bgr: np.ndarray) -> None:
        if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.size:
            frame_bgr = cv2.resize(frame_bgr, self.size)
        self.writer.write(frame_bgr)
        self.frames += 1

    def close(self) -> None:
        """Finish the file and rename it into place, once it is known to hold every frame.

        cv2.VideoWriter reports no write error (a full disk gives an unplayable file), so the
        file is opened again and its frame count checked; an incomplete file is removed and an
        existing video at ``path`` stays as it was."""
        from common.atomic import user_file_mode

        self.writer.release()
        try:
            capture = quiet_capture(str(self.tmp))
            written = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if capture.isOpened() else 0
            capture.release()
            if written < self.frames:
                raise TrackCLIError(f"cannot write video {self.path}: the file holds {written} of {self.frames} "
                                    "frames (disk full, or over a file-size limit?); nothing was replaced")
            os.chmod(self.tmp, user_file_mode())
            os.replace(self.tmp, self.path)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        self.writer.release()
        self.tmp.unlink(missing_ok=True)


BOX_FORMATS = ("xywh", "xywha", "poly")


class Track(NamedTuple):
    """What track_frames returns: per frame the box, the angle (None when the tracker does not
    estimate it), the rotated box drawn (its corners; the box's own where there is no rotation),
    and the seconds spent in the tracker."""

    boxes: np.ndarray            # (N, 4) x, y, w, h
    angles: np.ndarray | None    # (N,) degrees CCW, 0 at the first frame
    polygons: np.ndarray         # (N, 8) x1, y1, ..., x4, y4
    elapsed: float


def write_boxes(path: Path, result: Track, box_format: str | None = None) -> None:
    """One row per frame: ``xywh``; ``xywha`` (x,y,w,h,angle in degrees CCW); ``poly`` (the
    corners x1,y1,...,x4,y4 of the rotated box drawn). Default: xywha when the tracker estimates
    the rotation, else xywh."""
    from evaluation.experiment import write_table_atomic

    if box_format is None:
        box_format = "xywha" if result.angles is not None else "xywh"
    if box_format == "poly":
        rows = result.polygons
    elif box_format == "xywha":
        angles = result.angles if result.angles is not None else np.zeros(len(result.boxes))
        rows = np.concatenate([result.boxes, angles.reshape(-1, 1)], axis=1)
    else:
        rows = result.boxes
    write_table_atomic(path, np.asarray(rows, dtype=np.float64), "%.2f")


def draw(frame_rgb: np.ndarray, box, polygon=None, label: str | None = None) -> np.ndarray:
    """A BGR copy of the frame with the box (and the rotated polygon, when there is one) drawn."""
    out = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    x, y, w, h = (float(v) for v in box)
    cv2.rectangle(out, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))), BOX_COLOR, 2)
    if polygon is not None:
        pts = np.round(np.asarray(polygon, dtype=np.float64).reshape(4, 2)).astype(np.int32)
        cv2.polylines(out, [pts], True, POLYGON_COLOR, 2)
    if label:
        # white text on a filled dark box: readable on any frame (an outline drawn as a thicker
        # second pass does not line up with the text in OpenCV 5's font rendering)
        font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
        (w, h), base = cv2.getTextSize(label, font, scale, 1)
        cv2.rectangle(out, (2, 2), (10 + w, 10 + h + base), (0, 0, 0), cv2.FILLED)
        cv2.putText(out, label, (6, 6 + h), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


# ---------------------------------------------------------------------------------------------
def display_available() -> bool:
    """Whether cv2 windows can open: a desktop OS, or an X11/Wayland session on Linux."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def parse_box(text: str) -> np.ndarray:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        box = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise TrackCLIError(f"--init-box must be x,y,w,h numbers, got {text!r}") from None
    if box.shape != (4,) or not np.isfinite(box).all():
        raise TrackCLIError(f"--init-box must be 4 numbers x,y,w,h, got {text!r}")
    return box


def select_box(frame_rgb: np.ndarray) -> np.ndarray:
    x, y, w, h = cv2.selectROI("select the target, then press ENTER", cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR),
                               showCrosshair=True, fromCenter=False)
    cv2.destroyWindow("select the target, then press ENTER")
    if w <= 0 or h <= 0:
        raise TrackCLIError("no target selected")
    return np.array([x, y, w, h], dtype=np.float64)


def track_frames(tracker, frames, init_box, video_path=None, fps=25.0, total=None, show=False,
                 select=False, label_name=""):
    """Run ``tracker`` over an iterable of RGB frames: a :class:`Track` (boxes, angles or None,
    the rotated boxes drawn, seconds spent in the tracker). Angles are the tracker's rotation
    estimates (0 at the first frame).

    The first frame's box is ``init_box`` (or the mouse selection when ``select``). Frames with the
    box drawn go to ``video_path``; with ``show`` they are displayed (q or Esc stops).
    """
    from tqdm import tqdm

    from data import box_to_polygon
    from tracker.siamfc import TrackerError, check_init_box

    boxes, angles, polygons, writer, elapsed = [], [], [], None, 0.0
    bar = tqdm(total=total, unit="frame", desc="tracking", file=sys.stderr, dynamic_ncols=True)
    try:
        for index, frame in enumerate(frames):
            if index == 0:
                box = select_box(frame) if select else init_box
                try:
                    box = check_init_box(box, frame.shape)
                except TrackerError as exc:
                    raise TrackCLIError(str(exc)) from None
                start = time.perf_counter()
                tracker.init(frame, box)
                elapsed += time.perf_counter() - start
                polygon = None
                if video_path is not None:
                    writer = AtomicVideoWriter(video_path, fps, (frame.shape[1], frame.shape[0]))
            else:
                start = time.perf_counter()
                box = np.asarray(tracker.update(frame), dtype=np.float64)
                elapsed += time.perf_counter() - start
                polygon = getattr(tracker, "last_polygon", None)
            boxes.append(box)
            angles.append(getattr(tracker, "last_angle", None) if index else 0.0)
            polygons.append(np.asarray(polygon, dtype=np.float64).reshape(8) if polygon is not None
                            else box_to_polygon(np.asarray(box, dtype=np.float64).reshape(1, 4))[0])
            bar.update()
            if writer is not None or show:
                score = getattr(tracker, "last_score", None)
                label = f"{label_name} #{index}" + (f" score {score:.2f}" if index and score is not None else "")
                drawn = draw(frame, box, polygon, label)
                if writer is not None:
                    writer.write(drawn)
                if show:
                    cv2.imshow("track", drawn)
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        break
        if not boxes:
            raise TrackCLIError("the video has no frames")
        if writer is not None:
            writer.close()
            writer = None
    finally:
        bar.close()
        if writer is not None:
            writer.abort()
        if show:
            cv2.destroyAllWindows()
    has_angle = len(angles) > 1 and all(a is not None for a in angles)
    return Track(np.stack(boxes), np.asarray(angles, dtype=np.float64) if has_angle else None,
                 np.stack(polygons), elapsed)


def print_speed(num_frames: int, elapsed: float) -> None:
    fps = (num_frames / elapsed) if elapsed > 0 else float("inf")
    print(f"tracked {num_frames} frames in {elapsed:.2f} s of tracker time: {fps:.1f} FPS")


def check_args(args) -> None:
    """The bounds of the options, checked before a tracker is built or a frame is read."""
    from common.threads import check_threads

    if args.video is None:
        if args.init_box is not None:
            raise TrackCLIError("--init-box needs --video (without --video the demo runs)")
        if not 2 <= args.demo_frames <= MAX_DEMO_FRAMES:
            raise TrackCLIError(f"--demo-frames must be from 2 to {MAX_DEMO_FRAMES}, got {args.demo_frames}")
        if args.demo_seed < 0:
            raise TrackCLIError(f"--demo-seed must be a non-negative integer, got {args.demo_seed}")
    if args.output is not None and not args.output.suffix:
        raise TrackCLIError(f"--output {args.output} has no file extension: name the video file, e.g. "
                            f"{args.output.name}.mp4")
    if args.threads is not None:
        try:
            check_threads(args.threads)
        except ValueError as exc:
            raise TrackCLIError(f"--{exc}") from None


def build(args):
    from common.threads import apply_thread_policy
    from tracker import build_tracker, tracker_spec

    try:
        apply_thread_policy(args.threads)         # torch, OpenCV and ONNX Runtime alike
    except ValueError as exc:
        raise TrackCLIError(f"--{exc}") from None
    from evaluation.experiment import TrackerSpecError, parse_tracker_options

    try:
        options = parse_tracker_options(args.tracker_option)
    except TrackerSpecError as exc:
        raise TrackCLIError(str(exc)) from None
    spec = tracker_spec(args.tracker)
    if args.orientations is not None:
        if args.orientations < 0 or args.orientations == 1:
            raise TrackCLIError(f"--orientations must be 0 (off) or at least 2, got {args.orientations}")
        if spec.rotation == "none":
            raise TrackCLIError(f"--orientations: {spec.name} does not search rotated templates "
                                f"(the SiamFC trackers and RE-SiamNet do)")
        if spec.rotation == "always" and args.orientations == 0:
            raise TrackCLIError(f"--orientations 0: {spec.name} always searches its rotated templates")
        options["orientations"] = args.orientations
    if args.axis_box is not None:
        if spec.rotation == "none":
            raise TrackCLIError(f"--axis-box: {spec.name} does not estimate the rotation")
        options["axis_box"] = args.axis_box
    if not spec.learned:
        if options or args.checkpoint is not None:
            raise TrackCLIError(f"{spec.name} is a {spec.baseline} baseline: it takes no checkpoint or tracking options")
        return build_tracker(spec.name)
    return build_tracker(args.tracker, checkpoint=args.checkpoint, device=args.device, backend=args.backend,
                         **options)


def run_video(args) -> int:
    if args.init_box is None and (args.no_display or not display_available()):
        raise TrackCLIError("no --init-box x,y,w,h given and no display to select the target on "
                            "(pass --init-box, or run where a display exists)")
    init_box = parse_box(args.init_box) if args.init_box is not None else None
    if init_box is not None and (init_box[2] <= 0 or init_box[3] <= 0):
        raise TrackCLIError(f"--init-box {args.init_box!r} has zero or negative size")
    source = FrameSource(args.video)
    try:
        tracker = build(args)
        show = not args.no_display and display_available()
        result = track_frames(tracker, source, init_box, args.output, source.fps or 25.0,
                              source.count, show=show, select=init_box is None, label_name=tracker.name)
    finally:
        source.close()
    if args.boxes is not None:
        write_boxes(args.boxes, result, args.box_format)
        print(f"boxes written to {args.boxes}")
    if args.output is not None:
        print(f"video written to {args.output}")
    print_speed(len(result.boxes), result.elapsed)
    short = source.short_read()
    if short is not None:
        if not args.accept_short:
            raise TrackCLIError(f"{short}: the outputs hold the {len(result.boxes)} frames read; pass --accept-short "
                                "to accept such a video")
        print(f"warning: {short}", file=sys.stderr)
    return 0


def run_demo(args) -> int:
    from data.synthetic import generate_sequence
    from evaluation.metrics import box_iou

    tracker = build(args)       # first: a missing checkpoint is reported before any work
    print(f"demo: generating a rotating sequence (seed {args.demo_seed}, {args.demo_frames} frames)")
    seq = generate_sequence(args.demo_seed, num_frames=args.demo_frames, rotating=True)
    output = args.output if args.output is not None else DEMO_DIR / "track_demo.mp4"
    boxes_path = args.boxes if args.boxes is not None else output.with_name(output.stem + "_boxes.txt")
    show = not args.no_display and display_available()
    result = track_frames(tracker, seq.frames, seq.boxes[0], output, 25.0, len(seq.frames),
                          show=show, label_name=tracker.name)
    write_boxes(boxes_path, result, args.box_format)
    height, width = seq.frames[0].shape[:2]
    mean_iou = float(np.mean(box_iou(result.boxes, seq.boxes, bound=(width, height))))
    still = float(np.mean(box_iou(np.repeat(seq.boxes[:1], len(seq.boxes), 0), seq.boxes, bound=(width, height))))
    print(f"video written to {output}; boxes to {boxes_path}")
    print(f"mean IoU to the ground truth: {mean_iou:.3f} (a box that never moves: {still:.3f})")
    print_speed(len(result.boxes), result.elapsed)
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    from tracker import DEFAULT_TRACKER, tracker_names

    p = argparse.ArgumentParser(description="Track one object through a video, a folder of frames or a camera "
                                            "(no --video: the embedded demo).")
    p.add_argument("--video", default=None, help="video file, folder of frames (natural order), file pattern "
                   "(frame_%%04d.jpg), stream URL (rtsp://...), capture device (/dev/video0) or camera index (0)")
    p.add_argument("--init-box", default=None, metavar="X,Y,W,H", help="the target's box in the first frame, "
                   "overlapping it and at most 100 times its size (default: select it with the mouse)")
    p.add_argument("--tracker", default=DEFAULT_TRACKER, choices=tracker_names(),
                   help=f"tracker (default {DEFAULT_TRACKER}; baselines too: cv2-*, nanotrack-v3, identity)")
    p.add_argument("--checkpoint", type=Path, default=None, help="tracker checkpoint (default: bundled weights)")
    p.add_argument("--output", type=Path, default=None,
                   help="write the frames with the box drawn to this video file (.mp4, .avi, ...; the name needs "
                        "an extension). MP4 files are MPEG-4 Part 2 (fourcc mp4v): VLC, ffmpeg and most players "
                        "play them, web browsers do not (OpenCV's pip wheels cannot encode H.264); convert with "
                        "ffmpeg -i out.mp4 -c:v libx264 -pix_fmt yuv420p web.mp4")
    p.add_argument("--boxes", type=Path, default=None,
                   help="write one x,y,w,h row per frame (x,y,w,h,angle when the tracker estimates the rotation; "
                        "the angle is the target's rotation since the first frame in degrees, counter-clockwise "
                        "as seen on screen, in [-180, 180))")
    p.add_argument("--orientations", type=int, default=None, metavar="N",
                   help="SiamFC: search N rotated templates and estimate the target's rotation "
                        "(0 = off; default: the tracker's own)")
    p.add_argument("--axis-box", choices=("ellipse", "polygon", "upright"), default=None,
                   help="box written for a rotated target: bounds of the ellipse inscribed in the rotated "
                        "box (default), of the rotated box itself, or the unrotated box")
    p.add_argument("--tracker-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a tracking hyper-parameter (e.g. orientation_penalty=0.8, scale_penalty=0.98); "
                        "repeatable; overrides those stored in the checkpoint")
    p.add_argument("--box-format", choices=BOX_FORMATS, default=None,
                   help="rows of --boxes: x,y,w,h; x,y,w,h,angle (degrees, counter-clockwise on screen, 0 at "
                        "the first frame); or poly, the rotated box's corners x1,y1,...,x4,y4 (default: xywha "
                        "when the tracker estimates the rotation, else xywh)")
    p.add_argument("--accept-short", action="store_true",
                   help="a video that ends before the frame count its header announces is a warning, "
                        "not an error (exit 0)")
    p.add_argument("--no-display", action="store_true", help="never open a window")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch, OpenCV and ONNX Runtime, at most the machine's CPUs "
                        "(default: the cores not busy with other work)")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "torch", "torch-unfused"], default="auto",
                   help="how the network runs (tracker/backends.py; default auto: ONNX Runtime on the CPU "
                        "where installed, else torch with BatchNorm folded)")
    p.add_argument("--demo-seed", type=int, default=0, help="seed of the demo's generated sequence (>= 0)")
    p.add_argument("--demo-frames", type=int, default=100,
                   help=f"length of the demo's sequence (2 to {MAX_DEMO_FRAMES})")
    return p.parse_args(_join_negative_box(sys.argv[1:] if argv is None else list(argv)))


def _join_negative_box(argv: list) -> list:
    """``--init-box -50,20,30,40`` as ``--init-box=-50,20,30,40``: argparse takes a value that
    starts with '-' (and is not one plain number) for an option."""
    out = []
    for arg in argv:
        if out and out[-1] == "--init-box" and re.fullmatch(r"-[0-9.eE+-]+([, ]+[0-9.eE+-]+)+", arg):
            out[-1] = f"--init-box={arg}"
        else:
            out.append(arg)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    from common.checkpoints import CheckpointError
    from tracker.siamfc import TrackerError

    try:
        check_args(args)
        return run_demo(args) if args.video is None else run_video(args)
    except (TrackCLIError, TrackerError, CheckpointError, VideoError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:   # unwritable output folder, disk full ...
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
