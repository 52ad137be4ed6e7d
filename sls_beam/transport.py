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
"""

from __future__ import annotations

import errno
import http.client
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import requests
import urllib3
from requests.structures import CaseInsensitiveDict
from urllib3.util.proxy import connection_requires_http_tunnel
from urllib3.util.wait import wait_for_read


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, read whole.

    Attributes:
      status: HTTP status code.
      reason: HTTP reason phrase.
      headers: response headers (case-insensitive mapping).
      body: response body.
    """

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


class PendingAnswer:
    """A request already written on its own connection, whose answer is not read yet."""

    def __init__(self, pool, connection, read_timeout_secs: float):
        self._pool = pool
        self._connection = connection
        self._read_timeout_secs = read_timeout_secs

    def read(self) -> Answer:
        """Wait for the answer (at most the read timeout) and free the connection.

        Raises:
          requests.Timeout: no answer in time.
          requests.ConnectionError: the connection failed or closed first.
        """
        connection, self._connection = self._connection, None
        if connection is None:
            raise RuntimeError("the answer was already read or abandoned")
        try:
            connection.timeout = self._read_timeout_secs
            response = connection.getresponse()
            answer = Answer(response.status, response.reason, response.headers, response.data)
        except BaseException as e:
            connection.close()
            self._pool._put_conn(None)  # keeps the pool's size: a new connection next time
            raise _as_requests_error(e) from e
        self._pool._put_conn(connection)
        return answer

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
            connection.close()
            self._pool._put_conn(None)


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
      connect_timeout_secs: TCP/TLS connect (and request write) timeout.
      read_timeout_secs: how long :meth:`PendingAnswer.read` waits for an answer.
    """

    def __init__(
        self,
        session: requests.Session,
        verify: bool | str,
        connect_timeout_secs: float,
        read_timeout_secs: float,
    ):
        self._session = session
        self._verify = verify
        self._connect_timeout_secs = connect_timeout_secs
        self._read_timeout_secs = read_timeout_secs
        self._routes: dict[str, _Route] = {}

    def start(self, url: str, body: bytes, headers: Mapping[str, str]) -> PendingAnswer:
        """Write ``POST url`` with ``body``; the answer is left for :meth:`PendingAnswer.read`.

        Raises:
          requests.RequestException: connecting or writing failed.
        """
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
        try:
            connection.timeout = self._connect_timeout_secs
            if route.tunnel and connection.is_closed:
                route.pool._prepare_proxy(connection)
            route.pool._validate_conn(connection)
            try:
                connection.request("POST", route.target, body=body, headers=request_headers)
            except BrokenPipeError:
                pass  # the server may have answered early and closed: read that answer
            except OSError as e:
                if e.errno not in (errno.EPROTOTYPE, errno.ECONNRESET):
                    raise
        except BaseException as e:
            connection.close()
            route.pool._put_conn(None)
            raise _as_requests_error(e) from e
        return PendingAnswer(route.pool, connection, self._read_timeout_secs)

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
