#!/usr/bin/python3
"""The `freezetune` CLI (the built binary) against the real server, as a user
sees it: on a pseudo-terminal where the behaviour depends on one.

Usage: cli_e2e.py SERVER_BIN MODEL_BIN SOURCE_DIR, with $FREEZETUNE_CLI_BIN
(the freezetune binary) and $FREEZETUNE_VERSION (the CMake project version).

Covers: Ctrl-C during watch (pty: detach message, exit 130, the job keeps
running, --after N resumes right after what was shown); cancel "(was
RUNNING)" and --wait; list and sweep-list printing the same piped and on a
terminal; -o name; --version on every binary; freezetune-model --help;
--server http://host:port; a server error naming the CLI flag; the default
max_seq_length fitting a 64-position model; bash completion;
trainer_state.json and history.csv in the output directory; and
`freezetune report` for a job and a sweep, rendered by headless Chromium to a
PNG whose plot area shows the curve.
"""
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import termios
import time
import unittest

import real_server
from render_check import chromium_png, count_color, read_png

real_server.take_argv()

from freezetune import JobState  # noqa: E402

CLI = os.environ["FREEZETUNE_CLI_BIN"]
VERSION = os.environ["FREEZETUNE_VERSION"]


def run(args, env=None, timeout=120):
    e = {k: v for k, v in os.environ.items() if not k.startswith("FREEZETUNE_")}
    e.update(env or {})
    return subprocess.run([CLI] + args, capture_output=True, text=True, env=e, timeout=timeout)


class Pty:
    """`freezetune ARGS` with a pseudo-terminal as its controlling terminal
    (stdin, stdout and stderr), 100 columns wide."""

    def __init__(self, args):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))

        def controlling_tty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        env = {k: v for k, v in os.environ.items() if not k.startswith("FREEZETUNE_")}
        self.proc = subprocess.Popen([CLI] + args, stdin=slave, stdout=slave, stderr=slave,
                                     preexec_fn=controlling_tty, env=env)
        os.close(slave)
        self.output = b""

    def read_until(self, pattern, timeout=60):
        deadline = time.time() + timeout
        while not re.search(pattern, self.output):
            if time.time() > deadline:
                raise AssertionError("no %r in %r" % (pattern, self.output[-2000:]))
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    time.sleep(0.05)

    def finish(self, timeout=60):
        rc = self.proc.wait(timeout=timeout)
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk
        os.close(self.master)
        return rc, self.output.decode("utf-8", "replace").replace("\r\n", "\n")


class CliE2E(real_server.RealServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server_flag = "--server=http://" + cls.client.target

    def cli(self, *args, **kw):
        return run([self.server_flag] + list(args), **kw)

    def submit(self, dataset, epochs, *extra):
        r = self.cli("submit", "--model", "file://%s/model" % self.dir,
                     "--train", "file://%s/%s" % (self.dir, dataset), "--validation-split", "0.25",
                     "--freeze", "bottom:1", "--epochs", str(epochs), "--batch-size", "8",
                     "--lr", "1e-3", "--log-every", "1", *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()  # piped: the id

    def test_versions_and_model_tool_help(self):
        self.assertEqual(run(["--version"]).stdout, "freezetune %s\n" % VERSION)
        for binary, name in ((real_server.SERVER_BIN, "freezetune-server"),
                             (real_server.MODEL_BIN, "freezetune-model")):
            out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
            self.assertTrue(out.startswith("%s %s" % (name, VERSION)), out)
        r = subprocess.run([real_server.MODEL_BIN, "--help"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        for text in ("init", "inspect", "tokenize", "predict", "--max-position P",
                     "(default 512)", "examples:"):
            self.assertIn(text, r.stdout)

    def test_ctrl_c_detaches_then_cancel_waits(self):
        job = self.submit("large.jsonl", 50)
        t = Pty([self.server_flag, "watch", job])
        t.read_until(rb"\] \d+/\d+")  # the progress line is showing
        os.write(t.master, b"\x03")     # Ctrl-C, through the terminal
        rc, out = t.finish()
        self.assertEqual(rc, 130, out)
        m = re.search(r"detached; (job-\w+) keeps running\. Follow: freezetune watch \1 "
                      r"--after (\d+)\. Stop: freezetune cancel \1\n", out)
        self.assertIsNotNone(m, out)
        self.assertEqual(m.group(1), job)
        after = int(m.group(2))
        self.assertGreater(after, 0)
        self.assertIs(JobState(self.client.get(job).state), JobState.RUNNING)
        # --after N resumes right after the last event shown.
        self.assertEqual(next(iter(self.client.watch(job, after_sequence=after))).sequence,
                         after + 1)

        r = self.cli("cancel", job, "--wait")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "cancelling %s (was RUNNING)\n%s CANCELLED\n" % (job, job))
        self.assertIs(JobState(self.client.get(job).state), JobState.CANCELLED)

    def test_job_output_report_and_lists(self):
        # No --max-seq-length: the default (128) shrinks to the model's 64
        # positions instead of failing.
        job = self.submit("small.jsonl", 3, "--eval-every", "2")
        r = self.cli("watch", job, "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        events = [json.loads(line) for line in r.stdout.splitlines()]
        train_losses = [e["train"]["loss"] for e in events if "train" in e]
        ended = self.client.get(job)
        self.assertIs(JobState(ended.state), JobState.SUCCEEDED)

        # trainer_state.json (HF Trainer layout) and history.csv in the output.
        out_dir = ended.result.output_uri[len("file://"):]
        with open(out_dir + "/trainer_state.json") as f:
            state = json.load(f)
        self.assertEqual(state["global_step"], ended.result.steps)
        logged = [e["loss"] for e in state["log_history"] if "loss" in e]
        self.assertEqual(len(logged), len(train_losses))
        for a, b in zip(logged, train_losses):
            self.assertAlmostEqual(a, b, places=5)
        self.assertTrue(any("eval_accuracy" in e for e in state["log_history"]))
        self.assertEqual(state["best_model_checkpoint"], out_dir)
        with open(out_dir + "/history.csv") as f:
            self.assertEqual(len(f.read().splitlines()), len(state["log_history"]))

        # report: SVG and HTML, rendered by Chromium.
        svg, html = self.dir + "/job.svg", self.dir + "/job.html"
        for path in (svg, html):
            r = self.cli("report", job, "-o", path)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, "wrote %s\n" % path)
        with open(svg) as f:
            text = f.read()
        for label in (">step<", ">loss<", ">learning rate<", ">accuracy<", "training loss"):
            self.assertIn(label, text)
        with open(html) as f:
            page = f.read()
        self.assertNotIn("<script", page)
        self.assertIn(text, page)
        png = self.dir + "/job.png"
        chromium_png(svg, png, 900, 900)
        w, h, rows = read_png(png)
        self.assertGreaterEqual((w, h), (900, 880))
        # The first chart's plot area (x 64-884, y 64-252) holds the blue
        # training-loss polyline; outside the charts the page is white.
        self.assertGreater(count_color(rows, (31, 119, 180), (66, 66, 882, 250)), 100)
        self.assertGreater(count_color(rows, (255, 127, 14), (66, 66, 882, 250)), 10)
        self.assertEqual(count_color(rows, (31, 119, 180), (0, 0, 60, 60)), 0)

        # list: the same piped and on a terminal (but for the ages ticking).
        piped = self.cli("list").stdout
        t = Pty([self.server_flag, "list"])
        rc, tty = t.finish()
        self.assertEqual(rc, 0)
        ages = re.compile(r"just now|\d+[smhd] ago")
        self.assertEqual(ages.sub("AGE", tty), ages.sub("AGE", piped))
        self.assertTrue(piped.startswith("ID "), piped)
        self.assertIn(job + "\n", self.cli("list", "-o", "name").stdout)

    def test_sweep_list_and_report(self):
        spec = {"job": self.job("small.jsonl", 1), "freezeDepths": [0, 1]}
        del spec["job"]["freeze"]
        sweep = self.client.wait_sweep(self.client.submit_sweep(spec).id)
        piped = self.cli("sweep-list").stdout
        t = Pty([self.server_flag, "sweep-list"])
        rc, tty = t.finish()
        self.assertEqual(rc, 0)
        ages = re.compile(r"just now|\d+[smhd] ago")
        self.assertEqual(ages.sub("AGE", tty), ages.sub("AGE", piped))
        self.assertIn(sweep.id, piped)
        self.assertIn("SUCCEEDED", piped)
        self.assertNotIn("SWEEP_STATE", piped)
        self.assertEqual(self.cli("sweep-list", "-o", "name").stdout.split(), [sweep.id])

        # On a terminal the sweep table is redrawn in place: the cursor goes
        # back up over the previous table (ESC [ n F) and clears below it.
        t = Pty([self.server_flag, "sweep-watch", sweep.id])
        rc, tty = t.finish()
        self.assertEqual(rc, 0, tty)
        lines_up = re.findall(r"\x1b\[(\d+)F\x1b\[J", tty)
        self.assertTrue(lines_up, tty)
        self.assertEqual(int(lines_up[0]), tty.split("\x1b[")[0].count("\n"))
        self.assertIn("winner: ", tty)

        html = self.dir + "/sweep.html"
        r = self.cli("report", sweep.id, "-o", html)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(html) as f:
            page = f.read()
        for label in ("trainable parameters (log scale)", "Wall time per candidate", "depth=0",
                      "depth=1"):
            self.assertIn(label, page)
        png = self.dir + "/sweep.png"
        chromium_png(html, png, 1000, 1200)
        _, _, rows = read_png(png)
        # Markers of both candidates and the bars: the palette's first two colours.
        self.assertGreater(count_color(rows, (31, 119, 180), (0, 100, 1000, 1200)), 50)
        self.assertGreater(count_color(rows, (255, 127, 14), (0, 100, 1000, 1200)), 50)

    def test_errors_name_the_flag_and_completion(self):
        r = self.cli("submit", "--model", "file://%s/model" % self.dir,
                     "--train", "file://%s/small.jsonl" % self.dir, "--max-seq-length", "1000")
        self.assertEqual(r.returncode, 1)
        self.assertIn("--max-seq-length (job.hyperparameters.max_seq_length): must be in [3, 64]",
                      r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)

        script = run(["completion", "bash"]).stdout

        def complete(*words):
            line = " ".join(words)
            bash = ("source /dev/stdin; COMP_WORDS=(%s); COMP_CWORD=%d; _freezetune; "
                    "echo \"${COMPREPLY[@]}\"" % (line, len(words) - 1))
            return subprocess.run(["bash", "-c", bash], input=script, capture_output=True,
                                  text=True).stdout.split()

        self.assertEqual(complete("freezetune", "sweep-l"), ["sweep-list"])
        self.assertEqual(complete("freezetune", "list", "--st"), ["--state"])
        self.assertEqual(complete("freezetune", "list", "--state", "run"), ["running"])
        self.assertEqual(complete("freezetune", "get", "-o", "w"), ["wide"])
        self.assertIn("--epochs", complete("freezetune", "submit", "--ep"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
