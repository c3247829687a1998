#!/usr/bin/env bash
# The paper preset at 224 px on a GPU, one command per dataset:
#   scripts/gpu_paper_run.sh rafdb            # configs/paper-rafdb.yaml on .carry/rafdb
#   scripts/gpu_paper_run.sh fer2013          # configs/paper-fer2013.yaml on .carry/fer2013
#   scripts/gpu_paper_run.sh rafdb fer2013    # both, one after the other
# Before (on the machine that has the datasets; the packs are research-only data, .carry/ is git-ignored):
#   python scripts/pack_training_images.py --data rafdb --out .carry/rafdb      # 37.2 MiB, original JPEGs
#   python scripts/pack_training_images.py --data fer2013 --out .carry/fer2013  # 53.9 MiB, 48x48 JPEG q95
# A device run carries at most 64 MiB, so each pack travels in its own run (carry: [".carry/rafdb"]).
#
# Assumptions: run from anywhere inside this checkout; PYTHON (default python3) has torch (CUDA build, as installed
# on the machine), numpy, safetensors, pillow, opencv, typer, rich, pyyaml, scikit-learn, scipy and matplotlib.
# The package is run from the source tree (PYTHONPATH, no install). If one of these is missing the script tries
# `pip install -c constraints.txt -e ".[train]"` (that needs a package index; torch itself is never reinstalled
# when present). Nothing reads ../shared: the packed folder is the whole dataset.
# Environment: PYTHON, CARRY (default .carry), RUNS (default runs), OUT (reports go to $OUT/<config name>, default
# reports/paper-<data>), CONFIG_SUFFIX (e.g. -cpu-proof for configs/paper-rafdb-cpu-proof.yaml), CONFIG (another
# config for the same packed data, e.g. experiments/fer2013-fast-k5-patient.yaml; the run and its reports take the
# config's name), EXTRA (more `--set key=value` for train, e.g. EXTRA="--set precision=bf16").
# Writes per dataset: $RUNS/<config name>/ (checkpoints, log, curves, test/), and under the report folder train/
# (config, log, history, curves, best.json) and the `expressnet evaluate --report-dir` reports of the test split.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CARRY=${CARRY:-.carry}
RUNS=${RUNS:-runs}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ $# -gt 0 ] || set -- rafdb

if ! "$PY" -c "import torch, numpy, safetensors, PIL, cv2, typer, rich, yaml, sklearn, scipy, matplotlib" 2>/dev/null; then
  echo "installing the missing dependencies (pip install -c constraints.txt -e .[train])"
  if "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q -c <(grep -v '^torch==' constraints.txt) -e ".[train]"
  else
    "$PY" -m pip install -q -c constraints.txt -e ".[train]"
  fi
fi
"$PY" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
PY

for data in "$@"; do
  case "$data" in
    rafdb) splits=(test) ;;
    fer2013) splits=(PrivateTest PublicTest+PrivateTest) ;;  # ours, and the paper's all 7,178
    *) echo "unknown dataset $data (rafdb or fer2013)" >&2; exit 2 ;;
  esac
  pack="$CARRY/$data"
  [ -d "$pack" ] || { echo "$pack: no packed images (run scripts/pack_training_images.py --data $data --out $pack)" >&2; exit 2; }
  config="${CONFIG:-configs/paper-$data${CONFIG_SUFFIX:-}.yaml}"
  name="$(basename "$config" .yaml)"
  run="$RUNS/$name"
  reports="${OUT:-reports}/$name"
  mkdir -p "$reports/train"
  # shellcheck disable=SC2086
  "$PY" -m expressnet train --config "$config" --set "data=$pack" --set "out=$run" ${EXTRA:-} 2>&1 | tee "$reports/train/stdout.txt"
  for f in config.yaml log.csv history.json curves.png best.json; do
    [ -f "$run/$f" ] && cp "$run/$f" "$reports/train/"
  done
  limit=$("$PY" -c "import yaml; print(yaml.safe_load(open('$run/config.yaml')).get('test_limit') or '')")
  for split in "${splits[@]}"; do
    if [ -n "$limit" ]; then  # a proof run: the end-of-run test report (test_limit images) is the report
      cp -r "$run/test" "$reports/test-limit-$limit"; break
    fi
    "$PY" -m expressnet evaluate --model "$run" --data "$pack" --split "$split" --no-ablation \
      --report-dir "$reports/$split" 2>&1 | tee "$reports/$split.txt"
  done
done
