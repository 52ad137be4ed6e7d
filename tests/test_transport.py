"""Requests written now and answered later, keeping requests' proxy and TLS settings.

Real sockets on 127.0.0.1: the emulator (over HTTP and HTTPS), and a small
forwarding proxy that records what it relays.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests

from sls_beam.client import WebTrackingClient
from sls_beam.errors import SLSError
from sls_beam.retry import RetryPolicy
from sls_beam.wire import LogEncoder, LogGroup, encode_request
from tests.helpers import LOGSTORE, PROJECT

ONCE = RetryPolicy(max_attempts=1)


def request_of(*messages: str):
    encoder = LogEncoder()
    return encode_request(LogGroup(), [encoder.encode({"msg": m}) for m in messages], "lz4")


def test_requests_are_written_before_any_answer_is_read(emulator):
    emulator.faults.configure(slow_secs=1)
    emulator.faults.script(["slow"] * 3)  # each answer comes 1 s after its logs are stored
    client = WebTrackingClient(emulator.endpoint, PROJECT, LOGSTORE)
    pending = [client.start(request_of(f"m{i}")) for i in range(3)]
    # All three are in the server at once: none of the starts waited for an answer.
    assert emulator.store.wait_for_logs(3, timeout=10)
    assert emulator.store.counters["max_concurrent_requests"] == 3
    results = [p.result() for p in pending]
    stored = {log.contents["msg"]: log.request_id for log in emulator.logs(PROJECT, LOGSTORE)}
    assert [r.request_id for r in results] == [stored["m0"], stored["m1"], stored["m2"]]
    assert [r.attempts for r in results] == [1, 1, 1]


def test_answered_tells_whether_reading_would_wait(emulator):
    emulator.faults.configure(slow_secs=5)
    emulator.faults.script(["slow"])
    client = WebTrackingClient(emulator.endpoint, PROJECT, LOGSTORE)
    pending = client.start(request_of("late"))
    assert emulator.store.wait_for_logs(1, timeout=10)
    assert not pending.answered()  # stored, and the answer is 5 s away
    pending.abandon()
    refused = WebTrackingClient("http://127.0.0.1:9", PROJECT, LOGSTORE, retry=ONCE)
    assert refused.start(request_of("nowhere")).answered()  # failed before sending


def test_a_pending_request_is_retried_when_its_answer_is_read(emulator):
    emulator.faults.script(["503"])
    client = WebTrackingClient(
        emulator.endpoint, PROJECT, LOGSTORE, retry=RetryPolicy(backoff_base_secs=0.001)
    )
    pending = client.start(request_of("again"))
    assert pending.result().attempts == 2
    assert [log.contents["msg"] for log in emulator.logs(PROJECT, LOGSTORE)] == ["again"]


def test_an_abandoned_request_frees_its_connection(emulator):
    client = WebTrackingClient(emulator.endpoint, PROJECT, LOGSTORE, pool_size=1)
    client.start(request_of("first")).abandon()
    assert client.send(request_of("second")).attempts == 1


def test_a_pool_the_session_let_go_is_replaced(emulator):
    session = requests.Session()
    client = WebTrackingClient(emulator.endpoint, PROJECT, LOGSTORE, session=session)
    client.send(request_of("before"))
    session.get_adapter(emulator.endpoint).poolmanager.clear()  # closes the pool in use
    assert client.send(request_of("after")).attempts == 1
    assert len(emulator.logs(PROJECT, LOGSTORE)) == 2


def test_a_session_without_an_http_adapter_is_refused():
    session = requests.Session()
    session.mount("http://", requests.adapters.BaseAdapter())
    with pytest.raises(TypeError, match="HTTPAdapter"):
        WebTrackingClient("http://127.0.0.1:1", PROJECT, LOGSTORE, session=session)


class _ForwardingProxy(ThreadingHTTPServer):
    """A plain-HTTP forward proxy: relays absolute-URI requests and records their targets."""

    daemon_threads = True

    def __init__(self):
        self.seen: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ForwardingProxy

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass

    def do_POST(self):
        self.server.seen.append((self.path, self.headers.get("Proxy-Authorization")))
        body = self.rfile.read(int(self.headers["Content-Length"]))
        url = urlsplit(self.path)
        upstream = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")}
        upstream.request("POST", url.path, body=body, headers=headers)
        answer = upstream.getresponse()
        payload = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("connection", "content-length", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        upstream.close()


@pytest.fixture
def proxy():
    server = _ForwardingProxy()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("configured_by", ["environment", "session"])
def test_requests_go_through_the_configured_proxy(emulator, proxy, monkeypatch, configured_by):
    proxy_url = f"http://user:secret@127.0.0.1:{proxy.server_address[1]}"
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=4))
    if configured_by == "environment":
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
    else:
        session.proxies = {"http": proxy_url}
    client = WebTrackingClient(emulator.endpoint, PROJECT, LOGSTORE, session=session, retry=ONCE)
    client.send(request_of("via proxy"))
    [(path, authorization)] = proxy.seen
    assert path == f"{emulator.endpoint}/logstores/{LOGSTORE}/track"  # absolute URI: a proxy hop
    assert authorization == "Basic dXNlcjpzZWNyZXQ="  # user:secret, as requests sends it
    assert [log.contents["msg"] for log in emulator.logs(PROJECT, LOGSTORE)] == ["via proxy"]


def test_tls_is_verified_by_default_and_a_bad_certificate_is_not_retried(tls_emulator, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    waits = []
    client = WebTrackingClient(tls_emulator.endpoint, PROJECT, LOGSTORE, sleep=waits.append)
    with pytest.raises(SLSError, match="certificate is not trusted") as raised:
        client.send(request_of("unverified"))
    assert raised.value.status is None
    assert (raised.value.error_code, raised.value.attempts, waits) == ("TLSError", 1, [])
    assert tls_emulator.logs(PROJECT, LOGSTORE) == []


def test_tls_spoken_to_a_plain_http_server_is_final_and_says_what_to_write(emulator):
    waits = []
    endpoint = emulator.endpoint.replace("http://", "https://")
    client = WebTrackingClient(endpoint, PROJECT, LOGSTORE, sleep=waits.append)
    with pytest.raises(SLSError, match="does not speak TLS.*http://") as raised:
        client.send(request_of("plain"))
    assert (raised.value.error_code, raised.value.attempts, waits) == ("TLSError", 1, [])


@pytest.mark.parametrize("trusted_by", ["verify", "REQUESTS_CA_BUNDLE"])
def test_tls_with_a_ca_bundle(tls_emulator, certificate, monkeypatch, trusted_by):
    cert_path, _ = certificate
    verify: bool | str = cert_path
    if trusted_by == "REQUESTS_CA_BUNDLE":
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert_path)
        verify = True
    client = WebTrackingClient(tls_emulator.endpoint, PROJECT, LOGSTORE, retry=ONCE, verify=verify)
    assert tls_emulator.endpoint.startswith("https://127.0.0.1:")
    assert client.send(request_of("over tls")).attempts == 1
    assert [log.contents["msg"] for log in tls_emulator.logs(PROJECT, LOGSTORE)] == ["over tls"]
