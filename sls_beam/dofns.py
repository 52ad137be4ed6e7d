"""The sink's DoFns.

Bounded input is batched inside each bundle (no shuffle); unbounded input is
encoded, buffered per (group, shard) in Beam state with timers, then sent."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import orjson
from apache_beam import pvalue
from apache_beam.coders import BytesCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from sls_beam.batching import Batch, KeyedBatcher
from sls_beam.config import FAILED_TAG, SLSWriteConfig, display_data
from sls_beam.errors import InvalidLogError
from sls_beam.memo import Memo
from sls_beam.metrics import SinkMetrics
from sls_beam.preparing import LogPreparer
from sls_beam.records import FailedLog
from sls_beam.wire import BatchLimits, LogGroup
from sls_beam.writing import BatchWriter


def _invalid(metrics: SinkMetrics, element: Any, error: InvalidLogError):
    metrics.invalid_logs.inc()
    metrics.failed_logs.inc()
    return pvalue.TaggedOutput(FAILED_TAG, FailedLog.of(element, error.error_code, str(error)))


class SinkDoFn(beam.DoFn):
    """What the sink's DoFns share: config, metrics, display data."""

    def __init__(self, config: SLSWriteConfig):
        self._config = config
        self._metrics = SinkMetrics()

    def display_data(self):
        return display_data(self._config)


class WriteInBundleFn(SinkDoFn):
    """Bounded input: batch per group inside the bundle, send, flush at bundle end.

    Each log keeps its element's ``WindowedValue``, so a failed log is
    reported in its own window with its own timestamp.
    """

    _wrap = None  # origins are the elements' WindowedValues

    def setup(self):
        self._preparer = LogPreparer(self._config)
        self._writer = BatchWriter(self._config, self._metrics)

    def start_bundle(self):
        self._batcher = KeyedBatcher(
            self._config.limits(), self._config.max_buffered_bytes, self._wrap
        )

    def process(self, element, windowed_value=beam.DoFn.WindowedValueParam):
        return self._add(element, windowed_value, windowed_value.timestamp)

    def _add(self, element, origin, timestamp):
        try:
            group, data = self._preparer.prepare(element, timestamp)
        except InvalidLogError as e:
            return [_invalid(self._metrics, element, e)]
        closed = self._batcher.add(group, data, origin)
        if closed:
            return [output for batch in closed for output in self._writer.submit(batch)]
        return ()

    def finish_bundle(self):
        for batch in self._batcher.drain():
            yield from self._writer.submit(batch)
        yield from self._writer.flush()

    def teardown(self):
        self._writer.close()


class WriteGlobalInBundleFn(WriteInBundleFn):
    """The same for input in the global window, without event times: the common
    backfill. Asking Beam for each element's window costs ~1 µs a log, so this
    keeps the bare element and reports a failed one in the global window."""

    _wrap = staticmethod(GlobalWindows.windowed_value)

    def setup(self):
        super().setup()
        self._plain_group = self._preparer.static_group

    def start_bundle(self):
        super().start_bundle()
        # Plain dicts of the static group wait here and are encoded a batch at a time.
        self._plain: list[dict] = []

    def process(self, element):
        if element.__class__ is dict and self._plain_group is not None:
            plain = self._plain
            plain.append(element)
            if len(plain) >= self._config.max_batch_logs:
                return self._flush_plain()
            return ()
        return self._add(element, element, None)

    def _flush_plain(self) -> list:
        logs, self._plain = self._plain, []
        if not logs:
            return []
        joined = self._preparer.encode_many(logs)
        group = self._plain_group
        if joined is not None and self._config.limits().fits(
            0, 0, len(joined), group.overhead_bytes()
        ):
            return list(self._writer.submit(Batch.of_plain(group, logs, joined, self._wrap)))
        # Not all plain, or too large for one request: log by log, which names any problem.
        return [output for log in logs for output in self._add(log, log, None)]

    def finish_bundle(self):
        for output in self._flush_plain():  # finish_bundle must give windowed values
            if isinstance(output, pvalue.TaggedOutput) and not isinstance(
                output.value, WindowedValue
            ):
                output = pvalue.TaggedOutput(output.tag, GlobalWindows.windowed_value(output.value))
            yield output
        yield from super().finish_bundle()


class PrepareForStateFn(SinkDoFn):
    """Unbounded input, step 1: encode each log and key it by (group, shard)."""

    def setup(self):
        self._preparer = LogPreparer(self._config)
        # One shard per DoFn instance: a worker's logs share a key (full batches),
        # while several workers spread over up to num_shards keys.
        shard = random.randrange(self._config.num_shards)
        self._keys = Memo(lambda group: _group_key(group, shard))

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        try:
            group, data = self._preparer.prepare(element, timestamp)
        except InvalidLogError as e:
            yield _invalid(self._metrics, element, e)
            return
        yield self._keys[group], data


def _group_key(group: LogGroup, shard: int) -> str:
    return orjson.dumps([group.topic, group.source, group.tags, shard]).decode()


def _group_of_key(key: str) -> LogGroup:
    topic, source, tags, _ = orjson.loads(key)
    return LogGroup(topic, source, tuple(map(tuple, tags)))


class BufferInStateFn(beam.DoFn):
    """Unbounded input, step 2: buffer per key until count, bytes, time or window end.

    Flushes *before* a log that would overflow the batch (so batches respect
    both limits), when it holds ``max_batch_logs``, ``max_buffering_secs``
    after its first log (processing time, from the injectable ``clock``), and
    when the window closes.
    """

    LOGS = BagStateSpec("logs", BytesCoder())
    COUNT = ReadModifyWriteStateSpec("count", VarIntCoder())
    SIZE = ReadModifyWriteStateSpec("bytes", VarIntCoder())
    WINDOW_END = TimerSpec("window_end", TimeDomain.WATERMARK)
    STALE = TimerSpec("stale", TimeDomain.REAL_TIME)

    def __init__(self, limits: BatchLimits, max_buffering_secs: float, clock: Callable[[], float]):
        self._limits = limits
        self._max_buffering_secs = max_buffering_secs
        self._clock = clock
        self._overheads = Memo(lambda key: _group_of_key(key).overhead_bytes())

    def process(
        self,
        element,
        window=beam.DoFn.WindowParam,
        logs=beam.DoFn.StateParam(LOGS),
        count=beam.DoFn.StateParam(COUNT),
        size=beam.DoFn.StateParam(SIZE),
        window_end=beam.DoFn.TimerParam(WINDOW_END),
        stale=beam.DoFn.TimerParam(STALE),
    ):
        key, log = element
        n, nbytes = count.read() or 0, size.read() or 0
        overhead = self._overheads[key]
        if n and not self._limits.fits(n, nbytes, len(log), overhead):
            yield from self._flush(key, logs, count, size, stale)
            n = nbytes = 0
        if n == 0:
            window_end.set(window.max_timestamp())
            if self._max_buffering_secs:
                stale.set(self._clock() + self._max_buffering_secs)
        logs.add(log)
        count.write(n + 1)
        size.write(nbytes + len(log))
        if n + 1 >= self._limits.max_logs:
            yield from self._flush(key, logs, count, size, stale)

    @on_timer(WINDOW_END)
    @on_timer(STALE)
    def on_window_end_or_stale(
        self,
        key=beam.DoFn.KeyParam,
        logs=beam.DoFn.StateParam(LOGS),
        count=beam.DoFn.StateParam(COUNT),
        size=beam.DoFn.StateParam(SIZE),
        stale=beam.DoFn.TimerParam(STALE),
    ):
        yield from self._flush(key, logs, count, size, stale)

    @staticmethod
    def _flush(key, logs, count, size, stale):
        buffered = list(logs.read())
        if buffered:
            yield key, buffered
        logs.clear()
        count.clear()
        size.clear()
        stale.clear()


class SendFromStateFn(SinkDoFn):
    """Unbounded input, step 3: send each buffered batch."""

    def setup(self):
        self._writer = BatchWriter(self._config, self._metrics)
        self._groups = Memo(_group_of_key)

    def process(self, element, windowed_value=beam.DoFn.WindowedValueParam):
        key, logs = element
        group = self._groups[key]
        batch = Batch(group, logs, None, windowed_value, sum(map(len, logs)))
        yield from self._writer.submit(batch)

    def finish_bundle(self):
        yield from self._writer.flush()

    def teardown(self):
        self._writer.close()
