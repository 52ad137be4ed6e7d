"""The emulator's HTTP server: PutWebTracking on loopback, plus read and control endpoints.

Endpoints:

- ``POST /logstores/{logstore}/track``: PutWebTracking (project from ``Host``).
- ``POST /logstores/{logstore}``: the signed form (``Authorization``, checked
  by :mod:`sls_beam.emulator.auth`); each log keeps its ``__time__``. A
  ``/track`` request that carries ``Authorization`` is checked too.
- ``GET /logstores/{logstore}/track?APIVersion=0.6.0&k=v`` (also ``track.gif``
  and ``track_ua.gif``): one log from the query string.
- ``OPTIONS`` anything: a browser's CORS preflight, answered as the service
  answers browsers (every answer also carries ``Access-Control-Allow-Origin``).
- ``GET /_emulator/logs?project=P&logstore=L``: stored logs as a JSON array.
- ``GET /_emulator/stats``: counters as JSON.
- ``POST /_emulator/faults``: JSON ``{"rates", "seed", "latency_secs",
  "slow_secs", "script", "clear"}`` configures fault injection.
- ``POST /_emulator/logstores``: JSON ``{"project", "logstore",
  "web_tracking"}`` declares a logstore.
"""

from __future__ import annotations

import email.utils
import errno
import ipaddress
import json
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from sls_beam.emulator.auth import Verifier
from sls_beam.emulator.faults import ERROR_ANSWERS, FaultPlan
from sls_beam.emulator.protocol import (
    MAX_BODY_BYTES,
    MAX_GET_URL_BYTES,
    MAX_RAW_BYTES,
    LogChecker,
    Rejection,
    check_api_version,
    decompress,
    parse_body,
    parse_query_log,
)
from sls_beam.emulator.store import Store, StoredLog

_TRACK_PATH = re.compile(r"/logstores/([^/]+)(?:/(track|track\.gif|track_ua\.gif))?")
_PROJECT = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_LOGSTORE = re.compile(r"[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,12}")
#: Default bounds: idle or slow clients are dropped after this (seconds), and
#: request bodies held at once (with what they inflate to) are at most this (bytes).
IDLE_TIMEOUT_SECS = 30.0
MAX_BODY_BYTES_IN_FLIGHT = 128 * 1024 * 1024
#: The request headers a browser may send (answered to a preflight that names none).
CORS_ALLOWED_HEADERS = (
    "authorization, content-type, content-md5, x-log-apiversion, x-log-bodyrawsize, "
    "x-log-compresstype, x-log-date, x-log-signaturemethod, x-log-content-sha256, "
    "x-acs-security-token"
)
_PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c000000000100010000020144003b"
)


class _BodyBudget:
    """Bytes of request bodies (and what they inflate to) held at once, over all connections."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._changed = threading.Condition()

    def reserve(self, size: int) -> bool:
        with self._changed:
            if self.held + size > self.limit:
                return False
            self.held += size
            self._changed.notify_all()
            return True

    def release(self, size: int) -> None:
        with self._changed:
            self.held -= size
            self._changed.notify_all()

    def wait_until_held(self, at_least: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.held >= at_least, timeout)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, emulator: Emulator):
        self.store = emulator.store
        self.checker = emulator.checker
        self.verifier = emulator.verifier
        self.clock = emulator.clock
        self.default_project = emulator.default_project
        self.faults = emulator.faults
        self.tls = emulator.tls
        self.idle_timeout_secs = emulator.idle_timeout_secs
        self.budget = _BodyBudget(emulator.max_body_bytes_in_flight)
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self):
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors: the listening socket stays readable, so without a
                # pause the accept loop would spin. Idle connections time out meanwhile.
                self.stopping.wait(0.1)
            raise

    def finish_request(self, request, client_address):
        # On the connection's own thread: a TLS client that never finishes its
        # handshake holds only itself, for at most the idle timeout.
        if self.tls is not None:
            request.settimeout(self.idle_timeout_secs)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ValueError):
                return
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)
            if self.tls is not None:
                request.close()

    def close_connections(self) -> None:
        """End keep-alive connections too, as a stopped server would."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                socket.socket.shutdown(connection, socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass  # a client that went away (dropped, fuzzed, timed out) is not the server's error


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass

    def date_time_string(self, timestamp=None):
        # Every answer's Date is the emulator's clock: a client corrects its own from it.
        return email.utils.formatdate(
            self.server.clock() if timestamp is None else timestamp, usegmt=True
        )

    def setup(self):
        self.timeout = self.server.idle_timeout_secs  # an idle or slow client is dropped
        super().setup()

    def version_string(self):
        return self.server_version

    def do_POST(self):
        self._dispatch(post=True)

    def do_OPTIONS(self):
        """A CORS preflight: any origin may POST and GET with the protocol's headers."""
        self._body_pending = "Content-Length" in self.headers or "Transfer-Encoding" in self.headers
        self._discard_body()
        self.server.store.bump("counters", "preflights")
        self.send_response(200)
        requested = self.headers.get("Access-Control-Request-Headers")
        self.send_header("Access-Control-Allow-Methods", "POST, GET, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", requested or CORS_ALLOWED_HEADERS)
        self.send_header("Access-Control-Max-Age", "86400")
        self._cors_headers()
        self.send_header("Content-Length", "0")
        if self._body_pending:
            self.close_connection = True
        self.end_headers()

    def _cors_headers(self) -> None:
        origin = self.headers.get("Origin")
        # The page's own origin (with credentials allowed), as a beacon sends cookies along.
        self.send_header("Access-Control-Allow-Origin", origin or "*")
        if origin:
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Vary", "Origin")
        self.send_header("Access-Control-Expose-Headers", "x-log-requestid")

    def do_GET(self):
        self._dispatch(post=False)

    def _dispatch(self, post: bool):
        request_id = os.urandom(12).hex().upper()
        # A body left unread would be taken for the next request: until it is
        # read, any answer closes the connection.
        self._body_pending = "Content-Length" in self.headers or "Transfer-Encoding" in self.headers
        self._reserved = 0
        try:
            self._route(post, request_id)
        except Rejection as r:
            self.server.store.bump("rejections", r.code)
            body = json.dumps({"errorCode": r.code, "errorMessage": r.message}).encode()
            self._answer(r.status, body, request_id)
        except Exception as e:  # the emulator must answer, whatever the request
            body = json.dumps({"errorCode": "InternalServerError", "errorMessage": repr(e)[:200]})
            self._answer(500, body.encode(), request_id)
        finally:
            self.server.budget.release(self._reserved)

    def _route(self, post: bool, request_id: str):
        url = urlsplit(self.path)
        if url.path.startswith("/_emulator/"):
            return self._control(post, url)
        match = _TRACK_PATH.fullmatch(url.path)
        if (
            not match
            or (post and match.group(2) not in ("track", None))
            or (not post and match.group(2) is None)
        ):
            self._discard_body()
            raise Rejection(404, "InvalidPath", "no such resource")
        with self.server.store.request_in_flight():
            self._track(post, url, match, request_id)

    def _track(self, post: bool, url, match, request_id: str):
        store, faults = self.server.store, self.server.faults
        body = self._read_body() if post else b""
        fault = faults.next_fault()
        if fault:
            store.bump("faults", fault)
        if faults.latency_secs:
            self.server.stopping.wait(faults.latency_secs)
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault in ERROR_ANSWERS:
            raise Rejection(*ERROR_ANSWERS[fault])
        project, logstore = self._project(), match.group(1)
        if not _LOGSTORE.fullmatch(logstore):
            raise Rejection(404, "LogStoreNotExist", f"logstore {logstore[:64]} does not exist")
        query = parse_qsl(url.query, keep_blank_values=True)
        check_api_version(self.headers.get("x-log-apiversion"), dict(query).get("APIVersion"))
        signed = post and ("Authorization" in self.headers or match.group(2) is None)
        if signed:
            if "Authorization" not in self.headers:
                raise Rejection(
                    401,
                    "Unauthorized",
                    "POST /logstores/{logstore} is signed: send Authorization "
                    "(anonymous writes go to /logstores/{logstore}/track)",
                )
            self.server.verifier.verify(url.path, url.query, self.headers, bytes(body))
        store.check_writable(project, logstore, signed)
        if post:
            raw = decompress(
                body, self.headers.get("x-log-compresstype"), self.headers.get("x-log-bodyrawsize")
            )
            payload = parse_body(raw, self.server.checker)
        else:
            if len(self.path) > MAX_GET_URL_BYTES:
                raise Rejection(413, "PostBodyTooLarge", "GET request larger than 16 KB")
            payload = parse_query_log(query)
            if match.group(2) == "track_ua.gif":
                for header in ("User-Agent", "Referer"):
                    if self.headers.get(header):
                        payload.logs[0][header.lower()] = self.headers[header]
        received = int(self.server.clock())
        store.add(project, logstore, payload, len(body), received, request_id, keep_time=signed)
        if fault == "slow":
            self.server.stopping.wait(faults.slow_secs)
        if match.group(2) in ("track", None):
            self._answer(200, b"", request_id)
        else:
            self._answer(200, _PIXEL, request_id, "image/gif")

    def _project(self) -> str:
        host = self.headers.get("Host")
        if not host:
            raise Rejection(400, "MissingHost", "the Host header is required")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if _is_address(name) and self.server.default_project:
            return self.server.default_project
        if _is_address(name):
            raise Rejection(
                404,
                "ProjectNotExist",
                "no project in the Host header: send Host: {project}.{endpoint}, or start "
                "the emulator with a default project (--default-project)",
            )
        project = name.split(".", 1)[0]
        if not _PROJECT.fullmatch(project):
            raise Rejection(404, "ProjectNotExist", f"The Project does not exist : {project[:64]}")
        return project

    def _content_length(self) -> int:
        """The body's length, from well-formed framing only (else 400/411, connection closed)."""
        lengths = self.headers.get_all("Content-Length") or []
        if "Transfer-Encoding" in self.headers:
            raise Rejection(411, "MissingContentLength", "send the body with a Content-Length")
        if not lengths:
            raise Rejection(411, "MissingContentLength", "Content-Length is required")
        if len(lengths) > 1 or not _CONTENT_LENGTH.fullmatch(lengths[0].strip()):
            raise Rejection(400, "InvalidContentLength", "Content-Length must be one number")
        return int(lengths[0])

    def _read_body(self) -> bytearray:
        length = self._content_length()
        if length > MAX_BODY_BYTES:
            raise Rejection(
                413, "PostBodyTooLarge", f"Body size {length} must little than {MAX_BODY_BYTES}"
            )
        raw_size = self.headers.get("x-log-bodyrawsize", "").strip()
        inflated = min(int(raw_size), MAX_RAW_BYTES) if _CONTENT_LENGTH.fullmatch(raw_size) else 0
        if not self.server.budget.reserve(length + inflated):
            raise Rejection(503, "ServerBusy", "too many request bytes in flight; try again")
        self._reserved = length + inflated
        body = self._read_within(length, time.monotonic() + self.server.idle_timeout_secs)
        self._body_pending = False
        return body

    def _read_within(self, length: int, deadline: float) -> bytearray:
        """``length`` bytes of body, all arrived by ``deadline`` (a trickling client is dropped).

        Read into one buffer, as much as has arrived at each call: no copies, and
        the deadline is looked at between reads however slowly bytes come.
        """
        body = bytearray(length)
        view, done = memoryview(body), 0
        while done < length:
            if time.monotonic() > deadline:
                raise Rejection(408, "RequestTimeout", "the body did not arrive in time")
            got = self.rfile.readinto1(view[done:])
            if not got:
                raise Rejection(400, "PostBodyInvalid", "the body ended early")
            done += got
        return body

    def _discard_body(self) -> None:
        try:
            length = self._content_length()
        except Rejection:
            return  # the connection closes: nothing to discard
        if length <= MAX_BODY_BYTES:
            self._read_within(length, time.monotonic() + self.server.idle_timeout_secs)
            self._body_pending = False

    def _control(self, post: bool, url):
        store, params = self.server.store, dict(parse_qsl(url.query))
        if not post and url.path == "/_emulator/logs":
            logs = store.logs(params.get("project"), params.get("logstore"))
            return self._answer(200, json.dumps([asdict(r) for r in logs]).encode(), None)
        if not post and url.path == "/_emulator/stats":
            return self._answer(200, json.dumps(store.stats()).encode(), None)
        if post and url.path in ("/_emulator/faults", "/_emulator/logstores"):
            try:
                config = json.loads(self._read_body() or b"{}")
                if url.path == "/_emulator/logstores":
                    store.create_logstore(
                        config["project"],
                        config["logstore"],
                        bool(config.get("web_tracking", True)),
                    )
                else:
                    if not isinstance(config, dict):
                        raise ValueError("the settings must be a JSON object")
                    self.server.faults.apply(config)
            except (ValueError, KeyError, TypeError) as e:
                raise Rejection(400, "ParameterInvalid", str(e)[:200]) from None
            return self._answer(200, b"{}", None)
        self._discard_body()
        raise Rejection(404, "InvalidPath", "no such resource")

    def _answer(
        self, status: int, body: bytes, request_id: str | None, content_type="application/json"
    ):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._cors_headers()
        if request_id:
            self.send_header("x-log-requestid", request_id)
        if self._body_pending:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        # The body is done with: its share of the budget is free before the client
        # hears the answer (and may send the next body at once).
        self.server.budget.release(self._reserved)
        self._reserved = 0
        self.end_headers()
        self.wfile.write(body)


def _is_address(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


class Emulator:
    """A local SLS web-tracking service on loopback, for pipelines, tests and CI.

    Use it as a context manager; ``start()`` returns the endpoint to give the
    connector (``http://127.0.0.1:PORT``)::

        with Emulator() as emulator:
            endpoint = emulator.endpoint
            ...                      # write with WriteToSLS or WebTrackingClient
            logs = emulator.logs("my-project", "my-logstore")

    Args:
      host: address to listen on (loopback unless told otherwise).
      port: TCP port; 0 picks a free one. A restart keeps the port.
      strict: writes to undeclared projects/logstores get 404
        (declare them with :meth:`create_logstore`).
      strict_keys: also enforce the documented key characters (letters,
        digits, ``_``, no leading digit) with 400 InvalidKey; the connector
        itself lets other keys through, so this stands for a service whose
        rules are stricter than the client's.
      trust_logs: skip the per-log key and value checks (bodies are still
        decompressed, size-checked and parsed): for benchmarks, where the
        emulator shares the pipeline's CPU.
      data_dir: keep accepted logs in ``{data_dir}/{project}/{logstore}.jsonl``.
      retain_logs: keep logs in memory for :meth:`logs` (off for long benchmarks).
      faults: a :class:`FaultPlan` (default: no faults).
      tls: serve HTTPS with this server-side ``ssl.SSLContext`` (to test
        certificate settings such as ``verify`` and ``REQUESTS_CA_BUNDLE``);
        each connection's handshake runs on its own thread.
      idle_timeout_secs: a connection idle this long is closed, and a
        request's body (or a TLS handshake) must arrive within it (seconds).
      max_body_bytes_in_flight: request bodies held at once over all
        connections, with the raw size they declare (bytes); past it a
        request gets 503 ``ServerBusy`` unread, so memory stays bounded.
      access_keys: AccessKey id → secret, for signed writes (v1 and v4 are
        checked; an unknown key gets 401).
      sts_tokens: AccessKey id → the STS token its signed requests must carry.
      clock: the emulator's Unix time (a test may set it apart from the
        client's, to check clock-skew recovery); answers carry it as ``Date``.
      default_project: the project of requests whose ``Host`` names none (an
        address such as ``127.0.0.1:8080``, as the web SDKs send to a custom
        ``host``); without it they get 404 ``ProjectNotExist``.
      memory_logs: keep at most this many logs of each logstore in memory
        for :meth:`logs` (the newest); ``None`` keeps all. ``data_dir``
        keeps every one.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        strict: bool = False,
        strict_keys: bool = False,
        trust_logs: bool = False,
        data_dir: str | None = None,
        retain_logs: bool = True,
        faults: FaultPlan | None = None,
        tls: ssl.SSLContext | None = None,
        idle_timeout_secs: float = IDLE_TIMEOUT_SECS,
        max_body_bytes_in_flight: int = MAX_BODY_BYTES_IN_FLIGHT,
        access_keys: dict[str, str] | None = None,
        sts_tokens: dict[str, str] | None = None,
        clock=time.time,
        default_project: str | None = None,
        memory_logs: int | None = None,
    ):
        self.host = host
        self.tls = tls
        self.idle_timeout_secs = idle_timeout_secs
        self.max_body_bytes_in_flight = max_body_bytes_in_flight
        self.port = port
        self.checker = LogChecker(strict_keys, trust_logs)
        self.clock = clock
        self.verifier = Verifier(access_keys, sts_tokens, clock)
        if default_project is not None and not _PROJECT.fullmatch(default_project):
            raise ValueError(f"default_project {default_project!r} is not a project name")
        self.default_project = default_project
        self.store = Store(
            strict=strict, data_dir=data_dir, retain=retain_logs, memory_logs=memory_logs
        )
        self.faults = faults or FaultPlan()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """``http://host:port`` (``https://`` with ``tls``) of the running emulator."""
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start()")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> str:
        """Start serving (on the same port as before after a stop); return the endpoint."""
        if self._server is None:
            self._server = _Server((self.host, self.port), self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"sls-emulator:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        """Stop serving and drop open connections; stored logs are kept."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        self._thread.join()

    def restart(self) -> str:
        """Stop, then start on the same port: clients see connection errors in between."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and close the data files."""
        self.stop()
        self.store.close()

    def create_logstore(self, project: str, logstore: str, web_tracking: bool = True) -> None:
        """Declare a logstore; ``web_tracking=False`` makes anonymous writes to it answer
        401 (signed writes are still taken)."""
        self.store.create_logstore(project, logstore, web_tracking)

    def logs(self, project: str | None = None, logstore: str | None = None) -> list[StoredLog]:
        """Accepted logs, oldest first."""
        return self.store.logs(project, logstore)

    def wait_for_logs(self, count: int, timeout: float, where=None) -> bool:
        """Block until ``count`` logs have been accepted (those the predicate
        ``where(StoredLog)`` accepts, if given), or ``timeout`` seconds pass;
        return whether they were. For tests of streaming pipelines."""
        return self.store.wait_for_logs(count, timeout, where)

    def stats(self) -> dict:
        """Counters: requests, accepted_requests, logs, raw_bytes, body_bytes,
        max_concurrent_requests, preflights (CORS), rejections by errorCode, faults by kind; and
        body_bytes_held: request bytes held right now (see ``max_body_bytes_in_flight``)."""
        server = self._server
        return {**self.store.stats(), "body_bytes_held": server.budget.held if server else 0}

    def wait_for_held_bytes(self, at_least: int, timeout: float) -> bool:
        """Block until requests being read hold ``at_least`` bytes of the body budget,
        or ``timeout`` seconds pass; return whether they do. For tests of the bound."""
        return self._server is not None and self._server.budget.wait_until_held(at_least, timeout)

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
