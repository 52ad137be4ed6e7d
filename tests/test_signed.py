"""Signed writes (v1, v4) end to end against the emulator, which checks them with its own
verifier; and the official web STS plugin, run in Node, as a second signer."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import apache_beam as beam
import pytest
import requests
from apache_beam.testing.util import assert_that, equal_to

from sls_beam import Credentials, SLSError, WebTrackingClient, WriteToSLS
from sls_beam.credentials import CredentialsError, CredentialSource
from sls_beam.emulator import Emulator
from sls_beam.wire import LogEncoder, LogGroup, encode_request
from tests.helpers import LOGSTORE, PROJECT

AKID, SECRET, TOKEN = "LTAI-test-key", "s3cr3t-value-never-shown", "sts-token-never-shown"
NODE_DIR = Path(__file__).parent / "node"


def signed_emulator(**kwargs) -> Emulator:
    return Emulator(access_keys={AKID: SECRET}, **kwargs)


@pytest.mark.parametrize("version", ["v1", "v4"])
def test_signed_writes_are_accepted_and_keep_each_logs_time(version):
    with signed_emulator() as emulator:
        emulator.create_logstore(PROJECT, LOGSTORE, web_tracking=False)  # no anonymous writes
        with WebTrackingClient(
            emulator.endpoint,
            PROJECT,
            LOGSTORE,
            credentials=Credentials(AKID, SECRET),
            signature_version=version,
            region="cn-hangzhou" if version == "v4" else None,
        ) as client:
            before = int(time.time())
            [result] = client.put_logs(
                [{"n": 1, "__time__": 1_700_000_000}, {"n": 2, "msg": "é中"}],
                LogGroup.of("topic", "src", {"k": "v"}),
            )
        stored = emulator.logs(PROJECT, LOGSTORE)
        assert result.attempts == 1
        assert [(log.contents, log.topic, log.tags) for log in stored] == [
            ({"n": "1"}, "topic", {"k": "v"}),
            ({"n": "2", "msg": "é中"}, "topic", {"k": "v"}),
        ]
        assert stored[0].time == 1_700_000_000  # its own __time__, kept
        assert before <= stored[1].time <= int(time.time())  # none: the time it was encoded
        # The same logstore refuses anonymous writes.
        with WebTrackingClient(emulator.endpoint, PROJECT, LOGSTORE) as anonymous:
            with pytest.raises(SLSError) as refused:
                anonymous.put_logs([{"n": 3}])
        assert refused.value.status == 401


def test_v4_needs_a_region_it_can_tell_or_is_given():
    with pytest.raises(ValueError, match="region="):
        WebTrackingClient(
            "http://127.0.0.1:1", PROJECT, LOGSTORE, credentials=Credentials(AKID, SECRET),
            signature_version="v4",
        )  # fmt: skip
    client = WebTrackingClient(
        "cn-shanghai.log.aliyuncs.com", PROJECT, LOGSTORE, credentials=Credentials(AKID, SECRET),
        signature_version="v4",
    )  # fmt: skip
    assert (
        client.target.url == f"https://{PROJECT}.cn-shanghai.log.aliyuncs.com/logstores/{LOGSTORE}"
    )
    with pytest.raises(ValueError, match="signature_version"):
        WebTrackingClient(
            "http://127.0.0.1:1", PROJECT, LOGSTORE, credentials="env", signature_version="v2"
        )


@pytest.mark.parametrize(
    "credentials, code, hint",
    [
        (Credentials(AKID, "another-secret"), "SignatureNotMatch", "secret is probably wrong"),
        (Credentials("LTAI-unknown", SECRET), "InvalidAccessKeyId", "unknown or disabled"),
    ],
)
def test_refused_credentials_fail_at_once_and_say_why(credentials, code, hint):
    with signed_emulator() as emulator:
        with WebTrackingClient(emulator.endpoint, PROJECT, LOGSTORE, credentials=credentials) as c:
            with pytest.raises(SLSError) as refused:
                c.put_logs([{"n": 1}])
    error = refused.value
    assert (error.status, error.error_code, error.attempts) == (401, code, 1)
    assert hint in str(error) and "web tracking" not in str(error)
    assert "another-secret" not in str(error) and SECRET not in str(error)


def test_an_expired_token_is_renewed_once_from_the_provider():
    tokens = iter(["expired-token", TOKEN])
    calls = []

    def provider():
        calls.append(1)
        return Credentials(AKID, SECRET, next(tokens))

    with signed_emulator(sts_tokens={AKID: TOKEN}) as emulator:
        with WebTrackingClient(emulator.endpoint, PROJECT, LOGSTORE, credentials=provider) as c:
            [result] = c.put_logs([{"n": 1}])
        assert (result.attempts, len(calls)) == (2, 2)
        assert len(emulator.logs()) == 1
        assert emulator.stats()["rejections"] == {"InvalidSecurityToken": 1}
        # A token that stays wrong: renewed once, then final, with the likely cause.
        stale = lambda: Credentials(AKID, SECRET, "still-expired")  # noqa: E731
        with WebTrackingClient(emulator.endpoint, PROJECT, LOGSTORE, credentials=stale) as c:
            with pytest.raises(SLSError) as refused:
                c.put_logs([{"n": 2}])
    assert refused.value.attempts == 2 and "STS token" in str(refused.value)
    assert "still-expired" not in str(refused.value)


def test_credentials_near_their_expiration_are_asked_for_again():
    now = [1000.0]
    calls = []

    def provider():
        calls.append(now[0])
        return Credentials(AKID, SECRET, TOKEN, expiration=now[0] + 3600)

    source = CredentialSource(provider, clock=lambda: now[0])
    source.current()
    now[0] += 3000  # 10 minutes left: still good
    source.current()
    now[0] += 400  # under 5 minutes left: asked again
    source.current()
    assert calls == [1000.0, 4400.0]


def test_a_provider_that_raises_or_a_missing_variable_is_a_clear_final_error(monkeypatch):
    def broken():
        raise RuntimeError(f"vault said no to {SECRET}")

    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", raising=False)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", AKID)
    with signed_emulator() as emulator:
        for credentials, words in ((broken, "provider raised RuntimeError"), ("env", "not set")):
            with WebTrackingClient(
                emulator.endpoint, PROJECT, LOGSTORE, credentials=credentials
            ) as client:
                with pytest.raises(SLSError) as failed:
                    client.put_logs([{"n": 1}])
            assert failed.value.error_code == "CredentialsError" and words in str(failed.value)
            assert SECRET not in str(failed.value) and failed.value.attempts == 1
        assert emulator.stats()["requests"] == 0
    with pytest.raises(CredentialsError, match="must return Credentials"):
        CredentialSource(lambda: "not credentials").current()


def test_clock_skew_is_corrected_from_the_servers_date():
    ahead = 3600.0  # the server's clock is an hour ahead of this machine's
    with signed_emulator(clock=lambda: time.time() + ahead) as emulator:
        with WebTrackingClient(
            emulator.endpoint, PROJECT, LOGSTORE, credentials=Credentials(AKID, SECRET)
        ) as client:
            [first] = client.put_logs([{"n": 1}])
            [second] = client.put_logs([{"n": 2}])  # the offset learnt is kept
        assert (first.attempts, second.attempts) == (2, 1)
        assert abs(client.signer.clock_offset_secs - ahead) < 5
        assert emulator.stats()["rejections"] == {"RequestTimeExpired": 1}
        assert len(emulator.logs()) == 2


def test_secrets_appear_in_no_repr_display_data_or_error():
    credentials = Credentials(AKID, SECRET, TOKEN)
    sink = WriteToSLS("http://127.0.0.1:1", PROJECT, LOGSTORE, credentials=credentials)
    shown = [
        repr(credentials),
        str(credentials),
        repr(sink._config),
        json.dumps({k: str(v) for k, v in sink.display_data().items()}),
    ]
    assert AKID in shown[0] and "credentials" in shown[3]
    for text in shown:
        assert SECRET not in text and TOKEN not in text


def test_write_to_sls_signs_with_credentials_from_the_worker_environment(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", AKID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET)
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", TOKEN)
    with signed_emulator(sts_tokens={AKID: TOKEN}) as emulator:
        emulator.create_logstore(PROJECT, LOGSTORE, web_tracking=False)
        logs = [{"n": n, "ok": n % 2 == 0} for n in range(600)]
        with beam.Pipeline(runner="FnApiRunner") as p:
            stamped = (
                p
                | beam.Create(logs, reshuffle=False)
                | beam.Map(lambda log: beam.window.TimestampedValue(log, 1_600_000_000 + log["n"]))
            )
            result = stamped | WriteToSLS(
                emulator.endpoint, PROJECT, LOGSTORE, credentials="env", max_batch_logs=100
            )
            assert_that(result.failed, equal_to([]))
        stored = emulator.logs(PROJECT, LOGSTORE)
        assert sorted(int(log.contents["n"]) for log in stored) == list(range(600))
        # Each log's time is its element's timestamp.
        assert all(log.time == 1_600_000_000 + int(log.contents["n"]) for log in stored)
    assert caplog.records and SECRET not in caplog.text and TOKEN not in caplog.text


def _node_available() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules").is_dir()


def _official_signed_request(emulator_endpoint: str, secret: str, logs, **group) -> dict:
    """The request the official STS plugin (npm, pinned in tests/node) makes for ``logs``."""
    if not _node_available():
        if os.environ.get("SLS_BEAM_REQUIRE_NODE"):
            pytest.fail("node and tests/node/node_modules are needed (.ci/run installs them)")
        pytest.skip("node or tests/node/node_modules missing: cd tests/node && npm ci")
    config = {
        "accessKeyId": AKID,
        "accessKeySecret": secret,
        "securityToken": TOKEN,
        "host": emulator_endpoint,
        "project": PROJECT,
        "logstore": LOGSTORE,
        "logs": logs,
        **group,
    }
    out = subprocess.run(
        ["node", str(NODE_DIR / "sign_with_sts_plugin.js")],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def _send(emulator: Emulator, request: dict, suffix: str = "") -> requests.Response:
    url = emulator.endpoint + "/logstores/" + LOGSTORE + suffix
    headers = {**request["headers"], "Host": f"{PROJECT}.127.0.0.1"}
    return requests.post(url, data=request["body"].encode(), headers=headers, timeout=30)


def test_the_official_sts_plugins_request_is_accepted_and_a_wrong_secret_is_not():
    logs = [
        {"level": "info", "status": 200, "ok": True, "user": {"id": 7}, "__time__": 1_700_000_000},
        {"msg": "非 ASCII é", "n": 2.5, "__time__": 1_700_000_001},
    ]
    group = {"topic": "web", "source": "browser", "tags": {"app": "shop"}}
    with signed_emulator(sts_tokens={AKID: TOKEN}) as emulator:
        emulator.create_logstore(PROJECT, LOGSTORE, web_tracking=False)
        official = _official_signed_request(emulator.endpoint, SECRET, logs, **group)
        answer = _send(emulator, official)
        assert answer.status_code == 200, answer.text
        stored = emulator.logs(PROJECT, LOGSTORE)
        assert [(log.contents, log.time) for log in stored] == [
            ({"level": "info", "status": "200", "ok": "true", "user": '{"id":7}'}, 1_700_000_000),
            ({"msg": "非 ASCII é", "n": "2.5"}, 1_700_000_001),
        ]
        assert {(log.topic, log.source) for log in stored} == {("web", "browser")}
        forged = _official_signed_request(emulator.endpoint, "not-the-secret", logs, **group)
        refused = _send(emulator, forged)
        assert (refused.status_code, refused.json()["errorCode"]) == (401, "SignatureNotMatch")
        # /track with an Authorization header is checked too (here: signed for another path).
        on_track = _send(emulator, official, "/track")
        assert (on_track.status_code, on_track.json()["errorCode"]) == (401, "SignatureNotMatch")
        assert len(emulator.logs()) == 2
    # compression="none" writes the official client's body, byte for byte.
    encoder = LogEncoder(log_time=True)
    ours = encode_request(
        LogGroup.of("web", "browser", {"app": "shop"}),
        [encoder.encode(log) for log in logs],
        "none",
    )
    assert ours.body == official["body"].encode()


def test_the_backfill_signs_with_credentials_env_and_keeps_each_logs_time(tmp_path, monkeypatch):
    from pipelines import files_to_sls

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", AKID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET)
    lines = [json.dumps({"n": n, "__time__": 1_650_000_000 + n}) for n in range(50)]
    (tmp_path / "app.jsonl").write_text("\n".join(lines) + "\n")
    with signed_emulator() as emulator:
        emulator.create_logstore(PROJECT, LOGSTORE, web_tracking=False)
        summary = files_to_sls.run(
            [
                "--input", str(tmp_path / "app.jsonl"),
                "--endpoint", emulator.endpoint,
                "--sls_project", PROJECT,
                "--logstore", LOGSTORE,
                "--credentials", "env",
                "--signature-version", "v4",
                "--sls-region", "cn-hangzhou",
            ]
        )  # fmt: skip
        stored = emulator.logs(PROJECT, LOGSTORE)
    assert summary["logs_written"] == 50
    assert sorted((int(log.contents["n"]), log.time) for log in stored) == [
        (n, 1_650_000_000 + n) for n in range(50)
    ]


def test_the_bulk_lane_gives_signed_logs_the_time_of_their_encoding():
    encoder = LogEncoder(log_time=True)
    typed = [{"n": n, "ok": n % 2 == 0, "user": {"id": n}} for n in range(5)]
    text = [{"a": "x", "b": 'quote " and \\ back'} for _ in range(3)]
    before = int(time.time())
    encoder.encode(typed[0]), encoder.encode(text[0])  # the keys, learnt
    runs = encoder.encode_runs([typed, text])
    after = int(time.time())
    for run, logs in zip(runs, (typed, text), strict=True):
        decoded = json.loads(b"[" + run + b"]")
        assert [list(log)[-1] for log in decoded] == ["__time__"] * len(logs)  # last, a number
        assert all(before <= log.pop("__time__") <= after for log in decoded)
        expected = [json.loads(encoder.encode(log)) for log in logs]
        assert decoded == [{k: v for k, v in log.items() if k != "__time__"} for log in expected]


def test_signed_writes_of_logs_without_a_time_ride_the_bulk_lane(monkeypatch):
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", AKID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET)
    with signed_emulator() as emulator:
        before = int(time.time())
        with beam.Pipeline(runner="FnApiRunner") as p:
            _ = (
                p
                | beam.Create([{"n": n, "msg": "m"} for n in range(1000)])
                | WriteToSLS(
                    emulator.endpoint, PROJECT, LOGSTORE, credentials="env", max_batch_logs=300
                )
            )
        stored = emulator.logs(PROJECT, LOGSTORE)
    assert sorted(int(log.contents["n"]) for log in stored) == list(range(1000))
    assert all(before <= log.time <= int(time.time()) for log in stored)


def test_a_provider_of_a_wrong_permanent_key_is_not_asked_again():
    calls = []

    def provider():
        calls.append(1)
        return Credentials(AKID, "not-the-secret")  # no token: nothing can have expired

    with signed_emulator() as emulator:
        with WebTrackingClient(emulator.endpoint, PROJECT, LOGSTORE, credentials=provider) as c:
            with pytest.raises(SLSError) as refused:
                c.put_logs([{"n": 1}])
    assert (refused.value.error_code, refused.value.attempts, len(calls)) == (
        "SignatureNotMatch",
        1,
        1,
    )
