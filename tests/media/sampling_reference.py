#!/usr/bin/env python3
"""Independent reference for Curator's window/frame sampling plan (tests/media).

Written from the facts in shared/reference/curator.md (section 2) and models.md (B):
compute_windows counts source frames (window 256, remainder threshold 128, at least 4
frames; a remainder >= threshold is its own window, else merged into the last one),
smart_nframes = total / video_fps * fps clamped to [4, min(768, total) rounded down to even],
rounded to an even count with Python's round(), and indices = linspace(start, end, n)
rounded. Curator rounds torch.linspace's float32 values; this file emulates that from the
algorithm of torch's CPU kernel and also computes the exact values (fractions): it stops with
an error if the two differ where they must not (frame indices under EXACT_BELOW).

Writes one line per vector to the file named by argv[1]:
  nframes <sampling_fps> <total> <video_fps> <expected or -1>
  plan <total> <window_size> <threshold> <video_fps> <sampling_fps> <windows>
       then per window: <start> <end> <n> <index...>
Floats are written with repr() so C's strtod reads back the same double.
"""
import math
import os
import struct
import sys
from fractions import Fraction


def compute_windows(total, window_size=256, remainder_threshold=128):
    if total < 4:
        return []
    if total <= window_size:
        return [(0, total - 1)]
    full, remainder = divmod(total, window_size)
    windows = [(i * window_size, i * window_size + window_size - 1) for i in range(full)]
    if remainder >= remainder_threshold:
        windows.append((total - remainder, total - 1))
    elif remainder > 0:
        windows[-1] = (windows[-1][0], total - 1)
    return windows


def smart_nframes(sampling_fps, total, video_fps):
    lowest = 4  # FPS_MIN_FRAMES rounded up to FRAME_FACTOR 2
    highest = (min(768, total) // 2) * 2
    wanted = total / video_fps * sampling_fps
    wanted = min(max(wanted, lowest), highest)
    count = round(wanted / 2) * 2  # Python round: half to even
    if count < 2 or count > total:
        return -1
    return count


def round_half_even(value):
    floor = math.floor(value)
    rest = value - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1):
        return floor + 1
    return floor


def linspace_exact(start, end, count):
    if count == 1:
        return [start]
    return [round_half_even(start + Fraction(end - start) * i / (count - 1)) for i in range(count)]


def f32(value):
    """Rounds a double to float32. One float32 operation done in double and rounded once is
    correctly rounded (53 >= 2 * 24 + 2), so this emulates C float arithmetic exactly."""
    return struct.unpack("f", struct.pack("f", value))[0]


def linspace_torch_float32(start, end, count):
    """torch.linspace(start, end, count) (default dtype float32) then .round(), from the
    algorithm of ATen's CPU kernel (RangeFactoriesKernel.cpp): step = (end - start) /
    (count - 1); element i < count // 2 is start + step * i, the rest end - step *
    (count - 1 - i). The vectorized loop (AVX2: 8 lanes, two vectors per turn, over the first
    count // 16 * 16 elements) computes a vector's base that way and lane j as base + j * step.
    """
    if count == 1:
        return [start]
    start_f, end_f = f32(start), f32(end)
    step = f32(f32(end_f - start_f) / f32(count - 1))
    halfway = count // 2

    def scalar(i):
        if i < halfway:
            return f32(start_f + f32(step * f32(i)))
        return f32(end_f - f32(step * f32(count - i - 1)))

    values = []
    vector_end = count // 16 * 16
    for base_index in range(0, vector_end, 8):
        base = scalar(base_index)
        values += [base] + [f32(base + f32(f32(j) * step)) for j in range(1, 8)]
    values += [scalar(i) for i in range(vector_end, count)]
    return [int(round(v)) for v in values]  # round(): half to even, like torch.round


# Below this frame index float32 error (half an ulp, 2**-10 here) stays under the smallest
# distance an exact value keeps from a .5 tie, 1 / (2 * (count - 1)) with count <= 384 frames
# a window can sample at these settings, so both computations must agree.
EXACT_BELOW = 1 << 13


def linspace_indices(start, end, count):
    torch_like = linspace_torch_float32(start, end, count)
    if end < EXACT_BELOW and torch_like != linspace_exact(start, end, count):
        raise SystemExit(f"float32 and exact linspace differ for {start}..{end} x{count}")
    return torch_like


FRAME_RATES = [24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 50.0, 60000 / 1001, 60.0, 1.0,
               5.0, 12.5, 120.0, 240.0]
TOTALS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 31, 60, 100, 127, 128, 255, 256, 257, 300, 383, 384,
          385, 511, 512, 513, 600, 639, 640, 641, 767, 768, 1000, 1200, 1799, 1800, 5000, 9000,
          27000, 54321, 108000]
PLAN_SETTINGS = [(256, 128, 2.0), (128, 64, 2.0), (256, 128, 1.0), (256, 128, 4.0),
                 (1000, 500, 2.0)]


def main():
    lines = []
    for video_fps in FRAME_RATES + [0.5, 1000.0]:
        for total in list(range(0, 40)) + [100, 256, 383, 767, 768, 769, 1536, 2000]:
            for sampling_fps in (2.0, 0.5, 30.0):
                lines.append(f"nframes {sampling_fps!r} {total} {video_fps!r} "
                             f"{smart_nframes(sampling_fps, total, video_fps) if total > 0 else -1}")
    for video_fps in FRAME_RATES:
        for total in TOTALS:
            settings = PLAN_SETTINGS
            if total > 10000 and video_fps not in (1.0, 30.0):
                settings = PLAN_SETTINGS[:1]  # long clips: enough to cover large indices
            for window_size, threshold, sampling_fps in settings:
                windows = compute_windows(total, window_size, threshold)
                parts = [f"plan {total} {window_size} {threshold} {video_fps!r} "
                         f"{sampling_fps!r} {len(windows)}"]
                for start, end in windows:
                    count = smart_nframes(sampling_fps, end - start + 1, video_fps)
                    indices = linspace_indices(start, end, count) if count > 0 else []
                    parts.append(f"{start} {end} {count} " + " ".join(map(str, indices)))
                lines.append(" ".join(p.strip() for p in parts))
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[1])), exist_ok=True)
    with open(sys.argv[1], "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
