"""Writes the raw Kafka payloads of the bad-input test: bytes that `clipcap enqueue` (which
packs JSON lines) cannot produce. One file per case, named CASE.bin, in DIR.

Usage: bad_input_payloads.py DIR CLIP_URI

Every one must end as a failed job with cause `schema` (docs/message-schema.md lists what is
rejected). CLIP_URI is a clip that exists, so a payload the daemon wrongly accepted would be
caught completing instead.
"""

import os
import sys

import msgpack


def main():
    out, clip_uri = sys.argv[1], sys.argv[2]
    def job(name, **fields):
        # job_id is the case name, so the job is found whether or not the decoder got as far
        # as reading it (else it falls back to the Kafka key, also the case name).
        message = {"v": 1, "job_id": name, "clip_uri": clip_uri}
        message.update(fields)
        return msgpack.packb(message)

    payloads = {
        # Not msgpack: 0xc1 is the one byte msgpack never uses.
        "raw_not_msgpack": b"\xc1\xc1\xc1\xc1",
        # JSON text sent where msgpack belongs ('{' is a positive fixint, then trailing bytes).
        "raw_json_text": b'{"v":1,"job_id":"raw_json_text","clip_uri":"' + clip_uri.encode()
        + b'"}',
        "raw_empty": b"",
        # A map cut off half way.
        "raw_truncated_map": job("raw_truncated_map")[:-7],
        # map32 declaring 4 billion entries, holding none.
        "raw_declares_more": b"\xdf\xff\xff\xff\xff",
        # array32 nested 200,000 deep (msgpack-c's parse stack is 32).
        "raw_deep_nesting": b"\x91" * 200_000 + b"\xc0",
        # A valid job followed by one more byte.
        "raw_trailing_bytes": job("raw_trailing_bytes") + b"\xc0",
        "raw_array": msgpack.packb([1, "raw_array", clip_uri]),
        # Over the 256 KiB payload limit: a valid job with a 300 KiB unknown key.
        "raw_oversized": job("raw_oversized", padding="p" * (300 * 1024)),
        # job_id as bin, not str; then as invalid UTF-8; then with a NUL; then 300 bytes.
        "raw_bin_job_id": msgpack.packb({"v": 1, "job_id": b"raw_bin_job_id",
                                         "clip_uri": clip_uri}, use_bin_type=True),
        # A str whose bytes are not UTF-8 (packed by hand: msgpack.packb would refuse).
        "raw_invalid_utf8_job_id": b"\x83" + msgpack.packb("v") + msgpack.packb(1)
        + msgpack.packb("job_id") + b"\xa5\xff\xfejob" + msgpack.packb("clip_uri")
        + msgpack.packb(clip_uri),
        "raw_nul_in_clip_uri": job("raw_nul_in_clip_uri", clip_uri=clip_uri + "\x00.mp4"),
        "raw_long_job_id": job("raw_long_job_id", job_id="j" * 300),
        "raw_missing_job_id": msgpack.packb({"v": 1, "clip_uri": clip_uri}),
        "raw_nil_job_id": job("raw_nil_job_id", job_id=None),
        # Sent without a Kafka key: the job is named after its coordinates.
        "raw_no_key": b"\x00\x01\x02 not a job \xff",
    }
    for name, payload in payloads.items():
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(payload)


if __name__ == "__main__":
    main()
