"""The SDK's pure parts: error classes and field paths, state enums against
the proto, dicts with unknown fields, and $FREEZETUNE_SERVER/_TOKEN handling.
No server needed. Run with PYTHONPATH=<repo>/client/python:<build>/python.
"""
import os
import unittest
from unittest import mock

import grpc

import freezetune
from freezetune import (FreezetuneError, InvalidArgument, JobState, NotFound, SweepState,
                        TrialState, Unavailable, WaitTimeout)
from freezetune._policy import resolve_target, resolve_token
from freezetune.errors import error_for
from freezetune.v1 import freezetune_pb2 as pb


class ErrorsTest(unittest.TestCase):
    def test_subclass_per_code_and_field_path(self):
        e = error_for(grpc.StatusCode.INVALID_ARGUMENT,
                      "job.freeze.rules[0].pattern: does not compile: missing )")
        self.assertIsInstance(e, InvalidArgument)
        self.assertIsInstance(e, FreezetuneError)
        self.assertIsInstance(e, ValueError)
        self.assertEqual(e.field, "job.freeze.rules[0].pattern")
        self.assertEqual(e.reason, "does not compile: missing )")
        self.assertEqual(e.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIsInstance(error_for(grpc.StatusCode.NOT_FOUND, "job x not found"), NotFound)
        self.assertIsInstance(error_for(grpc.StatusCode.UNAVAILABLE, "down"), ConnectionError)
        self.assertTrue(issubclass(WaitTimeout, TimeoutError))
        # No field path in the message: none parsed.
        e = error_for(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
        self.assertIsNone(e.field)
        self.assertEqual(type(error_for(grpc.StatusCode.UNKNOWN, "?")), FreezetuneError)

    def test_unknown_field_in_a_dict_is_invalid_argument_with_its_path(self):
        c = freezetune.Client("127.0.0.1:1")
        with self.assertRaises(InvalidArgument) as raised:
            c.submit({"modelUri": "file:///m", "hyperparameters": {"epoch": 3}})
        self.assertEqual(raised.exception.field, "job.hyperparameters.epoch")
        self.assertIn("did you mean 'epochs'", str(raised.exception))
        with self.assertRaises(InvalidArgument) as raised:
            c.submit({"freeze": {"rules": [{"pattern": "x", "acton": "FREEZE_ACTION_FREEZE"}]}})
        self.assertEqual(raised.exception.field, "job.freeze.rules[0].acton")
        with self.assertRaises(InvalidArgument) as raised:
            c.submit({"hyperparameters": {"epochs": "many"}})
        self.assertEqual(raised.exception.field, "job")
        c.close()


class StatesTest(unittest.TestCase):
    def test_enums_match_the_proto(self):
        for enum_cls, proto_enum, prefix in ((JobState, pb.JobState, "JOB_STATE_"),
                                             (SweepState, pb.SweepState, "SWEEP_STATE_"),
                                             (TrialState, pb.TrialState, "TRIAL_STATE_")):
            expected = {name[len(prefix):]: value for name, value in proto_enum.items()}
            self.assertEqual({m.name: m.value for m in enum_cls}, expected)

    def test_short_names_and_terminal(self):
        self.assertEqual(str(JobState(3)), "SUCCEEDED")
        self.assertIs(JobState.parse("running"), JobState.RUNNING)
        self.assertIs(JobState.parse("JOB_STATE_FAILED"), JobState.FAILED)
        self.assertTrue(JobState.CANCELLED.terminal)
        self.assertFalse(JobState.QUEUED.terminal)
        self.assertTrue(SweepState.SUCCEEDED.terminal)
        with self.assertRaises(ValueError):
            JobState.parse("done")


class EnvironmentTest(unittest.TestCase):
    def test_server_and_token_from_the_environment(self):
        with mock.patch.dict(os.environ, {"FREEZETUNE_SERVER": "http://h:7/",
                                          "FREEZETUNE_TOKEN": "t0k"}):
            self.assertEqual(resolve_target(None, None), ("h:7", False))
            self.assertEqual(resolve_token(None), "t0k")
            self.assertEqual(resolve_target("a:1", None), ("a:1", False))
            self.assertEqual(resolve_token("mine"), "mine")
            self.assertEqual(freezetune.Client().target, "h:7")
        with mock.patch.dict(os.environ, {}, clear=True):
            self.assertEqual(resolve_target(None, None), ("127.0.0.1:50051", False))
            self.assertIsNone(resolve_token(None))
        self.assertEqual(resolve_target("https://svc:443", None), ("svc:443", True))
        self.assertEqual(resolve_target("https://svc:443", False), ("svc:443", False))


class UnavailableTest(unittest.TestCase):
    def test_unreachable_server_raises_unavailable(self):
        with freezetune.Client("127.0.0.1:1", max_retries=1, initial_backoff=0.01,
                               timeout=5) as c:
            with self.assertRaises(Unavailable):
                c.get("job-1")


if __name__ == "__main__":
    unittest.main()
