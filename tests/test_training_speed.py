"""train.channels_last: same loss and gradients as NCHW, a strict config key kept by checkpoints and
resume, and the JSON of tools/benchmark_training.py (tiny networks, a few steps)."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.checkpoints import load_checkpoint
from common.config import ConfigError
from data.generated import generate_dataset
from tools import benchmark_training as bench
from tracker.models import build_model
from training.tracking import RunConfig, Trainer, load_pairs, read_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny GOT-10k-layout dataset (real JPEG frames and label files) from the generator."""
    return generate_dataset(tmp_path_factory.mktemp("tiny"), 3, seed=7, num_frames=8, frame_size=(200, 160))


def tiny(data, model_type="siamfc", group="R8", **train) -> RunConfig:
    train = {"epochs": 1, "pairs_per_epoch": 4, "batch_size": 2, "num_workers": 0, "beta": 1.0, **train}
    return RunConfig.from_dict({"model": {"type": model_type,
                                          "backbone": {"name": "resnet22", "group": group, "width_mult": 0.125}},
                                "train": train, "data": {"path": str(data)}})


def one_step(config: RunConfig, batch: dict, channels_last: bool, dtype: torch.dtype, tmp_path: Path):
    """Loss values and parameter gradients of one training-step forward/backward in one format."""
    config = copy.deepcopy(config)
    config.train.channels_last = channels_last
    trainer = Trainer(config, tmp_path / f"cl{int(channels_last)}", device="cpu", num_workers=0, progress=False)
    trainer.model.to(dtype).train()
    z, x = (trainer._images(torch.as_tensor(batch[k]).to(dtype)) for k in ("z", "x"))
    if channels_last:      # the model's 4-D weights and the batches really are NHWC
        assert z.is_contiguous(memory_format=torch.channels_last) and not z.is_contiguous()
        conv = next(p for p in trainer.model.parameters() if p.dim() == 4 and p.shape[-1] > 1)
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    out = trainer.step_module(z, x, torch.as_tensor(batch["box_x"]).to(dtype), 1234)
    out["loss"].backward()
    losses = {k: v.detach().double() for k, v in out.items()}
    grads = {n: p.grad.double() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return losses, grads


@pytest.mark.parametrize("model_type, group, ien_inputs", [("siamfc", "R8", "z"), ("siamrpn", "R4R", "zx")])
def test_channels_last_step_has_the_same_loss_and_gradients(tmp_path, data, model_type, group, ien_inputs):
    config = tiny(data, model_type, group, ien_inputs=ien_inputs)
    batch = bench.collate_batches(load_pairs(config), 1, 2)[0]
    # float64: the same function in both layouts, gradients included (the IEN loss's rotations and
    # flips, group max-pool, max-pool, the heads' correlations)
    a, ga = one_step(config, batch, False, torch.float64, tmp_path)
    b, gb = one_step(config, batch, True, torch.float64, tmp_path)
    assert a.keys() == b.keys() and "ien" in a and ga.keys() == gb.keys() and len(ga) > 20
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-9, atol=1e-12)
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-7, atol=1e-10, msg=name)
    # float32 (what training runs): the losses within rounding; gradients within a few percent
    # (near-ties of max-pools may pick another element under different summation order)
    a32, ga32 = one_step(config, batch, False, torch.float32, tmp_path)
    b32, gb32 = one_step(config, batch, True, torch.float32, tmp_path)
    for key in a32:
        torch.testing.assert_close(b32[key], a32[key], rtol=1e-4, atol=1e-6)
    total = lambda g: torch.cat([v.flatten() for v in g.values()])      # noqa: E731
    assert (total(gb32) - total(ga32)).norm() <= 0.05 * total(ga32).norm()


def test_config_key_is_strict_saved_and_resumed(tmp_path, data):
    config = tiny(data, channels_last=True)
    assert config.train.channels_last is True and tiny(data).train.channels_last is False
    assert RunConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    for bad in ("yes", 1):
        with pytest.raises(ConfigError, match="channels_last"):
            tiny(data, channels_last=bad)
    with pytest.raises(ConfigError, match="channel_last"):
        tiny(data, channel_last=True)                      # a misspelt key is still rejected
    toml = tmp_path / "cl.toml"
    toml.write_text(f'[model]\ntype = "siamfc"\n[model.backbone]\nname = "resnet22"\ngroup = "R8"\nwidth_mult = 0.125\n'
                    f'[train]\nepochs = 1\npairs_per_epoch = 4\nbatch_size = 2\nchannels_last = true\n'
                    f'[data]\npath = "{data}"\n')
    assert read_config(toml).train.channels_last is True
    # a short run keeps the key in its checkpoint; resume rebuilds the NHWC model and goes on
    out = tmp_path / "run"
    trainer = Trainer(config, out, device="cpu", num_workers=0, progress=False)
    trainer.fit(max_steps=1)
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["config"]["train"]["channels_last"] is True
    plain = build_model(ckpt["config"]["model"])              # NHWC weights load into an NCHW model
    plain.load_state_dict(ckpt["model"])
    assert all(torch.equal(p, ckpt["model"][n]) for n, p in plain.named_parameters())
    again = Trainer(RunConfig.from_dict(ckpt["config"]), out, device="cpu", num_workers=0, progress=False)
    again.resume()
    for name, p in again.model.named_parameters():
        torch.testing.assert_close(p, trainer.model.state_dict()[name], rtol=0, atol=0)
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=torch.channels_last)
    summary = again.fit()
    assert summary["finished"] and summary["steps"] == 2


def test_benchmark_report_fields(data):
    args = bench.parse_args(["--config", str(ROOT / "configs" / "tracking" / "siamfc_r8_ien.toml"), "--data", str(data), "--batch-size", "2", "--steps", "2", "--rounds", "2",
                             "--warmup", "0", "--threads", "1"])
    report = bench.run(args)
    assert report["batch_size"] == 2 and report["steps"] == 2 and report["threads"] == 1
    assert set(report["modes"]) == {"contiguous", "channels_last"}
    for mode in report["modes"].values():
        assert mode["steps_timed"] == 4 and 0 < mode["min_ms"] <= mode["median_ms"] <= mode["max_ms"]
    ratio = report["modes"]["contiguous"]["median_ms"] / report["modes"]["channels_last"]["median_ms"]
    assert report["speedup_channels_last"] == pytest.approx(ratio, rel=1e-3)
    low, high = report["paired_speedup_range"]
    assert 0 < low <= report["paired_speedup_median"] <= high
    assert report["first_step_rel_loss_difference"] < 1e-4 and report["max_rel_loss_difference"] >= report["first_step_rel_loss_difference"]
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["torch"] == torch.__version__ and machine["torch_threads"] == 1
    assert len(machine["load_average"]) == 3
    json.dumps(report)


def test_benchmark_cli_bad_input_is_one_line(tmp_path):
    for argv in (["--steps", "0"], ["--config", str(tmp_path / "missing.toml")]):
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark_training.py"), *argv],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
