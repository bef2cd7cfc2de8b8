#!/usr/bin/env python3
"""Writes the starting seeds of the fuzz corpora (tests/fuzz/corpus/<target>/seed-*).

Standard library only; the output is deterministic. The committed corpora are these seeds
plus what libFuzzer runs added and `run.sh --merge` kept (files named by their SHA-1).
Usage: make_seeds.py [CORPUS_DIR]   (default: the corpus folder next to this script)
"""
import json
import os
import struct
import sys


def msgpack(value):
    """A minimal msgpack encoder (the types the job schema uses)."""
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, int):
        if 0 <= value < 128:
            return bytes([value])
        if -32 <= value < 0:
            return struct.pack("b", value)
        if 0 <= value < 1 << 32:
            return b"\xce" + struct.pack(">I", value)
        if 0 <= value < 1 << 64:
            return b"\xcf" + struct.pack(">Q", value)
        return b"\xd3" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        n = len(value)
        if n < 32:
            return bytes([0xA0 | n]) + value
        if n < 256:
            return b"\xd9" + bytes([n]) + value
        return b"\xda" + struct.pack(">H", n) + value
    if isinstance(value, list):
        n = len(value)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(msgpack(v) for v in value)
    if isinstance(value, dict):
        n = len(value)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(msgpack(k) + msgpack(v) for k, v in value.items())
    raise TypeError(type(value))


def job_messages():
    base = {"v": 1, "job_id": "job-1", "clip_uri": "s3://bucket/clips/a.mp4"}
    full = dict(base, clip_id="clip-1", span_start_s=1.5, span_end_s=9.0, model="nemotron-fp8",
                prompt_text="Describe the video.", stage2=True,
                stage2_prompt_text="Refine: ", sampling_fps=2.0, window_size=256,
                remainder_threshold=128, max_output_tokens=512, evs_pruning_rate=0.25)
    yield base
    yield full
    yield dict(base, prompt_variant="av", span_start_s=3)
    yield dict(base, model="qwen2.5", prompt_variant="av-surveillance", stage2=False,
               unknown_key=[1, 2, {"x": None}])
    yield dict(base, window_size=-5)
    yield [1, 2, 3]


def safetensors_file(tensors, metadata=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    sizes = {"F32": 4, "BF16": 2, "F16": 2, "I64": 8, "U8": 1, "F8_E4M3": 1, "BOOL": 1}
    for name, dtype, shape in tensors:
        count = 1
        for d in shape:
            count *= d
        n = count * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n]}
        data += bytes((i * 7) & 0xFF for i in range(n))
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_files():
    yield safetensors_file([("w", "F32", [2, 3])], {"format": "pt"})
    yield safetensors_file([("a.weight", "BF16", [4]), ("a.bias", "F16", [1, 2]),
                            ("ids", "I64", [3]), ("empty", "U8", [0, 5]),
                            ("scale", "F8_E4M3", [])])
    yield safetensors_file([])


NEMOTRON_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                                 "nemotron", "tiny")

QWEN_CONFIG = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
    "torch_dtype": "bfloat16", "hidden_size": 16, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 48,
    "vocab_size": 151665, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "hidden_act": "silu",
    "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}, "tie_word_embeddings": True,
    "eos_token_id": 151645, "bos_token_id": 151643,
    "vision_config": {"depth": 4, "hidden_size": 32, "num_heads": 2, "intermediate_size": 40,
                      "out_hidden_size": 16, "patch_size": 14, "temporal_patch_size": 2,
                      "spatial_merge_size": 2, "window_size": 112, "in_chans": 3,
                      "fullatt_block_indexes": [1, 3], "hidden_act": "silu",
                      "tokens_per_second": 2},
}


def model_configs():
    nested = {k: v for k, v in QWEN_CONFIG.items() if k in ("architectures", "model_type",
                                                             "vision_config")}
    nested["text_config"] = {k: v for k, v in QWEN_CONFIG.items() if k not in nested}
    nested["text_config"]["rope_parameters"] = nested["text_config"].pop("rope_scaling")
    generation = {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "do_sample": True,
                  "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
                  "max_new_tokens": 512}
    quant = {"producer": {"name": "modelopt"},
             "quantization": {"quant_algo": "NVFP4", "group_size": 16,
                              "kv_cache_quant_algo": "FP8",
                              "exclude_modules": ["lm_head", "visual*", "*.mlp.gate"]}}
    fp8 = dict(QWEN_CONFIG, quantization_config={"quant_algo": "FP8", "ignore": ["lm_head"]})
    dump = lambda v: json.dumps(v, indent=1).encode()
    yield dump(QWEN_CONFIG)
    yield dump(nested) + b"\0" + dump(generation)
    yield dump(QWEN_CONFIG) + b"\0" + dump(generation) + b"\0" + dump(quant)
    yield dump(fp8)
    # The tiny Nemotron VL checkpoints' JSON files (tests/fixtures), as they are.
    for variant in ("bf16", "fp8", "nvfp4"):
        folder = os.path.join(NEMOTRON_FIXTURES, "checkpoint-" + variant)
        if not os.path.isdir(folder):
            continue
        parts = []
        for name in ("config.json", "generation_config.json", "hf_quant_config.json"):
            path = os.path.join(folder, name)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    parts.append(f.read())
        yield b"\0".join(parts)
    # Override mode (fuzz_model_config.c): 0x01, a base number, records of (key number, 16-bit
    # mantissa LE, shift byte with the sign in bit 7). Keys 18 vision_config.patch_size,
    # 31 llm_config.mamba_num_heads, 39 patch_size; the values are the bases' own.
    override = lambda key, value: bytes([key]) + struct.pack("<HB", value, 0)
    yield b"\x01\x00" + override(18, 14)
    yield b"\x01\x01" + override(18, 14)
    yield b"\x01\x02" + override(31, 4) + override(39, 16)


def model_config_bases():
    """The base config.json files of fuzz_model_config's override mode."""
    nested = {k: v for k, v in QWEN_CONFIG.items() if k in ("architectures", "model_type",
                                                             "vision_config")}
    nested["text_config"] = {k: v for k, v in QWEN_CONFIG.items() if k not in nested}
    nested["text_config"]["rope_parameters"] = nested["text_config"].pop("rope_scaling")
    yield "qwen2_5_vl.json", QWEN_CONFIG
    yield "qwen2_5_vl_nested.json", nested
    with open(os.path.join(NEMOTRON_FIXTURES, "checkpoint-bf16", "config.json")) as f:
        yield "nemotron_vl.json", json.load(f)


def byte_level_vocab():
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or b >= 174]
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return {chars[b]: b for b in range(256)}, chars


def tokenizers():
    vocab, chars = byte_level_vocab()
    space = chars[ord(" ")]
    merges = ["a b", "ab ab", space + " a", "e \u0301".replace("\u0301", chars[0xCC] + chars[0x81])]
    merged = ["ab", "abab", space + "a", "e" + chars[0xCC] + chars[0x81]]
    for i, token in enumerate(merged):
        vocab[token] = 256 + i
    added = [{"id": 300, "content": "<|im_end|>", "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True},
             {"id": 301, "content": "<|im_start|>", "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True},
             {"id": 302, "content": " hi", "single_word": True, "lstrip": True,
              "rstrip": True, "normalized": True, "special": False}]
    regex = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}"
             "\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
    qwen_style = {
        "version": "1.0", "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                           "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    gpt2_style = dict(qwen_style, normalizer=None, added_tokens=added[:1],
                      pre_tokenizer={"type": "ByteLevel", "add_prefix_space": True,
                                     "trim_offsets": True, "use_regex": True})
    gpt2_style["model"] = dict(qwen_style["model"], merges=[m.split(" ") for m in merges],
                               ignore_merges=True)
    removed = dict(qwen_style, normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}]},
                   pre_tokenizer={"type": "Sequence", "pretokenizers": [
                       {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed",
                        "invert": False},
                       {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                        "use_regex": False}]})
    for t in (qwen_style, gpt2_style, removed):
        yield json.dumps(t, ensure_ascii=False).encode()


def tokenizer_texts():
    yield b"The video shows a red car turning left at an intersection."
    yield "caf\u00e9 e\u0301 \u4e2d\u6587 \U0001F600  \t\n\n  it's 1234567".encode()
    yield b"<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Hi<|im_end|>\n"
    yield b"ok \xe0\x80\x80 \xff"
    yield b"   \r\n\r\n\x00 a\x00"


def ini_files():
    yield b"""[kafka]
brokers = localhost:9092
group = clipcap
topic = clipcap.jobs

[librdkafka]
security.protocol = sasl_ssl
sasl.password = hunter2

[postgres]
url = postgresql://user:pw@db/clipcap
migrate_on_start = yes

[engine]
threads = 2
memory_budget_mb = 8192
random_seed = -9223372036854775808

[media]
max_duration_seconds = 7200.5
"""
    yield b"[engine]\nthreads = 99999999999\n"
    yield b"[nosuch]\nkey=1\n; comment\n"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "corpus")
    sets = {
        "job_message": (msgpack(m) for m in job_messages()),
        "safetensors": safetensors_files(),
        "model_config": model_configs(),
        "tokenizer_load": tokenizers(),
        "tokenizer_encode": tokenizer_texts(),
        "daemon_config": ini_files(),
    }
    bases = os.path.join(os.path.dirname(os.path.abspath(root)), "model_config_bases")
    os.makedirs(bases, exist_ok=True)
    for name, config in model_config_bases():
        with open(os.path.join(bases, name), "w") as f:
            json.dump(config, f, indent=1)
            f.write("\n")
    for target, seeds in sets.items():
        folder = os.path.join(root, target)
        os.makedirs(folder, exist_ok=True)
        for i, seed in enumerate(seeds):
            with open(os.path.join(folder, "seed-%02d" % i), "wb") as f:
                f.write(seed)


if __name__ == "__main__":
    main()
