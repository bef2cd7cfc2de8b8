#!/usr/bin/env python3
"""Encode speed of Hugging Face `tokenizers` on the corpus, single-threaded; the reference
figure for bench/tokenizer_bench.c (see docs/tokenizer.md).

Usage: RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
           tokenizer_bench.py TOKENIZER.json CORPUS.json [REPEATS]
Reports Tokenizer.encode called per line (what a caller does) and encode_batch over the whole
corpus (the Rust code without per-call Python overhead; one thread with RAYON_NUM_THREADS=1).
"""
import json
import sys
import time

from tokenizers import Tokenizer


def main():
    path, corpus_path = sys.argv[1], sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    with open(corpus_path, encoding="utf-8") as f:
        corpus = json.load(f)
    start = time.perf_counter()
    tokenizer = Tokenizer.from_file(path)
    print(f"load: {time.perf_counter() - start:.3f} s")
    size = sum(len(line.encode("utf-8")) for line in corpus)
    for r in range(repeats):
        start = time.perf_counter()
        tokens = 0
        for line in corpus:
            tokens += len(tokenizer.encode(line).ids)
        seconds = time.perf_counter() - start
        print(f"encode pass {r + 1}: {len(corpus)} lines, {size} bytes in {seconds:.4f} s: "
              f"{size / seconds / 1e6:.2f} MB/s, {len(corpus) / seconds:.0f} lines/s")
    for r in range(repeats):
        start = time.perf_counter()
        tokenizer.encode_batch(corpus)
        seconds = time.perf_counter() - start
        print(f"encode_batch pass {r + 1}: {seconds:.4f} s: {size / seconds / 1e6:.2f} MB/s")
    print(f"tokens per pass: {tokens}")


if __name__ == "__main__":
    main()
