"""Exceptions raised by the freezetune clients.

Every failed call raises a FreezetuneError subclass chosen by the gRPC status
code, so callers catch what they can handle:

    try:
        job = client.submit(spec)
    except freezetune.InvalidArgument as e:
        print(e.field, e.reason)      # "job.train.uri", "no such file ..."
    except freezetune.Unavailable:
        ...                           # server down (after the client's retries)

`code` is the grpc.StatusCode, `message` the server's text. For
INVALID_ARGUMENT the server starts the message with the field path
("job.freeze.rules[0].pattern: ..."); `field` holds it (None when the message
names none) and `reason` the rest.
"""
import re
from typing import Dict, Optional, Type

import grpc

__all__ = [
    "FreezetuneError", "InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition",
    "OutOfRange", "PermissionDenied", "Unauthenticated", "ResourceExhausted", "Unavailable",
    "DeadlineExceeded", "WaitTimeout", "Cancelled", "Aborted", "DataLoss", "Internal",
    "Unimplemented", "error_for",
]

# "job.train.uri: ...", "job.freeze.rules[0].pattern: ...", "page_token: ...".
_FIELD_PATH = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\[[0-9]+\])?"
                         r"(?:\.[A-Za-z_][A-Za-z0-9_]*(?:\[[0-9]+\])?)*): (.*)$", re.S)


class FreezetuneError(Exception):
    """A failed call. Base class of every error the clients raise."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__("%s: %s" % (code.name, message))
        self.code = code
        self.message = message
        m = _FIELD_PATH.match(message) if code == grpc.StatusCode.INVALID_ARGUMENT else None
        self.field: Optional[str] = m.group(1) if m else None
        self.reason: str = m.group(2) if m else message


class InvalidArgument(FreezetuneError, ValueError):
    """The request is wrong; `field` names where (e.g. "job.train.uri")."""


class NotFound(FreezetuneError, LookupError):
    """No such job or sweep (or not the caller's tenant's)."""


class AlreadyExists(FreezetuneError):
    pass


class FailedPrecondition(FreezetuneError):
    """E.g. cancelling a job that already ended, or an unreadable model."""


class OutOfRange(FreezetuneError):
    pass


class PermissionDenied(FreezetuneError):
    pass


class Unauthenticated(FreezetuneError):
    """No token or a wrong one ($FREEZETUNE_TOKEN, Client(token=...))."""


class ResourceExhausted(FreezetuneError):
    """Queue full, per-tenant limit, or a message over the size limit."""


class Unavailable(FreezetuneError, ConnectionError):
    """The server could not be reached (after the client's retries)."""


class DeadlineExceeded(FreezetuneError, TimeoutError):
    pass


class WaitTimeout(DeadlineExceeded):
    """Client.wait(timeout=...) ran out before the job ended."""


class Cancelled(FreezetuneError):
    pass


class Aborted(FreezetuneError):
    pass


class DataLoss(FreezetuneError):
    """A watch saw a gap in the event sequence that the server cannot fill."""


class Internal(FreezetuneError):
    pass


class Unimplemented(FreezetuneError):
    pass


_BY_CODE: Dict[grpc.StatusCode, Type[FreezetuneError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}


def error_for(code: grpc.StatusCode, message: str) -> FreezetuneError:
    """The FreezetuneError subclass instance for a gRPC code."""
    return _BY_CODE.get(code, FreezetuneError)(code, message or "")
