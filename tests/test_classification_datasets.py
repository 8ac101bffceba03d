"""Loaders of the classification study, each on small files written here in the dataset's real format."""
import gzip
import json
import struct

import numpy as np
import pytest
import torch

from data import classification as ds
from data import mnist
from data.classification import DatasetError, load_dataset

# --------------------------------------------------------------------------- rot-digits

def test_rot_digits_is_seeded_rotated_and_split():
    a = ds.load_rot_digits(28, seed=0)
    b = ds.load_rot_digits(28, seed=0)
    c = ds.load_rot_digits(28, seed=1)
    assert a.train_images.shape == (1200, 3, 28, 28) and a.test_images.shape == (597, 3, 28, 28)
    assert torch.equal(a.train_images, b.train_images) and not torch.equal(a.train_images, c.train_images)
    assert set(a.train_labels.tolist()) == set(range(10)) and a.num_classes == 10
    assert float(a.train_images.min()) >= 0 and float(a.train_images.max()) <= 1
    assert torch.equal(a.train_images[:, 0], a.train_images[:, 2])  # gray repeated to RGB
    # uniform rotations: the mean image is close to rotation invariant (about its 90° rotation)
    mean = a.train_images[:, 0].mean(0)
    assert float((mean - torch.rot90(mean, 1, (0, 1))).abs().max()) < 0.1 * float(mean.max())
    with pytest.raises(DatasetError, match="drop --data"):
        load_dataset("rot-digits", data="somewhere")


# --------------------------------------------------------------------------- rot-mnist .amat

def _write_amat(path, images, labels):
    # the real files: one line per image, 784 floats in [0, 1] then the label, as %e with spaces
    rows = np.concatenate([images.reshape(len(images), -1), labels[:, None]], 1)
    np.savetxt(path, rows, fmt="%.18e", delimiter="   ")


def test_rot_mnist_amat(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.random((6, 28, 28)).astype(np.float32)
    train[0, 2, 20] = 1.0  # a marker: row 2, column 20
    test = rng.random((4, 28, 28)).astype(np.float32)
    _write_amat(tmp_path / ds.ROT_MNIST_FILES[0], train, np.arange(6) % 10)
    _write_amat(tmp_path / ds.ROT_MNIST_FILES[1], test, np.array([9, 8, 7, 6]))
    data = load_dataset("rot-mnist", tmp_path)
    assert data.train_images.shape == (6, 3, 28, 28) and data.test_images.shape == (4, 3, 28, 28)
    assert data.test_labels.tolist() == [9, 8, 7, 6]
    assert np.allclose(data.train_images[:, 0].numpy(), train, atol=1e-6)
    assert float(data.train_images[0, 0, 2, 20]) == 1.0


@pytest.mark.parametrize(
    "content, message",
    [
        ("0.5 " * 784 + "3\n" + "0.5 " * 783 + "3\n", "785 numbers per line"),
        ("0.5 " * 784 + "x\n", "other than numbers"),
        ("0.5 " * 784 + "12\n", "label 0..9"),
        ("", "empty"),
    ],
)
def test_rot_mnist_bad_files(tmp_path, content, message):
    (tmp_path / ds.ROT_MNIST_FILES[0]).write_text(content)
    (tmp_path / ds.ROT_MNIST_FILES[1]).write_text("0.5 " * 784 + "1\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset("rot-mnist", tmp_path)


def test_rot_mnist_missing(tmp_path):
    with pytest.raises(DatasetError, match="no mnist_all_rotation_normalized_float_train_valid.amat"):
        load_dataset("rot-mnist", tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("rot-mnist", tmp_path / "nope")
    with pytest.raises(DatasetError, match="needs --data"):
        load_dataset("rot-mnist", None)


# --------------------------------------------------------------------------- MNIST idx -> scale-mnist

def _write_idx(path, array, gz=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def _mnist_files(root, n_train=40, n_test=22, gz=True):
    rng = np.random.default_rng(0)
    imgs = np.zeros((n_train + n_test, 28, 28), np.uint8)
    imgs[:, 4:24, 4:24] = 255  # a 20 px square "digit", like MNIST's 20 px box
    labels = rng.integers(0, 10, n_train + n_test).astype(np.uint8)
    suffix = ".gz" if gz else ""
    _write_idx(root / f"train-images-idx3-ubyte{suffix}", imgs[:n_train], gz)
    _write_idx(root / f"train-labels-idx1-ubyte{suffix}", labels[:n_train], gz)
    _write_idx(root / f"t10k-images-idx3-ubyte{suffix}", imgs[n_train:], gz)
    _write_idx(root / f"t10k-labels-idx1-ubyte{suffix}", labels[n_train:], gz)


@pytest.mark.parametrize("gz", [True, False])
def test_scale_mnist_protocol(tmp_path, gz):
    _mnist_files(tmp_path, gz=gz)
    data = load_dataset("scale-mnist", tmp_path, seed=3)
    n = 62
    assert len(data.train_labels) == n * 10000 // 62000 == 10 and data.info["split"] == [10, 2, 50]
    assert data.test_images.shape == (50, 3, 28, 28) and data.pixel_scale == 255.0
    # each square shrank about the centre by a factor in [0.3, 1]: side 20*s, centred
    sides = (data.train_images[:, 0] > 127).sum((1, 2)).float().sqrt()
    assert float(sides.min()) >= 20 * 0.3 - 1.5 and float(sides.max()) <= 20 + 0.5
    assert float(sides.std()) > 1.0  # the scales vary
    again = load_dataset("scale-mnist", tmp_path, seed=3)
    assert torch.equal(again.train_images, data.train_images)


def test_idx_bad_magic_and_size(tmp_path):
    _mnist_files(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(DatasetError, match="bad magic"):
        load_dataset("scale-mnist", tmp_path)
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28)))  # 3 images, 40 labels
    with pytest.raises(DatasetError, match="do not match"):
        load_dataset("scale-mnist", tmp_path)
    raw = (tmp_path / "t10k-labels-idx1-ubyte").read_bytes()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw[:-3])
    with pytest.raises(DatasetError, match="header says"):
        mnist.read_idx(tmp_path / "t10k-labels-idx1-ubyte")


# --------------------------------------------------------------------------- Rot-/R2-TinyImageNet

def _tiny_imagenet(root, wnids=("n01443537", "n01629819", "n01641577"), per_class=3):
    import cv2

    rng = np.random.default_rng(0)
    val_lines = []
    for c, w in enumerate(wnids):
        d = root / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(per_class):
            img = np.full((64, 64, 3), 40 + 60 * c, np.uint8) + rng.integers(0, 20, (64, 64, 3), dtype=np.uint8)
            cv2.imwrite(str(d / f"{w}_{i}.JPEG"), img)
    (root / "val" / "images").mkdir(parents=True)
    for i in range(2 * len(wnids)):
        img = np.full((64, 64, 3), 200, np.uint8)
        cv2.imwrite(str(root / "val" / "images" / f"val_{i}.JPEG"), img)
        val_lines.append(f"val_{i}.JPEG\t{wnids[i % len(wnids)]}\t0\t10\t50\t60")
    (root / "val" / "val_annotations.txt").write_text("\n".join(val_lines) + "\n")


def test_make_rot_tinyimagenet_and_load(tmp_path, capsys):
    from tools import make_rot_tinyimagenet as tool

    src = tmp_path / "tiny-imagenet-200"
    _tiny_imagenet(src)
    out = tmp_path / "rot-tim"
    assert tool.main(["--src", str(src), "--out", str(out), "--classes", "2"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"] == ["n01443537", "n01629819"] and meta["variant"] == "rot"
    assert meta["counts"] == {"train": 6, "test": 4}
    images = np.load(out / "train_images.npy")
    assert images.shape == (6, 64, 64, 3) and images.dtype == np.uint8
    assert images[:, 0, 0].max() == 0 and images[:, 32, 32].min() > 0  # circular mask, centre kept
    assert np.all(np.load(out / "train_flips.npy") == 0)
    angles = np.load(out / "train_angles.npy")
    assert angles.min() >= 0 and angles.max() < 360 and len(set(angles.round(3))) == 6
    data = load_dataset("rot-tinyimagenet", out)
    assert data.num_classes == 2 and data.train_images.shape == (6, 3, 64, 64) and data.pixel_scale == 255.0
    assert sorted(data.test_labels.tolist()) == [0, 0, 1, 1]
    # same seed, same files; refuse to overwrite without --overwrite
    assert tool.main(["--src", str(src), "--out", str(out), "--classes", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="r2-tinyimagenet|holds the 'rot' variant"):
        load_dataset("r2-tinyimagenet", out)

    r2 = tmp_path / "r2-tim"
    assert tool.main(["--src", str(src), "--out", str(r2), "--classes", "3", "--flips", "--seed", "1"]) == 0
    flips = np.concatenate([np.load(r2 / "train_flips.npy"), np.load(r2 / "test_flips.npy")])
    assert set(flips.tolist()) <= {0, 1, 2} and (flips > 0).any()
    data = load_dataset("r2-tinyimagenet", r2, image_size=32)
    assert data.num_classes == 3 and data.train_images.shape == (9, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8


def test_make_rot_tinyimagenet_bad_input(tmp_path, capsys):
    from tools import make_rot_tinyimagenet as tool

    assert tool.main(["--src", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "notim").mkdir()
    assert tool.main(["--src", str(tmp_path / "notim"), "--out", str(tmp_path / "o")]) == 2
    assert "not a TinyImageNet folder" in capsys.readouterr().err
    _tiny_imagenet(tmp_path / "tim")
    assert tool.main(["--src", str(tmp_path / "tim"), "--out", str(tmp_path / "o")]) == 2
    assert "fewer than --classes 100" in capsys.readouterr().err


def test_tinyimagenet_loader_rejects_other_folders(tmp_path):
    with pytest.raises(DatasetError, match="no meta.json"):
        load_dataset("rot-tinyimagenet", tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DatasetError, match="not a ien-rot-tinyimagenet folder"):
        load_dataset("rot-tinyimagenet", tmp_path)


# --------------------------------------------------------------------------- STL-10 binary

def _write_stl10(root, split, images_hwc, labels_1_10):
    # stl10_binary: each image as 3 planes of 96x96 bytes in column-major order; labels 1..10 bytes
    planes = images_hwc.transpose(0, 3, 2, 1)  # (N, C, W, H): column-major planes
    planes.astype(np.uint8).tofile(root / f"{split}_X.bin")
    np.asarray(labels_1_10, np.uint8).tofile(root / f"{split}_y.bin")


def test_stl10_binary(tmp_path):
    root = tmp_path / "stl10_binary"
    root.mkdir()
    imgs = np.zeros((3, 96, 96, 3), np.uint8)
    imgs[:, 10, 80, 0] = 255  # red dot at row 10, column 80
    _write_stl10(root, "train", imgs, [1, 5, 10])
    _write_stl10(root, "test", imgs[:2], [2, 3])
    data = load_dataset("stl10", tmp_path)  # the parent folder works too
    assert data.train_images.shape == (3, 3, 96, 96) and data.train_labels.tolist() == [0, 4, 9]
    assert int(data.train_images[0, 0, 10, 80]) == 255 and int(data.train_images[0, 0, 80, 10]) == 0
    small = load_dataset("stl10", root, image_size=48)
    assert small.test_images.shape == (2, 3, 48, 48)
    (root / "test_y.bin").write_bytes(b"\x01")
    with pytest.raises(DatasetError, match="1 labels for 2 images"):
        load_dataset("stl10", root)
    (root / "train_X.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetError, match="not a multiple"):
        load_dataset("stl10", root)


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("cifar10")
