"""Outputs a user can trust (issue: results you can trust): atomic writers refuse special files
and links and follow the umask; a video write that fails (a full disk, here a file-size limit)
is an error and keeps the old file; a video that ends before its announced length is an error
unless accepted. Everything runs on tiny files the tests write."""
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from common.atomic import check_replaceable, write_text_atomic
from common.checkpoints import save_atomic
from common.config import to_dict
from evaluation.experiment import write_table_atomic
from tracker.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_writers_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x\n")
        write_table_atomic(tmp_path / "b.txt", np.zeros((2, 4)), "%.1f")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_atomic_writers_refuse_links_folders_and_special_files(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("keep\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    for path in (link, fifo, tmp_path / "folder"):
        with pytest.raises(FileExistsError, match="refusing to replace"):
            write_text_atomic(path, "new\n")
        with pytest.raises(FileExistsError):
            check_replaceable(path)
    assert link.is_symlink() and target.read_text() == "keep\n" and stat.S_ISFIFO(fifo.stat().st_mode)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]       # no temp file left


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A tiny checkpoint and a 12-frame MJPG clip of a moving block."""
    tmp = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    model = build_model({"type": "siamfc", "backbone": {"name": "resnet22", "group": "R8", "width_mult": 0.0625}})
    ckpt = tmp / "siamfc.pth"
    save_atomic({"config": {"model": to_dict(model.config), "train": {}}, "model": model.state_dict()}, ckpt)
    rng = np.random.default_rng(0)
    video = tmp / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    for t in range(12):
        frame = rng.integers(60, 120, (96, 128, 3), dtype=np.uint8)
        frame[20 + t:44 + t, 20 + 3 * t:44 + 3 * t] = (30, 200, 230)
        writer.write(frame)
    writer.release()
    return ckpt, video


def _track(args, limit=None):
    def preexec():
        if limit is not None:                 # a small disk: writes past `limit` bytes fail (EFBIG)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*map(str, args), "--tracker", "siamfc"]     # the tiny test checkpoints are SiamFC models
    return subprocess.run([sys.executable, str(ROOT / "tools" / "track.py"), *args, "--no-display",
                           "--threads", "1"], capture_output=True, text=True, preexec_fn=preexec, env=env,
                          timeout=300)


def test_a_failed_video_write_is_an_error_and_keeps_the_old_video(tmp_path, clip):
    ckpt, video = clip
    out = tmp_path / "out.mp4"
    good = _track(["--video", video, "--init-box", "20,20,24,24", "--checkpoint", ckpt, "--output", out])
    assert good.returncode == 0 and "warning" not in good.stderr, good.stderr     # the whole clip read
    before = out.read_bytes()
    assert len(before) > 4000
    full = _track(["--video", video, "--init-box", "20,20,24,24", "--checkpoint", ckpt, "--output", out],
                  limit=4000)
    assert full.returncode == 2
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in full.stderr
    assert out.read_bytes() == before                                        # the good video stays
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temp file left


def test_a_video_that_ends_early_is_an_error_unless_accepted(tmp_path, clip):
    ckpt, video = clip
    data = bytearray(video.read_bytes())
    n = len(data)
    data[n // 3:n // 3 + n // 4] = bytes(n // 4)                             # corrupt the middle
    broken = tmp_path / "broken.avi"
    broken.write_bytes(bytes(data))
    capture = cv2.VideoCapture(str(broken))
    announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    readable = 0
    while capture.read()[0]:
        readable += 1
    capture.release()
    if not 0 < readable < announced:
        pytest.skip(f"this OpenCV build reads {readable} of {announced} frames of the corrupted clip")
    boxes = tmp_path / "boxes.txt"
    result = _track(["--video", broken, "--init-box", "20,20,24,24", "--checkpoint", ckpt, "--boxes", boxes])
    assert result.returncode == 2
    assert f"ended after {readable} of the {announced} frames" in result.stderr
    assert len(boxes.read_text().splitlines()) == readable
    accepted = _track(["--video", broken, "--init-box", "20,20,24,24", "--checkpoint", ckpt, "--boxes", boxes,
                       "--accept-short"])
    assert accepted.returncode == 0 and "warning: the video" in accepted.stderr


def test_weights_of_another_shape_than_the_config_give_one_clear_error(tmp_path, clip):
    from tracker import build_tracker

    ckpt, video = clip
    torch.manual_seed(0)
    small = build_model({"type": "siamfc", "backbone": {"name": "resnet22", "group": "R8", "width_mult": 0.0625}})
    wide = build_model({"type": "siamfc", "backbone": {"name": "resnet22", "group": "R8", "width_mult": 0.125}})
    bad = tmp_path / "bad.pth"                   # the small config with the wide network's weights
    save_atomic({"config": {"model": to_dict(small.config), "train": {}}, "model": wide.state_dict()}, bad)
    with pytest.raises(ValueError, match="do not match its config.*size mismatch"):
        build_tracker("siamfc", checkpoint=bad, device="cpu")
    result = _track(["--video", video, "--init-box", "20,20,24,24", "--checkpoint", bad])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [ln for ln in result.stderr.splitlines() if ln.startswith("error:")][0].count("size mismatch") == 1


def _dead_pid() -> int:
    """The pid of a process that has exited (its temporaries count as stale)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _modes(folder: Path) -> dict:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in folder.iterdir()}


def test_checkpoints_follow_the_shared_atomic_rules(tmp_path):
    """backbones.checkpoints.save_atomic: umask mode, the shared temp naming (a killed save's
    temporary is removed by the next one), links refused, the checkpoint loads as before."""
    ckpt = tmp_path / "checkpoint.pth"
    stale = tmp_path / f".checkpoint.pth.{_dead_pid()}.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".checkpoint.pth.{os.getppid()}.wr1t1ng.tmp"          # a live process's: kept
    live.write_bytes(b"being written")
    state = {"config": {"backbone": {}}, "model": {"w": torch.arange(6.0)}, "epoch": 3}
    old = os.umask(0o022)
    try:
        save_atomic(state, ckpt)
    finally:
        os.umask(old)
    assert _modes(tmp_path) == {"checkpoint.pth": 0o644, live.name: stat.S_IMODE(live.stat().st_mode)}
    loaded = torch.load(ckpt, weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], state["model"]["w"])
    link = tmp_path / "link.pth"
    link.symlink_to(ckpt)
    with pytest.raises(FileExistsError, match="symbolic link"):
        save_atomic(state, link)
    assert link.is_symlink() and sorted(_modes(tmp_path)) == sorted(["checkpoint.pth", "link.pth", live.name])


def test_a_failed_checkpoint_write_keeps_the_old_checkpoint(tmp_path):
    """A full disk (a file-size limit) while saving: an OSError naming the file, not torch's
    'unexpected pos' RuntimeError; the old checkpoint stays and no temporary is left."""
    ckpt = tmp_path / "checkpoint.pth"
    save_atomic({"config": {}, "model": {"w": torch.zeros(10)}}, ckpt)
    before = ckpt.read_bytes()
    script = ("import torch\nfrom common.checkpoints import save_atomic\n"
              "try:\n    save_atomic({'config': {}, 'model': {'w': torch.zeros(100000)}}, %r)\n"
              "except OSError as exc:\n    print('OSError', exc)\n" % str(ckpt))

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, preexec_fn=small_disk,
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OSError") and "nothing was replaced" in done.stdout and str(ckpt) in done.stdout
    assert ckpt.read_bytes() == before and os.listdir(tmp_path) == ["checkpoint.pth"]


def test_classification_outputs_follow_the_umask_and_refuse_links(tmp_path):
    """training/classification: checkpoint.pth, metrics.json and the study's files are written by
    common.atomic's writers (0644 under umask 022, a killed run's temporaries cleaned)."""
    from common.config import from_dict
    from data.classification import load_dataset
    from training.classification.config import TrainConfig
    from training.classification.engine import train
    from training.classification.study import save_plot, write_outputs

    torch.set_num_threads(1)
    cfg = from_dict(TrainConfig, {"train_limit": 16, "test_limit": 8, "eq_images": 2, "batch_size": 8, "epochs": 1,
                                  "backbone": {"name": "cnnbasic", "group": "R4", "width_mult": 0.25,
                                               "in_channels": 3}})
    run = tmp_path / "run"
    run.mkdir()
    stale = run / f".metrics.json.{_dead_pid()}.k1ll3d.tmp"
    stale.write_text("{")
    old = os.umask(0o022)
    try:
        train(cfg, run, data=load_dataset("rot-digits"), progress=False, log=lambda s: None)
        rows = [{"run": name, "model": "cnnbasic", "group": "R4", "width": 0.25, "beta": 0.0, "epochs": 1,
                 "params": 1000, "channels": 168, "accuracy": acc, "eq_error": err, "eq_error_last": err,
                 "per_layer": {"conv1": err}, "train_seconds": 1.0}
                for name, acc, err in (("a", 50.0, 0.1), ("b", 60.0, 0.01))]
        study = tmp_path / "study"
        study.mkdir()
        (study / f".study.png.{_dead_pid()}.k1ll3d.tmp.png").write_bytes(b"\x89PNG")
        save_plot("tiny", rows, study / "study.png")
    finally:
        os.umask(old)
    assert _modes(run) == {"checkpoint.pth": 0o644, "metrics.json": 0o644, "history.csv": 0o644, ".run.lock": 0o644}
    assert _modes(study) == {"study.png": 0o644}
    assert (study / "study.png").read_bytes().startswith(b"\x89PNG")
    (study / "results.md").symlink_to(run / "metrics.json")
    with pytest.raises(FileExistsError, match="symbolic link"):
        write_outputs("tiny", rows, study, "study.toml", "study.py")
    (study / "results.md").unlink()
    (study / "study.png").unlink()
    (study / "study.png").symlink_to(run / "metrics.json")
    with pytest.raises(FileExistsError, match="symbolic link"):
        save_plot("tiny", rows, study / "study.png")
    assert (study / "study.png").is_symlink() and not [p for p in study.iterdir() if p.name.startswith(".")]
