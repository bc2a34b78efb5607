#!/usr/bin/python3
"""The Python client's sweep methods against the real freezetune-server binary.

Usage: sweep_python_e2e.py SERVER_BIN MODEL_BIN SOURCE_DIR
Starts the server on 127.0.0.1:0, makes a tiny 2-layer model, then through
freezetune.Client: submit_sweep over depths {0, 2, head-only} (and over two
learning rates), watch_sweep to
the final event (gapless sequences), get_sweep, a resumed watch, and
cancel_sweep of a finished sweep (FAILED_PRECONDITION) and of a running one
(its trials end CANCELLED), and list_sweeps (two pages newest first, the
state filter, a bad page_token and page_size named in INVALID_ARGUMENT).
"""
import time
import unittest

import real_server

real_server.take_argv()

import grpc  # noqa: E402
from freezetune import FreezetuneError  # noqa: E402


class SweepPythonE2E(real_server.RealServerTestCase):
    def spec(self, dataset, epochs):
        job = self.job(dataset, epochs)
        del job["freeze"]
        return {"job": job, "freezeDepths": [0, 2], "includeHeadOnly": True}

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

    def test_learning_rates_cross_the_depths(self):
        spec = self.spec("small.jsonl", 1)
        spec.update(freezeDepths=[2], includeHeadOnly=False, learningRates=[1e-3, 3e-3])
        sweep = self.client.submit_sweep(spec)
        self.assertEqual([t.label for t in sweep.trials], ["depth=2 lr=0.001", "depth=2 lr=0.003"])
        list(self.client.watch_sweep(sweep.id))
        done = self.client.get_sweep(sweep.id)
        self.assertEqual(done.state, 2, done.error_message)  # SWEEP_STATE_SUCCEEDED
        for t, lr in zip(done.trials, [1e-3, 3e-3]):
            self.assertAlmostEqual(t.learning_rate, lr, places=7)
            job = self.client.get(t.job_id)
            self.assertAlmostEqual(job.spec.hyperparameters.learning_rate, lr, places=7)
        spec["learningRates"] = [1e-3, -1.0]
        with self.assertRaises(FreezetuneError) as cm:
            self.client.submit_sweep(spec)
        self.assertEqual(cm.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("sweep.learning_rates[1]", str(cm.exception))

    def test_cancel_running_sweep(self):
        sweep = self.client.submit_sweep(self.spec("large.jsonl", 50))
        cancelled = self.client.cancel_sweep(sweep.id)
        self.assertEqual(cancelled.state, 4)  # SWEEP_STATE_CANCELLED
        for t in cancelled.trials:
            deadline = time.time() + 30
            while self.client.get(t.job_id).state in (1, 2) and time.time() < deadline:
                time.sleep(0.1)
            self.assertEqual(self.client.get(t.job_id).state, 5)  # JOB_STATE_CANCELLED

    def test_list_sweeps(self):
        from freezetune.v1 import freezetune_pb2 as pb
        from freezetune.v1 import freezetune_pb2_grpc as pb_grpc
        ids = []
        for i in range(3):
            sweep = self.client.submit_sweep(self.spec("large.jsonl", 50))
            ids.append(sweep.id)
            if i < 2:
                self.client.cancel_sweep(sweep.id)
        try:
            # Page by page on the raw stub: 2 per page, at least two pages.
            with grpc.insecure_channel(self.client.target) as channel:
                stub = pb_grpc.FineTuneServiceStub(channel)
                req = pb.ListSweepsRequest(page_size=2)
                pages, walked = 0, []
                while True:
                    resp = stub.ListSweeps(req, timeout=30)
                    pages += 1
                    self.assertLessEqual(len(resp.sweeps), 2)
                    walked.extend(s.id for s in resp.sweeps)
                    if not resp.next_page_token:
                        break
                    self.assertLess(pages, 100)
                    req.page_token = resp.next_page_token
                self.assertGreaterEqual(pages, 2)
                with self.assertRaises(grpc.RpcError) as cm:
                    stub.ListSweeps(pb.ListSweepsRequest(page_token="bogus"), timeout=30)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn("page_token", cm.exception.details())
            # Newest first; list_sweeps follows the tokens to the same list.
            self.assertEqual([i for i in walked if i in ids], ids[::-1])
            self.assertEqual([s.id for s in self.client.list_sweeps(page_size=2)], walked)
            self.assertEqual(len(list(self.client.list_sweeps(page_size=2, limit=3))), 3)
            running = list(self.client.list_sweeps(states=[pb.SWEEP_STATE_RUNNING]))
            self.assertTrue(all(s.state == pb.SWEEP_STATE_RUNNING for s in running))
            self.assertIn(ids[2], [s.id for s in running])
            self.assertNotIn(ids[0], [s.id for s in running])
            cancelled = [s.id for s in self.client.list_sweeps(states=[pb.SWEEP_STATE_CANCELLED])]
            self.assertIn(ids[0], cancelled)
            self.assertIn(ids[1], cancelled)
            self.assertNotIn(ids[2], cancelled)
            with self.assertRaises(FreezetuneError) as cm:
                list(self.client.list_sweeps(page_size=-1))
            self.assertEqual(cm.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("page_size", cm.exception.message)
        finally:
            self.client.cancel_sweep(ids[2])


if __name__ == "__main__":
    unittest.main()
