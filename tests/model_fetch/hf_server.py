"""A local stand-in for the Hugging Face Hub, for the model fetch tests.

Usage: hf_server.py -- <test command...>

Serves one repository (the id of the qwen2.5 variant) at one commit whose sha starts with the
pinned short revision, speaking the endpoints clipcap uses:
  GET /api/models/{id}/revision/{rev}          -> {"id", "sha"}
  GET /api/models/{id}/tree/{sha}?recursive=1  -> entries, 3 per page, Link: rel="next"
  GET /{id}/resolve/{sha}/{path}               -> the file (LFS files: 302 to
                                                  http://localhost:<port>/cdn/<sha256>),
                                                  HTTP Range "bytes=N-" answered with 206
Test controls (JSON):
  POST /_control {"drop": {"path": P, "times": K}, "corrupt": P, "require_token": T}
       drop: the first K downloads of P send half the body, then close the connection
       corrupt: P is served with one byte flipped (its sha256 no longer matches the oid)
       require_token: every API and resolve request needs "Authorization: Bearer T" (else 401)
  POST /_reset   clears the controls and the log
  GET /_log      -> [{"method", "path", "range", "authorized"}] of every request since reset

Environment given to the test: CLIPCAP_TEST_HF_ENDPOINT, CLIPCAP_TEST_HF_DATA (a folder with
the repository's files and expected.json: model id, full sha, and each file's size and sha256
computed here with hashlib, plus the weights digest).
"""

import hashlib
import http.server
import json
import os
import random
import socketserver
import subprocess
import sys
import tempfile
import threading
import urllib.parse

MODEL_ID = "Qwen/Qwen2.5-VL-7B-Instruct"
SHORT_REVISION = "cc59489"
FULL_SHA = SHORT_REVISION + hashlib.sha1(b"clipcap fixture commit").hexdigest()[:33]
PAGE_SIZE = 3


def make_files():
    rng = random.Random(2024)
    files = {
        "config.json": json.dumps({"model_type": "qwen2_5_vl", "hidden_size": 3584}).encode(),
        "tokenizer_config.json": b'{"model_max_length": 32768}\n',
        "model-00001-of-00002.safetensors": rng.randbytes(3 * 1024 * 1024 + 17),
        "model-00002-of-00002.safetensors": rng.randbytes(1024 * 1024),
        "sub/dir/preprocessor_config.json": b'{"patch_size": 14}\n',
    }
    lfs = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    return files, lfs


FILES, LFS = make_files()


def git_blob_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def tree_entries():
    entries = [{"type": "directory", "oid": "0" * 40, "size": 0, "path": "sub"},
               {"type": "directory", "oid": "0" * 40, "size": 0, "path": "sub/dir"}]
    for path, data in sorted(FILES.items()):
        entry = {"type": "file", "path": path, "size": len(data)}
        if path in LFS:
            pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:"
                       f"{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n").encode()
            entry["oid"] = git_blob_oid(pointer)
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                            "pointerSize": len(pointer)}
        else:
            entry["oid"] = git_blob_oid(data)
        entries.append(entry)
    return entries


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.log = []
        self.drop = {}  # path -> remaining drops
        self.corrupt = None
        self.require_token = None


STATE = State()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status, body, content_type="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with STATE.lock:
            if self.path == "/_reset":
                STATE.reset()
            elif self.path == "/_control":
                if "drop" in body:
                    STATE.drop[body["drop"]["path"]] = body["drop"].get("times", 1)
                if "corrupt" in body:
                    STATE.corrupt = body["corrupt"]
                if "require_token" in body:
                    STATE.require_token = body["require_token"]
        self._reply(200, b"{}")

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = urllib.parse.parse_qs(url.query)
        if path == "/_log":
            with STATE.lock:
                body = json.dumps(STATE.log).encode()
            self._reply(200, body)
            return
        with STATE.lock:
            required = STATE.require_token
            STATE.log.append({"method": "GET", "path": path,
                              "range": self.headers.get("Range"),
                              "authorized": self.headers.get("Authorization") is not None})
        authorization = self.headers.get("Authorization")
        if required is not None and not path.startswith("/cdn/") and (
                authorization != f"Bearer {required}"):
            self._reply(401, b'{"error":"Invalid credentials"}')
            return
        api_prefix = f"/api/models/{MODEL_ID}/"
        resolve_prefix = f"/{MODEL_ID}/resolve/"
        if path.startswith(api_prefix + "revision/"):
            revision = path[len(api_prefix + "revision/"):]
            if revision == "main" or (len(revision) >= 7 and FULL_SHA.startswith(revision)):
                self._reply(200, json.dumps({"id": MODEL_ID, "sha": FULL_SHA}).encode())
            else:
                self._reply(404, b'{"error":"Revision Not Found"}')
        elif path.startswith(api_prefix + "tree/"):
            if path[len(api_prefix + "tree/"):] != FULL_SHA or query.get("recursive") != ["1"]:
                self._reply(404, b'{"error":"not found"}')
                return
            entries = tree_entries()
            start = int(query.get("cursor", ["0"])[0])
            page = entries[start:start + PAGE_SIZE]
            extra = []
            if start + PAGE_SIZE < len(entries):
                host = self.headers["Host"]
                next_url = (f"http://{host}{api_prefix}tree/{FULL_SHA}?recursive=1"
                            f"&cursor={start + PAGE_SIZE}")
                extra.append(("Link", f'<{next_url}>; rel="next"'))
            self._reply(200, json.dumps(page).encode(), extra=extra)
        elif path.startswith(resolve_prefix):
            sha, _, file_path = path[len(resolve_prefix):].partition("/")
            if sha != FULL_SHA or file_path not in FILES:
                self._reply(404, b'{"error":"Entry not found"}')
                return
            if file_path in LFS:
                # Like the Hub: LFS content comes from a CDN URL.
                digest = hashlib.sha256(FILES[file_path]).hexdigest()
                # On another host name, as the Hub's CDN is: the client must not send the
                # token there (the test checks the log's "authorized").
                port = self.server.server_address[1]
                location = (f"http://localhost:{port}/cdn/{digest}"
                            f"?file={urllib.parse.quote(file_path)}")
                self._reply(302, b"", extra=[("Location", location)])
                return
            self._serve_file(file_path)
        elif path.startswith("/cdn/"):
            self._serve_file(query["file"][0])
        else:
            self._reply(404, b'{"error":"unknown path"}')

    def _serve_file(self, file_path):
        data = FILES[file_path]
        with STATE.lock:
            if STATE.corrupt == file_path:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            drop = STATE.drop.get(file_path, 0) > 0
            if drop:
                STATE.drop[file_path] -= 1
        start = 0
        range_header = self.headers.get("Range")
        if range_header:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self._reply(416, b"", extra=[("Content-Range", f"bytes */{len(data)}")])
                return
        body = data[start:]
        self.send_response(206 if range_header else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if range_header:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if drop:
            # Half the promised body, then the connection goes away.
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def write_data(folder):
    expected = {"hf_model_id": MODEL_ID, "revision": FULL_SHA, "files": {}}
    lines = []
    for path, data in sorted(FILES.items()):
        target = os.path.join(folder, "files", path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
        sha256 = hashlib.sha256(data).hexdigest()
        expected["files"][path] = {"size": len(data), "sha256": sha256, "lfs": path in LFS}
        lines.append(f"{sha256}  {path}\n")
    expected["weights_sha256"] = hashlib.sha256("".join(lines).encode()).hexdigest()
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


def main():
    if "--" not in sys.argv:
        print(__doc__, file=sys.stderr)
        return 2
    command = sys.argv[sys.argv.index("--") + 1:]
    server = ThreadingServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="clipcap-hf-") as folder:
        write_data(folder)
        env = dict(os.environ)
        for name in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
            env.pop(name, None)
        env["CLIPCAP_TEST_HF_ENDPOINT"] = f"http://127.0.0.1:{server.server_address[1]}"
        env["CLIPCAP_TEST_HF_DATA"] = folder
        result = subprocess.run(command, env=env)
    server.shutdown()
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
