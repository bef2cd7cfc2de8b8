#!/usr/bin/env python3
"""Encode speed of Hugging Face `tokenizers` on the corpus, single-threaded; the reference
figure for bench/tokenizer_bench.c (see docs/tokenizer.md).

Usage: RAYON_NUM_THREADS=1 RAYON_RS_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
           tokenizer_bench.py TOKENIZER.json CORPUS.json [REPEATS]
Reports Tokenizer.encode called per line (what a caller does) and encode_batch over the whole
corpus (the Rust code without per-call Python overhead; one thread with RAYON_NUM_THREADS=1).
Times are CPU seconds of the process (less disturbed than wall time on a shared machine; with
more than one thread, encode_batch's CPU time would add up the threads).
"""
import json
import statistics
import sys
import time

from tokenizers import Tokenizer


def main():
    path, corpus_path = sys.argv[1], sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    with open(corpus_path, encoding="utf-8") as f:
        corpus = json.load(f)
    start = time.process_time()
    tokenizer = Tokenizer.from_file(path)
    print(f"load: {time.process_time() - start:.3f} s")
    size = sum(len(line.encode("utf-8")) for line in corpus)
    per_line, batch = [], []
    for r in range(repeats):
        start = time.process_time()
        tokens = 0
        for line in corpus:
            tokens += len(tokenizer.encode(line).ids)
        seconds = time.process_time() - start
        per_line.append(seconds)
        print(f"encode pass {r + 1}: {len(corpus)} lines, {size} bytes in {seconds:.4f} s: "
              f"{size / seconds / 1e6:.2f} MB/s, {len(corpus) / seconds:.0f} lines/s")
    for r in range(repeats):
        start = time.process_time()
        tokenizer.encode_batch(corpus)
        seconds = time.process_time() - start
        batch.append(seconds)
        print(f"encode_batch pass {r + 1}: {seconds:.4f} s: {size / seconds / 1e6:.2f} MB/s")
    print(f"tokens per pass: {tokens}")
    for name, runs in (("encode per line", per_line), ("encode_batch", batch)):
        median = statistics.median(runs)
        print(f"median {name}: {median:.4f} s: {size / median / 1e6:.2f} MB/s, "
              f"{len(corpus) / median:.0f} lines/s")


if __name__ == "__main__":
    main()
