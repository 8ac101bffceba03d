"""tools/benchmark_fps.py: timing statistics, backbone timing, ratios, CLI wiring (with a
stand-in tracker registry; no wall-clock assertions)."""
import importlib.util
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from got10k.trackers import Tracker
from PIL import Image

import common.threads  # noqa: F401
import data.frames  # noqa: F401
import tracker.backends  # noqa: F401  (the tool imports these even where a test fakes the registry)
from evaluation import fps

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("_tool_benchmark_fps",
                                               ROOT / "tools" / "benchmark_fps.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


class _TinyModel(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.backbone = torch.nn.Conv2d(3, width, 3, stride=4)
        self.config = types.SimpleNamespace(instance_size=31)


class _TinyTracker(Tracker):
    """Runs its backbone on a crop each update, like a Siamese tracker."""

    def __init__(self, width):
        super().__init__("tiny", is_deterministic=True)
        self.model = _TinyModel(width).eval()
        self.updates = 0

    def init(self, image, box):
        self.box = np.asarray(box, float)

    def update(self, image):
        self.updates += 1
        crop = torch.from_numpy(cv2.resize(np.asarray(image), (31, 31)).astype(np.float32)).permute(2, 0, 1)
        with torch.no_grad():
            self.model.backbone(crop[None])
        return self.box


def test_timing_stats_by_hand():
    stats = fps.timing_stats([0.001, 0.002, 0.003, 0.004, 0.010])
    assert stats["median_ms"] == pytest.approx(3.0)
    assert stats["q25_ms"] == pytest.approx(2.0) and stats["q75_ms"] == pytest.approx(4.0)
    assert stats["fps"] == pytest.approx(1000 / 3) and stats["n"] == 5


def test_time_tracker_cycles_frames_and_counts_only_timed_updates():
    frames = [Image.new("RGB", (40, 30)) for _ in range(4)]
    tracker = _TinyTracker(4)
    stats = fps.time_tracker(tracker, frames, [5, 5, 10, 10], warmup=3, count=7)
    assert tracker.updates == 10 and stats["n"] == 7 and stats["fps"] > 0
    torch_threads = torch.get_num_threads()
    tracker.model.backbone.train()
    backbone = fps.time_backbone(tracker.model.backbone, 31, warmup=1, min_run_time=0.05)
    assert backbone["timer"] == "torch.utils.benchmark.blocked_autorange"
    assert backbone["n"] >= 1 and backbone["calls"] == backbone["n"] * backbone["calls_per_block"]
    assert backbone["input"] == [1, 3, 31, 31] and backbone["fps"] > 0
    assert tracker.model.backbone.training is True            # its mode restored
    assert torch.get_num_threads() == torch_threads           # the Timer ran on the policy's threads


def test_ratios_pair_ien_with_re_and_plain():
    def entry(name, fps, bb):
        return {"name": name, "tracker": {"fps": fps}, "backbone": {"fps": bb}}
    ratios = bench.fps_ratios({"siamfc": entry("siamfc", 60, 200),
                               "re-siamfc": entry("re-siamfc", 20, 50),
                               "siamfc-plain": entry("siamfc-plain", 90, 400)})
    assert ratios["siamfc / re-siamfc"] == {"tracker": 3.0, "backbone": 4.0}
    assert ratios["siamfc-plain / siamfc"] == {"tracker": 1.5, "backbone": 2.0}


def _one_sequence(root):
    seq = root / "val" / "seq1"
    seq.mkdir(parents=True)
    for i in range(1, 4):
        Image.new("RGB", (40, 30), (i * 50, 0, 0)).save(seq / f"{i:08d}.jpg")
    np.savetxt(seq / "groundtruth.txt", [[5, 5, 10, 10]] * 3, fmt="%d", delimiter=",")
    return root


def _stand_in(monkeypatch, build_tracker) -> None:
    """The registry's names with stand-in trackers: tracker.build_tracker replaced."""
    import tracker

    monkeypatch.setattr(tracker, "build_tracker", build_tracker)


def test_cli_with_a_stand_in_registry(tmp_path, monkeypatch, capsys):
    widths = {"siamfc": 4, "re-siamfc": 8, "siamfc-plain": 2}
    _stand_in(monkeypatch, lambda name, checkpoint=None, device=None, backend=None: _TinyTracker(widths[name]))
    root = str(_one_sequence(tmp_path / "data"))
    args = ["--root", root, "--device", "cpu", "--warmup", "1", "--frames", "3",
            "--backbone-time", "0.02"]
    assert bench.main(args + ["--trackers", "siamfc", "re-siamfc", "siamfc-plain",
                              "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["batch"] == 1 and report["trackers"]["re-siamfc"]["tracker"]["n"] == 3
    assert report["trackers"]["siamfc"]["parameters"] == 4 * 3 * 9 + 4
    assert set(report["ratios"]) == {"siamfc / re-siamfc", "siamfc-plain / siamfc"}
    assert bench.main(args + ["--trackers", "siamfc", "re-siamfc"]) == 0
    assert "FPS ratio siamfc / re-siamfc" in capsys.readouterr().out
    assert bench.main(args + ["--trackers", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown tracker 'nope'" in err[0]


def test_cli_without_a_registry_fails_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tracker", types.ModuleType("tracker"))
    assert bench.main(["--root", str(_one_sequence(tmp_path / "d")), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tracker.build_tracker is not available" in err[0]


@pytest.mark.parametrize("backend, correlation", [("torch", "gemm"), ("torch-unfused", "conv2d")])
def test_cli_times_an_untrained_model_from_a_training_config(tmp_path, capsys, backend, correlation):
    """The real registry: a .toml config gives an untrained tracker of that architecture; its
    correlation is timed both ways, on its own features, and the way its backend uses is named."""
    config = ROOT / "configs" / "tracking" / "siamfc_plain.toml"
    pytest.importorskip("tracker.models")
    if not config.is_file():
        pytest.skip("configs/tracking/siamfc_plain.toml not present")
    root = str(_one_sequence(tmp_path / "data"))
    assert bench.main(["--root", root, "--device", "cpu", "--warmup", "0", "--frames", "2",
                       "--backbone-time", "0.01", "--json", "--backend", backend,
                       "--trackers", f"siamfc-plain={config}"]) == 0
    report = json.loads(capsys.readouterr().out)
    entry = report["trackers"]["siamfc-plain@siamfc_plain"]
    assert entry["tracker"]["n"] == 2 and entry["backbone"]["input"] == [1, 3, 255, 255]
    corr = entry["correlation"]
    assert corr["used"] == correlation and corr["template"][0] == 1 and corr["search"][0] == 3
    assert corr["template"][1] == corr["search"][1] and corr["conv2d_ms"] > 0 and corr["gemm_ms"] > 0
    assert corr["max_abs_difference"] < 1e-3


def test_conv2d_twins_run_the_same_tracker_correlating_by_conv2d(tmp_path, capsys, monkeypatch):
    """--conv2d-twins: beside each SiamFC tracker its twin runs, and only the original correlates
    by GEMM (counted); without --interleaved it is one error line."""
    config = ROOT / "configs" / "tracking" / "siamfc_plain.toml"
    pytest.importorskip("tracker.models")
    import tracker.heads as heads

    calls = []
    gemm = heads.xcorr_gemm
    monkeypatch.setattr(heads, "xcorr_gemm", lambda z, x: calls.append(z.shape[0]) or gemm(z, x))
    root = str(_one_sequence(tmp_path / "data"))
    frames = len(list((tmp_path / "data").rglob("*.jpg")))
    args = ["--root", root, "--device", "cpu", "--warmup", "0", "--json", "--backend", "torch",
            "--trackers", f"siamfc-plain={config}", "--conv2d-twins"]
    assert bench.main(args + ["--interleaved"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["trackers"]) == {"siamfc-plain@siamfc_plain", "siamfc-plain@siamfc_plain+conv2d"}
    assert report["trackers"]["siamfc-plain@siamfc_plain+conv2d"]["frames"] == frames
    assert calls == [1] * (frames - 1)          # the original's updates only
    assert bench.main(args) == 2
    assert "--conv2d-twins needs --interleaved" in capsys.readouterr().err


class _CountingTracker(Tracker):
    """Records the order in which the interleaved benchmark calls it."""

    log: list = []

    def __init__(self, label):
        super().__init__(label, is_deterministic=True)
        self.label = label

    def init(self, image, box):
        self.log.append((self.label, "init"))
        self.box = np.asarray(box, float)

    def update(self, image):
        self.log.append((self.label, "update"))
        return self.box


def test_interleaved_runs_trackers_side_by_side_and_reports_the_machine(tmp_path, monkeypatch, capsys):
    _stand_in(monkeypatch, lambda name, checkpoint=None, device=None, backend=None: _CountingTracker(name))
    _CountingTracker.log = []
    root = str(_one_sequence(tmp_path / "data"))
    frames = len(list((tmp_path / "data").rglob("*.jpg")))
    assert bench.main(["--root", root, "--device", "cpu", "--interleaved", "--warmup", "0", "--threads", "1",
                       "--trackers", "siamfc", "siamrpn", "--reference", "siamrpn", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "interleaved" and report["sequences"] == 1
    for key in ("cpu", "cores", "load_average", "load_average_after", "torch", "torch_threads", "opencv",
                "opencv_threads", "numpy", "python"):
        assert key in report["machine"]
    assert report["machine"]["torch_threads"] == 1
    for label in ("siamfc", "siamrpn"):
        entry = report["trackers"][label]
        assert entry["frames"] == frames and entry["update"]["n"] == frames - 1 and entry["total_s"] > 0
    assert set(report["ratios"]) == {"siamfc / siamrpn"}
    # frame by frame, the order rotating: a b, b a, a b, ...
    calls = [label for label, _ in _CountingTracker.log]
    assert calls[:4] == ["siamfc", "siamrpn", "siamrpn", "siamfc"] and len(calls) == 2 * frames
    assert bench.main(["--root", root, "--interleaved", "--trackers", "siamfc", "--reference", "zz"]) == 2
    assert "--reference" in capsys.readouterr().err
    assert bench.main(["--interleaved", "--video", str(tmp_path / "none.mp4"), "--trackers", "siamfc"]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_keep_freed_memory_is_applied_once_and_can_be_turned_off(monkeypatch):
    from common import threads as runtime

    monkeypatch.setattr(runtime, "_applied", None)
    monkeypatch.setenv("IEN_KEEP_FREED_MEMORY", "0")
    assert runtime.keep_freed_memory() is False
    monkeypatch.setattr(runtime, "_applied", None)
    monkeypatch.delenv("IEN_KEEP_FREED_MEMORY")
    first = runtime.keep_freed_memory()
    import platform
    if platform.libc_ver()[0] == "glibc":
        assert first is True
    assert runtime.keep_freed_memory() is first


class _BackendTracker(_CountingTracker):
    def __init__(self, label, backend):
        super().__init__(label)
        self.backend = backend


def test_interleaved_json_records_backends_and_ien_re_ratios(tmp_path, monkeypatch, capsys):
    built = []

    def build_tracker(name, checkpoint=None, device=None, backend=None):
        built.append(backend)
        return _BackendTracker(name, backend)
    _stand_in(monkeypatch, build_tracker)
    _CountingTracker.log = []
    root = str(_one_sequence(tmp_path / "data"))
    assert bench.main(["--root", root, "--device", "cpu", "--interleaved", "--warmup", "1", "--threads", "1",
                       "--backend", "torch", "--trackers", "siamfc", "re-siamfc", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert built == ["torch", "torch"] and report["backend"] == "torch"
    for label in ("siamfc", "re-siamfc"):
        entry = report["trackers"][label]
        assert entry["backend"] == "torch" and entry["name"] == label and entry["fps"] > 0
    ratio = report["ratios"]["siamfc / re-siamfc"]
    assert ratio == pytest.approx(report["trackers"]["siamfc"]["fps"] / report["trackers"]["re-siamfc"]["fps"])
    assert report["machine"]["torch_threads"] == 1 and report["machine"]["opencv_threads"] == 1
    assert "onnxruntime" in report["machine"]
    with pytest.raises(SystemExit):             # argparse rejects an unknown backend (exit status 2)
        bench.parse_args(["--backend", "tensorrt"])


def test_equal_parameter_width_and_its_row_kind():
    assert bench.tracker_kind(bench.EQUAL_PARAMS_LABEL) == ("siamfc", "steerable")

    class _Params(torch.nn.Module):          # parameters ~ (64 * width rounded to 8)^2, like regular fields
        def __init__(self, width):
            super().__init__()
            channels = 8 * max(1, round(64 * width / 8))
            self.weight = torch.nn.Parameter(torch.zeros(channels, channels))

    made = []

    def make(width):
        made.append(width)
        return _Params(width)
    width, model = bench.equal_parameter_width(48 * 48, make, start=0.25)
    assert sum(p.numel() for p in model.parameters()) == 48 * 48 and width == pytest.approx(0.75, abs=0.02)
    assert len(made) <= 4


def _cut_jpeg(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])          # a truncated file: no end-of-image marker


@pytest.mark.parametrize("interleaved", [False, True])
def test_truncated_or_corrupt_frames_are_one_error_line_naming_the_frame(tmp_path, monkeypatch, capsys,
                                                                        interleaved):
    _stand_in(monkeypatch, lambda name, checkpoint=None, device=None, backend=None: _TinyTracker(4))
    root = _one_sequence(tmp_path / "data")
    args = ["--root", str(root), "--device", "cpu", "--warmup", "0", "--frames", "2", "--backbone-time", "0.01",
            "--trackers", "siamfc"] + (["--interleaved"] if interleaved else [])
    assert bench.main(args + ["--json"]) == 0                           # intact frames decode
    capsys.readouterr()
    bad = root / "val" / "seq1" / "00000002.jpg"
    _cut_jpeg(bad)
    assert bench.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(bad) in err[0] and "truncated" in err[0]
    bad.write_bytes(b"not an image at all")
    assert bench.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(bad) in err[0]


def test_frames_reach_the_trackers_as_rgb_arrays(tmp_path, monkeypatch, capsys):
    seen = []

    class _Recording(_CountingTracker):
        def update(self, image):
            seen.append((type(image), getattr(image, "dtype", None), np.shape(image), tuple(image[0, 0])))
            return super().update(image)
    _stand_in(monkeypatch, lambda name, checkpoint=None, device=None, backend=None: _Recording(name))
    root = str(_one_sequence(tmp_path / "data"))
    assert bench.main(["--root", root, "--device", "cpu", "--interleaved", "--warmup", "0", "--threads", "1",
                       "--trackers", "siamfc", "--json"]) == 0
    capsys.readouterr()
    assert [s[:3] for s in seen] == [(np.ndarray, np.uint8, (30, 40, 3))] * 2
    red, green, blue = seen[0][3]
    assert abs(int(red) - 100) <= 3 and green <= 3 and blue <= 3      # RGB order (frame 2 is (100, 0, 0))
