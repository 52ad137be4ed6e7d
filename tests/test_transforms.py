"""WriteToSLS end to end against the emulator over HTTP."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct import direct_userstate
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.display import DisplayData
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from sls_beam import FailedLog, WriteToSLS, WrittenRequest, dofns
from sls_beam.emulator import Emulator
from tests.beam_helpers import FakeClock, requests_by_id, run
from tests.helpers import LOGSTORE, PROJECT


def sink(emulator, **kwargs):
    kwargs.setdefault("backoff_base_secs", 0.001)
    return WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE, **kwargs)


def topic_of(log):
    return f"topic-{log['n'] % 3}"


def source_of(log):
    return f"src-{log['n'] % 2}"


def tags_of(log):
    return {"shard": str(log["n"] % 5)} if log["n"] % 7 else {}


@pytest.mark.parametrize("mode", ["bundle", "stateful"])
def test_every_log_delivered_exactly_with_groups_and_limits(emulator, mode):
    logs = [{"n": n, "msg": "m" * (n % 200)} for n in range(5000)]

    def build(p):
        result = (
            p
            | beam.Create(logs)
            | sink(
                emulator,
                topic=topic_of,
                source=source_of,
                tags=tags_of,
                max_batch_logs=300,
                max_batch_bytes=20_000,
                mode=mode,
            )
        )
        assert_that(result.failed, equal_to([]), label="no failures")

    _, metrics = run(build)
    stored = emulator.logs(PROJECT, LOGSTORE)
    assert sorted(int(log.contents["n"]) for log in stored) == list(range(5000))
    for log in stored:
        n = int(log.contents["n"])
        assert (log.topic, log.source, log.tags) == (
            topic_of({"n": n}),
            source_of({"n": n}),
            tags_of({"n": n}),
        )
        assert log.contents["msg"] == "m" * (n % 200)
    requests = requests_by_id(stored)
    for batch in requests.values():
        assert len({(log.topic, log.source, tuple(log.tags.items())) for log in batch}) == 1
        assert len(batch) <= 300
    assert emulator.stats()["rejections"] == {}
    assert max(len(b) for b in requests.values()) > 100  # batches really fill up
    assert metrics["logs_written"] == 5000
    assert metrics["requests"] == len(requests) == emulator.stats()["accepted_requests"]
    assert metrics["raw_bytes"] == emulator.stats()["raw_bytes"]
    assert metrics["sent_bytes"] == emulator.stats()["body_bytes"]
    assert metrics["batch_raw_bytes"].max <= 20_000
    assert metrics["batch_logs"].sum == 5000
    assert metrics.get("failed_logs", 0) == 0


@pytest.mark.parametrize("options", ["constant", "callables"])
@pytest.mark.parametrize("mode", ["bundle", "stateful"])
def test_logs_naming_their_own_group_fields_are_stored_in_their_groups(emulator, mode, options):
    """Logs with their own __topic__, __source__ or __tags__ (str, or values the tags rule
    writes as text), beside callables or constants: each stored in its group, its own
    fields winning, its own tags joining the others, none of them among its contents."""
    logs = []
    for n in range(3000):
        log = {"n": n, "ok": n % 2 == 0, "user": {"id": n, "tags": ["a"]}, "m": "é"}
        if n % 3 == 0:
            log["__source__"] = f"own-{n % 4}"
        if n % 5 == 0:
            log["__topic__"] = "own"
        if n % 7 == 0:
            log["__tags__"] = {"pod": f"p-{n % 2}"} if n % 11 else {"pod": n % 2, "on": True}
        logs.append(log)
    called = {"topic": topic_of, "source": source_of, "tags": tags_of}
    if options == "constant":
        called = {"topic": "app", "source": "host", "tags": {"env": "prod"}}

    def build(p):
        result = p | beam.Create(logs) | sink(emulator, mode=mode, max_batch_logs=400, **called)
        assert_that(result.failed, equal_to([]), label="no failures")

    run(build)
    stored = emulator.logs(PROJECT, LOGSTORE)
    assert sorted(int(log.contents["n"]) for log in stored) == list(range(3000))
    for log in stored:
        sent = logs[int(log.contents["n"])]
        group = {name: value(sent) if callable(value) else value for name, value in called.items()}
        own_tags = {key: str(value).lower() for key, value in sent.get("__tags__", {}).items()}
        assert (log.topic, log.source, log.tags) == (
            sent.get("__topic__", group["topic"]),
            sent.get("__source__", group["source"]),
            {**group["tags"], **own_tags},
        )
        assert not {"__topic__", "__source__", "__tags__"} & set(log.contents)
        assert json.loads(log.contents["user"]) == {"id": int(log.contents["n"]), "tags": ["a"]}
    for batch in requests_by_id(stored).values():
        assert len({(log.topic, log.source, tuple(log.tags.items())) for log in batch}) == 1


@pytest.mark.parametrize("compression", ["lz4", "deflate", "none"])
def test_compression_options(emulator, compression):
    def build(p):
        p | beam.Create([{"i": i} for i in range(100)]) | sink(emulator, compression=compression)

    run(build)
    assert len(emulator.logs()) == 100
    stats = emulator.stats()
    assert (stats["body_bytes"] < stats["raw_bytes"]) == (compression != "none")


class Point(typing.NamedTuple):
    x: int
    label: str


@dataclasses.dataclass
class Event:
    kind: str
    value: float
    note: str | None = None  # None: absent from the record, left out of the log


def test_element_kinds(emulator):
    def build(p):
        elements = p | beam.Create(
            [{"k": "dict"}, "plain text", b"bytes text", Point(1, "nt"), Event("dc", 2.5)],
            reshuffle=False,
        )
        rows = p | "rows" >> beam.Create([beam.Row(a=1, b="row")])
        (elements, rows) | beam.Flatten() | sink(emulator)

    run(build)
    contents = sorted((log.contents for log in emulator.logs()), key=str)
    assert contents == sorted(
        [
            {"k": "dict"},
            {"content": "plain text"},
            {"content": "bytes text"},
            {"x": "1", "label": "nt"},
            {"kind": "dc", "value": "2.5"},
            {"a": "1", "b": "row"},
        ],
        key=str,
    )


def test_log_fields_override_topic_and_source(emulator):
    def build(p):
        (
            p
            | beam.Create([{"__topic__": "own", "__source__": "me", "m": "1"}, {"m": "2"}])
            | sink(emulator, topic="default-topic", source="default-source")
        )

    run(build)
    by_m = {log.contents["m"]: log for log in emulator.logs()}
    assert (by_m["1"].topic, by_m["1"].source, by_m["1"].contents) == ("own", "me", {"m": "1"})
    assert (by_m["2"].topic, by_m["2"].source) == ("default-topic", "default-source")


def test_event_time_travels_in_a_field(emulator):
    def build(p):
        (
            p
            | beam.Create([({"m": "a"}, 1700000000.25), ({"m": "b", "__time__": 42}, 5)])
            | beam.Map(lambda pair: TimestampedValue(*pair))
            | sink(emulator, event_time_key="event_time")
        )

    run(build)
    by_m = {log.contents["m"]: log.contents for log in emulator.logs()}
    assert by_m["a"]["event_time"] == "1700000000.25"
    assert by_m["b"]["event_time"] == "42"


@pytest.mark.parametrize("mode", ["bundle", "stateful"])
def test_bad_logs_go_to_failed_and_the_rest_is_delivered(emulator, mode, tmp_path):
    good = [{"i": i} for i in range(50)]
    bad = [
        {"": "empty key"},
        {"__tag__:x": "reserved"},
        None,
        12,
        {"k": b"\xff"},
        {"big": "x" * 2_000_000},
    ]

    def build(p):
        result = p | beam.Create(good + bad) | sink(emulator, mode=mode)
        assert_that(
            result.failed
            | beam.Map(lambda f: (f.error_code, f.error_message.split(": ")[0], f.status)),
            equal_to(
                [
                    ("InvalidLog", "key ''", None),
                    ("InvalidLog", "key '__tag__:x'", None),
                    ("InvalidLog", "log", None),
                    ("InvalidLog", "log", None),
                    ("InvalidLog", "key 'k'", None),
                    ("InvalidLog", "key 'big'", None),
                ]
            ),
        )
        assert_that(
            result.failed
            | beam.Map(lambda f: f.log == 12 or f.log is None or isinstance(f.log, dict)),
            equal_to([True] * 6),
            label="original elements kept",
        )

    _, metrics = run(build)
    assert sorted(int(log.contents["i"]) for log in emulator.logs()) == list(range(50))
    assert metrics["invalid_logs"] == 6


@pytest.mark.parametrize("mode", ["bundle", "stateful"])
def test_batch_refused_by_the_service_is_split_to_isolate_bad_logs(mode):
    # keys with '.' pass the connector but a strict-key service refuses them.
    with Emulator(strict_keys=True) as emulator:
        logs = [{"i": i} for i in range(200)] + [{"user.id": "x", "i": 1000 + j} for j in range(3)]

        def build(p):
            result = p | beam.Create(logs) | sink(emulator, mode=mode)
            # stateful mode reports the log as sent (values are strings)
            assert_that(
                result.failed | beam.Map(lambda f: (f.error_code, f.status, int(f.log["i"]))),
                equal_to([("InvalidKey", 400, 1000 + j) for j in range(3)]),
            )

        _, metrics = run(build)
        assert sorted(int(log.contents["i"]) for log in emulator.logs()) == list(range(200))
        assert metrics["split_batches"] >= 3
        assert metrics["failed_logs"] == 3


def test_exhausted_retries_fail_the_bundle_by_default(emulator):
    emulator.faults.configure(rates={"503": 1.0})

    def build(p):
        p | beam.Create([{"i": 1}]) | sink(emulator, max_attempts=3)

    with pytest.raises(
        Exception, match=r"ServerBusy \(HTTP 503\).*request id [0-9A-F]{24}, 3 attempts"
    ):
        run(build)


@pytest.mark.parametrize("mode", ["bundle", "stateful"])
def test_exhausted_retries_to_failed_output(emulator, mode):
    emulator.faults.configure(rates={"quota": 1.0})

    def build(p):
        result = (
            p
            | beam.Create([{"i": i} for i in range(10)])
            | sink(
                emulator, max_attempts=2, backoff_max_secs=0.01, on_send_failure="output", mode=mode
            )
        )
        assert_that(
            result.failed | beam.Map(lambda f: (f.error_code, f.status, int(f.log["i"]))),
            equal_to([("WriteQuotaExceed", 403, i) for i in range(10)]),
        )

    _, metrics = run(build)
    assert emulator.logs() == []
    assert metrics["failed_logs"] == 10
    assert metrics["retries"] >= 1


def test_permanent_error_fails_fast_with_a_clear_message(emulator):
    emulator.create_logstore(PROJECT, LOGSTORE, web_tracking=False)

    def build(p):
        p | beam.Create([{"i": 1}]) | sink(emulator)

    with pytest.raises(Exception, match="web tracking is probably disabled"):
        run(build)
    assert emulator.stats()["requests"] == 1


def test_retries_and_throttling_metrics(emulator):
    emulator.faults.script(["quota", "503", "drop"])

    def build(p):
        (
            p
            | beam.Create([{"i": i} for i in range(30)])
            | sink(
                emulator,
                max_in_flight=1,
                max_batch_logs=10,
                backoff_base_secs=0.3,
                backoff_max_secs=0.3,
            )
        )

    _, metrics = run(build)
    assert len(emulator.logs()) == 30
    assert metrics["retries"] == 3
    assert metrics["throttled_msecs"] > 0
    assert metrics["request_latency_ms"].count == 3


def test_written_output_reports_each_request(emulator):
    def build(p):
        result = (
            p
            | beam.Create([{"i": i} for i in range(25)], reshuffle=False)
            | sink(emulator, max_batch_logs=10, topic="t")
        )
        assert_that(
            result.written | beam.Map(lambda w: (w.topic, w.log_count, w.attempts)),
            equal_to([("t", 10, 1), ("t", 10, 1), ("t", 5, 1)]),
        )
        assert_that(
            result.written
            | beam.Map(
                lambda w: (
                    isinstance(w, WrittenRequest) and len(w.request_id) == 24 and w.raw_bytes > 0
                )
            ),
            equal_to([True] * 3),
            label="ids",
        )

    run(build)


def run_stream(emulator, events, **sink_kwargs):
    """Run a TestStream of ``events`` (lists of logs, or seconds of processing time to pass)."""
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = test_stream.TestStream().advance_watermark_to(0)
    for event in events:
        if isinstance(event, list):
            stream = stream.add_elements([TimestampedValue(log, 1) for log in event])
        else:
            stream = stream.advance_processing_time(event)
    stream = stream.advance_watermark_to_infinity()
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=options) as p:
        (
            p
            | stream
            | beam.WindowInto(FixedWindows(60))
            | sink(emulator, **{"clock": FakeClock(), "num_shards": 1, **sink_kwargs})
        )
    return sorted(
        sorted(int(log.contents["n"]) for log in batch)
        for batch in requests_by_id(emulator.logs()).values()
    )


FIVE_WAIT_TEN = [[{"n": n} for n in range(5)], 5, [{"n": n} for n in range(5, 15)]]


def test_streaming_buffer_flushes_on_time_count_and_window_end(emulator):
    batches = run_stream(emulator, FIVE_WAIT_TEN, max_batch_logs=4, max_buffering_secs=2)
    # count flush (4), time flush (the lone 5th, which waited past 2 s), count flushes,
    # then the window end (2).
    assert batches == [[0, 1, 2, 3], [4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14]]


def test_streaming_time_limit_is_armed_again_once_it_fired(emulator):
    """A stale timer that fired is no longer armed, even when the worker's clock (here
    stopped at 0) has not reached it and the worker read its deadline from state (the
    second bundle): the next log arms it again and leaves on time, not with the log
    after it."""
    events = [[{"n": n} for n in range(5)], [{"n": 5}], 5, [{"n": 6}], 5, [{"n": 7}]]
    batches = run_stream(emulator, events, max_batch_logs=10, max_buffering_secs=2)
    assert batches == [[0, 1, 2, 3, 4, 5], [6], [7]]


def test_streaming_logs_past_their_time_leave_with_the_next_chunk(emulator):
    """When the stale timer is late (the runner has not fired it: here the runner's
    processing time stands still), the next chunk finds the batch past its time and
    sends it first, rather than keeping it until the window ends."""
    _JumpingClock.readings = 0
    events = [[{"n": n} for n in range(5)], [{"n": 5}]]
    batches = run_stream(
        emulator, events, max_batch_logs=10, max_buffering_secs=2, clock=_JumpingClock()
    )
    assert batches == [[0, 1, 2, 3, 4], [5]]


class _JumpingClock:
    """Processing time read by the buffering step: 0 s at its first reading, 5 s after
    (class-wide: the in-process runner works on copies of the sink)."""

    readings = 0

    def __call__(self) -> float:
        type(self).readings += 1
        return 0.0 if type(self).readings == 1 else 5.0


def test_streaming_without_time_limit_waits_for_full_batches(emulator):
    batches = run_stream(emulator, FIVE_WAIT_TEN, max_batch_logs=4, max_buffering_secs=0)
    assert sorted(map(len, batches)) == [3, 4, 4, 4]


def test_streaming_batches_respect_the_byte_limit(emulator):
    logs = [{"n": n, "pad": "p" * 300} for n in range(40)]
    batches = run_stream(emulator, [logs], max_batch_bytes=2048)
    assert sum(map(len, batches)) == 40
    # 6 logs of ~320 bytes fit in 2048 beside the group's JSON; 7 do not.
    assert sorted(map(len, batches)) == [4, 6, 6, 6, 6, 6, 6]


def test_streaming_batches_stay_within_limits_when_the_workers_counts_are_stale(
    emulator, monkeypatch
):
    """The buffered count is the worker's belief, not state: forgotten at every chunk
    (as if the key moved between workers each bundle), no count flush happens, and
    the window's end must cut the bag into batches within both limits, losing nothing."""
    monkeypatch.setattr(dofns, "_BUFFERED", _Forgetful())
    events = [[{"n": n, "pad": "p" * 600}] for n in range(15)]  # a bundle a log
    batches = run_stream(emulator, events, max_batch_logs=4, max_batch_bytes=2048)
    assert sorted(n for batch in batches for n in batch) == list(range(15))
    # 3 logs of ~620 bytes fit in 2048 beside the group's JSON; 4 do not.
    assert sorted(map(len, batches)) == [3, 3, 3, 3, 3]


class _Forgetful(dict):
    """A worker's memory of buffered counts that never recalls one."""

    def get(self, key, default=None):
        return default


class _StateReads:
    """Counts, in the buffering step of a one-key stream (its bundles run one after the
    other): the reads of ``armed`` (the only read-modify-write state) and the chunks
    added to the bag in each bundle, on the runner's own state objects."""

    def __init__(self, monkeypatch):
        self.reads = 0
        self._chunks_by_bundle: list[int] = []
        read = direct_userstate.ReadModifyWriteRuntimeState.read
        add = direct_userstate.BagRuntimeState.add
        start_bundle = dofns.BufferInStateFn.start_bundle

        def counted_read(state):
            self.reads += 1
            return read(state)

        def counted_add(state, value):
            self._chunks_by_bundle[-1] += 1
            return add(state, value)

        def counted_start_bundle(fn):
            self._chunks_by_bundle.append(0)
            return start_bundle(fn)

        monkeypatch.setattr(direct_userstate.ReadModifyWriteRuntimeState, "read", counted_read)
        monkeypatch.setattr(direct_userstate.BagRuntimeState, "add", counted_add)
        monkeypatch.setattr(dofns.BufferInStateFn, "start_bundle", counted_start_bundle)

    @property
    def chunks(self) -> int:
        return sum(self._chunks_by_bundle)

    @property
    def bundles(self) -> int:
        """Bundles that added a chunk (a timer may fire in a bundle of its own)."""
        return sum(1 for chunks in self._chunks_by_bundle if chunks)


def test_streaming_a_keys_chunks_in_one_bundle_read_when_its_timer_fires_once(
    emulator, monkeypatch
):
    """A bundle of 12 logs makes 3 chunks of 4 for one key: the stateful step reads
    ``armed`` for the first and knows it for the others (its bundle read it)."""
    counted = _StateReads(monkeypatch)
    batches = run_stream(emulator, [[{"n": n} for n in range(12)]], max_batch_logs=4)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert (counted.chunks, counted.bundles, counted.reads) == (3, 1, 1)


def test_streaming_each_bundle_reads_when_its_keys_timer_fires(emulator, monkeypatch):
    """What an earlier bundle read may no longer hold (the timer fired on another worker,
    or the runner restored state from a checkpoint while the worker lived on): each
    bundle reads ``armed`` again, once a key."""
    counted = _StateReads(monkeypatch)
    events = [[{"n": n}] for n in range(10)]  # a bundle a log, a chunk a bundle
    batches = run_stream(emulator, events, max_batch_logs=100, max_buffering_secs=2)
    assert batches == [list(range(10))]  # at the window's end
    assert counted.chunks == 10 and counted.bundles > 1
    assert counted.reads == counted.bundles


def test_pickles_and_runs_in_worker_processes(emulator):
    def build(p):
        p | beam.Create([{"i": i} for i in range(2000)]) | sink(emulator, max_batch_logs=100)

    _, metrics = run(build, direct_running_mode="multi_processing", direct_num_workers=2)
    assert sorted(int(log.contents["i"]) for log in emulator.logs()) == list(range(2000))
    assert metrics["logs_written"] == 2000


def test_construction_errors_name_the_option_and_the_bad_value(emulator):
    with pytest.raises(ValueError, match="compression must be one of .*, not 'gzip'"):
        sink(emulator, compression="gzip")
    with pytest.raises(ValueError, match="max_batch_logs must be within 1..4096, not 5000"):
        sink(emulator, max_batch_logs=5000)
    with pytest.raises(ValueError, match="project 'Bad Project'"):
        WriteToSLS(emulator.endpoint, "Bad Project", LOGSTORE)
    with pytest.raises(ValueError, match="mode must be one of .*, not 'fast'"):
        sink(emulator, mode="fast")
    with pytest.raises(ValueError, match="max_in_flight must be at least 1, not 0"):
        sink(emulator, max_in_flight=0)
    with pytest.raises(TypeError):  # options are keyword-only: no silent swap of two floats
        WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE, "topic")
    with pytest.raises(ValueError, match="event_time_key"):
        sink(emulator, event_time_key="__topic__")
    with pytest.raises(Exception, match="topic"):
        sink(emulator, topic="t" * 200)


def test_display_data(emulator):
    items = {item.key: item.value for item in DisplayData.create_from(sink(emulator)).items}
    assert items["project"] == PROJECT
    assert items["logstore"] == LOGSTORE
    assert items["compression"] == "lz4"
    assert items["max_batch_logs"] == 4096


def test_failed_log_is_a_plain_record():
    failed = FailedLog({"a": 1}, "InvalidLog", "key 'a': rule")
    assert (failed.status, failed.request_id) == (None, None)


@pytest.mark.parametrize("max_batch_bytes", [4000, 20_000])
def test_batches_of_plain_and_odd_logs_are_delivered_within_limits(emulator, max_batch_bytes):
    # Plain dicts ride the bulk lane (tests/test_batching.py shows which batches); a batch
    # holding an odd log, or too large for one request, goes log by log.
    logs = [{"i": str(i), "msg": "m" * (i % 50)} for i in range(1000)]
    logs[650] = {"i": "650", "msg": b"\xff"}  # invalid UTF-8 bytes, in the 7th batch
    logs[820] = {"i": "820", "msg": 7}  # not a str: stringified on the per-log path

    def build(p):
        result = (
            p
            | beam.Create(logs, reshuffle=False)
            | sink(emulator, max_batch_logs=100, max_batch_bytes=max_batch_bytes)
        )
        assert_that(result.failed | beam.Map(lambda f: f.log["i"]), equal_to(["650"]))

    run(build)
    stored = {log.contents["i"]: log.contents["msg"] for log in emulator.logs()}
    assert len(stored) == 999 and "650" not in stored
    assert stored["820"] == "7" and stored["49"] == "m" * 49
    for batch in requests_by_id(emulator.logs()).values():
        assert len(batch) <= 100
        raw = [json.dumps(log.contents, separators=(",", ":"), ensure_ascii=False) for log in batch]
        assert sum(map(len, raw)) <= max_batch_bytes
    assert emulator.stats()["rejections"] == {}


def test_a_batch_the_service_refuses_is_split_until_the_bad_logs_stand_alone():
    # "user.id" passes the connector, so once known it rides in bulk-encoded batches; a
    # strict-key service refuses such a batch, which is then split log by log.
    logs = [{"i": str(i)} for i in range(150)]
    logs[10] = {"i": "10", "user.id": "u"}  # first batch: teaches the encoder the key
    logs[120] = {"i": "120", "user.id": "u"}  # third batch: encoded in bulk, then refused
    with Emulator(strict_keys=True) as emulator:

        def build(p):
            result = p | beam.Create(logs, reshuffle=False) | sink(emulator, max_batch_logs=50)
            assert_that(
                result.failed | beam.Map(lambda f: (f.error_code, f.log["i"])),
                equal_to([("InvalidKey", "10"), ("InvalidKey", "120")]),
            )

        _, metrics = run(build)
        delivered = sorted(int(log.contents["i"]) for log in emulator.logs())
    assert delivered == [i for i in range(150) if i not in (10, 120)]
    assert metrics["split_batches"] >= 2


def test_typed_logs_refused_after_bulk_encoding_come_back_as_they_were():
    """Typed logs wait in their batch as its wire JSON and a letter a field (the C
    encoder's), then the service refuses the batch: it is split, its logs made again
    from what was kept, and the bad ones reach ``failed`` as the elements were (an int
    past 64 bits, NaN, -0.0, a nested object, their own source), the rest land."""

    def typed(i: int) -> dict:
        log = {"i": i, "big": 2**70 + i, "ratio": math.nan if i % 2 else -0.0, "ok": i % 3 == 0}
        log["user"] = {"id": i, "tags": ["a", "é"], "score": 0.25}
        if i % 4 == 0:
            log["__source__"] = f"host-{i % 8}"
        return log

    logs = [typed(i) for i in range(300)]
    # The first teaches the encoder the key, log by log; the others, handed over later,
    # wait in bulk (200 with its own source).
    bad = (10, 200, 201)
    for i in bad:
        logs[i]["user.id"] = "u"
    with Emulator(strict_keys=True) as emulator:

        def build(p):
            result = p | beam.Create(logs, reshuffle=False) | sink(emulator)
            assert_that(
                result.failed | beam.Map(lambda f: (f.error_code, repr(f.log))),
                equal_to([("InvalidKey", repr(logs[i])) for i in bad]),
            )

        _, metrics = run(build)
        delivered = {int(log.contents["i"]): log for log in emulator.logs()}
    assert sorted(delivered) == [i for i in range(300) if i not in bad]
    assert metrics["split_batches"] >= 2
    assert delivered[5].contents["big"] == str(2**70 + 5)
    assert (delivered[5].contents["ratio"], delivered[6].contents["ratio"]) == ("NaN", "-0.0")
    assert json.loads(delivered[7].contents["user"]) == {"id": 7, "tags": ["a", "é"], "score": 0.25}
    assert delivered[8].source == "host-0" and "__source__" not in delivered[8].contents


def test_streaming_failures_after_chunking_come_out_in_their_windows():
    """Logs refused by the service after they were chunked and buffered are reported in
    their own window (two windows here, each with a bad log in a chunk of good ones)."""
    _REPORTED.clear()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = test_stream.TestStream().advance_watermark_to(0)
    for start in (0, 60):
        logs = [{"n": start + i} for i in range(20)] + [{"user.id": "x", "n": start + 99}]
        stream = stream.add_elements([TimestampedValue(log, start + 1) for log in logs])
    stream = stream.advance_watermark_to_infinity()
    with Emulator(strict_keys=True) as emulator:
        with beam.Pipeline(runner="BundleBasedDirectRunner", options=options) as p:
            result = (
                p
                | stream
                | beam.WindowInto(FixedWindows(60))
                | sink(emulator, clock=FakeClock(), num_shards=1, max_batch_logs=8)
            )
            # The streaming DirectRunner runs in this process: the outputs are gathered here.
            _ = result.failed | beam.Map(_report)
        stored = sorted(int(log.contents["n"]) for log in emulator.logs())
    assert stored == [*range(20), *range(60, 80)]
    assert sorted(_REPORTED) == [(99, 0), (159, 60)]
    for batch in requests_by_id(emulator.logs()).values():
        assert len(batch) <= 8


_REPORTED: list = []


def _report(failed: FailedLog, window=beam.DoFn.WindowParam) -> None:
    _REPORTED.append((int(failed.log["n"]), window.start))
