#!/usr/bin/env bash
# bench/run_gpu.sh: issue #5's benchmark on the GPU machine, clipcap and transformers in one
# command (from the repository root):
#   1. builds caption_bench with the CUDA backend (-DCLIPCAP_DAEMON=OFF -DCLIPCAP_CUDA=ON;
#      pkg-config, jansson, pcre2, utf8proc from third_party/debs when missing, as
#      tests/gpu/run_fixtures.sh does),
#   2. makes the model directory: bench/configs/qwen2.5-vl-7b-instruct + the Qwen tokenizer,
#   3. runs caption_bench (random weights) and bench/transformers_baseline.py on W1 and W2,
#      sampling nvidia-smi every 250 ms during each run (GPU busy share = mean utilization.gpu,
#      peak memory.used), and prints every result line and a summary with the ratio.
# Usage: bench/run_gpu.sh [clipcap|transformers|all]   (default all)
# Environment: BUILD (build-bench), CLIPS (64), BATCH (64, clipcap's max requests in flight),
# TF_BATCH_SIZES (8,16), TF_BATCHES (1), TOKENS (256), WORKLOADS ("W1 W2").
set -uo pipefail
cd "$(dirname "$0")/.."
phase=${1:-all}
build=${BUILD:-build-bench}
clips=${CLIPS:-64}
batch=${BATCH:-64}
tokens=${TOKENS:-256}
workloads=${WORKLOADS:-W1 W2}
export PATH=/usr/local/cuda/bin:$PATH

echo "== clipcap bench/run_gpu.sh $phase"
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- kernels engine bench 2>/dev/null || echo ' (with local changes)')"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/device: /'
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1

. tests/gpu/use-debs.sh
use_debs "$build" || exit 1

model="$build/qwen2.5-vl-7b-instruct"
if [ ! -f "$model/tokenizer.json" ]; then
    mkdir -p "$model"
    cp bench/configs/qwen2.5-vl-7b-instruct/*.json "$model/"
    (cd "$model" && cmake -E tar xf "$OLDPWD/tests/fixtures/qwen-tokenizer/qwen-tokenizer.tar.xz") || exit 1
    found=$(find "$model" -name tokenizer.json | head -1)
    [ "$found" = "$model/tokenizer.json" ] || cp "$(dirname "$found")"/tokenizer*.json "$model/"
fi

monitor_pid=
monitor_start() {
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 250 \
        >"$build/monitor.$1.csv" 2>/dev/null &
    monitor_pid=$!
}
monitor_stop() { # prints "gpu_busy_pct=.. gpu_mem_peak_gib=.."
    kill "$monitor_pid" 2>/dev/null
    wait "$monitor_pid" 2>/dev/null
    awk -F', *' 'NF==2 {n++; u+=$1; if ($2>m) m=$2} END {
        if (n) printf "gpu_busy_pct=%.0f gpu_mem_peak_gib=%.1f samples=%d\n", u/n, m/1024, n;
        else print "gpu_busy_pct=? gpu_mem_peak_gib=?" }' "$build/monitor.$1.csv"
}

status=0
results="$build/results.txt"
[ "$phase" = transformers ] || : >"$results"
if [ "$phase" = clipcap ] || [ "$phase" = all ]; then
    echo "== build"
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCLIPCAP_DAEMON=OFF -DCLIPCAP_CUDA=ON \
        -DCLIPCAP_TESTS=OFF -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" \
        >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
    cmake --build "$build" -j "$(nproc)" --target caption_bench 2>&1 | grep -Ev '^\[|^-- ' || true
    [ -x "$build/bench/caption_bench" ] || { echo "run_gpu.sh: build failed"; exit 1; }
    for w in $workloads; do
        flag=; [ "$w" = W2 ] && flag=--stage2
        echo "== clipcap $w: caption_bench --model $model --backend cuda --random-weights 1 --clips $clips --batch $batch --tokens $tokens $flag"
        monitor_start "clipcap-$w"
        line=$("$build/bench/caption_bench" --model "$model" --backend cuda --random-weights 1 \
            --clips "$clips" --batch "$batch" --tokens "$tokens" $flag | tee /dev/stderr | grep '^result')
        [ -n "$line" ] || status=1
        echo "$line $(monitor_stop "clipcap-$w")" | tee -a "$results"
    done
fi
if [ "$phase" = transformers ] || [ "$phase" = all ]; then
    for w in $workloads; do
        flag=; [ "$w" = W2 ] && flag=--stage2
        echo "== transformers $w: transformers_baseline.py --model $model --batch-sizes ${TF_BATCH_SIZES:-8,16} --batches ${TF_BATCHES:-1} --tokens $tokens $flag"
        monitor_start "transformers-$w"
        python3 bench/transformers_baseline.py --model "$model" --batch-sizes "${TF_BATCH_SIZES:-8,16}" \
            --batches "${TF_BATCHES:-1}" --tokens "$tokens" $flag >"$build/transformers-$w.out" 2>&1 || status=1
        usage=$(monitor_stop "transformers-$w")
        grep -v '^result' "$build/transformers-$w.out" | tail -5
        grep '^result' "$build/transformers-$w.out" | sed "s/\$/ $usage (whole script)/" | tee -a "$results"
    done
fi

echo "== summary (clips/s; transformers at its best batch size)"
for w in W1 W2; do
    ours=$(grep "engine=clipcap .*workload=$w " "$results" | sed 's/.*clips_per_s=\([0-9.]*\).*/\1/' | head -1)
    theirs=$(grep "engine=transformers .*workload=$w " "$results" | sed 's/.*clips_per_s=\([0-9.]*\).*/\1/' | sort -g | tail -1)
    [ -n "$ours$theirs" ] || continue
    ratio=$(awk -v a="${ours:-0}" -v b="${theirs:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "?" }')
    echo "$w: clipcap ${ours:-?} clips/s, transformers ${theirs:-?} clips/s, ratio $ratio"
done
exit $status
