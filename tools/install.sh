#!/usr/bin/env bash
# Create (or reuse) the local virtual environment .venv and install the toolkit into it.
#   bash tools/install.sh           # CPU machine: local CPU torch wheel, never the CUDA build
#   IEN_SYSTEM_TORCH=1 bash tools/install.sh
#                                   # GPU machine: reuse the torch/torchvision already installed
#                                   # in the interpreter that runs this script
# Quiet and idempotent: a second run with unchanged requirements returns at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${IEN_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
cd "$root"
stamp_src="$(cat requirements.txt constraints-cpu.txt setup.py tools/_site/ien_torchvision_fix.py; echo "${IEN_SYSTEM_TORCH:-0}")"
stamp="$(printf '%s' "$stamp_src" | sha256sum | cut -c1-16)"
if [[ -f "$venv/.ien-installed" && "$(cat "$venv/.ien-installed")" == "$stamp" ]]; then
  exit 0
fi
echo "installing into $venv (a minute or so) ..." >&2
if [[ "${IEN_SYSTEM_TORCH:-0}" == "1" ]]; then
  "$python" -m venv --system-site-packages "$venv"
  constraints=()
else
  "$python" -m venv "$venv"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    constraints=()          # a GPU machine: let pip choose the CUDA torch
  else
    constraints=(-c constraints-cpu.txt)
  fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
# opencv-contrib-python and opencv-python share the cv2 folder: drop the plain build an earlier
# install put here (it would shadow or half-remove contrib's), then install contrib alone
"$venv/bin/python" -m pip uninstall -y -q opencv-python opencv-python-headless >/dev/null 2>&1 || true
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  "${constraints[@]}" -r requirements.txt -e ".[logs]" 2> >(grep -v "is ignored: it is neither" >&2)
# torchvision's CUDA build next to the CPU torch: a tiny import hook makes it importable.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp tools/_site/ien_torchvision_fix.py "$site/"
echo "import ien_torchvision_fix; ien_torchvision_fix.install()" > "$site/ien_torchvision_fix.pth"
"$venv/bin/python" -c "import torchvision" || { echo "torchvision does not import" >&2; exit 1; }
echo "$stamp" > "$venv/.ien-installed"
