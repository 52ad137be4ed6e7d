"""The client against servers it does not control: answers that are huge, compressed,
endless, trickled, interim, nested or odd. Real sockets on 127.0.0.1 (tests/hostile.py).

Time bounds here are generous ceilings (seconds), not benchmarks; memory is
bounded by what Python allocated (tracemalloc), so inflating or buffering an
answer would show.
"""

from __future__ import annotations

import time
import tracemalloc
import zlib

import pytest

from sls_beam.client import WebTrackingClient
from sls_beam.errors import SLSError
from sls_beam.retry import RetryPolicy
from sls_beam.transport import MAX_ANSWER_BYTES
from sls_beam.wire import LogEncoder, LogGroup, encode_request
from tests.helpers import LOGSTORE, PROJECT
from tests.hostile import HostileServer, answer, endless, trickle

NO_WAIT = RetryPolicy(max_attempts=2, backoff_base_secs=0, quota_backoff_base_secs=0)


def request():
    return encode_request(LogGroup(), [LogEncoder().encode({"msg": "hi", "n": "1"})], "lz4")


def client_of(server: HostileServer, **kwargs) -> WebTrackingClient:
    kwargs.setdefault("retry", NO_WAIT)
    return WebTrackingClient(server.endpoint, PROJECT, LOGSTORE, **kwargs)


def peak_allocated_while(call) -> tuple[object, int]:
    """What ``call()`` returned (or raised) and the most Python memory it held at once."""
    tracemalloc.start()
    try:
        try:
            outcome = call()
        except Exception as e:  # noqa: BLE001 - handed back to the test
            outcome = e
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_huge_answer_is_read_up_to_the_cap_and_its_connection_dropped():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 314572800\r\nx-log-requestid: BIG\r\n\r\n"
    with HostileServer(endless(head, b"x" * 65536), answer(200)) as server:
        client = client_of(server)
        result, peak = peak_allocated_while(lambda: client.send(request()))
        assert result.request_id == "BIG" and result.attempts == 1  # a 200 is a success
        assert peak < 4 * MAX_ANSWER_BYTES + 1024 * 1024
        assert client.send(request()).attempts == 1  # a new connection: the old one was dropped
        assert server.connections == 2
    assert server.sent_bytes < 64 * 1024 * 1024  # the rest of the 300 MB was never asked for


def test_a_compressed_answer_is_neither_asked_for_nor_inflated():
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip
    body = b"".join(bomb.compress(bytes(1024 * 1024)) for _ in range(200)) + bomb.flush()
    assert len(body) < 400 * 1024  # 200 MiB of zeros
    headers = {"Content-Encoding": "gzip", "x-log-requestid": "GZ"}
    with HostileServer(answer(200, body, headers)) as server:
        client = client_of(server)
        result, peak = peak_allocated_while(lambda: client.send(request()))
        assert result.request_id == "GZ"
        assert peak < 4 * MAX_ANSWER_BYTES + 1024 * 1024
    assert b"accept-encoding: identity" in server.requests[0].lower()


def test_an_endless_chunked_error_answer_keeps_its_status_class():
    head = b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"10000\r\n" + b"y" * 65536 + b"\r\n"
    with HostileServer(endless(head, chunk)) as server:
        client = client_of(server)
        error, peak = peak_allocated_while(lambda: client.send(request()))
        assert isinstance(error, SLSError)
        assert (error.status, error.error_code, error.attempts) == (503, "BadResponse", 2)
        assert "answer cut" in error.error_message
        assert peak < 4 * MAX_ANSWER_BYTES + 1024 * 1024


@pytest.mark.parametrize(
    "behaviour",
    [
        trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 1000, every_secs=0.05),
        trickle(b"HTTP/1.1 100 Continue\r\n\r\n", every_secs=0.001),
        trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"{" * 1000, 0.05),
    ],
    ids=["trickled-headers", "endless-100-continue", "trickled-body"],
)
def test_every_attempt_has_a_deadline_whatever_the_server_trickles(behaviour):
    with HostileServer(behaviour) as server:
        client = client_of(server, timeout_secs=1.0)
        started = time.monotonic()
        with pytest.raises(SLSError) as raised:
            client.send(request())
        elapsed = time.monotonic() - started
    assert (raised.value.status, raised.value.error_code) == (None, "RequestTimeout")
    assert raised.value.attempts == 2
    assert 1.0 <= elapsed < 10  # two attempts of 1 s each, and a generous ceiling


def test_interim_answers_other_than_100_are_skipped():
    interim = b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nx-log-requestid: FINAL\r\n\r\n"
    with HostileServer(endless(interim + final, b"", max_bytes=0)) as server:
        result = client_of(server).send(request())
    assert (result.request_id, result.attempts) == ("FINAL", 1)


def test_a_deeply_nested_error_body_is_data_and_keeps_its_status_class():
    nested = b"[" * 50_000 + b"]" * 50_000
    with HostileServer(answer(503, nested)) as server:
        with pytest.raises(SLSError) as raised:
            client_of(server, retry=RetryPolicy(max_attempts=3, backoff_base_secs=0)).send(
                request()
            )
    assert (raised.value.status, raised.value.error_code, raised.value.attempts) == (
        503,
        "BadResponse",
        3,
    )


def test_a_null_error_code_is_not_the_string_none():
    body = b'{"errorCode": null, "errorMessage": "odd"}'
    with HostileServer(answer(400, body)) as server:
        with pytest.raises(SLSError) as raised:
            client_of(server).send(request())
    assert raised.value.error_code == "BadResponse"
    assert "odd" in raised.value.error_message


@pytest.mark.parametrize(
    ("status", "retry_after", "waited"),
    [(503, "7", 5.0), (429, "1", 1.0), (503, "Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_is_honoured_within_the_longest_backoff(status, retry_after, waited):
    waits: list[float] = []
    refused = answer(status, b'{"errorCode":"ServerBusy"}', {"Retry-After": retry_after})
    with HostileServer(refused, answer(200)) as server:
        policy = RetryPolicy(max_attempts=2, backoff_max_secs=5.0)
        result = client_of(server, retry=policy, sleep=waits.append).send(request())
    assert result.attempts == 2
    assert waits == [waited]


def test_asking_a_pending_send_twice_gives_the_same_outcome():
    with HostileServer(answer(200, b"", {"x-log-requestid": "ONCE"})) as server:
        pending = client_of(server).start(request())
        first = pending.result()
        assert pending.result() is first
        assert server.connections == 1
    with HostileServer(answer(404, b'{"errorCode":"ProjectNotExist"}')) as server:
        pending = client_of(server).start(request())
        with pytest.raises(SLSError) as first_error:
            pending.result()
        with pytest.raises(SLSError) as second_error:
            pending.result()
        assert second_error.value is first_error.value
        assert server.connections == 1
