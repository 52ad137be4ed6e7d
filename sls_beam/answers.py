"""How one attempt ended: an answer (or its absence) read into status, code, message.

Everything a server sends is data from a server we do not control: error
bodies are parsed defensively, ``Retry-After`` is read in both its forms,
and a failure without an answer is told apart when it would only fail the
same way again (TLS).
"""

from __future__ import annotations

import email.utils
import ssl
import time
from typing import NamedTuple

import orjson
import requests

from sls_beam.transport import Answer, PendingAnswer


class Attempt(NamedTuple):
    """How one attempt ended; ``status`` is ``None`` when no answer came."""

    status: int | None
    error_code: str | None
    message: str
    request_id: str | None
    retry_after_secs: float | None = None
    server_time: float | None = None  # the answer's Date (Unix seconds), to correct a clock


def no_answer(error: requests.RequestException) -> Attempt:
    """The attempt that ended in ``error`` before any answer came."""
    if isinstance(error, requests.Timeout):
        return Attempt(None, "RequestTimeout", f"no answer in time: {error}", None)
    if isinstance(error, requests.exceptions.SSLError):
        final = _final_tls_problem(error)
        if final:
            return Attempt(None, "TLSError", f"{final}: {error}", None)
    return Attempt(None, "RequestError", f"{type(error).__name__}: {error}", None)


_UNTRUSTED = "the server's TLS certificate is not trusted (pass verify= a CA bundle)"
_NOT_TLS = "the server does not speak TLS (for a plain-HTTP server write http://…)"


def _final_tls_problem(error: BaseException) -> str | None:
    """What is wrong, when a TLS failure would fail the same way again; else None."""
    seen = 0
    while error is not None and seen < 16:  # the cause chain, bounded
        text = str(error)
        if isinstance(error, ssl.CertificateError) or "CERTIFICATE_VERIFY_FAILED" in text:
            return _UNTRUSTED
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
            return _NOT_TLS
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def ending_of(begun: PendingAnswer | Attempt) -> Attempt:
    """How an attempt ended: its answer read (waiting for it), or how it failed before."""
    if isinstance(begun, Attempt):  # failed before an answer could come
        return begun
    try:
        answer = begun.read()
    except requests.RequestException as e:
        return no_answer(e)
    request_id = answer.headers.get("x-log-requestid")
    if 200 <= answer.status < 300:
        return Attempt(answer.status, None, "", request_id)
    code, message = _error_fields(answer)
    return Attempt(
        answer.status,
        code,
        message,
        request_id,
        _retry_after_secs(answer),
        _http_date(answer.headers.get("Date")),
    )


def _error_fields(answer: Answer) -> tuple[str, str]:
    """The answer's errorCode and errorMessage; ``BadResponse`` when it has no errorCode.

    The body is data from a server we do not control: it is at most
    MAX_ANSWER_BYTES, parsed by orjson (which refuses nesting past 1024
    levels instead of recursing), and anything unexpected falls back to text.
    """
    try:
        payload = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("errorCode"), str):
        message = payload.get("errorMessage")
        return payload["errorCode"], message if isinstance(message, str) else ""
    text = answer.body[:1024].decode("utf-8", "replace").strip() or answer.reason or ""
    cut = " (answer cut: longer than MAX_ANSWER_BYTES)" if answer.truncated else ""
    return "BadResponse", f"HTTP {answer.status}{cut}: {text}"


def _retry_after_secs(answer: Answer) -> float | None:
    """The answer's ``Retry-After`` in seconds (delay-seconds or an HTTP date), if any."""
    value = answer.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    when = _http_date(value)
    return None if when is None else max(0.0, when - time.time())


def _http_date(value: str | None) -> float | None:
    """An HTTP date (RFC 1123, with its zone) in Unix seconds, or ``None``."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return None if when.tzinfo is None else when.timestamp()
