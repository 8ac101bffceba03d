"""End-to-end training of the classification study on tiny runs: metrics, resume, e2cnn, study, CLI errors."""
import json
import math
import subprocess
import sys

import pytest
import torch

from backbones.checkpoints import backbone_from_checkpoint
from common.checkpoints import load_checkpoint
from common.config import from_dict
from data.classification import load_dataset
from training.classification import study as study_cli
from training.classification import train as train_cli
from training.classification.config import TrainConfig, TrainError
from training.classification.engine import GroupPoolClassifier, evaluate_checkpoint, learning_rate, train

TINY = {"train_limit": 48, "test_limit": 24, "eq_images": 6, "batch_size": 16}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("rot-digits")


def _cfg(**kw):
    backbone = {"name": "cnnbasic", "group": "R4", "width_mult": 0.25, "in_channels": 3, **kw.pop("backbone", {})}
    return from_dict(TrainConfig, {**TINY, "epochs": 2, **kw, "backbone": backbone})


def test_tiny_ien_run_writes_metrics_and_a_toolkit_checkpoint(tmp_path, digits, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    metrics = train(_cfg(beta=1.0), out, data=digits, progress=False)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"] and 0 <= saved["test_accuracy"] <= 1
    assert saved["dataset"]["train_images"] == 48 and saved["epochs_trained"] == 2
    assert saved["channels"]["per_layer"] == [12, 12, 24, 24, 48, 48] and saved["channels"]["total"] == 168
    assert saved["parameters"]["total"] == saved["parameters"]["backbone"] + 12 * 10 + 10
    eq = saved["equivariance_error"]
    assert eq["elements"] == ["rot90", "rot180", "rot270"] and list(eq["per_layer"]) == [f"conv{i}" for i in range(1, 7)]
    assert all(v > 0 for v in eq["per_layer"].values())
    assert saved["history"][0]["ien"] > 0 and len(saved["history"][0]["ien_per_layer"]) == 6
    assert saved["time"]["train_seconds"] > 0
    # the checkpoint follows the toolkit convention: the equivariance tool and re-evaluation read it
    backbone, ckpt = backbone_from_checkpoint(out / "checkpoint.pth")
    assert ckpt["config"]["backbone"]["group"] == "R4" and ckpt["epoch"] == 2
    again = evaluate_checkpoint(out / "checkpoint.pth", data=digits)
    assert again["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert again["equivariance_error"]["mean"] == pytest.approx(metrics["equivariance_error"]["mean"], rel=1e-5)
    from tools import equivariance as eq_tool

    capsys.readouterr()
    assert eq_tool.main(["--checkpoint", str(out / "checkpoint.pth"), "--size", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["group"] == "R4"


def test_resume_continues_exactly(tmp_path, digits):
    torch.set_num_threads(1)
    straight = train(_cfg(beta=0.5), tmp_path / "a", data=digits, progress=False, log=lambda s: None)

    def stop_after_first_epoch(line):
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(beta=0.5), tmp_path / "b", data=digits, progress=False, log=stop_after_first_epoch)
    assert not (tmp_path / "b" / "metrics.json").exists()
    with pytest.raises(TrainError, match="--resume"):
        train(_cfg(beta=0.5), tmp_path / "b", data=digits, progress=False)
    with pytest.raises(TrainError, match="beta"):
        train(_cfg(beta=0.1), tmp_path / "b", data=digits, resume=True, progress=False)
    resumed = train(_cfg(beta=0.5), tmp_path / "b", data=digits, resume=True, progress=False, log=lambda s: None)
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pth")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pth")["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    assert [h["ce"] for h in resumed["history"]] == pytest.approx([h["ce"] for h in straight["history"]], rel=1e-5)


def test_e2cnn_model_trains_by_the_same_command(tmp_path, digits):
    torch.set_num_threads(1)
    metrics = train(_cfg(beta=0.0, epochs=1, backbone={"name": "e2-cnnbasic"}), tmp_path / "e2", data=digits,
                    progress=False, log=lambda s: None)
    assert metrics["channels"]["per_layer"] == [12, 12, 24, 24, 48, 48]
    assert metrics["equivariance_error"]["mean"] < 1e-4  # exactly equivariant for 90° rotations
    backbone, _ = backbone_from_checkpoint(tmp_path / "e2" / "checkpoint.pth")
    assert type(backbone).__name__ == "E2CNNBasic"


def test_heterogeneous_and_scale_runs(tmp_path, digits):
    torch.set_num_threads(1)
    het = train(_cfg(beta=1.0, epochs=1, backbone={"group": "R8-4-2-1:8,4,2,1", "width_mult": 0.5}), tmp_path / "h",
                data=digits, progress=False, log=lambda s: None)
    assert het["channels"]["per_layer"] == [15, 15, 30, 30, 60, 60]
    assert len(het["equivariance_error"]["elements"]) == 7  # multiples of 45°
    scaled = train(_cfg(beta=1.0, epochs=1, ien_scales=[0.8, 1.25]), tmp_path / "s", data=digits,
                   progress=False, log=lambda s: None)
    assert scaled["equivariance_error"]["elements"] == ["rot0+scale0.8", "rot0+scale1.25"]


def test_learning_rate_is_the_authors_cosine():
    cfg = _cfg(epochs=10)
    assert learning_rate(0, 5, cfg) == pytest.approx(5e-3)
    assert learning_rate(49, 5, cfg) == pytest.approx(1e-5)
    assert learning_rate(25, 5, cfg) < (5e-3 + 1e-5) / 2 < learning_rate(24, 5, cfg)
    cyc = _cfg(epochs=10, lr_cycle_epochs=4, lr_cycle_decay=0.5)
    assert learning_rate(20, 5, cyc) == pytest.approx(2.5e-3)  # restart at half the peak
    assert all(learning_rate(s, 5, cfg) >= learning_rate(s + 1, 5, cfg) for s in range(49))


def test_classifier_pools_groups_before_the_linear_layer():
    from backbones import build_backbone

    model = GroupPoolClassifier(build_backbone("cnnbasic", group="R8-4-2-1", width_mult=1.0), 7)
    assert model.backbone.out_channels == 172 and model.fc.in_features == 32  # 4 units of 43 ch = 8 fields
    logits, watched = model(torch.randn(2, 3, 28, 28))
    assert logits.shape == (2, 7) and len(watched) == 6


def test_study_writes_table_plot_and_json(tmp_path):
    torch.set_num_threads(1)
    toml = tmp_path / "study.toml"
    toml.write_text(
        'title = "tiny"\n[defaults]\nepochs = 1\ntrain_limit = 32\ntest_limit = 16\neq_images = 4\n'
        '[defaults.backbone]\nwidth_mult = 0.5\n'
        '[[runs]]\nname = "r8"\nbeta = 0.0\nbackbone = { group = "R8" }\n'
        '[[runs]]\nname = "het"\nbeta = 1.0\ntwin = "r8"\nbackbone = { group = "R8-4-2-1:8,4,2,1" }\n'
    )
    out = tmp_path / "out"
    assert study_cli.main([str(toml), "--out", str(out), "--no-progress"]) == 0
    table = (out / "results.md").read_text()
    assert "| het | cnnbasic | R8-4-2-1:8,4,2,1 |" in table and "r8: -53% /" in table
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["run"] for r in rows] == ["r8", "het"] and rows[1]["channels_vs_twin"] == pytest.approx(210 / 448 - 1)
    assert (out / "study.png").stat().st_size > 5000
    # finished runs are reused, not retrained
    mtime = (out / "r8" / "checkpoint.pth").stat().st_mtime
    assert study_cli.main([str(toml), "--out", str(out), "--no-progress", "--only", "r8"]) == 0
    assert (out / "r8" / "checkpoint.pth").stat().st_mtime == mtime


@pytest.mark.parametrize(
    "content, message",
    [
        ('[[runs]]\nname = "a"\nbogus = 1\n', "unknown key(s) 'bogus'"),
        ('[[runs]]\nname = "a"\n[[runs]]\nname = "a"\n', "two runs are named"),
        ('[[runs]]\nname = "a"\ntwin = "b"\n', "unknown twin"),
        ('[[runs]]\nname = "a"\nbackbone = {name = "e2-cnnbasic", group = "R4R"}\n', "R4R"),
        ("colour = 1\n", "unknown top-level key"),
        ("[[runs\n", "cannot parse"),
        ('[[runs]]\nname = ".."\n', "must not start with '.'"),      # would escape --out
        ('[[runs]]\nname = "a/b"\n', "may use only letters"),
    ],
)
def test_study_bad_files(tmp_path, capsys, content, message):
    toml = tmp_path / "s.toml"
    toml.write_text(content)
    assert study_cli.main([str(toml), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "alexnet"], "unknown backbone 'alexnet'"),
        (["--group", "R5"], "malformed group spec"),
        (["--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["--dataset", "rot-mnist"], "needs --data"),
        (["--dataset", "rot-mnist", "--data", "/nonexistent"], "data folder not found"),
        (["--model", "e2-cnnbasic", "--group", "R8-4-2-1"], "e2cnn backbones need a rotation group"),
        (["--group", "none", "--beta", "1"], "beta > 0 needs orientation groups"),
        (["--epochs", "x"], "invalid int value"),
        (["--layer-weights", "1,a"], "comma-separated numbers"),
    ],
)
def test_train_cli_bad_input_is_one_clear_error(tmp_path, capsys, args, message):
    rc = train_cli.main(args + ["--out", str(tmp_path / "o"), "--no-progress", "--train-limit", "8"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_train_cli_end_to_end_and_resume(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "training.classification.train", "--epochs", "1", "--width-mult", "0.25",
           "--train-limit", "32", "--test-limit", "16", "--eq-images", "4", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and (out / "metrics.json").is_file()
    again = subprocess.run(cmd[:3] + ["--out", str(out), "--resume", "--beta", "0"], capture_output=True, text=True)
    assert again.returncode == 2 and again.stderr.startswith("error: --resume") and "beta" in again.stderr
    done = subprocess.run(cmd[:3] + ["--out", str(out), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0 and "already finished" in done.stdout
    assert math.isfinite(json.loads((out / "metrics.json").read_text())["test_loss"])


def test_study_summarises_runs_that_differ_only_in_the_seed():
    from backbones import BackboneConfig
    from training.classification.config import TrainConfig

    def run(name, seed, beta=0.0):
        return study_cli.StudyRun(name, TrainConfig(beta=beta, seed=seed, backbone=BackboneConfig("cnnbasic", "R4", 0.5)))

    runs = [run("a0", 0), run("a1", 1), run("b0", 0, beta=1.0), run("a2", 2)]
    rows = [{"run": n, "accuracy": acc, "eq_error": e, "eq_error_last": e / 2}
            for n, acc, e in (("a0", 97.0, 0.6), ("a1", 98.0, 0.8), ("b0", 99.0, 0.1), ("a2", 99.0, 0.7))]
    summary = study_cli.seed_groups(runs, rows)
    assert len(summary) == 1                       # b0 has no seed twin
    g = summary[0]
    assert g["runs"] == ["a0", "a1", "a2"] and g["n"] == 3 and g["beta"] == 0.0
    assert g["accuracy_mean"] == pytest.approx(98.0) and g["accuracy_sd"] == pytest.approx(1.0)
    assert g["eq_error_mean"] == pytest.approx(0.7) and g["eq_error_last_mean"] == pytest.approx(0.35)
    assert "| a0, a1, a2 | R4 | 0 | all 1 | 3 | 98.00 ± 1.00 |" in study_cli.markdown_seed_table(summary)
