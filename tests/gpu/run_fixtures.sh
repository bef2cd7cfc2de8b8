#!/usr/bin/env bash
# tests/gpu/run_fixtures.sh: holds the engine on the CUDA backend to the transformers fixtures, on
# the GPU machine (from the repository root):
#   1. builds the engine with the CUDA backend (-DCLIPCAP_DAEMON=OFF -DCLIPCAP_CUDA=ON, tests/gpu
#      through -DCLIPCAP_GPU_OP_TEST=ON as tests/gpu/run.sh does: that machine may lack cmocka),
#   2. runs test_fixtures_cuda: every tests/fixtures/qwen2_5_vl case through engine.h on the CUDA
#      and the CPU backend (prefill logits max |diff| <= 2e-2, 32 greedy tokens),
#   3. runs test_fixtures_cuda --quick --no-cpu on one case under compute-sanitizer memcheck, with
#      the engine's device pool off (CLIPCAP_ENGINE_CUDA_POOL=0: exact-size allocations).
# Prints the device, the date and what the steps print; exits non-zero if any step fails.
# pkg-config, jansson, pcre2 and utf8proc come from third_party/debs/ when missing (as run.sh).
# Usage: tests/gpu/run_fixtures.sh [build-dir] [memcheck case]   (default build-gpu-fixtures tiny_b)
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-gpu-fixtures}
memcheck_case=${2:-tiny_b}
jobs=$(nproc)
export PATH=/usr/local/cuda/bin:$PATH

echo "== clipcap tests/gpu/run_fixtures.sh"
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- kernels tests/gpu engine 2>/dev/null || echo ' (with local changes)')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/device: /'
nvcc --version | tail -2

. tests/gpu/use-debs.sh
use_debs "$build" || exit 1

echo "== build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLIPCAP_DAEMON=OFF -DCLIPCAP_CUDA=ON \
    -DCLIPCAP_TESTS=OFF -DCLIPCAP_GPU_OP_TEST=ON -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" \
    >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$jobs" --target test_fixtures_cuda 2>&1 | grep -Ev '^\[|^-- ' || true
program="$build/tests/gpu/test_fixtures_cuda"
[ -x "$program" ] || { echo "run_fixtures.sh: build failed"; exit 1; }

# The real Qwen tokenizer: the committed archive, unpacked once (tests/CMakeLists.txt does the
# same for ordinary test builds, which this one is not).
tokenizer="$build/qwen-tokenizer"
if [ ! -f "$tokenizer/tokenizer.json" ]; then
    mkdir -p "$tokenizer"
    (cd "$tokenizer" && cmake -E tar xf "$OLDPWD/tests/fixtures/qwen-tokenizer/qwen-tokenizer.tar.xz") ||
        { echo "run_fixtures.sh: cannot unpack the Qwen tokenizer"; exit 1; }
    [ -f "$tokenizer/tokenizer.json" ] || tokenizer=$(dirname "$(find "$tokenizer" -name tokenizer.json | head -1)")
fi

status=0
echo "== test_fixtures_cuda"
"$program" tests/fixtures/qwen2_5_vl "$tokenizer" || status=1

echo "== compute-sanitizer memcheck: test_fixtures_cuda --case $memcheck_case --quick --no-cpu (pool off)"
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
CLIPCAP_ENGINE_CUDA_POOL=0 "$sanitizer" --tool memcheck --error-exitcode 3 "$program" \
    tests/fixtures/qwen2_5_vl "$tokenizer" --case "$memcheck_case" --quick --no-cpu \
    >"$build.memcheck.log" 2>&1
memcheck=$?
grep -E '^(ok|FAIL|test_fixtures_cuda:)|ERROR SUMMARY|^=========' "$build.memcheck.log" | head -60
case $memcheck in
0) ;;
3) echo "run_fixtures.sh: compute-sanitizer memcheck found errors"; status=1 ;;
*) echo "run_fixtures.sh: under memcheck the program exited $memcheck (its own checks, above;" \
        "memcheck's verdict is the ERROR SUMMARY line)"; status=1 ;;
esac

echo "== run_fixtures.sh: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
