"""Job, sweep and trial states as Python enums with the short names users see.

They are IntEnums equal to the generated protobuf values, so they compare
equal to `job.state` and can be passed wherever the API takes a state:

    if JobState(job.state) is JobState.SUCCEEDED: ...
    client.list(states=[JobState.RUNNING])

tests check that the members match freezetune.proto one for one.
"""
import enum
from typing import FrozenSet

__all__ = ["JobState", "SweepState", "TrialState", "TERMINAL_STATES"]


class _ShortNamed(enum.IntEnum):
    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str) -> "_ShortNamed":
        """"running", "RUNNING" or "JOB_STATE_RUNNING" -> the member."""
        name = text.strip().upper()
        prefix = cls._proto_prefix()
        if name.startswith(prefix):
            name = name[len(prefix):]
        try:
            return cls[name]
        except KeyError:
            raise ValueError("%s: expected one of %s, got %r" % (
                cls.__name__, ", ".join(m.name.lower() for m in cls if m.value), text)) from None

    @classmethod
    def _proto_prefix(cls) -> str:
        return ""


class JobState(_ShortNamed):
    UNSPECIFIED = 0
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @classmethod
    def _proto_prefix(cls) -> str:
        return "JOB_STATE_"


class SweepState(_ShortNamed):
    UNSPECIFIED = 0
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELLED = 4

    @property
    def terminal(self) -> bool:
        return self not in (SweepState.UNSPECIFIED, SweepState.RUNNING)

    @classmethod
    def _proto_prefix(cls) -> str:
        return "SWEEP_STATE_"


class TrialState(_ShortNamed):
    UNSPECIFIED = 0
    PENDING = 1
    RUNNING = 2
    FINISHED = 3
    STOPPED_EARLY = 4
    FAILED = 5
    CANCELLED = 6
    PRUNED = 7

    @classmethod
    def _proto_prefix(cls) -> str:
        return "TRIAL_STATE_"


TERMINAL_STATES: FrozenSet[JobState] = frozenset(
    [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED])
