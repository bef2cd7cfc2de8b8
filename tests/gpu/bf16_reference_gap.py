#!/usr/bin/env python3
"""How far transformers' own bf16 run is from the fp32 reference the fixtures hold.

The Qwen2.5-VL fixtures' logits_last come from transformers in fp32 on bf16-rounded weights.
This runs the same model and inputs in bf16 (what a bf16 deployment computes) and prints
max |logits_bf16 - logits_fp32| per fixture stage, next to the largest |logit| and one bf16
ulp of it: the scale a bf16 engine's logits differ by (tests/gpu/results/ records it).

Usage: bf16_reference_gap.py [tests/fixtures/qwen2_5_vl]   (CPU is enough; needs torch,
transformers and safetensors, e.g. the fixtures' venv)
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import Qwen2_5_VLForConditionalGeneration


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/qwen2_5_vl"
    for case in sorted(os.listdir(root)):
        folder = os.path.join(root, case)
        if not os.path.isfile(os.path.join(folder, "fixture.json")):
            continue
        fixture = json.load(open(os.path.join(folder, "fixture.json")))
        pre = load_file(os.path.join(folder, "preprocess.safetensors"))
        for dtype in (torch.bfloat16,):
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                os.path.join(folder, "checkpoint"), dtype=dtype,
                attn_implementation="eager").eval()
            for stage in fixture["stages"]:
                data = load_file(os.path.join(folder, stage + ".safetensors"))
                ids = data["input_ids"].view(1, -1)
                with torch.no_grad():
                    out = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                pixel_values_videos=pre["pixel_values_videos"].to(dtype),
                                video_grid_thw=pre["video_grid_thw"],
                                second_per_grid_ts=torch.tensor(
                                    fixture["video"]["second_per_grid_ts"]),
                                use_cache=False)
                logits = out.logits[0, -1].float()
                reference = data["logits_last"]
                gap = float((logits - reference).abs().max())
                top = float(reference.abs().max())
                ulp = 2.0 ** (math.floor(math.log2(top)) - 7)
                same = int(logits.argmax()) == int(reference.argmax())
                print(f"{case} {stage}: transformers bf16 vs fp32 logits max|diff| {gap:.4f} "
                      f"(max|logit| {top:.1f}, one bf16 ulp there {ulp:.4f}); argmax "
                      f"{'same' if same else 'differs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
