#!/usr/bin/env bash
# The job path end to end: clipcap enqueue -> Kafka (librdkafka's mock cluster in a
# `clipcap broker` process) -> clipcapd (built with the engine test double) -> Postgres
# (a real server from tests/lib/with-postgres). Asserts:
#   1. 200 good jobs complete with the expected caption rows and provenance; 5 bad messages
#      end as failed jobs with the right cause; every offset is committed (lag 0).
#   2. Replaying every message (a new consumer group) duplicates no row.
#   3. SIGTERM mid-run, then a restart: every job ends exactly once, nothing lost.
# Usage: job_path_test.sh CLIPCAPD CLIPCAP [MODEL_DIR]   (under tests/lib/with-postgres)
# With MODEL_DIR, CLIPCAPD is the real daemon and the engine is the real CPU engine on that
# checkpoint (captions are then checked for shape and determinism, not for their text);
# without it, CLIPCAPD is built with the engine test double, which reports the frames it got.
set -euo pipefail
clipcapd=$1
clipcap=$2
model_dir=${3:-}
: "${CLIPCAP_PG_URL:?run under tests/lib/with-postgres}"

work=$(mktemp -d /tmp/clipcap-job-path.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    for log in "$work"/daemon*.log; do
        [ -f "$log" ] && { echo "--- $log (tail)" >&2; tail -n 30 "$log" >&2; }
    done
    exit 1
}
sql() { psql -X -q -tA -v ON_ERROR_STOP=1 -c "$1"; }
count() { sql "$1" 2>/dev/null || echo 0; } # 0 until the daemon has migrated
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        [ $SECONDS -lt $deadline ] || fail "timed out waiting for $what"
        if [ -n "${daemon_pid:-}" ] && ! kill -0 "$daemon_pid" 2>/dev/null; then
            fail "clipcapd died while waiting for $what"
        fi
        sleep 0.5
    done
}

# --- test media: a 2 s, 10 fps, 64x48 clip (20 frames) and a text file posing as a video
ffmpeg -loglevel error -f lavfi -i testsrc2=size=64x48:rate=10 -t 2 -pix_fmt yuv420p \
    -c:v libx264 "$work/clip.mp4"
echo "this is not a video" >"$work/not-a-video.mp4"

# --- the broker, outliving daemon restarts
"$clipcap" broker --partitions 4 --topic clipcap.jobs --topic clipcap.restart \
    --state-file "$work/broker" >"$work/broker.out" 2>"$work/broker.log" &
pids+=($!)
wait_for 30 "the broker" test -s "$work/broker"
brokers=$(cat "$work/broker")

# --- jobs: 200 good ones (every 4th with stage 2; every 5th cut into 3 windows of 8/8/4
# source frames), then 5 bad ones.
expected_captions=0
{
    for i in $(seq 0 199); do
        stage2=false windows=1 extra=""
        [ $((i % 4)) -eq 0 ] && stage2=true
        if [ $((i % 5)) -eq 0 ]; then
            windows=3
            extra=',"window_size":8,"remainder_threshold":4'
        fi
        rows=$windows
        [ "$stage2" = true ] && rows=$((windows * 2))
        expected_captions=$((expected_captions + rows))
        printf '{"v":1,"job_id":"job-%03d","clip_uri":"file://%s/clip.mp4","clip_id":"clip-%d","stage2":%s,"max_output_tokens":6%s}\n' \
            "$i" "$work" "$((i % 7))" "$stage2" "$extra"
    done
    printf '{"v":1,"job_id":"bad-missing","clip_uri":"file://%s/missing.mp4"}\n' "$work"
    printf '{"v":1,"job_id":"bad-not-video","clip_uri":"file://%s/not-a-video.mp4"}\n' "$work"
    printf '{"v":1,"job_id":"bad-model","clip_uri":"file:///x.mp4","model":"llama"}\n'
    printf '{"v":1,"job_id":"bad-type","clip_uri":"file:///x.mp4","window_size":"big"}\n'
    printf '42\n'
} >"$work/jobs.jsonl"
echo "$expected_captions" >"$work/expected_captions"

"$clipcap" enqueue --brokers "$brokers" --file "$work/jobs.jsonl" --allow-invalid \
    >"$work/enqueue.out" || fail "enqueue: $(cat "$work/enqueue.out")"
grep -q "enqueued 205 of 205" "$work/enqueue.out" || fail "enqueue: $(cat "$work/enqueue.out")"

daemon_flags=(--set "kafka.brokers=$brokers" --set "postgres.url=$CLIPCAP_PG_URL"
    --set "daemon.state_dir=$work/state" --set "pipeline.fetch_workers=2"
    --set "pipeline.max_jobs_in_flight=8" --set "pipeline.drain_timeout_seconds=30")
if [ -n "$model_dir" ]; then
    daemon_flags+=(--set "engine.model_dir=$model_dir" --set engine.threads=2)
fi

start_daemon() { # start_daemon LOG [extra flags]
    local log=$1
    shift
    "$clipcapd" "${daemon_flags[@]}" "$@" >"$log" 2>&1 &
    daemon_pid=$!
    pids+=($daemon_pid)
}
stop_daemon() {
    kill -TERM "$daemon_pid"
    local status=0
    wait "$daemon_pid" || status=$?
    daemon_pid=
    [ $status -eq 0 ] || fail "clipcapd exited with $status after SIGTERM"
}
jobs_ended() { [ "$(count "SELECT count(*) FROM jobs WHERE status <> 'running'")" -ge "$1" ]; }
lag_is_zero() { # lag_is_zero GROUP TOPIC
    "$clipcap" offsets --brokers "$brokers" --group "$1" --topic "$2" >"$work/offsets.out" \
        2>/dev/null && grep -q '^total_lag 0$' "$work/offsets.out"
}

# --- 1. the job path
start_daemon "$work/daemon1.log"
wait_for 300 "205 jobs to end" jobs_ended 205
wait_for 60 "every offset to be committed" lag_is_zero clipcap clipcap.jobs
stop_daemon

[ "$(sql "SELECT count(*) FROM jobs WHERE status = 'completed'")" = 200 ] ||
    fail "completed jobs: $(sql "SELECT status, count(*) FROM jobs GROUP BY 1")"
[ "$(sql "SELECT count(*) FROM captions")" = "$expected_captions" ] ||
    fail "captions: $(sql "SELECT count(*) FROM captions") rows, expected $expected_captions"
check_cause() { # check_cause JOB_ID CAUSE
    local got
    got=$(sql "SELECT status || ' ' || error_cause FROM jobs WHERE job_id = '$1'")
    [ "$got" = "failed $2" ] || fail "job $1: '$got', expected 'failed $2'"
}
check_cause bad-missing not_found
check_cause bad-not-video not_media
check_cause bad-model schema
check_cause bad-type schema
[ "$(sql "SELECT count(*) FROM jobs WHERE status = 'failed' AND error_cause = 'schema'
          AND job_id LIKE 'kafka:clipcap.jobs/%'")" = 1 ] ||
    fail "the non-map payload was not recorded under its Kafka coordinates"
sql "SELECT error_message FROM jobs WHERE job_id = 'bad-model'" | grep -q "unknown model variant 'llama'" ||
    fail "bad-model's message does not name the cause"

if [ -z "$model_dir" ]; then
    # The frames that reached the engine: 20 source frames at 10 fps, sampled at 2 fps -> 4.
    sql "SELECT caption FROM captions c JOIN jobs j USING (job_id)
         WHERE job_id = 'job-001' AND stage = 1" | grep -q '^double: 4 frames 64x48 first_index 0 ' ||
        fail "job-001's caption: $(sql "SELECT caption FROM captions WHERE job_id = 'job-001'")"
else
    # The real engine: every caption generated 1..6 tokens and ended for a stated reason.
    [ "$(sql "SELECT count(*) FROM captions WHERE output_tokens BETWEEN 1 AND 6
              AND prompt_tokens > 0 AND finish_reason IN ('stop', 'length')")" = "$expected_captions" ] ||
        fail "caption token counts: $(sql "SELECT output_tokens, prompt_tokens, finish_reason, count(*) FROM captions GROUP BY 1,2,3")"
fi
# Windows 8/8/4 of job-005, recorded with their source frame ranges.
[ "$(sql "SELECT string_agg(start_frame || '-' || end_frame, ',' ORDER BY window_index)
          FROM captions WHERE job_id = 'job-005' AND stage = 1")" = "0-7,8-15,16-19" ] ||
    fail "job-005 windows: $(sql "SELECT window_index, start_frame, end_frame FROM captions WHERE job_id = 'job-005'")"
# Stage 2 rows carry the stage-2 prompt; provenance is on every row.
[ "$(sql "SELECT count(*) FROM captions WHERE stage = 2 AND prompt_text = 'Please refine this caption: '")" = \
  "$(sql "SELECT count(*) FROM captions WHERE stage = 2")" ] || fail "stage-2 prompt not recorded"
expected_model=clipcap/engine-double expected_backend=double
if [ -n "$model_dir" ]; then
    expected_model=local expected_backend=cpu # no manifest: the engine says "local"
fi
[ "$(sql "SELECT count(*) FROM captions c JOIN model_revisions m ON m.id = c.model_revision_id
          WHERE m.variant = 'qwen2.5' AND m.hf_model_id = '$expected_model'
            AND m.backend = '$expected_backend' AND m.engine_version <> ''
            AND c.sampling ->> 'max_tokens' = '6'")" = "$expected_captions" ] ||
    fail "provenance missing on some caption rows: $(sql "SELECT m.*, c.sampling FROM captions c JOIN model_revisions m ON m.id = c.model_revision_id LIMIT 1")"

# --- 2. replay every message under a new group: no duplicate rows, the same captions (each
# window's sampling is seeded from its job and window)
before=$(sql "SELECT count(*) FROM captions")
captions_digest() { sql "SELECT md5(string_agg(job_id || window_index || stage || caption, '|'
                          ORDER BY job_id, window_index, stage)) FROM captions"; }
digest_before=$(captions_digest)
start_daemon "$work/daemon2.log" --set kafka.group=clipcap-replay
wait_for 300 "the replay to finish" lag_is_zero clipcap-replay clipcap.jobs
stop_daemon
[ "$(sql "SELECT count(*) FROM captions")" = "$before" ] || fail "replay duplicated captions"
[ "$(captions_digest)" = "$digest_before" ] || fail "the replay produced different captions"
[ "$(sql "SELECT count(*) FROM (SELECT job_id, window_index, stage, model_revision_id
          FROM captions GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d")" = 0 ] ||
    fail "duplicate caption keys"
[ "$(sql "SELECT min(attempts) FROM jobs WHERE status = 'completed'")" -ge 2 ] ||
    fail "the replay did not count as a second attempt"

# --- 3. SIGTERM mid-run, restart: nothing lost, nothing duplicated
for i in $(seq 0 199); do
    printf '{"v":1,"job_id":"restart-%03d","clip_uri":"file://%s/clip.mp4","stage2":true,"max_output_tokens":6}\n' "$i" "$work"
done >"$work/restart.jsonl"
"$clipcap" enqueue --brokers "$brokers" --topic clipcap.restart --file "$work/restart.jsonl" \
    >"$work/enqueue2.out" || fail "enqueue: $(cat "$work/enqueue2.out")"
restart_done() { [ "$(sql "SELECT count(*) FROM jobs WHERE job_id LIKE 'restart-%' AND status <> 'running'")" -ge "$1" ]; }
CLIPCAP_ENGINE_DOUBLE_DELAY_MS=40 start_daemon "$work/daemon3.log" --set kafka.topic=clipcap.restart
wait_for 300 "the first restart jobs" restart_done 30
stop_daemon
mid=$(sql "SELECT count(*) FROM jobs WHERE job_id LIKE 'restart-%' AND status = 'completed'")
[ "$mid" -lt 200 ] || fail "all 200 jobs finished before SIGTERM; the test proves nothing"
grep -q 'event=draining' "$work/daemon3.log" || fail "no graceful drain logged"
start_daemon "$work/daemon4.log" --set kafka.topic=clipcap.restart
wait_for 300 "the restarted daemon to finish" lag_is_zero clipcap clipcap.restart
stop_daemon
[ "$(sql "SELECT count(*) FROM jobs WHERE job_id LIKE 'restart-%' AND status = 'completed'")" = 200 ] ||
    fail "restart jobs: $(sql "SELECT status, count(*) FROM jobs WHERE job_id LIKE 'restart-%' GROUP BY 1")"
[ "$(sql "SELECT count(*) FROM captions WHERE job_id LIKE 'restart-%'")" = 400 ] ||
    fail "restart captions: $(sql "SELECT count(*) FROM captions WHERE job_id LIKE 'restart-%'")"
echo "job path: 200 completed, 5 failed with causes, $expected_captions captions, replay" \
    "added none, stop at $mid/200 then restart completed all 200"
