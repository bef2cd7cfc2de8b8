#!/usr/bin/env bash
# Soak: N jobs (default 2000) through the daemon's embedded broker, enqueued by 4 producer
# processes at once while clipcapd works; samples the daemon's RSS every second and reports
# throughput, p50/p99 job latency (enqueue to outcome commit, from the jobs table) and memory
# over time. Not part of CI (it is a measurement); results go to docs/reliability.md.
# Usage: tests/lib/with-postgres -- tests/reliability/soak.sh CLIPCAPD CLIPCAP [JOBS] [MODEL_DIR]
# CLIPCAPD is clipcapd_engine_double (pipeline only) or clipcapd with MODEL_DIR (real engine).
set -euo pipefail
clipcapd=$1 clipcap=$2 jobs=${3:-2000} model_dir=${4:-}
work=$(mktemp -d /tmp/clipcap-soak.XXXXXX)
daemon=""
cleanup() {
    [ -n "$daemon" ] && kill -9 "$daemon" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
sql() { psql -X -q -tA -v ON_ERROR_STOP=1 -c "$1"; }
ffmpeg -loglevel error -f lavfi -i testsrc2=size=320x240:rate=30 -t 10 -pix_fmt yuv420p \
    -c:v libx264 "$work/clip.mp4"
flags=(--set kafka.brokers=embedded --set kafka.embedded_partitions=8
    --set "daemon.state_dir=$work/state" --set "postgres.url=$CLIPCAP_PG_URL"
    --set pipeline.max_jobs_in_flight=32)
[ -n "$model_dir" ] && flags+=(--set "engine.model_dir=$model_dir")
"$clipcapd" "${flags[@]}" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 1 120); do [ -s "$work/state/embedded-broker" ] && break; sleep 0.5; done
per=$((jobs / 4))
start=$(date +%s.%N)
producers=()
for p in 1 2 3 4; do
    for i in $(seq 1 "$per"); do
        printf '{"v":1,"job_id":"soak-%d-%05d","clip_uri":"file://%s/clip.mp4","stage2":%s}\n' \
            "$p" "$i" "$work" "$([ $((i % 2)) -eq 0 ] && echo true || echo false)"
    done >"$work/jobs-$p.jsonl"
    "$clipcap" enqueue --broker-state-file "$work/state/embedded-broker" \
        --file "$work/jobs-$p.jsonl" >"$work/enqueue-$p.out" &
    producers+=($!)
done
echo "second rss_kb" >"$work/rss"
t=0
while [ "$(sql "SELECT count(*) FROM jobs WHERE status <> 'running'" 2>/dev/null || echo 0)" -lt "$((per * 4))" ]; do
    echo "$t $(awk '/VmRSS/ {print $2}' /proc/$daemon/status)" >>"$work/rss"
    sleep 1
    t=$((t + 1))
    kill -0 "$daemon" || { tail "$work/daemon.log"; exit 1; }
done
end=$(date +%s.%N)
for pid in "${producers[@]}"; do wait "$pid" || { echo "a producer failed"; exit 1; }; done
peak=$(awk '/VmHWM/ {print $2}' /proc/$daemon/status)
kill -TERM "$daemon"
wait "$daemon"
daemon=""
elapsed=$(echo "$end - $start" | bc -l)
echo "jobs: $((per * 4)) in ${elapsed}s: $(echo "$per * 4 / $elapsed" | bc -l | cut -c1-6) jobs/s"
sql "SELECT status, count(*) FROM jobs GROUP BY 1"
sql "SELECT 'latency p50 ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))::numeric, 3)
      || ' s, p99 ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))::numeric, 3) || ' s' FROM jobs"
echo "peak RSS ${peak} kB; RSS every 10 s (kB):"
awk 'NR > 1 && ($1 % 10 == 0) {printf "%s:%s ", $1, $2} END {print ""}' "$work/rss"
