#!/usr/bin/python3
"""The Python client (client/python) against the real freezetune-server binary.

Usage: python_client_e2e.py SERVER_BIN MODEL_BIN SOURCE_DIR
Starts the server on 127.0.0.1:0, makes a tiny model with freezetune-model,
then through freezetune.Client: submits a job and watches every event in order
to SUCCEEDED, resumes a watch from the middle, cancels a long job while it
runs, lists both, and checks a bad job's INVALID_ARGUMENT names the field.
"""
import unittest

import real_server

real_server.take_argv()

from freezetune import FreezetuneError  # noqa: E402


class PythonClientE2E(real_server.RealServerTestCase):
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
