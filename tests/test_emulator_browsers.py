"""What browsers and the official web SDKs need of the emulator: CORS, a default project,
a lax x-log-bodyrawsize on uncompressed bodies, HTTPS from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from sls_beam.emulator import Emulator
from tests.helpers import LOGSTORE, PROJECT
from tests.test_emulator import post

ORIGIN = "http://127.0.0.1:9"  # a page served from elsewhere


def test_a_preflight_is_answered_and_every_answer_allows_the_origin(emulator):
    preflight = requests.options(
        f"{emulator.endpoint}/logstores/{LOGSTORE}",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-log-apiversion,authorization",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == (
        "content-type,x-log-apiversion,authorization"
    )
    assert int(preflight.headers["Access-Control-Max-Age"]) >= 600
    answered = post(emulator, headers={"Origin": ORIGIN})
    assert answered.status_code == 200
    assert answered.headers["Access-Control-Allow-Origin"] == ORIGIN
    refused = post(emulator, headers={"x-log-apiversion": "0.5.0", "Origin": ORIGIN})
    assert refused.status_code == 400 and refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert answered.headers["Server"] == "nginx"  # no trailing space


def test_an_uncompressed_body_may_declare_another_raw_size(emulator):
    # Official browser code sends the JavaScript string length: wrong for non-ASCII text.
    body = {"__logs__": [{"msg": "中文 é"}]}
    answer = post(emulator, body, compress="none", headers={"x-log-bodyrawsize": "21"})
    assert answer.status_code == 200
    assert emulator.logs()[0].contents == {"msg": "中文 é"}


def test_a_default_project_takes_requests_whose_host_names_none():
    with Emulator(default_project="web-demo") as emulator:
        answer = post(emulator, headers={"Host": f"127.0.0.1:{emulator.port}"})
        assert answer.status_code == 200
        assert {log.project for log in emulator.logs()} == {"web-demo"}
        post(emulator)  # a Host with a project still names its own
        assert {log.project for log in emulator.logs()} == {"web-demo", PROJECT}
    with Emulator() as emulator:
        answer = post(emulator, headers={"Host": f"127.0.0.1:{emulator.port}"})
        assert answer.status_code == 404 and "--default-project" in answer.json()["errorMessage"]


def test_memory_keeps_the_newest_logs_while_counters_count_all():
    with Emulator(memory_logs=10) as emulator:
        for n in range(25):
            post(emulator, {"__logs__": [{"n": str(n)}]})
        assert [log.contents["n"] for log in emulator.logs()] == [str(n) for n in range(15, 25)]
        assert emulator.stats()["logs"] == 25


def run_cli(*args, timeout=30) -> tuple[subprocess.Popen, list[str]]:
    """The emulator's command, started; and its first printed lines."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sls_beam.emulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, [process.stdout.readline().strip()]


def test_the_command_serves_https_with_a_certificate_it_made():
    process, [endpoint] = run_cli("--tls", "--default-project", "web-demo")
    try:
        certificate_line = process.stdout.readline()
        path = certificate_line.split("TLS certificate: ", 1)[1].split(" ", 1)[0]
        assert endpoint.startswith("https://127.0.0.1:")
        answer = requests.post(
            f"{endpoint}/logstores/{LOGSTORE}/track",
            data=json.dumps({"__logs__": [{"a": "1"}]}),
            headers={"x-log-apiversion": "0.6.0"},
            verify=path,
            timeout=10,
        )
        assert answer.status_code == 200
        stored = requests.get(f"{endpoint}/_emulator/logs", verify=path, timeout=10).json()
        assert [(log["project"], log["contents"]) for log in stored] == [("web-demo", {"a": "1"})]
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{endpoint}/_emulator/stats", timeout=10)  # not trusted by default
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("name", ["proj", "proj/", "Proj/logs", "proj/l", "proj/logs!"])
def test_the_command_refuses_a_malformed_logstore(name):
    done = subprocess.run(
        [sys.executable, "-m", "sls_beam.emulator", "--logstore", name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "PROJECT/LOGSTORE" in done.stderr
