#!/usr/bin/python3
"""The Python client (client/python) against the real freezetune-server binary.

Usage: python_client_e2e.py SERVER_BIN MODEL_BIN SOURCE_DIR
Starts the server on 127.0.0.1:0, makes a tiny model with freezetune-model,
then through freezetune.Client: submits a job and watches every event in order
to SUCCEEDED, resumes a watch from the middle, cancels a long job while it
runs, lists both, and checks a bad job's INVALID_ARGUMENT names the field.
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

from freezetune import Client, FreezetuneError  # noqa: E402


class PythonClientE2E(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="ft_py_e2e_")
        vocab = os.path.join(SOURCE_DIR, "tests/fixtures/data/bert-base-uncased-vocab.txt")
        subprocess.run([MODEL_BIN, "init", "--out", cls.dir + "/model", "--vocab", vocab,
                        "--layers", "2", "--hidden", "32", "--heads", "2", "--intermediate", "64",
                        "--max-position", "64"], check=True, capture_output=True)
        with open(cls.dir + "/small.jsonl", "w") as small, open(cls.dir + "/large.jsonl", "w") as large:
            for i in range(2000):
                rows = [{"text": "a great movie", "label": 1}, {"text": "an awful movie", "label": 0}]
                for row in rows:
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

    def job(self, dataset, epochs):
        return {"modelUri": "file://" + self.dir + "/model", "train": {"uri": self.dir + "/" + dataset},
                "freeze": {"bottom": {"numLayers": 1}},
                "hyperparameters": {"epochs": epochs, "batchSize": 8, "maxSeqLength": 16, "logEverySteps": 1,
                                    "learningRate": 1e-3, "validationSplit": 0.25}}

    def test_submit_watch_resume_cancel_list(self):
        small = self.client.submit(self.job("small.jsonl", 2))
        events = list(self.client.watch(small.id))
        self.assertEqual([e.sequence for e in events], list(range(1, len(events) + 1)))
        self.assertEqual(events[-1].WhichOneof("kind"), "state_change")
        self.assertEqual(events[-1].state_change.state, 3)  # JOB_STATE_SUCCEEDED
        self.assertEqual(sum(e.HasField("result") for e in events), 1)
        self.assertTrue(self.client.get(small.id).result.frozen_weights_verified)

        k = len(events) // 2
        resumed = list(self.client.watch(small.id, after_sequence=k))
        self.assertEqual([e.SerializeToString() for e in resumed],
                         [e.SerializeToString() for e in events[k:]])

        large = self.client.submit(self.job("large.jsonl", 50))
        cancel_sent = False
        for event in self.client.watch(large.id):
            if event.HasField("train") and not cancel_sent:
                self.client.cancel(large.id)
                cancel_sent = True
            last = event
        self.assertTrue(cancel_sent)
        self.assertEqual(last.state_change.state, 5)  # JOB_STATE_CANCELLED

        ids = [job.id for job in self.client.list()]
        self.assertEqual(ids[0], large.id)
        self.assertIn(small.id, ids)

    def test_bad_job_names_the_field(self):
        job = self.job("small.jsonl", 1)
        job["freeze"] = {"rules": [{"pattern": "(unclosed", "action": "FREEZE_ACTION_FREEZE"}]}
        with self.assertRaises(FreezetuneError) as raised:
            self.client.submit(job)
        self.assertEqual(raised.exception.code.name, "INVALID_ARGUMENT")
        self.assertIn("job.freeze.rules[0].pattern", str(raised.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
