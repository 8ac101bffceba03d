import json
import subprocess
import sys

import pytest

from tools import equivariance as tool


def _run(capsys, *args):
    rc = tool.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_e2cnn_is_exact_for_90_degrees_and_plain_cnn_is_not(capsys):
    rc, out, _ = _run(capsys, "--backbone", "e2-cnnbasic", "--group", "R4", "--width-mult", "0.125", "--json")
    assert rc == 0
    e2 = json.loads(out)
    assert e2["elements"] == ["rot90", "rot180", "rot270"]
    assert max(e2["errors"][ly][el] for ly in e2["layers"] for el in e2["elements"]) < 1e-4
    rc, out, _ = _run(capsys, "--backbone", "cnnbasic", "--group", "R4", "--width-mult", "0.125", "--json")
    plain = json.loads(out)
    assert min(plain["errors"][ly]["rot90"] for ly in plain["layers"]) > 1e-2


def test_plot_and_custom_angles(capsys, tmp_path):
    png = tmp_path / "eq.png"
    rc, out, _ = _run(capsys, "--backbone", "e2-resnet22", "--group", "R8", "--width-mult", "0.0625",
                      "--angles", "45,90", "--plot", str(png))
    assert rc == 0 and png.stat().st_size > 1000
    assert "rot45" in out and "rot90" in out


def test_tracker_and_steerable_checkpoints(capsys, tmp_path):
    """Tracker checkpoints nest the backbone config under "model"; e2cnn ones saved in eval mode
    carry cached filters: both load, and the e2cnn backbone stays exact for 90°."""
    from common.checkpoints import save_atomic
    from tracker.models import build_model

    for name in ("resnet22", "e2-resnet22"):
        cfg = {"type": "siamfc", "backbone": {"name": name, "group": "R4", "width_mult": 0.0625}}
        model = build_model(cfg).eval()
        path = tmp_path / f"{name}.pth"
        save_atomic({"config": {"model": cfg}, "model": model.state_dict()}, path)
        rc, out, err = _run(capsys, "--checkpoint", str(path), "--json")
        assert rc == 0, err
        result = json.loads(out)
        assert result["backbone"] == name and result["group"] == "R4"
        worst = max(result["errors"][ly]["rot90"] for ly in result["layers"])
        assert (worst < 1e-4) if name.startswith("e2") else (worst > 1e-2)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--group", "R5"], "malformed group spec"),
        (["--backbone", "alexnet"], "unknown backbone"),
        (["--checkpoint", "missing.pth"], "checkpoint not found"),
        (["--image", "missing.png"], "cannot read image"),
        (["--angles", "a,b"], "--angles"),
    ],
)
def test_bad_input_gives_one_clear_error(capsys, args, message):
    rc, out, err = _run(capsys, *args)
    assert rc == 2
    assert message in err and "Traceback" not in err


def test_cli_exit_code_without_traceback():
    proc = subprocess.run(
        [sys.executable, "tools/equivariance.py", "--group", "R8-4-2-1:1"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


def test_torchvision_imports():
    proc = subprocess.run([sys.executable, "-c", "import torchvision, torchvision.models"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-500:]


def test_plot_overlays_several_checkpoints_one_line_each(capsys, tmp_path, monkeypatch):
    """IEN-style, plain and e2cnn backbones in one figure: one line per network, a legend, a PNG."""
    import torch

    import backbones.diagnostics as diagnostics
    from common.checkpoints import save_atomic
    from tracker.models import build_model

    paths = []
    for seed, (stem, name) in enumerate((("ien", "resnet22"), ("plain", "resnet22"), ("e2cnn", "e2-resnet22"))):
        cfg = {"type": "siamfc", "backbone": {"name": name, "group": "R4", "width_mult": 0.0625}}
        torch.manual_seed(seed)
        path = tmp_path / f"{stem}.pth"
        save_atomic({"config": {"model": cfg}, "model": build_model(cfg).state_dict()}, path)
        paths.append(path)
    figures = []
    original = diagnostics.save_comparison_plot
    monkeypatch.setattr(diagnostics, "save_comparison_plot", lambda *a, **k: figures.append(original(*a, **k)))
    png = tmp_path / "plots" / "overlay.png"
    args = [a for p in paths for a in ("--checkpoint", str(p))]
    rc, out, err = _run(capsys, *args, "--label", "IEN", "--label", "plain", "--label", "e2cnn",
                        "--angles", "90", "--plot", str(png), "--json")
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["overlay.png"]          # no temporary left
    networks = json.loads(out)["networks"]
    assert [n["model"] for n in networks] == ["IEN", "plain", "e2cnn"]
    assert [n["backbone"] for n in networks] == ["resnet22", "resnet22", "e2-resnet22"]
    (fig,) = figures
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["IEN", "plain", "e2cnn"]
    assert [t.get_text() for t in ax.get_xticklabels()] == networks[0]["layers"]
    for line, network in zip(lines, networks):        # y: the error per layer (one element: rot90)
        expected = [network["errors"][ly]["rot90"] for ly in network["layers"]]
        assert list(line.get_ydata()) == pytest.approx(expected)
    e2_line = lines[2].get_ydata()
    assert max(e2_line) < 1e-4 < min(lines[0].get_ydata())                   # e2cnn exact at 90°


def test_checkpoint_may_be_a_tracker_name_and_labels_must_match(capsys, tmp_path):
    from tracker import default_checkpoint

    assert tool._checkpoint_path("re-siamfc") == default_checkpoint("re-siamfc")
    assert tool._checkpoint_path("SiamFC-Plain") == default_checkpoint("siamfc-plain")
    assert tool._default_labels(["siamfc-ien", "siamfc-plain"]) == ["siamfc-ien", "siamfc-plain"]
    rc, _, err = _run(capsys, "--checkpoint", "a.pth", "--checkpoint", "b.pth", "--label", "only-one")
    assert rc == 2 and err.startswith("error: give one --label per --checkpoint")
    rc, _, err = _run(capsys, "--checkpoint", "no-such-tracker")
    assert rc == 2 and "checkpoint not found" in err


@pytest.mark.parametrize("args, message", [
    (["--group", "none"], "has no rotations to test; give --angles"),
    (["--size", "48"], "--size 48 is too small"),
])
def test_plain_group_and_tiny_crops_are_one_line_errors(capsys, args, message):
    rc, out, err = _run(capsys, "--backbone", "resnet22", "--width-mult", "0.0625", *args)
    assert rc == 2 and err.startswith("error: ") and message in err and "Traceback" not in err
