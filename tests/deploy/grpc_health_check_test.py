#!/usr/bin/python3
"""Tests docker/grpc_health_check.py (the images' HEALTHCHECK) against an
in-process grpcio server that implements grpc.health.v1.Health/Check by hand:
SERVING -> exit 0; NOT_SERVING, an unknown service (NOT_FOUND) and no server
-> exit 1; the request carries the service name.

    /usr/bin/python3 tests/deploy/grpc_health_check_test.py [REPO_ROOT]"""
import os
import socket
import subprocess
import sys
from concurrent import futures

import grpc

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "docker", "grpc_health_check.py")
STATUS = {"": 1, "freezetune.v1.FineTuneService": 1, "draining": 2}  # 1 SERVING, 2 NOT_SERVING
seen = []


def check(request, context):
    # HealthCheckRequest{service = 1}: 0x0a, length, bytes.
    if request and (request[0] != 0x0A or request[1] != len(request) - 2):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad HealthCheckRequest {request!r}")
    service = request[2:].decode() if request else ""
    seen.append(service)
    if service not in STATUS:
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
    return bytes([0x08, STATUS[service]])


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, "--timeout", "3", *args],
                          capture_output=True, text=True).returncode


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    target = f"127.0.0.1:{port}"
    failures = []
    cases = [
        ((target,), 0, ""),
        (("--service", "freezetune.v1.FineTuneService", target), 0, "freezetune.v1.FineTuneService"),
        (("--service", "draining", target), 1, "draining"),
        (("--service", "nope", target), 1, "nope"),
    ]
    for args, want, service in cases:
        seen.clear()
        got = run(*args)
        if got != want:
            failures.append(f"{args}: exit {got}, want {want}")
        if seen != [service]:
            failures.append(f"{args}: server saw service {seen}, want [{service!r}]")
    server.stop(0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    if run(f"127.0.0.1:{free}") != 1:
        failures.append("no server: exit 0, want 1")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    print(f"{len(cases) + 1} health check cases pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
