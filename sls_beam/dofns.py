"""The sink's DoFns: where Beam meets the batcher and the writer.

Bounded input is batched inside each bundle (no shuffle); unbounded input is
encoded, buffered per (group, shard) in Beam state with timers, then sent."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable, Generator, Iterator

import apache_beam as beam
import orjson
from apache_beam import pvalue
from apache_beam.coders import BytesCoder, FloatCoder, TupleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from sls_beam.batching import HANDOVER_ELEMENTS, Added, Batch, KeyedBatcher, SentChunks
from sls_beam.config import FAILED_TAG, SLSWriteConfig, display_data
from sls_beam.memo import MAX_REMEMBERED, Memo
from sls_beam.metrics import METRICS_NAMESPACE, SinkMetrics
from sls_beam.outputs import BatchWriter, refused
from sls_beam.preparing import LogPreparer
from sls_beam.wire import BatchLimits, LogGroup

#: This process's shard of the streaming path's keys (see PrepareForStateFn.setup).
_PROCESS_SHARD = random.randrange(1 << 30)

#: The WindowedValue of a log in the global window, without an event time.
_GLOBAL = GlobalWindows.windowed_value(None)
_GLOBAL_WINDOW = GlobalWindow()


class SinkDoFn(beam.DoFn):
    """What the sink's DoFns share: config, metrics, display data, and the ``process`` of
    global-window input without event times (a backfill, most streams).

    That ``process`` gathers dicts and hands them to the batcher
    :data:`HANDOVER_ELEMENTS` at a time (KeyedBatcher.add_elements, in
    ``_hand_over``): Beam calls ``process`` once an element, and one more Python
    call an element, with the batcher's checks of it, cost ~0.15 µs a log. Any
    other element goes at once, with those before it (a JsonLines may hold MiBs);
    the rest at the end of the bundle. Subclasses start each bundle with an empty
    ``_pending`` list.
    """

    def __init__(self, config: SLSWriteConfig):
        self._config = config
        self._metrics = SinkMetrics()
        self._pending: list = []

    def display_data(self):
        return display_data(self._config)

    def process(self, element):
        pending = self._pending
        pending.append(element)
        if len(pending) < HANDOVER_ELEMENTS and element.__class__ is dict:
            return ()
        return self._hand_over()

    def _hand_over(self) -> list | tuple:
        """Give the gathered elements to the global window's batcher; return the outputs."""
        raise NotImplementedError


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
        self._pending = []

    def _hand_over(self) -> list | tuple:
        pending, self._pending = self._pending, []
        added = self._batcher.add_elements(pending)
        return () if added is None else list(self._outputs_of(added))

    def process_timestamped(self, element, timestamp=beam.DoFn.TimestampParam):
        added = self._batcher.add(element, element, timestamp)
        return () if added is None else list(self._outputs_of(added))

    def process_windowed(self, element, windowed_value=beam.DoFn.WindowedValueParam):
        added = self._batcher.add(element, windowed_value, windowed_value.timestamp)
        return () if added is None else list(self._outputs_of(added))

    def finish_bundle(self):
        if self._pending:
            yield from self._hand_over()
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
        # As many closed batches as may be in flight wait for a request slot while the
        # worker goes on batching (many groups fill their batches at once).
        limit = self._config.max_in_flight
        yield from self._writer.collect(keep=limit, queued=limit)


class PrepareForStateFn(SinkDoFn):
    """Unbounded input, step 1: batch the bundle's logs per (group, window) into chunks,
    keyed by (group, shard), as the bundle path batches them (the bulk lane included).

    A chunk leaves when it is full (the batch limits) and at the end of the bundle,
    so the stateful step adds, counts and flushes chunks, not logs: a few state
    operations a chunk instead of five a log.
    """

    def __init__(self, config: SLSWriteConfig, windowed: bool):
        super().__init__(config)
        self._needs_time = bool(config.event_time_key) or config.signed
        if windowed:
            self.process = self.process_windowed
        elif self._needs_time:
            self.process = self.process_timestamped

    def setup(self):
        self._preparer = LogPreparer(self._config)
        # One shard per worker process: its logs share a key (full batches), while
        # several workers spread over up to num_shards keys. Per process, not per
        # instance: some runners make a new instance for every bundle.
        shard = _PROCESS_SHARD % self._config.num_shards
        self._keys = Memo(lambda group: _group_key(group, shard))
        self._limits = self._config.limits()

    def start_bundle(self):
        self._batchers: dict = {}  # window → [batcher, earliest element timestamp]
        self._global: KeyedBatcher | None = None  # the global window's, once made
        self._pending = []

    def _hand_over(self) -> list | tuple:
        """Global-window input, no event time wanted: one batcher, nothing asked of Beam
        (chunks, and failed logs, carry the minimum timestamp, as on the bundle path)."""
        pending, self._pending = self._pending, []
        batcher = self._global or self._global_batcher()
        added = batcher.add_elements(pending)
        return () if added is None else list(self._outputs_of(batcher, added))

    def process_timestamped(self, element, timestamp=beam.DoFn.TimestampParam):
        batcher = self._global or self._global_batcher()
        added = batcher.add(element, element, timestamp)
        return () if added is None else list(self._outputs_of(batcher, added))

    def process_windowed(self, element, windowed_value=beam.DoFn.WindowedValueParam):
        timestamp = windowed_value.timestamp
        event_time = timestamp if self._needs_time else None
        for window in windowed_value.windows:
            batcher = self._batcher_of(window, timestamp)
            added = batcher.add(element, element, event_time)
            if added is not None:
                yield from self._outputs_of(batcher, added)

    def finish_bundle(self):
        if self._pending:
            yield from self._hand_over()
        for batcher, _ in self._batchers.values():
            yield from self._outputs_of(batcher, batcher.drain())

    def _global_batcher(self) -> KeyedBatcher:
        self._global = self._batcher_of(_GLOBAL_WINDOW, MIN_TIMESTAMP)
        return self._global

    def _batcher_of(self, window, timestamp) -> KeyedBatcher:
        entry = self._batchers.get(window)
        if entry is None:
            entry = self._batchers[window] = [
                KeyedBatcher(
                    self._preparer,
                    self._limits,
                    self._config.max_buffered_bytes,
                    WindowedValue(None, timestamp, [window]),
                ),
                timestamp,
            ]
        elif timestamp < entry[1]:
            entry[1] = timestamp
        return entry[0]

    def _outputs_of(self, batcher: KeyedBatcher, added: Added) -> Iterator:
        for element, origin, error in added.invalid:
            failed = refused(self._metrics, element, error)
            yield pvalue.TaggedOutput(FAILED_TAG, batcher.in_window(origin, failed))
        for batch in added.batches:
            # At the earliest timestamp of the window's elements in this bundle: never
            # later than a log it holds, so the stateful step's window end waits for it.
            [window] = batch.window.windows
            earliest = self._batchers[window][1]
            chunk = (self._keys[batch.group], (batch.joined, batch.count))
            yield WindowedValue(chunk, earliest, [window])


def _group_key(group: LogGroup, shard: int) -> str:
    return orjson.dumps([group.topic, group.source, group.tags, shard]).decode()


def _group_of_key(key: str) -> LogGroup:
    topic, source, tags, _ = orjson.loads(key)
    return LogGroup(topic, source, tuple(map(tuple, tags)))


#: Logs and bytes this worker believes each (DoFn, key, window) has buffered in state:
#: shared by the worker's DoFn instances (a runner hands a key to one bundle at a
#: time), all forgotten once it holds as many entries as a memo (a forgotten count
#: only delays a flush to the key's timer).
_BUFFERED: dict = {}


class BufferInStateFn(beam.DoFn):
    """Unbounded input, step 2: buffer chunks per key until count, bytes, time or window end.

    State per (key, window): the bag of chunks, and ``armed`` (when the stale
    timer fires; infinity without a time limit). A key's first chunk in a
    bundle costs two state operations: reading ``armed`` and adding the chunk;
    its later chunks in the bundle, one (the bundle knows what it read or
    wrote: its state commits whole, or not at all). The stale timer is armed,
    and ``armed`` written, once a ``max_buffering_secs`` at most: a batch
    flushed for its count leaves the timer running, to flush the next batch on
    time; the window-end timer is set with the key's first chunk. A flush reads
    and clears the bag. The stale timer clears ``armed`` when it fires (it is
    no longer armed, whatever the worker's clock says), and the window-end
    timer too when it finds the bag empty: idle keys keep nothing.

    Each bundle reads ``armed`` afresh, because no chunk may be left in state
    without a timer: what a worker read in an earlier bundle may no longer hold
    (the timer fired on another worker; or the runner restored state from a
    checkpoint, as Flink does, while the worker process lived on).

    How many logs and bytes the bag holds is kept in the worker's memory, not in
    state: it decides *when* a batch leaves (full, or a chunk that would
    overflow it is split: its first logs fill the batch, the rest starts the
    next one). A flush sends whatever the bag holds, cut into batches within
    the limits, so a count gone stale (the key moved between workers, a bundle
    was retried, the entry was forgotten) changes only when logs leave, never a
    batch's size nor whether a log is sent; whether a log is sent at all rests
    on the timers, armed from state in the bundle that adds the chunk.

    Args:
      limits: the batch limits.
      max_buffering_secs: longest wait of a log in processing time (0: none).
      clock: processing-time clock, in seconds (injectable for tests).
    """

    CHUNKS = BagStateSpec("chunks", TupleCoder((BytesCoder(), VarIntCoder())))
    ARMED = ReadModifyWriteStateSpec("armed", FloatCoder())
    WINDOW_END = TimerSpec("window_end", TimeDomain.WATERMARK)
    STALE = TimerSpec("stale", TimeDomain.REAL_TIME)

    def __init__(self, limits: BatchLimits, max_buffering_secs: float, clock: Callable[[], float]):
        self._limits = limits
        self._max_buffering_secs = max_buffering_secs
        self._clock = clock
        self._id = uuid.uuid4().hex  # the same in every copy of this DoFn
        self._rooms = Memo(lambda key: limits.room(_group_of_key(key)))
        self._state_operations = Metrics.counter(METRICS_NAMESPACE, "state_operations")
        self._chunks = Metrics.counter(METRICS_NAMESPACE, "chunks_buffered")

    def start_bundle(self):
        self._deadlines: dict = {}  # (key, window) → `armed`, as this bundle read or wrote it

    def process(
        self,
        element,
        window=beam.DoFn.WindowParam,
        chunks=beam.DoFn.StateParam(CHUNKS),
        armed=beam.DoFn.StateParam(ARMED),
        window_end=beam.DoFn.TimerParam(WINDOW_END),
        stale=beam.DoFn.TimerParam(STALE),
    ):
        key, (joined, count) = element
        buffered = self._buffered(key, window)
        self._chunks.inc()
        now = self._clock()
        deadline = self._deadlines.get((key, window))
        if deadline is None:  # the key's first chunk in this bundle
            deadline = armed.read()
            self._counted(1)
            if deadline is None:  # its first in this window, or since it was idle
                window_end.set(window.max_timestamp())
                self._counted(1)
        if deadline is not None and deadline <= now and buffered[0]:
            yield from self._flush(key, window, chunks)  # logs whose timer is due leave now
        if deadline is None or deadline <= now:
            deadline = math.inf
            if self._max_buffering_secs:
                deadline = now + self._max_buffering_secs
                stale.set(deadline)
                self._counted(1)
            armed.write(deadline)
            self._counted(1)
        self._deadlines[key, window] = deadline
        room = self._rooms[key]
        n, nbytes = buffered
        if n and not self._limits.fits(n, nbytes, len(joined), room, count):
            # Fill the batch with the chunk's first logs, flush it, keep the rest.
            head, head_count, joined, count = self._split(joined, n, nbytes, room)
            if head_count:
                chunks.add((head, head_count))
                self._counted(1)
            yield from self._flush(key, window, chunks)
        chunks.add((joined, count))
        self._counted(1)
        buffered[0] += count
        buffered[1] += len(joined) - (count - 1)  # bytes without commas
        if buffered[0] >= self._limits.max_logs:
            yield from self._flush(key, window, chunks)

    def _buffered(self, key: str, window) -> list:
        """This worker's [logs, bytes] for the key's buffered batch (see the class)."""
        entry = (self._id, key, window)
        buffered = _BUFFERED.get(entry)
        if buffered is None:
            if len(_BUFFERED) >= MAX_REMEMBERED:
                _BUFFERED.clear()
            buffered = _BUFFERED[entry] = [0, 0]
        return buffered

    def _split(
        self, joined: bytes, n: int, nbytes: int, room: int
    ) -> tuple[bytes, int, bytes, int]:
        """The first logs of a chunk that fit beside ``n`` logs of ``nbytes``, and the rest
        (each part: JSON joined by commas, count). The logs are read back as sent and
        written again by orjson, which gives the same bytes (a split happens at most
        once a batch)."""
        logs = list(map(orjson.dumps, orjson.loads(b"[" + joined + b"]")))
        taken = 0
        for log in logs:
            if not self._limits.fits(n + taken, nbytes, len(log), room):
                break
            nbytes += len(log)
            taken += 1
        head, rest = logs[:taken], logs[taken:]
        return b",".join(head), len(head), b",".join(rest), len(rest)

    @on_timer(STALE)
    def on_stale(
        self,
        key=beam.DoFn.KeyParam,
        window=beam.DoFn.WindowParam,
        chunks=beam.DoFn.StateParam(CHUNKS),
        armed=beam.DoFn.StateParam(ARMED),
        window_end=beam.DoFn.TimerParam(WINDOW_END),
    ):
        sent = yield from self._flush(key, window, chunks)
        armed.clear()  # the next chunk arms the timer again
        self._deadlines.pop((key, window), None)
        self._counted(1)
        if not sent:  # nothing came since the last batch: the key keeps nothing in state
            window_end.clear()
            self._counted(1)

    @on_timer(WINDOW_END)
    def on_window_end(
        self,
        key=beam.DoFn.KeyParam,
        window=beam.DoFn.WindowParam,
        chunks=beam.DoFn.StateParam(CHUNKS),
    ):
        yield from self._flush(key, window, chunks)
        _BUFFERED.pop((self._id, key, window), None)  # the window is over

    def _flush(self, key: str, window, chunks) -> Generator[tuple[str, list], None, bool]:
        """Send what the bag holds, as batches within the limits, and empty it;
        whether it held anything."""
        buffered = list(chunks.read())
        self._counted(1)
        self._buffered(key, window)[:] = (0, 0)
        if not buffered:
            return False
        chunks.clear()
        self._counted(1)
        yield from ((key, batch) for batch in self._batches(buffered, self._rooms[key]))
        return True

    def _batches(self, buffered: list, room: int) -> Iterator[list]:
        """Whole chunks, in order, cut into batches within the limits (one batch, unless
        this worker's count was stale)."""
        batch, n, nbytes = [], 0, 0
        for joined, count in buffered:
            if batch and not self._limits.fits(n, nbytes, len(joined), room, count):
                yield batch
                batch, n, nbytes = [], 0, 0
            batch.append((joined, count))
            n, nbytes = n + count, nbytes + len(joined) - (count - 1)
        yield batch

    def _counted(self, operations: int) -> None:
        self._state_operations.inc(operations)


class SendFromStateFn(SinkDoFn):
    """Unbounded input, step 3: send each buffered batch."""

    def setup(self):
        self._writer = BatchWriter(self._config, self._metrics)
        self._groups = Memo(_group_of_key)

    def process(self, element, windowed_value=beam.DoFn.WindowedValueParam):
        key, buffered = element
        chunks, counts = zip(*buffered, strict=True)
        origins = SentChunks(chunks, counts)
        batch = Batch(self._groups[key], chunks, origins, windowed_value)
        self._writer.submit(batch)
        yield from self._writer.collect(keep=self._config.max_in_flight)

    def finish_bundle(self):
        yield from self._writer.collect(keep=0)

    def teardown(self):
        self._writer.close()
