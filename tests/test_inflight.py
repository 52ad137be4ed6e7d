"""InFlightSender: batches compressed on a helper thread, written and answered in order."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from apache_beam.transforms.window import GlobalWindows

from sls_beam.batching import Batch
from sls_beam.client import WebTrackingClient
from sls_beam.config import SLSWriteConfig
from sls_beam.emulator import Emulator, FaultPlan
from sls_beam.inflight import InFlightSender
from sls_beam.metrics import SinkMetrics
from sls_beam.outputs import BatchWriter
from sls_beam.wire import LogGroup
from tests.helpers import LOGSTORE, PROJECT

GLOBAL = GlobalWindows.windowed_value(None)


def batch_of(topic: str, logs: list[bytes]) -> Batch:
    return Batch.of(LogGroup(topic=topic), list(logs), list(range(len(logs))))


@contextmanager
def sender_to(endpoint: str, compression: str = "lz4") -> Iterator[InFlightSender]:
    with WebTrackingClient(endpoint, PROJECT, LOGSTORE) as client:
        sender = InFlightSender(client, compression)
        try:
            yield sender
        finally:
            sender.close()


@pytest.mark.parametrize("compression", ["lz4", "deflate", "none"])
def test_outcomes_come_back_in_submission_order_with_their_sizes(emulator, compression):
    batches = [
        batch_of(f"t{i}", [b'{"i":"%d","n":"%d"}' % (i, n) for n in range(i)]) for i in (3, 1, 5)
    ]
    with sender_to(emulator.endpoint, compression) as sender:
        for batch in batches:
            sender.submit(batch)
        outcomes = sender.completed(keep=0)
    assert [o.batch for o in outcomes] == batches
    assert all(o.error is None and o.result.attempts == 1 for o in outcomes)
    stats = emulator.stats()
    assert sum(o.raw_bytes for o in outcomes) == stats["raw_bytes"]
    assert sum(o.sent_bytes for o in outcomes) == stats["body_bytes"]
    stored = [(log.topic, log.contents["i"]) for log in emulator.logs()]
    assert sorted(stored) == sorted((f"t{i}", str(i)) for i in (3, 1, 5) for _ in range(i))


def test_completed_keeps_the_newest_requests_unanswered(emulator):
    with sender_to(emulator.endpoint, "lz4") as sender:
        for i in range(3):
            sender.submit(batch_of(f"t{i}", [b'{"a":"1"}']))
        first = sender.completed(keep=2)
        rest = sender.completed(keep=0)
    assert [o.batch.group.topic for o in first] == ["t0"]
    assert [o.batch.group.topic for o in rest] == ["t1", "t2"]


def test_a_refused_batch_comes_back_as_its_error(emulator):
    with sender_to(emulator.endpoint, "lz4") as sender:
        sender.submit(batch_of("bad", [b'{"n":5}']))
        sender.submit(batch_of("good", [b'{"n":"5"}']))
        refused, accepted = sender.completed(keep=0)
    assert refused.result is None
    assert (refused.error.status, refused.error.error_code) == (400, "PostBodyInvalid")
    assert accepted.error is None
    assert [log.topic for log in emulator.logs()] == ["good"]


def test_close_drops_requests_awaiting_answers_without_reading_them():
    with Emulator(faults=FaultPlan(latency_secs=60)) as emulator:
        with sender_to(emulator.endpoint) as sender:
            sender.submit(batch_of("a", [b'{"a":"1"}']))
            sender.submit(batch_of("b", [b'{"b":"1"}']))
            closing = threading.Thread(target=sender.close)
            closing.start()
            closing.join(timeout=20)  # reading either answer would take 60 s
            assert not closing.is_alive()
            assert sender.completed(keep=0) == []


def windowed_batch(topic: str) -> Batch:
    """A batch of one log in the global window, as the sink's batches are."""
    return Batch.of(LogGroup(topic=topic), [b'{"a":"1"}'], [None], GLOBAL)


def writer_to(endpoint: str) -> BatchWriter:
    config = SLSWriteConfig(endpoint=endpoint, project=PROJECT, logstore=LOGSTORE, max_in_flight=1)
    return BatchWriter(config, SinkMetrics())


def test_closed_batches_may_queue_for_a_slot_without_stalling_the_caller():
    """Batches that fill at once (many groups) may queue: collect() returns without
    waiting for an answer (each takes 60 s here), one on the wire, two queued."""
    with Emulator(faults=FaultPlan(latency_secs=60)) as emulator:
        writer = writer_to(emulator.endpoint)
        for i in range(3):
            writer.submit(windowed_batch(f"t{i}"))
        outputs: list = []
        collecting = threading.Thread(
            target=lambda: outputs.extend(writer.collect(keep=1, queued=2))
        )
        collecting.start()
        collecting.join(timeout=20)
        try:
            assert not collecting.is_alive() and outputs == []
            assert (writer._sender.in_flight, len(writer._waiting)) == (1, 2)
        finally:
            writer.close()


def test_collect_waits_for_answers_until_no_more_than_allowed_are_queued(emulator):
    writer = writer_to(emulator.endpoint)
    try:
        for i in range(3):
            writer.submit(windowed_batch(f"t{i}"))
        writer.submit(windowed_batch("t3"))
        outputs = list(writer.collect(keep=1, queued=1))
        assert len(outputs) == 2 and (writer._sender.in_flight, len(writer._waiting)) == (1, 1)
        assert len(list(writer.collect(keep=0))) == 2
    finally:
        writer.close()
    assert sorted(log.topic for log in emulator.logs()) == ["t0", "t1", "t2", "t3"]
