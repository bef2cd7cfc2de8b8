#!/usr/bin/env python3
"""transformers baseline for bench/run_gpu.sh: the same workloads as caption_bench.

Qwen2_5_VLForConditionalGeneration (sdpa, bf16) built from the same config.json with random
weights; every clip is 20 frames of 1008x560 (video grid 10x40x72 = 28,800 patches, 7,200
merged video tokens) behind the same chat prompt, and generate() is forced to exactly
--tokens new tokens (min_new_tokens). W2 adds stage 2 the way a transformers user runs it: a
second generate() over the video prompt with "Please refine this caption: " + the stage-1
caption (transformers keeps no prefix cache across calls, so the video is prefilled again).

For each batch size it runs one untimed warm-up batch, then --batches timed batches, and
prints a "result" line per batch size in caption_bench's format; the best batch size is what
run_gpu.sh compares against.
"""
import argparse
import json
import os
import sys
import time

import torch
from tokenizers import Tokenizer
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

# NeMo Curator's default caption prompt (daemon/prompts.c), character for character.
PROMPT = "\n        Elaborate on the visual and narrative elements of the video in detail.\n    "
STAGE2 = "Please refine this caption: "


def chat(user_text, video_tokens):
    return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "<|vision_start|>" + "<|video_pad|>" * video_tokens + "<|vision_end|>" + user_text +
            "<|im_end|>\n<|im_start|>assistant\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="directory with config.json, tokenizer.json")
    parser.add_argument("--batch-sizes", default="8,16")
    parser.add_argument("--batches", type=int, default=1)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--width", type=int, default=1008)
    parser.add_argument("--height", type=int, default=560)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--stage2", action="store_true")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = Qwen2_5_VLConfig.from_pretrained(args.model)
    started = time.time()
    with torch.device(args.device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    open_seconds = time.time() - started
    tokenizer = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))

    vision = config.vision_config
    patch, merge, temporal = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
    grid = (args.frames // temporal, args.height // patch, args.width // patch)
    patches = grid[0] * grid[1] * grid[2]
    video_tokens = patches // (merge * merge)
    patch_dim = 3 * temporal * patch * patch
    ids1 = tokenizer.encode(chat(PROMPT, video_tokens), add_special_tokens=False).ids
    print(f"transformers: {len(ids1)} prompt tokens/clip, video grid {grid}, "
          f"{video_tokens} video tokens", flush=True)

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def generate(batch, prompt_ids, pixels):
        input_ids = torch.tensor([prompt_ids] * batch, device=args.device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                pixel_values_videos=pixels,
                video_grid_thw=torch.tensor([grid] * batch, device=args.device),
                second_per_grid_ts=torch.tensor([1.0] * batch, device=args.device),
                max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False)
        return out[:, input_ids.shape[1]:]

    def run_batch(batch):
        pixels = torch.randn(batch * patches, patch_dim, device=args.device, dtype=torch.bfloat16)
        sync()
        t0 = time.time()
        new = generate(batch, ids1, pixels)
        sync()
        prompt_tokens, output_tokens = batch * len(ids1), new.numel()
        if args.stage2:
            # The first clip's caption stands for every clip of the batch: one prompt length,
            # no padding, the same work (every caption is exactly --tokens tokens).
            caption = tokenizer.decode(new[0].tolist(), skip_special_tokens=True)
            ids2 = tokenizer.encode(chat(STAGE2 + caption, video_tokens),
                                    add_special_tokens=False).ids
            new2 = generate(batch, ids2, pixels)
            sync()
            prompt_tokens += batch * len(ids2)
            output_tokens += new2.numel()
        return time.time() - t0, prompt_tokens, output_tokens

    def ttft(batch):
        """Time of a generate() of one token: the batch's prefill (vision tower + LLM)."""
        pixels = torch.randn(batch * patches, patch_dim, device=args.device, dtype=torch.bfloat16)
        sync()
        t0 = time.time()
        input_ids = torch.tensor([ids1] * batch, device=args.device)
        with torch.inference_mode():
            model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                           pixel_values_videos=pixels,
                           video_grid_thw=torch.tensor([grid] * batch, device=args.device),
                           second_per_grid_ts=torch.tensor([1.0] * batch, device=args.device),
                           max_new_tokens=1, min_new_tokens=1, do_sample=False)
        sync()
        return time.time() - t0

    workload = "W2" if args.stage2 else "W1"
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        try:
            run_batch(batch)  # warm-up (kernels, allocator)
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = prompt_tokens = output_tokens = 0
            for _ in range(args.batches):
                s, p, o = run_batch(batch)
                seconds += s
                prompt_tokens += p
                output_tokens += o
            first = ttft(batch)
        except torch.OutOfMemoryError:
            print(f"transformers {workload}: batch {batch} does not fit", flush=True)
            torch.cuda.empty_cache()
            continue
        clips = batch * args.batches
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else 0
        # Decode throughput excludes the prefill (ttft per batch, twice for W2).
        prefill_seconds = first * args.batches * (2 if args.stage2 else 1)
        decode_seconds = max(seconds - prefill_seconds, 1e-9)
        print(f"result engine=transformers backend=cuda workload={workload} clips={clips} "
              f"failed=0 batch={batch} frames={args.frames} size={args.width}x{args.height} "
              f"tokens={args.tokens} seconds={seconds:.3f} clips_per_s={clips / seconds:.3f} "
              f"prefill_tokens={prompt_tokens} prefill_tokens_per_s={prompt_tokens / seconds:.0f} "
              f"decode_tokens={output_tokens} decode_tokens_per_s={output_tokens / seconds:.0f} "
              f"decode_only_tokens_per_s={output_tokens / decode_seconds:.0f} "
              f"ttft_batch_s={first:.3f} torch_peak_gib={peak:.1f} open_s={open_seconds:.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
