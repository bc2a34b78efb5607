#!/usr/bin/python3
"""`make demo`'s script end to end on a smaller slice, and the stage-2
report it writes, rendered by headless chromium.

Usage: demo_report_test.py SOURCE_DIR BUILD_DIR
Runs scripts/demo.sh (DEMO_TRAIN_LINES=1000, DEMO_DIR in a temp dir) with
the built server, model tool and CLI; checks that the first training event
is printed within a minute of the start, that both stages succeed, that the
output directory holds trainer_state.json and history.csv, and that
report.svg (the stage-2 job's curves) renders to a PNG whose loss chart
shows the training curve. The demo itself runs with the full 10,000
sentences; this test only shortens training.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from render_check import chromium_png, count_color, read_png

SOURCE_DIR, BUILD_DIR = sys.argv[1:3]
del sys.argv[1:3]


class DemoReport(unittest.TestCase):
    def test_demo_and_its_report(self):
        demo = tempfile.mkdtemp(prefix="ft_demo_")
        env = dict(os.environ, BUILD_DIR=BUILD_DIR, DEMO_DIR=demo, DEMO_TRAIN_LINES="1000")
        env.pop("FREEZETUNE_SERVER", None)
        start = time.monotonic()
        proc = subprocess.Popen([os.path.join(SOURCE_DIR, "scripts/demo.sh")], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines, first_progress = [], None
        for line in proc.stdout:
            lines.append(line)
            if first_progress is None and line.startswith("{") and '"train"' in line:
                first_progress = time.monotonic() - start
        rc = proc.wait(timeout=600)
        out = "".join(lines)
        self.assertEqual(rc, 0, out[-4000:])
        self.assertIsNotNone(first_progress, out[-4000:])
        self.assertLess(first_progress, 60.0)
        print("first progress line after %.1f s" % first_progress)
        self.assertEqual(out.count('"state":"JOB_STATE_SUCCEEDED"'), 2, out[-4000:])

        with open(demo + "/output/trainer_state.json") as f:
            state = json.load(f)
        self.assertGreater(state["global_step"], 0)
        self.assertTrue(any("eval_accuracy" in e for e in state["log_history"]))
        self.assertTrue(os.path.exists(demo + "/output/history.csv"))
        self.assertTrue(os.path.exists(demo + "/report.html"))

        svg = demo + "/report.svg"
        with open(svg) as f:
            text = f.read()
        for label in (">step<", ">loss<", ">learning rate<", ">accuracy<"):
            self.assertIn(label, text)
        png = demo + "/report.png"
        chromium_png(svg, png, 900, 900)
        _, _, rows = read_png(png)
        # The loss chart's plot area holds the blue training-loss polyline.
        self.assertGreater(count_color(rows, (31, 119, 180), (66, 66, 882, 250)), 100)
        shutil.rmtree(demo)


if __name__ == "__main__":
    unittest.main(verbosity=2)
