"""Starts the servers the object store tests talk to, runs the test binary, stops them.

Usage: objstore_servers.py -- <test command...>

1. moto's S3 server (PyPI moto[server]) on a loopback port, with request authentication on:
   the setup below runs unauthenticated (moto's INITIAL_NO_AUTH_ACTION_COUNT defaults to
   infinite), creates an IAM user with an access key and an s3:* policy, a bucket and its
   objects, then POSTs 0 to /moto-api/reset-auth so every later request must carry a valid
   SigV4 signature. moto recomputes the signature with botocore's S3SigV4Auth from the
   request's signed headers and the stored secret, and answers 403 SignatureDoesNotMatch when
   they differ (moto/iam/access_control.py, IAMRequestBase.check_signature); the test
   "objstore_s3_wrong_secret" shows it does.
2. Our own HTTP fixture (below) for what S3 servers do not do on demand: 5xx then success,
   a stalled body, a body without Content-Length that never ends, and a byte count per stream.

Environment given to the test: CLIPCAP_TEST_S3_ENDPOINT, CLIPCAP_TEST_S3_REGION,
CLIPCAP_TEST_S3_BUCKET, CLIPCAP_TEST_S3_KEY_ID, CLIPCAP_TEST_S3_SECRET, CLIPCAP_TEST_HTTP_URL,
CLIPCAP_TEST_DATA_DIR (the objects' expected bytes, one file per key).
"""

import http.server
import os
import random
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REGION = "us-east-1"
BUCKET = "clipcap-clips"
# key -> size; content is seeded random bytes (also written to the data dir for comparison)
OBJECTS = {
    "clips/clip-0001.mp4": 300_000,
    "clips/big.mp4": 6 * 1024 * 1024,
    "clips/empty.mp4": 0,
}


class FixtureState:
    def __init__(self):
        self.lock = threading.Lock()
        self.hits = {}  # name -> requests seen
        self.sent = {}  # name -> body bytes successfully written


STATE = FixtureState()
CHUNK = random.Random(7).randbytes(65536)


class FixtureHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse can be observed

    def log_message(self, *args):
        pass

    def _reply(self, status, body, extra=()):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        parts = self.path.split("?", 1)
        path = parts[0]
        query = dict(p.split("=", 1) for p in parts[1].split("&")) if len(parts) > 1 else {}
        segments = path.strip("/").split("/")
        kind, name = segments[0], "/".join(segments[1:])
        with STATE.lock:
            STATE.hits[name] = STATE.hits.get(name, 0) + 1
            hit = STATE.hits[name]
        if kind == "object":
            # /object/<name>?size=N: N deterministic bytes
            size = int(query.get("size", "1000"))
            self._reply(200, (CHUNK * (size // len(CHUNK) + 1))[:size])
        elif kind == "flaky":
            # /flaky/<name>?fail=K&status=S: status S for the first K requests, then 200
            if hit <= int(query.get("fail", "2")):
                self._reply(int(query.get("status", "503")), b"<Error><Code>SlowDown</Code></Error>")
            else:
                self._reply(200, CHUNK[:5000])
        elif kind == "status":
            # /status/<name>?code=C
            self._reply(int(query.get("code", "404")), b"no")
        elif kind == "stall":
            # /stall/<name>: promises 1 MB, sends 100 bytes, then stops sending
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(CHUNK[:100])
            self.wfile.flush()
            time.sleep(30)
            self.close_connection = True
        elif kind == "endless":
            # /endless/<name>: HTTP/1.0-style body with no Content-Length, up to 1 GiB
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            sent = 0
            try:
                while sent < (1 << 30):
                    self.wfile.write(CHUNK)
                    sent += len(CHUNK)
                    with STATE.lock:
                        STATE.sent[name] = sent
            except OSError:
                pass
            self.close_connection = True
        elif kind == "sigv4":
            # /sigv4/<bucket>/<key>: the S3 endpoint "<fixture>/sigv4", verifying the request
            # with botocore's own S3 signer over the raw (once-encoded) path, the way AWS does.
            # moto cannot check keys that need percent-encoding: it re-signs a decoded path.
            ok, why = verify_sigv4(self)
            self._reply(200 if ok else 403, self.path.encode() if ok else why.encode())
        elif kind == "sent":
            # /sent/<name>: bytes the endless stream <name> managed to write, as text
            time.sleep(0.2)  # let the writer notice the closed connection
            with STATE.lock:
                value = STATE.sent.get(name, 0)
            self._reply(200, str(value).encode())
        elif kind == "hits":
            with STATE.lock:
                value = STATE.hits.get(name, 0) - 1  # not counting this request
            self._reply(200, str(value).encode())
        else:
            self._reply(404, b"unknown fixture path")


FIXTURE_KEY_ID = "AKIAFIXTUREKEY000001"
FIXTURE_TEMP_KEY_ID = "ASIAFIXTUREKEY000002"
FIXTURE_SECRET = "fixture/secret+key/that/is/forty/chars00"
FIXTURE_SESSION_TOKEN = "FwoGZXIvYXdzEFixtureSessionToken/+=="


def verify_sigv4(handler):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    authorization = handler.headers.get("Authorization", "")
    fields = dict(item.strip().split("=", 1) for item in
                  authorization.removeprefix("AWS4-HMAC-SHA256 ").split(","))
    key_id, _, region, service, _ = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    if "x-amz-content-sha256" not in signed:
        return False, "x-amz-content-sha256 not signed"
    token = None
    if key_id == FIXTURE_TEMP_KEY_ID:
        if "x-amz-security-token" not in signed:
            return False, "x-amz-security-token not signed"
        if handler.headers.get("x-amz-security-token") != FIXTURE_SESSION_TOKEN:
            return False, "wrong session token"
        token = FIXTURE_SESSION_TOKEN
    elif key_id != FIXTURE_KEY_ID:
        return False, "unknown key id"
    headers = {name: handler.headers[name] for name in signed}
    request = AWSRequest(method="GET", url="http://" + handler.headers["Host"] + handler.path,
                         data=b"", headers=headers)
    request.context["timestamp"] = handler.headers["X-Amz-Date"]
    auth = S3SigV4Auth(Credentials(key_id, FIXTURE_SECRET, token), service, region)
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    return expected == fields["Signature"], "SignatureDoesNotMatch"


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def object_bytes(key, size):
    return random.Random(key).randbytes(size)


def setup_s3(endpoint, data_dir):
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="setup", aws_secret_access_key="setup", region_name=REGION)
    iam = session.client("iam", endpoint_url=endpoint)
    iam.create_user(UserName="clipcap-fetcher")
    iam.put_user_policy(
        UserName="clipcap-fetcher", PolicyName="read-clips",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
        '"Action":"s3:*","Resource":"*"}]}')
    key = iam.create_access_key(UserName="clipcap-fetcher")["AccessKey"]
    s3 = session.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for name, size in OBJECTS.items():
        body = object_bytes(name, size)
        s3.put_object(Bucket=BUCKET, Key=name, Body=body)
        path = os.path.join(data_dir, name.replace("/", "_"))
        with open(path, "wb") as f:
            f.write(body)
    # From here on every request must be signed with a known key.
    request = urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request).read()
    return key["AccessKeyId"], key["SecretAccessKey"]


def main():
    if "--" not in sys.argv:
        print(__doc__, file=sys.stderr)
        return 2
    command = sys.argv[sys.argv.index("--") + 1:]
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request lines

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    fixture = ThreadingServer(("127.0.0.1", 0), FixtureHandler)
    threading.Thread(target=fixture.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="clipcap-objstore-") as data_dir:
        key_id, secret = setup_s3(endpoint, data_dir)
        env = dict(os.environ)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                     "AWS_ENDPOINT_URL_S3"):
            env.pop(name, None)
        env.update({
            "CLIPCAP_TEST_S3_ENDPOINT": endpoint,
            "CLIPCAP_TEST_S3_REGION": REGION,
            "CLIPCAP_TEST_S3_BUCKET": BUCKET,
            "CLIPCAP_TEST_S3_KEY_ID": key_id,
            "CLIPCAP_TEST_S3_SECRET": secret,
            "CLIPCAP_TEST_HTTP_URL": f"http://127.0.0.1:{fixture.server_address[1]}",
            "CLIPCAP_TEST_DATA_DIR": data_dir,
        })
        result = subprocess.run(command, env=env)
    fixture.shutdown()
    moto.stop()
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
