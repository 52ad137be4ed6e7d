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

import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from sls_beam._version import __version__
from sls_beam.answers import Attempt, ending_of, no_answer
from sls_beam.credentials import CredentialsError, CredentialSource, CredentialsSpec, check_spec
from sls_beam.endpoints import region_of, resolve_target
from sls_beam.errors import SLSError
from sls_beam.retry import RetryPolicy
from sls_beam.signing import DEFAULT_SIGNATURE_VERSION, RequestSigner, check_version
from sls_beam.transport import PendingAnswer, PipelinedTransport
from sls_beam.wire import (
    DEFAULT_COMPRESSION,
    BatchLimits,
    EncodedRequest,
    LogEncoder,
    LogGroup,
    encode_request,
    split_into_requests,
)

#: Defaults of the client: an attempt's deadline and its connect timeout
#: (seconds), and keep-alive connections pooled.
DEFAULT_TIMEOUT_SECS = 30.0
DEFAULT_CONNECT_TIMEOUT_SECS = 10.0
DEFAULT_POOL_SIZE = 16


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
      logstore: logstore name (validated here); web tracking must be enabled on it
        for anonymous writes.
      credentials: ``None`` (anonymous ``/track``), or sign each request
        (``POST /logstores/{logstore}``): a :class:`~sls_beam.Credentials`, a
        zero-argument callable returning one (asked again near its
        ``expiration`` and once after the service says the token expired), or
        ``"env"`` (the ``ALIBABA_CLOUD_*`` variables, read when first needed).
        Signed logs keep their time (see :class:`~sls_beam.wire.LogEncoder`'s
        ``log_time``).
      signature_version: ``v1`` (HMAC-SHA1, as the official web SDK) or ``v4``.
      region: the endpoint's region for ``v4`` (by default read from a regional
        endpoint such as ``cn-hangzhou.log.aliyuncs.com``).
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
        credentials: CredentialsSpec = None,
        signature_version: str = DEFAULT_SIGNATURE_VERSION,
        region: str | None = None,
        timeout_secs: float = DEFAULT_TIMEOUT_SECS,
        connect_timeout_secs: float = DEFAULT_CONNECT_TIMEOUT_SECS,
        retry: RetryPolicy | None = None,
        verify: bool | str = True,
        session: requests.Session | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        check_spec(credentials)
        self.target = resolve_target(endpoint, project, logstore, signed=credentials is not None)
        self.signer = None
        if credentials is not None:
            region = check_signing(endpoint, signature_version, region)
            self.signer = RequestSigner(
                CredentialSource(credentials),
                signature_version,
                region,
                self.target.path,
                self.target.authority,
            )
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
        return PendingSend(
            self._transport,
            self.target.url,
            request.body,
            {**self._headers, **request.headers},
            self.retry,
            self._rng,
            self._sleep,
            self.signer,
        )

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

    def put_logs(
        self,
        logs: Iterable[Mapping[str, Any]],
        group: LogGroup | None = None,
        *,
        compression: str = DEFAULT_COMPRESSION,
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
        encoder = LogEncoder(
            event_time_key, max_log_bytes=limits.room(group), log_time=self.signer is not None
        )
        encoded = [encoder.encode(log) for log in logs]
        return [
            self.send(encode_request(group, chunk, compression))
            for chunk in split_into_requests(encoded, limits, group)
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


class PendingSend:
    """One request and its attempts: the first is written at once, the rest (per the
    policy) when :meth:`result` is asked; see :meth:`WebTrackingClient.start`.

    Args:
      transport: writes each attempt and reads its answer.
      url: where the request goes.
      body, headers: the request as sent, every attempt alike.
      policy: which endings are retried, and the waits between attempts.
      rng: draws the backoff jitter.
      sleep: waits between attempts.
      signer: signs each attempt (``None``: anonymous), and says when a refusal
        is fixed by signing again at once (a clock corrected, a token renewed).
    """

    def __init__(
        self,
        transport: PipelinedTransport,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        policy: RetryPolicy,
        rng: random.Random,
        sleep: Callable[[float], None],
        signer: RequestSigner | None = None,
    ):
        self._transport = transport
        self._url = url
        self._body = body
        self._headers = headers
        self._policy = policy
        self._rng = rng
        self._sleep = sleep
        self._signer = signer
        self._fixes_tried: set[str] = set()
        self._started = time.monotonic()
        self._begun = self._begin()
        self._outcome: SendResult | SLSError | None = None

    def result(self) -> SendResult:
        """Read the answer, retrying per the policy, as :meth:`WebTrackingClient.send`.

        Asked again, it gives the same result (or raises the same error): a
        request is sent once, however often its result is asked for.

        Raises:
          SLSError: the service refused the request for good, or the attempts ran out.
        """
        if self._outcome is None:
            try:
                self._outcome = self._until_accepted()
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

    def _begin(self) -> PendingAnswer | Attempt:
        headers = self._headers
        if self._signer is not None:
            try:
                headers = self._signer.headers(headers, self._body)
            except CredentialsError as e:
                return Attempt(None, "CredentialsError", str(e), None)
        try:
            return self._transport.start(self._url, self._body, headers)
        except requests.RequestException as e:
            return no_answer(e)

    def _until_accepted(self) -> SendResult:
        policy, throttled, attempt = self._policy, 0.0, 0
        while True:
            attempt += 1
            status, code, message, request_id, retry_after, server_time = ending_of(self._begun)
            if status is not None and 200 <= status < 300:
                elapsed = time.monotonic() - self._started
                return SendResult(request_id, attempt, throttled, elapsed)
            signer = self._signer
            if (
                signer is not None
                and attempt < policy.max_attempts
                and signer.recover(status, code, server_time, self._fixes_tried)
            ):
                self._begun = self._begin()  # signed again: a clock corrected, a token renewed
                continue
            if (
                attempt >= policy.max_attempts
                or not policy.is_retryable(status, code)
                or code == "CredentialsError"
            ):
                hint = signer.hint(status, code) if signer is not None else None
                raise SLSError(status, code, message, request_id, attempt, throttled, hint)
            quota = policy.is_quota(status, code)
            wait = policy.backoff_secs(attempt, quota, self._rng, retry_after)
            if quota:
                throttled += wait
            self._sleep(wait)
            self._begun = self._begin()


def check_signing(endpoint: str, signature_version: str, region: str | None) -> str | None:
    """The region to sign with (``v4``: given, or read from a regional endpoint), or
    ValueError saying what to pass; checked when a pipeline is built."""
    check_version(signature_version)
    if signature_version != "v4":
        return region
    region = region or region_of(endpoint)
    if not region:
        raise ValueError(
            f"signature_version='v4' needs region= (e.g. 'cn-hangzhou'): it cannot be told "
            f"from the endpoint {endpoint!r}"
        )
    return region
