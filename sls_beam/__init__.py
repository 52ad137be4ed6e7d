"""sls_beam: write logs from Apache Beam to Alibaba Cloud SLS through PutWebTracking.

Public names:

- :class:`WriteToSLS` — the Beam PTransform (``result.written``, ``result.failed``).
- :class:`FailedLog`, :class:`WrittenRequest` — its output records.
- :class:`WebTrackingClient` — the HTTP client, usable without Beam.
- :class:`RetryPolicy`, :class:`SLSError`, :class:`InvalidLogError`.
- :mod:`sls_beam.emulator` — a local SLS web-tracking emulator.
"""

__version__ = "0.1.0"

from sls_beam.client import SendResult, WebTrackingClient  # noqa: E402
from sls_beam.errors import InvalidLogError, SLSError  # noqa: E402
from sls_beam.retry import RetryPolicy  # noqa: E402
from sls_beam.transforms import (  # noqa: E402
    METRICS_NAMESPACE,
    FailedLog,
    WriteToSLS,
    WriteToSLSResult,
    WrittenRequest,
)
from sls_beam.wire import LogGroup  # noqa: E402

__all__ = [
    "METRICS_NAMESPACE",
    "FailedLog",
    "InvalidLogError",
    "LogGroup",
    "RetryPolicy",
    "SLSError",
    "SendResult",
    "WebTrackingClient",
    "WriteToSLS",
    "WriteToSLSResult",
    "WrittenRequest",
    "__version__",
]
