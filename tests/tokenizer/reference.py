#!/usr/bin/env python3
"""Runs Hugging Face `tokenizers` (the reference implementation) over the test corpus and writes
what the C tokenizer must reproduce. Run at test time by ctest (see CMakeLists.txt); nothing it
writes is committed.

Usage: reference.py QWEN_DIR CORPUS.json OUT_DIR

QWEN_DIR holds the real Qwen tokenizer.json and tokenizer_config.json. Besides the real
tokenizer, it writes variants of it that exercise the other paths of the C loader with the same
vocabulary and merges:
  added_flags  extra added tokens with lstrip / rstrip / single_word / normalized set
  gpt2_style   no normalizer, ByteLevel pre-tokenizer with its own regex and add_prefix_space
  nemo_style   no normalizer, a Mistral-Nemo-style Split regex (as Nemotron's tokenizer uses),
               ignore_merges
  split_removed  a literal Split on " " with behaviour Removed before Qwen's regex Split
For each variant OUT_DIR/<name>.json holds {"tokenizer": path, "cases": [{"text", "nfc", "ids",
"ids_plain" (special tokens as text), "decoded" (skip special), "decoded_all"}], "chat": [...]}.
"decode_only" holds id runs cut inside characters with their HF decodes; "token_ids" maps token
strings to HF's token_to_id (null: none). The chat cases (real Qwen only) render the chat template shipped in tokenizer_config.json with
jinja2 for [system, user] + generation prompt and encode the result.
"""
import json
import os
import sys
import unicodedata

import jinja2
import jinja2.sandbox
from tokenizers import Tokenizer

NEMO_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
              r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
              r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

ADDED_FLAG_TOKENS = [
    {"content": "<mask>", "lstrip": True, "rstrip": False, "single_word": False,
     "normalized": False, "special": True},
    {"content": "[R]", "lstrip": False, "rstrip": True, "single_word": False,
     "normalized": False, "special": False},
    {"content": "word", "lstrip": False, "rstrip": False, "single_word": True,
     "normalized": False, "special": False},
    {"content": unicodedata.normalize("NFD", "café!"), "lstrip": False, "rstrip": False,
     "single_word": False, "normalized": True, "special": False},
    {"content": "<both>", "lstrip": True, "rstrip": True, "single_word": False,
     "normalized": False, "special": True},
]
ADDED_FLAG_TEXTS = [
    "a <mask> b", "a   <mask>   b", "<mask>", "  <mask>", "x\n\n<mask>\n", "a[R]   b", "[R]",
    "[R]\n\nz", "word", "a word here", "swordfish", "words", "word_x", "_word", "wordword",
    "café! and café!", unicodedata.normalize("NFD", "café! twice café!"), "cafe\u0301!",
    " <both> ", "a  <both>  b<both>c", "<|im_end|> <mask> [R] word café!", "word\u00a0word",
    "\u3000<mask>\u3000", "<mask><mask>  <mask>", "x<both>\n\t<both>y",
]
CHAT_CASES = [
    {"system": "You are a helpful assistant.", "user_text": "Describe this video in detail.",
     "video_tokens": 5},
    {"system": "You are a helpful assistant.", "user_text": "", "video_tokens": 1},
    {"system": "You are a helpful assistant.",
     "user_text": "Caption the clip.\nFocus on motion; mention 2 or 3 objects. 视频中有什么？",
     "video_tokens": 64},
    {"system": "You are a helpful assistant.", "user_text": "\n leading newline and space",
     "video_tokens": 3},
    {"system": "Be terse.", "user_text": " Hello there\n\n", "video_tokens": 0},
    {"system": "\nodd system", "user_text": "no video, text only", "video_tokens": 0},
]


def variants(base):
    # Shallow copies with only the changed parts replaced: the vocabulary and merges (most of
    # the file) are shared, not copied.
    def variant(**changes):
        spec = dict(base)
        spec.update(changes)
        return spec

    next_id = max(t["id"] for t in base["added_tokens"]) + 1
    added_flags = variant(added_tokens=base["added_tokens"] + [
        dict(token, id=next_id + i) for i, token in enumerate(ADDED_FLAG_TOKENS)])
    gpt2 = variant(normalizer=None, pre_tokenizer={
        "type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True})
    qwen_split, byte_level = base["pre_tokenizer"]["pretokenizers"]
    nemo = variant(normalizer=None, model=dict(base["model"], ignore_merges=True),
                   pre_tokenizer={"type": "Sequence", "pretokenizers": [
                       dict(qwen_split, pattern={"Regex": NEMO_REGEX}), byte_level]})
    removed = variant(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": False},
        qwen_split, byte_level]})
    return {"qwen": base, "added_flags": added_flags, "gpt2_style": gpt2, "nemo_style": nemo,
            "split_removed": removed}


def render_chat(template, case):
    user = case["user_text"]
    if case["video_tokens"]:
        user = ("<|vision_start|>" + "<|video_pad|>" * case["video_tokens"] + "<|vision_end|>" +
                user)
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = json.dumps
    messages = [{"role": "system", "content": case["system"]}, {"role": "user", "content": user}]
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: reference.py QWEN_DIR CORPUS.json OUT_DIR")
    qwen_dir, corpus_path, out_dir = sys.argv[1:]
    if not os.path.isfile(os.path.join(qwen_dir, "tokenizer.json")):
        sys.exit(f"reference.py: no tokenizer.json in {qwen_dir} (tests/CMakeLists.txt "
                 "extracts it from tests/fixtures/qwen-tokenizer at configure time)")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(qwen_dir, "tokenizer.json"), encoding="utf-8") as f:
        base = json.load(f)
    with open(os.path.join(qwen_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        template = json.load(f)["chat_template"]
    with open(corpus_path, encoding="utf-8") as f:
        corpus = json.load(f)
    for name, spec in variants(base).items():
        path = os.path.join(out_dir, name + ".tokenizer.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(spec, ensure_ascii=False))  # dumps: the C encoder, much faster
        tokenizer = Tokenizer.from_file(path)
        # The real tokenizer gets the whole corpus; the variants (which share its vocabulary
        # and merges) the first 1,000 strings, which hold all the hand-picked ones.
        texts = corpus if name == "qwen" else corpus[:1000]
        texts = texts + (ADDED_FLAG_TEXTS if name == "added_flags" else [])
        ids = [encoding.ids for encoding in tokenizer.encode_batch(texts)]
        tokenizer.encode_special_tokens = True
        ids_plain = [encoding.ids for encoding in tokenizer.encode_batch(texts)]
        tokenizer.encode_special_tokens = False
        decoded = tokenizer.decode_batch(ids, skip_special_tokens=True)
        decoded_all = tokenizer.decode_batch(ids, skip_special_tokens=False)
        cases = [{"text": text, "nfc": unicodedata.is_normalized("NFC", text), "ids": ids[i],
                  "ids_plain": ids_plain[i], "decoded": decoded[i], "decoded_all": decoded_all[i]}
                 for i, text in enumerate(texts)]
        # Decoding arbitrary id runs: prefixes cut inside multi-byte characters give U+FFFD.
        decode_only = []
        for text in ["😀👨‍👩‍👧 中文", "é̂ ñ", "<|im_start|>日本<|im_end|>", "𓀀𓀁 🫨ꙮ"]:
            ids = tokenizer.encode(text).ids
            for cut in range(1, len(ids) + 1):
                for start in range(0, cut):
                    part = ids[start:cut]
                    decode_only.append({"ids": part,
                                        "decoded": tokenizer.decode(part, skip_special_tokens=True),
                                        "decoded_all": tokenizer.decode(part,
                                                                        skip_special_tokens=False)})
        token_ids = {}
        for token in ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>",
                      "<|vision_end|>", "<|video_pad|>", "<|image_pad|>", "<think>", "Ġthe",
                      "hello", "ĊĊ", "<mask>", "word", "no-such-token-here"]:
            token_ids[token] = tokenizer.token_to_id(token)
        chat = []
        if name == "qwen":
            for case in CHAT_CASES:
                rendered = render_chat(template, case)
                chat.append(dict(case, rendered=rendered, ids=tokenizer.encode(rendered).ids))
        with open(os.path.join(out_dir, name + ".json"), "w", encoding="utf-8") as f:
            f.write(json.dumps({"tokenizer": path, "cases": cases, "chat": chat,
                                "decode_only": decode_only, "token_ids": token_ids},
                               ensure_ascii=False))


if __name__ == "__main__":
    main()
