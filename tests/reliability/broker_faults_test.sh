#!/usr/bin/env bash
# Broker faults through the mock cluster's error injection, while 300 jobs run on a
# 3-broker cluster: errors on Fetch, OffsetCommit, JoinGroup, Heartbeat and SyncGroup, a
# broker down then up, the group coordinator moved, and a second consumer joining and
# leaving (two rebalances). Asserts nothing lost, nothing duplicated, lag 0.
# Usage: broker_faults_test.sh CLIPCAPD_ENGINE_DOUBLE CLIPCAP   (under tests/lib/with-postgres)
set -euo pipefail
clipcapd=$1
clipcap=$2
work=$(mktemp -d /tmp/clipcap-brokerfaults.XXXXXX)
pids=()
cleanup() {
    exec 7>&- 2>/dev/null || true
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    for log in "$work"/daemon*.log "$work"/broker.log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done
    exit 1
}
sql() { psql -X -q -tA -v ON_ERROR_STOP=1 -c "$1"; }
completed() { sql "SELECT count(*) FROM jobs WHERE status = 'completed'" 2>/dev/null || echo 0; }

ffmpeg -loglevel error -f lavfi -i testsrc2=size=64x48:rate=10 -t 2 -pix_fmt yuv420p \
    -c:v libx264 "$work/clip.mp4"
mkfifo "$work/commands"
"$clipcap" broker --brokers 3 --partitions 6 --state-file "$work/broker" --commands \
    <"$work/commands" >"$work/broker.out" 2>"$work/broker.log" &
pids+=($!)
exec 7>"$work/commands" # keep the command pipe open
for _ in $(seq 1 60); do [ -s "$work/broker" ] && break; sleep 0.5; done
brokers=$(cat "$work/broker")
inject() {
    echo "$1" >&7
    sleep 0.2
    tail -n 1 "$work/broker.out" | grep -q '^ok' || fail "broker command '$1': $(tail -n 1 "$work/broker.out")"
}

for i in $(seq 0 299); do
    printf '{"v":1,"job_id":"bf-%03d","clip_uri":"file://%s/clip.mp4"}\n' "$i" "$work"
done >"$work/jobs.jsonl"
"$clipcap" enqueue --brokers "$brokers" --file "$work/jobs.jsonl" >/dev/null || fail "enqueue failed"

flags=(--set "kafka.brokers=$brokers" --set "postgres.url=$CLIPCAP_PG_URL"
    --set "daemon.state_dir=$work/state" --set pipeline.max_jobs_in_flight=8
    --set librdkafka.session.timeout.ms=6000 --set librdkafka.heartbeat.interval.ms=500
    --set librdkafka.auto.commit.interval.ms=300)
CLIPCAP_ENGINE_DOUBLE_DELAY_MS=30 "$clipcapd" "${flags[@]}" >"$work/daemon1.log" 2>&1 &
d1=$!
pids+=($d1)
wait_completed() {
    local deadline=$((SECONDS + 240))
    until [ "$(completed)" -ge "$1" ]; do
        [ $SECONDS -lt $deadline ] || fail "stuck at $(completed) completed (waiting for $1)"
        kill -0 "$d1" 2>/dev/null || fail "clipcapd died"
        kill -0 "${pids[0]}" 2>/dev/null || fail "the broker (clipcap broker) died"
        sleep 0.3
    done
}
wait_completed 20
inject "request-errors 1 7 5"    # Fetch: REQUEST_TIMED_OUT x5
inject "request-errors 8 15 5"   # OffsetCommit: COORDINATOR_NOT_AVAILABLE x5
inject "request-errors 12 27 3"  # Heartbeat: REBALANCE_IN_PROGRESS x3
wait_completed 60
inject "broker-down 2"
sleep 3
inject "broker-up 2"
wait_completed 100
inject "coordinator clipcap 3"   # the group's coordinator moves
inject "request-errors 11 16 2"  # JoinGroup: NOT_COORDINATOR x2
inject "request-errors 14 27 2"  # SyncGroup: REBALANCE_IN_PROGRESS x2
# A second member joins (rebalance: partitions move) and leaves (they move back).
CLIPCAP_ENGINE_DOUBLE_DELAY_MS=30 "$clipcapd" "${flags[@]}" --set "daemon.state_dir=$work/state2" \
    >"$work/daemon2.log" 2>&1 &
d2=$!
pids+=($d2)
wait_completed 180
kill -TERM "$d2"
wait "$d2" || fail "the second clipcapd did not stop cleanly"
wait_completed 300
deadline=$((SECONDS + 120))
until "$clipcap" offsets --brokers "$brokers" --group clipcap >"$work/offsets.out" 2>/dev/null &&
    grep -q '^total_lag 0$' "$work/offsets.out"; do
    [ $SECONDS -lt $deadline ] || fail "offsets: $(cat "$work/offsets.out")"
    sleep 1
done
kill -TERM "$d1"
wait "$d1" || fail "clipcapd did not stop cleanly"
[ "$(sql "SELECT count(*) FROM jobs WHERE status = 'completed'")" = 300 ] || fail "completed"
[ "$(sql "SELECT count(*) FROM captions")" = 300 ] || fail "captions: $(sql "SELECT count(*) FROM captions")"
grep -q 'kafka_partitions_revoked\|kafka_partitions_lost' "$work/daemon1.log" ||
    fail "no rebalance was exercised"
echo "broker faults: fetch/commit/heartbeat/join/sync errors, broker down+up, coordinator" \
    "moved, 2 rebalances: 300/300 completed, 300 captions, lag 0"
