#!/usr/bin/env python3
"""Checks the ffmpeg-CLI reference frames of make_clips.py against Curator's own decode path.

Usage: pyav_reference.py MANIFEST

Curator decodes with PyAV (nemo_curator/utils/decoder_utils.py): frame_count =
stream.frames, video_fps = float(stream.average_rate), frames enumerated from
container.decode(video=0), each sampled frame converted with frame.to_ndarray(format="rgb24").
This script does exactly that for every "decode" line of the manifest and compares with the
reference frames that test_media_decode holds media_decode_clip to byte for byte; so where
this passes, media/ gives Curator's pixels.

PyAV wheels bundle their own FFmpeg (av 18.1.0: FFmpeg 8), Debian 12 has FFmpeg 5.1. The
two libswscale versions give identical rgb24 for 8-bit 4:2:0 frames of even size (the fast
unscaled converter: H.264, AV1, MPEG-4 clips here), which must match exactly. 10-bit input
and odd sizes go through swscale's generic path, whose chroma upsampling changed between
the versions; those must stay close on average (sharp synthetic colour edges differ a lot
per pixel), and the difference is reported.
"""
import sys

import av
import numpy as np

TOLERATED_MEAN_DIFFERENCE = 6.0  # generic swscale path only (measured: 3.8 HEVC 10-bit, 1.0 VP9 odd)


def decode_like_curator(path, indices):
    wanted = set(indices)
    frames = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        declared, average = stream.frames, float(stream.average_rate)
        for number, frame in enumerate(container.decode(video=0)):
            if number in wanted:
                frames[number] = (frame.format.name, frame.to_ndarray(format="rgb24"))
            if number >= indices[-1]:
                break
    return declared, average, [frames[i] for i in indices]


def main():
    failures = 0
    checked = 0
    for line in open(sys.argv[1]):
        fields = line.split()
        if not fields or fields[0] != "decode":
            continue
        name, clip, reference = fields[1], fields[2], fields[3]
        width, height, frame_count = int(fields[4]), int(fields[5]), int(fields[6])
        windows = int(fields[9])
        position = 10 + 3 * windows
        count = int(fields[position])
        indices = [int(x) for x in fields[position + 1:position + 1 + count]]
        expected = np.fromfile(reference, np.uint8).reshape(count, height, width, 3)
        declared, average, frames = decode_like_curator(clip, indices)
        pixel_format = frames[0][0]
        got = np.stack([f[1] for f in frames])
        if got.shape != expected.shape:
            # PyAV ignores the display matrix; media/ rotates like the ffmpeg CLI (clockwise).
            got = np.stack([np.rot90(f, k=-1) for f in got])
        difference = np.abs(got.astype(np.int16) - expected.astype(np.int16))
        exact_path = pixel_format in ("yuv420p", "yuvj420p") and width % 2 == 0 \
            and height % 2 == 0
        mean = float(difference.mean())
        ok = (difference.max() == 0) if exact_path else (mean <= TOLERATED_MEAN_DIFFERENCE)
        # Curator's frame count: the container's (0 for Matroska/WebM, docs/sampling.md).
        if declared not in (0, frame_count):
            ok = False
        print(f"{name}: {pixel_format} {width}x{height} stream.frames={declared} "
              f"(counted {frame_count}) average_rate={average:.6g} "
              f"{'exact' if exact_path else 'generic'} path: max |diff| "
              f"{int(difference.max())}, mean {mean:.3f} -> {'ok' if ok else 'FAIL'}")
        failures += not ok
        checked += 1
    if checked < 5:
        print(f"only {checked} decode cases in the manifest")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
