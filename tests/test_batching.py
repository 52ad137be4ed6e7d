"""The batcher and the Batch value on their own: no HTTP, no pipeline."""

from __future__ import annotations

import enum
import gc
import math
from types import SimpleNamespace

import orjson
import pytest
from apache_beam.transforms.window import GlobalWindows, IntervalWindow
from apache_beam.utils.windowed_value import WindowedValue

from sls_beam import accelerated
from sls_beam.batching import (
    OPEN_BATCH_COST,
    Batch,
    KeyedBatcher,
    PackedElements,
    SentChunks,
    _Open,
    place_kept_runs,
)
from sls_beam.config import SLSWriteConfig
from sls_beam.json_lines import JsonLines
from sls_beam.preparing import LogPreparer, names_own_group
from sls_beam.wire import BatchLimits, LogGroup
from tests.helpers import LOGSTORE, PROJECT

GLOBAL = GlobalWindows.windowed_value(None)


def preparer(**options) -> LogPreparer:
    config = SLSWriteConfig(
        endpoint="http://127.0.0.1:1", project=PROJECT, logstore=LOGSTORE, **options
    )
    return LogPreparer(config)


def topic_of(log):
    return log["t"]


def batches_of(
    batcher: KeyedBatcher, elements, windowed=False, handover: int | None = None
) -> tuple[list[Batch], list]:
    """What the batcher makes of ``elements``, added one by one, or (``handover``) handed
    over that many at a time, as the sink's DoFns hand global-window dicts over."""
    batches, invalid = [], []
    if handover is None:
        additions = []
        for element in elements:
            origin = WindowedValue(element, 0, [IntervalWindow(0, 10)]) if windowed else element
            additions.append(batcher.add(element, origin))
    else:
        additions = [
            batcher.add_elements(elements[i : i + handover])
            for i in range(0, len(elements), handover)
        ]
    for added in additions:
        if added:
            batches += added.batches
            invalid += added.invalid
    drained = batcher.drain()
    return batches + drained.batches, invalid + drained.invalid


def sent(batch: Batch) -> list[dict]:
    """The logs of a batch as the request carries them."""
    return orjson.loads(b"[" + batch.joined + b"]")


@pytest.mark.parametrize("window", [None, GLOBAL], ids=["per-log", "bulk"])
def test_a_batch_is_closed_before_a_log_that_would_overflow_it(window):
    limits = BatchLimits(max_logs=4096, max_bytes=2000)
    batcher = KeyedBatcher(preparer(topic=topic_of), limits, 1 << 20, window)
    logs = [{"t": "a", "i": i, "pad": "x" * (i % 300)} for i in range(400)]
    batches, invalid = batches_of(batcher, logs)
    assert invalid == []
    assert all(sent(b) for b in batches)  # each is valid JSON
    for batch in batches:
        assert batch.group.overhead_bytes() + len(batch.joined) <= 2000
    assert sum(b.count for b in batches) == 400
    # greedy: a batch closed only because the next log did not fit
    for batch, following in zip(batches, batches[1:], strict=False):
        room = limits.room(batch.group)
        assert not limits.fits(
            batch.count,
            len(batch.joined) - batch.count + 1,
            len(orjson.dumps(sent(following)[0])),
            room,
        )


@pytest.mark.parametrize("window", [None, GLOBAL], ids=["per-log", "bulk"])
def test_a_full_batch_closes_at_once_and_groups_never_mix(window):
    batcher = KeyedBatcher(preparer(topic=topic_of), BatchLimits(max_logs=10), 1 << 20, window)
    logs = [{"t": f"g{i % 3}", "i": i} for i in range(95)]
    batches, _ = batches_of(batcher, logs)
    assert all(b.count <= 10 for b in batches)
    for batch in batches:
        assert {int(log["i"]) % 3 for log in sent(batch)} == {int(batch.group.topic[1:])}
    assert sorted(o["i"] for b in batches for o in b.origins) == list(range(95))


@pytest.mark.parametrize("window", [None, GLOBAL], ids=["per-log", "bulk"])
def test_buffered_bytes_are_capped_however_many_groups(window):
    limits = BatchLimits(max_bytes=100_000)
    batcher = KeyedBatcher(preparer(topic=topic_of), limits, 50_000, window)
    for i in range(20_000):
        log = {"t": f"t{i % 1000}", "m": "x" * 90}
        batcher.add(log, log if window else i)
        assert batcher.buffered_bytes <= 50_000
    assert sum(b.count for b in batcher.drain().batches) > 0
    assert batcher.buffered_bytes == 0


def test_plain_logs_of_a_constant_group_ride_the_bulk_lane():
    batcher = KeyedBatcher(preparer(topic="app"), BatchLimits(max_logs=100), 1 << 20, GLOBAL)
    logs = [{"i": str(i), "msg": "m" * (i % 50)} for i in range(1000)]
    logs[650] = {"i": "650", "msg": b"\xff"}  # invalid UTF-8 bytes, in the 7th batch
    logs[820] = {"i": "820", "msg": 7}  # an int: written "7" in bulk like any typed value
    batches, invalid = batches_of(batcher, logs)
    # The first run teaches the encoder the keys (per log: no batch of its logs alone is
    # bulk); later runs go in bulk (no per-log bytes kept), and a run holding an odd log
    # goes log by log, which names the bad field.
    bulk = [b.logs is None for b in batches]
    assert bulk[0] is False and all(bulk[1:6])
    assert [(e["i"], err.key) for e, _, err in invalid] == [("650", "msg")]
    logs_sent = [log for b in batches for log in sent(b)]
    assert len(logs_sent) == 999 and {"i": "820", "msg": "7"} in logs_sent
    assert [b.count for b in batches] == [100] * 9 + [99]  # full, in order
    # Dicts of strings are not tracked by the garbage collector: kept as they are, unpacked.
    assert all(batches[2].element(i) is logs[200 + i] for i in range(100))


class Line(dict):
    """A log that knows where it was read (as pipelines.reading.LineLog)."""

    __slots__ = ("line",)


def line(number: int, **fields) -> Line:
    log = Line(fields)
    log.line = number
    return log


def test_per_element_groups_ride_the_bulk_lane_and_failures_report_the_element():
    batcher = KeyedBatcher(
        preparer(source=lambda log: f"host-{log['n'] % 3}"), BatchLimits(), 1 << 20, GLOBAL
    )
    logs = [line(n, n=n, ok=n % 2 == 0, ts=1.5 + n, user={"id": n}) for n in range(900)]
    logs[7] = {"n": 7, "__source__": "own", "__tags__": {"k": True}}  # a log's own group
    batches, invalid = batches_of(batcher, logs)
    assert invalid == []
    by_source = {b.group.source: b for b in batches if b.count > 1}
    assert sorted(by_source) == ["host-0", "host-1", "host-2"]
    assert all(b.logs is None for b in by_source.values())  # bulk
    assert all(isinstance(b.origins, PackedElements) for b in by_source.values())  # pickled
    assert sent(by_source["host-1"])[0] == {
        "n": "1",
        "ok": "false",
        "ts": "2.5",
        "user": '{"id":1}',
    }
    reported = by_source["host-1"].element(5)  # unpacked: the element itself, typed
    assert (type(reported), reported.line, reported["ts"]) == (Line, 19, 20.5)  # 7 is "own"
    [own] = [b for b in batches if b.group.source == "own"]
    assert (own.group.tags, sent(own), own.element(0)) == ((("k", "true"),), [{"n": "7"}], logs[7])
    first, _ = by_source["host-1"].halves()  # re-encoded from the packed elements
    assert first.joined == b",".join(orjson.dumps(log) for log in sent(first))
    assert sent(first) == sent(by_source["host-1"])[: first.count]


class Plan(enum.IntEnum):
    PRO = 2


#: How a run of waiting elements is kept, by its first byte.
KEPT_AS = {0x80: "pickle", ord("{"): "json"}

#: What the C encoder keeps of a typed run (without it: an object of the same fields, for
#: the batcher's Python way).
KEPT_RUN = getattr(accelerated.speedups, "KeptRun", SimpleNamespace)


def kept_as(run) -> str:
    """How a run of waiting elements is kept: the C encoder's wire JSON and kinds, its
    logs' own JSON, or packed (pickle, marshal)."""
    if run.__class__ is KEPT_RUN:
        return "kinds"
    assert run.__class__ is bytes
    return KEPT_AS.get(run[0], "marshal")


@pytest.mark.parametrize(
    "top, nested, packed_by",
    [
        # Their wire JSON and kinds (the C encoder's) give them back as they are.
        ({}, {"tags": ["a", "b"], "tiny": 1e-05, "zero": -0.0, "top": 2**63 - 1}, "kinds"),
        # So does the wire text of NaN and of an int past 64 bits, outside a nested value.
        ({"score": math.nan, "big": 2**70}, {"tags": [1.5]}, "kinds"),
        # A tuple, and NaN in a nested value, would not come back so from JSON.
        ({}, {"tags": ["a", ("b", 1)], "score": math.nan}, "marshal"),
        # orjson writes an IntEnum; marshal refuses it.
        ({}, {"plan": Plan.PRO, "tags": ["a"]}, "pickle"),
    ],
)
def test_waiting_elements_come_back_as_they_were_whichever_packs_them(top, nested, packed_by):
    """Typed logs wait as their wire JSON and kinds where the C encoder wrote them and
    they give the logs back as they are, else packed (marshal for the logs the bulk
    encoder took, pickle for what marshal refuses); a failed one is reported as it was:
    same types, same values."""
    if packed_by == "kinds" and accelerated.speedups is None:
        packed_by = "marshal"  # no C encoder: nothing kept beside the wire JSON
    batcher = KeyedBatcher(preparer(), BatchLimits(), 1 << 20, GLOBAL)
    logs = [{"n": n, "ok": True, **top, "user": {"id": n, **nested}} for n in range(300)]
    batches, invalid = batches_of(batcher, logs)
    assert invalid == [] and sum(b.count for b in batches) == 300
    packed = batches[-1].origins
    assert isinstance(packed, PackedElements)
    last_run = packed._runs[-1]  # (the first logs teach the encoder their keys, one by one)
    assert kept_as(last_run) == packed_by
    # What the encoder kept is no container the collector counts while its batch waits.
    assert packed_by != "kinds" or not gc.is_tracked(last_run)
    for i in (150, 299):  # in packed runs
        element = packed[i]
        assert element is not logs[i] and repr(element) == repr(logs[i])  # nan == nan, in repr
        for got, sent in ((element, logs[i]), (element["user"], logs[i]["user"])):
            assert list(map(type, got.values())) == list(map(type, sent.values()))


def test_elements_other_than_their_logs_are_pickled_not_marshalled():
    """An element that is not itself its log (here it has its own tags, one a bytearray,
    which marshal would give back as bytes) is pickled, and reported as it was."""
    batcher = KeyedBatcher(preparer(), BatchLimits(), 1 << 20, GLOBAL)
    elements = [
        {"__tags__": {"raw": bytearray(b"x")}, "n": n, "user": {"id": n, "tags": ["a"]}}
        for n in range(300)
    ]
    batches, invalid = batches_of(batcher, elements)
    assert invalid == [] and [b.group.tags for b in batches] == [(("raw", "x"),)]
    [batch] = batches
    assert batch.origins._runs[-1][0] == 0x80  # a pickle
    reported = batch.element(299)
    assert reported == elements[299] and type(reported["__tags__"]["raw"]) is bytearray


def test_a_callable_that_raises_fails_its_element_alone_in_the_bulk_lane():
    batcher = KeyedBatcher(
        preparer(source=lambda log: 1 / log["n"] and "s"), BatchLimits(), 1 << 20, GLOBAL
    )
    batches, invalid = batches_of(batcher, [{"n": n} for n in range(5)])
    assert [(e["n"], err.key) for e, _, err in invalid] == [(0, "__source__")]
    assert "ZeroDivisionError" in str(invalid[0][2])
    assert sum(b.count for b in batches) == 4


def odd_source(log):
    """A source callable as users write them, with every way a value may go wrong."""
    n = log["n"]
    return {0: None, 1: ["a list"], 2: "x" * 200, 3: 1 / (n - 3)}.get(n, f"host-{n % 2}")


def test_a_source_per_element_is_called_once_each_and_each_bad_source_fails_alone():
    called = []

    def source(log):
        called.append(log["n"])
        return odd_source(log)

    batcher = KeyedBatcher(preparer(source=source), BatchLimits(), 1 << 20, GLOBAL)
    logs = [{"n": n, "user": {"id": n}} for n in range(300)]
    logs[150] = {"n": 150, "__source__": "own", "user": {"id": 150}}  # its own group
    batches, invalid = batches_of(batcher, logs)
    assert sorted(called) == list(range(300))  # once each
    assert sorted((e["n"], err.key) for e, _, err in invalid) == [
        (1, "__source__"),  # a list
        (2, "__source__"),  # over 128 bytes
        (3, "__source__"),  # the callable raised
    ]
    assert "ZeroDivisionError" in str(next(err for e, _, err in invalid if e["n"] == 3))
    counts = {b.group.source: b.count for b in batches}
    assert counts == {"": 1, "own": 1, "host-0": 147, "host-1": 148}
    [host_1] = [b for b in batches if b.group.source == "host-1"]
    assert [log["n"] for log in sent(host_1)] == [str(n) for n in range(5, 300, 2)]  # in order


def test_groups_that_fill_in_step_send_their_first_batches_at_different_sizes():
    """16 hosts interleaved would fill their batches in step and send them all at
    once, for ever; their first batches are sent a little earlier each (down to half),
    the next ones full."""
    batcher = KeyedBatcher(
        preparer(source=lambda log: f"host-{log['n'] % 16}", max_batch_logs=64),
        BatchLimits(max_logs=64),
        1 << 30,
        GLOBAL,
    )
    batches, _ = batches_of(batcher, [{"n": n, "user": {"id": n}} for n in range(64 * 16 * 3)])
    first, later = {}, []
    for batch in batches:
        if batch.group.source in first:
            later.append(batch.count)
        else:
            first[batch.group.source] = batch.count
    # 64 - 2k logs for the k-th group, reached a waiting run (8 logs of a host) at a time.
    assert set(first.values()) == {40, 48, 56, 64}
    assert set(later[: len(later) - 16]) == {64}  # all full but each group's last


def test_windowed_input_keeps_the_lane_closed_and_each_window():
    batcher = KeyedBatcher(preparer(topic="app"), BatchLimits(max_logs=100), 1 << 20)
    batches, _ = batches_of(batcher, [{"i": str(i)} for i in range(300)], windowed=True)
    assert all(b.logs is not None for b in batches)
    reported = batches[0].in_window(3, "failed")
    assert (reported.value, list(reported.windows)) == ("failed", [IntervalWindow(0, 10)])
    assert batches[0].element(3) == {"i": "3"}


def test_halves_are_new_batches_and_the_batch_is_unchanged():
    batcher = KeyedBatcher(preparer(topic="app"), BatchLimits(max_logs=8), 1 << 20, GLOBAL)
    for _ in range(2):  # the second round is encoded in bulk
        batches, _ = batches_of(batcher, [{"i": str(i)} for i in range(8)])
    [batch] = batches
    assert batch.logs is None
    joined = batch.joined
    first, second = batch.halves()
    assert batch.joined == joined and batch.count == 8  # immutable
    assert (first.count, second.count) == (4, 4)
    assert b",".join((first.joined, second.joined)) == joined
    assert second.element(0) == {"i": "4"}
    with pytest.raises(AttributeError):
        batch.joined = b""  # frozen


def test_logs_buffered_in_state_are_reported_as_sent():
    chunks = [b'{"a":"1"},{"a":"2"}', b'{"b":"3"}']
    window = WindowedValue(None, 5, [IntervalWindow(0, 10)])
    origins = SentChunks(chunks, [2, 1])
    batch = Batch(LogGroup.of("t"), b",".join(chunks), origins, window)
    assert (batch.count, batch.element(1), batch.element(2)) == (3, {"a": "2"}, {"b": "3"})
    assert batch.in_window(1, "x").timestamp == window.timestamp
    first, second = batch.halves()  # each log on its own again, as it was sent
    assert (first.joined, second.joined) == (b'{"a":"1"}', b'{"a":"2"},{"b":"3"}')
    assert second.element(1) == {"b": "3"}


def test_a_logs_own_fields_naming_the_constant_group_join_it_in_order():
    batcher = KeyedBatcher(preparer(topic="app"), BatchLimits(), 1 << 20, GLOBAL)
    logs = [{"n": n, "__topic__": "app"} if n % 3 == 0 else {"n": n} for n in range(30)]
    batches, invalid = batches_of(batcher, logs)
    assert invalid == [] and [b.group.topic for b in batches] == ["app"]
    assert [log["n"] for log in sent(batches[0])] == [str(n) for n in range(30)]
    assert [batches[0].element(i) for i in range(30)] == logs


@pytest.mark.parametrize("handover", [None, 128], ids=["added", "handed-over"])
@pytest.mark.parametrize("pure_python", [False, True])
def test_logs_naming_their_own_topic_source_or_tags_are_grouped_a_run_at_a_time(
    pure_python, handover, monkeypatch
):
    if pure_python:
        monkeypatch.setattr(accelerated, "speedups", None)
    batcher = KeyedBatcher(
        preparer(topic="app", tags={"env": "prod"}), BatchLimits(), 1 << 20, GLOBAL
    )
    logs = []
    for n in range(300):
        log = {"n": n, "ok": n % 2 == 0, "user": {"id": n}}
        if n % 3:
            log["__source__"] = f"host-{n % 4}"
        if n % 5 == 0:
            log["__topic__"] = "audit"
        if n % 7 == 0:  # its own tags join the configuration's (and override them)
            log["__tags__"] = {"pod": f"p-{n % 2}"} if n % 2 else {"env": "dev", "pod": "p"}
        logs.append(log)
    logs[7]["bad key"] = "x" * 200  # still written: spaces are no rule
    logs[8][""] = "an empty key"  # breaks a rule: fails alone; its run goes log by log
    logs[9]["__source__"] = "s" * 200  # a source over 128 bytes: fails
    logs[10]["__source__"] = ["not", "a", "str"]  # not hashable: the per-log path refuses it
    logs[11]["__source__"] = 42  # not a str: refused too
    logs[12]["__tags__"] = {"pod": 1}  # not a str: the per-log path writes it as text
    logs[13]["__tags__"] = None  # not a mapping: refused
    logs[16]["__source__"] = None  # its own None: no source (not the configuration's)
    batches, invalid = batches_of(batcher, logs, handover=handover)
    assert sorted((log["n"], str(e).split(":")[0]) for log, _, e in invalid) == [
        (8, "key ''"),
        (9, "key '__source__'"),
        (10, "key '__source__'"),
        (11, "key '__source__'"),
        (13, "key '__tags__'"),
    ]
    by_group: dict = {}
    for batch in batches:
        for i, log in enumerate(sent(batch)):
            key = (batch.group.topic, batch.group.source, batch.group.tags)
            by_group.setdefault(key, []).append(int(log["n"]))
            element = batch.element(i)  # the element as it was, its own fields included
            assert element == logs[int(log["n"])]
            assert not names_own_group(log)
    expected: dict = {}
    for log in logs:
        if log["n"] not in (8, 9, 10, 11, 13):
            tags = {"env": "prod", **{k: str(v) for k, v in log.get("__tags__", {}).items()}}
            source = log.get("__source__", "") or ""
            key = (log.get("__topic__", "app"), source, tuple(sorted(tags.items())))
            expected.setdefault(key, []).append(log["n"])
    # Each group's logs, and in order within a lane: logs that name the constant group
    # (source None) join the plain logs' runs after them (requests keep no order anyway).
    assert {key: sorted(ns) for key, ns in by_group.items()} == expected
    static = ("app", "", (("env", "prod"),))
    assert all(ns == sorted(ns) for key, ns in by_group.items() if key != static)
    assert ("app", "", (("env", "prod"), ("pod", "1"))) in expected
    if handover and not pure_python:  # grouped by their fields, then encoded in bulk
        assert sum(batch.count for batch in batches if batch.logs is None) >= 250


@pytest.mark.parametrize("handover", [None, 128], ids=["added", "handed-over"])
@pytest.mark.parametrize("pure_python", [False, True])
def test_a_logs_own_none_is_no_topic_or_source_not_the_configurations(
    pure_python, handover, monkeypatch
):
    if pure_python:
        monkeypatch.setattr(accelerated, "speedups", None)
    batcher = KeyedBatcher(preparer(topic="app", source="host"), BatchLimits(), 1 << 20, GLOBAL)
    logs = [
        {"n": n, "__source__": None} if n % 2 else {"n": n, "__topic__": None} for n in range(20)
    ]
    batches, invalid = batches_of(batcher, logs, handover=handover)
    assert invalid == []
    groups = {(b.group.topic, b.group.source): [int(log["n"]) for log in sent(b)] for b in batches}
    assert groups == {("app", ""): list(range(1, 20, 2)), ("", "host"): list(range(0, 20, 2))}


def source_of_any(element) -> str:
    """A source callable that takes any element, and raises for some."""
    if isinstance(element, dict) and "boom" in element:
        raise ValueError("no source for this one")
    return f"host-{len(repr(element)) % 3}"


def topic_of_any(element) -> str | None:
    """A topic callable that takes any element, and gives no topic (None) for some."""
    n = len(repr(element)) % 3
    return None if n == 0 else str(n)


def tags_of_any(element) -> dict | None:
    """A tags callable that takes any element, gives no tags for some, tags that are
    not str for others, and raises for some."""
    if isinstance(element, dict) and "boom" in element:
        raise ValueError("no tags for this one")
    n = len(repr(element)) % 4
    return None if n == 0 else {"t": str(n)} if n < 3 else {"t": n}


def mixed_elements() -> list:
    """Every kind of element the bulk lane meets, interleaved: typed plain dicts, logs
    naming their own group fields, a dict subclass, text, JSON lines, broken logs."""
    elements: list = []
    for n in range(900):
        kind = n % 13
        if kind == 3:
            element = {"n": n, "__source__": f"own-{n % 2}", "ok": True}
        elif kind == 5:
            element = line(n, n=n, text="ü ✓")
        elif kind == 7:
            element = f"plain text {n}"
        elif kind == 8:
            element = {"n": n, "": "an empty key"}
        elif kind == 9:
            element = {"n": n, "__topic__": "own", "__tags__": {"k": n % 3}}
        elif kind == 10:
            element = JsonLines(f'{{"n": {n}, "x": 1.5}}\n{{"n": {n}, "y": null}}\n'.encode())
        elif kind == 11:
            element = {"n": n, "boom": 1}
        elif kind == 12:
            element = {"n": n, "__tags__": {"own": "tags"}}
        else:
            element = {"n": n, "ok": n % 2 == 0, "ts": 1.25 + n, "user": {"id": n}, "m": "é"}
        elements.append(element)
    return elements


def outcome(batcher: KeyedBatcher, elements: list, handover: int | None):
    """What the batcher makes of ``elements``, added one by one (``handover`` None) or
    ``handover`` at a time: each log as sent with its group and what it reports, and
    the failures, in an order of their own (lanes may interleave groups differently)."""
    batches, invalid = [], []
    if handover is None:
        additions = [batcher.add(element, element) for element in elements]
    else:
        additions = [
            batcher.add_elements(elements[i : i + handover])
            for i in range(0, len(elements), handover)
        ]
    for added in [*additions, batcher.drain()]:
        if added is not None:
            batches += added.batches
            invalid += added.invalid
    for batch in batches:
        assert batch.count <= 40
        assert batch.group.overhead_bytes() + len(batch.joined) <= 3000
    logs = sorted(
        ((batch.group.topic, batch.group.source, batch.group.tags), log, repr(batch.element(i)))
        for batch in batches
        for i, log in enumerate(map(orjson.dumps, sent(batch)))
    )
    failed = sorted((repr(element), str(error)) for element, _, error in invalid)
    return logs, failed


@pytest.mark.parametrize("pure_python", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {"topic": "app"},
        {"source": source_of_any},
        {"topic": lambda e: str(len(repr(e)) % 2)},
        {"tags": tags_of_any},
        {"topic": topic_of_any, "source": source_of_any, "tags": tags_of_any},
    ],
    ids=["constant", "source callable", "topic callable", "tags callable", "all callables"],
)
@pytest.mark.parametrize("handover", [1, 7, 128, 900])
def test_elements_handed_over_together_make_what_each_added_alone_makes(
    handover, options, pure_python, monkeypatch
):
    if pure_python:
        monkeypatch.setattr(accelerated, "speedups", None)
    limits = BatchLimits(max_logs=40, max_bytes=3000)

    def batcher():
        return KeyedBatcher(preparer(**options), limits, 1 << 20, GLOBAL)

    elements = mixed_elements()
    logs, failed = outcome(batcher(), elements, handover)
    assert (logs, failed) == outcome(batcher(), elements, None)
    reasons = {reason.split(":")[0] for _, reason in failed}
    assert "key ''" in reasons  # the empty key fails alone, on both ways
    assert len(logs) + len(failed) == 900 + 900 // 13  # each JsonLines holds two logs
    assert any(source.startswith("own-") for (_, source, _), _, _ in logs)
    assert any(topic == "own" and tags for (topic, _, tags), _, _ in logs)
    assert any(("own", "tags") in tags for (_, _, tags), _, _ in logs)


@pytest.mark.parametrize("pure_python", [False, True])
def test_runs_that_fit_their_open_batch_are_placed_in_one_call_and_the_rest_left_in_order(
    pure_python, monkeypatch
):
    if pure_python:
        monkeypatch.setattr(accelerated, "speedups", None)
    groups = [LogGroup(source=f"host-{n}") for n in range(4)]
    opened = {group: _Open(room=100, full_at=10) for group in groups[:3]}
    opened[groups[2]].add_run(b'{"x":"' + b"y" * 80 + b'"}', 1, [{}], 90)  # 11 bytes left

    def run(group, count, size, kept="kinds", own=True):
        elements = [{"n": str(n)} for n in range(count)]
        joined = b",".join([b"x" * (size // count - 1)] * count)
        kinds = KEPT_RUN(wire=joined, kinds=b"s;" * count)
        kept_run = {"kinds": kinds, "wire": joined, "none": None}[kept]
        return (group, (elements, elements if own else list(elements))), joined, kept_run

    cases = [
        run(groups[0], 4, 20),  # 0: fits, kinds kept beside the wire: placed
        run(groups[1], 2, 8, kept="wire"),  # 1: all-str logs, their wire JSON kept: placed
        run(groups[3], 2, 8),  # 2: no open batch: left
        run(groups[1], 2, 8, kept="none"),  # 3: not kept: left
        run(groups[0], 2, 8, own=False),  # 4: contents apart from the elements: left
        run(groups[0], 2, 8),  # 5: its group has a run left before it: left (order)
        run(groups[2], 2, 14),  # 6: 13 bytes, over the room left: left
        run(groups[1], 8, 16),  # 7: would fill the batch (2 + 8 logs): left
    ]
    runs, encoded, kept = (list(column) for column in zip(*cases, strict=True))
    cost, left = place_kept_runs(opened, runs, encoded, kept)
    assert left == [2, 3, 4, 5, 6, 7]
    assert cost == (20 - 1 + 8) + (8 - 1)  # the wire JSON, and the kinds beside it
    first, second = opened[groups[0]], opened[groups[1]]
    assert (first.pieces, first.counts, first.count, first.loose) == ([encoded[0]], [4], 4, False)
    assert first.runs == [kept[0]] and first.nbytes == len(encoded[0]) - 3  # no commas
    assert first.cost == OPEN_BATCH_COST + 27
    assert (second.pieces, second.runs, second.count, second.cost) == (
        [encoded[1]],
        [encoded[1]],
        2,
        OPEN_BATCH_COST + 7,
    )
    assert opened[groups[2]].count == 1  # untouched
