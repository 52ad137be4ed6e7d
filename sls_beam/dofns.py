"""The sink's DoFns: where Beam meets the batcher and the writer.

Bounded input is batched inside each bundle (no shuffle); unbounded input is
encoded, buffered per (group, shard) in Beam state with timers, then sent."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

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

from sls_beam.batching import Added, Batch, KeyedBatcher, SentLogs
from sls_beam.config import FAILED_TAG, SLSWriteConfig, display_data
from sls_beam.errors import InvalidLogError
from sls_beam.memo import Memo
from sls_beam.metrics import SinkMetrics
from sls_beam.outputs import BatchWriter, refused
from sls_beam.preparing import LogPreparer
from sls_beam.wire import BatchLimits, LogGroup

#: The WindowedValue of a log in the global window, without an event time.
_GLOBAL = GlobalWindows.windowed_value(None)


class SinkDoFn(beam.DoFn):
    """What the sink's DoFns share: config, metrics, display data."""

    def __init__(self, config: SLSWriteConfig):
        self._config = config
        self._metrics = SinkMetrics()

    def display_data(self):
        return display_data(self._config)


class WriteInBundleFn(SinkDoFn):
    """Bounded input: batch per group inside the bundle, send, flush at bundle end.

    A failed log is reported in its own window, with its own timestamp.
    Asking Beam for each element's window costs ~1 µs a log, so input in the
    global window without event times (the common backfill) uses a
    ``process`` that asks for nothing, and its failed logs are reported in
    the global window; only ``windowed`` input pays for
    ``WindowedValueParam`` (Beam reads ``process`` off the instance).

    Args:
      config: the sink's configuration.
      windowed: the input has windows or event times that failures must keep.
    """

    def __init__(self, config: SLSWriteConfig, windowed: bool):
        super().__init__(config)
        self._windowed = windowed
        if windowed:
            self.process = self.process_windowed
        elif config.signed:  # a signed log's __time__ is its element's timestamp, when set
            self.process = self.process_timestamped

    def setup(self):
        self._preparer = LogPreparer(self._config)
        self._writer = BatchWriter(self._config, self._metrics)

    def start_bundle(self):
        self._batcher = KeyedBatcher(
            self._preparer,
            self._config.limits(),
            self._config.max_buffered_bytes,
            window=None if self._windowed else _GLOBAL,
        )

    def process(self, element):
        added = self._batcher.add(element, element)
        return () if added is None else list(self._outputs_of(added))

    def process_timestamped(self, element, timestamp=beam.DoFn.TimestampParam):
        added = self._batcher.add(element, element, timestamp)
        return () if added is None else list(self._outputs_of(added))

    def process_windowed(self, element, windowed_value=beam.DoFn.WindowedValueParam):
        added = self._batcher.add(element, windowed_value, windowed_value.timestamp)
        return () if added is None else list(self._outputs_of(added))

    def finish_bundle(self):
        yield from self._outputs_of(self._batcher.drain())
        yield from self._writer.collect(keep=0)  # a bundle ends once all are acknowledged

    def teardown(self):
        self._writer.close()

    def _outputs_of(self, added: Added) -> Iterator:
        for element, origin, error in added.invalid:
            failed = refused(self._metrics, element, error)
            yield pvalue.TaggedOutput(FAILED_TAG, self._batcher.in_window(origin, failed))
        for batch in added.batches:
            self._writer.submit(batch)
        yield from self._writer.collect(keep=self._config.max_in_flight)


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
            yield pvalue.TaggedOutput(FAILED_TAG, refused(self._metrics, element, e))
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
        self._rooms = Memo(lambda key: limits.room(_group_of_key(key)))

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
        if n and not self._limits.fits(n, nbytes, len(log), self._rooms[key]):
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
        self._writer.submit(Batch.of(self._groups[key], logs, SentLogs(logs), windowed_value))
        yield from self._writer.collect(keep=self._config.max_in_flight)

    def finish_bundle(self):
        yield from self._writer.collect(keep=0)

    def teardown(self):
        self._writer.close()
