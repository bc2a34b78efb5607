"""Completion callbacks (FineTuneJob.notify, SweepSpec.notify): checking that
a POST really comes from the freezetune server.

The server signs every callback with the tenant's secret (its
--notify_secret_file):

    X-Freezetune-Timestamp: <unix seconds>
    X-Freezetune-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

A receiver recomputes the signature over the raw body, compares it in
constant time and rejects old timestamps (replays):

    from freezetune.callbacks import verify_signature
    if not verify_signature(SECRET, request.headers, request.body):
        return 401
    job = json.loads(request.body)   # the final Job (protobuf JSON mapping)

Retries of one callback carry the same X-Freezetune-Delivery (the job or
sweep id): deduplicate on it.
"""
import hashlib
import hmac
import time
from typing import Mapping, Optional, Union

__all__ = ["signature", "verify_signature", "MAX_AGE_SECONDS"]

# How old (or how far in the future) a signed timestamp may be.
MAX_AGE_SECONDS = 300


def _bytes(s: Union[str, bytes]) -> bytes:
    return s.encode() if isinstance(s, str) else s


def signature(secret: Union[str, bytes], timestamp: Union[int, str],
              body: Union[str, bytes]) -> str:
    """The X-Freezetune-Signature value for `body` signed at `timestamp`."""
    mac = hmac.new(_bytes(secret), str(timestamp).encode() + b"." + _bytes(body), hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: Union[str, bytes], headers: Mapping[str, str],
                     body: Union[str, bytes], now: Optional[float] = None,
                     max_age: int = MAX_AGE_SECONDS) -> bool:
    """True when `headers` (X-Freezetune-Timestamp, X-Freezetune-Signature;
    looked up case-insensitively) sign `body` with `secret` and the timestamp
    is within `max_age` seconds of `now` (default: the current time)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ts = lower.get("x-freezetune-timestamp", "")
    sig = lower.get("x-freezetune-signature", "")
    try:
        ts_value = int(ts)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts_value) > max_age:
        return False
    return hmac.compare_digest(sig, signature(secret, ts, body))
