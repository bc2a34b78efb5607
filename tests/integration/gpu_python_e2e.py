#!/usr/bin/python3
"""Issue 13 through the real server and both clients: precision and
data-parallel jobs submitted with the Python client (freezetune.Client) and
the freezetune CLI; submit-time errors; a killed rank.

Usage: gpu_python_e2e.py SERVER_BIN MODEL_BIN SOURCE_DIR  (CLI: $FREEZETUNE_CLI)
The server runs with its default 2 CPU slots, so a 2-rank job gets both.
"""
import json
import os
import signal
import subprocess
import time
import unittest

import real_server

real_server.take_argv()

from freezetune import FreezetuneError  # noqa: E402

SUCCEEDED, FAILED = 3, 4


class GpuOpsE2E(real_server.RealServerTestCase):
    def wait(self, job_id, timeout=240):
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.client.get(job_id)
            if job.state in (SUCCEEDED, FAILED, 5):
                return job
            time.sleep(0.2)
        self.fail("job %s did not finish" % job_id)

    def test_bf16_job_carries_its_precision(self):
        spec = self.job("small.jsonl", 2)
        spec["hyperparameters"]["precision"] = "PRECISION_BF16"
        job = self.wait(self.client.submit(spec).id)
        self.assertEqual(job.state, SUCCEEDED, job.error_message)
        self.assertEqual(job.spec.hyperparameters.precision, 2)  # PRECISION_BF16
        self.assertEqual(job.result.precision, 2)
        self.assertTrue(job.result.frozen_weights_verified)

    def test_data_parallel_job_and_plan_report_allreduce_bytes(self):
        spec = self.job("small.jsonl", 2)
        spec["resources"] = {"dataParallel": 2}
        job = self.wait(self.client.submit(spec).id)
        self.assertEqual(job.state, SUCCEEDED, job.error_message)
        self.assertEqual(job.result.data_parallel, 2)
        plan = self.client.plan({"modelUri": spec["modelUri"], "freeze": spec["freeze"]})
        self.assertEqual(plan.allreduce_bytes_per_step, plan.trainable_parameters * 4)
        self.assertEqual(job.result.allreduce_bytes_per_step, plan.allreduce_bytes_per_step)
        events = list(self.client.watch(job.id))
        running = [e.state_change.message for e in events if e.HasField("state_change")]
        # Rank 0 runs on the slot of the worker that took the job, listed first.
        self.assertTrue({"running in slots 0, 1 (cpu, cpu)",
                         "running in slots 1, 0 (cpu, cpu)"} & set(running), running)

    def test_submit_time_errors_name_the_field(self):
        cases = [({"device": "cuda"}, "job.device: no CUDA device"),
                 ({"resources": {"dataParallel": 3}}, "job.resources.data_parallel: 3 ranks need 3 slots"),
                 ({"hyperparameters": {"precision": "PRECISION_FP16"}}, "job.hyperparameters.precision: fp16")]
        for change, want in cases:
            spec = self.job("small.jsonl", 1)
            for key, value in change.items():
                if isinstance(value, dict) and key in spec:
                    spec[key].update(value)
                else:
                    spec[key] = value
            with self.assertRaises(FreezetuneError) as err:
                self.client.submit(spec)
            self.assertEqual(err.exception.code.name, "INVALID_ARGUMENT", want)
            self.assertIn(want, err.exception.message)

    def test_a_killed_rank_fails_the_job_and_the_server_stays_up(self):
        spec = self.job("large.jsonl", 50)
        spec["resources"] = {"dataParallel": 2}
        job = self.client.submit(spec)
        rank1 = None
        for event in self.client.watch(job.id):
            if event.HasField("notice") and event.notice.message.startswith("data-parallel: 2 ranks"):
                pids = event.notice.message.split("(pids ")[1].split(")")[0].split(", ")
                rank1 = int(pids[1])
            if event.HasField("train") and rank1:
                break
        self.assertIsNotNone(rank1)
        killed_at = time.time()
        os.kill(rank1, signal.SIGKILL)
        failed = self.wait(job.id, timeout=60)
        self.assertEqual(failed.state, FAILED)
        self.assertIn("data-parallel rank 1 (pid %d) was killed by signal 9" % rank1, failed.error_message)
        self.assertLess(time.time() - killed_at, 30)
        # The server is up and runs the next job.
        after = self.wait(self.client.submit(self.job("small.jsonl", 1)).id)
        self.assertEqual(after.state, SUCCEEDED, after.error_message)

    def test_cli_flags(self):
        cli = os.environ["FREEZETUNE_CLI"]
        out = subprocess.run(
            [cli, "--server", self.client.target, "submit", "--watch", "--json", "--model", "file://" + self.dir + "/model",
             "--train", self.dir + "/small.jsonl", "--freeze", "bottom:1", "--epochs", "1", "--batch-size", "8",
             "--max-seq-length", "16", "--validation-split", "0.25", "--precision", "bf16", "--data-parallel", "2",
             "--output-dtype", "bf16"],
            capture_output=True, text=True, timeout=240)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        result = next(line["result"] for line in lines if "result" in line)
        self.assertEqual(result["precision"], "PRECISION_BF16")
        self.assertEqual(result["dataParallel"], 2)
        bad = subprocess.run([cli, "--server", self.client.target, "submit", "--model", "m", "--train", "t",
                              "--precision", "fp8"], capture_output=True, text=True)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("--precision: expected fp32, bf16 or fp16", bad.stderr)


if __name__ == "__main__":
    unittest.main()
