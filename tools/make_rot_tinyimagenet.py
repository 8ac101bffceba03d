#!/usr/bin/env python
"""Build Rot-TinyImageNet (R4/R8 experiments) or R2-TinyImageNet (R4R, --flips) from a TinyImageNet folder.

    python tools/make_rot_tinyimagenet.py --src tiny-imagenet-200 --out data/rot-tim
    python tools/make_rot_tinyimagenet.py --src tiny-imagenet-200 --out data/r2-tim --flips

Input: the tiny-imagenet-200 layout, train/<wnid>/images/*.JPEG and val/images/*.JPEG with
val/val_annotations.txt (file, wnid, box). The first --classes wnids in sorted order are kept (100, as the
paper); their train images form the train split and their val images the test split.
Each image is rotated by an angle uniform in [0, 360°) about its centre (bilinear) and every pixel
outside the inscribed circle is zeroed (the authors' circular mask, so corners reveal no angle). With
--flips (R2), half of the images, chosen at random, are first flipped about the horizontal or the
vertical axis (equally likely). Seeded: the same command gives the same files.
Output (read by `python -m training.classification.train --dataset rot-tinyimagenet --data OUT`):
{train,test}_images.npy (N,64,64,3 uint8 RGB), {train,test}_labels.npy (int64), {train,test}_angles.npy,
{train,test}_flips.npy (0 none, 1 horizontal axis, 2 vertical axis) and meta.json (written last).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


class BuildError(ValueError):
    """A source folder that is not TinyImageNet, or an unusable option."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message}\n")


def parse_args(argv=None):
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="the tiny-imagenet-200 folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--flips", action="store_true", help="R2-TinyImageNet: random flips before the rotation")
    p.add_argument("--classes", type=int, default=100, help="number of classes kept (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="image side (TinyImageNet's 64 by default)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder's files")
    return p.parse_args(argv)


def list_split_files(src: Path, n_classes: int) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Sorted class wnids kept, and (path, label) lists of the train and val (= test) images."""
    train_dir, val_dir = src / "train", src / "val"
    ann = val_dir / "val_annotations.txt"
    if not train_dir.is_dir() or not ann.is_file():
        raise BuildError(f"{src} is not a TinyImageNet folder (needs train/<wnid>/images and val/val_annotations.txt)")
    wnids = sorted(d.name for d in train_dir.iterdir() if (d / "images").is_dir())
    if len(wnids) < n_classes:
        raise BuildError(f"{train_dir} has {len(wnids)} classes, fewer than --classes {n_classes}")
    if n_classes < 2:
        raise BuildError("--classes must be at least 2")
    wnids = wnids[:n_classes]
    label_of = {w: i for i, w in enumerate(wnids)}
    train = [
        (p, label_of[w])
        for w in wnids
        for p in sorted((train_dir / w / "images").iterdir())
        if p.suffix.lower() in (".jpeg", ".jpg", ".png")
    ]
    test = []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise BuildError(f"{ann}:{n}: expected '<file>\\t<wnid>\\t<box>', got {line!r}")
        if fields[1] in label_of:
            test.append((val_dir / "images" / fields[0], label_of[fields[1]]))
    if not train or not test:
        raise BuildError(f"{src}: no train or no val images for the {n_classes} kept classes")
    return wnids, train, test


def read_rgb(path: Path, size: int) -> np.ndarray:
    """An image as size x size RGB uint8; a truncated or unreadable file is a BuildError naming it."""
    import cv2

    from data.frames import FrameError, read_frame

    try:
        img = read_frame(path)
    except FrameError as exc:
        raise BuildError(str(exc)) from None
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def transform_split(items, size: int, flips: bool, rng: np.random.Generator):
    """Images, labels, angles and flip codes of one split (rotated, masked, optionally flipped)."""
    from data.classification import rotate_images

    images = np.stack([read_rgb(p, size) for p, _ in items])
    labels = np.array([lab for _, lab in items], dtype=np.int64)
    angles = rng.uniform(0.0, 360.0, len(items))
    flip_codes = np.zeros(len(items), dtype=np.int64)
    if flips:
        flipped = rng.random(len(items)) < 0.5
        axis = rng.integers(1, 3, len(items))
        flip_codes = np.where(flipped, axis, 0)
        images[flip_codes == 1] = images[flip_codes == 1][:, ::-1]  # about the horizontal axis (upside down)
        images[flip_codes == 2] = images[flip_codes == 2][:, :, ::-1]  # about the vertical axis (mirror)
    images = rotate_images(images, angles, circular_mask=True)
    return images, labels, angles, flip_codes


def _save_npy(array: np.ndarray, path: Path) -> None:
    """np.save, atomically: a failed write (full disk) leaves no partial file and no temporary."""
    from common.atomic import write_with_atomic

    write_with_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def build(src: Path, out: Path, flips: bool, n_classes: int, seed: int, size: int, overwrite: bool) -> dict:
    from data.classification import TIM_FORMAT

    if not src.is_dir():
        raise BuildError(f"source folder not found: {src}")
    from common.threads import memory_bytes
    from training.classification.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:    # the sizes the classification trainer reads
        raise BuildError(f"--size must be from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, got {size}")
    if seed < 0:
        raise BuildError(f"--seed must be a non-negative integer, got {seed}")
    if (out / "meta.json").exists() and not overwrite:
        raise BuildError(f"{out} already holds a dataset: pass --overwrite to replace it")
    wnids, train, test = list_split_files(src, n_classes)
    need, memory = 2 * max(len(train), len(test)) * size * size * 3, memory_bytes()   # a split, and its shuffled copy
    if memory is not None and need > memory / 2:
        raise BuildError(f"{max(len(train), len(test))} images of {size}x{size} px take {need / 2 ** 30:.1f} GiB, more "
                         f"than half this machine's {memory / 2 ** 30:.1f} GiB: give a smaller --size or fewer --classes")
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists():
        meta_path.unlink()  # the folder is incomplete until meta.json is written again
    rng = np.random.default_rng(seed)
    counts = {}
    for split, items in (("train", train), ("test", test)):
        images, labels, angles, flip_codes = transform_split(items, size, flips, rng)
        order = rng.permutation(len(labels))  # shuffled once, so a prefix is a fair subset
        _save_npy(images[order], out / f"{split}_images.npy")
        _save_npy(labels[order], out / f"{split}_labels.npy")
        _save_npy(angles[order], out / f"{split}_angles.npy")
        _save_npy(flip_codes[order], out / f"{split}_flips.npy")
        counts[split] = len(labels)
    meta = {
        "format": TIM_FORMAT, "version": 1, "variant": "r2" if flips else "rot", "source": str(src),
        "classes": wnids, "seed": seed, "image_size": size, "counts": counts,
        "rotation": "uniform [0, 360) degrees CCW, bilinear, circular mask",
        "flips": "p=0.5, horizontal or vertical axis" if flips else "none",
    }
    from common.atomic import write_text_atomic

    write_text_atomic(meta_path, json.dumps(meta, indent=1))
    return meta


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        meta = build(Path(args.src), Path(args.out), args.flips, args.classes, args.seed, args.size, args.overwrite)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:                  # unwritable or full --out, --out under a file ...
        from common.atomic import describe_os_error

        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    name = "r2-tinyimagenet" if args.flips else "rot-tinyimagenet"
    print(f"{name}: {meta['counts']['train']} train / {meta['counts']['test']} test images of "
          f"{len(meta['classes'])} classes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
