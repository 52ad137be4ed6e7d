"""sls_beam: write logs from Apache Beam to Alibaba Cloud SLS through PutWebTracking.

Public names:

- :class:`WriteToSLS` — the Beam PTransform (``result.written``, ``result.failed``).
- :class:`FailedLog`, :class:`WrittenRequest` — its output records.
- :class:`WebTrackingClient` — the HTTP client, usable without Beam.
- :class:`RetryPolicy`, :class:`SLSError`, :class:`InvalidLogError`, :class:`LogGroup`.
- :mod:`sls_beam.emulator` — a local SLS web-tracking emulator.

Names are imported on first use, so the client and the emulator start
without loading Apache Beam.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_HOMES = {
    "WebTrackingClient": "sls_beam.client",
    "SendResult": "sls_beam.client",
    "SLSError": "sls_beam.errors",
    "InvalidLogError": "sls_beam.errors",
    "RetryPolicy": "sls_beam.retry",
    "LogGroup": "sls_beam.wire",
    "WriteToSLS": "sls_beam.transforms",
    "WriteToSLSResult": "sls_beam.transforms",
    "FailedLog": "sls_beam.records",
    "WrittenRequest": "sls_beam.records",
    "METRICS_NAMESPACE": "sls_beam.metrics",
}
__all__ = [  # spelled out for linters and IDEs; the same names as _HOMES
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

if TYPE_CHECKING:
    from sls_beam.client import SendResult, WebTrackingClient
    from sls_beam.errors import InvalidLogError, SLSError
    from sls_beam.metrics import METRICS_NAMESPACE
    from sls_beam.records import FailedLog, WrittenRequest
    from sls_beam.retry import RetryPolicy
    from sls_beam.transforms import WriteToSLS, WriteToSLSResult
    from sls_beam.wire import LogGroup


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sls_beam' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
