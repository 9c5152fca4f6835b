"""Chronos SDK: report job runs to a Chronos server. Standard library only.

::

    from chronos_sdk import ChronosRunner

    runner = ChronosRunner()  # CHRONOS_API_KEY, CHRONOS_ENDPOINT

    @runner.job("nightly-report", schedule="0 3 * * *", timeout=600)
    def nightly_report():
        ...

    runner.sync_jobs()
    runner.run_now("nightly-report")  # run it here and now, or
    runner.start()                    # let the server trigger it when due (see stop())

Monitoring never breaks the monitored job: the client never raises into, blocks or crashes the
host application, and the handler's own exception is recorded, not raised.
"""

__version__ = "0.1.0.dev0"

from chronos_sdk.client import ChronosClient  # noqa: E402
from chronos_sdk.runner import ChronosRunner, RunResult, Tracked  # noqa: E402
from chronos_sdk.transport import (  # noqa: E402
    MockTransport,
    Request,
    Response,
    Transport,
    UrllibTransport,
)

__all__ = [
    "ChronosClient",
    "ChronosRunner",
    "MockTransport",
    "Request",
    "Response",
    "RunResult",
    "Tracked",
    "Transport",
    "UrllibTransport",
    "__version__",
]
