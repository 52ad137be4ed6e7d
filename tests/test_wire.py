"""The wire format: value and key rules, exact bodies, limits and splitting."""

from __future__ import annotations

import contextlib
import datetime
import enum
import gc
import itertools
import json
import math
import os
import pickle

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sls_beam import accelerated
from sls_beam.errors import InvalidLogError
from sls_beam.preparing import log_content
from sls_beam.wire import (
    SERVICE_MAX_LOGS,
    BatchLimits,
    LogEncoder,
    LogGroup,
    encode_pieces,
    encode_request,
    logs_from_wire,
    split_into_requests,
    stringify,
)
from tests.helpers import decode_body


def encoded(log, **kwargs):
    return json.loads(LogEncoder(**kwargs).encode(log))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("text", "text"),
        ("é中😀", "é中😀"),
        (b"bytes \xc3\xa9", "bytes é"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (42, "42"),
        (-7, "-7"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        ({"a": [1, "x", None]}, '{"a":[1,"x",null]}'),
        ([1, 2.5, True], "[1,2.5,true]"),
        ((1, 2), "[1,2]"),
        ({1: "int key"}, '{"1":"int key"}'),
        (datetime.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05"),
        (datetime.date(2026, 1, 2), "2026-01-02"),
        (object.__new__(type("Thing", (), {"__str__": lambda self: "thing!"})), "thing!"),
    ],
)
def test_value_rules(value, expected):
    assert encoded({"k": value}) == {"k": expected}


def test_encoding_matches_stdlib_json_bytes():
    log = {"msg": 'quote " backslash \\ newline \n tab \t ctrl \x01 é 😀', "n": "1"}
    assert LogEncoder().encode(log) == json.dumps(
        log, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


@pytest.mark.parametrize(
    "log, key, rule",
    [
        ({"": "v"}, "", "must not be empty"),
        ({1: "v"}, 1, "must be str"),
        ({"k" * 129: "v"}, "k" * 129, "at most 128"),
        ({"é" * 65: "v"}, "é" * 65, "at most 128"),
        ({"__topic__": "v"}, "__topic__", "reserved"),
        ({"__source__": "v"}, "__source__", "reserved"),
        ({"__tag__:x": "v"}, "__tag__:x", "reserved"),
        ({"__raw__": "v"}, "__raw__", "reserved"),
        ({"__time__": "1"}, "__time__", "event_time_key"),
        ({"k": "\ud800"}, "k", "lone surrogate"),
        ({"k": b"\xff\xfe"}, "k", "not valid UTF-8"),
        ({"k": "x" * (1024 * 1024 + 1)}, "k", "1 MiB"),
        ({"k": ["é" * 600_000]}, "k", "1 MiB"),
    ],
)
def test_key_and_value_rules_name_the_key(log, key, rule):
    with pytest.raises(InvalidLogError) as caught:
        LogEncoder().encode(log)
    assert caught.value.key == key
    assert rule in str(caught.value)


def test_a_value_of_exactly_one_mib_is_accepted():
    assert len(encoded({"k": "x" * 1024 * 1024})["k"]) == 1024 * 1024


@pytest.mark.parametrize("log", [None, "text", 5, ["a"]])
def test_a_log_must_be_a_mapping(log):
    with pytest.raises(InvalidLogError, match="must be a mapping"):
        LogEncoder().encode(log)


def test_an_empty_log_is_refused():
    with pytest.raises(InvalidLogError, match="at least one field"):
        LogEncoder().encode({})


def test_deep_nesting_is_an_error_not_a_crash():
    value: list = []
    for _ in range(300):
        value = [value]
    with pytest.raises(InvalidLogError, match="cannot be written as JSON"):
        LogEncoder().encode({"deep": value})


def test_time_moves_to_event_time_key():
    assert encoded({"__time__": 1700000000, "m": "x"}, event_time_key="event_time") == {
        "m": "x",
        "event_time": "1700000000",
    }


def test_event_time_fills_event_time_key_only_when_absent():
    encoder = LogEncoder(event_time_key="ts")
    assert json.loads(encoder.encode({"m": "x"}, event_time="123.5")) == {"m": "x", "ts": "123.5"}
    assert json.loads(encoder.encode({"m": "x", "ts": "own"}, event_time="123.5"))["ts"] == "own"


def test_invalid_event_time_key_is_refused_at_construction():
    with pytest.raises(ValueError, match="reserved"):
        LogEncoder(event_time_key="__topic__")


def test_a_log_larger_than_a_request_is_refused():
    with pytest.raises(InvalidLogError, match="one request holds at most 1000"):
        LogEncoder(max_log_bytes=1000).encode({"k": "x" * 1000})


def test_group_rules():
    with pytest.raises(InvalidLogError, match="at most 128"):
        LogGroup.of(topic="t" * 129)
    with pytest.raises(InvalidLogError, match="must be a str"):
        LogGroup.of(source=5)
    with pytest.raises(InvalidLogError, match="tag keys"):
        LogGroup.of(tags={"": "v"})
    group = LogGroup.of("t", None, {"b": 2, "a": "1"})
    assert group == LogGroup("t", "", (("a", "1"), ("b", "2")))


def test_a_group_is_a_value_that_pickles_without_its_cached_suffix():
    group = LogGroup.of("t", "web-07", {"env": "prod"})
    suffix = group.body_suffix()  # made once, kept on the group
    assert group.body_suffix() is suffix
    copy = pickle.loads(pickle.dumps(group))
    assert copy == group and hash(copy) == hash(group) and {group: 1}[copy] == 1
    assert "_suffix" not in vars(copy) and copy.body_suffix() == suffix
    assert (copy.topic, copy.source, copy.tags) == ("t", "web-07", (("env", "prod"),))
    assert repr(copy) == "LogGroup(topic='t', source='web-07', tags=(('env', 'prod'),))"
    with pytest.raises(AttributeError):
        group.source = "elsewhere"  # a group is a value: it never changes


@pytest.mark.parametrize("compression", ["lz4", "deflate", "none"])
def test_request_body_decodes_independently(compression):
    group = LogGroup.of("topic", "source", {"env": "prod"})
    encoder = LogEncoder()
    logs = [{"i": i, "msg": "é" * (i % 5)} for i in range(50)]
    request = encode_request(group, [encoder.encode(log) for log in logs], compression)
    assert request.headers["x-log-apiversion"] == "0.6.0"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers.get("x-log-compresstype") == (
        None if compression == "none" else compression
    )
    body = decode_body(request.body, request.headers)
    assert body == {
        "__topic__": "topic",
        "__source__": "source",
        "__tags__": {"env": "prod"},
        "__logs__": [{"i": str(i), "msg": "é" * (i % 5)} for i in range(50)],
    }
    assert request.log_count == 50
    assert request.raw_size == int(request.headers["x-log-bodyrawsize"])


@pytest.mark.parametrize("cuts", [(), (1,), (1, 2), (3, 4, 9), tuple(range(1, 10))])
def test_a_body_in_pieces_is_the_logs_in_order(cuts):
    """A batch's pieces (a log's JSON, or a run's joined by commas) are joined into the
    body where the request is made: one piece, two, or many, cut anywhere."""
    group = LogGroup.of("topic", "web-07", {"env": "prod"})
    logs = [orjson.dumps({"i": str(i), "msg": "é" * i}) for i in range(10)]
    bounds = (0, *cuts, len(logs))
    pieces = [b",".join(logs[start:end]) for start, end in itertools.pairwise(bounds)]
    request = encode_pieces(group, pieces, len(logs), "lz4")
    body = decode_body(request.body, request.headers)
    assert body["__logs__"] == [{"i": str(i), "msg": "é" * i} for i in range(10)]
    assert (body["__topic__"], body["__source__"]) == ("topic", "web-07")
    assert request.raw_size == len(encode_request(group, logs, "none").body)
    with pytest.raises(ValueError, match="at least one log"):
        encode_pieces(group, [], 0, "lz4")


def test_lz4_is_a_raw_block_without_size_prefix():
    request = encode_request(LogGroup(), [b'{"a":"b"}'], "lz4")
    import lz4.block

    # A size-prefixed block would decode to 4 garbage bytes plus JSON, or fail.
    assert lz4.block.decompress(request.body, uncompressed_size=request.raw_size).startswith(
        b'{"__logs__":['
    )


def test_unknown_compression_is_refused():
    with pytest.raises(ValueError, match="compression must be one of"):
        encode_request(LogGroup(), [b'{"a":"b"}'], "gzip")


def test_split_respects_both_limits_and_keeps_order():
    group = LogGroup.of("t")
    logs = [json.dumps({"i": str(i), "pad": "x" * (i % 97)}).encode() for i in range(3000)]
    limits = BatchLimits(max_logs=100, max_bytes=4000)
    chunks = split_into_requests(logs, limits, group)
    assert [log for chunk in chunks for log in chunk] == logs
    for chunk in chunks:
        request = encode_request(group, chunk, "none")
        assert len(chunk) <= 100
        assert request.raw_size <= 4000
    # Greedy: each chunk was closed only because the next log did not fit.
    for chunk, following in zip(chunks, chunks[1:], strict=False):
        room = limits.room(group)
        assert not limits.fits(len(chunk), sum(map(len, chunk)), len(following[0]), room)


def test_limits_cannot_exceed_the_service():
    with pytest.raises(ValueError, match="max_batch_logs"):
        BatchLimits(max_logs=SERVICE_MAX_LOGS + 1)
    with pytest.raises(ValueError, match="max_batch_bytes"):
        BatchLimits(max_bytes=4 * 1024 * 1024)


def test_encode_many_takes_only_plain_logs_with_known_keys():
    encoder = LogEncoder()
    plain = [{"a": "1", "b": "x"}, {"a": "2"}]
    assert encoder.encode_many(plain) is None  # keys not validated yet
    [encoder.encode(log) for log in plain]
    assert encoder.encode_many(plain) == b",".join(encoder.encode(log) for log in plain)
    for odd in (
        [{}],
        [{"a": "\ud800"}],
        [{"a": 1, "b": "\udfff"}],  # a typed batch with a lone surrogate
        [{"c": "new key"}],
        [{"a": b"bytes"}],  # not one of the quick types
        [{"a": "x" * (1024 * 1024 + 1)}],  # over 1 MiB
        [{"a": 1, "b": "x" * (1024 * 1024 + 1)}],
    ):
        assert encoder.encode_many(plain + odd) is None
    long_but_fine = [{"a": "é" * (400 * 1024)}]  # 800 KiB of UTF-8
    assert encoder.encode_many(long_but_fine) == encoder.encode(long_but_fine[0])
    assert LogEncoder(max_log_bytes=100).encode_many(plain) is None  # keys unknown there
    small = LogEncoder(max_log_bytes=20)
    [small.encode(log) for log in plain]
    assert small.encode_many(plain) == b'{"a":"1","b":"x"},{"a":"2"}'  # 27 > 20, each fits
    assert small.encode_many([*plain, {"a": "x" * 30}]) is None  # one log over the limit
    assert small.encode_many([{"a": 1, "b": 2}] * 3) == b",".join([b'{"a":"1","b":"2"}'] * 3)
    assert small.encode_many([{"a": 1, "b": 2}, {"a": 10**30}]) is None
    # Held to the limit with their floats' and nested values' text too (the C encoder
    # writes those after its pass over the logs): 19 bytes fit, 21 do not, and the runs
    # beside one over it keep their own values.
    assert small.encode_many([{"a": 1.5, "b": 2}]) == b'{"a":"1.5","b":"2"}'
    assert small.encode_many([{"a": 12.25, "b": 2}]) is None
    over = [{"a": [1, 2, 3, 4, 5, 6, 7, 8]}]
    assert small.encode_runs([[{"a": 1.5}], over, [{"a": [1]}, {"a": 2.5}]]) == [
        b'{"a":"1.5"}',
        None,
        b'{"a":"[1]"},{"a":"2.5"}',
    ]
    assert LogEncoder(event_time_key="t").encode_many(plain) is None


#: Values whose string forms are easy to get wrong in bulk: floats where repr
#: and orjson differ (exponents, under 1e-4, non-finite), ints past 64 bits,
#: text that JSON escapes (quotes, backslashes, '","', control characters).
TRICKY_VALUES = [
    1e-4, 9.99e-5, 1e-5, -1.5e-7, 1e16, 1e15, 123456789012345.6, 0.0, -0.0, 5e-324,
    float("nan"), float("inf"), 2**63, -(2**64), 10**30, True, False, None,
    '","', 'a\\', '"', "\n\t\x00\x1f", "é中😀", "", "%s %%", "0.00001",
    {"k": [1, 2.5, None, {"x": '"'}]}, [], {}, [float("nan")],
]  # fmt: skip


#: The bulk encoders: the package's C one (when built) and the Python one beside it.
BULK_ENCODERS = ["python"] + (["c"] if accelerated.speedups is not None else [])


@contextlib.contextmanager
def bulk_encoder(name: str):
    built = accelerated.speedups
    accelerated.speedups = built if name == "c" else None
    try:
        yield
    finally:
        accelerated.speedups = built


def test_the_c_encoder_is_built_where_it_must_be():
    """CI builds it (a compiler is at hand there): the tests below then hold it to the
    Python encoder's bytes, rather than skipping it unnoticed."""
    if os.environ.get("SLS_BEAM_REQUIRE_SPEEDUPS"):
        assert accelerated.speedups is not None, "sls_beam/_speedups.c was not built"
    assert BULK_ENCODERS[0] == "python"


def reference_bytes(encoder: LogEncoder, log: dict) -> bytes:
    """A log as the per-log path writes it, applying (and naming) every rule."""
    return encoder._dump(encoder._normalise(log, None))


@pytest.mark.parametrize("implementation", BULK_ENCODERS)
def test_plain_logs_are_encoded_in_bulk_by_each_encoder(implementation):
    logs = [
        {"ts": 1764144000.123, "status": 200, "ok": True, "retry": None, "big": 2**70},
        {"user": {"id": 42, "tags": ["a", '"b"']}, "msg": 'é\n\x01\\"', "nan": math.nan},
    ]
    encoder = LogEncoder()
    expected = b",".join(reference_bytes(encoder, log) for log in logs)
    with bulk_encoder(implementation):
        assert encoder.encode_many(logs) == expected
        assert encoder.encode_runs([logs[:1], logs[1:]]) == [
            reference_bytes(encoder, log) for log in logs
        ]
        assert b",".join(map(encoder.encode, logs)) == expected
        # A run that is not plain (a log not a dict, text that is not UTF-8 before a
        # float and a nested value) leaves the runs around it in bulk, their floats and
        # nested values in their places.
        broken = [{"msg": "\ud800"}, {"ts": 3.5, "user": {"id": 1}}]
        # A nested value over 1 MiB (its JSON), between a float and a nested value.
        too_big = [{"ts": 4.5, "user": {"id": 2, "tags": ["x" * (1 << 20)]}, "n": [1]}]
        runs = [logs, broken, logs[::-1], [logs[0], "not a dict"], too_big, logs]
        assert encoder.encode_runs(runs) == [
            expected,
            None,
            b",".join(reference_bytes(encoder, log) for log in logs[::-1]),
            None,
            None,
            expected,
        ]
        # A nested key orjson refuses (the Python encoder writes it itself) leaves the
        # other runs in bulk too.
        odd = {"ts": 2.5, "user": {1: "int key"}}
        encoded = encoder.encode_runs([logs, [odd], logs])
        assert encoded[1] in (None, reference_bytes(encoder, odd))
        assert encoded[::2] == [expected, expected]


#: Runs of logs as users have them: odd keys and text, ints of any size, every float,
#: lists, nested objects.
TYPED_LOGS = st.lists(
    st.dictionaries(
        st.sampled_from(["a", "b", "c%s", 'd"', "é"]),
        st.one_of(
            st.sampled_from(TRICKY_VALUES),
            st.integers(),
            st.floats(),
            st.text(),
            st.booleans(),
            st.none(),
            st.lists(st.integers(), max_size=3),
            st.dictionaries(  # nested objects: written by orjson, escaped
                st.text(max_size=4),
                st.one_of(st.text(max_size=8), st.floats(), st.integers(), st.none()),
                max_size=3,
            ),
        ),
        min_size=1,
    ),
    min_size=1,
    max_size=40,
)


@pytest.mark.parametrize("implementation", BULK_ENCODERS)
@settings(max_examples=300, deadline=None)
@given(logs=TYPED_LOGS)
def test_bulk_encoding_gives_the_bytes_of_the_per_log_path(implementation, logs):
    """Each bulk encoder must write, byte for byte, what the per-log path writes each
    log; or decline (None) and leave the batch to encode()."""
    encoder = LogEncoder()
    try:
        expected = b",".join(reference_bytes(encoder, log) for log in logs)
    except InvalidLogError:
        with bulk_encoder(implementation):
            assert encoder.encode_many(logs) is None
        return
    with bulk_encoder(implementation):
        got = encoder.encode_many(logs)
        if got is not None:
            assert got == expected
        assert b",".join(map(encoder.encode, logs)) == expected  # its quick path too
        # Cut into runs (a bundle's groups), one pass over the columns of all.
        runs = [logs[i : i + 3] for i in range(0, len(logs), 3)]
        assert encoder.encode_runs(runs) == [encoder.encode_many(run) for run in runs]
    if all(
        type(v) in (int, float, bool, str, type(None), list) for log in logs for v in log.values()
    ):
        assume(all(-(2**63) <= v < 2**64 for log in logs for v in log.values() if type(v) is int))
        assume(
            not any(isinstance(v, str) and not _valid_utf8(v) for log in logs for v in log.values())
        )
        assert got is not None or len({tuple(log) for log in logs}) > 16


def _comes_back_from_json(value) -> bool:
    """Whether JSON gives ``value`` back as it is: the rule of the logs' own JSON."""
    kind = type(value)
    if kind is int:
        return -(2**63) <= value < 2**63
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(map(_comes_back_from_json, value))
    if kind is dict:
        return all(type(k) is str and _comes_back_from_json(v) for k, v in value.items())
    return kind in (str, bool, type(None))


def _comes_back_from_wire(value) -> bool:
    """Whether a log's value comes back as it is from its wire text and its kind: the
    rule of what the C encoder keeps (a nested value, from JSON)."""
    if type(value) in (str, int, float, bool, type(None)):
        return True
    return type(value) in (dict, list) and _comes_back_from_json(value)


def _kept_logs(wire: bytes, kept) -> list:
    """The logs made again from what the C encoder kept of a run: the wire JSON itself
    (the logs' own), or the wire JSON and its kinds."""
    if kept is wire:
        return orjson.loads(b"[" + wire + b"]")
    assert kept.wire is wire and not gc.is_tracked(kept)  # the collector need not count it
    return logs_from_wire(kept.wire, kept.kinds)


def _identical(got, expected) -> bool:
    """Equal, with the same types at every level and the same sign of each zero (NaN is
    NaN)."""
    if type(got) is not type(expected):
        return False
    if type(got) is float:
        if math.isnan(expected):
            return math.isnan(got)
        return got == expected and math.copysign(1, got) == math.copysign(1, expected)
    if type(got) is list:
        return len(got) == len(expected) and all(map(_identical, got, expected))
    if type(got) is dict:
        return list(got) == list(expected) and all(map(_identical, got.values(), expected.values()))
    return got == expected


@pytest.mark.parametrize("implementation", BULK_ENCODERS)
@settings(max_examples=300, deadline=None)
@given(logs=TYPED_LOGS)
def test_what_is_kept_gives_the_logs_back_as_they_are_or_is_not_kept(implementation, logs):
    """encode_runs_keeping: the wire JSON of encode_runs, and (C encoder) what gives each
    run's logs back exactly when every value comes back as it was: made again, the same
    values of the same types (the batcher keeps it in place of the elements)."""
    encoder = LogEncoder()
    try:
        [reference_bytes(encoder, log) for log in logs]  # the keys, known
    except InvalidLogError:
        assume(False)
    runs = [logs[i : i + 3] for i in range(0, len(logs), 3)]
    with bulk_encoder(implementation):
        encoded, originals = encoder.encode_runs_keeping(runs)
        assert encoded == encoder.encode_runs(runs)
    for run, wire, kept in zip(runs, encoded, originals, strict=True):
        if implementation == "python" or wire is None:
            assert kept is None
            continue
        comes_back = all(_comes_back_from_wire(v) for log in run for v in log.values())
        assert (kept is not None) == comes_back
        if kept is not None:
            assert _identical(_kept_logs(wire, kept), run)


@pytest.mark.skipif(accelerated.speedups is None, reason="the C encoder alone has own_groups")
@settings(max_examples=300, deadline=None)
@given(logs=TYPED_LOGS, data=st.data())
def test_a_logs_own_group_fields_are_left_out_of_the_wire_and_kept_beside_it(logs, data):
    """encode_runs_keeping(own_groups=True), for logs the batcher grouped by their own
    __topic__, __source__ and __tags__: the wire JSON of the logs without those fields,
    wherever they stand in the log (among nested values, whose places the tags share),
    and what gives the logs back with them, as they were."""
    encoder = LogEncoder()
    try:
        [reference_bytes(encoder, log) for log in logs]  # the keys, known
    except InvalidLogError:
        assume(False)
    owned = []
    for log in logs:
        items = list(log.items())
        fields = data.draw(
            st.lists(st.sampled_from(["__topic__", "__source__", "__tags__"]), unique=True)
        )
        for field in fields:
            text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=9)
            if field == "__tags__":  # text, or a value that does not come back (a tuple)
                value = data.draw(st.dictionaries(text, text | st.tuples(text), max_size=3))
            else:
                value = data.draw(text)
            items.insert(data.draw(st.integers(0, len(items))), (field, value))
        owned.append(dict(items))
    runs = [owned[i : i + 3] for i in range(0, len(owned), 3)]
    contents = [[log_content(log) for log in run] for run in runs]
    encoded, originals = encoder.encode_runs_keeping(runs, own_groups=True)
    assert encoded == encoder.encode_runs_keeping(contents)[0]
    for run, wire, kept in zip(runs, encoded, originals, strict=True):
        comes_back = all(_comes_back_from_wire(v) for log in run for v in log.values())
        assert (kept is not None) == (wire is not None and comes_back)
        if kept is not None:
            assert _identical(_kept_logs(wire, kept), run)
    assert encoder.encode_runs_keeping([[{"__source__": "alone"}]], own_groups=True) == (
        [None],
        [None],
    )  # no field left to send: the per-log path says so


@pytest.mark.skipif(accelerated.speedups is None, reason="the C encoder alone has own_groups")
def test_a_logs_own_tags_of_text_are_kept_as_orjson_writes_them():
    """Own tags of str (written by the C encoder itself, not by orjson) are kept as the
    JSON orjson writes, escapes and all, and come back as they were; tags with a lone
    surrogate, which orjson refuses, leave only their run out of bulk."""
    encoder = LogEncoder()
    reference_bytes(encoder, {"msg": "x", "ts": 1.5})
    tags = {'é"k\\': 'v\n"\x01\u2028', "b": "", "a": "1"}
    run = [{"msg": "x", "__tags__": tags, "ts": 1.5}, {"__tags__": dict(tags), "msg": "y"}]
    surrogate = [{"msg": "z", "__tags__": {"k": "\ud800"}}]
    encoded, kept = encoder.encode_runs_keeping([run, surrogate, run], own_groups=True)
    expected = encoder.encode_runs_keeping([[log_content(log) for log in run]])[0][0]
    assert encoded == [expected, None, expected] and kept[1] is None
    for wire, kept_run in zip(encoded[::2], kept[::2], strict=True):
        assert kept_run.kinds.split(b"\0", 1)[1] == orjson.dumps(tags) + b"," + orjson.dumps(tags)
        assert _identical(_kept_logs(wire, kept_run), run)


@pytest.mark.skipif(accelerated.speedups is None, reason="the C encoder alone keeps kinds")
def test_what_is_kept_of_text_is_the_wire_json_and_of_others_a_letter_a_field():
    logs = [{"msg": 'é "quoted"\n', "level": "INFO"}, {"msg": "x", "level": "WARN"}]
    encoder = LogEncoder()
    reference_bytes(encoder, logs[0])
    encoded, kept = encoder.encode_runs_keeping([logs])
    assert kept[0] is encoded[0]  # all text: the wire JSON is the logs' own
    signed = LogEncoder(log_time=True)  # each log gets its __time__ on the wire only
    reference_bytes(signed, logs[0])
    encoded, kept = signed.encode_runs_keeping([logs])
    assert b'"__time__":' in encoded[0] and kept[0].wire is encoded[0]
    assert kept[0].kinds == b"ss;ss;" and logs_from_wire(kept[0].wire, kept[0].kinds) == logs
    typed = [
        {**log, "n": -0.0, "big": 2**64, "odd": math.nan, "user": {"id": 2**63 - 1, "t": [1e16]}}
        for log in logs
    ]
    reference_bytes(signed, typed[0])
    encoded, kept = signed.encode_runs_keeping([typed])
    assert kept[0].wire is encoded[0]
    assert kept[0].kinds == b"ssfifj;" * 2  # 7 bytes a log beside its wire JSON
    assert _identical(logs_from_wire(kept[0].wire, kept[0].kinds), typed)
    assert repr(kept[0]) == f"KeptRun(<{len(encoded[0])} bytes of wire JSON>, <14 bytes of kinds>)"
    for odd in ({"n": [math.nan]}, {"n": {"k": [math.inf]}}, {"n": Level.INFO}, {"n": [("a",)]}):
        encoded, kept = signed.encode_runs_keeping([[{**logs[0], **odd}]])
        assert encoded[0] is not None and kept == [None]  # still in bulk, kept packed
    sub = type("Sub", (dict,), {})(logs[0])  # a dict subclass would come back a dict
    assert signed.encode_runs_keeping([[sub]])[1] == [None]


def _valid_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def test_bulk_encoding_of_logs_of_several_key_orders_keeps_each_in_place():
    encoder = LogEncoder()
    logs = [{"a": i, "b": str(i)} if i % 3 else {"b": "x", "a": 1.5, "c": None} for i in range(20)]
    [encoder.encode(log) for log in logs]
    assert encoder.encode_many(logs) == b",".join(map(encoder.encode, logs))


class Level(str, enum.Enum):
    INFO = "info"


class Shouting(str):
    def __str__(self):
        return self.upper()


@pytest.mark.parametrize("value", [Level.INFO, Shouting("info")])
def test_str_subclasses_are_written_as_their_characters_by_both_paths(value):
    encoder = LogEncoder()
    assert encoder.encode({"level": value}) == b'{"level":"info"}'
    assert encoder.encode_many([{"level": value}, {"level": "x"}]) == (
        b'{"level":"info"},{"level":"x"}'
    )


@pytest.mark.parametrize(
    "log",
    [
        {"ts": 1764144000.123, "status": 200, "ok": True, "retry": None, "msg": "served"},
        {"user": {"id": 42, "tags": ["a", "b"]}, "items": [1, 2.5, None], "nan": float("nan")},
        {"big": -(10**20), "inf": float("-inf"), "tiny": 1e-07, "e": 1e16, "é": "ü"},
        {"only": "strings", "here": "x" * 1000},
    ],
)
def test_the_quick_path_writes_what_the_rules_say(log):
    """Logs of known keys take a quick path: it must give the bytes the value rules give."""
    encoder = LogEncoder()
    encoder.encode(log)  # learns the keys: the next encode takes the quick path
    expected = orjson.dumps({key: stringify(key, value) for key, value in log.items()})
    assert encoder.encode(log) == expected


@pytest.mark.parametrize("implementation", BULK_ENCODERS)
def test_text_is_escaped_as_orjson_escapes_it_wherever_the_character_stands(implementation):
    """The C encoder skips 8 bytes at a time where none needs escaping: a character
    to escape, or a non-ASCII one, at every place of a text is written as orjson
    writes it."""
    encoder = LogEncoder()
    specials = ['"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", "😀"]
    logs = [
        {"msg": "a" * place + special + "b" * (20 - place)}
        for special in specials
        for place in range(21)
    ]
    reference_bytes(encoder, logs[0])  # the key, known
    with bulk_encoder(implementation):
        encoded = encoder.encode_many(logs)
    assert encoded == b",".join(orjson.dumps(log) for log in logs)
