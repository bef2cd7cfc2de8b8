"""Object servers for the bad-input test (bad_input_test.sh), on loopback ports, until killed.

Usage: bad_input_servers.py --clips DIR --env-file FILE

1. moto's S3 server (PyPI moto[server]) with request authentication on, set up the way
   tests/storage_objstore/objstore_servers.py does it: unauthenticated setup creates an IAM
   user whose policy allows all of S3 but one bucket, the buckets and their objects, then
   POSTs 0 to /moto-api/reset-auth so every later request needs a valid SigV4 signature.
   Buckets: "clipcap-clips" (readable; clips/good.mp4 is DIR/good.mp4) and "clipcap-private"
   (exists, holds the same object, but the user's policy denies it).
2. An HTTP server for what an S3 server does not do on demand:
   /file/NAME        DIR/NAME with its Content-Length
   /status/CODE      always answers CODE (404, 403, 500, 418, ...)
   /stall            promises 1 MB, sends 100 bytes, then sends nothing for 60 s
   /endless          a body without Content-Length that does not end (up to 1 GiB)
   /declared-large   declares 100 MB and sends them slowly
   /redirect/PATH    302 to /PATH here (/redirect/redirect/... chains; /redirect/file points
                     at file:///etc/passwd)
   /hits/PATH        how many requests PATH got so far (not counting this one), as text

When both are up, FILE is written as shell assignments: BAD_INPUT_HTTP_URL,
BAD_INPUT_S3_ENDPOINT, BAD_INPUT_S3_KEY_ID, BAD_INPUT_S3_SECRET.
"""

import argparse
import http.server
import logging
import os
import shlex
import socketserver
import threading
import time
import urllib.request

CHUNK = bytes(range(256)) * 256  # 64 KiB

HITS = {}
HITS_LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    clips_dir = "."

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if not path.startswith("/hits/"):
            with HITS_LOCK:
                HITS[path] = HITS.get(path, 0) + 1
        kind, _, rest = path.lstrip("/").partition("/")
        try:
            if kind == "file":
                name = os.path.basename(rest)
                try:
                    with open(os.path.join(self.clips_dir, name), "rb") as f:
                        body = f.read()
                except OSError:
                    self.reply(404, b"no such file")
                    return
                self.reply(200, body)
            elif kind == "status":
                self.reply(int(rest), b"<Error><Code>Fixture</Code></Error>")
            elif kind == "stall":
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                self.wfile.write(CHUNK[:100])
                self.wfile.flush()
                time.sleep(60)
                self.close_connection = True
            elif kind == "endless":
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                for _ in range(1 << 14):
                    self.wfile.write(CHUNK)
                self.close_connection = True
            elif kind == "declared-large":
                self.send_response(200)
                self.send_header("Content-Length", str(100 * 1024 * 1024))
                self.end_headers()
                for _ in range(1600):
                    self.wfile.write(CHUNK)
                    time.sleep(0.01)
                self.close_connection = True
            elif kind == "redirect":
                # /redirect/PATH: 302 to /PATH on this server; /redirect/file: to file://
                location = "file:///etc/passwd" if rest == "file" else "/" + rest
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif kind == "hits":
                with HITS_LOCK:
                    value = HITS.get("/" + rest, 0)
                self.reply(200, str(value).encode())
            else:
                self.reply(404, b"unknown fixture path")
        except OSError:
            # The client gave up (a cap or a timeout did its job).
            self.close_connection = True


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def setup_s3(endpoint, clips_dir):
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1")
    iam = session.client("iam", endpoint_url=endpoint)
    iam.create_user(UserName="clipcap-fetcher")
    iam.put_user_policy(
        UserName="clipcap-fetcher", PolicyName="read-clips",
        PolicyDocument='{"Version":"2012-10-17","Statement":['
        '{"Effect":"Allow","Action":"s3:*","Resource":"*"},'
        '{"Effect":"Deny","Action":"s3:*","Resource":["arn:aws:s3:::clipcap-private",'
        '"arn:aws:s3:::clipcap-private/*"]}]}')
    key = iam.create_access_key(UserName="clipcap-fetcher")["AccessKey"]
    s3 = session.client("s3", endpoint_url=endpoint)
    with open(os.path.join(clips_dir, "good.mp4"), "rb") as f:
        body = f.read()
    for bucket in ("clipcap-clips", "clipcap-private"):
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="clips/good.mp4", Body=body)
    request = urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request).read()
    return key["AccessKeyId"], key["SecretAccessKey"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", required=True)
    parser.add_argument("--env-file", required=True)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    Handler.clips_dir = args.clips
    fixture = ThreadingServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=fixture.serve_forever, daemon=True).start()
    key_id, secret = setup_s3(endpoint, args.clips)
    partial = args.env_file + ".part"
    with open(partial, "w") as f:
        f.write(f"BAD_INPUT_HTTP_URL=http://127.0.0.1:{fixture.server_address[1]}\n"
                f"BAD_INPUT_S3_ENDPOINT={endpoint}\n"
                f"BAD_INPUT_S3_KEY_ID={shlex.quote(key_id)}\n"
                f"BAD_INPUT_S3_SECRET={shlex.quote(secret)}\n")
    os.rename(partial, args.env_file)  # the test waits for the whole file
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
