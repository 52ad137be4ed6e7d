"""The emulator against hostile clients: idle and slow sockets, descriptor exhaustion,
stalled TLS handshakes, nesting bombs, bad escapes, malformed framing, held bodies;
and what it keeps on disk. Real sockets on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sls_beam.client import WebTrackingClient
from sls_beam.emulator import Emulator, data_file
from sls_beam.emulator.store import MAX_OPEN_FILES
from sls_beam.retry import RetryPolicy
from sls_beam.wire import LogEncoder, LogGroup, encode_request
from tests.helpers import LOGSTORE, PROJECT

HEADERS = {"Host": f"{PROJECT}.h", "x-log-apiversion": "0.6.0"}


def post(endpoint: str, body: bytes, logstore: str = LOGSTORE, **headers) -> requests.Response:
    return requests.post(
        f"{endpoint}/logstores/{logstore}/track",
        data=body,
        headers={**HEADERS, **headers},
        timeout=10,
    )


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received


def request_head(length: str, extra: str = "") -> bytes:
    return (
        f"POST /logstores/{LOGSTORE}/track HTTP/1.1\r\nHost: {PROJECT}.h\r\n"
        f"x-log-apiversion: 0.6.0\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode("latin-1")


def test_an_idle_connection_is_closed():
    with Emulator(idle_timeout_secs=0.5) as emulator:
        started = time.monotonic()
        assert raw_exchange(emulator.port, b"") == b""  # closed by the server
        assert time.monotonic() - started < 5


def test_a_trickling_body_is_cut_off():
    with Emulator(idle_timeout_secs=1.0) as emulator:
        with socket.create_connection(("127.0.0.1", emulator.port), timeout=10) as conn:
            conn.sendall(request_head("100"))
            started = time.monotonic()
            answer = b""
            for _ in range(100):  # a byte every 0.1 s: each read is quick, the whole is not
                try:
                    conn.sendall(b"x")
                except OSError:
                    break
                conn.settimeout(0.1)
                try:
                    answer += conn.recv(65536)
                except TimeoutError:
                    continue
                if answer:
                    break
        assert answer.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 5


def emulator_process(*flags: str, max_files: int) -> subprocess.Popen:
    """The CLI emulator in a process that may hold at most ``max_files`` descriptors."""

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

    return subprocess.Popen(
        [sys.executable, "-m", "sls_beam.emulator", *flags],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )


def cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc for CPU time")
def test_out_of_descriptors_the_emulator_neither_spins_nor_stops_serving():
    process = emulator_process("--idle-timeout-secs", "1", max_files=64)
    try:
        endpoint = process.stdout.readline().strip()
        port = int(endpoint.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
        before = cpu_secs(process.pid)
        window = time.monotonic()
        deadline = window + 30
        # While it is out of descriptors, and after the idle ones time out, it serves again.
        while time.monotonic() < deadline:
            try:
                if post(endpoint, b'{"__logs__":[{"a":"1"}]}').status_code == 200:
                    break
            except requests.RequestException:
                pass
        else:
            pytest.fail("the emulator stopped serving")
        busy = (cpu_secs(process.pid) - before) / (time.monotonic() - window)
        for conn in idle:
            conn.close()
        assert busy < 0.5  # a spinning accept loop takes a whole core
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_stalled_tls_handshake_blocks_no_other_client(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with Emulator(tls=context, idle_timeout_secs=30) as emulator:
        with socket.create_connection(("127.0.0.1", emulator.port)):  # says nothing
            client = WebTrackingClient(
                emulator.endpoint,
                PROJECT,
                LOGSTORE,
                verify=certificate[0],
                timeout_secs=5,
                retry=RetryPolicy(max_attempts=1),
            )
            request = encode_request(LogGroup(), [LogEncoder().encode({"m": "tls"})])
            assert client.send(request).attempts == 1
        assert [log.contents for log in emulator.logs()] == [{"m": "tls"}]


def test_a_json_nesting_bomb_is_a_client_error(emulator):
    bomb = b'{"__logs__":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    response = post(emulator.endpoint, bomb)
    assert (response.status_code, response.json()["errorCode"]) == (400, "PostBodyInvalid")


def test_a_lone_surrogate_escape_is_refused_and_nothing_is_kept(tmp_path):
    body = b'{"__logs__":[{"ok":"1"},{"bad":"\\ud800"}]}'
    with Emulator(data_dir=str(tmp_path)) as emulator:
        for _ in range(3):  # a client retrying must not pile up copies
            response = post(emulator.endpoint, body)
            assert (response.status_code, response.json()["errorCode"]) == (400, "PostBodyInvalid")
        tagged = b'{"__tags__":{"t":"\\udfff"},"__logs__":[{"ok":"1"}]}'
        assert post(emulator.endpoint, tagged).status_code == 400
        assert emulator.logs() == [] and emulator.stats()["logs"] == 0
    assert not data_file(tmp_path, PROJECT, LOGSTORE).exists()


@pytest.mark.parametrize(
    "head",
    [
        request_head("\xb2"),  # a non-ASCII "digit"
        request_head("1\u0660".encode().decode("latin-1")),
        request_head("30", "Content-Length: 31\r\n"),  # two lengths
        request_head("30", "Transfer-Encoding: chunked\r\n"),
        request_head("-1"),
    ],
    ids=["superscript", "arabic-digit-bytes", "two-lengths", "chunked", "negative"],
)
def test_malformed_framing_is_refused_and_the_connection_closed(emulator, head):
    smuggled = b"GET /_emulator/stats HTTP/1.1\r\nHost: x\r\n\r\n"
    received = raw_exchange(emulator.port, head + smuggled)
    assert received.startswith((b"HTTP/1.1 400", b"HTTP/1.1 411"))
    assert received.count(b"HTTP/1.1 ") == 1  # the body was not run as a request
    assert b"Connection: close" in received


def test_request_bodies_held_at_once_are_bounded():
    padding = 600_000
    body = b'{"__logs__":[{"a":"' + b"x" * padding + b'"}]}'
    with Emulator(max_body_bytes_in_flight=1_000_000) as emulator:
        with socket.create_connection(("127.0.0.1", emulator.port), timeout=10) as held:
            held.sendall(request_head(str(len(body))) + body[:100])
            assert emulator.wait_for_held_bytes(len(body), timeout=10)
            assert emulator.stats()["body_bytes_held"] == len(body)
            refused = post(emulator.endpoint, body)
            assert (refused.status_code, refused.json()["errorCode"]) == (503, "ServerBusy")
            held.sendall(body[100:])
            answer = held.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        assert post(emulator.endpoint, body).status_code == 200  # its share was given back


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts /proc/self/fd")
def test_open_data_files_are_bounded(tmp_path):
    with Emulator(data_dir=str(tmp_path)) as emulator:
        before = len(os.listdir("/proc/self/fd"))
        for n in range(MAX_OPEN_FILES + 40):
            assert post(emulator.endpoint, b'{"__logs__":[{"a":"1"}]}', f"store-{n}").ok
        opened = len(os.listdir("/proc/self/fd")) - before
    assert opened <= MAX_OPEN_FILES + 8
    for n in range(MAX_OPEN_FILES + 40):
        assert len(data_file(tmp_path, PROJECT, f"store-{n}").read_text().splitlines()) == 1


def test_a_data_dir_with_a_cut_line_and_foreign_files_still_loads(tmp_path, caplog):
    with Emulator(data_dir=str(tmp_path)) as emulator:
        post(emulator.endpoint, b'{"__logs__":[{"a":"1"},{"b":"2"}]}')
    path = data_file(tmp_path, PROJECT, LOGSTORE)
    path.write_text(path.read_text() + '{"project": "test-project", "logst')  # a crash
    foreign = tmp_path / "failed" / "failed-00000-of-00001.jsonl"
    foreign.parent.mkdir()
    foreign.write_text(json.dumps({"stage": "read", "reason": "x"}) + "\n")
    with Emulator(data_dir=str(tmp_path)) as emulator:
        assert [log.contents for log in emulator.logs()] == [{"a": "1"}, {"b": "2"}]
        assert emulator.stats()["logs"] == 2  # counters know the reloaded logs
        assert emulator.wait_for_logs(2, timeout=0)
    assert "cut short" in caplog.text and "not a file of emulator logs" in caplog.text


def test_refused_fault_settings_change_nothing(emulator):
    refused = requests.post(
        f"{emulator.endpoint}/_emulator/faults",
        json={"script": ["500"], "rates": {"bogus": 1.0}},
        timeout=10,
    )
    assert refused.status_code == 400
    for settings in ({"script": "500"}, {"latency_secs": "slow"}, {"colour": 1}):
        assert (
            requests.post(
                f"{emulator.endpoint}/_emulator/faults", json=settings, timeout=10
            ).status_code
            == 400
        )
    assert post(emulator.endpoint, b'{"__logs__":[{"a":"1"}]}').status_code == 200
    assert emulator.faults.latency_secs == 0.0
