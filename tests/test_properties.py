"""Property-based tests: arbitrary data never crashes the sink, and nothing is lost.

Values and keys are drawn from JSON-like data plus the awkward cases: None,
non-mapping elements, non-string and empty keys, keys over 128 bytes, reserved
keys, lone surrogates, invalid UTF-8 bytes, values over 1 MB, logs over the
batch limit, deep nesting, NaN and infinities.
"""

from __future__ import annotations

import json
import math
import socket

import apache_beam as beam
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sls_beam import WriteToSLS
from sls_beam.errors import InvalidLogError
from sls_beam.wire import LogEncoder
from tests.beam_helpers import Collect, run
from tests.helpers import LOGSTORE, PROJECT

SURROGATE = "\ud800"


def nested(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def log_strategies(beam_safe: bool):
    """(logs, elements) strategies; ``beam_safe`` leaves out what no Beam pipeline can
    carry (Beam's own coders refuse lone surrogates and ints beyond 64 bits, even to sample
    an element's size); the encoder is tested with those too."""
    awkward_values = [
        b"\xff\xfe",
        "é中😀",
        "x" * 1_100_000,
        math.nan,
        math.inf,
        nested(300),
        nested(5),
    ]
    awkward_keys = [
        "k" * 129,
        "__topic__",
        "__source__",
        "__tag__:x",
        "__time__",
        "__raw__",
        "user.id",
        "a-b",
        "日本",
    ]
    if not beam_safe:
        awkward_values += [SURROGATE, "ok" + SURROGATE]
        awkward_keys += ["ok" + SURROGATE]
    ints = st.integers(-(2**63), 2**63 - 1) if beam_safe else st.integers()
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        ints,
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=30),
        st.binary(max_size=20),
        st.sampled_from(awkward_values),
    )
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=8,
    )
    keys = st.one_of(
        st.text(max_size=20), ints, st.none(), st.just(""), st.sampled_from(awkward_keys)
    )
    logs = st.dictionaries(keys, values, max_size=6)
    elements = st.one_of(
        logs,
        logs,
        logs,
        st.none(),
        ints,
        st.text(max_size=20),
        st.lists(ints, max_size=3),
    )
    return logs, elements


logs, _ = log_strategies(beam_safe=False)
_, elements = log_strategies(beam_safe=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs)
def test_encoder_accepts_or_names_the_problem(log):
    try:
        data = LogEncoder().encode(log)
    except InvalidLogError as e:
        assert e.rule
        assert str(e).startswith("log:") or str(e).startswith("key ")
        assert len(str(e)) < 400
        return
    decoded = json.loads(data)
    assert set(decoded) == set(log)
    assert all(isinstance(v, str) for v in decoded.values())


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(elements, min_size=1, max_size=40))
def test_pipeline_never_crashes_on_data_and_loses_nothing(emulator, tmp_path_factory, batch):
    emulator.store.clear()
    tagged = [{"__seq__": i, "payload": e} if i % 2 else e for i, e in enumerate(batch)]
    out = tmp_path_factory.mktemp("failed") / "failed.txt"

    def build(p):
        # The elements are made inside the pipeline, as a source decoding bad data would.
        result = (
            p
            | beam.Create(range(len(tagged)), reshuffle=False)
            | beam.Map(lambda i: tagged[i])
            | WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE, max_batch_logs=7)
        )
        result.failed | beam.Map(lambda f: (f.error_code, f.error_message)) | Collect(out)

    run(build)
    failed = [eval(line) for line in out.read_text().splitlines()]  # noqa: S307 - our repr
    for code, message in failed:
        assert code == "InvalidLog"
        assert message.startswith(("log:", "key "))
    assert len(emulator.logs()) + len(failed) == len(tagged)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    body=st.binary(max_size=2000),
    headers=st.dictionaries(
        st.sampled_from(
            ["x-log-apiversion", "x-log-compresstype", "x-log-bodyrawsize", "Content-Type"]
        ),
        st.one_of(
            st.sampled_from(["0.6.0", "lz4", "deflate", "10", "-1", "99999999999"]),
            st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
        ),
        max_size=4,
    ),
)
def test_emulator_parser_survives_arbitrary_requests(emulator, body, headers):
    response = requests.post(
        f"{emulator.endpoint}/logstores/{LOGSTORE}/track",
        data=body,
        headers={"Host": f"{PROJECT}.h", **headers},
        timeout=10,
    )
    assert response.status_code in (200, 400, 413)
    if response.status_code != 200:
        assert response.json()["errorCode"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=1, max_size=3000))
def test_emulator_survives_raw_socket_garbage(emulator, garbage):
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as raw:
        raw.sendall(garbage)
        raw.shutdown(socket.SHUT_WR)
        try:
            raw.recv(65536)
        except (ConnectionResetError, TimeoutError):
            pass
    assert requests.get(f"{emulator.endpoint}/_emulator/stats", timeout=5).status_code == 200
