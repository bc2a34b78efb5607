"""A real freezetune-server for the Python benchmarks (sweep_bench.py,
recipes_bench.py): started on 127.0.0.1:0 with its own data dir, driven
through the Python client (freezetune.Client, so PYTHONPATH needs
client/python and <build>/python), stopped with SIGTERM.

Jobs and sweeps are timed from submit to their last event, as a user of the
service sees them; server start-up is not counted.
"""
import os
import signal
import subprocess
import sys
import time

from freezetune import Client

SUCCEEDED = 3  # JobState.JOB_STATE_SUCCEEDED


class Server:
    """One freezetune-server process in DIR/NAME (data dir, port file, log).

    data_roots: the directories its jobs may read and write (--data_roots).
    flags: further server flags, e.g. ("--cpu_slots=1",)."""

    def __init__(self, server_bin, work_dir, name, data_roots, flags=()):
        self.dir = os.path.join(work_dir, name)
        os.makedirs(self.dir)
        port_file = self.dir + "/port"
        self.log_path = self.dir + "/server.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [server_bin, "--listen=127.0.0.1:0", "--port_file=" + port_file,
             "--metrics_listen=127.0.0.1:0", "--data_dir=" + self.dir + "/data",
             "--data_roots=" + ",".join(data_roots)] + list(flags),
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not (os.path.exists(port_file) and open(port_file).read().endswith("\n")):
            if self.proc.poll() is not None or time.time() > deadline:
                sys.exit("server did not start: " + open(self.log_path).read())
            time.sleep(0.05)
        self.client = Client("127.0.0.1:" + open(port_file).read().strip(), timeout=120)

    def vm_hwm_bytes(self):
        """The server process's peak resident set size so far (VmHWM)."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self):
        """User + system CPU seconds the server process has used so far
        (its threads included): unlike wall time, not inflated when other
        work on the machine takes the cores."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self):
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def run_job(server, spec, events=None):
    """Submits one job and watches it to its end. Returns (seconds, Job);
    exits unless it SUCCEEDED. events: a list that receives every JobEvent."""
    t0 = time.monotonic()
    job = server.client.submit(spec)
    for event in server.client.watch(job.id):
        if events is not None:
            events.append(event)
    elapsed = time.monotonic() - t0
    job = server.client.get(job.id)
    if job.state != SUCCEEDED:
        sys.exit("job %s ended in state %d: %s" % (job.id, job.state, job.error_message))
    return elapsed, job


def run_sweep(server, spec):
    """Submits one sweep and watches it to its end. Returns (seconds, Sweep)."""
    t0 = time.monotonic()
    sweep = server.client.submit_sweep(spec)
    for _ in server.client.watch_sweep(sweep.id):
        pass
    elapsed = time.monotonic() - t0
    return elapsed, server.client.get_sweep(sweep.id)


def dir_bytes(path):
    """Bytes of the regular files under path (what the output takes on disk,
    apparent sizes)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total
