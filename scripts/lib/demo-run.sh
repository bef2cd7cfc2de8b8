#!/usr/bin/env bash
# The body of scripts/demo, run under tests/lib/with-postgres (CLIPCAP_PG_URL is set).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/build"
work=$(mktemp -d /tmp/clipcap-demo.XXXXXX)
daemon_pid=""
cleanup() {
    [ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The model directory: the tiny checkpoint plus the real Qwen tokenizer.
model="$work/model"
mkdir -p "$model"
cp "$root"/tests/fixtures/qwen2_5_vl/tiny_a/checkpoint/*.json \
    "$root"/tests/fixtures/qwen2_5_vl/tiny_a/checkpoint/*.safetensors "$model/"
tar -C "$model" -xJf "$root/tests/fixtures/qwen-tokenizer/qwen-tokenizer.tar.xz"

# A sample clip: 10 s of 30 fps test pattern (one caption window of 20 sampled frames).
ffmpeg -loglevel error -f lavfi -i testsrc2=size=320x240:rate=30 -t 10 -pix_fmt yuv420p \
    -c:v libx264 "$work/sample.mp4"

echo "== starting clipcapd (embedded Kafka broker, CPU backend, tiny checkpoint)"
"$bin/daemon/clipcapd" \
    --set kafka.brokers=embedded \
    --set "daemon.state_dir=$work/state" \
    --set "postgres.url=$CLIPCAP_PG_URL" \
    --set "engine.model_dir=$model" \
    --set engine.variant=qwen2.5 \
    --set pipeline.drain_timeout_seconds=30 2>"$work/clipcapd.log" &
daemon_pid=$!
for _ in $(seq 1 120); do
    [ -s "$work/state/embedded-broker" ] && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/clipcapd.log"; exit 1; }
    sleep 0.5
done
[ -s "$work/state/embedded-broker" ] || { cat "$work/clipcapd.log"; exit 1; }
echo "   broker at $(cat "$work/state/embedded-broker")"

echo "== enqueueing the sample clip (stage 1 and stage 2)"
"$bin/daemon/clipcap" enqueue --broker-state-file "$work/state/embedded-broker" \
    --job-id demo-1 --clip-uri "file://$work/sample.mp4" --clip-id sample \
    --prompt-variant default --stage2 --max-output-tokens 24

echo "== waiting for the job to end"
for _ in $(seq 1 600); do
    status=$(psql -X -tA -c "SELECT status FROM jobs WHERE job_id = 'demo-1'" 2>/dev/null || true)
    [ "$status" = completed ] || [ "$status" = failed ] && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/clipcapd.log"; exit 1; }
    sleep 0.5
done

echo "== jobs"
psql -X -P pager=off -c "SELECT job_id, status, attempts, error_cause, clip_uri,
    round(fetch_seconds::numeric, 3) AS fetch_s, round(decode_seconds::numeric, 3) AS decode_s,
    round(engine_seconds::numeric, 3) AS engine_s FROM jobs"
echo "== captions (random weights: the text is random tokens; see the note in scripts/demo)"
psql -X -P pager=off -c "SELECT c.window_index AS win, c.start_frame, c.end_frame, c.stage,
    c.output_tokens AS tokens, c.finish_reason AS finish, m.variant, m.hf_model_id, m.backend,
    left(c.caption, 60) AS caption FROM captions c JOIN model_revisions m
    ON m.id = c.model_revision_id ORDER BY c.window_index, c.stage"
psql -X -P pager=off -c "SELECT stage, sampling FROM captions ORDER BY stage"

echo "== stopping clipcapd (SIGTERM: drain, commit offsets, close)"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || true
daemon_pid=""
grep -E 'event=(ready|job_completed|job_failed|stopped)' "$work/clipcapd.log" || true
[ "$status" = completed ]
