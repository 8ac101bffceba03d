"""`pip install .` gives console commands that work outside the checkout: the wheel is built and
installed (without dependencies: the test's interpreter has them) into a folder, and every
command's --help runs from another folder with that folder first on the path."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["ien-track", "ien-train", "ien-evaluate", "ien-tune", "ien-benchmark", "ien-equivariance",
            "ien-make-rotating", "ien-generate", "ien-export"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    wheel = next((tmp / "dist").glob("ien_tracking-*.whl"))
    target = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    return wheel, target


def test_the_wheel_holds_the_tools_and_the_bundled_weights(installed, tmp_path):
    wheel, target = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("ien_tools/track.py", "ien_tools/evaluate.py", "tracker/weights/siamfc_ien.pth",
                 "tracker/weights/generated/siamfc_ien.pth", "tracker/baselines/opencv.py",
                 "tracker/weights/nanotrack_ien.pth", "tracker/weights/LICENSE-NanoTrack-Apache-2.0.txt"):
        assert name in names, name
    # outside the checkout the installed copy is what runs
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = subprocess.run([sys.executable, "-c", "import ien_tools, tracker; print(ien_tools.__file__, tracker.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert all(path.startswith(str(target)) for path in probe.stdout.split()), probe.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_console_command_runs_outside_the_checkout(installed, command, tmp_path):
    _, target = installed
    script = target / "bin" / command
    assert script.is_file()
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
