"""The sink's output records: a FailedLog per log not written, a WrittenRequest per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FailedLog:
    """A log that was not written, with the reason.

    Attributes:
      log: the original element; for logs buffered in state (streaming mode)
        and refused by the service, the log as it was sent (a dict of str).
      error_code: ``InvalidLog`` for a log that breaks a rule, else the
        service's errorCode (``PostBodyInvalid``, ``ServerBusy``, …).
      error_message: what was wrong, naming the key and the rule.
      status: the HTTP status, if the service answered.
      request_id: the service's ``x-log-requestid``, if it answered.
    """

    log: Any
    error_code: str
    error_message: str
    status: int | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class WrittenRequest:
    """One request the service accepted (the ``written`` output).

    Attributes:
      topic, source: the request's group.
      log_count: logs in the request.
      raw_bytes: JSON size before compression (bytes).
      sent_bytes: body size on the wire (bytes).
      request_id: the service's ``x-log-requestid``.
      attempts: times the request was sent (1 = no retry).
    """

    topic: str
    source: str
    log_count: int
    raw_bytes: int
    sent_bytes: int
    request_id: str | None
    attempts: int
