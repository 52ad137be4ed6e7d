"""A fake SLS PutLogs endpoint, for the official producer's rows (``benchmarks.producer``).

``python -m benchmarks.putlogs_server`` serves on 127.0.0.1, prints its address, and answers
every ``POST …/shards/lb`` with 200 (any signature), after decompressing its body (lz4, a
raw block of ``x-log-bodyrawsize`` bytes) and counting the logs of its protobuf
``LogGroup``; ``GET /_stats`` says how many logs, requests and body bytes it took. The
producer builds ``http://{project}.{endpoint}`` URLs, which need DNS: it reaches this server
as its HTTP proxy, on loopback, whatever the host. Like the emulator of the sink's rows, it
runs in a process of its own and does comparable work a request (it walks the protobuf's
top level where the emulator parses JSON).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import lz4.block

#: The key of a ``LogGroup``'s ``Logs`` field (field 1, length-delimited).
_LOGS_FIELD = (1 << 3) | 2


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at ``at`` and where it ends."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def count_logs(log_group: bytes) -> int:
    """How many logs a serialised ``LogGroup`` holds (its top-level ``Logs`` fields)."""
    count = at = 0
    while at < len(log_group):
        key, at = _varint(log_group, at)
        wire_type = key & 7
        if wire_type == 2:
            size, at = _varint(log_group, at)
            at += size
            count += key == _LOGS_FIELD
        elif wire_type == 0:
            _, at = _varint(log_group, at)
        elif wire_type in (1, 5):
            at += 8 if wire_type == 1 else 4
        else:
            raise ValueError(f"wire type {wire_type} in a LogGroup")
    if at != len(log_group):
        raise ValueError("a LogGroup cut short")
    return count


class _Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.figures = {"logs": 0, "requests": 0, "body_bytes": 0}

    def add(self, logs: int, body: int) -> None:
        with self.lock:
            self.figures["logs"] += logs
            self.figures["requests"] += 1
            self.figures["body_bytes"] += body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counts: _Counts

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        raw_size = int(self.headers["x-log-bodyrawsize"])  # the producer's rows send lz4
        raw = lz4.block.decompress(body, uncompressed_size=raw_size)
        self.counts.add(count_logs(raw), len(body))
        self._answer(b"")

    def do_GET(self):  # noqa: N802 - http.server's name
        with self.counts.lock:
            self._answer(json.dumps(self.counts.figures).encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("x-log-requestid", "putlogs-server")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass


def main() -> None:
    _Handler.counts = _Counts()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
