#!/usr/bin/python3
"""Parameter-efficient recipes end to end through the Python client.

Usage: peft_python_e2e.py SERVER_BIN MODEL_BIN SOURCE_DIR
Against the real freezetune-server (see real_server.py): the BitFit recipe
(bias_only) previewed with PlanFreeze and trained to SUCCEEDED with its frozen
weights verified; LoRA previewed (adapter rows and totals), its bad inputs
rejected naming the field, and a LoRA job's PEFT adapter output checked
against the independent float64 reference of lora_numerics_test.py; masked-LM
continued pretraining (TASK_TYPE_MASKED_LM) previewed, its bad inputs rejected
naming the field, trained on plain text through the Python client and through
the `freezetune` CLI ($FREEZETUNE_CLI_BIN, the C++ client), its
BertForMaskedLM output checked against the float64 reference of
mlm_numerics_test.py and used as the base of a classification job; a delta
output (OUTPUT_FORMAT_DELTA) holding only the classifier, refused on a base
with other bytes and accepted on its own, and `freezetune-model apply-delta`
giving the same job's full output byte for byte.
"""
import json
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


    MLM = {"type": "TASK_TYPE_MASKED_LM"}

    def mlm_job(self, epochs):
        if not os.path.exists(self.dir + "/corpus.txt"):
            with open(self.dir + "/corpus.txt", "w") as f:
                for i in range(48):
                    f.write("%s %s %s\n\n" % (("the cat", "a dog", "my friend")[i % 3],
                                               ("sat on", "looked at")[(i // 3) % 2],
                                               ("the mat", "a tree", "the old house", "a river")[(i // 6) % 4]))
        job = self.job("corpus.txt", epochs)
        job["task"] = dict(self.MLM)
        job["hyperparameters"]["learningRate"] = 5e-3
        return job

    def test_mlm_plan_and_bad_inputs(self):
        plan = self.client.plan({"modelUri": "file://" + self.dir + "/model", "task": self.MLM,
                                 "freeze": {"headOnly": {}}})
        names = [p.name for p in plan.parameters]
        self.assertIn("cls.predictions.bias", names)
        self.assertFalse([n for n in names if n.startswith(("bert.pooler.", "classifier."))], names)
        trainable = [p.name for p in plan.parameters if p.trainable]
        self.assertTrue(trainable)
        self.assertTrue(all(n.startswith("cls.predictions.") for n in trainable), trainable)
        cases = [({"numLabels": 2}, "job.task: "),
                 ({"maskedLm": {"maskProbability": 1.5}}, "job.task.masked_lm.mask_probability: "),
                 ({"maskedLm": {"maskProbability": 0}}, "job.task.masked_lm.mask_probability: ")]
        for extra, field in cases:
            job = self.mlm_job(1)
            job["task"].update(extra)
            with self.assertRaises(FreezetuneError) as raised:
                self.client.submit(job)
            self.assertEqual(raised.exception.code.name, "INVALID_ARGUMENT")
            self.assertTrue(raised.exception.message.startswith(field), raised.exception.message)
        job = self.mlm_job(1)
        del job["task"]  # plain text cannot feed a classification job
        with self.assertRaises(FreezetuneError) as raised:
            self.client.submit(job)
        self.assertEqual(raised.exception.code.name, "INVALID_ARGUMENT")
        self.assertTrue(raised.exception.message.startswith("job.train.format: "), raised.exception.message)
        job = self.mlm_job(1)
        job["hyperparameters"]["selectionMetric"] = "macro_f1"
        with self.assertRaises(FreezetuneError) as raised:
            self.client.submit(job)
        self.assertTrue(raised.exception.message.startswith("job.hyperparameters.selection_metric: "),
                        raised.exception.message)

    def test_mlm_pretrain_then_classify(self):
        job = self.mlm_job(4)
        job["task"]["maskedLm"] = {"wholeWordMasking": True}
        final, events = self.run_job(job)
        self.assertTrue(final.result.frozen_weights_verified)
        self.assertEqual(final.result.selection_metric, "loss")
        evals = [e.eval for e in events if e.HasField("eval")]
        self.assertEqual(len(evals), 4)
        self.assertTrue(all(m.masked_tokens > 0 and m.masked_tokens == evals[0].masked_tokens for m in evals))
        self.assertLess(evals[-1].loss, evals[0].loss)
        out = final.result.output_uri[len("file://"):]
        with open(os.path.join(out, "config.json")) as f:
            self.assertEqual(json.load(f)["architectures"], ["BertForMaskedLM"])
        # As transformers' BertForMaskedLM reads it: the independent float64
        # reference of the tied head agrees with freezetune-model predict.
        script = os.path.join(real_server.SOURCE_DIR, "tests/numerics/mlm_numerics_test.py")
        r = subprocess.run(["/usr/bin/python3", script, "--tool", real_server.MODEL_BIN,
                            "--shared", os.path.join(real_server.SOURCE_DIR, "..", "shared"),
                            "--workdir", os.path.join(self.dir, "mlm_numerics"), "--model", out,
                            "--n", "30"], capture_output=True, text=True)
        if r.returncode != 77:
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

        # The pretrained encoder is the base of a classification job.
        cls = self.job("small.jsonl", 1)
        cls["modelUri"] = "file://" + out
        second, events = self.run_job(cls)
        self.assertTrue(second.result.frozen_weights_verified)
        notices = " ".join(e.notice.message for e in events if e.HasField("notice"))
        self.assertIn("bert.pooler.dense.weight", notices)  # fresh: BertForMaskedLM has no pooler
        with open(os.path.join(second.result.output_uri[len("file://"):], "config.json")) as f:
            self.assertEqual(json.load(f)["architectures"], ["BertForSequenceClassification"])

    def test_mlm_through_the_cli(self):
        cli = os.environ.get("FREEZETUNE_CLI_BIN")
        if not cli:
            self.skipTest("FREEZETUNE_CLI_BIN not set")
        self.mlm_job(1)  # writes corpus.txt
        base = [cli, "--server=http://" + self.client.target]
        r = subprocess.run(base + ["submit", "--model", "file://%s/model" % self.dir,
                                   "--train", "file://%s/corpus.txt" % self.dir, "--task", "mlm",
                                   "--mask-prob", "0.2", "--freeze", "bottom:1", "--epochs", "1",
                                   "--batch-size", "8", "--validation-split", "0.25"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        job_id = r.stdout.strip()
        final = self.client.wait(job_id)
        self.assertEqual(final.state, 3, final.error_message)
        self.assertEqual(final.spec.task.type, 2)  # TASK_TYPE_MASKED_LM
        self.assertAlmostEqual(final.spec.task.masked_lm.mask_probability, 0.2, places=6)
        r = subprocess.run(base + ["submit", "--model", "file://%s/model" % self.dir, "--train",
                                   "file://%s/corpus.txt" % self.dir, "--task", "mlm", "--mask-prob", "2"],
                           capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("job.task.masked_lm.mask_probability", r.stderr)

    def test_delta_output_and_its_base(self):
        job = self.job("small.jsonl", 1)
        job["freeze"] = {"headOnly": {}}
        job["outputFormat"] = "OUTPUT_FORMAT_DELTA"
        final, _ = self.run_job(job)
        self.assertTrue(final.result.frozen_weights_verified)
        out = final.result.output_uri[len("file://"):]
        with open(os.path.join(out, "delta.json")) as f:
            manifest = json.load(f)
        self.assertEqual(manifest["tensors"], ["classifier.weight", "classifier.bias"])
        self.assertFalse(os.path.exists(os.path.join(out, "model.safetensors")))
        # Another base (same shapes, other weights) is refused, naming the field.
        other = self.dir + "/other_model"
        if not os.path.exists(other):
            vocab = os.path.join(real_server.SOURCE_DIR, "tests/fixtures/data/bert-base-uncased-vocab.txt")
            subprocess.run([real_server.MODEL_BIN, "init", "--out", other, "--vocab", vocab, "--layers", "2",
                            "--hidden", "32", "--heads", "2", "--intermediate", "64", "--max-position", "64",
                            "--seed", "7"], check=True, capture_output=True)
        nxt = self.job("small.jsonl", 1)
        nxt["modelUri"] = "file://" + out
        for base, prefix in ((None, "job.base_model_uri: required"),
                             ("file://" + other, "job.base_model_uri: not the base this delta was made from")):
            if base:
                nxt["baseModelUri"] = base
            with self.assertRaises(FreezetuneError) as raised:
                self.client.submit(nxt)
            self.assertEqual(raised.exception.code.name, "INVALID_ARGUMENT")
            self.assertTrue(raised.exception.message.startswith(prefix), raised.exception.message)
        nxt["baseModelUri"] = "file://" + self.dir + "/model"
        second, _ = self.run_job(nxt)
        self.assertTrue(second.result.frozen_weights_verified)
        # Materialised on its base, the delta is a full model directory.
        full = self.dir + "/applied"
        r = subprocess.run([real_server.MODEL_BIN, "apply-delta", "--delta", out, "--base", self.dir + "/model",
                            "--out", full], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        # ... the very bytes the same job writes as a full output, and the
        # delta (the classifier alone) is a tiny fraction of them.
        job["outputFormat"] = "OUTPUT_FORMAT_FULL"
        whole, _ = self.run_job(job)
        whole_weights = os.path.join(whole.result.output_uri[len("file://"):], "model.safetensors")
        with open(whole_weights, "rb") as a, open(os.path.join(full, "model.safetensors"), "rb") as b:
            self.assertTrue(a.read() == b.read(), "base + delta differs from the full output")
        delta_size = os.path.getsize(os.path.join(out, "delta.safetensors"))
        self.assertLess(delta_size * 1000, os.path.getsize(whole_weights))
        r = subprocess.run([real_server.MODEL_BIN, "apply-delta", "--delta", out, "--base", other,
                            "--out", self.dir + "/applied_wrong"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2, r.stderr)  # a bad --base: a usage error, naming the flag
        self.assertIn("apply-delta: --base: not the base this delta was made from", r.stderr)

if __name__ == "__main__":
    unittest.main(verbosity=2)
