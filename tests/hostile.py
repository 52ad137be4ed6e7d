"""A hostile HTTP server on 127.0.0.1: real sockets, scripted misbehaviour, bounded loops.

Each accepted connection reads one request (headers and a Content-Length
body), records it, and runs the next behaviour of the script (the last one
repeats). A behaviour writes to the socket whatever it likes; every loop in
it stops when the client goes away, the server closes, or a time or byte
ceiling is reached.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

#: No behaviour runs longer than this (seconds), whatever the client does.
MAX_BEHAVIOUR_SECS = 30.0

Behaviour = Callable[[socket.socket, threading.Event], None]


class HostileServer:
    """Serve scripted behaviours; ``requests`` holds each request's head (bytes)."""

    def __init__(self, *script: Behaviour):
        self._script = list(script)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sent_bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> HostileServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=MAX_BEHAVIOUR_SECS)

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                behaviour = self._script[min(self.connections, len(self._script) - 1)]
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn, behaviour), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket, behaviour: Behaviour) -> None:
        with conn:
            conn.settimeout(MAX_BEHAVIOUR_SECS)
            try:
                head = _read_request(conn)
                with self._lock:
                    self.requests.append(head)
                behaviour(_Counting(conn, self), self._stop)
            except OSError:
                pass  # the client went away: that is what it may do


class _Counting:
    """A socket that counts what the server wrote."""

    def __init__(self, conn: socket.socket, server: HostileServer):
        self._conn = conn
        self._server = server

    def sendall(self, data: bytes) -> None:
        self._conn.sendall(data)
        with self._server._lock:
            self._server.sent_bytes += len(data)


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise OSError("closed before a request")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise OSError("closed inside a body")
        body += chunk
    return head


def answer(status: int, body: bytes = b"", headers: dict | None = None) -> Behaviour:
    """A well-formed answer (then the connection closes)."""

    def behave(conn, stop):
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    return behave


def endless(head: bytes, piece: bytes, max_bytes: int = 2 * 1024**3) -> Behaviour:
    """``head``, then ``piece`` over and over until the client leaves (or a ceiling)."""

    def behave(conn, stop):
        conn.sendall(head)
        sent, ends = 0, time.monotonic() + MAX_BEHAVIOUR_SECS
        while sent < max_bytes and not stop.is_set() and time.monotonic() < ends:
            conn.sendall(piece)
            sent += len(piece)

    return behave


def trickle(data: bytes, every_secs: float) -> Behaviour:
    """``data`` one byte at a time, one every ``every_secs``, repeated (within the ceiling)."""

    def behave(conn, stop):
        ends = time.monotonic() + MAX_BEHAVIOUR_SECS
        while not stop.is_set() and time.monotonic() < ends:
            for byte in data:
                conn.sendall(bytes([byte]))
                if stop.wait(every_secs):
                    return

    return behave
