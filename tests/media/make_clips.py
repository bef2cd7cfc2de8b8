#!/usr/bin/env python3
"""Generates the decode test clips with the ffmpeg CLI, and independent expectations.

Usage: make_clips.py OUT_DIR   (writes clips, reference frames and OUT_DIR/manifest.txt)

For every clip that should decode, the expectations come from tools other than the code
under test:
  - frame count and presentation times: ffprobe (-count_frames; packet pts_time, sorted);
  - average fps (Curator's video_fps): ffprobe avg_frame_rate;
  - windows, frames per window and indices: sampling_reference.py (exact arithmetic);
  - pixels: ffmpeg -vf select=eq(n,...) -pix_fmt rgb24 with -sws_flags bilinear, the flag
    PyAV's to_ndarray("rgb24") uses, converting with the same libswscale and its default
    BT.601/limited-range details (the clips carry no colour tags, so the CLI's scale filter
    and PyAV pick the same matrix); rotation by the CLI's autorotate.
manifest.txt lines:
  decode NAME CLIP REF WIDTH HEIGHT FRAMES SPAN_START SPAN_END WINDOWS (START END N)...
         SAMPLES INDEX... TIMESTAMP... PACKETS_BEFORE_START
  error NAME CLIP CAUSE [LIMIT=VALUE ...]
  survive NAME CLIP CAUSE|CAUSE...   (damaged input: must not crash, cause in the set)
"""
import json
import os
import random
import struct
import subprocess
import sys
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sampling_reference import compute_windows, linspace_indices, smart_nframes  # noqa: E402


def run(args):
    subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def ffmpeg_encode(path, source, seconds, codec_args, filters=None, extra=None):
    args = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds)]
    if filters:
        args += ["-vf", filters]
    args += codec_args + (extra or []) + [path]
    run(args)


def probe(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
         "stream=width,height,avg_frame_rate,nb_read_frames:stream_side_data=rotation",
         "-of", "json", path], check=True, capture_output=True, text=True).stdout
    stream = json.loads(out)["streams"][0]
    packets = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time", "-of", "csv=p=0", path],
        check=True, capture_output=True, text=True).stdout.split()
    times = sorted(Fraction(t) for t in packets if t != "N/A")
    num, den = (int(x) for x in stream["avg_frame_rate"].split("/"))
    rotation = 0
    for side in stream.get("side_data_list", []):
        rotation = (-int(side.get("rotation", 0))) % 360
    return {
        "width": stream["width"], "height": stream["height"], "fps": num / den,
        "frames": int(stream["nb_read_frames"]), "times": times, "rotation": rotation,
    }


def plan(info, span_start=-1.0, span_end=-1.0):
    times = info["times"]
    first = 0
    count = info["frames"]
    if span_start >= 0 or span_end >= 0:
        selected = [i for i, t in enumerate(times)
                    if (span_start < 0 or t - times[0] >= Fraction(span_start))
                    and (span_end < 0 or t - times[0] < Fraction(span_end))]
        first, count = selected[0], len(selected)
    windows = []
    indices = []
    for start, end in compute_windows(count, 256, 128):
        n = smart_nframes(2.0, end - start + 1, info["fps"])
        windows.append((first + start, first + end, n))
        indices += linspace_indices(first + start, first + end, n)
    return windows, indices


def packets_before_start(path, first_needed_time):
    """Video packets (demux order) before the last keyframe at or before the first sampled
    frame, when that keyframe is not the first frame: what media/ demuxes without decoding."""
    rows = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time,flags", "-of", "csv=p=0", path],
        check=True, capture_output=True, text=True).stdout.split()
    packets = [(Fraction(pts), "K" in flags) for pts, flags in (r.split(",")[:2] for r in rows)]
    first_time = min(t for t, _ in packets)
    keys = [t for t, key in packets if key and t <= first_needed_time]
    if not keys or max(keys) == first_time:
        return 0
    start = max(keys)
    return next(i for i, (t, key) in enumerate(packets) if key and t == start)


def reference_frames(clip, indices, out_path):
    expression = "+".join(f"eq(n\\,{i})" for i in indices)
    run(["ffmpeg", "-v", "error", "-y", "-i", clip, "-vf", f"select='{expression}'",
         "-vsync", "0", "-sws_flags", "bilinear", "-pix_fmt", "rgb24", "-f", "rawvideo",
         out_path])


def set_rotation(path, matrix):
    """Writes a display matrix into the MP4's first tkhd box (ffmpeg 5.1's CLI cannot)."""
    data = bytearray(open(path, "rb").read())
    box = data.find(b"tkhd") - 4
    offset = box + (48 if data[box + 8] == 0 else 60)
    data[offset:offset + 36] = struct.pack(">9i", *matrix)
    open(path, "wb").write(data)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    lines = []
    src = "testsrc2=size={}:rate={}"
    x264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]

    clips = {
        # name: (file, source, seconds, codec args, filters, extra)
        "h264_mp4": ("h264.mp4", src.format("320x240", 30), 10, x264, None, None),
        "h264_1080p_mp4": ("h264_1080p.mp4", src.format("1920x1080", 30), 2, x264, None,
                           None),
        "hevc_10bit_mkv": ("hevc10.mkv", src.format("256x144", 25), 6,
                           ["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt",
                            "yuv420p10le", "-x265-params", "log-level=error"], None, None),
        "hevc_8bit_mp4": ("hevc8.mp4", src.format("128x72", 25), 4,
                          ["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                           "-tag:v", "hvc1", "-x265-params", "log-level=error"], None, None),
        # Two temporal layers: HEVC non-reference pictures may then be referenced by the
        # higher layer, so media/ must not skip any.
        "hevc_temporal_layers_mp4": ("hevc_tl.mp4", src.format("128x72", 25), 3,
                                     ["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt",
                                      "yuv420p", "-tag:v", "hvc1", "-x265-params",
                                      "log-level=error:temporal-layers=1"], None, None),
        "h264_mkv": ("h264.mkv", src.format("192x108", 24), 5, x264, None, None),
        "vp9_odd_webm": ("vp9_odd.webm", src.format("322x242", 24), 3,
                         ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                          "-b:v", "300k", "-pix_fmt", "yuv420p"], "crop=321:241:0:0:exact=1", None),
        "av1_mp4": ("av1.mp4", src.format("160x90", 15), 4,
                    ["-c:v", "libaom-av1", "-cpu-used", "8", "-row-mt", "1", "-b:v", "100k"],
                    None, None),
        "mpeg4_mov": ("mpeg4.mov", src.format("352x288", 25), 12,
                      ["-c:v", "mpeg4", "-q:v", "5", "-bf", "2"], None, None),
        "h264_long_mp4": ("h264_long.mp4", src.format("64x48", 60), 20, x264, None, None),
        "h264_rotated_mp4": ("h264_rotated.mp4", src.format("320x240", 30), 3, x264, None,
                             None),
        # Variable frame rate: 30 fps for 3 s, then every third frame.
        "h264_vfr_mp4": ("h264_vfr.mp4", src.format("320x240", 30), 8, x264,
                         "select='lt(n\\,90)+not(mod(n\\,3))'", ["-vsync", "vfr"]),
        # A keyframe every second, so a span can start decoding at a later keyframe.
        "h264_gop30_mp4": ("h264_gop30.mp4", src.format("320x240", 30), 10,
                           x264 + ["-g", "30", "-keyint_min", "30", "-sc_threshold", "0"], None,
                           None),
        "h264_short_mp4": ("h264_short.mp4", src.format("64x48", 30), 0.1, x264, None, None),
    }
    for name, (file, source, seconds, codec, filters, extra) in clips.items():
        ffmpeg_encode(os.path.join(out, file), source, seconds, codec, filters, extra)
    set_rotation(os.path.join(out, "h264_rotated.mp4"),
                 (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30))

    def decode_case(name, file, span_start=-1.0, span_end=-1.0):
        clip = os.path.join(out, file)
        info = probe(clip)
        windows, indices = plan(info, span_start, span_end)
        ref = os.path.join(out, name + ".rgb")
        reference_frames(clip, indices, ref)
        width, height = info["width"], info["height"]
        if info["rotation"] in (90, 270):
            width, height = height, width
        times = [float(info["times"][i] - info["times"][0]) for i in indices]
        fields = ["decode", name, clip, ref, width, height, info["frames"], span_start,
                  span_end, len(windows)]
        for start, end, n in windows:
            fields += [start, end, n]
        fields += [len(indices)] + indices + [repr(t) for t in times]
        fields.append(packets_before_start(clip, info["times"][indices[0]]))
        lines.append(" ".join(str(f) for f in fields))

    for name in ["h264_mp4", "h264_1080p_mp4", "hevc_10bit_mkv", "hevc_8bit_mp4",
                 "hevc_temporal_layers_mp4", "h264_mkv",
                 "vp9_odd_webm", "av1_mp4",
                 "mpeg4_mov", "h264_long_mp4", "h264_rotated_mp4", "h264_vfr_mp4"]:
        decode_case(name, clips[name][0])
    decode_case("h264_span_mp4", "h264.mp4", 2.0, 6.0)
    decode_case("h264_gop30_span_mp4", "h264_gop30.mp4", 4.0, 6.0)

    # Bad media.
    def write(file, data):
        path = os.path.join(out, file)
        with open(path, "wb") as f:
            f.write(data)
        return path

    h264 = open(os.path.join(out, "h264.mp4"), "rb").read()
    lines.append("error empty " + write("empty.bin", b"") + " empty")
    lines.append("error text " + write("text.txt", b"this is not a video\n" * 50) + " not_media")
    run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440", "-t", "1",
         "-c:a", "aac", os.path.join(out, "audio.m4a")])
    lines.append(f"error audio_only {os.path.join(out, 'audio.m4a')} no_video_stream")
    run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v",
         "1", os.path.join(out, "image.png")])
    lines.append(f"error png_image {os.path.join(out, 'image.png')} not_media")
    # Truncated: with the index (moov) in front, the frame data stops half way.
    faststart = os.path.join(out, "h264_faststart.mp4")
    run(["ffmpeg", "-v", "error", "-y", "-i", os.path.join(out, "h264.mp4"), "-c", "copy",
         "-movflags", "+faststart", faststart])
    data = open(faststart, "rb").read()
    lines.append("error truncated_faststart "
                 + write("truncated_faststart.mp4", data[: len(data) // 2]) + " undecodable")
    # Truncated with the index at the end: the container is recognised, the index is gone.
    lines.append("error truncated_no_index " + write("truncated_no_index.mp4",
                                                     h264[: len(h264) // 2]) + " undecodable")
    short = os.path.join(out, "h264_short.mp4")
    lines.append(f"error three_frames {short} too_short")
    clip = os.path.join(out, "h264.mp4")
    lines.append(f"error input_cap {clip} too_large max_input_bytes=1000")
    lines.append(f"error width_cap {clip} too_large max_width=100")
    lines.append(f"error pixel_cap {clip} too_large max_pixels_per_frame=10000")
    lines.append(f"error duration_cap {clip} too_long max_duration_s=5")
    lines.append(f"error source_frame_cap {clip} too_long max_source_frames=100")
    lines.append(f"error sampled_frame_cap {clip} too_many_frames "
                 "max_sampled_frames_per_window=10")
    lines.append(f"error decoded_bytes_cap {clip} too_large max_decoded_bytes=1000000")
    # Damaged input: truncated at many points, and frame data overwritten with noise.
    long_faststart = os.path.join(out, "h264_long_faststart.mp4")
    run(["ffmpeg", "-v", "error", "-y", "-i", os.path.join(out, "h264_long.mp4"), "-c", "copy",
         "-movflags", "+faststart", long_faststart])
    for source, extension in ((long_faststart, "mp4"), (os.path.join(out, "hevc10.mkv"), "mkv"),
                              (os.path.join(out, "vp9_odd.webm"), "webm")):
        whole = open(source, "rb").read()
        for k in range(1, 8):
            cut = len(whole) * k // 8
            name = f"cut_{extension}_{k}"
            lines.append(f"survive {name} " + write(f"{name}.{extension}", whole[:cut])
                         + " ok|undecodable|not_media|too_short")
    rng = random.Random(3)
    noisy = bytearray(h264)
    start = h264.find(b"mdat") + 4000
    for _ in range(200):
        position = rng.randrange(start, len(noisy))
        noisy[position] = rng.randrange(256)
    lines.append("survive noise " + write("noise.mp4", bytes(noisy)) + " ok|undecodable")
    # Real container headers followed by random bytes.
    mkv = open(os.path.join(out, "hevc10.mkv"), "rb").read()
    for name, head in (("mp4_head_random", h264[:64]), ("mkv_head_random", mkv[:64])):
        body = bytes(rng.randrange(256) for _ in range(20000))
        lines.append(f"survive {name} " + write(name + ".bin", head + body)
                     + " undecodable|not_media|no_video_stream|too_short")

    with open(os.path.join(out, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
