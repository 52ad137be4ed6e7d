"""A reusable PutWebTracking HTTP client: endpoints, retries, typed errors.

It needs no Beam: scripts and services can use it directly::

    with WebTrackingClient("cn-hangzhou.log.aliyuncs.com", "my-project", "my-logstore") as c:
        c.put_logs([{"level": "info", "msg": "hello"}], LogGroup.of(topic="app"))

Delivery is at-least-once: PutWebTracking has no idempotency key, so a
request whose answer was lost (a timeout, a dropped connection) and is then
retried may store its logs twice. Nothing is retried that the service refused
for good (see :class:`~sls_beam.retry.RetryPolicy`).
"""

from __future__ import annotations

import email.utils
import ipaddress
import random
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter

from sls_beam import __version__
from sls_beam.errors import SLSError
from sls_beam.retry import RetryPolicy
from sls_beam.transport import Answer, PendingAnswer, PipelinedTransport
from sls_beam.wire import (
    BatchLimits,
    EncodedRequest,
    LogEncoder,
    LogGroup,
    encode_request,
    split_into_requests,
)

_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_LOGSTORE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]")


def _validate_name(kind: str, name: str, pattern: re.Pattern, characters: str) -> str:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise ValueError(
            f"{kind} {name!r}: must be 3-63 characters of {characters}, "
            "starting and ending with a letter or digit"
        )
    return name


def validate_project(project: str) -> str:
    """Return ``project`` if it is a valid SLS project name, else raise ValueError."""
    return _validate_name("project", project, _PROJECT_RE, "lowercase letters, digits and '-'")


def validate_logstore(logstore: str) -> str:
    """Return ``logstore`` if it is a valid SLS logstore name, else raise ValueError."""
    return _validate_name(
        "logstore", logstore, _LOGSTORE_RE, "lowercase letters, digits, '-' and '_'"
    )


@dataclass(frozen=True)
class Target:
    """Where requests go: the URL to connect to and the ``Host`` header to send."""

    url: str
    host: str | None


def resolve_target(endpoint: str, project: str, logstore: str) -> Target:
    """Work out the request URL for ``endpoint``, ``project`` and ``logstore``.

    - ``cn-hangzhou.log.aliyuncs.com`` (no scheme): HTTPS to
      ``https://{project}.cn-hangzhou.log.aliyuncs.com``.
    - ``http://…`` or ``https://…``: that scheme, same host rule.
    - An IP address or ``localhost`` (e.g. ``http://127.0.0.1:8080``, an
      emulator or a private gateway): connect there and send
      ``Host: {project}.{address}``, as the service reads the project from
      the Host header. Its scheme must be written out.
    """
    validate_project(project)
    validate_logstore(logstore)
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ValueError("endpoint must be a non-empty string such as cn-hangzhou.log.aliyuncs.com")
    endpoint = endpoint.strip()
    if "://" not in endpoint:
        hostname = urlsplit("//" + endpoint).hostname or ""
        if _is_address(hostname):
            # An emulator or a gateway on an address: most likely plain HTTP, and a
            # guessed https:// would fail only after every retry.
            raise ValueError(
                f"endpoint {endpoint!r} has no scheme: write http://{endpoint} for a plain-HTTP "
                f"server such as the emulator, or https://{endpoint} for TLS"
            )
        endpoint = "https://" + endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"endpoint {endpoint!r}: scheme must be http or https")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(
            f"endpoint {endpoint!r}: give only [scheme://]host[:port], without path, query or user"
        )
    hostname = parts.hostname or ""
    if not hostname:
        raise ValueError(f"endpoint {endpoint!r}: no host name")
    path = f"/logstores/{logstore}/track"
    if _is_address(hostname):
        return Target(f"{parts.scheme}://{parts.netloc}{path}", f"{project}.{parts.netloc}")
    return Target(f"{parts.scheme}://{project}.{parts.netloc}{path}", None)


def _is_address(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class SendResult:
    """The outcome of one request the service accepted.

    Attributes:
      request_id: the service's ``x-log-requestid``.
      attempts: how many times the request was sent (1 = no retry).
      throttled_secs: seconds spent backing off because of quota answers.
      elapsed_secs: wall time from the first attempt until the accepting answer was
        read (a started request's answer may wait to be read).
    """

    request_id: str | None
    attempts: int
    throttled_secs: float
    elapsed_secs: float


class WebTrackingClient:
    """Sends PutWebTracking requests to one logstore, retrying what is transient.

    Args:
      endpoint: service endpoint, e.g. ``cn-hangzhou.log.aliyuncs.com`` (HTTPS),
        ``http://host`` for plain HTTP, or ``http://127.0.0.1:PORT``.
      project: SLS project name (validated here).
      logstore: logstore name (validated here); web tracking must be enabled on it.
      timeout_secs: deadline of each attempt (seconds): connecting, writing
        the request and reading the whole answer, whatever the server does
        (an answer already arriving gets at least 1 s to be read). A request
        takes at most ``max_attempts`` × this plus the backoff waits.
      connect_timeout_secs: TCP/TLS connect timeout per attempt (seconds),
        within ``timeout_secs``.
      retry: the :class:`RetryPolicy`.
      verify: TLS verification: ``True`` (default), or a CA bundle path.
      session: a ``requests.Session`` to use (proxies, certificates, adapters);
        by default the client makes its own pooled session.
      pool_size: keep-alive connections kept, one per request in flight.
      seed: seeds the backoff jitter, so a test's timing is reproducible.
      sleep: the function that waits between attempts (tests may record it).
    """

    def __init__(
        self,
        endpoint: str,
        project: str,
        logstore: str,
        *,
        timeout_secs: float = 30.0,
        connect_timeout_secs: float = 10.0,
        retry: RetryPolicy | None = None,
        verify: bool | str = True,
        session: requests.Session | None = None,
        pool_size: int = 16,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.target = resolve_target(endpoint, project, logstore)
        self.project = project
        self.logstore = logstore
        self.retry = retry or RetryPolicy()
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        if not isinstance(session.get_adapter(self.target.url), HTTPAdapter):
            raise TypeError(
                f"the session's adapter for {self.target.url} must be a requests HTTPAdapter"
            )
        self._session = session
        self._transport = PipelinedTransport(session, verify, connect_timeout_secs, timeout_secs)
        # identity: a compressed answer could inflate far past what was sent.
        self._headers = {"User-Agent": f"sls-beam/{__version__}", "Accept-Encoding": "identity"}
        if self.target.host:
            self._headers["Host"] = self.target.host

    def start(self, request: EncodedRequest) -> PendingSend:
        """Write the first attempt of ``request`` and return without waiting for the answer.

        A caller keeps several requests in flight by starting them one after
        another and calling :meth:`PendingSend.result` on the oldest when it
        needs to; each holds one pooled connection until then.
        """
        headers = {**self._headers, **request.headers}
        started = time.monotonic()
        return PendingSend(self, request.body, headers, self._begin(request.body, headers), started)

    def send(self, request: EncodedRequest) -> SendResult:
        """Send one request, retrying per the policy.

        Returns:
          A :class:`SendResult` once the service accepted the request.

        Raises:
          SLSError: the service refused the request for good, or the
            attempts ran out; it carries status, code, message, request id
            and the number of attempts.
        """
        return self.start(request).result()

    def _begin(self, body: bytes, headers: Mapping[str, str]) -> PendingAnswer | _Attempt:
        try:
            return self._transport.start(self.target.url, body, headers)
        except requests.RequestException as e:
            return _no_answer(e)

    def _until_accepted(
        self,
        body: bytes,
        headers: Mapping[str, str],
        begun: PendingAnswer | _Attempt,
        started: float,
    ) -> SendResult:
        throttled = 0.0
        attempt = 0
        while True:
            attempt += 1
            status, code, message, request_id, retry_after = _finish(begun)
            if status is not None and 200 <= status < 300:
                return SendResult(request_id, attempt, throttled, time.monotonic() - started)
            if attempt >= self.retry.max_attempts or not self.retry.is_retryable(status, code):
                raise SLSError(status, code, message, request_id, attempt, throttled)
            quota = self.retry.is_quota(status, code)
            wait = self.retry.backoff_secs(attempt, quota, self._rng, retry_after)
            if quota:
                throttled += wait
            self._sleep(wait)
            begun = self._begin(body, headers)

    def put_logs(
        self,
        logs: Iterable[Mapping[str, Any]],
        group: LogGroup | None = None,
        *,
        compression: str = "lz4",
        limits: BatchLimits | None = None,
        event_time_key: str | None = None,
    ) -> list[SendResult]:
        """Encode, split and send ``logs`` of one group; one result per request.

        Raises:
          InvalidLogError: a log breaks a rule (nothing has been sent then).
          SLSError: a request failed; earlier requests were delivered.
        """
        group = group or LogGroup()
        limits = limits or BatchLimits()
        overhead = group.overhead_bytes()
        encoder = LogEncoder(event_time_key, max_log_bytes=limits.max_bytes - overhead)
        encoded = [encoder.encode(log) for log in logs]
        return [
            self.send(encode_request(group, chunk, compression))
            for chunk in split_into_requests(encoded, limits, overhead)
        ]

    def close(self) -> None:
        """Release pooled connections (only those of a session the client made)."""
        self._transport.close()
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> WebTrackingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Attempt(NamedTuple):
    """How one attempt ended; ``status`` is ``None`` when no answer came."""

    status: int | None
    error_code: str | None
    message: str
    request_id: str | None
    retry_after_secs: float | None = None


class PendingSend:
    """A request whose first attempt is on the wire (see :meth:`WebTrackingClient.start`)."""

    def __init__(
        self,
        client: WebTrackingClient,
        body: bytes,
        headers: Mapping[str, str],
        begun: PendingAnswer | _Attempt,
        started: float,
    ):
        self._client = client
        self._body = body
        self._headers = headers
        self._begun = begun
        self._started = started
        self._outcome: SendResult | SLSError | None = None

    def result(self) -> SendResult:
        """Read the answer, retrying per the client's policy, as :meth:`WebTrackingClient.send`.

        Asked again, it gives the same result (or raises the same error): a
        request is sent once, however often its result is asked for.

        Raises:
          SLSError: the service refused the request for good, or the attempts ran out.
        """
        if self._outcome is None:
            try:
                self._outcome = self._client._until_accepted(
                    self._body, self._headers, self._begun, self._started
                )
            except SLSError as e:
                self._outcome = e
            self._begun = self._body = None
        if isinstance(self._outcome, SLSError):
            raise self._outcome
        return self._outcome

    def answered(self) -> bool:
        """Whether :meth:`result` can start without waiting: the first answer (or a
        close, or an error before sending) is already there."""
        begun = self._begun
        return not isinstance(begun, PendingAnswer) or begun.arrived()

    def abandon(self) -> None:
        """Close the connection without reading the answer (the logs may or may not land)."""
        if isinstance(self._begun, PendingAnswer):
            self._begun.abandon()


def _no_answer(error: requests.RequestException) -> _Attempt:
    if isinstance(error, requests.Timeout):
        return _Attempt(None, "RequestTimeout", f"no answer in time: {error}", None)
    if isinstance(error, requests.exceptions.SSLError):
        final = _final_tls_problem(error)
        if final:
            return _Attempt(None, "TLSError", f"{final}: {error}", None)
    return _Attempt(None, "RequestError", f"{type(error).__name__}: {error}", None)


def _final_tls_problem(error: BaseException) -> str | None:
    """What is wrong, when a TLS failure would fail the same way again; else None."""
    seen = 0
    while error is not None and seen < 16:  # the cause chain, bounded
        if isinstance(error, (ssl.SSLCertVerificationError, ssl.CertificateError)):
            return "the server's TLS certificate is not trusted (pass verify= a CA bundle)"
        text = str(error)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return "the server's TLS certificate is not trusted (pass verify= a CA bundle)"
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
            return "the server does not speak TLS (for a plain-HTTP server write http://…)"
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def _finish(begun: PendingAnswer | _Attempt) -> _Attempt:
    if isinstance(begun, _Attempt):  # failed before an answer could come
        return begun
    try:
        answer = begun.read()
    except requests.RequestException as e:
        return _no_answer(e)
    request_id = answer.headers.get("x-log-requestid")
    if 200 <= answer.status < 300:
        return _Attempt(answer.status, None, "", request_id)
    code, message = _error_fields(answer)
    return _Attempt(answer.status, code, message, request_id, _retry_after_secs(answer))


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
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())
