#!/usr/bin/env bash
# GPU check for spikeguard, within 8 minutes on one CUDA device:
#   1. estimator gradients on CUDA equal those on the CPU (every family, float64); a tiny study
#      (benchmarks/gpu_study.yaml) through every step a findings study takes, 5 cells at once: every cell must
#      end done (a tensor left on the CPU fails its cell)
#   2. training step time and peak memory per defense, VGG-11 and WRN-16-4, T = 8: IEEE float32, TF32, bf16
#   3. channels_last, torch.compile of the spiking layers and of the model, bf16 against float32 in one run
#      (VGG-11, vanilla and SR); spiking-layer throughput eager against compiled; how far TF32 / bf16 move
#      each defense's loss and gradient
# Results: one JSON file per step in $OUT (default ./gpu_check_results), a summary line per step on stdout.
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere: the same steps on the CPU with tiny sizes
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu_check_results}
mkdir -p "$OUT"
if [ "${1:-}" = "--dry-run" ]; then  # the CPU is slow to compile: 5x the time limits
  DEV=cpu; BATCH=2; T=2; STEPS=1; WARM=0; NB=2; SMALL="--channels 8 --size 8"; SCALE=5
  BUDGET=${BUDGET_SECONDS:-1800}
else
  SCALE=1; BUDGET=${BUDGET_SECONDS:-470}
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device; use --dry-run to check the script on the CPU" >&2
    exit 2
  fi
  DEV=cuda; BATCH=64; T=8; STEPS=5; WARM=2; NB=32; SMALL=""
fi

failures=0
step() {  # step NAME TIMEOUT_SECONDS COMMAND...: run unless it cannot finish inside the budget
  local name=$1 limit=$(($2 * SCALE)); shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 20 ]; then echo "SKIP $name (budget spent)"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  if timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then
    echo "ok   $name ($((SECONDS - t0)) s): $(tail -n 1 "$OUT/$name.log" | cut -c1-300)"
  else
    echo "FAIL $name ($((SECONDS - t0)) s, exit $?):"; tail -n 5 "$OUT/$name.log"; failures=$((failures + 1))
  fi
}

$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
B="benchmarks"
COMMON=(--device "$DEV" --batch "$BATCH" --time-steps "$T" --steps "$STEPS" --warmup "$WARM")
step estimator_gradients 60 $PY $B/estimator_gradients.py --device "$DEV" --out "$OUT/estimator_gradients.json"
step study 150 bash $B/gpu_study.sh "$DEV" "$OUT/gpu_study" "$PY"
step step_fp32 60 $PY $B/train_step.py "${COMMON[@]}" --out "$OUT/step_fp32.json"
step step_tf32 60 $PY $B/train_step.py "${COMMON[@]}" --tf32 --neuron-share "" --out "$OUT/step_tf32.json"
step step_bf16 60 $PY $B/train_step.py "${COMMON[@]}" --bf16 --neuron-share "" --out "$OUT/step_bf16.json"
step speed_options 150 $PY $B/speed_options.py --device "$DEV" --batch "$BATCH" --time-steps "$T" --steps "$STEPS" --out "$OUT/speed_options.json"
step neuron_throughput 60 $PY $B/neuron_throughput.py --device "$DEV" --batch "$BATCH" --time-steps "$T" $SMALL --out "$OUT/neuron_throughput.json"
step precision 60 $PY $B/precision.py --device "$DEV" --batch "$NB" --time-steps "$T" --out "$OUT/precision.json"
echo "gpu_check: $failures failed step(s) in $SECONDS s; results in $OUT"
exit $((failures > 0))
