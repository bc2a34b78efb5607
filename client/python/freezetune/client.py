"""The freezetune Python client (blocking); freezetune.aio has the asyncio one.

The same contract as the C++ client:
- Connects to `target`, else $FREEZETUNE_SERVER, else 127.0.0.1:50051
  ("http://host:port" and "https://host:port" are accepted), with the bearer
  token `token`, else $FREEZETUNE_TOKEN, sent as "authorization: Bearer ...".
- Unary calls retried with exponential backoff on UNAVAILABLE only when they
  are idempotent: get, list, cancel, plan and their sweep counterparts;
  submit only when the job has a client_request_id (the server deduplicates
  those).
- watch() is a generator that reconnects after UNAVAILABLE or a dropped
  stream, resuming after the last sequence it yielded, so the caller sees
  every event exactly once, in order. It ends after the job's terminal event.
- wait() blocks until a job ends and returns it.
- Errors raise a FreezetuneError subclass (freezetune.errors) chosen by the
  gRPC code; dicts with unknown fields raise InvalidArgument naming the field.

A Client may be shared by threads (gRPC channels are thread-safe); a watch()
generator belongs to the thread iterating it.
"""
import time
from typing import Any, Dict, Iterable, Iterator, Optional, Union

import grpc

from freezetune._messages import to_message
from freezetune._policy import (RetryPolicy, WatchCursor, as_error, credentials,
                                is_terminal_event, resolve_target, resolve_token)
from freezetune.errors import DeadlineExceeded, FreezetuneError, WaitTimeout
from freezetune.states import TERMINAL_STATES, JobState, SweepState
from freezetune.v1 import freezetune_pb2 as pb
from freezetune.v1 import freezetune_pb2_grpc as pb_grpc

JobSpec = Union[pb.FineTuneJob, Dict[str, Any]]
SweepSpec = Union[pb.SweepSpec, Dict[str, Any]]
PlanRequest = Union[pb.PlanFreezeRequest, Dict[str, Any]]


class Client:
    def __init__(self, target: Optional[str] = None, token: Optional[str] = None,
                 tls: Optional[bool] = None, ca_cert: Optional[str] = None,
                 client_cert: Optional[str] = None, client_key: Optional[str] = None,
                 timeout: float = 30.0, max_retries: int = 4, initial_backoff: float = 0.2,
                 max_backoff: float = 5.0, watch_reconnect_window: float = 60.0) -> None:
        """target: host:port (default $FREEZETUNE_SERVER, else 127.0.0.1:50051);
        token: default $FREEZETUNE_TOKEN; ca_cert/client_cert/client_key are
        PEM file paths (TLS only); timeout: seconds per unary attempt."""
        self.target, use_tls = resolve_target(target, tls)
        if use_tls:
            self._channel = grpc.secure_channel(
                self.target, credentials(ca_cert, client_cert, client_key))
        else:
            self._channel = grpc.insecure_channel(self.target)
        self._stub = pb_grpc.FineTuneServiceStub(self._channel)
        token = resolve_token(token)
        self._metadata = (("authorization", "Bearer " + token),) if token else ()
        self._timeout = timeout
        self._policy = RetryPolicy(max_retries, initial_backoff, max_backoff,
                                   watch_reconnect_window)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, retry: bool,
               timeout: Optional[float] = None) -> Any:
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout or self._timeout,
                              metadata=self._metadata)
            except grpc.RpcError as e:
                if not self._policy.retry_unary(e.code(), attempt, retry):
                    raise as_error(e) from None
                time.sleep(self._policy.backoff(attempt))
                attempt += 1

    # Jobs ------------------------------------------------------------------

    def submit(self, job: JobSpec) -> pb.Job:
        """Queues a FineTuneJob (message or JSON-mapping dict); returns the Job."""
        job = to_message(job, pb.FineTuneJob, "job")
        return self._unary(self._stub.SubmitJob, pb.SubmitJobRequest(job=job),
                           retry=bool(job.client_request_id))

    def get(self, job_id: str) -> pb.Job:
        return self._unary(self._stub.GetJob, pb.GetJobRequest(job_id=job_id), retry=True)

    def list(self, states: Iterable[Union[JobState, int]] = (), page_size: int = 0,
             limit: int = 0) -> Iterator[pb.Job]:
        """Yields Jobs newest first, following page tokens (limit 0: all)."""
        return self._paged(self._stub.ListJobs, "jobs",
                           pb.ListJobsRequest(page_size=page_size,
                                              states=[int(s) for s in states]), limit)

    def _paged(self, method: Any, field: str, req: Any, limit: int) -> Iterator[Any]:
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

    def cancel(self, job_id: str) -> pb.Job:
        """Asks the server to cancel; returns the Job as the server saw it
        before the cancel took effect. wait() follows it to CANCELLED."""
        return self._unary(self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id), retry=True)

    def plan(self, request: PlanRequest) -> pb.PlanFreezeResponse:
        """PlanFreezeRequest (message or dict) -> PlanFreezeResponse."""
        request = to_message(request, pb.PlanFreezeRequest, "request")
        return self._unary(self._stub.PlanFreeze, request, retry=True)

    def watch(self, job_id: str, after_sequence: int = 0) -> Iterator[pb.JobEvent]:
        """Yields the job's JobEvents after `after_sequence`, exactly once each.

        Reconnects after a drop (before the first event: up to max_retries
        times; after it: for up to watch_reconnect_window seconds without an
        event). Raises a FreezetuneError for other errors, DataLoss for a gap.
        """
        return self._watch(job_id, after_sequence, None)

    def _watch(self, job_id: str, after_sequence: int,
               deadline: Optional[float]) -> Iterator[pb.JobEvent]:
        cursor = WatchCursor(job_id, after_sequence, self._policy)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded(grpc.StatusCode.DEADLINE_EXCEEDED, "watch " + job_id)
            call = self._stub.WatchJob(
                pb.WatchJobRequest(job_id=job_id, after_sequence=cursor.last),
                metadata=self._metadata, timeout=remaining)
            code, details = grpc.StatusCode.OK, ""
            try:
                for event in call:
                    if not cursor.accept(event):
                        continue
                    terminal = is_terminal_event(event)
                    if terminal:
                        call.cancel()
                    yield event
                    if terminal:
                        return
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
            finally:
                call.cancel()  # also when the caller stops iterating
            if code == grpc.StatusCode.OK:
                # Ended with OK: done, unless the job still has events we
                # have not seen (a server that drained its watchers early).
                try:
                    if cursor.complete(self.get(job_id)):
                        return
                except FreezetuneError:
                    return
                code, details = grpc.StatusCode.UNAVAILABLE, "watch stream ended early"
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                raise DeadlineExceeded(code, details)
            time.sleep(cursor.next_delay(code, details))

    def wait(self, job_id: str, timeout: Optional[float] = None) -> pb.Job:
        """Blocks until the job is SUCCEEDED, FAILED or CANCELLED and returns
        it (check `JobState(job.state)`; a failed job does not raise).
        WaitTimeout (a TimeoutError) when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id)
        if job.state not in TERMINAL_STATES:
            try:
                for _ in self._watch(job_id, job.last_sequence, deadline):
                    pass
            except DeadlineExceeded:
                raise WaitTimeout(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  "job %s did not end within %gs" % (job_id, timeout)) from None
            job = self.get(job_id)
        return job

    # Sweeps ----------------------------------------------------------------

    def submit_sweep(self, sweep: SweepSpec) -> pb.Sweep:
        """Starts a freeze sweep from a SweepSpec (message or JSON-mapping
        dict); returns Sweep. Not retried: a lost reply must not start it twice."""
        sweep = to_message(sweep, pb.SweepSpec, "sweep")
        return self._unary(self._stub.SubmitSweep, pb.SubmitSweepRequest(sweep=sweep),
                           retry=False)

    def get_sweep(self, sweep_id: str) -> pb.Sweep:
        return self._unary(self._stub.GetSweep, pb.GetSweepRequest(sweep_id=sweep_id),
                           retry=True)

    def cancel_sweep(self, sweep_id: str) -> pb.Sweep:
        return self._unary(self._stub.CancelSweep, pb.CancelSweepRequest(sweep_id=sweep_id),
                           retry=True)

    def list_sweeps(self, states: Iterable[Union[SweepState, int]] = (), page_size: int = 0,
                    limit: int = 0) -> Iterator[pb.Sweep]:
        """Yields Sweeps newest first, following page tokens (like list)."""
        return self._paged(self._stub.ListSweeps, "sweeps",
                           pb.ListSweepsRequest(page_size=page_size,
                                                states=[int(s) for s in states]), limit)

    def watch_sweep(self, sweep_id: str, after_sequence: int = 0) -> Iterator[pb.SweepEvent]:
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
                if e.code() != grpc.StatusCode.UNAVAILABLE or failures >= self._policy.max_retries:
                    raise as_error(e) from None
                time.sleep(self._policy.backoff(failures))
                failures += 1

    def wait_sweep(self, sweep_id: str) -> pb.Sweep:
        """Blocks until the sweep ends; returns it (its final table)."""
        sweep = self.get_sweep(sweep_id)
        if SweepState(sweep.state).terminal:
            return sweep
        for event in self.watch_sweep(sweep_id, sweep.last_sequence):
            if event.HasField("result"):
                return event.result
        return self.get_sweep(sweep_id)
