"""asyncio client (grpc.aio) with the same contract as freezetune.Client.

    from freezetune.aio import AsyncClient
    async with AsyncClient() as c:                 # $FREEZETUNE_SERVER / _TOKEN
        job = await c.submit({...})
        async for event in c.watch(job.id):        # resumes by itself
            ...
        job = await c.wait(job.id, timeout=600)

Retry, resume and error rules are freezetune._policy's, shared with the
blocking client. An AsyncClient belongs to the event loop that created it.
"""
import asyncio
from typing import Any, AsyncIterator, Iterable, Optional, Union

import grpc
import grpc.aio

from freezetune._messages import to_message
from freezetune._policy import (RetryPolicy, WatchCursor, as_error, credentials,
                                is_terminal_event, resolve_target, resolve_token)
from freezetune.client import JobSpec, PlanRequest, SweepSpec
from freezetune.errors import FreezetuneError, WaitTimeout
from freezetune.states import TERMINAL_STATES, JobState
from freezetune.v1 import freezetune_pb2 as pb
from freezetune.v1 import freezetune_pb2_grpc as pb_grpc

__all__ = ["AsyncClient"]


class AsyncClient:
    def __init__(self, target: Optional[str] = None, token: Optional[str] = None,
                 tls: Optional[bool] = None, ca_cert: Optional[str] = None,
                 client_cert: Optional[str] = None, client_key: Optional[str] = None,
                 timeout: float = 30.0, max_retries: int = 4, initial_backoff: float = 0.2,
                 max_backoff: float = 5.0, watch_reconnect_window: float = 60.0) -> None:
        """The same arguments and defaults as freezetune.Client."""
        self.target, use_tls = resolve_target(target, tls)
        if use_tls:
            self._channel = grpc.aio.secure_channel(
                self.target, credentials(ca_cert, client_cert, client_key))
        else:
            self._channel = grpc.aio.insecure_channel(self.target)
        self._stub = pb_grpc.FineTuneServiceStub(self._channel)
        token = resolve_token(token)
        self._metadata = (("authorization", "Bearer " + token),) if token else ()
        self._timeout = timeout
        self._policy = RetryPolicy(max_retries, initial_backoff, max_backoff,
                                   watch_reconnect_window)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _unary(self, method: Any, request: Any, retry: bool) -> Any:
        attempt = 0
        while True:
            try:
                return await method(request, timeout=self._timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                if not self._policy.retry_unary(e.code(), attempt, retry):
                    raise as_error(e) from None
                await asyncio.sleep(self._policy.backoff(attempt))
                attempt += 1

    async def submit(self, job: JobSpec) -> pb.Job:
        job = to_message(job, pb.FineTuneJob, "job")
        return await self._unary(self._stub.SubmitJob, pb.SubmitJobRequest(job=job),
                                 retry=bool(job.client_request_id))

    async def get(self, job_id: str) -> pb.Job:
        return await self._unary(self._stub.GetJob, pb.GetJobRequest(job_id=job_id), True)

    async def cancel(self, job_id: str) -> pb.Job:
        return await self._unary(self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id), True)

    async def plan(self, request: PlanRequest) -> pb.PlanFreezeResponse:
        request = to_message(request, pb.PlanFreezeRequest, "request")
        return await self._unary(self._stub.PlanFreeze, request, True)

    async def list(self, states: Iterable[Union[JobState, int]] = (), page_size: int = 0,
                   limit: int = 0) -> AsyncIterator[pb.Job]:
        """Jobs newest first, following page tokens (limit 0: all)."""
        req = pb.ListJobsRequest(page_size=page_size, states=[int(s) for s in states])
        returned = 0
        while True:
            resp = await self._unary(self._stub.ListJobs, req, True)
            for job in resp.jobs:
                if limit and returned >= limit:
                    return
                returned += 1
                yield job
            if not resp.next_page_token or resp.next_page_token == req.page_token:
                return
            req.page_token = resp.next_page_token

    async def watch(self, job_id: str, after_sequence: int = 0) -> AsyncIterator[pb.JobEvent]:
        """Every event after `after_sequence` exactly once, reconnecting like
        Client.watch; ends after the terminal event."""
        cursor = WatchCursor(job_id, after_sequence, self._policy)
        while True:
            call = self._stub.WatchJob(
                pb.WatchJobRequest(job_id=job_id, after_sequence=cursor.last),
                metadata=self._metadata)
            code, details = grpc.StatusCode.OK, ""
            try:
                async for event in call:
                    if not cursor.accept(event):
                        continue
                    yield event
                    if is_terminal_event(event):
                        return
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
            finally:
                call.cancel()
            if code == grpc.StatusCode.OK:
                try:
                    if cursor.complete(await self.get(job_id)):
                        return
                except FreezetuneError:
                    return
                code, details = grpc.StatusCode.UNAVAILABLE, "watch stream ended early"
            await asyncio.sleep(cursor.next_delay(code, details))

    async def wait(self, job_id: str, timeout: Optional[float] = None) -> pb.Job:
        """Like Client.wait: the ended Job; WaitTimeout after `timeout` s."""
        async def follow() -> pb.Job:
            job = await self.get(job_id)
            if job.state in TERMINAL_STATES:
                return job
            async for _ in self.watch(job_id, job.last_sequence):
                pass
            return await self.get(job_id)
        try:
            return await asyncio.wait_for(follow(), timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(grpc.StatusCode.DEADLINE_EXCEEDED,
                              "job %s did not end within %gs" % (job_id, timeout)) from None

    async def submit_sweep(self, sweep: SweepSpec) -> pb.Sweep:
        sweep = to_message(sweep, pb.SweepSpec, "sweep")
        return await self._unary(self._stub.SubmitSweep, pb.SubmitSweepRequest(sweep=sweep),
                                 retry=False)

    async def get_sweep(self, sweep_id: str) -> pb.Sweep:
        return await self._unary(self._stub.GetSweep, pb.GetSweepRequest(sweep_id=sweep_id), True)
