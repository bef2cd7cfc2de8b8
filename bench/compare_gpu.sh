#!/usr/bin/env bash
# bench/compare_gpu.sh BASELINE_DIR: clipcap against a previous version of itself, in one
# command on the GPU machine (the baseline a change is measured against, as transformers is in
# bench/run_gpu.sh). BASELINE_DIR is another source tree, e.g. main exported next to a branch:
#   git archive main | (mkdir -p baseline && tar -x -C baseline)   # then carry "baseline"
#   bash bench/compare_gpu.sh baseline
# Builds both with bench/run_gpu.sh's build (each tree its own build-bench), runs caption_bench
# on the same workloads in each (baseline first), and prints both result lines and the ratios.
# Environment as bench/run_gpu.sh (CLIPS, BATCH, TOKENS, WORKLOADS).
set -uo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: bench/compare_gpu.sh BASELINE_DIR}
[ -x "$base/bench/run_gpu.sh" ] || { echo "compare_gpu.sh: $base has no bench/run_gpu.sh"; exit 2; }
if [ -d third_party/debs ] && [ ! -e "$base/third_party/debs" ]; then
    mkdir -p "$base/third_party" && ln -s "$PWD/third_party/debs" "$base/third_party/debs"
fi
echo "== baseline: $base"
(cd "$base" && bash bench/run_gpu.sh clipcap) | grep -E '^(date|device|result|==)' || exit 1
cp "$base/build-bench/results.txt" /tmp/clipcap-compare-baseline.txt
echo "== this tree"
bash bench/run_gpu.sh clipcap | grep -E '^(date|device|result|==)' || exit 1
echo "== ratio (this tree / baseline, clips/s)"
for w in W1 W2; do
    old=$(grep "workload=$w " /tmp/clipcap-compare-baseline.txt | sed 's/.*clips_per_s=\([0-9.]*\).*/\1/' | head -1)
    new=$(grep "workload=$w " build-bench/results.txt | sed 's/.*clips_per_s=\([0-9.]*\).*/\1/' | head -1)
    [ -n "$old$new" ] || continue
    awk -v w="$w" -v a="${new:-0}" -v b="${old:-0}" 'BEGIN {
        printf "%s: %s clips/s vs %s: %s\n", w, a, b, (a > 0 && b > 0) ? sprintf("%.2fx", a / b) : "?" }'
done
