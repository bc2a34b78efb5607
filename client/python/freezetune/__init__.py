"""freezetune: Python client for the freezetune fine-tuning service.

    from freezetune import Client
    with Client("127.0.0.1:50051", token="...") as c:
        job = c.submit({"modelUri": "file:///models/bert", ...})
        for event in c.watch(job.id):   # resumes by itself after a drop
            print(event)

The generated messages and stubs live in ``freezetune.v1`` (freezetune_pb2,
freezetune_pb2_grpc). They are generated at build time into
``<build>/python/freezetune/v1``; put ``<build>/python`` on sys.path next to
this package's directory (this __init__ extends the package path to find it).
"""
import pkgutil

# Let freezetune.v1 come from the generated-code directory elsewhere on sys.path.
__path__ = pkgutil.extend_path(__path__, __name__)  # noqa: F821

from freezetune.client import Client, FreezetuneError, TERMINAL_STATES  # noqa: E402

__all__ = ["Client", "FreezetuneError", "TERMINAL_STATES"]
