"""tools/export.py: ONNX and TorchScript files of a tracker's networks, checked against torch."""
import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch

from tracker import build_tracker
from tracker.backends import onnx_session, onnxruntime_available

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("_tool_export", ROOT / "tools" / "export.py")
export = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export)

pytestmark = pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime / onnx not installed")


def test_exported_networks_match_torch(tmp_path, capsys):
    out = tmp_path / "exported"
    assert export.main(["--tracker", "siamfc", "--out", str(out), "--batch", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    files = {(f["network"], f["format"]): f for f in report["files"]}
    assert set(files) == {(n, f) for n in ("features", "siamese") for f in ("onnx", "torchscript")}
    for entry in files.values():
        assert Path(entry["path"]).is_file() and entry["matches"]
        assert entry["max_abs_diff"] <= 1e-4 * entry["max_abs_output"]
    assert files[("siamese", "onnx")]["inputs"] == {"template": [1, 3, 127, 127], "search": [2, 3, 255, 255]}
    assert files[("siamese", "onnx")]["outputs"] == [[2, 1, 17, 17]]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]          # no temporaries left

    # the ONNX features network has dynamic batch and size: run it on other shapes than traced
    model = build_tracker("siamfc", device="cpu", backend="torch-unfused").model
    images = torch.rand(3, 3, 127, 127) * 255
    with torch.inference_mode():
        want = model.extract(images).out
    session = onnx_session(Path(files[("features", "onnx")]["path"]).read_bytes(), threads=1)
    got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    assert got.shape == want.shape == (3, model.backbone.out_channels, 5, 5)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    scripted = torch.jit.load(io.BytesIO(Path(files[("features", "torchscript")]["path"]).read_bytes()))
    with torch.inference_mode():
        assert (scripted(images) - want).abs().max() <= 1e-4 * want.abs().max()


def test_the_default_nanotrack_network_exports_and_matches_torch(tmp_path, capsys):
    """NanoTrack reads raw pixels (no standardisation to fold) and searches one crop a frame."""
    assert export.main(["--tracker", "nanotrack-ien", "--out", str(tmp_path), "--formats", "onnx"]) == 0
    files = {f["network"]: f for f in json.loads(capsys.readouterr().out)["files"]}
    assert all(f["matches"] and f["max_abs_diff"] <= 1e-4 * f["max_abs_output"] for f in files.values())
    assert files["siamese"]["outputs"] == [[3, 2, 15, 15], [3, 4, 15, 15]]    # --batch 3, fixed at export


@pytest.mark.parametrize("args, message", [
    (["--tracker", "nope"], "unknown tracker 'nope'"),
    (["--tracker", "cv2-mil"], "no network of this toolkit to export"),
    (["--checkpoint", "missing.pth"], "checkpoint not found"),
    (["--batch", "0"], "--batch must be >= 1"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, args, message):
    assert export.main(args + ["--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_an_output_path_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert export.main(["--out", str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().err
