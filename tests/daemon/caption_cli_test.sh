#!/usr/bin/env bash
# `clipcap caption` on the tiny checkpoint: a 10 s 30 fps clip gives one window of source
# frames 0-299 with 20 sampled frames; stage 2 runs when asked; greedy output is the same on
# every run; bad input fails with a message naming the file and the cause.
# Usage: caption_cli_test.sh CLIPCAP MODEL_DIR PYTHON
set -euo pipefail
clipcap=$1 model=$2 python=$3
work=$(mktemp -d /tmp/clipcap-caption.XXXXXX)
trap 'rm -rf "$work"' EXIT
ffmpeg -loglevel error -f lavfi -i testsrc2=size=96x64:rate=30 -t 10 -pix_fmt yuv420p \
    -c:v libx264 "$work/clip.mp4"
"$clipcap" caption --model "$model" --video "$work/clip.mp4" --stage2 --greedy \
    --max-output-tokens 5 >"$work/a.json"
"$clipcap" caption --model "$model" --video "$work/clip.mp4" --stage2 --greedy \
    --max-output-tokens 5 >"$work/b.json"
"$python" - "$work/a.json" "$work/b.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
w = a["windows"]
assert len(w) == 1, w
assert (w[0]["start_frame"], w[0]["end_frame"], w[0]["frames"]) == (0, 299, 20), w[0]
for stage in ("stage1", "stage2"):
    s = w[0][stage]
    assert s["output_tokens"] == 5 and s["finish_reason"] == "length", s
    assert s["prompt_tokens"] > 20, s
assert a["clip"]["frames"] == 300 and a["clip"]["width"] == 96, a["clip"]
assert a["model"]["variant"] == "qwen2.5" and a["model"]["backend"] == "cpu", a["model"]
texts = lambda r: [(x["stage1"]["text"], x["stage2"]["text"]) for x in r["windows"]]
assert texts(a) == texts(b), "greedy captions differ between runs"
PY
# More windows than the engine holds at once (it batches 8): submitted as room frees up.
ffmpeg -loglevel error -f lavfi -i testsrc2=size=64x48:rate=10 -t 12 -pix_fmt yuv420p \
    -c:v libx264 "$work/long.mp4"
"$clipcap" caption --model "$model" --video "$work/long.mp4" --window-size 8 \
    --remainder-threshold 4 --max-output-tokens 3 --greedy >"$work/long.json"
"$python" - "$work/long.json" <<'PY'
import json, sys
w = json.load(open(sys.argv[1]))["windows"]
assert len(w) == 15, len(w)  # 120 frames in windows of 8
assert [(x["start_frame"], x["end_frame"]) for x in w] == [(8 * i, 8 * i + 7) for i in range(15)], w
assert all(x["stage1"]["output_tokens"] == 3 for x in w), w
PY
echo "not a video" >"$work/text.mp4"
if "$clipcap" caption --model "$model" --video "$work/text.mp4" 2>"$work/err"; then
    echo "FAIL: a text file was captioned" >&2
    exit 1
fi
grep -q "text.mp4" "$work/err" && grep -q "not_media" "$work/err" ||
    { echo "FAIL: error does not name the file and cause: $(cat "$work/err")" >&2; exit 1; }
if "$clipcap" caption --model "$work/no-such-model" --video "$work/clip.mp4" 2>"$work/err"; then
    echo "FAIL: a missing model directory was accepted" >&2
    exit 1
fi
grep -q "no-such-model" "$work/err" ||
    { echo "FAIL: error does not name the model directory: $(cat "$work/err")" >&2; exit 1; }
echo "clipcap caption: window 0-299 (20 frames), stage 1 and 2, deterministic, 15 windows, bad input refused"
