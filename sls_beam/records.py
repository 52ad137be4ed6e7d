"""The sink's output records: a FailedLog per log not written, a WrittenRequest per request."""

from __future__ import annotations

import pickle
import reprlib
from dataclasses import dataclass
from typing import Any

from sls_beam.errors import MAX_EXCERPT_CHARS

#: How much of an unreportable log its excerpt shows: nesting levels and characters.
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel = 4
_EXCERPT.maxstring = _EXCERPT.maxother = MAX_EXCERPT_CHARS


@dataclass(frozen=True)
class FailedLog:
    """A log that was not written, with the reason.

    Attributes:
      log: the original element; for logs buffered in state (streaming mode)
        and refused by the service, the log as it was sent (a dict of str).
      error_code: ``InvalidLog`` for a log that breaks a rule, ``NotJson`` for a
        line of a :class:`~sls_beam.JsonLines` that is not a JSON object, else the
        service's errorCode (``PostBodyInvalid``, ``ServerBusy``, …).
      error_message: what was wrong, naming the key and the rule.
      status: the HTTP status, if the service answered.
      request_id: the service's ``x-log-requestid``, if it answered.
      log_is_excerpt: ``log`` is a short text excerpt of the original, which
        could not be carried itself (it could not be serialised: nested
        thousands of levels deep, or holding a lock, a socket, …).
    """

    log: Any
    error_code: str
    error_message: str
    status: int | None = None
    request_id: str | None = None
    log_is_excerpt: bool = False

    @classmethod
    def of(
        cls,
        log: Any,
        error_code: str,
        error_message: str,
        status: int | None = None,
        request_id: str | None = None,
    ) -> FailedLog:
        """A record that can always be reported: the log itself when Beam can
        serialise it, else a bounded excerpt (``log_is_excerpt``)."""
        try:
            pickle.dumps(log, pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - RecursionError, unpicklable members, raising __reduce__
            return cls(_excerpt(log), error_code, error_message, status, request_id, True)
        return cls(log, error_code, error_message, status, request_id)


def _excerpt(log: Any) -> str:
    try:
        return _EXCERPT.repr(log)
    except Exception:  # noqa: BLE001 - a member's own __repr__ may raise
        return f"<a {type(log).__name__} that could not be shown>"


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
