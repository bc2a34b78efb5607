"""The Python client against a real grpc.server on 127.0.0.1:0 whose fake
FineTuneService the tests script (dropped streams, injected failures).

Run with PYTHONPATH=<repo>/client/python:<build>/python (CTest does this).
"""
import threading
import unittest
from concurrent import futures

import grpc

from freezetune import Client, FreezetuneError
from freezetune.v1 import freezetune_pb2 as pb
from freezetune.v1 import freezetune_pb2_grpc as pb_grpc


def simple_log(job_id, train_events, final_state, message=""):
    log = [pb.JobEvent(job_id=job_id, sequence=1,
                       state_change=pb.StateChange(state=pb.JOB_STATE_QUEUED)),
           pb.JobEvent(job_id=job_id, sequence=2,
                       state_change=pb.StateChange(state=pb.JOB_STATE_RUNNING))]
    for i in range(1, train_events + 1):
        log.append(pb.JobEvent(job_id=job_id, sequence=len(log) + 1,
                               train=pb.TrainMetrics(step=10 * i, loss=1.0 / i)))
    log.append(pb.JobEvent(job_id=job_id, sequence=len(log) + 1,
                           state_change=pb.StateChange(state=final_state,
                                                       message=message)))
    return log


class FakeService(pb_grpc.FineTuneServiceServicer):
    def __init__(self):
        self.lock = threading.Lock()
        self.jobs = {}
        self.events = {}
        self.fail = {}          # method -> [(code, message)]
        self.calls = {}         # method -> count
        self.auth = []
        self.watch_scripts = []  # per WatchJob call: events to send then UNAVAILABLE
        self.watch_after = []
        self.next_id = 0

    def _begin(self, method, context):
        with self.lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            md = dict(context.invocation_metadata())
            self.auth.append(md.get("authorization", ""))
            queue = self.fail.get(method)
            failure = queue.pop(0) if queue else None
        if failure:
            context.abort(failure[0], failure[1])

    def set_events(self, job_id, log):
        job = self.jobs.setdefault(job_id, pb.Job(id=job_id))
        job.last_sequence = log[-1].sequence
        job.state = log[-1].state_change.state
        self.events[job_id] = log

    def SubmitJob(self, request, context):
        self._begin("SubmitJob", context)
        with self.lock:
            rid = request.job.client_request_id
            for job in self.jobs.values():
                if rid and job.spec.client_request_id == rid:
                    return job
            self.next_id += 1
            job = pb.Job(id="job-%d" % self.next_id, spec=request.job,
                         state=pb.JOB_STATE_QUEUED, last_sequence=1)
            self.jobs[job.id] = job
            return job

    def GetJob(self, request, context):
        self._begin("GetJob", context)
        if request.job_id not in self.jobs:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          "job %s not found" % request.job_id)
        return self.jobs[request.job_id]

    def ListJobs(self, request, context):
        self._begin("ListJobs", context)
        jobs = [j for j in reversed(list(self.jobs.values()))
                if not request.states or j.state in request.states]
        start = int(request.page_token or 0)
        size = request.page_size or 50
        resp = pb.ListJobsResponse(jobs=jobs[start:start + size])
        if start + size < len(jobs):
            resp.next_page_token = str(start + size)
        return resp

    def CancelJob(self, request, context):
        self._begin("CancelJob", context)
        job = self.jobs.get(request.job_id)
        if job is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "job not found")
        if job.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED,
                         pb.JOB_STATE_CANCELLED):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "job %s already finished" % job.id)
        job.state = pb.JOB_STATE_CANCELLED
        return job

    def WatchJob(self, request, context):
        self._begin("WatchJob", context)
        with self.lock:
            self.watch_after.append(request.after_sequence)
            script = self.watch_scripts.pop(0) if self.watch_scripts else None
        if request.job_id not in self.events:
            context.abort(grpc.StatusCode.NOT_FOUND, "job not found")
        pending = [e for e in self.events[request.job_id]
                   if e.sequence > request.after_sequence]
        for i, event in enumerate(pending):
            if script is not None and i == script:
                context.abort(grpc.StatusCode.UNAVAILABLE, "dropped by test")
            yield event

    def PlanFreeze(self, request, context):
        self._begin("PlanFreeze", context)
        return pb.PlanFreezeResponse(total_parameters=10, trainable_parameters=4)


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.service = FakeService()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_FineTuneServiceServicer_to_server(self.service, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.client = Client("127.0.0.1:%d" % self.port, token="tok",
                             initial_backoff=0.01)

    def tearDown(self):
        self.client.close()
        self.server.stop(None)

    def test_submit_get_list_cancel(self):
        job = self.client.submit({"modelUri": "file:///m", "displayName": "a"})
        self.assertEqual(job.id, "job-1")
        self.assertEqual(self.client.get("job-1").spec.display_name, "a")
        for name in "bcd":
            self.client.submit(pb.FineTuneJob(model_uri="file:///m",
                                              display_name=name))
        names = [j.spec.display_name for j in self.client.list(page_size=3)]
        self.assertEqual(names, ["d", "c", "b", "a"])
        self.assertEqual(self.service.calls["ListJobs"], 2)
        self.assertEqual(len(list(self.client.list(page_size=3, limit=2))), 2)
        self.assertEqual(self.client.cancel("job-2").state,
                         pb.JOB_STATE_CANCELLED)
        with self.assertRaises(FreezetuneError) as ctx:
            self.client.cancel("job-2")
        self.assertEqual(ctx.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(ctx.exception.message, "job job-2 already finished")
        self.assertEqual(set(self.service.auth), {"Bearer tok"})
        self.assertEqual(self.client.plan({"modelUri": "file:///m"})
                         .trainable_parameters, 4)

    def test_errors_keep_code_and_message(self):
        with self.assertRaises(FreezetuneError) as ctx:
            self.client.get("job-x")
        self.assertEqual(ctx.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(ctx.exception.message, "job job-x not found")

    def test_get_retries_unavailable_submit_without_id_does_not(self):
        self.service.set_events("job-9", simple_log("job-9", 1,
                                                    pb.JOB_STATE_SUCCEEDED))
        self.service.fail["GetJob"] = [(grpc.StatusCode.UNAVAILABLE, "x")] * 2
        self.assertEqual(self.client.get("job-9").id, "job-9")
        self.assertEqual(self.service.calls["GetJob"], 3)

        self.service.fail["SubmitJob"] = [(grpc.StatusCode.UNAVAILABLE, "x")]
        with self.assertRaises(FreezetuneError):
            self.client.submit({"modelUri": "file:///m"})
        self.assertEqual(self.service.calls["SubmitJob"], 1)

        self.service.fail["SubmitJob"] = [(grpc.StatusCode.UNAVAILABLE, "x")]
        job = self.client.submit({"modelUri": "file:///m",
                                  "clientRequestId": "r1"})
        self.assertEqual(self.service.calls["SubmitJob"], 3)
        self.assertEqual(self.client.submit({"modelUri": "file:///m",
                                             "clientRequestId": "r1"}).id,
                         job.id)

    def test_watch_resumes_without_gaps_or_duplicates(self):
        self.service.set_events("job-w", simple_log(
            "job-w", 5, pb.JOB_STATE_FAILED, "step 12: non-finite loss"))
        self.service.watch_scripts = [3, 2]
        events = list(self.client.watch("job-w"))
        self.assertEqual([e.sequence for e in events], list(range(1, 9)))
        self.assertEqual(self.service.watch_after, [0, 3, 5])
        self.assertEqual(events[-1].state_change.message,
                         "step 12: non-finite loss")

    def test_watch_after_and_early_stop(self):
        self.service.set_events("job-w", simple_log("job-w", 5,
                                                    pb.JOB_STATE_SUCCEEDED))
        self.assertEqual([e.sequence for e in self.client.watch("job-w", 6)],
                         [7, 8])
        gen = self.client.watch("job-w")
        self.assertEqual(next(gen).sequence, 1)
        gen.close()  # cancels the call

    def test_watch_unknown_job_is_not_retried(self):
        with self.assertRaises(FreezetuneError) as ctx:
            list(self.client.watch("job-none"))
        self.assertEqual(ctx.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(self.service.calls["WatchJob"], 1)


if __name__ == "__main__":
    unittest.main()
