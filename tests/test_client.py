"""WebTrackingClient against the emulator over real HTTP: endpoints, retries, errors."""

from __future__ import annotations

import pickle
import re

import pytest

from sls_beam.client import WebTrackingClient
from sls_beam.endpoints import resolve_target
from sls_beam.errors import InvalidLogError, SLSError
from sls_beam.retry import RetryPolicy
from sls_beam.wire import LogGroup
from tests.helpers import LOGSTORE, PROJECT

FAST = RetryPolicy(max_attempts=4, backoff_base_secs=0.001, quota_backoff_base_secs=0.002)


def make_client(emulator, **kwargs):
    sleeps: list[float] = []
    kwargs.setdefault("retry", FAST)
    client = WebTrackingClient(
        emulator.endpoint, PROJECT, LOGSTORE, sleep=sleeps.append, seed=1, **kwargs
    )
    return client, sleeps


def test_delivers_logs_with_topic_source_tags(emulator):
    client, _ = make_client(emulator)
    [result] = client.put_logs([{"msg": "hi", "n": 1}], LogGroup.of("tp", "src", {"t": "v"}))
    assert result.attempts == 1
    [log] = emulator.logs(PROJECT, LOGSTORE)
    assert (log.topic, log.source, log.tags, log.contents) == (
        "tp",
        "src",
        {"t": "v"},
        {"msg": "hi", "n": "1"},
    )
    assert result.request_id == log.request_id


@pytest.mark.parametrize(
    "endpoint, url, host",
    [
        (
            "cn-hangzhou.log.aliyuncs.com",
            "https://proj.cn-hangzhou.log.aliyuncs.com/logstores/ls_1/track",
            None,
        ),
        (
            "http://cn-hangzhou.log.aliyuncs.com",
            "http://proj.cn-hangzhou.log.aliyuncs.com/logstores/ls_1/track",
            None,
        ),
        (
            "https://cn-hangzhou.log.aliyuncs.com/",
            "https://proj.cn-hangzhou.log.aliyuncs.com/logstores/ls_1/track",
            None,
        ),
        (
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/logstores/ls_1/track",
            "proj.127.0.0.1:8080",
        ),
        ("https://localhost:9", "https://localhost:9/logstores/ls_1/track", "proj.localhost:9"),
        ("http://[::1]:80", "http://[::1]:80/logstores/ls_1/track", "proj.[::1]:80"),
    ],
)
def test_endpoint_forms(endpoint, url, host):
    target = resolve_target(endpoint, "proj", "ls_1")
    assert (target.url, target.host) == (url, host)


@pytest.mark.parametrize(
    "endpoint", ["", "ftp://x", "http://x/path", "http://user@x", "http://x?q=1", "http://"]
)
def test_bad_endpoints(endpoint):
    with pytest.raises(ValueError, match="endpoint"):
        resolve_target(endpoint, "proj", "ls_1")


@pytest.mark.parametrize("address", ["127.0.0.1:18081", "localhost:8080", "[::1]:80", "10.0.0.7"])
def test_an_address_without_a_scheme_says_at_once_what_to_write(address):
    with pytest.raises(ValueError, match=f"write http://{re.escape(address)} for a plain-HTTP"):
        resolve_target(address, "proj", "ls_1")


@pytest.mark.parametrize(
    "project",
    ["ab", "Upper", "-lead", "trail-", "under_score", "a" * 64, "evil.com/x", "p\r\nX: y"],
)
def test_bad_project_names(project):
    with pytest.raises(ValueError, match="project"):
        WebTrackingClient("http://127.0.0.1:1", project, LOGSTORE)


@pytest.mark.parametrize("logstore", ["ab", "Upper", "_lead", "a/../b", "a" * 64, "ls?x=1"])
def test_bad_logstore_names(logstore):
    with pytest.raises(ValueError, match="logstore"):
        WebTrackingClient("http://127.0.0.1:1", PROJECT, logstore)


@pytest.mark.parametrize("endpoint_form", ["127.0.0.1", "localhost"])
def test_address_endpoints_send_project_in_host(emulator, endpoint_form):
    client = WebTrackingClient(f"http://{endpoint_form}:{emulator.port}", PROJECT, LOGSTORE)
    client.put_logs([{"k": "v"}])
    assert [log.project for log in emulator.logs()] == [PROJECT]


@pytest.mark.parametrize("compression", ["lz4", "deflate", "none"])
def test_each_codec_reaches_the_emulator(emulator, compression):
    client, _ = make_client(emulator)
    client.put_logs([{"i": i, "text": "日本語" * i} for i in range(300)], compression=compression)
    assert [log.contents["i"] for log in emulator.logs()] == [str(i) for i in range(300)]
    stats = emulator.stats()
    assert (stats["body_bytes"] < stats["raw_bytes"]) == (compression != "none")


@pytest.mark.parametrize("fault", ["500", "502", "503", "quota", "drop"])
def test_transient_answers_are_retried(emulator, fault):
    client, sleeps = make_client(emulator)
    emulator.faults.script([fault, fault])
    [result] = client.put_logs([{"k": "v"}])
    assert result.attempts == 3
    assert len(sleeps) == 2
    assert len(emulator.logs()) == 1
    assert (result.throttled_secs > 0) == (fault == "quota")
    assert result.throttled_secs == pytest.approx(sum(sleeps) if fault == "quota" else 0)


def test_backoff_is_bounded_exponential_with_full_jitter():
    import random

    policy = RetryPolicy(backoff_base_secs=1, backoff_max_secs=5)
    rng = random.Random(3)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 5), (9, 5)]:
        waits = [policy.backoff_secs(attempt, False, rng) for _ in range(200)]
        assert 0 <= min(waits) and max(waits) <= ceiling
        assert max(waits) > ceiling * 0.8  # spread over the whole range


def test_timeout_is_retried_and_may_duplicate(emulator):
    client, _ = make_client(emulator, timeout_secs=0.3)
    emulator.faults.configure(slow_secs=3)
    emulator.faults.script(["slow"])
    [result] = client.put_logs([{"k": "v"}])
    assert result.attempts == 2
    assert len(emulator.logs()) == 2  # at-least-once: the slow attempt was stored too


@pytest.mark.parametrize(
    "setup, status, code",
    [
        (lambda e: e.create_logstore(PROJECT, LOGSTORE, web_tracking=False), 401, "Unauthorized"),
        (lambda e: None, 404, "LogStoreNotExist"),
    ],
)
def test_permanent_answers_are_not_retried(setup, status, code):
    from sls_beam.emulator import Emulator

    with Emulator(strict=True) as emulator:
        emulator.create_logstore(PROJECT, "other")
        setup(emulator)
        client, sleeps = make_client(emulator)
        with pytest.raises(SLSError) as caught:
            client.put_logs([{"k": "v"}])
    error = caught.value
    assert (error.status, error.error_code, error.attempts) == (status, code, 1)
    assert error.request_id and len(error.request_id) == 24
    assert sleeps == []
    if status == 401:
        assert "web tracking is probably disabled" in str(error)


def test_400_and_413_are_not_retried(emulator):
    client, sleeps = make_client(emulator)
    from sls_beam.wire import EncodedRequest

    bad = EncodedRequest(
        b"garbage",
        {"x-log-apiversion": "0.6.0", "x-log-compresstype": "lz4", "x-log-bodyrawsize": "20"},
        20,
        1,
    )
    with pytest.raises(SLSError) as caught:
        client.send(bad)
    assert (caught.value.status, caught.value.attempts) == (400, 1)
    assert caught.value.error_code in ("PostBodyUncompressError", "InvalidBodyRawSize")
    huge = EncodedRequest(b"x" * (10 * 1024 * 1024 + 10), {"x-log-apiversion": "0.6.0"}, 1, 1)
    with pytest.raises(SLSError) as caught:
        client.send(huge)
    assert (caught.value.status, caught.value.error_code) == (413, "PostBodyTooLarge")
    assert sleeps == []


def test_exhausted_retries_raise_with_context(emulator):
    client, sleeps = make_client(emulator)
    emulator.faults.script(["503"] * 10)
    with pytest.raises(SLSError) as caught:
        client.put_logs([{"k": "v"}])
    error = caught.value
    assert (error.status, error.error_code, error.attempts) == (503, "ServerBusy", 4)
    assert error.request_id
    assert len(sleeps) == 3
    assert emulator.logs() == []
    assert str(error).startswith("SLS ServerBusy (HTTP 503)")


def test_connection_refused_is_a_typed_error():
    client = WebTrackingClient(
        "http://127.0.0.1:9",
        PROJECT,
        LOGSTORE,
        retry=RetryPolicy(max_attempts=2, backoff_base_secs=0),
        sleep=lambda s: None,
    )
    with pytest.raises(SLSError) as caught:
        client.put_logs([{"k": "v"}])
    assert (caught.value.status, caught.value.error_code, caught.value.attempts) == (
        None,
        "RequestError",
        2,
    )


@pytest.mark.parametrize(
    "error",
    [
        SLSError(503, "ServerBusy", "m" * 1000, "RID", 3, 1.5),  # an excerpted message
        SLSError(None, "RequestTimeout", "no answer in time"),
        SLSError(401, "Unauthorized", "denied", "RID", 1),  # a message with a hint
        InvalidLogError("user id", "keys must be at most 128 UTF-8 bytes"),
        InvalidLogError(None, "a log must have at least one field"),
        InvalidLogError(7, "keys must be str, not int"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle_exactly(error):
    """Runners move exceptions between processes: every field and the message survive."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert vars(copy) == vars(error) and vars(copy)
    assert str(copy) == str(error) and copy.args == error.args
    if isinstance(error, SLSError):
        assert len(copy.error_message) < 250  # server text is truncated once


def test_client_and_emulator_load_without_beam():
    import subprocess
    import sys

    code = (
        "import sys, sls_beam, sls_beam.client, sls_beam.emulator; "
        "from sls_beam import WebTrackingClient, LogGroup; "
        "assert 'apache_beam' not in sys.modules, 'Beam was imported'; "
        "assert sorted(sls_beam.__all__) == sorted([*sls_beam._HOMES, '__version__'])"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "status, code, retried, quota",
    [
        (None, "RequestError", True, False),
        (None, "RequestTimeout", True, False),
        (500, "InternalServerError", True, False),
        (502, "BadResponse", True, False),
        (503, "ServerBusy", True, False),
        (429, "TooManyRequests", True, True),
        (403, "WriteQuotaExceed", True, True),
        (403, "ShardWriteQuotaExceed", True, True),
        (403, "ExceedQuota", True, True),
        (403, "ProjectForbidden", False, False),
        (400, "PostBodyInvalid", False, False),
        (401, "Unauthorized", False, False),
        (404, "LogStoreNotExist", False, False),
        (413, "PostBodyTooLarge", False, False),
    ],
)
def test_retry_classification(status, code, retried, quota):
    policy = RetryPolicy()
    assert policy.is_retryable(status, code) is retried
    assert policy.is_quota(status, code) is quota
