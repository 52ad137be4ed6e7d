"""The official SLS web SDKs (npm, pinned by tests/node/package-lock.json) against the
emulator, for real: the browser SDK in headless Chromium from a page of another origin
(beacon, XHR, and the STS plugin's signed POST behind a CORS preflight), and the
mini-program SDK in Node with a ``wx.request`` stand-in."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from sls_beam.emulator import Emulator

HERE = Path(__file__).parent
SDKS = HERE / "node" / "node_modules" / "@aliyun-sls"
AKID, SECRET, TOKEN = "LTAI-browser", "browser-secret", "browser-sts-token"
LOGSTORE = "web-logs"


def _needed(what: str, present: bool, how: str) -> None:
    if present:
        return
    if os.environ.get("SLS_BEAM_REQUIRE_NODE"):
        pytest.fail(f"{what} is needed here (.ci/run installs it): {how}")
    pytest.skip(f"{what} is missing: {how}")


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    _needed("Chromium", found is not None, "apt-get install chromium")
    _needed("the npm SDKs", SDKS.is_dir(), "cd tests/node && npm ci")
    return found


class _PageHandler(SimpleHTTPRequestHandler):
    """The test page at /, the SDKs' browser bundles at /sdk/."""

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path.startswith("/sdk/"):
            name = Path(path).name
            package = name.removesuffix(".global.js")
            return str(SDKS / package / "dist" / name)
        return str(HERE / "browser" / "page.html")

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture
def page_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_browser_sdk_writes_by_beacon_xhr_and_signed_after_a_preflight(page_server, tmp_path):
    chromium = _chromium()
    profile = tmp_path / "chromium-profile"
    with Emulator(
        default_project="web-demo", access_keys={AKID: SECRET}, sts_tokens={AKID: TOKEN}
    ) as emulator:
        config = {
            "endpoint": emulator.endpoint,
            "logstore": LOGSTORE,
            "accessKeyId": AKID,
            "accessKeySecret": SECRET,
            "securityToken": TOKEN,
        }
        page = page_server + "#" + quote(json.dumps(config))
        browser = subprocess.run(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--virtual-time-budget=20000",
                f"--user-data-dir={profile}",
                "--dump-dom",
                page,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert browser.returncode == 0, browser.stderr[-2000:]
        arrived = emulator.wait_for_logs(3, timeout=60)
        logs = {log.topic: log for log in emulator.logs("web-demo", LOGSTORE)}
        assert arrived, (emulator.stats(), browser.stderr[-2000:])
    assert sorted(logs) == ["beacon", "sts", "xhr"]
    assert {(log.source, log.tags["page"]) for log in logs.values()} == {("browser", "test")}
    assert logs["beacon"].contents == {"kind": "beacon", "n": "1", "ok": "true"}
    assert logs["xhr"].contents["pad"] == "x" * 40000
    assert logs["sts"].contents == {"kind": "sts", "msg": "中文 é"}
    assert logs["sts"].time == 1_700_000_000  # signed: its own time kept
    assert emulator.stats()["preflights"] >= 1


def test_the_mini_program_sdk_writes_over_https_to_its_project():
    _needed("Node", shutil.which("node") is not None, "apt-get install nodejs")
    _needed("the npm SDKs", SDKS.is_dir(), "cd tests/node && npm ci")
    process = subprocess.Popen(
        [sys.executable, "-m", "sls_beam.emulator", "--tls"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        endpoint = process.stdout.readline().strip()
        ca = process.stdout.readline().split("TLS certificate: ", 1)[1].split(" ", 1)[0]
        port = int(endpoint.rsplit(":", 1)[1])
        run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=60)
        sent = run(
            ["node", str(HERE / "node" / "mini_program.js")],
            input=json.dumps(
                {"port": port, "ca": ca, "project": "mini-demo", "logstore": LOGSTORE}
            ),
        )
        assert (sent.returncode, sent.stdout) == (0, "200"), sent.stderr
        stored = requests.get(f"{endpoint}/_emulator/logs", verify=ca, timeout=10).json()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert [(s["project"], s["topic"], s["source"], s["tags"], s["contents"]) for s in stored] == [
        ("mini-demo", "mini", "wechat", {"app": "mini"}, {"page": "/index", "n": "1"}),
        ("mini-demo", "mini", "wechat", {"app": "mini"}, {"page": "/cart", "ok": "false"}),
    ]
