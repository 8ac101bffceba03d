#!/usr/bin/env bash
# Train the five bundled trackers with the same data and budget, side by side, and export them.
#   bash tools/train_bundled.sh [OUT_DIR]            (default OUT_DIR: runs/bundled)
# Env: PYTHON (default .venv/bin/python, else python3), WORKERS per run (default 3),
#      TRAIN_SEQUENCES (default 200), EPOCHS x PAIRS per epoch (default 3 x 18432, the budget
#      of the bundled RE-SiamNet and SiamRPN weights: 1728 steps of 32 pairs each), TIME_LIMIT
#      seconds per run.
# The bundled weights in tracker/weights/ were made with this script (see docs/training.md): RE-SiamNet and the
# plain SiamRPN on one H200 with the defaults, the IEN SiamRPN on the CPU with the defaults, and the
# SiamFC pair on the CPU with the configs' own budget:
#   EPOCHS=10 PAIRS=20480 WORKERS=1 RUNS="siamfc_r8_ien:siamfc_ien siamfc_plain:siamfc_plain" \
#       bash tools/train_bundled.sh runs/long
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/bundled}"
py="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
workers="${WORKERS:-3}"
nseq="${TRAIN_SEQUENCES:-200}"
limit="${TIME_LIMIT:-0}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
data="$out/data"
# 200 generated rotating sequences; seed 20240001 is the default training set's (its first 40
# sequences are the embedded default), disjoint from the test set's seed 20240002.
[ -f "$data/train/list.txt" ] || "$py" tools/generate_sequences.py --out "$data" --num "$nseq" \
    --frames 100 --seed 20240001 --subset train --workers 16 --overwrite
# CONFIG:NAME[:BETA]; RUNS overrides the list (e.g. to add a beta ablation)
runs="${RUNS:-siamfc_r8_ien:siamfc_ien siamfc_plain:siamfc_plain siamrpn_r8_ien:siamrpn_ien siamrpn_plain:siamrpn_plain re_siamfc_r8:re_siamfc}"
for run in $runs; do
  IFS=: read -r cfg name beta <<< "$run"
  extra=()
  [ -n "${beta:-}" ] && extra+=(--beta "$beta")
  extra+=(--epochs "${EPOCHS:-3}" --pairs-per-epoch "${PAIRS:-18432}")
  cmd=("$py" tools/train_tracker.py --config "configs/tracking/$cfg.toml" --data "$data/train"
       --out "$out/$name" --workers "$workers" --no-progress "${extra[@]}")
  if [ "$limit" -gt 0 ]; then cmd=(timeout "$limit" "${cmd[@]}"); fi
  "${cmd[@]}" > "$out/$name.log" 2>&1 &
done
wait || true
for run in $runs; do
  IFS=: read -r cfg name beta <<< "$run"
  "$py" tools/train_tracker.py --checkpoint "$out/$name/checkpoint.pth" --export "$out/$name.pth"
  tail -n 1 "$out/$name.log"
done
