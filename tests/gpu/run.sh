#!/usr/bin/env bash
# tests/gpu/run.sh: the one script the GPU machine runs (from the repository root):
#   1. builds the engine and the CUDA backend (-DCLIPCAP_DAEMON=OFF -DCLIPCAP_CUDA=ON; the op
#      test through -DCLIPCAP_GPU_OP_TEST=ON, since tests/ needs cmocka, which that machine may
#      lack),
#   2. runs gpu_op_test (every CUDA op against the CPU op),
#   3. runs gpu_op_test --quick --no-pool (exact-size allocations) under compute-sanitizer
#      memcheck.
# Prints the device, the date and everything the steps print; exits non-zero if any step fails.
# When pkg-config, jansson, pcre2 or utf8proc is missing (the GPU image has neither apt nor network), the Debian
# packages in third_party/debs/ (carried there, git-ignored) are unpacked into the build folder.
# Usage: tests/gpu/run.sh [build-dir]   (default build-gpu)
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-gpu}
jobs=$(nproc)
export PATH=/usr/local/cuda/bin:$PATH

echo "== clipcap tests/gpu/run.sh"
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
cmake --build "$build" -j "$jobs" --target gpu_op_test 2>&1 | grep -Ev '^\[|^-- ' || true
[ -x "$build/tests/gpu/gpu_op_test" ] || { echo "run.sh: build failed"; exit 1; }

status=0
echo "== gpu_op_test"
"$build/tests/gpu/gpu_op_test" || status=1

echo "== compute-sanitizer memcheck: gpu_op_test --quick --no-pool"
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
"$sanitizer" --tool memcheck --error-exitcode 3 "$build/tests/gpu/gpu_op_test" --quick --no-pool \
    >"$build.memcheck.log" 2>&1
memcheck=$?
grep -E '^(FAIL|gpu_op_test:)|ERROR SUMMARY|^=========' "$build.memcheck.log" | head -60
[ "$memcheck" = 0 ] || { echo "run.sh: memcheck exit status $memcheck"; status=1; }

echo "== run.sh: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
