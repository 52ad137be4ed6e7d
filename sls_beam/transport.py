"""HTTP requests written now and answered later, on requests' own connection pools.

``requests.Session.post`` returns only once the answer has arrived, so keeping
N requests in flight with it takes N threads; on a small worker those threads
cost the pipeline's thread an interpreter-lock hand-off after every socket
call (measured: ~0.5× Beam's floor with four sender threads, ~0.6× without
threads, see ``benchmarks/``). Here one thread writes a request on a
keep-alive connection of its own and reads the answer when it needs it, while
it goes on batching.

The connections come from the session's ``HTTPAdapter``, as
``Session.post`` would get them, so what users configure through requests
still holds: ``HTTPS_PROXY``/``NO_PROXY`` and ``session.proxies`` (plain and
CONNECT-tunnelled proxies), ``REQUESTS_CA_BUNDLE``, ``verify`` and client
certificates. Failures are raised as requests' own exceptions.

A server it does not control cannot hold or flood the caller: an answer's
body is read up to :data:`MAX_ANSWER_BYTES` and never decompressed, interim
``1xx`` answers are skipped, and the time an attempt blocks (connecting,
writing and reading the whole answer) is bounded by a deadline that a
watchdog thread enforces by shutting the socket down, whatever the server
trickles.
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import requests
import urllib3
from requests.structures import CaseInsensitiveDict
from urllib3.util.proxy import connection_requires_http_tunnel
from urllib3.util.wait import wait_for_read

#: The most of an answer's body that is read (bytes). SLS answers are small
#: JSON; a larger body is cut here and its connection dropped.
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, read whole.

    Attributes:
      status: HTTP status code.
      reason: HTTP reason phrase.
      headers: response headers (case-insensitive mapping).
      body: response body, at most :data:`MAX_ANSWER_BYTES`.
      truncated: the body was longer than that and was cut.
    """

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    truncated: bool = False


class _FinalResponse(http.client.HTTPResponse):
    """An answer parser that skips every interim ``1xx`` answer, not only ``100``.

    ``http.client`` skips ``100 Continue`` but returns ``102`` or ``103`` as if
    they were the answer; they only announce it.
    """

    def _read_status(self):
        while True:
            version, status, reason = super()._read_status()
            if not 101 < status < 200:
                return version, status, reason
            http.client.parse_headers(self.fp)  # the interim answer's headers


class Deadlines:
    """Bounds the time a thread blocks on one connection, with a watchdog thread.

    Socket timeouts bound each read, not the whole: a server that trickles a
    byte a second, or sends endless interim answers, would hold the caller as
    long as it likes. :meth:`arm` names a connection and a monotonic deadline;
    if the caller is still blocked on it then, the watchdog shuts the socket
    down, so the blocked call fails at once and :meth:`disarm` returns True.
    One connection is armed at a time (the caller's thread blocks on one), so
    the watchdog wakes about once per deadline, not per request.
    """

    def __init__(self):
        self._lock = threading.Condition()
        self._armed: tuple[object, float] | None = None
        self._expired = False
        self._thread: threading.Thread | None = None
        self._wakes_at: float | None = None
        self._closed = False

    def arm(self, connection, deadline: float) -> None:
        """Watch ``connection`` until :meth:`disarm`; shut it down at ``deadline``."""
        with self._lock:
            self._armed, self._expired = (connection, deadline), False
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="sls-deadlines", daemon=True
                )
                self._thread.start()
            elif self._wakes_at is None or deadline < self._wakes_at:
                self._lock.notify()

    def disarm(self) -> bool:
        """Stop watching; return whether the deadline passed and the socket was shut."""
        with self._lock:
            self._armed = None
            return self._expired

    def close(self) -> None:
        """End the watchdog thread."""
        with self._lock:
            self._closed = True
            self._armed = None
            self._lock.notify()

    def _watch(self) -> None:
        with self._lock:
            while not self._closed:
                armed = self._armed
                now = time.monotonic()
                if armed is not None and armed[1] <= now:
                    _shut(armed[0])
                    self._armed, self._expired = None, True
                    continue
                self._wakes_at = armed[1] if armed else None
                self._lock.wait(None if armed is None else armed[1] - now)
                self._wakes_at = None


def _shut(connection) -> None:
    """Make every blocked call on ``connection`` return now (its socket is shut, not closed)."""
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # bypasses SSLSocket's own state
        except (OSError, TypeError):
            pass


#: An answer already arriving gets at least this long to be read whole, even
#: when the attempt's deadline passed while it waited to be read (seconds).
_READ_FLOOR_SECS = 1.0


class PendingAnswer:
    """A request already written on its own connection, whose answer is not read yet.

    ``allowance_secs`` is how long reading the answer may block: what is left
    of the attempt's deadline, but never less than a short floor, so that an
    answer that arrived while the caller was busy elsewhere is still read.
    """

    def __init__(self, pool, connection, allowance_secs: float, deadlines: Deadlines):
        self._pool = pool
        self._connection = connection
        self._allowance_secs = allowance_secs
        self._deadlines = deadlines

    def read(self) -> Answer:
        """Wait for the whole answer (within the attempt's deadline) and free the connection.

        At most :data:`MAX_ANSWER_BYTES` of the body are read, as sent (not
        decompressed); the connection of a longer answer is dropped.

        Raises:
          requests.Timeout: no complete answer in time.
          requests.ConnectionError: the connection failed or closed first.
        """
        connection, self._connection = self._connection, None
        if connection is None:
            raise RuntimeError("the answer was already read or abandoned")
        allowance = self._allowance_secs
        self._deadlines.arm(connection, time.monotonic() + allowance)
        try:
            connection.timeout = allowance
            connection.response_class = _FinalResponse
            response = connection.getresponse()
            body = response.read(MAX_ANSWER_BYTES + 1, decode_content=False)
            whole = len(body) <= MAX_ANSWER_BYTES and response._fp.isclosed()
        except BaseException as e:
            expired = self._deadlines.disarm()
            _drop(self._pool, connection)
            if expired:
                raise requests.ReadTimeout(f"no complete answer within {allowance:.3g} s") from e
            raise _as_requests_error(e) from e
        if self._deadlines.disarm():  # cut off mid-answer: what was read is not the answer
            _drop(self._pool, connection)
            raise requests.ReadTimeout(f"no complete answer within {allowance:.3g} s")
        if not whole:
            _drop(self._pool, connection)
        else:
            self._pool._put_conn(connection)
        truncated = len(body) > MAX_ANSWER_BYTES
        return Answer(
            response.status, response.reason, response.headers, body[:MAX_ANSWER_BYTES], truncated
        )

    def arrived(self) -> bool:
        """Whether the answer (or the connection's end) is there to be read without waiting."""
        sock = self._connection.sock if self._connection is not None else None
        if sock is None:
            return True
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        return wait_for_read(sock, timeout=0)  # poll(): no limit on descriptor numbers

    def abandon(self) -> None:
        """Close the connection without reading the answer."""
        connection, self._connection = self._connection, None
        if connection is not None:
            _drop(self._pool, connection)


def _drop(pool, connection) -> None:
    """Close ``connection``; its pool makes a new one next time (and keeps its size)."""
    connection.close()
    pool._put_conn(None)


@dataclass(frozen=True)
class _Route:
    """How requests to one URL go out, as the session resolved it."""

    pool: urllib3.HTTPConnectionPool
    target: str  # what goes on the request line (an absolute URL for a forwarding proxy)
    headers: CaseInsensitiveDict  # the session's, auth and proxy headers included
    tunnel: bool  # through a CONNECT proxy


class PipelinedTransport:
    """Writes POST requests through a ``requests.Session`` and hands back :class:`PendingAnswer`.

    Each request in flight holds one keep-alive connection of the session's
    pool; size the pool (``HTTPAdapter(pool_maxsize=...)``) for the requests
    kept in flight. The session and the environment are read on the first
    request to a URL (as ``Session.post`` would read them) and that route is
    reused: per request, requests spends ~0.5 ms looking up ``.netrc``,
    proxies and CA paths again.

    Args:
      session: where proxies, certificates, adapters and environment settings come from.
      verify: TLS verification, as requests' ``verify`` (``True`` or a CA bundle path).
      connect_timeout_secs: TCP/TLS connect timeout.
      attempt_timeout_secs: the most one attempt may block in all: connecting,
        writing the request and reading the whole answer (seconds).
    """

    def __init__(
        self,
        session: requests.Session,
        verify: bool | str,
        connect_timeout_secs: float,
        attempt_timeout_secs: float,
    ):
        self._session = session
        self._verify = verify
        self._connect_timeout_secs = connect_timeout_secs
        self._attempt_timeout_secs = attempt_timeout_secs
        self._routes: dict[str, _Route] = {}
        self._deadlines = Deadlines()

    def start(self, url: str, body: bytes, headers: Mapping[str, str]) -> PendingAnswer:
        """Write ``POST url`` with ``body``; the answer is left for :meth:`PendingAnswer.read`.

        Raises:
          requests.RequestException: connecting or writing failed, or took
            longer than the attempt's deadline.
        """
        started = time.monotonic()
        route = self._routes.get(url) or self._resolve(url)
        try:
            connection = route.pool._get_conn()
        except urllib3.exceptions.ClosedPoolError:  # the session let the pool go: ask again
            route = self._resolve(url)
            connection = route.pool._get_conn()
        request_headers = route.headers.copy()
        request_headers.update(headers)
        request_headers["Content-Length"] = str(len(body))
        # Mirrors urllib3's HTTPConnectionPool.urlopen up to the point where it
        # would wait for the answer: open the proxy tunnel and TLS as needed,
        # write the request.
        budget = self._attempt_timeout_secs
        self._deadlines.arm(connection, started + budget)
        try:
            connection.timeout = min(self._connect_timeout_secs, budget)
            if route.tunnel and connection.is_closed:
                route.pool._prepare_proxy(connection)
            route.pool._validate_conn(connection)
            try:
                connection.request(
                    "POST",
                    route.target,
                    body=body,
                    headers=request_headers,
                    preload_content=False,  # read with a cap, in PendingAnswer.read
                    decode_content=False,  # never inflate what a server sends
                )
            except BrokenPipeError:
                pass  # the server may have answered early and closed: read that answer
            except OSError as e:
                if e.errno not in (errno.EPROTOTYPE, errno.ECONNRESET):
                    raise
        except BaseException as e:
            expired = self._deadlines.disarm()
            _drop(route.pool, connection)
            if expired:
                raise requests.Timeout(f"the request was not written within {budget:.3g} s") from e
            raise _as_requests_error(e) from e
        if self._deadlines.disarm():
            _drop(route.pool, connection)
            raise requests.Timeout(f"the request was not written within {budget:.3g} s")
        left = budget - (time.monotonic() - started)
        allowance = max(left, min(_READ_FLOOR_SECS, budget))
        return PendingAnswer(route.pool, connection, allowance, self._deadlines)

    def close(self) -> None:
        """Stop the deadline watchdog (the session's connections are the session's)."""
        self._deadlines.close()

    def _resolve(self, url: str) -> _Route:
        session = self._session
        prepared = session.prepare_request(requests.Request("POST", url, data=b""))
        settings = session.merge_environment_settings(prepared.url, {}, None, self._verify, None)
        adapter = session.get_adapter(prepared.url)
        try:
            pool = adapter.get_connection_with_tls_context(
                prepared, settings["verify"], proxies=settings["proxies"], cert=settings["cert"]
            )
            adapter.cert_verify(pool, prepared.url, settings["verify"], settings["cert"])
        except (urllib3.exceptions.HTTPError, ValueError) as e:
            raise requests.exceptions.InvalidURL(e, request=prepared) from e
        target = adapter.request_url(prepared, settings["proxies"])
        adapter.add_headers(prepared)
        headers = CaseInsensitiveDict(prepared.headers)
        tunnel = connection_requires_http_tunnel(pool.proxy, pool.proxy_config, pool.scheme)
        if pool.proxy is not None and not tunnel:  # a forwarding proxy reads these per request
            headers.update(pool.proxy_headers)
        route = self._routes[url] = _Route(pool, target, headers, pool.proxy is not None and tunnel)
        return route


def _as_requests_error(error: BaseException) -> BaseException:
    """The requests exception ``Session.post`` would have raised for ``error``."""
    if isinstance(error, requests.RequestException) or not isinstance(error, Exception):
        return error
    if isinstance(error, urllib3.exceptions.NewConnectionError):  # refused, unresolvable
        return requests.ConnectionError(error)
    if isinstance(error, urllib3.exceptions.ConnectTimeoutError):
        return requests.ConnectTimeout(error)
    if isinstance(error, (TimeoutError, urllib3.exceptions.ReadTimeoutError)):
        return requests.ReadTimeout(error)
    if isinstance(error, urllib3.exceptions.ProxyError):
        return requests.exceptions.ProxyError(error)
    if isinstance(error, (urllib3.exceptions.SSLError, ssl.SSLError, ssl.CertificateError)):
        return requests.exceptions.SSLError(error)
    if isinstance(error, (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError)):
        return requests.ConnectionError(error)
    return error
