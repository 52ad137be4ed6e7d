"""JsonLines: logs given as JSON text, written by the C encoder from their lines (the bytes
the per-log path writes for the dict orjson.loads gives) and, for lines it cannot vouch
for, parsed and written log by log; through the sink to the emulator over HTTP."""

from __future__ import annotations

import json
import time

import apache_beam as beam
import orjson
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from hypothesis import given, settings
from hypothesis import strategies as st

from sls_beam import WriteToSLS, accelerated
from sls_beam.config import SLSWriteConfig
from sls_beam.dofns import PrepareForStateFn, WriteInBundleFn
from sls_beam.emulator import Emulator
from sls_beam.json_lines import JsonLines, encode_lines, line_starts
from sls_beam.wire import LogEncoder
from tests.beam_helpers import make_logs, requests_by_id, run
from tests.helpers import LOGSTORE, PROJECT

needs_c = pytest.mark.skipif(accelerated.speedups is None, reason="built without the C encoder")


def reference(line: bytes) -> bytes:
    """The per-log path's bytes for a line's log."""
    return LogEncoder().encode(orjson.loads(line))


def written(text: bytes, tail: bytes = b"") -> tuple[dict[int, bytes], list[int]]:
    """{line start: its log's JSON} of the lines the C encoder wrote, and the others."""
    encoded = encode_lines(text, tail, 3 << 20)
    logs, cut = {}, 0
    for end, start in zip(encoded.ends, encoded.starts, strict=True):
        logs[start] = encoded.joined[cut:end]
        cut = end + 1
    return logs, list(encoded.others)


def starts_of(lines: list[bytes]) -> list[int]:
    starts, at = [], 0
    for line in lines:
        starts.append(at)
        at += len(line) + 1
    return starts


# JSON values as apps write them, and the awkward ones: escapes, non-ASCII text, control
# characters, floats of every size (each written in one of several JSON forms), ints past
# 64 bits, nesting, empty containers, keys the service reserves.
_texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["é中😀", 'quote " back \\ slash', "\x00\x1f\x7f", "/path", "tab\tnl\n"]
)
_floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1e-4, 9.9e-5, 1e16, 1e15, 0.1, 1764144000.1239998, 12.5, 123456789012345.6]
)
_ints = st.integers(-(10**18) + 1, 10**18 - 1)
_keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10).filter(
    lambda key: not key.startswith("__") and key != "_extract_others_"
)


def _typed(scalars):
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(_keys | _texts, inner, max_size=3)
        ),
        max_leaves=10,
    )


# Logs the C encoder writes, all of them: nested floats where orjson's text is repr's.
_plain_nested = _typed(
    st.none()
    | st.booleans()
    | _ints
    | _texts
    | st.sampled_from([0.0, -0.0])
    | st.floats(1e-4, 1e15)
    | st.floats(-1e15, -1e-4)
)
_plain_logs = st.dictionaries(
    _keys,
    st.none() | st.booleans() | _ints | _floats | _texts | _plain_nested,
    min_size=1,
    max_size=6,
)
# Anything at all.
_awkward_keys = (
    _keys | _texts | st.sampled_from(["__topic__", "__time__", "_extract_others_", "k" * 129])
)
_any_logs = st.dictionaries(
    _awkward_keys,
    _typed(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _floats | _texts),
    max_size=6,
)
_FLOAT_FORMS = (repr, "{:.3f}".format, "{:e}".format, "{:.17g}".format)


def _json(value, form, ascii_only: bool) -> str:
    """``value`` as JSON text, floats in ``form`` (each form reads back as a float)."""
    if isinstance(value, dict):
        items = (
            f"{json.dumps(k, ensure_ascii=ascii_only)}: {_json(v, form, ascii_only)}"
            for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json(v, form, ascii_only) for v in value) + "]"
    if isinstance(value, float):
        text = form(value)
        return text if any(c in text for c in ".e") else text + ".0"
    return json.dumps(value, ensure_ascii=ascii_only)


_lines_of = st.tuples(st.sampled_from(_FLOAT_FORMS), st.booleans()).map(
    lambda drawn: lambda log: _json(log, *drawn).encode()
)


def written_lines(drawn) -> tuple[list[bytes], list[int], dict[int, bytes], list[int]]:
    """The drawn logs as lines, where each starts, and :func:`written` of them."""
    lines = [write(log) for log, write in drawn]
    return lines, starts_of(lines), *written(b"\n".join(lines))


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_plain_logs, _lines_of), min_size=1, max_size=8))
def test_the_c_encoder_writes_each_plain_line_as_the_per_log_path_does(drawn):
    lines, starts, logs, others = written_lines(drawn)
    assert others == []
    for start, line in zip(starts, lines, strict=True):
        assert logs[start] == reference(line), line


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_any_logs, _lines_of), min_size=1, max_size=8))
def test_any_line_the_c_encoder_writes_is_what_the_per_log_path_writes(drawn):
    lines, starts, logs, others = written_lines(drawn)
    non_blank = [start for start, line in zip(starts, lines, strict=True) if line.strip()]
    assert sorted([*logs, *others]) == non_blank
    for start, line in zip(starts, lines, strict=True):
        if start in logs:
            assert logs[start] == reference(line), line


@needs_c
def test_realistic_lines_are_all_written_in_c():
    # Apps' logs, with a float time of 17 significant digits (repr's text is not short)
    logs = ({**log, "ts": 1764144000.123 + n / 1000} for n, log in enumerate(make_logs(0, 2000)))
    lines = [orjson.dumps(log) for log in logs]
    unicode = {"msg": "naïve café 日本語 😀", "n": -17, "x": 0.5, "nested": {"a": [1, 2.5, None]}}
    lines += [json.dumps(unicode, ensure_ascii=False).encode(), json.dumps(unicode).encode()]
    lines += [b'  {"spaced" : true ,"pi":3.14159}  \r']
    logs, others = written(b"\n".join(lines) + b"\n")
    assert others == []
    for start, line in zip(starts_of(lines), lines, strict=True):
        assert logs[start] == reference(line)


@needs_c
@pytest.mark.parametrize(
    "line",
    [
        b'{"a":1,"a":2}',  # orjson keeps the last value at the first place
        b'{"n":{"a":1,"a":2}}',
        b'{"__topic__":"t"}',  # the group's fields, reserved keys, the time
        b'{"__tag__:x":"1"}',
        b'{"__time__":1}',
        b'{"_extract_others_":"x"}',
        b'{"":1}',
        b'{"' + b"k" * 129 + b'":1}',
        b'{"big":123456789012345678901234567890}',  # orjson gives a float
        b'{"z":-0}',  # orjson gives 0
        b'{"tiny":{"v":1e-7}}',  # orjson's text is not repr's
        b'{"e":"\\ud83d"}',  # a lone surrogate (orjson refuses it)
        b'{"e":"\\ude00\\ud83d"}',
        b'{"bad":"\xff"}',  # not UTF-8
        b'{"c":"a\x01b"}',  # a raw control character: not JSON
        b"{}",
        b"[1,2]",
        b"not json",
        b'{"a":1} trailing',
        b'{"a":1,}',
        b'{"deep":' + b"[" * 40 + b"]" * 40 + b"}",
    ],
)
def test_lines_it_cannot_vouch_for_are_left_to_the_per_log_path(line):
    logs, others = written(b'{"ok":1}\n' + line + b'\n{"ok":2}')
    assert others == [9]
    assert sorted(logs) == [0, 10 + len(line)]


@needs_c
def test_blank_lines_are_skipped_and_a_tail_ends_every_log():
    text = b'{"a":1}\n\n  \t\r\n{"b":"x"}'
    logs, others = written(text, tail=b',"__time__":1700000000')
    assert others == []
    assert list(logs.values()) == [
        b'{"a":"1","__time__":1700000000}',
        b'{"b":"x","__time__":1700000000}',
    ]
    assert line_starts(text) == list(logs)


@needs_c
def test_a_log_over_the_limit_is_left_to_the_per_log_path():
    text = b'{"a":"' + b"x" * 100 + b'"}\n{"b":1}'
    encoded = encode_lines(text, b"", 50)
    assert list(encoded.others) == [0]
    assert encoded.joined == b'{"b":"1"}'


def test_a_json_lines_element_pickles_and_says_what_it_is():
    import pickle

    lines = JsonLines(b'{"a":1}\n{"b":2}\n')
    assert pickle.loads(pickle.dumps(lines)) == lines
    assert "JsonLines" in repr(lines)
    assert lines.log_at(8) == {"b": 2}
    assert JsonLines(b"oops\n").log_at(0) == "oops"
    with pytest.raises(TypeError, match="bytes"):
        JsonLines("text")


# --- through the sink ------------------------------------------------------------------


class HostLines(JsonLines):
    """Lines of one host (the source callable reads it from the element)."""

    __slots__ = ("host",)

    def __init__(self, text: bytes, host: str):
        super().__init__(text)
        self.host = host

    def __reduce__(self):
        return HostLines, (self.text, self.host)


def host_of(lines: HostLines) -> str:
    return lines.host


GOOD = [
    {"n": n, "level": "INFO", "ok": n % 2 == 0, "ms": n / 4, "user": {"id": n, "tags": ["a"]}}
    for n in range(300)
]
BAD = [b"not json", b"[1, 2]", b'{"__tag__:x": "reserved"}', b'{"k": "' + b"x" * 2_000_000 + b'"}']
# Lines the per-log path takes: a log that names its own source; an int orjson reads as a float.
ODD = [
    b'{"__source__": "own-source", "n": 1000}',
    b'{"n": 1001, "big": 123456789012345678901234567890}',
]


def blocks_of(hosts: int) -> list[HostLines]:
    """GOOD and ODD logs (and the BAD lines), spread over blocks of ``hosts`` hosts."""
    blocks = []
    for h in range(hosts):
        lines = [orjson.dumps(log) for log in GOOD[h::hosts]]
        if h == 0:
            lines += ODD + BAD + [b"", b"   "]
        blocks.append(HostLines(b"\n".join(lines) + b"\n", f"host-{h}"))
    return blocks


def stored_by_n(emulator) -> dict[int, tuple]:
    return {
        int(log.contents["n"]): (log.source, log.contents)
        for log in emulator.logs(PROJECT, LOGSTORE)
    }


def expected_stored() -> dict[int, tuple]:
    """What the sink stores for GOOD and ODD given as dicts (the per-log path)."""
    with Emulator() as emulator:
        logs = [(log, f"host-{i % 3}") for i, log in enumerate(GOOD)]
        logs += [(orjson.loads(line), "host-0") for line in ODD]

        def build(p):
            _ = (
                p
                | beam.Create(
                    [dict(log, __source__=log.get("__source__", source)) for log, source in logs]
                )
                | WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE)
            )

        run(build)
        return stored_by_n(emulator)


@pytest.fixture(scope="module")
def expected():
    return expected_stored()


@pytest.mark.parametrize("pure_python", [False, True])
@pytest.mark.parametrize("mode", ["bundle", "stateful"])
def test_lines_are_delivered_as_their_logs_and_bad_lines_fail_alone(
    emulator, expected, mode, pure_python, monkeypatch
):
    if pure_python:
        monkeypatch.setattr(accelerated, "speedups", None)

    def build(p):
        result = (
            p
            | beam.Create(blocks_of(3), reshuffle=False)
            | WriteToSLS(
                emulator.endpoint,
                PROJECT,
                LOGSTORE,
                source=host_of,
                max_batch_logs=37,
                max_batch_bytes=9_000,
                mode=mode,
            )
        )
        assert_that(
            result.failed
            | beam.Map(
                lambda f: (f.error_code, f.error_message.split(":")[0], type(f.log).__name__)
            ),
            equal_to(
                [
                    ("NotJson", "log", "str"),
                    ("NotJson", "log", "str"),
                    ("InvalidLog", "key '__tag__", "dict"),
                    ("InvalidLog", "key 'k'", "dict"),
                ]
            ),
        )

    _, metrics = run(build)
    assert stored_by_n(emulator) == expected
    requests = requests_by_id(emulator.logs(PROJECT, LOGSTORE))
    assert max(map(len, requests.values())) == 37  # batches fill up to the limit, not over
    assert all(len({log.source for log in logs}) == 1 for logs in requests.values())
    assert emulator.stats()["rejections"] == {}
    assert metrics["logs_written"] == len(GOOD) + len(ODD)
    assert metrics["failed_logs"] == len(BAD)


def test_a_callable_that_raises_fails_each_line_of_its_element(emulator):
    def broken(lines):
        raise KeyError("host")

    def build(p):
        result = (
            p
            | beam.Create([JsonLines(b'{"a":1}\n\n{"a":2}\n')])
            | WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE, source=broken)
        )
        assert_that(
            result.failed
            | beam.Map(lambda f: (f.log, f.error_message.startswith("key '__source__'"))),
            equal_to([({"a": 1}, True), ({"a": 2}, True)]),
        )

    run(build)
    assert emulator.logs(PROJECT, LOGSTORE) == []


def test_a_refused_batch_of_lines_is_split_and_only_the_bad_lines_fail():
    # keys with '.' pass the connector but a strict-key service refuses them.
    with Emulator(strict_keys=True) as emulator:
        lines = [orjson.dumps({"i": i}) for i in range(200)]
        lines[57] = b'{"user.id": "x", "i": 57}'

        def build(p):
            result = (
                p
                | beam.Create([JsonLines(b"\n".join(lines))])
                | WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE, backoff_base_secs=0.001)
            )
            assert_that(
                result.failed | beam.Map(lambda f: (f.error_code, f.log)),
                equal_to([("InvalidKey", {"user.id": "x", "i": 57})]),
            )

        run(build)
        stored = sorted(int(log.contents["i"]) for log in emulator.logs())
        assert stored == [i for i in range(200) if i != 57]


def test_windowed_lines_fail_in_their_window(emulator):
    def build(p):
        result = (
            p
            | beam.Create([(JsonLines(b'{"a":1}\nnope\n'), 65.0)])
            | beam.MapTuple(TimestampedValue)
            | beam.WindowInto(FixedWindows(60))
            | WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE)
        )
        assert_that(
            result.failed
            | beam.Map(lambda f, w=beam.DoFn.WindowParam: (f.log, f.error_code, w.start.micros)),
            equal_to([("nope", "NotJson", 60_000_000)]),
        )

    run(build)
    assert [log.contents for log in emulator.logs()] == [{"a": "1"}]


def test_signed_lines_keep_their_own_time_or_get_the_time_of_their_encoding():
    from sls_beam import Credentials

    key, secret = "LTAI-test-key", "s3cr3t-value-never-shown"
    text = b'{"n":1,"__time__":1700000000}\n{"n":2,"ok":true}\n{"n":3}\n'
    with Emulator(access_keys={key: secret}) as emulator:
        emulator.create_logstore(PROJECT, LOGSTORE, web_tracking=False)  # signed writes only
        before = int(time.time())

        def build(p):
            _ = (
                p
                | beam.Create([JsonLines(text)])
                | WriteToSLS(
                    emulator.endpoint, PROJECT, LOGSTORE, credentials=Credentials(key, secret)
                )
            )

        run(build)
        stored = {int(log.contents["n"]): log for log in emulator.logs(PROJECT, LOGSTORE)}
    assert stored[1].time == 1_700_000_000  # its own __time__, kept (the per-log path)
    assert all(before <= stored[n].time <= int(time.time()) for n in (2, 3))  # written in C
    assert stored[2].contents == {"n": "2", "ok": "true"}


def test_lines_get_their_elements_event_time_in_a_field(emulator):
    def build(p):
        _ = (
            p
            | beam.Create([(JsonLines(b'{"a":1}\n{"a":2,"__time__":1600000000}\n'), 1700000000.5)])
            | beam.MapTuple(TimestampedValue)
            | WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE, event_time_key="event_time")
        )

    run(build)
    assert sorted((log.contents for log in emulator.logs()), key=str) == [
        {"a": "1", "event_time": "1700000000.5"},
        {"a": "2", "event_time": "1600000000"},
    ]


@needs_c
def test_buffered_lines_stay_within_the_memory_bound_and_the_request_limits():
    from apache_beam.transforms.window import GlobalWindows

    from sls_beam.batching import KeyedBatcher
    from sls_beam.config import SLSWriteConfig
    from sls_beam.preparing import LogPreparer

    config = SLSWriteConfig(
        endpoint="http://127.0.0.1:1",
        project=PROJECT,
        logstore=LOGSTORE,
        source=lambda lines: lines.host,
        max_batch_logs=50,
        max_batch_bytes=4_000,
        max_buffered_bytes=20_000,
    )
    limits = config.limits()
    batcher = KeyedBatcher(
        LogPreparer(config), limits, config.max_buffered_bytes, GlobalWindows.windowed_value(None)
    )
    batches = []
    for h in range(6):
        text = b"\n".join(orjson.dumps({"n": n, "h": h, "pad": "x" * (n % 90)}) for n in range(200))
        added = batcher.add(HostLines(text, f"host-{h % 3}"), None)
        batches += added.batches if added else []
        # Within the bound, and counting at least the logs' JSON it holds.
        held = sum(len(piece) for batch in batcher._open.values() for piece in batch.pieces)
        assert held <= batcher.buffered_bytes <= config.max_buffered_bytes
    batches += batcher.drain().batches
    sent = [(batch.group.source, orjson.loads(b"[" + batch.joined + b"]")) for batch in batches]
    assert all(len(logs) <= 50 for _, logs in sent)
    assert all(len(batch.joined) <= limits.room(batch.group) for batch in batches)
    assert sorted((int(log["h"]), int(log["n"])) for _, logs in sent for log in logs) == [
        (h, n) for h in range(6) for n in range(200)
    ]
    assert {(source, int(log["h"]) % 3) for source, logs in sent for log in logs} == {
        (f"host-{h}", h) for h in range(3)
    }


@pytest.mark.parametrize("dofn_class", [WriteInBundleFn, PrepareForStateFn])
def test_a_json_lines_element_is_batched_as_it_comes_not_gathered_with_dicts(dofn_class):
    """The sink's DoFns gather dicts to hand them to the batcher together, but a JsonLines
    (a block may be MiBs) goes at once, with the dicts before it: memory stays bounded
    by ``max_buffered_bytes``, which counts what the batcher holds."""
    config = SLSWriteConfig(endpoint="http://127.0.0.1:1", project=PROJECT, logstore=LOGSTORE)
    dofn = dofn_class(config, windowed=False)
    dofn.setup()
    try:
        dofn.start_bundle()
        assert list(dofn.process({"n": 0})) == []
        text = b'{"n": 1, "msg": "a line of a large block"}\n' * 2000
        assert list(dofn.process(JsonLines(text))) == []
        batcher = dofn._batcher if dofn_class is WriteInBundleFn else dofn._global
        assert batcher.buffered_bytes >= len(text)  # held by the batcher, counted
        assert not dofn._pending
    finally:
        dofn.teardown()
