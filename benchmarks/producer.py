"""The official producer, standalone, on the same logs: issue #14's stretch goal asks the sink,
inside Beam, to write at least as fast as the Rust producer's Python binding
(``aliyun-log-producer``, PutLogs) does on its own, on this machine.

Two rows, each a plain loop handing logs to ``LogstoreWriter.send`` with their source (a
host of 16), lz4 as the sink's rows, the producer's defaults otherwise, no delivery callback
(its fastest way); a send refused while the producer's buffer is full is tried again a
millisecond later, as its ``EnqueueFullError`` asks of callers:

- the producer's best case: string logs made before the clock starts, sent;
- the sink's typed rows' work: the same typed logs made in the loop (``benchmarks.common``),
  their values written as text by the sink's documented rules (the producer takes str
  only), in Python, as a user of it would, and sent.

The time runs to ``close()`` returning, every log delivered. The fake server
(``benchmarks.putlogs_server``, its own process) counts what arrived: the rows assert that
every log did. Traffic goes to 127.0.0.1 only (the producer's ``{project}.{endpoint}`` host
is never resolved: the server is its proxy).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import orjson
import requests

from benchmarks.common import make_logs, make_typed_logs
from benchmarks.harness import LOGSTORE, PROJECT, serving, timed

PRODUCER_TYPED = "aliyun-log-producer alone, lz4, typed logs made and written as text, source"
PRODUCER_BEST = "aliyun-log-producer alone, lz4, string logs made beforehand, source"

#: An endpoint that cannot resolve (RFC 2606): only the proxy can answer it.
_UNRESOLVABLE = "http://sls.invalid"


def _typed_as_text(count: int) -> Iterator[dict[str, str]]:
    """The typed logs with their values as text, as a user of the producer writes them: for
    the values these logs hold (no float with an exponent), orjson's text of each non-str
    value is what the sink sends (``true``, ``null``, ``12.5``, a nested object's JSON)."""
    for log in make_typed_logs(0, count):
        yield {
            key: value if value.__class__ is str else orjson.dumps(value).decode()
            for key, value in log.items()
        }


def _strings_with_host(count: int) -> Iterator[dict[str, str]]:
    for index, log in enumerate(make_logs(0, count)):
        log["host"] = f"web-{index % 16:02d}"
        yield log


#: The proxy settings a producer reads (either case; a user's own would take it elsewhere).
_PROXY_NAMES = ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


@contextmanager
def _proxied_by(address: str):
    """HTTP requests of producers made inside go to ``address`` as their proxy."""
    saved = {name: os.environ.get(name) for name in _PROXY_NAMES}
    os.environ.update(HTTP_PROXY=address, http_proxy=address, NO_PROXY="", no_proxy="")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _send_all(server: str, logs: Iterable[dict[str, str]]) -> None:
    from aliyun_log_producer import EnqueueFullError, Producer, ProducerConfig

    config = ProducerConfig(
        endpoint=_UNRESOLVABLE, access_key_id="bench", access_key_secret="bench", compression="lz4"
    )
    with _proxied_by(server), Producer(config) as producer:
        send = producer.writer(PROJECT, LOGSTORE).send
        for log in logs:
            while True:
                try:
                    send(log, source=log["host"])
                    break
                except EnqueueFullError:  # its buffer is full: try again shortly
                    time.sleep(0.001)


def producer_rows(logs: int, repeat: int) -> list[dict]:
    """The producer's two rows (see the module's docstring), ``repeat`` rounds of each in
    turn, their medians; none where ``aliyun-log-producer`` is not installed (the ``bench``
    extra)."""
    try:
        import aliyun_log_producer  # noqa: F401
    except ImportError:
        print("aliyun-log-producer is not installed (the bench extra): no producer rows")
        return []
    made = list(_strings_with_host(logs))
    makers = {PRODUCER_BEST: lambda: made, PRODUCER_TYPED: lambda: _typed_as_text(logs)}
    rates: dict[str, list[float]] = {name: [] for name in makers}
    with serving(["benchmarks.putlogs_server"]) as server:
        for _ in range(repeat):
            for name, make in makers.items():
                rates[name].append(logs / timed(lambda make=make: _send_all(server, make())))
        received = requests.get(f"{server}/_stats", timeout=10).json()
    assert received["logs"] == logs * repeat * len(makers), received  # nothing lost
    return [
        {"scenario": name, "logs_per_sec": round(statistics.median(rates[name]))} for name in makers
    ]
