"""Tracker training logs: history.csv, TensorBoard events, the validation pass and best.pth,
all of them correct after a resume; old (LambdaLR) checkpoints still resume."""
import csv
import json
import sys

import pytest
import torch
from conftest import trainer_stopping_after_first_step, write_tiny_siamfc_toml

from common.checkpoints import load_checkpoint, save_atomic
from common.config import ConfigError
from data.generated import generate_dataset
from tools import train_tracker as tool
from tracker.models import build_model
from training.tracking import BEST_NAME, RunConfig, Trainer, load_validation_pairs, response_peaks

TINY_BACKBONE = {"name": "resnet22", "group": "R8", "width_mult": 0.125}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four tiny generated videos (real JPEGs, GOT-10k layout): one is held out at val_fraction 0.25."""
    return generate_dataset(tmp_path_factory.mktemp("tiny"), 4, seed=11, num_frames=8, frame_size=(200, 160))


def tiny(data, model_type="siamfc", path=None, **train) -> RunConfig:
    train = {"epochs": 2, "pairs_per_epoch": 4, "batch_size": 2, "num_workers": 0, "warmup_epochs": 0.5,
             "beta": 1.0, "val_every": 1, "val_pairs": 4, **train}
    return RunConfig.from_dict({"model": {"type": model_type, "backbone": TINY_BACKBONE}, "train": train,
                                "data": {"path": path or str(data), "val_fraction": 0.25, "val_seed": 3}})


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


StopsAfterFirstStep = trainer_stopping_after_first_step()     # as on SIGTERM / Ctrl-C


def test_config_keys_are_checked(data):
    with pytest.raises(ConfigError, match="needs held-out videos"):
        RunConfig.from_dict({"train": {"val_every": 5}})
    with pytest.raises(ConfigError, match="val_pairs"):
        tiny(data, val_pairs=0)
    with pytest.raises(ConfigError, match="val_every"):
        tiny(data, val_every=-1)
    with pytest.raises(ConfigError, match="unknown key.*'val_evry'"):
        RunConfig.from_dict({"train": {"val_evry": 5}})


def test_validation_pairs_are_held_out_and_fixed(tmp_path, data):
    config = tiny(data)
    trainer = Trainer(config, tmp_path, device="cpu", progress=False)
    train_names = {s.name for s in trainer.pairs().sequences}
    held = load_validation_pairs(config)
    held_names = {s.name for s in held.sequences}
    assert len(held_names) == 1 and len(train_names) == 3 and not held_names & train_names
    assert len(held) == 4 and not held.augment
    again = load_validation_pairs(config)
    assert all((held[i]["x"] == again[i]["x"]).all() for i in range(len(held)))
    first = trainer.validate()
    assert trainer.validate() == first                       # same pairs, same weights: same numbers
    assert set(first) == {"val_loss", "val_peak_hit"} and first["val_loss"] > 0
    assert 0 <= first["val_peak_hit"] <= 1 and (first["val_peak_hit"] * 4).is_integer()
    assert trainer.model.training                            # back in training mode


def test_response_peaks_find_the_highest_cell_and_anchor():
    for model_type in ("siamfc", "siamrpn"):
        model = build_model({"type": model_type, "backbone": TINY_BACKBONE}).eval()
        z = model.extract(torch.rand(1, 3, 127, 127) * 255).out
        x = model.extract(torch.rand(1, 3, 255, 255) * 255).out
        peak = response_peaks(model, z, x)[0]
        out = model.head(z, x)
        if model_type == "siamfc":
            r = out.shape[-1]
            row, col = divmod(int(out.flatten().argmax()), r)
            expected = [(col - (r - 1) / 2) * model.stride + 127.5, (row - (r - 1) / 2) * model.stride + 127.5]
        else:
            fg = torch.softmax(out[0].reshape(2, -1), 0)[1]
            expected = model.anchors()[int(fg.argmax()), :2].tolist()
        assert peak.tolist() == pytest.approx(expected)


@pytest.mark.parametrize("model_type", ["siamfc", "siamrpn"])
def test_logs_and_best_checkpoint_survive_a_resume(tmp_path, data, model_type):
    import importlib.util

    has_tensorboard = importlib.util.find_spec("tensorboard") is not None    # the optional "logs" extra
    config = tiny(data, model_type)
    straight = Trainer(config, tmp_path / "straight", device="cpu", progress=False)
    summary = straight.fit()
    rows = read_csv(tmp_path / "straight" / "history.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert {"step", "epoch", "loss", "tracking", "ien", "lr", "val_loss", "val_peak_hit"} <= set(rows[0])
    losses = [float(r["val_loss"]) for r in rows]
    best_step = 1 + losses.index(min(losses))
    assert summary["best_val"]["step"] == best_step and summary["best_val"]["val_loss"] == pytest.approx(min(losses))
    best = load_checkpoint(tmp_path / "straight" / BEST_NAME)
    assert best["format"] == load_checkpoint(straight.checkpoint_path)["format"] and best["step"] == best_step
    history = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert [r["val_loss"] for r in history["steps"]] == pytest.approx(losses)
    # best.pth is a checkpoint like checkpoint.pth: a trainer resumes from it
    again = Trainer(config, tmp_path / "from_best", device="cpu", progress=False)
    again.resume(tmp_path / "straight" / BEST_NAME)
    assert again.step == best_step and again.best_val == best["best_val"]

    out = tmp_path / "killed"
    assert StopsAfterFirstStep(config, out, device="cpu", progress=False).fit()["interrupted"]
    with open(out / "history.csv", "a") as f:                # a killed run's extra, half-written line
        f.write("2,0.5,0.9")
    if has_tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(out / "tensorboard")) as writer:   # ... and its events after the checkpoint
            writer.add_scalar("val/loss", 99.0, 2)
    resumed = Trainer(config, out, device="cpu", progress=False)
    resumed.resume()
    resumed.fit()
    resumed_rows = read_csv(out / "history.csv")
    assert [r["step"] for r in resumed_rows] == [r["step"] for r in rows]
    for a, b in zip(rows, resumed_rows):
        for key in ("loss", "lr", "val_loss", "val_peak_hit"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5), key
    assert load_checkpoint(out / BEST_NAME)["best_val"] == pytest.approx(best["best_val"])

    if not has_tensorboard:
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/tracking", "train/lr", "val/loss", "val/peak_hit"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val/loss")] == [1, 2, 3, 4]
    assert [e.value for e in events.Scalars("val/loss")] == pytest.approx(losses, rel=1e-5)


def test_missing_tensorboard_is_one_warning(tmp_path, data, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)      # import fails as if absent
    Trainer(tiny(data, val_every=0, log_every=1), tmp_path, device="cpu", progress=False).fit(max_steps=1)
    err = capsys.readouterr().err
    assert err.count("warning: the tensorboard package is not installed") == 1
    assert not (tmp_path / "tensorboard").exists()
    assert [r["step"] for r in read_csv(tmp_path / "history.csv")] == ["1"] and not (tmp_path / BEST_NAME).exists()


def test_old_lambdalr_checkpoint_resumes_on_the_same_schedule(tmp_path, data):
    config = tiny(data, val_every=0, epochs=3, warmup_epochs=1.0)
    out = tmp_path / "run"
    StopsAfterFirstStep(config, out, device="cpu", progress=False).fit()
    ckpt = load_checkpoint(out / "checkpoint.pth")
    # what the former hand-written schedule stored: a LambdaLR state and no best_val
    total, warmup = 6, 2
    factor = lambda s: 0.1 + 0.9 * s / warmup if s < warmup else 1e-3 ** ((s - warmup) / (total - 1 - warmup))  # noqa: E731
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    old = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    opt.step()
    old.step()
    ckpt["scheduler"] = old.state_dict()
    del ckpt["best_val"]
    ckpt["history"].pop("val", None)
    save_atomic(ckpt, out / "checkpoint.pth")

    trainer = Trainer(config, out, device="cpu", progress=False)
    trainer.resume()
    assert trainer.best_val is None
    seen = []
    original = trainer.train_step

    def spy(batch):
        values = original(batch)
        seen.append(values["lr"])
        return values

    trainer.train_step = spy
    trainer.fit()
    assert seen == pytest.approx([1e-2 * factor(s) for s in range(1, total)], rel=1e-9)


def test_cli_val_every_and_generated_default_holds_out(tmp_path, data, monkeypatch, capsys):
    # the lone generated default is split like a video folder (here the tiny set stands in for it)
    import data.generated as generated

    monkeypatch.setattr(generated, "default_dataset", lambda *a, **k: data)
    config = write_tiny_siamfc_toml(tmp_path / "c.toml", None, "val_pairs = 2", "val_fraction = 0.25")
    rc = tool.main(["--config", str(config), "--out", str(tmp_path / "run"), "--val-every", "2", "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["best_val"]["step"] == 2 and summary["best_checkpoint"].endswith(BEST_NAME)
    assert "step 2: val_loss" in out.err
    assert [r["step"] for r in read_csv(tmp_path / "run" / "history.csv")] == ["1", "2"]   # the first step is always logged
    rc = tool.main(["--out", str(tmp_path / "run"), "--resume", "--val-every", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: --val-every cannot change a run being resumed (its stored config is used)"]



def test_fit_gap_scores_held_out_and_training_videos(tmp_path, data, capsys):
    """--fit-gap: the validation pass of a checkpoint on the held-out videos and on as many pairs of
    the training videos, with the weights of the checkpoint it names (no training, nothing written)."""
    config = tiny(data)
    trainer = Trainer(config, tmp_path / "run", device="cpu", progress=False)
    seen = load_validation_pairs(config, videos="training")
    assert {s.name for s in seen.sequences} == {s.name for s in trainer.pairs().sequences}
    assert len(seen) == 4 and not seen.augment
    with torch.no_grad():                        # weights a fresh run with this seed would not start from
        for param in trainer.model.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    ckpt = tmp_path / "weights.pth"
    save_atomic({"config": config.to_dict(), "model": trainer.model.state_dict()}, ckpt)
    toml = tmp_path / "tiny.toml"
    toml.write_text(f'''[model]\ntype = "siamfc"\n[model.backbone]\nname = "resnet22"\ngroup = "R8"\nwidth_mult = 0.125
[train]\nval_pairs = 4\nnum_workers = 0\n[data]\npath = "{data}"\nval_fraction = 0.25\nval_seed = 3\n''')
    assert tool.main(["--config", str(toml), "--fit-gap", str(ckpt), "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key, pairs in (("held_out_videos", None), ("training_videos", seen)):   # the checkpoint's weights, the same pass
        assert report[key] == pytest.approx(trainer.validate(pairs), rel=1e-5)
    assert report["gap"]["val_loss"] == pytest.approx(
        report["training_videos"]["val_loss"] - report["held_out_videos"]["val_loss"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml", "weights.pth"]     # nothing written
    assert tool.main(["--config", str(toml), "--fit-gap", str(tmp_path / "missing.pth")]) == 2
    assert "no checkpoint file" in capsys.readouterr().err
    rpn = tmp_path / "rpn.toml"                  # same backbone, another head: not the checkpoint's model
    rpn.write_text(toml.read_text().replace('type = "siamfc"', 'type = "siamrpn"'))
    assert tool.main(["--config", str(rpn), "--fit-gap", str(ckpt), "--device", "cpu"]) == 2
    assert "lacks" in capsys.readouterr().err
    rpn.unlink()
    with pytest.raises(ValueError, match="videos"):
        load_validation_pairs(config, videos="test")
