#!/usr/bin/env bash
# gpu_check.sh's study step: DEVICE DIR [PYTHON]. Runs benchmarks/gpu_study.yaml on DEVICE into DIR (fresh);
# exit 0 only when every cell ended done, else 1 with the study's first traceback.
set -u
dev=$1 dir=$2 py=${3:-python}
cd "$(dirname "$0")/.."
rm -rf "$dir"
$py -m spikeguard study benchmarks/gpu_study.yaml --out "$dir" --parallel 5 --device "$dev" --no-progress || exit 1
if grep -q -E '"status": "(failed|pending|running|killed)"' "$dir/study.json"; then
  grep -m1 -A 30 Traceback "$dir/study.log"
  echo "the tiny study did not end with every cell done on $dev (see $dir/study.json)"
  exit 1
fi
echo "every cell of the tiny study done on $dev"
