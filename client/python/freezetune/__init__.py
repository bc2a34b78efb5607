"""freezetune: Python SDK for the freezetune fine-tuning service.

    from freezetune import Client, JobState
    with Client() as c:                    # $FREEZETUNE_SERVER, $FREEZETUNE_TOKEN
        job = c.submit({"modelUri": "file:///models/bert", ...})
        for event in c.watch(job.id):      # resumes by itself after a drop
            print(event)
        job = c.wait(job.id, timeout=3600)
        print(JobState(job.state))         # SUCCEEDED

Errors are FreezetuneError subclasses (freezetune.errors): InvalidArgument
(with .field), NotFound, Unauthenticated, Unavailable, ... The asyncio client
is freezetune.aio.AsyncClient. A service that set `notify` on a job checks
the callbacks it receives with freezetune.callbacks.verify_signature. The generated messages and stubs are in
freezetune.v1 (freezetune_pb2, freezetune_pb2_grpc): in an installed wheel
they are part of the package; in the source tree, CMake's
freezetune_python_stubs target writes them to <build>/python, which this
package finds on sys.path (the package path is extended below).
"""
import pkgutil

# Source-tree use: let freezetune.v1 come from <build>/python on sys.path.
__path__ = pkgutil.extend_path(__path__, __name__)  # noqa: F821

from freezetune.client import Client  # noqa: E402
from freezetune.errors import *  # noqa: E402,F401,F403
from freezetune.errors import __all__ as _errors
from freezetune.states import TERMINAL_STATES, JobState, SweepState, TrialState  # noqa: E402


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("freezetune")
    except Exception:  # running from the source tree
        return "0+source"


__version__ = _version()

__all__ = ["Client", "JobState", "SweepState", "TrialState", "TERMINAL_STATES",
           "__version__"] + list(_errors)
