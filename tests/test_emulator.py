"""The emulator speaks PutWebTracking as the service does.

Requests here are built by hand with json/lz4/zlib and sent with plain
``requests``: nothing from sls_beam.wire or sls_beam.client is used, so the
emulator is checked independently of the connector.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import zlib
from contextlib import contextmanager

import lz4.block
import pytest
import requests

from sls_beam.emulator import Emulator, FaultPlan, data_file
from sls_beam.emulator.protocol import LogChecker, Rejection, parse_body
from tests.helpers import LOGSTORE, PROJECT

BODY = {
    "__topic__": "t",
    "__source__": "s",
    "__tags__": {"env": "dev"},
    "__logs__": [{"a": "1", "__time__": "5"}, {"b": "é"}],
}


def post(
    emulator,
    body=BODY,
    *,
    compress="lz4",
    raw=None,
    headers=None,
    project=PROJECT,
    logstore=LOGSTORE,
    path=None,
):
    raw = raw if raw is not None else json.dumps(body).encode()
    if compress == "lz4":
        data = lz4.block.compress(raw, store_size=False)
    elif compress == "deflate":
        data = zlib.compress(raw)
    else:
        data = raw
    sent = {
        "x-log-apiversion": "0.6.0",
        "x-log-bodyrawsize": str(len(raw)),
        "Content-Type": "application/json",
        "Host": f"{project}.127.0.0.1:{emulator.port}",
    }
    if compress != "none":
        sent["x-log-compresstype"] = compress
    sent.update(headers or {})
    sent = {k: v for k, v in sent.items() if v is not None}
    url = f"{emulator.endpoint}{path or f'/logstores/{logstore}/track'}"
    return requests.post(url, data=data, headers=sent, timeout=10)


def error_of(response):
    assert response.headers.get("x-log-requestid")
    return response.status_code, response.json()["errorCode"]


@pytest.mark.parametrize("compress", ["lz4", "deflate", "none"])
def test_accepts_each_encoding_and_stores_logs(emulator, compress):
    response = post(emulator, compress=compress)
    assert response.status_code == 200
    assert response.content == b""
    assert len(response.headers["x-log-requestid"]) == 24
    logs = emulator.logs(PROJECT, LOGSTORE)
    assert [log.contents for log in logs] == [{"a": "1"}, {"b": "é"}]
    assert {(log.topic, log.source) for log in logs} == {("t", "s")}
    assert logs[0].tags == {"env": "dev"}
    assert logs[0].request_id == response.headers["x-log-requestid"]
    # __time__ is replaced by the receive time, not stored as a field.
    assert logs[0].time > 1_700_000_000


def test_api_version_as_query_parameter(emulator):
    raw = json.dumps(BODY).encode()
    response = requests.post(
        f"{emulator.endpoint}/logstores/{LOGSTORE}/track?APIVersion=0.6.0",
        data=raw,
        headers={"Host": f"{PROJECT}.x"},
        timeout=10,
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        ({"headers": {"x-log-apiversion": None}}, 400, "MissingAPIVersion"),
        ({"headers": {"x-log-apiversion": "0.5.0"}}, 400, "InvalidAPIVersion"),
        ({"headers": {"x-log-compresstype": "gzip"}}, 400, "InvalidCompressType"),
        ({"headers": {"x-log-bodyrawsize": None}}, 400, "MissingBodyRawSize"),
        ({"headers": {"x-log-bodyrawsize": "abc"}}, 400, "InvalidBodyRawSize"),
        (
            {"headers": {"x-log-bodyrawsize": "10"}, "compress": "deflate"},
            400,
            "InvalidBodyRawSize",
        ),
        ({"headers": {"x-log-bodyrawsize": "100000"}}, 400, "InvalidBodyRawSize"),
        ({"headers": {"x-log-bodyrawsize": "10"}}, 400, "PostBodyUncompressError"),
        ({"headers": {"x-log-bodyrawsize": str(4 * 1024 * 1024)}}, 413, "PostBodyTooLarge"),
        ({"headers": {"x-log-compresstype": "deflate"}}, 400, "PostBodyUncompressError"),
        ({"raw": b"not json"}, 400, "PostBodyInvalid"),
        ({"raw": b"\xff\xfe"}, 400, "PostBodyInvalid"),
        ({"body": ["a list"]}, 400, "PostBodyInvalid"),
        ({"body": {"__logs__": []}}, 400, "PostBodyInvalid"),
        ({"body": {"__logs__": [{"a": 1}]}}, 400, "PostBodyInvalid"),
        ({"body": {"__logs__": ["x"]}}, 400, "PostBodyInvalid"),
        ({"body": {"__logs__": [{"a": "1"}], "__topic__": 5}}, 400, "PostBodyInvalid"),
        ({"body": {"__logs__": [{"a": "1"}], "__source__": "s" * 129}}, 400, "PostBodyInvalid"),
        ({"body": {"__logs__": [{"a": "1"}], "__tags__": {"k": 1}}}, 400, "PostBodyInvalid"),
        ({"body": {"__logs__": [{"a": "1"}] * 4097}}, 400, "PostBodyInvalid"),
        ({"body": {"__logs__": [{"": "1"}]}}, 400, "InvalidKey"),
        ({"body": {"__logs__": [{"k" * 129: "1"}]}}, 400, "InvalidKey"),
        ({"body": {"__logs__": [{"__topic__": "1"}]}}, 400, "InvalidKey"),
        ({"body": {"__logs__": [{"__tag__:x": "1"}]}}, 400, "InvalidKey"),
        ({"body": {"__logs__": [{"k": "v" * (1024 * 1024 + 1)}]}}, 400, "PostBodyInvalid"),
        ({"project": "Bad_Project"}, 404, "ProjectNotExist"),
        ({"logstore": "x"}, 404, "LogStoreNotExist"),
        ({"headers": {"Host": "127.0.0.1"}}, 404, "ProjectNotExist"),
        ({"path": "/elsewhere"}, 404, "InvalidPath"),
    ],
)
def test_rejections(emulator, kwargs, status, code):
    response = post(emulator, **kwargs)
    assert error_of(response) == (status, code)
    assert emulator.logs() == []
    assert emulator.stats()["rejections"] == {code: 1}


def test_raw_json_over_three_mib_is_too_large(emulator):
    body = {"__logs__": [{"k": "v" * 1_000_000}] * 4}
    assert error_of(post(emulator, body=body)) == (413, "PostBodyTooLarge")


def test_body_over_ten_mib_is_refused_unread(emulator):
    response = post(emulator, raw=b"x" * (10 * 1024 * 1024 + 1), compress="none")
    assert error_of(response) == (413, "PostBodyTooLarge")


def test_decompression_bomb_is_not_inflated(emulator):
    bomb = zlib.compress(b"{" + b" " * (50 * 1024 * 1024))  # ~50 KB on the wire
    response = requests.post(
        f"{emulator.endpoint}/logstores/{LOGSTORE}/track",
        data=bomb,
        timeout=10,
        headers={
            "Host": f"{PROJECT}.h",
            "x-log-apiversion": "0.6.0",
            "x-log-compresstype": "deflate",
            "x-log-bodyrawsize": "1000",
        },
    )
    assert error_of(response) == (400, "InvalidBodyRawSize")


def test_lz4_frame_format_is_refused(emulator):
    import lz4.frame

    raw = json.dumps(BODY).encode()
    response = requests.post(
        f"{emulator.endpoint}/logstores/{LOGSTORE}/track",
        data=lz4.frame.compress(raw),
        timeout=10,
        headers={
            "Host": f"{PROJECT}.h",
            "x-log-apiversion": "0.6.0",
            "x-log-compresstype": "lz4",
            "x-log-bodyrawsize": str(len(raw)),
        },
    )
    assert error_of(response)[0] == 400


def test_web_tracking_disabled_is_401(emulator):
    emulator.create_logstore(PROJECT, LOGSTORE, web_tracking=False)
    assert error_of(post(emulator)) == (401, "Unauthorized")


def test_strict_mode_needs_declared_logstores():
    with Emulator(strict=True) as strict:
        strict.create_logstore(PROJECT, "declared")
        assert error_of(post(strict, project="other-project")) == (404, "ProjectNotExist")
        assert error_of(post(strict, logstore="undeclared")) == (404, "LogStoreNotExist")
        assert post(strict, logstore="declared").status_code == 200


@pytest.mark.parametrize("pixel", ["track", "track.gif", "track_ua.gif"])
def test_get_single_log_form(emulator, pixel):
    response = requests.get(
        f"{emulator.endpoint}/logstores/{LOGSTORE}/{pixel}?APIVersion=0.6.0&__topic__=web&k=v&n=1",
        headers={"Host": f"{PROJECT}.example", "User-Agent": "ua-test"},
        timeout=10,
    )
    assert response.status_code == 200
    [log] = emulator.logs(PROJECT, LOGSTORE)
    assert log.topic == "web"
    expected = {"k": "v", "n": "1"}
    if pixel == "track_ua.gif":
        expected["user-agent"] = "ua-test"
    assert log.contents == expected
    assert response.headers["Content-Type"] == (
        "application/json" if pixel == "track" else "image/gif"
    )


def test_get_needs_api_version(emulator):
    response = requests.get(
        f"{emulator.endpoint}/logstores/{LOGSTORE}/track?k=v",
        headers={"Host": f"{PROJECT}.example"},
        timeout=10,
    )
    assert error_of(response) == (400, "MissingAPIVersion")


def test_counters(emulator):
    post(emulator, compress="deflate")
    post(emulator, headers={"x-log-apiversion": "9"})
    stats = emulator.stats()
    raw = len(json.dumps(BODY).encode())
    assert stats["requests"] == 2
    assert stats["accepted_requests"] == 1
    assert stats["logs"] == 2
    assert stats["raw_bytes"] == raw
    assert stats["body_bytes"] == len(zlib.compress(json.dumps(BODY).encode()))
    assert stats["rejections"] == {"InvalidAPIVersion": 1}


def test_http_read_endpoints(emulator):
    post(emulator)
    logs = requests.get(
        f"{emulator.endpoint}/_emulator/logs",
        params={"project": PROJECT, "logstore": LOGSTORE},
        timeout=10,
    ).json()
    assert [log["contents"] for log in logs] == [{"a": "1"}, {"b": "é"}]
    stats = requests.get(f"{emulator.endpoint}/_emulator/stats", timeout=10).json()
    assert stats["logs"] == 2


def test_scripted_faults_in_order(emulator):
    emulator.faults.script(["500", "502", "503", "quota", "ok"])
    answers = [post(emulator) for _ in range(6)]
    assert [a.status_code for a in answers] == [500, 502, 503, 403, 200, 200]
    assert answers[3].json()["errorCode"] == "WriteQuotaExceed"
    assert emulator.stats()["faults"] == {"500": 1, "502": 1, "503": 1, "quota": 1}


def test_fault_control_endpoint(emulator):
    requests.post(f"{emulator.endpoint}/_emulator/faults", json={"script": ["503"]}, timeout=10)
    assert post(emulator).status_code == 503
    assert post(emulator).status_code == 200


def test_dropped_connection(emulator):
    emulator.faults.script(["drop"])
    with pytest.raises(requests.ConnectionError):
        post(emulator)
    assert emulator.logs() == []
    assert post(emulator).status_code == 200


def test_slow_answer_stores_then_answers_late(emulator):
    emulator.faults.configure(slow_secs=5)
    emulator.faults.script(["slow"])
    with pytest.raises(requests.Timeout):
        requests.post(
            f"{emulator.endpoint}/logstores/{LOGSTORE}/track?APIVersion=0.6.0",
            data=json.dumps(BODY),
            headers={"Host": f"{PROJECT}.h"},
            timeout=0.3,
        )
    assert len(emulator.logs()) == 2  # stored before the late answer: a retry duplicates


def test_seeded_random_faults_reproduce():
    def run(seed):
        plan = FaultPlan({"500": 0.3, "quota": 0.2}, seed=seed)
        return [plan.next_fault() for _ in range(200)]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert 40 <= first.count("500") <= 80 and 20 <= first.count("quota") <= 60


def test_restart_on_same_port_keeps_logs(emulator):
    port = emulator.port
    post(emulator)
    emulator.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/_emulator/stats", timeout=2)
    assert emulator.restart().endswith(f":{port}")
    post(emulator)
    assert len(emulator.logs()) == 4


def test_data_dir_survives_a_new_emulator(tmp_path):
    with Emulator(data_dir=str(tmp_path)) as first:
        post(first)
    path = data_file(tmp_path, PROJECT, LOGSTORE)
    assert [json.loads(line)["contents"] for line in path.read_text().splitlines()] == [
        {"a": "1"},
        {"b": "é"},
    ]
    with Emulator(data_dir=str(tmp_path)) as second:
        assert [log.contents for log in second.logs(PROJECT, LOGSTORE)] == [{"a": "1"}, {"b": "é"}]
        post(second)
        assert len(second.logs(PROJECT, LOGSTORE)) == 4
    assert len(path.read_text().splitlines()) == 4


def test_concurrent_clients(emulator):
    errors = []

    def client(n):
        with requests.Session() as session:
            for i in range(20):
                body = {"__topic__": f"c{n}", "__logs__": [{"i": str(i)}]}
                raw = json.dumps(body).encode()
                r = session.post(
                    f"{emulator.endpoint}/logstores/{LOGSTORE}/track",
                    data=raw,
                    headers={"Host": f"{PROJECT}.h", "x-log-apiversion": "0.6.0"},
                    timeout=10,
                )
                if r.status_code != 200:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    logs = emulator.logs()
    assert len(logs) == 320
    assert {(log.topic, log.contents["i"]) for log in logs} == {
        (f"c{n}", str(i)) for n in range(16) for i in range(20)
    }


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /logstores/x/track HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /logstores/abc/track HTTP/1.1\r\nHost: p.h\r\nContent-Length: 3\r\n\r\nab",
        b"A" * 70000 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost:\r\n\r\n",
    ],
)
def test_survives_garbage(emulator, garbage):
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as raw:
        raw.sendall(garbage)
        raw.shutdown(socket.SHUT_WR)
        raw.recv(65536)  # any answer or a close; the server must not hang or die
    assert post(emulator).status_code == 200


@contextmanager
def command_line_emulator(*flags: str):
    """``python -m sls_beam.emulator`` in a process of its own; yields its endpoint."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sls_beam.emulator", *flags], stdout=subprocess.PIPE, text=True
    )
    try:
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def post_to(endpoint: str, body: dict) -> requests.Response:
    return requests.post(
        f"{endpoint}/logstores/{LOGSTORE}/track",
        data=json.dumps(body).encode(),
        timeout=10,
        headers={"Host": f"{PROJECT}.h", "x-log-apiversion": "0.6.0"},
    )


def test_command_line(tmp_path):
    with command_line_emulator("--data-dir", str(tmp_path)) as endpoint:
        assert endpoint.startswith("http://127.0.0.1:")
        assert post_to(endpoint, BODY).status_code == 200
    assert len(data_file(tmp_path, PROJECT, LOGSTORE).read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "flags, log, status",
    [
        ((), {"a-b": "x"}, 200),
        (("--strict-keys",), {"a-b": "x"}, 400),
        ((), {"n": 5}, 400),
        (("--trust-logs",), {"n": 5}, 200),
    ],
)
def test_command_line_checking_flags(flags, log, status):
    with command_line_emulator(*flags) as endpoint:
        assert post_to(endpoint, {"__logs__": [log]}).status_code == status


@pytest.mark.parametrize("trust", [False, True])
def test_bodies_are_parsed_whether_or_not_logs_are_trusted(trust):
    checker = LogChecker(trust=trust)
    assert len(parse_body(b'{"__logs__":[{"a":"1"},{"b":"2"}]}', checker).logs) == 2
    for bad in (b'{"__logs__":[{"a":"1"}', b"\xff{}", b"[]", b'{"__logs__":[]}'):
        with pytest.raises(Rejection, match="PostBodyInvalid"):
            parse_body(bad, checker)
