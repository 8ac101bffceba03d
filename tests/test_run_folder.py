"""The shared run layer (training/run.py): one writer per output folder (tracker training and the
classification study alike), history.csv from the first step, --max-steps counted from the run's
start with and without --resume."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_siamfc_toml

from common.locks import FolderBusy
from training.run import HistoryLog, RunFolder

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_writer_is_refused_until_the_first_releases(tmp_path):
    first = RunFolder(tmp_path / "run").claim()
    with pytest.raises(FolderBusy, match="being written by another run"):
        RunFolder(tmp_path / "run").claim()
    # another process too (the lock is the kernel's, whatever the process)
    script = ("import sys; sys.path.insert(0, %r)\nfrom common.locks import FolderBusy\nfrom training.run import RunFolder\n"
              "try:\n    RunFolder(%r).claim()\nexcept FolderBusy as exc:\n    print('busy', exc)\n"
              % (str(ROOT), str(tmp_path / "run")))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120).stdout
    assert out.startswith("busy") and "process" in out
    first.release()
    RunFolder(tmp_path / "run").claim().release()


def test_history_csv_rewrites_on_a_new_column_and_appends_otherwise(tmp_path):
    log = HistoryLog(RunFolder(tmp_path))
    rows = [{"step": 1, "loss": 0.5}]
    log.log(rows)
    rows.append({"step": 2, "loss": 0.4})
    log.log(rows)
    rows.append({"step": 3, "loss": 0.3, "val_loss": 0.2})
    log.log(rows)
    with open(tmp_path / "history.csv", newline="") as f:
        read = list(csv.DictReader(f))
    assert [r["step"] for r in read] == ["1", "2", "3"] and read[2]["val_loss"] == "0.2" and read[0]["val_loss"] == ""


def _train(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "train_tracker.py"), *args, "--no-progress"],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_max_steps_counts_from_the_start_of_the_run_and_a_short_run_has_a_history(tmp_path):
    cfg = write_tiny_siamfc_toml(tmp_path / "tiny.toml", None, extra="log_every = 10", epochs=3)
    out = tmp_path / "run"
    first = _train(["--config", str(cfg), "--out", str(out), "--max-steps", "1"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    with open(out / "history.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1"]        # logged although log_every is 10
    second = _train(["--out", str(out), "--resume", "--max-steps", "3"], tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads(second.stdout.strip().splitlines()[-1])["steps"] == 3      # up to step 3, not 1 + 3
    again = _train(["--out", str(out), "--resume", "--max-steps", "2"], tmp_path)  # already past it: no step
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["steps"] == 3


def test_training_into_a_folder_in_use_is_one_error_line(tmp_path):
    cfg = write_tiny_siamfc_toml(tmp_path / "tiny.toml", None)
    holder = RunFolder(tmp_path / "run").claim()
    try:
        result = _train(["--config", str(cfg), "--out", str(tmp_path / "run")], tmp_path)
        cls = subprocess.run([sys.executable, "-m", "training.classification.train", "--dataset", "rot-digits",
                              "--epochs", "1", "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    finally:
        holder.release()
    for done in (result, cls):
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert done.returncode == 2 and len(lines) == 1 and "being written by another run" in lines[0], done.stderr
    assert not (tmp_path / "run" / "checkpoint.pth").exists()
