#!/usr/bin/env bash
# Crash safety: 500 jobs (450 good, 50 bad), the daemon killed with SIGKILL 20 times at random
# points, some of them right after a database commit and before the offset store (the test
# binary's CLIPCAP_FAULT_KILL_AFTER_COMMITS hook), restarted each time. Asserts that every job
# ends exactly once as completed or failed, with zero duplicate caption rows, zero lost jobs,
# every failed job on the dead-letter topic, and every offset committed.
# Usage: kill9_test.sh CLIPCAPD_ENGINE_DOUBLE CLIPCAP   (under tests/lib/with-postgres)
set -euo pipefail
clipcapd=$1
clipcap=$2
: "${CLIPCAP_PG_URL:?run under tests/lib/with-postgres}"
kills=${CLIPCAP_KILLS:-20}

work=$(mktemp -d /tmp/clipcap-kill9.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    for log in $(ls -t "$work"/daemon*.log 2>/dev/null | head -2); do
        echo "--- $log (tail)" >&2
        tail -n 20 "$log" >&2
    done
    exit 1
}
sql() { psql -X -q -tA -v ON_ERROR_STOP=1 -c "$1"; }
count() { sql "$1" 2>/dev/null || echo 0; }

ffmpeg -loglevel error -f lavfi -i testsrc2=size=64x48:rate=10 -t 2 -pix_fmt yuv420p \
    -c:v libx264 "$work/clip.mp4"
"$clipcap" broker --partitions 4 --topic clipcap.jobs --state-file "$work/broker" \
    >"$work/broker.out" 2>"$work/broker.log" &
pids+=($!)
for _ in $(seq 1 60); do [ -s "$work/broker" ] && break; sleep 0.5; done
brokers=$(cat "$work/broker")

expected_captions=0
{
    for i in $(seq 0 499); do
        if [ $((i % 10)) -eq 3 ]; then
            if [ $((i % 20)) -eq 3 ]; then # 25 schema errors
                printf '{"v":1,"job_id":"job-%03d","clip_uri":"file:///x.mp4","window_size":"big"}\n' "$i"
            else # 25 missing clips
                printf '{"v":1,"job_id":"job-%03d","clip_uri":"file://%s/missing-%d.mp4"}\n' "$i" "$work" "$i"
            fi
            continue
        fi
        stage2=false rows=1
        [ $((i % 3)) -eq 0 ] && stage2=true rows=2
        expected_captions=$((expected_captions + rows))
        printf '{"v":1,"job_id":"job-%03d","clip_uri":"file://%s/clip.mp4","stage2":%s}\n' \
            "$i" "$work" "$stage2"
    done
} >"$work/jobs.jsonl"
"$clipcap" enqueue --brokers "$brokers" --file "$work/jobs.jsonl" --allow-invalid \
    >"$work/enqueue.out" || fail "enqueue: $(cat "$work/enqueue.out")"

flags=(--set "kafka.brokers=$brokers" --set "postgres.url=$CLIPCAP_PG_URL"
    --set "daemon.state_dir=$work/state" --set pipeline.fetch_workers=2
    --set pipeline.max_jobs_in_flight=16
    # A killed member must leave the group quickly, or each restart waits out its session.
    --set librdkafka.session.timeout.ms=6000 --set librdkafka.heartbeat.interval.ms=500
    --set librdkafka.auto.commit.interval.ms=200)

ended() { count "SELECT count(*) FROM jobs WHERE status <> 'running'"; }
for round in $(seq 1 "$kills"); do
    before=$(ended)
    if [ $((round % 3)) -eq 0 ]; then
        # Die right after the Nth outcome commit of this run, before its offset is stored.
        CLIPCAP_FAULT_KILL_AFTER_COMMITS=$((1 + RANDOM % 8)) CLIPCAP_ENGINE_DOUBLE_DELAY_MS=5 \
            "$clipcapd" "${flags[@]}" >"$work/daemon$round.log" 2>&1 &
        pid=$!
        pids+=($pid)
        for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && fail "round $round: the commit hook did not fire"
        wait "$pid" 2>/dev/null || true
    else
        CLIPCAP_ENGINE_DOUBLE_DELAY_MS=5 "$clipcapd" "${flags[@]}" >"$work/daemon$round.log" 2>&1 &
        pid=$!
        pids+=($pid)
        # Kill at a random point: during start-up, the group join, or the work.
        sleep "$((3 + RANDOM % 7)).$((RANDOM % 10))"
        kill -9 "$pid" 2>/dev/null || fail "round $round: clipcapd had already exited"
        wait "$pid" 2>/dev/null || true
    fi
    echo "round $round: jobs ended $before -> $(ended)"
done

# The last run: no more kills; everything must finish.
"$clipcapd" "${flags[@]}" >"$work/daemon-final.log" 2>&1 &
pid=$!
pids+=($pid)
deadline=$((SECONDS + 300))
until "$clipcap" offsets --brokers "$brokers" --group clipcap --topic clipcap.jobs \
    >"$work/offsets.out" 2>/dev/null && grep -q '^total_lag 0$' "$work/offsets.out"; do
    [ $SECONDS -lt $deadline ] || fail "offsets not all committed: $(cat "$work/offsets.out")"
    kill -0 "$pid" 2>/dev/null || fail "the final clipcapd died"
    sleep 1
done
kill -TERM "$pid"
wait "$pid" || fail "the final clipcapd did not stop cleanly"

[ "$(sql "SELECT count(*) FROM jobs")" = 500 ] || fail "jobs recorded: $(sql "SELECT count(*) FROM jobs")"
[ "$(sql "SELECT count(*) FROM jobs WHERE status = 'running'")" = 0 ] || fail "jobs left running"
[ "$(sql "SELECT count(*) FROM jobs WHERE status = 'completed'")" = 450 ] ||
    fail "completed: $(sql "SELECT status, count(*) FROM jobs GROUP BY 1")"
[ "$(sql "SELECT count(*) FROM jobs WHERE status = 'failed' AND error_cause = 'schema'")" = 25 ] ||
    fail "schema failures: $(sql "SELECT error_cause, count(*) FROM jobs GROUP BY 1")"
[ "$(sql "SELECT count(*) FROM jobs WHERE status = 'failed' AND error_cause = 'not_found'")" = 25 ] ||
    fail "not_found failures: $(sql "SELECT error_cause, count(*) FROM jobs GROUP BY 1")"
[ "$(sql "SELECT count(*) FROM captions")" = "$expected_captions" ] ||
    fail "captions: $(sql "SELECT count(*) FROM captions"), expected $expected_captions"
# Every failed job reached the dead-letter topic (at least once: a kill between the dead
# letter's acknowledgement and the offset store sends it again).
"$clipcap" consume --brokers "$brokers" --topic clipcap.jobs.dlq >"$work/dlq.jsonl"
dead=$(python3 -c '
import json, sys
ids = {json.loads(l)["headers"]["clipcap.job_id"] for l in open(sys.argv[1]) if l.strip()}
print(len(ids))' "$work/dlq.jsonl")
[ "$dead" = 50 ] || fail "dead letters for $dead distinct jobs, expected 50"
restarts=$(grep -l 'event=ready' "$work"/daemon*.log | wc -l)
echo "kill -9: $kills kills ($restarts runs reached ready), 500 jobs ended once (450 completed," \
    "50 failed, all 50 dead-lettered), $expected_captions captions, no duplicates, lag 0"
