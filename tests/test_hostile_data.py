"""Ordinary-but-awkward data and raising user code never kill a pipeline or balloon a worker.

Each awkward element either lands, written by the README's rules, or goes to
``failed`` with a reason naming the field and the rule or exception; its
neighbours land in every case.
"""

from __future__ import annotations

import json
import re
import time
import tracemalloc

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from sls_beam import WriteToSLS
from sls_beam.batching import KeyedBatcher
from sls_beam.config import SLSWriteConfig
from sls_beam.emulator import Emulator, FaultPlan
from sls_beam.memo import Memo
from sls_beam.preparing import LogPreparer
from sls_beam.wire import BatchLimits, LogEncoder, LogGroup
from tests.beam_helpers import FakeClock, run
from tests.helpers import LOGSTORE, PROJECT
from tests.odd_values import MUST_FAIL, odd_element, raising_topic

COUNT = 40

MODES = {
    "bundle": {"mode": "bundle"},
    "bundle-windowed": {"mode": "bundle", "event_time_key": "event_time"},
    "stateful": {"mode": "stateful", "clock": FakeClock()},
}


def failure_summary(failed) -> str:
    log = failed.log
    if failed.log_is_excerpt:
        n = int(re.search(r"'n': (\d+)", log).group(1))
    else:
        n = log["n"]
    return json.dumps([n, failed.error_code, failed.error_message, failed.log_is_excerpt])


@pytest.mark.parametrize("on_send_failure", ["raise", "output"])
@pytest.mark.parametrize("mode", MODES)
def test_awkward_values_land_or_fail_alone_in_every_mode(emulator, tmp_path, mode, on_send_failure):
    out = tmp_path / "failed"

    def build(p):
        result = (
            p
            | beam.Create(range(COUNT))
            | beam.Map(odd_element)  # made on the worker: nothing crosses a coder first
            | WriteToSLS(
                emulator.endpoint,
                PROJECT,
                LOGSTORE,
                topic=raising_topic,
                on_send_failure=on_send_failure,
                **MODES[mode],
            )
        )
        (
            result.failed
            | beam.Map(failure_summary)
            | beam.io.WriteToText(str(out), shard_name_template="")
        )

    run(build)
    failed = {row[0]: row[1:] for row in map(json.loads, out.read_text().splitlines())}
    assert set(failed) == set(MUST_FAIL)
    for n, words in MUST_FAIL.items():
        code, message, is_excerpt = failed[n]
        assert code == "InvalidLog" and words in message, (n, message)
        assert is_excerpt == (n == 8)
    stored = {int(log.contents["n"]): log for log in emulator.logs(PROJECT, LOGSTORE)}
    assert set(stored) == set(range(COUNT)) - set(MUST_FAIL)
    assert stored[1].contents["big"] == "1" + "0" * 5000  # BIG_INT = 10**5000
    assert stored[2].contents == {"level": "warn", "n": "2"}
    assert stored[3].tags == {"ids": "[1,2]"}
    assert stored[4].contents["point"] == "[1,2.5]"
    assert stored[9].contents["ratio"] == repr(9 / 7) and stored[9].contents["ok"] == "false"


def tags_by_flag(log):
    return {"flag": log["flag"]}


def test_tag_values_are_written_by_the_value_rules_whatever_compares_equal(emulator):
    flags = [True, 1, 1.0, False, 0, "1", True, 0]

    def build(p):
        (
            p
            | beam.Create([{"i": i, "flag": flag} for i, flag in enumerate(flags)])
            | WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE, tags=tags_by_flag)
        )

    run(build)
    tags = {int(log.contents["i"]): log.tags["flag"] for log in emulator.logs(PROJECT, LOGSTORE)}
    assert [tags[i] for i in range(len(flags))] == [
        "true",
        "1",
        "1.0",
        "false",
        "0",
        "1",
        "true",
        "0",
    ]


def test_a_list_from_a_tags_callable_is_a_json_tag_value(emulator):
    def build(p):
        (
            p
            | beam.Create([{"i": 1}, {"i": 2}])
            | WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE, tags=list_tags)
        )

    run(build)
    assert sorted(log.tags["ids"] for log in emulator.logs(PROJECT, LOGSTORE)) == ["[1]", "[2]"]


def list_tags(log):
    return {"ids": [log["i"]]}


def test_two_keys_that_give_one_field_are_an_error_naming_both():
    encoder = LogEncoder(event_time_key="event_time")
    with pytest.raises(ValueError, match="'__time__' and 'event_time' give the same field"):
        encoder.encode({"__time__": 1700000000, "event_time": "x", "msg": "m"})


def test_many_groups_keep_memory_bounded_and_eviction_cheap():
    """100k distinct topics through the preparer and the batcher of one long-lived
    DoFn: what they hold stays near max_buffered_bytes (growing with the
    groups it was ~188 MiB), and closing a batch to make room does not scan
    every open group (that took 25-38 ms a log)."""
    config = SLSWriteConfig(
        endpoint="http://127.0.0.1:1",
        project=PROJECT,
        logstore=LOGSTORE,
        topic=topic_of_element,
        max_buffered_bytes=4 << 20,
    )
    batcher = KeyedBatcher(LogPreparer(config), BatchLimits(), config.max_buffered_bytes)
    closed = 0
    tracemalloc.start()
    started = time.monotonic()
    try:
        for n in range(100_000):
            added = batcher.add({"n": n, "msg": "hello"}, None)
            closed += len(added.batches) if added else 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    assert closed > 90_000  # nearly every group was closed early, to make room
    assert batcher.buffered_bytes <= config.max_buffered_bytes
    assert peak < 32 << 20  # the buffer's 4 MiB, the memo of 10k groups, and slack
    assert elapsed < 120  # a ceiling, not a benchmark: a scan per log would take hours


def topic_of_element(log):
    return f"topic-{log['n']}"


def test_a_memo_forgets_rather_than_grows():
    made = []
    memo = Memo(lambda key: made.append(key) or key * 2, limit=100)
    for key in range(1000):
        assert memo[key] == key * 2
    assert len(memo) <= 100 and len(made) == 1000
    assert memo[999] == 1998 and len(made) == 1000  # still remembered: not made again


def test_a_group_owns_its_derived_bytes():
    group = LogGroup.of("t", "s", {"k": True})
    assert group.tags == (("k", "true"),)
    assert group.body_suffix() is group.body_suffix()
    assert group.overhead_bytes() == len(b'{"__logs__":[') + len(group.body_suffix())


def test_split_halves_never_put_more_than_max_in_flight_requests_on_the_wire(caplog):
    logs = [{"n": n, ("bad-key" if n % 97 == 0 else "good"): "v"} for n in range(1000)]
    with Emulator(strict_keys=True, faults=FaultPlan(latency_secs=0.01)) as emulator:

        def build(p):
            (
                p
                | beam.Create(logs)
                | WriteToSLS(
                    emulator.endpoint,
                    PROJECT,
                    LOGSTORE,
                    max_batch_logs=200,
                    max_in_flight=2,
                    on_send_failure="output",
                )
            )

        _, metrics = run(build)
        stats = emulator.stats()
    assert metrics["split_batches"] > 10  # the halves really queued up behind each other
    assert metrics["failed_logs"] == len([n for n in range(1000) if n % 97 == 0])
    assert stats["logs"] == 1000 - metrics["failed_logs"]
    assert stats["max_concurrent_requests"] <= 2
    assert "Connection pool is full" not in caplog.text


def test_quota_waits_of_a_request_that_failed_are_counted():
    with Emulator(faults=FaultPlan({"quota": 1.0})) as emulator:

        def build(p):
            (
                p
                | beam.Create([{"msg": "over quota"}])
                | WriteToSLS(
                    emulator.endpoint,
                    PROJECT,
                    LOGSTORE,
                    max_attempts=3,
                    backoff_base_secs=0.2,
                    backoff_max_secs=0.4,
                    on_send_failure="output",
                )
            )

        _, metrics = run(build)
    assert metrics["failed_logs"] == 1 and metrics["retries"] == 2
    assert metrics["throttled_msecs"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_hostile_json_lines_fail_alone_and_their_neighbours_land(emulator, mode):
    from sls_beam import JsonLines

    hostile = [
        b"[" * 100_000 + b"]" * 100_000,  # nested past any parser's depth
        b'{"deep":' + b"[" * 300 + b"]" * 300 + b"}",  # read, but too deep to write back
        b'{"big":"' + b"x" * 1_100_000 + b'"}',  # a value over 1 MiB
        b'{"nul":"a\x00b"}',  # a raw control character: not JSON
        b'{"bad":"\xc3\x28"}',  # not UTF-8
        b"\xef\xbb\xbf" + b'{"bom":1}',  # a byte-order mark
        b'{"a":1}' * 3,  # more after the object
    ]
    lines = []
    for n in range(COUNT):
        lines.append(json.dumps({"n": n, "msg": "é中😀"}).encode())
        lines.append(hostile[n % len(hostile)])

    def build(p):
        result = (
            p
            | beam.Create([JsonLines(b"\n".join(lines[:40])), JsonLines(b"\n".join(lines[40:]))])
            | WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE, **MODES[mode])
        )
        # 40 hostile lines, 7 kinds in turn: 6 each of the first 5 kinds, 5 of the last two.
        assert_that(
            result.failed | beam.Map(lambda f: f.error_code) | beam.combiners.Count.PerElement(),
            equal_to([("NotJson", 6 + 6 + 6 + 5 + 5), ("InvalidLog", 6 + 6)]),
        )

    _, metrics = run(build)
    stored = emulator.logs(PROJECT, LOGSTORE)
    assert sorted(int(log.contents["n"]) for log in stored) == list(range(COUNT))
    assert metrics["failed_logs"] == COUNT
