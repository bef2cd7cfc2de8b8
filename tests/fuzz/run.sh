#!/usr/bin/env bash
# Builds clipcap's fuzz targets with clang -fsanitize=fuzzer,address,undefined and runs each
# for a bounded time, seeded with the committed corpus (tests/fuzz/corpus/<target>). New
# inputs go to the build folder, not the repository, unless --merge is given. Fails if a
# target crashes, leaks, trips a sanitizer or times out (artifacts are kept in the build
# folder and named in the output), or if clang with libFuzzer is missing.
#
# Usage: tests/fuzz/run.sh [--seconds N] [--build-dir DIR] [--jobs N] [--tokenizer PATH]
#                          [--merge] [--no-build] [TARGET...]
#   --seconds N      run time per target (default 20)
#   --build-dir DIR  the clang build (default build-fuzz at the repository root)
#   --jobs N         parallel compile jobs (default 2)
#   --tokenizer PATH the real Qwen tokenizer.json for tokenizer_encode
#                    (default: ../shared/data/qwen-tokenizer/tokenizer.json beside the repo)
#   --merge          afterwards merge inputs that add coverage into the committed corpus
#   TARGET           job_message safetensors model_config tokenizer_encode tokenizer_load
#                    daemon_config (default: all)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=20 build_dir="$root/build-fuzz" jobs=2 merge=0 build=1
tokenizer="$root/../shared/data/qwen-tokenizer/tokenizer.json"
all_targets=(job_message safetensors model_config tokenizer_encode tokenizer_load daemon_config)
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --tokenizer) tokenizer=$2; shift 2 ;;
    --merge) merge=1; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

# clang with the libFuzzer runtime (Debian: clang-14 + libclang-rt-14-dev).
cc=${CLIPCAP_FUZZ_CC:-}
if [ -z "$cc" ]; then
    for candidate in clang clang-14; do
        if command -v "$candidate" >/dev/null; then cc=$candidate; break; fi
    done
fi
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
    >"$probe_dir/probe.c"
if [ -z "$cc" ] || ! "$cc" -fsanitize=fuzzer,address,undefined "$probe_dir/probe.c" \
    -o "$probe_dir/probe" 2>"$probe_dir/probe.log"; then
    echo "run.sh: needs clang with libFuzzer (apt-get install clang libclang-rt-14-dev;" \
        "both are in scripts/apt-packages.txt)" >&2
    [ -s "$probe_dir/probe.log" ] && cat "$probe_dir/probe.log" >&2
    exit 1
fi

# -fsanitize=fuzzer-no-link: coverage instrumentation for the libraries under test. -mavx on
# x86-64: clang refuses engine/backend_cpu.c's 8-float vector arguments without it (gcc only
# warns, and the regular build silences that with -Wno-psabi).
c_flags="-fsanitize=fuzzer-no-link"
[ "$(uname -m)" = x86_64 ] && c_flags="$c_flags -mavx"
if [ "$build" = 1 ]; then
    echo "== configure and build the fuzzers with $cc in $build_dir"
    mkdir -p "$build_dir"
    cmake -S "$root" -B "$build_dir" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCLIPCAP_SANITIZE=ON -DCLIPCAP_FUZZ_LIBFUZZER=ON -DCLIPCAP_TESTS=ON \
        -DCMAKE_C_FLAGS="$c_flags" >"$build_dir/configure.log" 2>&1 || {
        cat "$build_dir/configure.log" >&2
        exit 1
    }
    cmake --build "$build_dir" -j "$jobs" --target "${targets[@]/#/fuzz_}"
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export CLIPCAP_FUZZ_QWEN_TOKENIZER=$tokenizer
work="$build_dir/fuzz-work"
mkdir -p "$work/logs" "$work/artifacts"
failed=()
printf '%-17s %10s %8s %8s %8s %7s  %s\n' target executions exec/s cov ft corpus result
for target in "${targets[@]}"; do
    binary="$build_dir/tests/fuzz/fuzz_$target"
    corpus="$work/corpus/$target"
    mkdir -p "$corpus"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$work/artifacts/$target-")
    [ -f "$here/dict/$target.dict" ] && args+=(-dict="$here/dict/$target.dict")
    log="$work/logs/$target.log"
    result=ok
    "$binary" "${args[@]}" "$corpus" "$here/corpus/$target" >"$log" 2>&1 || result=FAILED
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    # The last status line: "#N  DONE  cov: C ft: F corp: K/S ..."
    status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$status")
    printf '%-17s %10s %8s %8s %8s %7s  %s\n' "$target" "${executions:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
    if [ "$result" != ok ]; then
        failed+=("$target")
        echo "--- $target failed; the end of $log:" >&2
        tail -n 60 "$log" >&2
        ls "$work/artifacts/$target-"* 2>/dev/null | sed 's/^/artifact: /' >&2 || true
    elif [ "$merge" = 1 ]; then
        "$binary" -merge=1 "$here/corpus/$target" "$corpus" >"$work/logs/$target.merge.log" 2>&1
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "run.sh: failed: ${failed[*]} (logs in $work/logs)" >&2
    exit 1
fi
echo "run.sh: all targets ran ${seconds}s without a failure"
