#!/usr/bin/python3
"""gRPC health check (grpc.health.v1.Health/Check) for the image's HEALTHCHECK.

    grpc_health_check.py [--service NAME] [--timeout SECONDS] [--ca FILE] HOST:PORT

Exit 0 when the server answers SERVING, 1 otherwise (NOT_SERVING, error,
timeout). Needs only python3-grpcio from the package list: the two messages
are encoded by hand (HealthCheckRequest{service}=field 1 string,
HealthCheckResponse{status}=field 1 enum, SERVING=1), so no generated code or
grpcio-health-checking package is needed. --ca switches to TLS."""
import argparse
import sys

import grpc

SERVING = 1


def encode_request(service):
    data = service.encode()
    if not data:
        return b""
    if len(data) > 127:
        raise ValueError("service name too long")
    return b"\x0a" + bytes([len(data)]) + data


def decode_status(payload):
    # Field 1, varint: tag 0x08. Absent means UNKNOWN (0).
    i = 0
    while i < len(payload):
        tag = payload[i]
        i += 1
        if tag == 0x08:
            value, shift = 0, 0
            while True:
                b = payload[i]
                i += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    return value
        return 0
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--service", default="")
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--ca", help="PEM CA bundle: connect with TLS")
    args = ap.parse_args()
    if args.ca:
        with open(args.ca, "rb") as f:
            channel = grpc.secure_channel(args.target, grpc.ssl_channel_credentials(f.read()))
    else:
        channel = grpc.insecure_channel(args.target)
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    try:
        reply = check(encode_request(args.service), timeout=args.timeout)
    except grpc.RpcError as e:
        print(f"health check of {args.target} failed: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    status = decode_status(reply)
    if status != SERVING:
        print(f"{args.target} is not serving (status {status})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
