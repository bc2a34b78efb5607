#!/usr/bin/python3
"""Parameter-efficient recipes end to end through the Python client.

Usage: peft_python_e2e.py SERVER_BIN MODEL_BIN SOURCE_DIR
Against the real freezetune-server (see real_server.py): the BitFit recipe
(bias_only) previewed with PlanFreeze and trained to SUCCEEDED with its frozen
weights verified; LoRA previewed (adapter rows and totals), its bad inputs
rejected naming the field, and a LoRA job's PEFT adapter output checked
against the independent float64 reference of lora_numerics_test.py.
"""
import os
import subprocess
import unittest

import real_server

real_server.take_argv()

from freezetune import FreezetuneError  # noqa: E402


class PeftE2E(real_server.RealServerTestCase):
    def run_job(self, job):
        submitted = self.client.submit(job)
        events = list(self.client.watch(submitted.id))
        final = self.client.get(submitted.id)
        self.assertEqual(final.state, 3, final.error_message)  # JOB_STATE_SUCCEEDED
        return final, events

    def test_bias_only(self):
        plan = self.client.plan({"modelUri": "file://" + self.dir + "/model",
                                 "freeze": {"biasOnly": {}}})
        trainable = [p for p in plan.parameters if p.trainable]
        self.assertTrue(trainable)
        for p in plan.parameters:
            is_head = p.name.startswith("classifier.")
            self.assertEqual(p.trainable, is_head or p.name.endswith(".bias"), p.name)
            if not p.trainable:
                self.assertEqual(p.decided_by, "bias_only")
        job = self.job("small.jsonl", 1)
        job["freeze"] = {"biasOnly": {}}
        final, _ = self.run_job(job)
        self.assertTrue(final.result.frozen_weights_verified)
        self.assertEqual(final.result.trainable_parameters, plan.trainable_parameters)

    LORA = {"rank": 4, "alpha": 8,
            "targetModules": r"bert\.encoder\.layer\.\d+\.attention\.self\.(query|value)"}

    def test_lora_plan_and_bad_specs(self):
        plan = self.client.plan({"modelUri": "file://" + self.dir + "/model", "freeze": {"lora": self.LORA}})
        adapters = [p for p in plan.parameters if p.adapter]
        self.assertEqual(len(adapters), 2 * 2 * 2)  # 2 layers x (query, value) x (A, B)
        for p in adapters:
            self.assertTrue(p.trainable)
            self.assertTrue(p.decided_by.startswith("lora.target_modules: "), p.decided_by)
        self.assertEqual(plan.adapter_parameters, sum(p.numel for p in adapters))
        self.assertEqual(plan.trainable_parameters,
                         plan.adapter_parameters + sum(p.numel for p in plan.parameters
                                                       if p.name.startswith("classifier.")))
        for lora, field in (({"rank": 0, "targetModules": ".*query"}, "job.freeze.lora.rank"),
                            ({"rank": 2, "alpha": -1, "targetModules": ".*query"}, "job.freeze.lora.alpha"),
                            ({"rank": 2, "targetModules": ".*LayerNorm"}, "job.freeze.lora.target_modules"),
                            ({"rank": 2, "targetModules": "nothing"}, "job.freeze.lora.target_modules")):
            job = self.job("small.jsonl", 1)
            job["freeze"] = {"lora": lora}
            with self.assertRaises(FreezetuneError) as raised:
                self.client.submit(job)
            self.assertEqual(raised.exception.code.name, "INVALID_ARGUMENT")
            self.assertTrue(raised.exception.message.startswith(field + ": "), raised.exception.message)

    def test_lora_peft_adapter_matches_reference(self):
        job = self.job("small.jsonl", 2)
        job["freeze"] = {"lora": self.LORA}
        job["outputFormat"] = "OUTPUT_FORMAT_PEFT_ADAPTER"
        job["hyperparameters"]["learningRate"] = 1e-2
        final, _ = self.run_job(job)
        self.assertTrue(final.result.frozen_weights_verified)
        out = final.result.output_uri[len("file://"):]
        self.assertTrue(os.path.exists(os.path.join(out, "adapter_config.json")))
        # The adapter as written, read with PEFT's key names by the independent
        # float64 reference: base + adapter and the merged model agree with it.
        script = os.path.join(real_server.SOURCE_DIR, "tests/numerics/lora_numerics_test.py")
        r = subprocess.run(["/usr/bin/python3", script, "--tool", real_server.MODEL_BIN,
                            "--shared", os.path.join(real_server.SOURCE_DIR, "..", "shared"),
                            "--workdir", os.path.join(self.dir, "lora_numerics"),
                            "--base", self.dir + "/model", "--adapter", out, "--n", "40"],
                           capture_output=True, text=True)
        if r.returncode == 77:
            self.skipTest(r.stdout.strip())
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
