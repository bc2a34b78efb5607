#!/usr/bin/python3
"""Completion callbacks end to end: the real server binary POSTs signed
final records to a receiver on loopback (allowed by the server's test flag
--notify_allow_private_hosts), a plain http.server that checks every
signature itself and answers 401 to a bad one.

Usage: notify_e2e.py SERVER_BIN MODEL_BIN SOURCE_DIR  ($FREEZETUNE_CLI_BIN: the CLI)
- a job that succeeds: one POST with the final Job, signed with the tenant's
  secret over "<timestamp>.<body>"; a changed body or another secret does
  not verify; a sweep: one POST with the final Sweep (its trials: none);
- a job that fails (submitted with the CLI's --notify-url): the final Job,
  FAILED with its error;
- a receiver that is down, then answers 500, then checks the signature with
  the wrong secret (401), then the right one: failed attempts are counted
  (freezetune_notify_attempts_total{result="failed"}), spaced by the
  doubling backoff, and the callback is delivered in the end;
- durable: a callback still pending when the server stops is delivered by
  the restarted server (same data dir), with its attempt count kept;
- submit-time checks name the field.
"""
import hashlib
import hmac
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
import unittest
import urllib.request

import real_server

real_server.take_argv()

from freezetune import InvalidArgument, JobState, SweepState  # noqa: E402
from freezetune.callbacks import verify_signature  # noqa: E402

SECRET = "0123456789abcdef-test-secret"
WRONG_SECRET = "fedcba9876543210-not-the-secret"
FAILED = 'freezetune_notify_attempts_total{result="failed"}'
DELIVERED = 'freezetune_notify_attempts_total{result="delivered"}'


def verify(headers, body, secret=SECRET):
    """The receiver's check, written out (independent of the SDK's helper)."""
    ts = headers["X-Freezetune-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Freezetune-Signature"], expected) and \
        abs(time.time() - int(ts)) < 300


class Receiver:
    """An HTTP server on 127.0.0.1:port that records every POST (with the
    time it came) and answers: `status` if set, else 204 when the signature
    verifies with `secret`, else 401."""

    def __init__(self, port=0, secret=SECRET, status=None):
        self.requests = []  # (time, headers, body, answer)
        self.secret = secret
        self.status = status
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = dict(self.headers)
                with outer.lock:
                    answer = outer.status or (204 if verify(headers, body, outer.secret) else 401)
                    outer.requests.append((time.time(), headers, body, answer))
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d/hook" % self.port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def accepted(self):
        with self.lock:
            return [(h, b) for _, h, b, answer in self.requests if answer == 204]

    def wait_accepted(self, n, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.accepted()
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError("receiver accepted %d of %d callbacks: %r" %
                             (len(self.accepted()), n, self.requests))

    def set(self, secret=None, status=None):
        with self.lock:
            self.secret = secret or self.secret
            self.status = status

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class NotifyE2E(real_server.RealServerTestCase):
    metrics_listen = "127.0.0.1:%d" % free_port()  # kept across the restart

    @classmethod
    def server_flags(cls):
        with open(cls.dir + "/secrets", "w") as f:
            f.write("# tenant secret\n* %s\n" % SECRET)
        return ["--notify_secret_file=" + cls.dir + "/secrets", "--notify_allow_private_hosts",
                "--notify_initial_backoff=300ms", "--notify_max_backoff=1200ms"]

    def metric(self, name):
        text = urllib.request.urlopen("http://%s/metrics" % self.metrics_listen).read().decode()
        m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
        return float(m.group(1)) if m else 0.0

    def wait_metric(self, name, at_least, timeout=60):
        deadline = time.time() + timeout
        while self.metric(name) < at_least:
            self.assertLess(time.time(), deadline, "%s stayed below %s" % (name, at_least))
            time.sleep(0.05)

    def notify_job(self, url, **hyperparameters):
        hp = {"epochs": 1, "batchSize": 8, "maxSeqLength": 16, "learningRate": 1e-3,
              "validationSplit": 0.25}
        hp.update(hyperparameters)
        return {"modelUri": "file://" + self.dir + "/model",
                "train": {"uri": self.dir + "/small.jsonl"},
                "freeze": {"bottom": {"numLayers": 1}},
                "hyperparameters": hp,
                "notify": {"url": url}}

    def test_1_job_and_sweep_callbacks_are_signed(self):
        receiver = Receiver()
        try:
            job = self.client.submit(self.notify_job(receiver.url))
            self.assertIs(JobState(self.client.wait(job.id, timeout=120).state), JobState.SUCCEEDED)
            headers, body = receiver.wait_accepted(1)[0]
            self.assertTrue(verify(headers, body), headers)
            self.assertTrue(verify_signature(SECRET, headers, body))  # the SDK's helper agrees
            self.assertEqual(headers["X-Freezetune-Event"], "job.ended")
            self.assertEqual(headers["X-Freezetune-Delivery"], job.id)
            self.assertEqual(headers["X-Freezetune-Attempt"], "1")
            self.assertEqual(headers["Content-Type"], "application/json")
            final = json.loads(body)
            self.assertEqual(final["id"], job.id)
            self.assertEqual(final["state"], "JOB_STATE_SUCCEEDED")
            self.assertTrue(final["result"]["frozenWeightsVerified"])
            self.assertEqual(final["spec"]["notify"]["url"], receiver.url)
            # A forged or altered callback is detected.
            forged = body.replace(b"SUCCEEDED", b"FAILED")
            self.assertFalse(verify(headers, forged))
            self.assertFalse(verify_signature(SECRET, headers, forged))
            self.assertFalse(verify_signature(WRONG_SECRET, headers, body))
            self.assertFalse(verify_signature(SECRET, headers, body, now=time.time() + 301))

            spec = {"job": self.notify_job(receiver.url), "freezeDepths": [0, 1]}
            del spec["job"]["freeze"], spec["job"]["notify"]
            spec["notify"] = {"url": receiver.url}
            sweep = self.client.submit_sweep(spec)
            self.assertIs(SweepState(self.client.wait_sweep(sweep.id).state), SweepState.SUCCEEDED)
            headers, body = receiver.wait_accepted(2)[1]
            self.assertTrue(verify(headers, body))
            self.assertEqual(headers["X-Freezetune-Event"], "sweep.ended")
            self.assertEqual(headers["X-Freezetune-Delivery"], sweep.id)
            final = json.loads(body)
            self.assertEqual(final["id"], sweep.id)
            self.assertEqual(final["state"], "SWEEP_STATE_SUCCEEDED")
            self.assertEqual(len(final["trials"]), 2)
            time.sleep(1)
            self.assertEqual(len(receiver.requests), 2)  # trials do not call back; no duplicates
            self.assertGreaterEqual(self.metric(DELIVERED), 2)
        finally:
            receiver.close()

    def test_2_failed_job_calls_back_too(self):
        receiver = Receiver()
        try:
            cli = os.environ["FREEZETUNE_CLI_BIN"]
            # A learning rate near float's maximum overflows within a step
            # or two: the job is accepted, then FAILS while training.
            r = subprocess.run(
                [cli, "--server", self.address, "submit", "-o", "name",
                 "--model", "file://" + self.dir + "/model", "--train", self.dir + "/small.jsonl",
                 "--freeze", "none", "--epochs", "2", "--batch-size", "8", "--max-seq-length", "16",
                 "--lr", "3e38", "--max-grad-norm", "0", "--notify-url", receiver.url],
                capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            job_id = r.stdout.strip()
            self.assertIs(JobState(self.client.wait(job_id, timeout=120).state), JobState.FAILED)
            headers, body = receiver.wait_accepted(1)[0]
            self.assertTrue(verify(headers, body))
            final = json.loads(body)
            self.assertEqual(final["id"], job_id)
            self.assertEqual(final["state"], "JOB_STATE_FAILED")
            self.assertTrue(final["errorMessage"])
            self.assertEqual(final["errorMessage"], self.client.get(job_id).error_message)
        finally:
            receiver.close()

    def test_3_receiver_down_erroring_and_misconfigured_then_up(self):
        port = free_port()
        job = self.client.submit(self.notify_job("http://127.0.0.1:%d/hook" % port))
        self.client.wait(job.id, timeout=120)
        failed = self.metric(FAILED)
        self.wait_metric(FAILED, failed + 2)  # connection refused, twice
        self.assertGreaterEqual(self.metric("freezetune_notify_pending"), 1)
        receiver = Receiver(port, status=500)
        try:
            self.wait_metric(FAILED, failed + 3)
            receiver.set(secret=WRONG_SECRET)  # a receiver with the wrong secret: 401
            self.wait_metric(FAILED, failed + 4)
            receiver.set(secret=SECRET)
            headers, body = receiver.wait_accepted(1)[0]
            self.assertEqual(json.loads(body)["id"], job.id)
            self.assertGreaterEqual(int(headers["X-Freezetune-Attempt"]), 5)
            answers = [a for _, _, _, a in receiver.requests]
            self.assertIn(500, answers)
            self.assertIn(401, answers)
            self.assertEqual(answers[-1], 204)
            # The retries back off: each wait at least the previous one
            # (300ms doubling, capped at 1.2s), minus scheduling noise.
            times = [t for t, _, _, _ in receiver.requests]
            gaps = [b - a for a, b in zip(times, times[1:])]
            self.assertTrue(all(g >= 0.9 for g in gaps), gaps)
            self.wait_metric(DELIVERED, 1)
        finally:
            receiver.close()

    def test_4_pending_callback_survives_a_restart(self):
        port = free_port()
        job = self.client.submit(self.notify_job("http://127.0.0.1:%d/hook" % port))
        self.client.wait(job.id, timeout=120)
        self.wait_metric(FAILED, self.metric(FAILED) + 1)
        self.stop_server()
        receiver = Receiver(port)
        try:
            self.start_server()
            headers, body = receiver.wait_accepted(1)[0]
            self.assertTrue(verify(headers, body))
            self.assertEqual(json.loads(body)["id"], job.id)
            # Not a new callback: the queued one, its failed attempts kept.
            self.assertGreaterEqual(int(headers["X-Freezetune-Attempt"]), 2)
            time.sleep(1)
            self.assertEqual(len(receiver.requests), 1)
        finally:
            receiver.close()

    def test_5_submit_time_checks(self):
        # Allowed by the test flag: private addresses pass here.
        self.client.cancel(self.client.submit(self.notify_job("http://10.1.2.3/hook")).id)
        spec = {"job": self.notify_job("https://hooks.example.com/x"), "freezeDepths": [0, 1]}
        del spec["job"]["freeze"]
        with self.assertRaises(InvalidArgument) as raised:
            self.client.submit_sweep(spec)
        self.assertTrue(str(raised.exception.field).startswith("sweep.job.notify"),
                        raised.exception)
        with self.assertRaises(InvalidArgument) as raised:
            self.client.submit(self.notify_job("ftp://example.com/x"))
        self.assertTrue(str(raised.exception.field).startswith("job.notify.url"), raised.exception)
        with self.assertRaises(InvalidArgument) as raised:
            self.client.submit(self.notify_job(""))
        self.assertTrue(str(raised.exception.field).startswith("job.notify.url"), raised.exception)


if __name__ == "__main__":
    unittest.main(verbosity=2)
