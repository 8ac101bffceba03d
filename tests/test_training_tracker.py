"""Tracker training: configs, schedule, loss going down, exact resume, export, CLI errors, DDP."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import trainer_stopping_after_first_step
from conftest import write_tiny_siamfc_toml as write_toml

from common.checkpoints import load_checkpoint
from common.config import ConfigError
from data.generated import generate_dataset
from tools import train_tracker as tool
from tracker.models import build_model
from training.tracking import RunConfig, Trainer, build_lr_scheduler, export_weights, read_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "tracking"
TINY_BACKBONE = {"name": "resnet22", "group": "R8", "width_mult": 0.125}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny GOT-10k-layout dataset (real JPEG frames and label files) from the generator."""
    root = tmp_path_factory.mktemp("tiny")
    return generate_dataset(root, 3, seed=7, num_frames=8, frame_size=(200, 160))


def tiny(data, model_type="siamfc", **train) -> RunConfig:
    train = {"epochs": 2, "pairs_per_epoch": 4, "batch_size": 2, "num_workers": 0, "warmup_epochs": 0.5,
             "beta": 1.0, **train}
    return RunConfig.from_dict({"model": {"type": model_type, "backbone": TINY_BACKBONE},
                                "train": train, "data": {"path": str(data)}})




# ------------------------------------------------------------------------------------------------
def test_bundled_configs_load_and_plain_twins_differ_only_in_beta():
    fc_ien, fc_plain = read_config(CONFIGS / "siamfc_r8_ien.toml"), read_config(CONFIGS / "siamfc_plain.toml")
    rpn_ien, rpn_plain = read_config(CONFIGS / "siamrpn_r8_ien.toml"), read_config(CONFIGS / "siamrpn_plain.toml")
    for ien, plain, kind in ((fc_ien, fc_plain, "siamfc"), (rpn_ien, rpn_plain, "siamrpn")):
        assert ien.model.type == kind and ien.model.backbone.name == "resnet22"
        assert ien.model.backbone.width_mult == 0.25 and ien.model.backbone.group == "R8"
        assert ien.model == plain.model and ien.data == plain.data
        assert ien.train.beta > 0 and plain.train.beta == 0
        a, b = ien.to_dict()["train"], plain.to_dict()["train"]
        assert {k for k in a if a[k] != b[k]} == {"beta"}
    # the same training budget for all four
    budgets = {(c.train.epochs, c.train.pairs_per_epoch, c.train.batch_size) for c in (fc_ien, fc_plain, rpn_ien, rpn_plain)}
    assert len(budgets) == 1
    # the real-footage twins: the same data mix, budget, seed and starting point kind; only beta
    # and the generated-data weights each starts from differ
    real_ien, real_plain = read_config(CONFIGS / "siamfc_ien_real.toml"), read_config(CONFIGS / "siamfc_plain_real.toml")
    assert real_ien.model == real_plain.model == fc_ien.model and real_ien.data == real_plain.data
    assert [s.kind for s in real_ien.data.sources] == ["video", "photos", "generated"]
    assert real_ien.data.val_fraction > 0 and real_ien.train.beta > 0 and real_plain.train.beta == 0
    a, b = real_ien.to_dict()["train"], real_plain.to_dict()["train"]
    assert {k for k in a if a[k] != b[k]} == {"beta", "init_from"}
    assert a["init_from"].endswith("generated/siamfc_ien.pth") and b["init_from"].endswith("generated/siamfc_plain.pth")
    rpn_ien, rpn_plain = read_config(CONFIGS / "siamrpn_ien_real.toml"), read_config(CONFIGS / "siamrpn_plain_real.toml")
    re_fc = read_config(CONFIGS / "re_siamfc_real.toml")
    a, b = rpn_ien.to_dict()["train"], rpn_plain.to_dict()["train"]
    assert {k for k in a if a[k] != b[k]} == {"beta", "init_from"} and rpn_ien.model == rpn_plain.model
    for other in (rpn_ien, rpn_plain, re_fc):                 # one data mix, pair count and seed for every tracker
        assert other.data == real_ien.data
        assert (other.train.pairs_per_epoch, other.train.seed) == (real_ien.train.pairs_per_epoch, real_ien.train.seed)
    assert re_fc.train.epochs == real_ien.train.epochs        # RE-SiamNet: the SiamFC pair's budget
    assert rpn_ien.train.epochs == rpn_plain.train.epochs == 1  # the SiamRPN pair: a third of it (CPU), one budget
    for config in (real_ien, real_plain, rpn_ien, rpn_plain, re_fc):
        assert (ROOT / config.train.init_from).is_file()


def test_config_errors(tmp_path, data):
    bad = write_toml(tmp_path / "bad.toml", data, "betta = 0.5")
    with pytest.raises(ConfigError, match="unknown key.*'betta'.*did you mean 'beta'"):
        read_config(bad)
    with pytest.raises(ConfigError, match="needs orientation groups"):
        read_config(write_toml(tmp_path / "ok.toml", data), {"model": {"backbone": {"group": "none"}}, "train": {"beta": 1.0}})
    plain = read_config(tmp_path / "ok.toml", {"model": {"backbone": {"group": "none"}}, "train": {"beta": 0.0}})
    assert plain.model.backbone.group == "none" and plain.train.beta == 0
    with pytest.raises(ConfigError, match="unknown key"):
        read_config(tmp_path / "ok.toml", {"optimiser": {"lr": 1}})
    with pytest.raises(ConfigError, match="ien_inputs"):
        read_config(tmp_path / "ok.toml", {"train": {"ien_inputs": "x"}})
    with pytest.raises(ConfigError, match="not found"):
        read_config(tmp_path / "missing.toml")


def former_schedule(step, total_steps, warmup_steps, start_factor, end_factor):
    """The closed form of the hand-written LambdaLR factor that build_lr_scheduler replaced."""
    if step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    span = max(1, total_steps - 1 - warmup_steps)
    return end_factor ** min(1.0, (step - warmup_steps) / span)


def _lrs(total, warmup, start, end, lr=0.01):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_lr_scheduler(opt, total, warmup, start, end)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out, scheduler


@pytest.mark.parametrize("total, warmup, start, end", [(100, 10, 0.1, 1e-3), (50, 0, 0.1, 1e-3), (7, 3, 1.0, 0.5),
                                                       (2, 1, 0.1, 1e-3), (20_000, 500, 0.1, 1e-3)])
def test_library_schedule_keeps_the_former_values(total, warmup, start, end):
    lrs, scheduler = _lrs(total, warmup, start, end)
    expected = [0.01 * former_schedule(s, total, warmup, start, end) for s in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert type(scheduler).__name__ == ("SequentialLR" if warmup else "ExponentialLR")
    if total == 100:
        assert lrs[0] == pytest.approx(1e-3) and lrs[5] == pytest.approx(5.5e-3) and lrs[10] == pytest.approx(1e-2)
        assert lrs[99] == pytest.approx(1e-5)


def test_a_few_steps_lower_the_tracking_and_ien_losses(tmp_path, data):
    config = tiny(data, batch_size=2, pairs_per_epoch=40, warmup_epochs=0.0, lr=1e-2)
    trainer = Trainer(config, tmp_path, device="cpu", progress=False)
    pairs = trainer.pairs()
    batch = torch.utils.data.default_collate([pairs[i] for i in range(2)])
    history = [trainer.train_step(batch) for _ in range(6)]
    first, last = history[0], history[-1]
    assert set(first) >= {"loss", "tracking", "cls", "ien", "ien_rel", "ien/stem", "ien/layer1", "ien/layer2", "lr"}
    assert first["loss"] == pytest.approx(first["tracking"] + config.train.beta * first["ien"], rel=1e-5)
    assert last["tracking"] < 0.8 * first["tracking"]
    assert last["ien"] < first["ien"]
    assert last["loss"] < 0.8 * first["loss"]


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, data):
    # SiamRPN: its loss also draws random anchors (from the per-step generator)
    config = tiny(data, "siamrpn", checkpoint_every=1)
    straight = Trainer(config, tmp_path / "straight", device="cpu", progress=False)
    summary = straight.fit()
    assert summary["finished"] and summary["steps"] == 4 and summary["epochs"] == 2

    out = tmp_path / "killed"
    first = trainer_stopping_after_first_step()(config, out, device="cpu", progress=False).fit()  # stops mid-epoch 1
    assert first["interrupted"] and first["steps"] == 1
    second = Trainer(config, out, device="cpu", progress=False)
    second.resume()
    assert (second.epoch, second.step) == (0, 1)
    second.fit(max_steps=2)                                                   # crosses the epoch end
    third = Trainer(config, out, device="cpu", progress=False)
    third.resume()
    assert (third.epoch, third.step) == (1, 3)
    third.fit()

    a, b = straight.model.state_dict(), third.model.state_dict()
    init = build_model(config.model).state_dict()
    assert not all(torch.equal(a[k], init[k]) for k in a)                   # it did train
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt_a, ckpt_b = load_checkpoint(straight.checkpoint_path), load_checkpoint(third.checkpoint_path)
    for k, v in ckpt_a["optimizer"]["state"].items():
        assert torch.equal(v["momentum_buffer"], ckpt_b["optimizer"]["state"][k]["momentum_buffer"])
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("time_s", "pairs_per_s", "pairs")} for e in h["epochs"]]  # noqa: E731
    assert strip(ckpt_a["history"]) == strip(ckpt_b["history"])
    assert ckpt_b["config"] == config.to_dict() and ckpt_b["epoch"] == 2 and ckpt_b["step"] == 4
    assert set(ckpt_b["rng"][0]) == {"torch", "cuda", "numpy", "python"}
    assert json.loads((out / "history.json").read_text())["epochs"][-1]["epoch"] == 2


def test_export_is_small_and_loads_into_the_model(tmp_path, data):
    trainer = Trainer(tiny(data, epochs=1), tmp_path / "run", device="cpu", progress=False)
    trainer.fit()
    info = export_weights(trainer.checkpoint_path, tmp_path / "w16.pth", half=True)
    export_weights(trainer.checkpoint_path, tmp_path / "w32.pth")
    assert info["dtype"] == "float16"
    w16, w32 = load_checkpoint(tmp_path / "w16.pth"), load_checkpoint(tmp_path / "w32.pth")
    assert "optimizer" not in w16 and w16["config"]["model"]["backbone"]["width_mult"] == 0.125
    assert (tmp_path / "w16.pth").stat().st_size < (tmp_path / "w32.pth").stat().st_size
    assert (tmp_path / "w32.pth").stat().st_size < trainer.checkpoint_path.stat().st_size
    floats = [v for v in w16["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    model = build_model(w16["config"]["model"])
    model.load_state_dict(w16["model"])
    for k, v in w32["model"].items():
        assert torch.allclose(model.state_dict()[k].float(), v.float(), atol=1e-2, rtol=1e-2)
    # the tracker builds itself from the exported file alone
    from tracker import build_tracker

    tracker = build_tracker("siamfc", checkpoint=tmp_path / "w16.pth", device="cpu")
    assert tracker.model.config.backbone.width_mult == 0.125
    assert all(p.dtype == torch.float32 for p in tracker.model.parameters())


# ------------------------------------------------------------------------------------------------
# command line
def _cli(capsys, *args):
    rc = tool.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_error_line(rc, err, pattern):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in err


def test_cli_trains_resumes_and_exports(capsys, tmp_path, data):
    cfg = write_toml(tmp_path / "c.toml", data)
    out = tmp_path / "run"
    rc, stdout, _ = _cli(capsys, "--config", cfg, "--out", out, "--epochs", 2, "--max-steps", 2, "--no-progress")
    assert rc == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and not summary["finished"] and summary["ien_first_epoch"] > 0
    json_config = json.loads((out / "config.json").read_text())
    assert json_config["train"]["epochs"] == 2 and json_config["data"]["path"] == str(data)

    rc, _, err = _cli(capsys, "--config", cfg, "--out", out)
    _one_error_line(rc, err, "already holds a run")
    rc, _, err = _cli(capsys, "--out", out, "--resume", "--beta", 0)
    _one_error_line(rc, err, "--beta cannot change a run being resumed")

    rc, stdout, _ = _cli(capsys, "--out", out, "--resume", "--no-progress", "--export", tmp_path / "w.pth", "--half")
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert rc == 0 and summary["finished"] and summary["epochs"] == 2 and summary["dtype"] == "float16"
    assert load_checkpoint(tmp_path / "w.pth")["trained"]["steps"] == 4

    rc, stdout, _ = _cli(capsys, "--checkpoint", out / "checkpoint.pth", "--export", tmp_path / "w2.pth")
    assert rc == 0 and json.loads(stdout)["dtype"] == "float32"


def test_cli_sigterm_stops_after_the_step_with_a_checkpoint(capsys, tmp_path, data, monkeypatch):
    original = Trainer.train_step

    def step_then_sigterm(self, batch):
        values = original(self, batch)
        if self.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return values

    monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    rc, stdout, err = _cli(capsys, "--config", write_toml(tmp_path / "c.toml", data), "--out", out, "--no-progress",
                           "--export", tmp_path / "w.pth")
    assert rc == 130 and "interrupted at step 1" in err and "nothing exported" in err
    assert json.loads(stdout.strip().splitlines()[-1])["interrupted"]
    assert load_checkpoint(out / "checkpoint.pth")["step"] == 1 and not (tmp_path / "w.pth").exists()
    assert signal.getsignal(signal.SIGTERM) is before                     # handlers restored
    monkeypatch.setattr(Trainer, "train_step", original)
    rc, stdout, _ = _cli(capsys, "--out", out, "--resume", "--no-progress")
    assert rc == 0 and json.loads(stdout.strip().splitlines()[-1])["steps"] == 2


def test_cli_user_errors_are_one_line(capsys, tmp_path, data):
    rc, _, err = _cli(capsys, "--config", write_toml(tmp_path / "bad.toml", data, "momentun = 0.9"), "--out", tmp_path / "a")
    _one_error_line(rc, err, "unknown key(s) 'momentun' (did you mean 'momentum'?)")
    rc, _, err = _cli(capsys, "--config", tmp_path / "nope.toml")
    _one_error_line(rc, err, "config file not found")
    cfg = write_toml(tmp_path / "c.toml", data)
    rc, _, err = _cli(capsys, "--config", cfg, "--data", tmp_path / "no_such_folder", "--out", tmp_path / "b")
    _one_error_line(rc, err, "dataset folder not found")
    rc, _, err = _cli(capsys, "--config", cfg, "--group", "none", "--out", tmp_path / "c")
    _one_error_line(rc, err, "needs orientation groups")
    rc, _, err = _cli(capsys, "--out", tmp_path / "d", "--resume")
    _one_error_line(rc, err, "no checkpoint to resume")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    rc, _, err = _cli(capsys, "--checkpoint", tmp_path / "junk.pth", "--export", tmp_path / "e.pth")
    _one_error_line(rc, err, "cannot read checkpoint")
    rc, _, err = _cli(capsys, "--config", cfg, "--init-from", tmp_path / "missing.pth", "--out", tmp_path / "f")
    _one_error_line(rc, err, "missing.pth")


def test_cli_corrupt_frame_read_by_a_worker_is_one_line(capsys, tmp_path, data):
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    for frame in broken.glob("*/0000000[2-8].jpg"):       # every pair needs a frame other than the first
        frame.write_bytes(b"\xff\xd8 this is not a JPEG")
    cfg = write_toml(tmp_path / "c.toml", broken)
    rc, _, err = _cli(capsys, "--config", cfg, "--workers", 1, "--out", tmp_path / "run", "--no-progress")
    _one_error_line(rc, err, "cannot read image")
    assert str(broken) in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_on_cpu(tmp_path, data):
    """DistributedDataParallel (gloo) under torchrun: one summary, rank 0 writes the checkpoint;
    rank 0 validates and broadcasts, so all processes take one best.pth decision."""
    cfg = write_toml(tmp_path / "c.toml", data, "seed = 3\nval_every = 1\nval_pairs = 2", "val_fraction = 0.34")
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(ROOT / "tools" / "train_tracker.py"), "--config", str(cfg), "--out", str(out),
           "--device", "cpu", "--no-progress", "--batch-size", "4", "--pairs-per-epoch", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["world_size"] == 2 and summaries[0]["finished"]
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["step"] == 2
    assert ckpt["history"]["epochs"][0]["pairs"] == 8
    # the model was wrapped as a whole: plain (non-"module.") keys that load into a fresh model
    build_model(ckpt["config"]["model"]).load_state_dict(ckpt["model"])
    val_losses = [row["val_loss"] for row in ckpt["history"]["steps"]]
    assert len(val_losses) == 2 and (out / "history.csv").read_text().count("\n") == 3
    best = load_checkpoint(out / "best.pth")
    assert best["world_size"] == 2 and best["best_val"]["val_loss"] == min(val_losses)


def test_init_from_starts_at_the_checkpoint_weights(tmp_path, data):
    first = Trainer(tiny(data, epochs=1), tmp_path / "a", device="cpu", progress=False)
    first.fit()
    source = load_checkpoint(first.checkpoint_path)["model"]
    # fine-tune: the same backbone, a SiamRPN head that the SiamFC file does not have
    cfg = tiny(data, "siamrpn", init_from=str(first.checkpoint_path))
    second = Trainer(cfg, tmp_path / "b", device="cpu", progress=False)
    own = second.model.state_dict()
    backbone = [k for k in own if k.startswith("backbone.")]
    assert backbone and all(torch.equal(own[k], source[k]) for k in backbone)
    assert any(k.startswith("rpn.") for k in second.initialized_from["fresh"])
    second.fit()
    assert RunConfig.from_dict(load_checkpoint(second.checkpoint_path)["config"]).train.init_from == cfg.train.init_from
    # a different backbone is one clear error
    wide = RunConfig.from_dict({**cfg.to_dict(), "model": {"type": "siamfc", "backbone": {**TINY_BACKBONE, "width_mult": 0.25}}})
    with pytest.raises(Exception, match="backbone does not match"):
        Trainer(wide, tmp_path / "c", device="cpu", progress=False)


def test_every_tracking_config_loads_and_pooled_twins_differ_only_in_beta_and_start():
    configs = {p.stem: read_config(p) for p in sorted(CONFIGS.glob("*.toml"))}
    assert len(configs) >= 9
    for stem in ("siamfc_r8_ien_pool", "siamfc_r8_ien_pool_ft"):
        ien, plain = configs[stem], configs[stem.replace("r8_ien", "plain")]
        assert ien.model.pool_groups and ien.model == plain.model and ien.data == plain.data
        a, b = ien.to_dict()["train"], plain.to_dict()["train"]
        assert {k for k in a if a[k] != b[k]} <= {"beta", "init_from"}
        assert ien.train.beta > 0 and plain.train.beta == 0
    for stem in ("siamfc_r8_ien_pool_ft", "siamfc_plain_pool_ft"):
        assert (ROOT / configs[stem].train.init_from).is_file()
    # the bundled real-footage pair, both stages: the same data, budget and seed, beta apart
    for stem in ("siamfc_ien_real", "siamfc_ien_real2"):
        ien, plain = configs[stem], configs[stem.replace("ien", "plain")]
        assert ien.model == plain.model and ien.data == plain.data
        a, b = ien.to_dict()["train"], plain.to_dict()["train"]
        assert {k for k in a if a[k] != b[k]} == {"beta", "init_from"}
        assert ien.train.beta > 0 and plain.train.beta == 0
    assert configs["siamfc_ien_real2"].train.init_from == "runs/real/siamfc_ien_real.pth"   # stage 1's export


def test_cli_shows_the_samplers_dropped_sequences_warning(tmp_path, data, recwarn):
    """The toolkit's own warnings reach the user (only torch's and e2cnn's are silenced)."""
    root = tmp_path / "data"
    shutil.copytree(data, root)
    seqs = sorted(p for p in root.iterdir() if p.is_dir())
    gt = seqs[0] / "groundtruth.txt"
    rows = gt.read_text().splitlines()
    gt.write_text("\n".join("10,10,2,2" for _ in rows) + "\n")     # a 2x2 px target: fails the SiamFC filter
    cfg = write_toml(tmp_path / "c.toml", root)
    assert tool.main(["--config", str(cfg), "--out", str(tmp_path / "run"), "--max-steps", "1", "--no-progress"]) == 0
    dropped = [w for w in recwarn if "dropped 1 of 3 sequences" in str(w.message)]
    assert dropped and seqs[0].name in str(dropped[0].message)
