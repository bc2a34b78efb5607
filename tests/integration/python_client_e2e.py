#!/usr/bin/python3
"""The Python SDK against the real freezetune-server binary.

Usage: python_client_e2e.py SERVER_BIN MODEL_BIN SOURCE_DIR
Starts the server on 127.0.0.1:0, makes a tiny model with freezetune-model,
then through freezetune.Client: submits a job and watches every event in order
to SUCCEEDED, resumes a watch from the middle, cancels a long job while it
runs, lists both, waits (with a timeout that runs out, then to the end),
checks the error classes (InvalidArgument with the field path, NotFound,
an unknown dict field), a Client configured only by $FREEZETUNE_SERVER, and
the asyncio client. CTest runs it from the installed wheel
(python_package_test.sh) so what is tested is what users install.
"""
import asyncio
import os
import unittest
from unittest import mock

import real_server

real_server.take_argv()

import freezetune  # noqa: E402
from freezetune import (Client, FreezetuneError, InvalidArgument, JobState,  # noqa: E402
                        NotFound, WaitTimeout)
from freezetune.aio import AsyncClient  # noqa: E402


class PythonClientE2E(real_server.RealServerTestCase):
    def test_submit_watch_resume_cancel_list(self):
        small = self.client.submit(self.job("small.jsonl", 2))
        events = list(self.client.watch(small.id))
        self.assertEqual([e.sequence for e in events], list(range(1, len(events) + 1)))
        self.assertEqual(events[-1].WhichOneof("kind"), "state_change")
        self.assertIs(JobState(events[-1].state_change.state), JobState.SUCCEEDED)
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
        self.assertIs(JobState(last.state_change.state), JobState.CANCELLED)

        ids = [job.id for job in self.client.list()]
        self.assertEqual(ids[0], large.id)
        self.assertIn(small.id, ids)
        self.assertEqual([j.id for j in self.client.list(states=[JobState.CANCELLED])],
                         [large.id])

    def test_wait_times_out_then_returns_the_ended_job(self):
        large = self.client.submit(self.job("large.jsonl", 50))
        with self.assertRaises(WaitTimeout):
            self.client.wait(large.id, timeout=0.5)
        self.client.cancel(large.id)
        job = self.client.wait(large.id, timeout=120)
        self.assertIs(JobState(job.state), JobState.CANCELLED)
        # An ended job returns at once.
        self.assertEqual(self.client.wait(large.id, timeout=5).id, large.id)

    def test_errors(self):
        job = self.job("small.jsonl", 1)
        job["freeze"] = {"rules": [{"pattern": "(unclosed", "action": "FREEZE_ACTION_FREEZE"}]}
        with self.assertRaises(InvalidArgument) as raised:
            self.client.submit(job)
        self.assertEqual(raised.exception.code.name, "INVALID_ARGUMENT")
        self.assertEqual(raised.exception.field, "job.freeze.rules[0].pattern")
        self.assertIsInstance(raised.exception, FreezetuneError)

        job = self.job("small.jsonl", 1)
        job["hyperparameters"]["learningRat"] = 0.1
        with self.assertRaises(InvalidArgument) as raised:
            self.client.submit(job)
        self.assertEqual(raised.exception.field, "job.hyperparameters.learningRat")

        with self.assertRaises(NotFound):
            self.client.get("job-000000000000")

    def test_client_from_the_environment(self):
        with mock.patch.dict(os.environ, {"FREEZETUNE_SERVER": "http://" + self.client.target}):
            with Client() as c:
                self.assertEqual(c.target, self.client.target)
                self.assertGreaterEqual(len(list(c.list(limit=1))), 0)

    def test_asyncio_client(self):
        async def run():
            async with AsyncClient(self.client.target) as c:
                job = await c.submit(self.job("small.jsonl", 1))
                seqs = [e.sequence async for e in c.watch(job.id)]
                self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
                ended = await c.wait(job.id, timeout=60)
                self.assertIs(JobState(ended.state), JobState.SUCCEEDED)
                listed = [j.id async for j in c.list(limit=50)]
                self.assertIn(job.id, listed)
                with self.assertRaises(NotFound):
                    await c.get("job-000000000000")
        asyncio.run(run())

    def test_installed_package_is_typed(self):
        package_dir = os.path.dirname(freezetune.__file__)
        self.assertTrue(os.path.exists(os.path.join(package_dir, "py.typed")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
