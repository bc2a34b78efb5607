"""What the sync and the asyncio client share: where to connect, credentials,
the retry/backoff policy and the bookkeeping of a resumable watch. Pure
logic; neither client's I/O is here.
"""
import os
import random
import time
from dataclasses import dataclass
from typing import Optional, Tuple

import grpc

from freezetune.errors import DataLoss, FreezetuneError, error_for
from freezetune.states import TERMINAL_STATES

DEFAULT_TARGET = "127.0.0.1:50051"

# Codes after which a watch reconnects: the server went away or asked us to
# retry. CANCELLED that we did not ask for is a server shutting down.
WATCH_RETRYABLE = frozenset([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED,
                             grpc.StatusCode.CANCELLED])


def resolve_target(target: Optional[str], tls: Optional[bool]) -> Tuple[str, bool]:
    """(host:port, tls) from an explicit target, else $FREEZETUNE_SERVER, else
    127.0.0.1:50051. "http://h:p" and "https://h:p" are accepted (https
    turns TLS on unless tls=False is given); a trailing "/" is dropped."""
    target = target or os.environ.get("FREEZETUNE_SERVER") or DEFAULT_TARGET
    scheme_tls = None
    for scheme, is_tls in (("http://", False), ("https://", True)):
        if target.startswith(scheme):
            target, scheme_tls = target[len(scheme):].rstrip("/"), is_tls
    if tls is None:
        tls = bool(scheme_tls)
    return target, tls


def resolve_token(token: Optional[str]) -> Optional[str]:
    """An explicit token, else $FREEZETUNE_TOKEN, else None."""
    if token is not None:
        return token or None
    return os.environ.get("FREEZETUNE_TOKEN") or None


def _read(path: Optional[str]) -> Optional[bytes]:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def credentials(ca_cert: Optional[str], client_cert: Optional[str],
                client_key: Optional[str]) -> grpc.ChannelCredentials:
    """TLS credentials from PEM file paths (None: system roots / no client cert)."""
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key go together")
    return grpc.ssl_channel_credentials(_read(ca_cert), _read(client_key), _read(client_cert))


@dataclass
class RetryPolicy:
    max_retries: int = 4
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    watch_reconnect_window: float = 60.0

    def backoff(self, attempt: int) -> float:
        """initial * 2^attempt, capped, with +-20% jitter."""
        d = min(self.initial_backoff * (2 ** attempt), self.max_backoff)
        return d * random.uniform(0.8, 1.2)

    def retry_unary(self, code: grpc.StatusCode, attempt: int, idempotent: bool) -> bool:
        return idempotent and code == grpc.StatusCode.UNAVAILABLE and attempt < self.max_retries


def is_terminal_event(event) -> bool:
    return event.HasField("state_change") and event.state_change.state in TERMINAL_STATES


class WatchCursor:
    """The state of one resumable WatchJob: the last delivered sequence and
    when to give up reconnecting. One per watch() call."""

    def __init__(self, job_id: str, after_sequence: int, policy: RetryPolicy) -> None:
        self.job_id = job_id
        self.last = max(0, after_sequence)
        self.policy = policy
        self.failures = 0
        self.got_event = False
        self.last_progress = time.monotonic()

    def accept(self, event) -> bool:
        """True when `event` is new and is to be delivered; False for a
        replayed one. DataLoss for a gap."""
        if event.sequence <= self.last:
            return False
        if event.sequence != self.last + 1:
            raise DataLoss(grpc.StatusCode.DATA_LOSS,
                           "watch %s: expected event %d, server sent %d"
                           % (self.job_id, self.last + 1, event.sequence))
        self.last = event.sequence
        self.failures = 0
        self.got_event = True
        self.last_progress = time.monotonic()
        return True

    def complete(self, job) -> bool:
        """After a stream ended with OK: is there nothing more to see?"""
        return job.state in TERMINAL_STATES and job.last_sequence <= self.last

    def next_delay(self, code: grpc.StatusCode, details: str) -> float:
        """Seconds to wait before reopening the stream, or raises the error
        when the code is not retryable or reconnecting has gone on too long
        (before the first event: max_retries attempts; after: the reconnect
        window since the last event)."""
        if code not in WATCH_RETRYABLE:
            raise error_for(code, details)
        if self.got_event:
            give_up = time.monotonic() - self.last_progress > self.policy.watch_reconnect_window
        else:
            give_up = self.failures >= self.policy.max_retries
        if give_up:
            raise error_for(code, details)
        delay = self.policy.backoff(self.failures)
        self.failures += 1
        return delay


def as_error(e: grpc.RpcError) -> FreezetuneError:
    return error_for(e.code(), e.details() or "")
