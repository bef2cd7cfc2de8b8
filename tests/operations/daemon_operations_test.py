#!/usr/bin/env python3
"""clipcapd's operations end to end, against a real Postgres (tests/lib/with-postgres), a
Kafka broker from librdkafka's mock cluster (`clipcap broker`) and clipcapd built with the
engine test double. Asserts:
  1. systemd notifications arrive on NOTIFY_SOCKET (a Unix datagram socket this test binds):
     READY=1 only after the model is loaded and the partitions are assigned; WATCHDOG=1 while
     the engine progresses and none while one engine step is stuck (the double sleeps in its
     step; metrics.engine_stall_seconds is shorter), when /healthz also answers 503; STOPPING=1
     after SIGTERM, and a clean exit.
  2. /metrics, scraped over HTTP, parses with prometheus_client's text parser (an independent
     implementation of the format) and holds every series docs/operations.md lists, with job
     outcomes, per-partition lag, every stage latency and the token counters filled in.
  3. `clipcap status` reports from the endpoint.
  4. No secret given in the config file or the environment appears in any log, nor in
     --check-config's output, also when Postgres is unreachable.
  5. With more instances than partitions, the one without a partition still becomes ready.
Usage: daemon_operations_test.py CLIPCAPD CLIPCAP  (under tests/lib/with-postgres)
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

CLIPCAPD, CLIPCAP = sys.argv[1], sys.argv[2]
PG_URL = os.environ["CLIPCAP_PG_URL"]
SECRETS = {
    "config": "cfg-S3CRET-7f3a9c",
    "env": "env-S3CRET-51d0e2",
    "postgres": "pg-S3CRET-b84c11",
    "kafka": "kafka-S3CRET-02aa7e",
}
PROMISED = [
    "clipcap_jobs", "clipcap_job_seconds", "clipcap_stage_seconds",
    "clipcap_prompt_tokens", "clipcap_output_tokens", "clipcap_engine_results",
    "clipcap_engine_steps", "clipcap_engine_batch_requests",
    "clipcap_engine_heartbeat_age_seconds", "clipcap_engine_kv_cache_used_bytes",
    "clipcap_engine_kv_cache_capacity_bytes", "clipcap_gpu_memory_used_bytes",
    "clipcap_gpu_memory_total_bytes", "clipcap_kafka_consumer_lag", "clipcap_intake_paused",
    "clipcap_jobs_in_flight", "clipcap_ready", "clipcap_postgres_available",
    "clipcap_build_info", "clipcap_engine_memory_bytes",
]

work = tempfile.mkdtemp(prefix="clipcap-operations.")
processes = []


def fail(message, log=None):
    print("FAIL:", message, file=sys.stderr)
    if log and os.path.exists(log):
        print(f"--- {log} (tail)", file=sys.stderr)
        with open(log, errors="replace") as f:
            print("".join(f.readlines()[-30:]), file=sys.stderr)
    sys.exit(1)


def wait_for(seconds, what, predicate, log=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    fail(f"timed out waiting for {what}", log)


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def write_config(path, extra=""):
    with open(path, "w") as f:
        f.write(f"""[storage]
aws_access_key_id = AKIDEXAMPLE
aws_secret_access_key = {SECRETS['config']}
[librdkafka]
sasl.password = {SECRETS['kafka']}
{extra}""")


def main():
    clip = os.path.join(work, "clip.mp4")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=64x48:rate=10", "-t", "2", "-pix_fmt", "yuv420p", "-c:v",
                    "libx264", clip], check=True)
    config = os.path.join(work, "clipcapd.conf")
    write_config(config)
    env = dict(os.environ)
    env["CLIPCAP_STORAGE_AWS_SESSION_TOKEN"] = SECRETS["env"]
    logs = []

    # --- 4a. Postgres unreachable, with a password in its URL: the retries are logged.
    bad_pg = f"postgresql://clipcap:{SECRETS['postgres']}@127.0.0.1:1/clipcap"
    log = os.path.join(work, "daemon-nopg.log")
    logs.append(log)
    with open(log, "w") as out:
        daemon = subprocess.Popen([CLIPCAPD, "--config", config, "--set",
                                   f"postgres.url={bad_pg}", "--set",
                                   "kafka.brokers=127.0.0.1:1"], stderr=out, env=env)
    processes.append(daemon)
    wait_for(20, "a logged Postgres failure",
             lambda: "postgres_unavailable" in open(log).read(), log)
    daemon.send_signal(signal.SIGTERM)
    if daemon.wait(30) != 1:
        fail("clipcapd stopped while waiting for Postgres should exit 1", log)
    checked = subprocess.run([CLIPCAPD, "--config", config, "--set", f"postgres.url={bad_pg}",
                              "--check-config"], env=env, capture_output=True, text=True,
                             check=True).stdout
    if "aws_secret_access_key = ***" not in checked or "sasl.password = ***" not in checked:
        fail("--check-config does not mask the secrets:\n" + checked)
    for name, secret in SECRETS.items():
        if secret in checked:
            fail(f"--check-config prints the {name} secret")

    # --- broker and jobs
    broker_file = os.path.join(work, "broker")
    broker_log = open(os.path.join(work, "broker.log"), "w")
    processes.append(subprocess.Popen(
        [CLIPCAP, "broker", "--partitions", "2", "--topic", "clipcap.jobs", "--state-file",
         broker_file], stdout=broker_log, stderr=broker_log))
    wait_for(30, "the broker", lambda: os.path.exists(broker_file) and
             os.path.getsize(broker_file) > 0)
    brokers = open(broker_file).read().strip()
    jobs = os.path.join(work, "jobs.jsonl")
    with open(jobs, "w") as f:
        for i in range(3):
            f.write(f'{{"v":1,"job_id":"ops-{i}","clip_uri":"file://{clip}"}}\n')
        f.write(f'{{"v":1,"job_id":"ops-missing","clip_uri":"file://{work}/missing.mp4"}}\n')

    # --- 1. notifications, and a run with a stuck engine step
    notify_path = os.path.join(work, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.05)
    env.update(NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="400000",
               CLIPCAP_ENGINE_DOUBLE_DELAY_MS="2500")
    env.pop("WATCHDOG_PID", None)
    log = os.path.join(work, "daemon.log")
    logs.append(log)
    url_with_password = re.sub(r"^postgresql://([^@/]*)@",
                               rf"postgresql://\1:{SECRETS['postgres']}@", PG_URL)
    with open(log, "w") as out:
        daemon = subprocess.Popen(
            [CLIPCAPD, "--config", config, "--set", f"kafka.brokers={brokers}",
             "--set", f"postgres.url={url_with_password}",
             "--set", f"daemon.state_dir={work}/state", "--set", "metrics.address=127.0.0.1:0",
             "--set", "metrics.engine_stall_seconds=1", "--set",
             "metrics.kafka_stats_interval_ms=300", "--set", "pipeline.fetch_workers=1"],
            stderr=out, env=env)
    processes.append(daemon)
    received = []  # (monotonic time, message)

    # Read like systemd does, all the time: a Unix datagram queue holds only a few
    # messages, and a full one would block the daemon's main loop in sd_notify.
    def reader():
        while True:
            try:
                message = notify.recv(4096).decode()
            except socket.timeout:
                continue
            except OSError:
                return
            received.append((time.monotonic(), message))
    threading.Thread(target=reader, daemon=True).start()

    def pump():
        time.sleep(0.01)

    def got(message):
        pump()
        return any(m == message for _, m in received)

    def log_has(event):
        return f"event={event}" in open(log).read()

    wait_for(60, "READY=1", lambda: got("READY=1"), log)
    # At READY, the model was loaded and the group joined: both are logged before it.
    text = open(log).read()
    ready_at = text.find("event=notified_ready")
    for event in ("engine_ready", "kafka_partitions_assigned"):
        at = text.find(f"event={event}")
        if at < 0 or at > ready_at:
            fail(f"READY=1 was sent before {event}", log)
    port = int(re.search(r"event=metrics_listening .*port=(\d+)", text).group(1))
    if http_get(port, "/readyz")[0] != 200 or http_get(port, "/healthz")[0] != 200:
        fail("ready daemon: /readyz or /healthz not 200", log)
    wait_for(5, "WATCHDOG=1", lambda: got("WATCHDOG=1"), log)

    enqueued = subprocess.run([CLIPCAP, "enqueue", "--brokers", brokers, "--file", jobs],
                              capture_output=True, text=True)
    if enqueued.returncode != 0 or "enqueued 4 of 4" not in enqueued.stdout:
        fail(f"enqueue: {enqueued.stdout} {enqueued.stderr}")
    # The double sleeps 2.5 s in each step, longer than engine_stall_seconds=1.
    health = wait_for(20, "/healthz to report the stuck step",
                      lambda: (lambda s: s if s[0] == 503 else None)(http_get(port, "/healthz")),
                      log)
    if "engine stalled" not in health[1]:
        fail(f"/healthz while stuck: {health}", log)
    wait_for(20, "engine_stalled in the log", lambda: log_has("engine_stalled"), log)

    def jobs_done():
        status, body = http_get(port, "/metrics")
        return status == 200 and 'clipcap_jobs_total{outcome="completed",cause=""} 3' in body \
            and 'cause="not_found"} 1' in body and body
    wait_for(60, "4 job outcomes in /metrics", jobs_done, log)
    # Outcome lines carry the job's coordinates.
    if not re.search(rf'event=job_failed job_id=ops-missing clip=file://{re.escape(work)}/missing.mp4 '
                     r'partition=[01] offset=\d+ cause=not_found ', open(log).read()):
        fail("job_failed lacks clip, partition or offset", log)
    pump()
    watchdog_times = [t for t, m in received if m == "WATCHDOG=1"]
    longest_gap = max(b - a for a, b in zip(watchdog_times, watchdog_times[1:]))
    if longest_gap < 1.0:  # 0.1 s while healthy
        fail(f"the watchdog was fed during a 2.5 s engine step (longest gap {longest_gap:.2f} s)",
             log)
    # Progress again: pings resume, healthy.
    after = time.monotonic()
    wait_for(5, "WATCHDOG=1 after the step", lambda: (pump(), any(
        t > after and m == "WATCHDOG=1" for t, m in received))[1], log)
    if http_get(port, "/healthz")[0] != 200:
        fail("/healthz not back to 200 after progress", log)

    # --- 2. every series, parsed by an independent implementation of the format
    def lag_zero():
        body = http_get(port, "/metrics")[1]
        lags = re.findall(r'^clipcap_kafka_consumer_lag\{[^}]*\} (\S+)$', body, re.M)
        # A partition that never had a message has no lag yet (librdkafka reports -1).
        return len(lags) >= 1 and all(float(v) == 0 for v in lags) and body
    body = wait_for(30, "lag 0 on the assigned partitions", lag_zero, log)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    missing = [name for name in PROMISED if name not in families]
    if missing:
        fail(f"series missing from /metrics: {missing}")
    stages = {s.labels.get("stage") for s in families["clipcap_stage_seconds"].samples}
    for stage in ("fetch", "media_decode", "engine_queue", "prefill", "token_decode", "write"):
        if stage not in stages:
            fail(f"no {stage} latency in clipcap_stage_seconds")
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in families.values() for s in f.samples}
    if value[("clipcap_output_tokens_total", ())] != 3 * 7:  # the double writes 7 per window
        fail(f"output tokens: {value[('clipcap_output_tokens_total', ())]}")
    if value[("clipcap_engine_steps_total", ())] < 3:
        fail("engine steps not counted")
    # engine_memory(): the double reports a 1 MiB model and a 4096-token pool of 16 MiB
    if value[("clipcap_engine_memory_bytes", (("kind", "weights"),))] != 1 << 20:
        fail("engine weights gauge not set from engine_memory()")
    if value[("clipcap_engine_kv_cache_capacity_bytes", ())] != 16 << 20:
        fail("KV pool capacity gauge not set from engine_memory()")
    if not re.search(r"event=engine_ready .*weights_mb=1\.0 kv_pool_mb=16\.0 kv_pool_tokens=4096",
                     open(log).read()):
        fail("engine_ready does not log the engine's memory", log)

    # --- 3. clipcap status
    status = subprocess.run([CLIPCAP, "status", "--address", f"127.0.0.1:{port}",
                             "--interval", "0.5"], capture_output=True, text=True)
    if status.returncode != 0:
        fail(f"clipcap status: {status.returncode} {status.stderr}")
    for needle in ("ready", "jobs in flight", "jobs completed", "consumer lag"):
        if needle not in status.stdout:
            fail(f"clipcap status lacks '{needle}':\n{status.stdout}")

    # --- 1 (end). SIGTERM: STOPPING=1, clean exit
    daemon.send_signal(signal.SIGTERM)
    if daemon.wait(60) != 0:
        fail("clipcapd did not exit 0 after SIGTERM", log)
    if not got("STOPPING=1"):
        fail("no STOPPING=1 after SIGTERM", log)
    stopping_at = next(t for t, m in received if m == "STOPPING=1")
    ready_time = next(t for t, m in received if m == "READY=1")
    if stopping_at < ready_time:
        fail("STOPPING=1 before READY=1")

    # --- 5. more instances than partitions: the one left without a partition still joined
    # the group, so it must become ready too (else systemd would time its start out).
    instances = []
    plain_env = {k: v for k, v in env.items()
                 if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "CLIPCAP_ENGINE_DOUBLE_DELAY_MS")}
    for i in range(3):
        instance_log = os.path.join(work, f"idle-{i}.log")
        logs.append(instance_log)
        with open(instance_log, "w") as out:
            instances.append(subprocess.Popen(
                [CLIPCAPD, "--config", config, "--set", f"kafka.brokers={brokers}",
                 "--set", f"postgres.url={PG_URL}", "--set", "kafka.group=clipcap-idle",
                 "--set", f"daemon.state_dir={work}/idle-{i}"], stderr=out, env=plain_env))
        processes.append(instances[-1])
    idle_logs = [os.path.join(work, f"idle-{i}.log") for i in range(3)]
    # Three members joining at once take several cooperative rebalance rounds; on a loaded
    # 2-core CI machine that has been seen to take over a minute.
    wait_for(180, "all three instances ready",
             lambda: all("event=notified_ready" in open(l).read() for l in idle_logs),
             idle_logs[-1])
    if not any("kafka_partitions_assigned count=0" in open(l).read() for l in idle_logs):
        fail("no instance was left without a partition; the check proves nothing")
    for instance in instances:
        instance.send_signal(signal.SIGTERM)
    for instance in instances:
        if instance.wait(60) != 0:
            fail("an instance did not stop cleanly", idle_logs[0])

    # --- 4b. no secret in any log
    for log in logs:
        text = open(log, errors="replace").read()
        for name, secret in SECRETS.items():
            if secret in text:
                fail(f"the {name} secret appears in {log}", log)
    print(f"operations: READY after engine and assignment; watchdog withheld "
          f"{longest_gap:.1f} s during a stuck step; {len(families)} metric families; "
          f"no secret in {len(logs)} logs")


try:
    main()
finally:
    for p in processes:
        if p.poll() is None:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)
