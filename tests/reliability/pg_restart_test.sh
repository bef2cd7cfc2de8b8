#!/usr/bin/env bash
# Postgres stopped and restarted mid-run: the daemon pauses intake, reconnects with backoff
# and resumes; all 300 jobs complete, none lost, none duplicated.
# Usage: pg_restart_test.sh CLIPCAPD_ENGINE_DOUBLE CLIPCAP   (under tests/lib/with-postgres)
set -euo pipefail
clipcapd=$1
clipcap=$2
: "${CLIPCAP_PG_CTL:?run under tests/lib/with-postgres}"
work=$(mktemp -d /tmp/clipcap-pgrestart.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    eval "$CLIPCAP_PG_CTL start" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    tail -n 30 "$work/daemon.log" >&2 || true
    exit 1
}
sql() { psql -X -q -tA -v ON_ERROR_STOP=1 -c "$1"; }

ffmpeg -loglevel error -f lavfi -i testsrc2=size=64x48:rate=10 -t 2 -pix_fmt yuv420p \
    -c:v libx264 "$work/clip.mp4"
"$clipcap" broker --partitions 4 --state-file "$work/broker" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do [ -s "$work/broker" ] && break; sleep 0.5; done
brokers=$(cat "$work/broker")
for i in $(seq 0 299); do
    printf '{"v":1,"job_id":"pg-%03d","clip_uri":"file://%s/clip.mp4","stage2":true}\n' "$i" "$work"
done >"$work/jobs.jsonl"
"$clipcap" enqueue --brokers "$brokers" --file "$work/jobs.jsonl" >/dev/null ||
    fail "enqueue failed"

CLIPCAP_ENGINE_DOUBLE_DELAY_MS=20 "$clipcapd" --set "kafka.brokers=$brokers" \
    --set "postgres.url=$CLIPCAP_PG_URL?connect_timeout=2" --set "daemon.state_dir=$work/state" \
    --set pipeline.max_jobs_in_flight=8 >"$work/daemon.log" 2>&1 &
daemon=$!
pids+=($daemon)
deadline=$((SECONDS + 120))
until [ "$(sql "SELECT count(*) FROM jobs WHERE status = 'completed'" 2>/dev/null || echo 0)" -ge 40 ]; do
    [ $SECONDS -lt $deadline ] || fail "no progress before the restart"
    sleep 0.5
done
eval "$CLIPCAP_PG_CTL stop -m fast" >/dev/null
sleep 6 # the daemon must notice, pause intake and keep retrying
kill -0 "$daemon" 2>/dev/null || fail "clipcapd died while Postgres was down"
grep -q 'event=postgres_unreachable' "$work/daemon.log" || fail "the outage was not noticed"
grep -q 'event=intake_paused' "$work/daemon.log" || fail "intake was not paused"
eval "$CLIPCAP_PG_CTL start" >/dev/null
deadline=$((SECONDS + 240))
until [ "$(sql "SELECT count(*) FROM jobs WHERE status = 'completed'" 2>/dev/null || echo 0)" = 300 ]; do
    [ $SECONDS -lt $deadline ] || fail "only $(sql "SELECT count(*) FROM jobs WHERE status = 'completed'") of 300 completed after the restart"
    kill -0 "$daemon" 2>/dev/null || fail "clipcapd died after the restart"
    sleep 0.5
done
grep -q 'event=postgres_reconnected' "$work/daemon.log" || fail "no reconnection logged"
kill -TERM "$daemon"
wait "$daemon" || fail "clipcapd did not stop cleanly"
[ "$(sql "SELECT count(*) FROM captions")" = 600 ] || fail "captions: $(sql "SELECT count(*) FROM captions")"
"$clipcap" offsets --brokers "$brokers" --group clipcap >"$work/offsets.out"
grep -q '^total_lag 0$' "$work/offsets.out" || fail "offsets: $(cat "$work/offsets.out")"
echo "postgres restart: paused, reconnected, 300/300 completed, 600 captions, lag 0"
