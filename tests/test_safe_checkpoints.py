"""Checkpoints are read as data, never executed: a pickle whose payload would create a file is
refused with one error line by the loader and by every command that opens a checkpoint, and the
file never appears; checkpoints of the older format (numpy RNG state) still load and resume."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from common.checkpoints import CheckpointError, load_checkpoint, read_tensor_file, save_atomic
from tests.conftest import write_tiny_siamfc_toml

ROOT = Path(__file__).resolve().parents[1]


class _CreatesFile:
    """Unpickling this calls open(marker, "w"): the file appears if the pickle is executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"config": {}, "model": {}, "payload": _CreatesFile(marker)}, path)
    return path


def test_a_code_running_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pth", marker)
    with pytest.raises(CheckpointError, match=r"refused .*evil\.pth.*io\.open"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="refused"):
        read_tensor_file(evil)
    assert not marker.exists()
    # a legacy (non-zip) torch pickle with the same payload is refused too
    legacy = tmp_path / "legacy.pth"
    torch.save({"config": {}, "model": {}, "payload": _CreatesFile(marker)}, legacy,
               _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(legacy)
    assert not marker.exists()


def test_older_checkpoints_with_numpy_rng_state_still_load(tmp_path):
    np.random.seed(3)
    state = np.random.get_state()                     # the tuple with a uint32 array, as written before
    path = tmp_path / "old.pth"
    save_atomic({"config": {"a": 1}, "model": {"w": torch.ones(2)}, "rng": [{"numpy": state}]}, path)
    loaded = load_checkpoint(path)["rng"][0]["numpy"]
    assert loaded[0] == "MT19937" and np.array_equal(loaded[1], state[1]) and loaded[1].dtype == np.uint32


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_every_command_refuses_a_code_running_checkpoint(tmp_path):
    """track, evaluate, export, benchmark_fps, equivariance, train_tracker (--export and --resume)
    and the classification trainer's --resume: one error line, exit 2, no file created."""
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pth", marker)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _evil_checkpoint(run_dir / "checkpoint.pth", marker)
    cls_dir = tmp_path / "cls"
    cls_dir.mkdir()
    _evil_checkpoint(cls_dir / "checkpoint.pth", marker)
    cfg = write_tiny_siamfc_toml(tmp_path / "tiny.toml", None)
    tools = ROOT / "tools"
    commands = [
        [str(tools / "track.py"), "--checkpoint", str(evil), "--no-display"],
        [str(tools / "evaluate.py"), "--trackers", f"siamfc={evil}", "--out", str(tmp_path / "ev")],
        [str(tools / "export.py"), "--checkpoint", str(evil), "--out", str(tmp_path / "exp")],
        [str(tools / "benchmark_fps.py"), "--trackers", f"siamfc={evil}"],
        [str(tools / "equivariance.py"), "--checkpoint", str(evil)],
        [str(tools / "train_tracker.py"), "--checkpoint", str(evil), "--export", str(tmp_path / "w.pth")],
        [str(tools / "train_tracker.py"), "--config", str(cfg), "--out", str(run_dir), "--resume"],
        ["-m", "training.classification.train", "--out", str(cls_dir), "--resume"],
    ]
    with ThreadPoolExecutor(2) as pool:          # the commands' start-up dominates: two at a time
        results = list(pool.map(lambda command: _cli(command, ROOT), commands))
    for command, result in zip(commands, results):
        where = command[0]
        assert result.returncode == 2, (where, result.stdout[-500:], result.stderr[-2000:])
        assert "Traceback" not in result.stderr, where
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and ("refused" in errors[0] or "evil.pth" in errors[0]
                                     or "checkpoint.pth" in errors[0]), (where, result.stderr[-1000:])
        assert not marker.exists(), where


def test_rng_states_of_either_format_restore_the_same_streams():
    from training.run import rng_state as _rng_state
    from training.run import set_rng_state as _set_rng_state

    np.random.seed(7)
    new = _rng_state(torch.device("cpu"))
    legacy = {**new, "numpy": np.random.get_state()}
    expected = np.random.rand(4)
    for state in (new, legacy):
        np.random.seed(0)
        _set_rng_state(state, torch.device("cpu"))
        assert np.array_equal(np.random.rand(4), expected)
    assert not any(isinstance(v, np.ndarray) for v in new["numpy"]["state"].values())
