"""Frames and dataset files read one way, every time: EXIF orientation ignored by every decoder (the
stored pixels, which benchmarks annotate), an image header claiming an absurd size refused before
decoding, every image file of a frame folder read (none dropped silently), text files that are not
UTF-8 one clear error, and one evaluation per output folder."""
import io
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from common.locks import FolderLock
from data import DatasetError, load_sequences
from data.frames import FrameError, read_frame
from training.tracking.pairs import _read_rgb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def _jpeg_with_exif_orientation(path: Path, orientation: int = 6) -> np.ndarray:
    """A 40x24 JPEG (a red block left) whose EXIF says 'rotate 90 degrees to display'."""
    pixels = np.zeros((24, 40, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return pixels


def test_exif_orientation_is_ignored_by_every_decoder(tmp_path):
    stored = _jpeg_with_exif_orientation(tmp_path / "f.jpg")
    frame = read_frame(tmp_path / "f.jpg")                      # OpenCV's path for a complete JPEG
    assert frame.shape == stored.shape and frame[:, :10, 0].mean() > 200
    training, factor = _read_rgb(str(tmp_path / "f.jpg"), 40.0, 40)    # the training pairs' decoder
    assert factor == 1 and training.shape == stored.shape and training[:, :10, 0].mean() > 200
    truncated = (tmp_path / "f.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(truncated + b"\x00\x00")   # not ending with FF D9: Pillow's path
    assert read_frame(tmp_path / "t.jpg").shape == stored.shape


def _png_claiming(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def test_a_header_claiming_a_huge_image_is_refused_before_decoding(tmp_path):
    (tmp_path / "huge.png").write_bytes(_png_claiming(100_000, 100_000))
    with pytest.raises(FrameError, match="too many pixels"):
        read_frame(tmp_path / "huge.png")
    with pytest.raises(DatasetError, match="too many pixels"):
        _read_rgb(str(tmp_path / "huge.png"), 100.0, 64)


def _otb(root: Path, names: list[str]) -> Path:
    img = root / "Seq" / "img"
    img.mkdir(parents=True)
    for name in names:
        cv2.imwrite(str(img / name), np.full((16, 16, 3), 80, np.uint8))
    (root / "Seq" / "groundtruth_rect.txt").write_text("2,2,6,6\n" * len(names))
    return root


def test_every_image_of_a_frame_folder_is_read_or_reported(tmp_path):
    # a .bmp frame among .jpg frames used to drop out silently (4 boxes, 3 frames read)
    (seq,) = load_sequences(_otb(tmp_path / "a", ["0001.jpg", "0002.jpg", "0003.bmp", "0004.jpg"]))
    assert [Path(f).name for f in seq.img_files] == ["0001.jpg", "0002.jpg", "0003.bmp", "0004.jpg"]
    with pytest.raises(DatasetError, match="not a frame number.*cover.png"):
        load_sequences(_otb(tmp_path / "b", ["0001.jpg", "0002.jpg", "cover.png"]))


def test_text_files_that_are_not_utf8_are_one_clear_error(tmp_path):
    root = _otb(tmp_path / "otb", ["0001.jpg", "0002.jpg"])
    (root / "Seq" / "groundtruth_rect.txt").write_bytes(b"2,2,6,6\n\xff\xfe,2,6,6\n")
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_sequences(root)
    got = tmp_path / "got" / "val"
    (got / "a").mkdir(parents=True)
    (got / "list.txt").write_bytes(b"a\n\x80\x81\n")
    with pytest.raises(DatasetError, match=r"list\.txt.*not UTF-8"):
        load_sequences(got, layout="got10k")


def test_a_second_evaluation_into_one_output_folder_is_refused(tmp_path, capsys):
    import evaluate

    root = _otb(tmp_path / "otb", ["0001.jpg", "0002.jpg", "0003.jpg"])
    out = tmp_path / "out"
    with FolderLock(out):                          # another evaluate.py holding --out
        assert evaluate.main(["--root", str(root), "--trackers", "identity", "--out", str(out), "--no-progress",
                              "--no-plots"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "being written by another run" in err[0]
    assert evaluate.main(["--root", str(root), "--trackers", "identity", "--out", str(out), "--no-progress",
                          "--no-plots"]) == 0


def test_a_header_beyond_the_side_limit_is_refused(tmp_path):
    (tmp_path / "wide.png").write_bytes(_png_claiming(20_000, 10))     # few pixels, too wide
    with pytest.raises(FrameError, match="20000x10"):
        read_frame(tmp_path / "wide.png")
