"""The freezetune Python client: the same contract as the C++ client.

- Bearer token sent as "authorization: Bearer <token>" metadata.
- Unary calls retried with exponential backoff on UNAVAILABLE only when they
  are idempotent: get, list, cancel, plan and their sweep counterparts;
  submit only when the job has a client_request_id (the server deduplicates
  those).
- watch() is a generator that reconnects after UNAVAILABLE or a dropped
  stream, resuming after the last sequence it yielded, so the caller sees
  every event exactly once, in order. It ends after the job's terminal event.
- Errors raise FreezetuneError carrying the server's gRPC code and message.

A Client may be shared by threads (gRPC channels are thread-safe); a watch()
generator belongs to the thread iterating it.
"""
import random
import time

import grpc
from google.protobuf import json_format

from freezetune.v1 import freezetune_pb2 as pb
from freezetune.v1 import freezetune_pb2_grpc as pb_grpc

TERMINAL_STATES = frozenset(
    [pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED])

# Codes after which a watch reconnects: the server went away or asked us to
# retry. CANCELLED that we did not ask for is a server shutting down.
_WATCH_RETRYABLE = frozenset([grpc.StatusCode.UNAVAILABLE,
                              grpc.StatusCode.ABORTED,
                              grpc.StatusCode.CANCELLED])


class FreezetuneError(Exception):
    """A failed call: `code` is the grpc.StatusCode, `message` the server's."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code.name, message))
        self.code = code
        self.message = message


def _as_message(value, cls):
    """Accepts a message of `cls` or a dict in the protobuf JSON mapping."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return json_format.ParseDict(value, cls())
    raise TypeError("expected %s or dict, got %r" % (cls.__name__, type(value)))


class Client:
    def __init__(self, target="127.0.0.1:50051", token=None, tls=False,
                 ca_cert=None, client_cert=None, client_key=None,
                 timeout=30.0, max_retries=4, initial_backoff=0.2,
                 max_backoff=5.0, watch_reconnect_window=60.0):
        """ca_cert/client_cert/client_key are PEM file paths (TLS only)."""
        if tls:
            def read(path):
                if path is None:
                    return None
                with open(path, "rb") as f:
                    return f.read()
            creds = grpc.ssl_channel_credentials(
                read(ca_cert), read(client_key), read(client_cert))
            self._channel = grpc.secure_channel(target, creds)
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.FineTuneServiceStub(self._channel)
        self.target = target
        self._metadata = (("authorization", "Bearer " + token),) if token else ()
        self._timeout = timeout
        self._max_retries = max_retries
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._watch_window = watch_reconnect_window

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _backoff(self, attempt):
        d = min(self._initial_backoff * (2 ** attempt), self._max_backoff)
        return d * random.uniform(0.8, 1.2)

    def _unary(self, method, request, retry):
        attempt = 0
        while True:
            try:
                return method(request, timeout=self._timeout,
                              metadata=self._metadata)
            except grpc.RpcError as e:
                if (not retry or e.code() != grpc.StatusCode.UNAVAILABLE
                        or attempt >= self._max_retries):
                    raise FreezetuneError(e.code(), e.details()) from None
                time.sleep(self._backoff(attempt))
                attempt += 1

    def submit(self, job):
        """Queues a FineTuneJob (message or JSON-mapping dict); returns Job."""
        job = _as_message(job, pb.FineTuneJob)
        return self._unary(self._stub.SubmitJob, pb.SubmitJobRequest(job=job),
                           retry=bool(job.client_request_id))

    def get(self, job_id):
        return self._unary(self._stub.GetJob, pb.GetJobRequest(job_id=job_id),
                           retry=True)

    def list(self, states=(), page_size=0, limit=0):
        """Yields Jobs newest first, following page tokens."""
        return self._paged(self._stub.ListJobs, "jobs",
                           pb.ListJobsRequest(page_size=page_size, states=list(states)), limit)

    def _paged(self, method, field, req, limit):
        """Yields the `field` items of every page of a List call, at most
        `limit` (0: all)."""
        returned = 0
        while True:
            resp = self._unary(method, req, retry=True)
            for item in getattr(resp, field):
                if limit and returned >= limit:
                    return
                returned += 1
                yield item
            if not resp.next_page_token or resp.next_page_token == req.page_token:
                return
            req.page_token = resp.next_page_token

    def cancel(self, job_id):
        return self._unary(self._stub.CancelJob,
                           pb.CancelJobRequest(job_id=job_id), retry=True)

    def plan(self, request):
        """PlanFreezeRequest (message or dict) -> PlanFreezeResponse."""
        request = _as_message(request, pb.PlanFreezeRequest)
        return self._unary(self._stub.PlanFreeze, request, retry=True)

    def submit_sweep(self, sweep):
        """Starts a freeze sweep from a SweepSpec (message or JSON-mapping
        dict); returns Sweep. Not retried: a lost reply must not start it twice."""
        sweep = _as_message(sweep, pb.SweepSpec)
        return self._unary(self._stub.SubmitSweep, pb.SubmitSweepRequest(sweep=sweep),
                           retry=False)

    def get_sweep(self, sweep_id):
        return self._unary(self._stub.GetSweep, pb.GetSweepRequest(sweep_id=sweep_id),
                           retry=True)

    def cancel_sweep(self, sweep_id):
        return self._unary(self._stub.CancelSweep,
                           pb.CancelSweepRequest(sweep_id=sweep_id), retry=True)

    def list_sweeps(self, states=(), page_size=0, limit=0):
        """Yields Sweeps newest first, following page tokens (like list)."""
        return self._paged(self._stub.ListSweeps, "sweeps",
                           pb.ListSweepsRequest(page_size=page_size, states=list(states)), limit)

    def watch_sweep(self, sweep_id, after_sequence=0):
        """Yields the sweep's SweepEvents after `after_sequence`, exactly once
        each, ending after the final event (the one with `result` set).
        Reopens the stream after UNAVAILABLE up to max_retries times in a row."""
        last = max(0, after_sequence)
        failures = 0
        while True:
            call = self._stub.WatchSweep(
                pb.WatchSweepRequest(sweep_id=sweep_id, after_sequence=last),
                metadata=self._metadata)
            try:
                for event in call:
                    if event.sequence <= last:
                        continue
                    last = event.sequence
                    failures = 0
                    final = event.HasField("result")
                    if final:
                        call.cancel()
                    yield event
                    if final:
                        return
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or failures >= self._max_retries:
                    raise FreezetuneError(e.code(), e.details()) from None
                time.sleep(self._backoff(failures))
                failures += 1

    def watch(self, job_id, after_sequence=0):
        """Yields the job's JobEvents after `after_sequence`, exactly once each.

        Reconnects after a drop (before the first event: up to max_retries
        times; after it: for up to watch_reconnect_window seconds without an
        event). Raises FreezetuneError for other errors, DATA_LOSS for a gap.
        """
        last = max(0, after_sequence)
        failures = 0
        got_event = False
        last_progress = time.monotonic()
        while True:
            call = self._stub.WatchJob(
                pb.WatchJobRequest(job_id=job_id, after_sequence=last),
                metadata=self._metadata)
            code, details = grpc.StatusCode.OK, ""
            try:
                for event in call:
                    if event.sequence <= last:
                        continue  # replayed by the server
                    if event.sequence != last + 1:
                        call.cancel()
                        raise FreezetuneError(
                            grpc.StatusCode.DATA_LOSS,
                            "watch %s: expected event %d, server sent %d"
                            % (job_id, last + 1, event.sequence))
                    last = event.sequence
                    failures = 0
                    got_event = True
                    last_progress = time.monotonic()
                    terminal = (event.HasField("state_change") and
                                event.state_change.state in TERMINAL_STATES)
                    if terminal:
                        call.cancel()
                    yield event
                    if terminal:
                        return
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
            finally:
                call.cancel()  # also when the caller stops iterating
            if code == grpc.StatusCode.OK:
                # Ended with OK: done, unless the job still has events we
                # have not seen (a server that drained its watchers early).
                try:
                    job = self.get(job_id)
                except FreezetuneError:
                    return
                if job.state in TERMINAL_STATES and job.last_sequence <= last:
                    return
                code, details = grpc.StatusCode.UNAVAILABLE, "watch stream ended early"
            elif code not in _WATCH_RETRYABLE:
                raise FreezetuneError(code, details)
            if got_event:
                give_up = time.monotonic() - last_progress > self._watch_window
            else:
                give_up = failures >= self._max_retries
            if give_up:
                raise FreezetuneError(code, details)
            time.sleep(self._backoff(failures))
            failures += 1
