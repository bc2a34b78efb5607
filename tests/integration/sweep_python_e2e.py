#!/usr/bin/python3
"""The Python client's sweep methods against the real freezetune-server binary.

Usage: sweep_python_e2e.py SERVER_BIN MODEL_BIN SOURCE_DIR
Starts the server on 127.0.0.1:0, makes a tiny 2-layer model, then through
freezetune.Client: submit_sweep over depths {0, 2, head-only}, watch_sweep to
the final event (gapless sequences), get_sweep, a resumed watch, and
cancel_sweep of a finished sweep (FAILED_PRECONDITION) and of a running one
(its trials end CANCELLED).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

SERVER_BIN, MODEL_BIN, SOURCE_DIR = sys.argv[1:4]
del sys.argv[1:4]

import grpc  # noqa: E402
from freezetune import Client, FreezetuneError  # noqa: E402


class SweepPythonE2E(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="ft_sweep_py_")
        vocab = os.path.join(SOURCE_DIR, "tests/fixtures/data/bert-base-uncased-vocab.txt")
        subprocess.run([MODEL_BIN, "init", "--out", cls.dir + "/model", "--vocab", vocab,
                        "--layers", "2", "--hidden", "32", "--heads", "2", "--intermediate", "64",
                        "--max-position", "64"], check=True, capture_output=True)
        with open(cls.dir + "/small.jsonl", "w") as small, open(cls.dir + "/large.jsonl", "w") as large:
            for i in range(2000):
                for row in ({"text": "a great movie", "label": 1}, {"text": "an awful movie", "label": 0}):
                    if i < 16:
                        small.write(json.dumps(row) + "\n")
                    large.write(json.dumps(row) + "\n")
        port_file = cls.dir + "/port"
        cls.log = open(cls.dir + "/server.log", "w")
        cls.server = subprocess.Popen(
            [SERVER_BIN, "--listen=127.0.0.1:0", "--port_file=" + port_file, "--metrics_listen=127.0.0.1:0",
             "--data_dir=" + cls.dir + "/server", "--data_roots=" + cls.dir, "--threads=1"],
            stdout=cls.log, stderr=subprocess.STDOUT)

        def read(path):
            with open(path) as f:
                return f.read()
        deadline = time.time() + 60
        while not (os.path.exists(port_file) and read(port_file).endswith("\n")):
            if cls.server.poll() is not None or time.time() > deadline:
                raise RuntimeError("server did not start: " + read(cls.dir + "/server.log"))
            time.sleep(0.05)
        cls.client = Client("127.0.0.1:" + read(port_file).strip())

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.send_signal(signal.SIGTERM)
        rc = cls.server.wait(timeout=30)
        cls.log.close()
        if rc != 0:
            raise RuntimeError("server exited %d on SIGTERM" % rc)
        shutil.rmtree(cls.dir)

    def spec(self, dataset, epochs):
        return {"job": {"modelUri": "file://" + self.dir + "/model", "train": {"uri": self.dir + "/" + dataset},
                        "hyperparameters": {"epochs": epochs, "batchSize": 8, "maxSeqLength": 16,
                                            "learningRate": 1e-3, "validationSplit": 0.25}},
                "freezeDepths": [0, 2], "includeHeadOnly": True}

    def test_submit_watch_get_resume(self):
        sweep = self.client.submit_sweep(self.spec("small.jsonl", 1))
        self.assertTrue(sweep.id.startswith("sweep-"))
        self.assertEqual([t.label for t in sweep.trials], ["depth=0", "depth=2", "head-only"])
        events = list(self.client.watch_sweep(sweep.id))
        self.assertEqual([e.sequence for e in events], list(range(1, len(events) + 1)))
        self.assertEqual(events[-1].WhichOneof("kind"), "result")
        done = self.client.get_sweep(sweep.id)
        self.assertEqual(done.state, 2)  # SWEEP_STATE_SUCCEEDED
        self.assertGreaterEqual(done.winner_index, 0)
        for t in done.trials:
            self.assertEqual(self.client.get(t.job_id).sweep_id, sweep.id)
        k = len(events) // 2
        resumed = list(self.client.watch_sweep(sweep.id, after_sequence=k))
        self.assertEqual([e.sequence for e in resumed], [e.sequence for e in events[k:]])
        with self.assertRaises(FreezetuneError) as cm:
            self.client.cancel_sweep(sweep.id)
        self.assertEqual(cm.exception.code, grpc.StatusCode.FAILED_PRECONDITION)

    def test_cancel_running_sweep(self):
        sweep = self.client.submit_sweep(self.spec("large.jsonl", 50))
        cancelled = self.client.cancel_sweep(sweep.id)
        self.assertEqual(cancelled.state, 4)  # SWEEP_STATE_CANCELLED
        for t in cancelled.trials:
            deadline = time.time() + 30
            while self.client.get(t.job_id).state in (1, 2) and time.time() < deadline:
                time.sleep(0.1)
            self.assertEqual(self.client.get(t.job_id).state, 5)  # JOB_STATE_CANCELLED


if __name__ == "__main__":
    unittest.main()
