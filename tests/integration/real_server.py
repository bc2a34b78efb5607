"""unittest base class for the Python clients' end-to-end tests.

RealServerTestCase starts the real freezetune-server on 127.0.0.1:0 (data
root: a fresh temp dir), makes a tiny 2-layer model there with
freezetune-model, writes small.jsonl (32 lines) and large.jsonl (4,000 lines),
and connects `cls.client`. The test script is run as
`SCRIPT SERVER_BIN MODEL_BIN SOURCE_DIR [unittest args]`: call take_argv()
before unittest.main() parses the rest.
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

SERVER_BIN = MODEL_BIN = SOURCE_DIR = None


def take_argv():
    """Removes SERVER_BIN MODEL_BIN SOURCE_DIR from sys.argv."""
    global SERVER_BIN, MODEL_BIN, SOURCE_DIR
    SERVER_BIN, MODEL_BIN, SOURCE_DIR = sys.argv[1:4]
    del sys.argv[1:4]


def _read(path):
    with open(path) as f:
        return f.read()


class RealServerTestCase(unittest.TestCase):
    # The server's /metrics address; a subclass may fix the port (restarts).
    metrics_listen = "127.0.0.1:0"

    @classmethod
    def server_flags(cls):
        """Extra server flags (a subclass's); cls.dir exists when called."""
        return []

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="ft_py_e2e_")
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
        cls.start_server()

    @classmethod
    def start_server(cls):
        """Starts the server on cls.dir (again after stop_server: same data
        dir); sets cls.server, cls.address and cls.client."""
        from freezetune import Client
        port_file = cls.dir + "/port"
        if os.path.exists(port_file):
            os.remove(port_file)
        cls.log = open(cls.dir + "/server.log", "a")
        cls.server = subprocess.Popen(
            [SERVER_BIN, "--listen=127.0.0.1:0", "--port_file=" + port_file,
             "--metrics_listen=" + cls.metrics_listen,
             "--data_dir=" + cls.dir + "/server", "--data_roots=" + cls.dir, "--threads=1"]
            + cls.server_flags(),
            stdout=cls.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not (os.path.exists(port_file) and _read(port_file).endswith("\n")):
            if cls.server.poll() is not None or time.time() > deadline:
                raise RuntimeError("server did not start: " + _read(cls.dir + "/server.log"))
            time.sleep(0.05)
        cls.address = "127.0.0.1:" + _read(port_file).strip()
        cls.client = Client(cls.address)

    @classmethod
    def stop_server(cls):
        """SIGTERM; the server must drain and exit 0."""
        cls.client.close()
        cls.server.send_signal(signal.SIGTERM)
        rc = cls.server.wait(timeout=60)
        cls.log.close()
        if rc != 0:
            raise RuntimeError("server exited %d on SIGTERM" % rc)

    @classmethod
    def tearDownClass(cls):
        cls.stop_server()
        shutil.rmtree(cls.dir)

    def job(self, dataset, epochs):
        """A small job (protobuf JSON mapping) on `dataset` in the temp dir."""
        return {"modelUri": "file://" + self.dir + "/model", "train": {"uri": self.dir + "/" + dataset},
                "freeze": {"bottom": {"numLayers": 1}},
                "hyperparameters": {"epochs": epochs, "batchSize": 8, "maxSeqLength": 16, "logEverySteps": 1,
                                    "learningRate": 1e-3, "validationSplit": 0.25}}
