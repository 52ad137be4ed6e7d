"""sls_beam: write logs from Apache Beam to Alibaba Cloud SLS through PutWebTracking.

Public names:

- :class:`WriteToSLS` — the Beam PTransform (``result.written``, ``result.failed``).
- :class:`FailedLog`, :class:`WrittenRequest` — its output records.
- :class:`JsonLines` — logs given as JSON text, one object a line (written without a dict a log).
- :class:`WebTrackingClient` — the HTTP client, usable without Beam.
- :class:`Credentials` — an AccessKey (and STS token) for signed writes.
- :class:`RetryPolicy`, :class:`SLSError`, :class:`InvalidLogError`, :class:`LogGroup`.
- :mod:`sls_beam.emulator` — a local SLS web-tracking emulator.

Names are imported on first use, so the client and the emulator start
without loading Apache Beam.
"""

from __future__ import annotations

import importlib

from sls_beam._version import __version__

#: Each public name and the module it lives in; imported on first use.
_HOMES = {
    "WriteToSLS": "sls_beam.transforms",
    "WriteToSLSResult": "sls_beam.transforms",
    "FailedLog": "sls_beam.records",
    "WrittenRequest": "sls_beam.records",
    "JsonLines": "sls_beam.json_lines",
    "METRICS_NAMESPACE": "sls_beam.metrics",
    "WebTrackingClient": "sls_beam.client",
    "SendResult": "sls_beam.client",
    "Credentials": "sls_beam.credentials",
    "RetryPolicy": "sls_beam.retry",
    "SLSError": "sls_beam.errors",
    "InvalidLogError": "sls_beam.errors",
    "LogGroup": "sls_beam.wire",
}
__all__ = [*_HOMES, "__version__"]


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sls_beam' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
