"""``WriteToSLS``: the Beam PTransform that writes logs to SLS web tracking.

Data flows one way::

    elements ──prepare──> (group, log JSON) ──batch──> Batch ──send──> written / failed
                 │                                                       (request ids,
                 └─ logs that break a rule ─────────────────────────────> FailedLog)

Bounded input is batched inside each bundle (no shuffle); unbounded input is
buffered per (group, shard) in Beam state with timers, so latency is bounded
by ``max_buffering_secs`` while batches fill up under load.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import apache_beam as beam
import orjson
from apache_beam import pvalue
from apache_beam.coders import BytesCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.display import DisplayDataItem
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import GlobalWindows
from apache_beam.typehints.row_type import RowTypeConstraint
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from sls_beam.batching import Batch, KeyedBatcher
from sls_beam.client import WebTrackingClient, resolve_target
from sls_beam.errors import InvalidLogError
from sls_beam.retry import CONTENT_ERROR_CODES, RetryPolicy
from sls_beam.sending import InFlightSender, Outcome
from sls_beam.wire import (
    COMPRESSIONS,
    SERVICE_MAX_LOGS,
    SERVICE_MAX_RAW_BYTES,
    BatchLimits,
    LogEncoder,
    LogGroup,
    check_log_size,
    not_a_mapping,
)

#: Beam Metrics namespace of every counter and distribution of the sink.
METRICS_NAMESPACE = "sls_beam"
WRITTEN_TAG = "written"
FAILED_TAG = "failed"
MODES = ("auto", "bundle", "stateful")
ON_SEND_FAILURE = ("raise", "output")
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024

Constant = Any  # a constant, or a callable of the element returning one


@dataclass(frozen=True)
class FailedLog:
    """A log that was not written, with the reason.

    Attributes:
      log: the original element; for logs buffered in state (streaming mode)
        and refused by the service, the log as it was sent (a dict of str).
      error_code: ``InvalidLog`` for a log that breaks a rule, else the
        service's errorCode (``PostBodyInvalid``, ``ServerBusy``, …).
      error_message: what was wrong, naming the key and the rule.
      status: the HTTP status, if the service answered.
      request_id: the service's ``x-log-requestid``, if it answered.
    """

    log: Any
    error_code: str
    error_message: str
    status: int | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class WrittenRequest:
    """One request the service accepted (the ``written`` output).

    Attributes:
      topic, source: the request's group.
      log_count: logs in the request.
      raw_bytes: JSON size before compression (bytes).
      sent_bytes: body size on the wire (bytes).
      request_id: the service's ``x-log-requestid``.
      attempts: times the request was sent (1 = no retry).
    """

    topic: str
    source: str
    log_count: int
    raw_bytes: int
    sent_bytes: int
    request_id: str | None
    attempts: int


class WriteToSLSResult(NamedTuple):
    """What :class:`WriteToSLS` returns: two PCollections.

    Attributes:
      written: a :class:`WrittenRequest` per accepted request.
      failed: a :class:`FailedLog` per log that was not written.
    """

    written: beam.PCollection
    failed: beam.PCollection


@dataclass(frozen=True)
class SLSWriteConfig:
    """Everything a worker needs to write: validated once, pickled to workers.

    See :class:`WriteToSLS` for the meaning of each field.
    """

    endpoint: str
    project: str
    logstore: str
    topic: Constant = ""
    source: Constant = ""
    tags: Constant = None
    compression: str = "lz4"
    max_batch_logs: int = SERVICE_MAX_LOGS
    max_batch_bytes: int = SERVICE_MAX_RAW_BYTES
    max_buffering_secs: float = 2.0
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    max_in_flight: int = 4
    event_time_key: str | None = None
    timeout_secs: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_send_failure: str = "raise"
    mode: str = "auto"
    num_shards: int = 16
    verify: bool | str = True
    clock: Callable[[], float] = time.time

    def __post_init__(self):
        resolve_target(self.endpoint, self.project, self.logstore)
        self.limits()  # validates the batch limits
        LogEncoder(self.event_time_key)  # validates the event time key
        checks = [
            (self.compression in COMPRESSIONS, f"compression must be one of {COMPRESSIONS}"),
            (self.mode in MODES, f"mode must be one of {MODES}"),
            (self.on_send_failure in ON_SEND_FAILURE, f"on_send_failure: one of {ON_SEND_FAILURE}"),
            (self.max_in_flight >= 1, "max_in_flight must be at least 1"),
            (self.num_shards >= 1, "num_shards must be at least 1"),
            (self.max_buffering_secs >= 0, "max_buffering_secs must not be negative"),
            (
                self.max_buffered_bytes >= self.max_batch_bytes,
                "max_buffered_bytes must be at least max_batch_bytes",
            ),
            (self.timeout_secs > 0, "timeout_secs must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if not any(map(callable, (self.topic, self.source, self.tags))):
            LogGroup.of(self.topic, self.source, self.tags)  # constants: fail at construction

    def limits(self) -> BatchLimits:
        return BatchLimits(self.max_batch_logs, self.max_batch_bytes)

    def make_client(self) -> WebTrackingClient:
        return WebTrackingClient(
            self.endpoint,
            self.project,
            self.logstore,
            timeout_secs=self.timeout_secs,
            retry=self.retry,
            verify=self.verify,
            pool_size=self.max_in_flight,
        )


def element_to_log(element: Any) -> Any:
    """The log (a mapping) an element stands for.

    Mappings are logs as they are; ``beam.Row``, NamedTuples and dataclass
    instances map field names to values (fields that are None are left
    out, as absent from the record); ``str`` and ``bytes`` become
    ``{"content": element}``. Anything else is returned unchanged, for the
    encoder to refuse with a clear error.
    """
    if isinstance(element, Mapping):
        return element
    if isinstance(element, (str, bytes)):
        return {"content": element}
    if isinstance(element, beam.Row):
        fields = element.as_dict()
    elif hasattr(element, "_asdict"):
        fields = element._asdict()
    elif dataclasses.is_dataclass(element) and not isinstance(element, type):
        fields = {f.name: getattr(element, f.name) for f in dataclasses.fields(element)}
    else:
        return element
    # A schema field that is None is absent from this record (Beam YAML gives every row
    # every field of the schema): leave it out rather than send "null".
    return {name: value for name, value in fields.items() if value is not None}


def format_event_time(timestamp: Timestamp) -> str:
    """Unix seconds, with a fraction only when there is one (``1700000000.25``)."""
    seconds, micros = divmod(timestamp.micros, 1_000_000)
    return str(seconds) if not micros else f"{seconds}.{micros:06d}".rstrip("0")


#: Fields of a log that set its group (and are removed from its content).
_OWN_GROUP_FIELDS = frozenset({"__topic__", "__source__", "__tags__"})


class _LogPreparer:
    """Element → (group, encoded log): the per-element work, on the caller's thread."""

    def __init__(self, config: SLSWriteConfig):
        self._config = config
        self._encoder = LogEncoder(config.event_time_key, config.max_batch_bytes)
        self._max_bytes = config.max_batch_bytes
        dynamic = any(map(callable, (config.topic, config.source, config.tags)))
        self._static_group = (
            None if dynamic else LogGroup.of(config.topic, config.source, config.tags)
        )
        self._groups: dict[tuple, LogGroup] = {}
        self._overheads: dict[LogGroup, int] = {}

    def prepare(self, element: Any, timestamp: Timestamp | None = None) -> tuple[LogGroup, bytes]:
        """Raises InvalidLogError for a log (or its topic/source/tags) that breaks a rule.

        ``timestamp`` (the element's) fills ``event_time_key`` when set.
        """
        if element.__class__ is dict:
            log = element
        else:
            log = element_to_log(element)
            if not isinstance(log, Mapping):
                raise not_a_mapping(log)
        group = self._static_group
        if group is None or "__topic__" in log or "__source__" in log or "__tags__" in log:
            group, log = self._group_of(element, log)
        event_time = None
        if self._encoder.event_time_key and timestamp is not None and timestamp > MIN_TIMESTAMP:
            event_time = format_event_time(timestamp)
        data = self._encoder.encode(log, event_time)
        overhead = self.overhead(group)
        if len(data) + overhead > self._max_bytes:
            check_log_size(len(data), self._max_bytes - overhead)
        return group, data

    @property
    def static_group(self) -> LogGroup | None:
        """The group of every log, when topic, source and tags are constants."""
        return self._static_group

    def encode_many(self, logs: list[dict]) -> bytes | None:
        """Plain logs of the static group, encoded in bulk (see LogEncoder.encode_many)."""
        return self._encoder.encode_many(logs)

    def overhead(self, group: LogGroup) -> int:
        overhead = self._overheads.get(group)
        if overhead is None:
            overhead = self._overheads[group] = group.overhead_bytes()
        return overhead

    def _group_of(self, element: Any, log: Any) -> tuple[LogGroup, Any]:
        config = self._config
        topic = config.topic(element) if callable(config.topic) else config.topic
        source = config.source(element) if callable(config.source) else config.source
        tags = config.tags(element) if callable(config.tags) else config.tags
        if isinstance(log, Mapping) and not _OWN_GROUP_FIELDS.isdisjoint(log):
            topic = log.get("__topic__", topic)
            source = log.get("__source__", source)
            own_tags = log.get("__tags__", {})
            if not isinstance(own_tags, Mapping):
                raise InvalidLogError("__tags__", "a log's __tags__ must be a mapping")
            tags = {**(tags or {}), **own_tags}
            log = {k: v for k, v in log.items() if k not in _OWN_GROUP_FIELDS}
        if tags is not None and not isinstance(tags, Mapping):
            raise InvalidLogError("__tags__", f"tags must be a mapping, not {type(tags).__name__}")
        key = (topic, source, tuple(sorted(tags.items(), key=str)) if tags else ())
        try:
            group = self._groups.get(key)
        except TypeError:  # an unhashable topic or source: let LogGroup.of say what is wrong
            group = None
        if group is None:
            group = LogGroup.of(topic, source, tags)
            if len(self._groups) < 10_000:  # bound the cache whatever the cardinality
                self._groups[key] = group
        return group, log


class _SinkMetrics:
    """The sink's Beam metrics; updated only on the DoFn's own thread."""

    def __init__(self):
        counter = lambda name: Metrics.counter(METRICS_NAMESPACE, name)  # noqa: E731
        distribution = lambda name: Metrics.distribution(METRICS_NAMESPACE, name)  # noqa: E731
        self.logs_written = counter("logs_written")
        self.requests = counter("requests")
        self.raw_bytes = counter("raw_bytes")
        self.sent_bytes = counter("sent_bytes")
        self.retries = counter("retries")
        self.failed_logs = counter("failed_logs")
        self.invalid_logs = counter("invalid_logs")
        self.split_batches = counter("split_batches")
        self.throttled_msecs = counter("throttled_msecs")
        # Beam's convention, read by Dataflow's autoscaler; whole seconds only.
        self.throttling_secs = counter("cumulativeThrottlingSeconds")
        self.latency_ms = distribution("request_latency_ms")
        self.batch_logs = distribution("batch_logs")
        self.batch_raw_bytes = distribution("batch_raw_bytes")
        self._throttled_carry = 0.0

    def written(self, outcome: Outcome) -> None:
        result = outcome.result
        self.logs_written.inc(outcome.batch.count)
        self.requests.inc()
        self.raw_bytes.inc(outcome.raw_bytes)
        self.sent_bytes.inc(outcome.sent_bytes)
        self.latency_ms.update(int(result.elapsed_secs * 1000))
        self.batch_logs.update(outcome.batch.count)
        self.batch_raw_bytes.update(outcome.raw_bytes)
        self.attempted(result.attempts, result.throttled_secs)

    def attempted(self, attempts: int, throttled_secs: float) -> None:
        if attempts > 1:
            self.retries.inc(attempts - 1)
        if throttled_secs:
            self.throttled_msecs.inc(int(throttled_secs * 1000))
            self._throttled_carry += throttled_secs
            whole = int(self._throttled_carry)
            if whole:
                self.throttling_secs.inc(whole)
                self._throttled_carry -= whole


class _BatchWriter:
    """Sends batches with up to ``max_in_flight`` requests outstanding and turns
    each outcome into outputs: a written record, failed logs, or an exception.

    A batch the service refuses for its *content* (400 PostBodyInvalid and
    kin, 413) is split in halves and resent, until the bad logs stand alone
    and go to the failed output; the rest of the batch is still delivered.
    """

    def __init__(self, config: SLSWriteConfig, metrics: _SinkMetrics):
        self._config = config
        self._metrics = metrics
        self._client = config.make_client()
        self._sender = InFlightSender(self._client, config.compression, config.max_in_flight)

    def submit(self, batch: Batch) -> Iterator:
        yield from self._collect(keep=self._config.max_in_flight - 1)
        self._sender.submit(batch)

    def flush(self) -> Iterator:
        """Wait for every request: a bundle ends only once all are acknowledged."""
        yield from self._collect(keep=0)

    def close(self) -> None:
        self._sender.close()
        self._client.close()

    def _collect(self, keep: int) -> Iterator:
        while True:
            outcomes = self._sender.completed(keep)
            if not outcomes:
                return
            for outcome in outcomes:
                yield from self._handle(outcome)

    def _handle(self, outcome: Outcome) -> Iterator:
        batch, error = outcome.batch, outcome.error
        if error is None:
            self._metrics.written(outcome)
            result = outcome.result
            record = WrittenRequest(
                batch.group.topic,
                batch.group.source,
                batch.count,
                outcome.raw_bytes,
                outcome.sent_bytes,
                result.request_id,
                result.attempts,
            )
            yield batch.origin_window().with_value(record)
            return
        self._metrics.attempted(error.attempts, 0.0)
        refused_content = error.status in (400, 413) and error.error_code in CONTENT_ERROR_CODES
        if refused_content and batch.count > 1:
            self._metrics.split_batches.inc()
            for half in batch.halves():
                self._sender.submit(half)
            return
        if not refused_content and self._config.on_send_failure == "raise":
            raise error
        self._metrics.failed_logs.inc(batch.count)
        for index in range(batch.count):
            origin = batch.origin(index)
            failed = FailedLog(
                origin.value, error.error_code, str(error), error.status, error.request_id
            )
            yield pvalue.TaggedOutput(FAILED_TAG, origin.with_value(failed))


def _invalid(metrics: _SinkMetrics, element: Any, error: InvalidLogError):
    metrics.invalid_logs.inc()
    metrics.failed_logs.inc()
    return pvalue.TaggedOutput(FAILED_TAG, FailedLog(element, error.error_code, str(error)))


class _SinkDoFn(beam.DoFn):
    """What the sink's DoFns share: config, metrics, display data."""

    def __init__(self, config: SLSWriteConfig):
        self._config = config
        self._metrics = _SinkMetrics()

    def display_data(self):
        return _display_data(self._config)


class _WriteInBundleFn(_SinkDoFn):
    """Bounded input: batch per group inside the bundle, send, flush at bundle end.

    Each log keeps its element's ``WindowedValue``, so a failed log is
    reported in its own window with its own timestamp.
    """

    def setup(self):
        self._preparer = _LogPreparer(self._config)
        self._writer = _BatchWriter(self._config, self._metrics)

    _wrap = None  # origins are the elements' WindowedValues

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


class _WriteGlobalInBundleFn(_WriteInBundleFn):
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
            0, 0, len(joined), self._preparer.overhead(group)
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


class _PrepareForStateFn(_SinkDoFn):
    """Unbounded input, step 1: encode each log and key it by (group, shard)."""

    def setup(self):
        self._preparer = _LogPreparer(self._config)
        # One shard per DoFn instance: a worker's logs share a key (full batches),
        # while several workers spread over up to num_shards keys.
        self._shard = random.randrange(self._config.num_shards)
        self._keys: dict[LogGroup, str] = {}

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        try:
            group, data = self._preparer.prepare(element, timestamp)
        except InvalidLogError as e:
            yield _invalid(self._metrics, element, e)
            return
        key = self._keys.get(group)
        if key is None:
            key = self._keys[group] = _group_key(group, self._shard)
        yield key, data


def _group_key(group: LogGroup, shard: int) -> str:
    return orjson.dumps([group.topic, group.source, group.tags, shard]).decode()


def _group_of_key(key: str) -> LogGroup:
    topic, source, tags, _ = orjson.loads(key)
    return LogGroup(topic, source, tuple(map(tuple, tags)))


class _BufferInStateFn(beam.DoFn):
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
        self._overheads: dict[str, int] = {}

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
        overhead = self._overheads.get(key)
        if overhead is None:
            overhead = self._overheads[key] = _group_of_key(key).overhead_bytes()
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


class _SendFromStateFn(_SinkDoFn):
    """Unbounded input, step 3: send each buffered batch."""

    def setup(self):
        self._writer = _BatchWriter(self._config, self._metrics)
        self._groups: dict[str, LogGroup] = {}

    def process(self, element, windowed_value=beam.DoFn.WindowedValueParam):
        key, logs = element
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _group_of_key(key)
        batch = Batch(group, logs, None, windowed_value, sum(map(len, logs)))
        yield from self._writer.submit(batch)

    def finish_bundle(self):
        yield from self._writer.flush()

    def teardown(self):
        self._writer.close()


_WRITTEN_ROW = RowTypeConstraint.from_fields(
    [
        ("topic", str),
        ("source", str),
        ("log_count", int),
        ("raw_bytes", int),
        ("sent_bytes", int),
        ("request_id", Optional[str]),  # noqa: UP045 - Beam maps `str | None` to Any
        ("attempts", int),
    ]
)


def _written_row(written: WrittenRequest) -> beam.Row:
    return beam.Row(**dataclasses.asdict(written))


def _error_row(failed: FailedLog) -> beam.Row:
    """A failed log in Beam YAML's standard error form."""
    where = f" [HTTP {failed.status}, request id {failed.request_id}]" if failed.status else ""
    return beam.Row(
        element=failed.log, msg=f"{failed.error_code}: {failed.error_message}{where}", stack=""
    )


def _display_data(config: SLSWriteConfig) -> dict:
    return {
        "endpoint": config.endpoint,
        "project": config.project,
        "logstore": config.logstore,
        "compression": config.compression,
        "max_batch_logs": config.max_batch_logs,
        "max_batch_bytes": DisplayDataItem(config.max_batch_bytes, label="Max batch bytes (raw)"),
        "max_buffering_secs": config.max_buffering_secs,
        "max_in_flight": config.max_in_flight,
        "on_send_failure": config.on_send_failure,
        "mode": config.mode,
    }


class WriteToSLS(beam.PTransform):
    """Writes logs to an Alibaba Cloud SLS logstore through PutWebTracking.

    Each element is one log: a mapping of field names to values, a
    ``beam.Row`` / NamedTuple / dataclass, or a ``str`` (stored as
    ``{"content": s}``). Logs are grouped by (topic, source, tags), cut into
    batches of at most ``max_batch_logs`` logs and ``max_batch_bytes`` of raw
    JSON, and each batch is sent as one compressed request.

    Delivery is **at-least-once**: every request is acknowledged before a
    bundle completes, and a failed bundle is retried by the runner, which
    may resend logs that had already landed; a retried request whose answer
    was lost (a timeout) may also store its logs twice. PutWebTracking has no
    idempotency key, so duplicates cannot be excluded; logs are not ordered.
    The service replaces ``__time__`` with the arrival time, so set
    ``event_time_key`` to keep the event time in a field of its own.

    Retries: network errors, timeouts, HTTP 5xx, 429 and 403 quota answers
    are retried with exponential backoff and full jitter (``retry``); other
    answers are final. When retries run out, the bundle fails
    (``on_send_failure="raise"``, the runner retries it), or the logs go to
    the failed output (``"output"``). Logs that break a rule always go to the
    failed output, and the rest of their batch is still written.

    Args:
      endpoint: SLS endpoint, e.g. ``cn-hangzhou.log.aliyuncs.com`` (HTTPS),
        ``http://host`` for plain HTTP, or ``http://127.0.0.1:PORT`` for the emulator.
      project: SLS project name.
      logstore: logstore name; web tracking must be enabled on it.
      topic: log topic: a string, or a callable of the element. A log's own
        ``__topic__`` field overrides it and is removed from the log.
      source: log source: a string, or a callable of the element. A log's own
        ``__source__`` field overrides it and is removed from the log.
      tags: tags (a mapping of strings) for every log, or a callable of the element.
        A log's own ``__tags__`` mapping adds to them and is removed from the log.
      compression: ``lz4`` (default), ``deflate`` or ``none``.
      max_batch_logs: logs per request, at most 4096.
      max_batch_bytes: raw JSON bytes per request, at most 3 MiB (3145728).
      max_buffering_secs: streaming only: longest time a log waits in a
        partial batch (seconds of processing time); 0 waits for full batches
        or the window's end.
      max_buffered_bytes: bounded input: raw bytes buffered over all groups
        in a bundle before the largest batch is sent early.
      max_in_flight: requests sent concurrently by each worker thread.
      event_time_key: field that carries the event time: a log's ``__time__``
        moves there, or else the element's timestamp (Unix seconds).
      timeout_secs: read timeout of each attempt (seconds).
      max_attempts: attempts per request, the first included.
      backoff_base_secs: first backoff ceiling after an error (seconds).
      backoff_max_secs: longest backoff (seconds).
      on_send_failure: ``raise`` (fail the bundle) or ``output`` (to failed)
        when a request cannot be delivered.
      mode: ``auto`` (bundle for bounded input, stateful for unbounded),
        ``bundle`` or ``stateful``.
      num_shards: streaming: keys per group over which buffering spreads.
      verify: TLS verification: True, or a CA bundle path.
      clock: streaming: processing-time clock for ``max_buffering_secs``
        (tests inject one).
      error_handling: Beam YAML's ``{output: NAME}``: return the outputs as
        schema'd rows, ``written`` and NAME (``element``, ``msg``, ``stack``).

    Returns:
      A :class:`WriteToSLSResult` with ``written`` (a :class:`WrittenRequest`
      per request) and ``failed`` (a :class:`FailedLog` per log not written,
      in the window of its element); with ``error_handling``, a dict of
      ``written`` and the named error output, as Beam YAML expects.
    """

    def __init__(
        self,
        endpoint: str,
        project: str,
        logstore: str,
        topic: Constant = "",
        source: Constant = "",
        tags: Constant = None,
        compression: str = "lz4",
        max_batch_logs: int = SERVICE_MAX_LOGS,
        max_batch_bytes: int = SERVICE_MAX_RAW_BYTES,
        max_buffering_secs: float = 2.0,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        max_in_flight: int = 4,
        event_time_key: str | None = None,
        timeout_secs: float = 30.0,
        max_attempts: int = 8,
        backoff_base_secs: float = 0.2,
        backoff_max_secs: float = 30.0,
        on_send_failure: str = "raise",
        mode: str = "auto",
        num_shards: int = 16,
        verify: bool | str = True,
        clock: Callable[[], float] = time.time,
        error_handling: Mapping[str, str] | None = None,
    ):
        super().__init__()
        if error_handling is not None and not isinstance(error_handling.get("output"), str):
            raise ValueError("error_handling must be {'output': NAME} (Beam YAML's form)")
        self._error_output = error_handling and error_handling["output"]
        retry = RetryPolicy(
            max_attempts=max_attempts,
            backoff_base_secs=backoff_base_secs,
            quota_backoff_base_secs=max(backoff_base_secs, min(1.0, backoff_max_secs)),
            backoff_max_secs=backoff_max_secs,
        )
        self._config = SLSWriteConfig(
            endpoint,
            project,
            logstore,
            topic,
            source,
            tags,
            compression,
            max_batch_logs,
            max_batch_bytes,
            max_buffering_secs,
            max_buffered_bytes,
            max_in_flight,
            event_time_key,
            timeout_secs,
            retry,
            on_send_failure,
            mode,
            num_shards,
            verify,
            clock,
        )

    def expand(self, pcoll: beam.PCollection) -> WriteToSLSResult | dict:
        result = self._write(pcoll)
        if not self._error_output:
            return result
        return {
            "written": result.written
            | "WrittenRows" >> beam.Map(_written_row).with_output_types(_WRITTEN_ROW),
            self._error_output: result.failed
            | "ErrorRows"
            >> beam.Map(_error_row).with_output_types(
                RowTypeConstraint.from_fields(
                    [("element", pcoll.element_type), ("msg", str), ("stack", str)]
                )
            ),
        }

    def _write(self, pcoll: beam.PCollection) -> WriteToSLSResult:
        config = self._config
        mode = config.mode
        if mode == "auto":
            streaming = pcoll.pipeline.options.view_as(StandardOptions).streaming
            mode = "stateful" if streaming or not pcoll.is_bounded else "bundle"
        if mode == "bundle":
            global_window = isinstance(pcoll.windowing.windowfn, GlobalWindows)
            fn = (
                _WriteGlobalInBundleFn
                if global_window and not config.event_time_key
                else _WriteInBundleFn
            )(config)
            outputs = pcoll | "WriteInBundle" >> beam.ParDo(fn).with_outputs(
                FAILED_TAG, main=WRITTEN_TAG
            )
            return WriteToSLSResult(outputs[WRITTEN_TAG], outputs[FAILED_TAG])
        prepared = pcoll | "Prepare" >> beam.ParDo(_PrepareForStateFn(config)).with_output_types(
            tuple[str, bytes]
        ).with_outputs(FAILED_TAG, main="logs")
        sent = (
            prepared["logs"]
            | "Buffer"
            >> beam.ParDo(
                _BufferInStateFn(config.limits(), config.max_buffering_secs, config.clock)
            )
            | "Send"
            >> beam.ParDo(_SendFromStateFn(config)).with_outputs(FAILED_TAG, main=WRITTEN_TAG)
        )
        failed = (prepared[FAILED_TAG], sent[FAILED_TAG]) | "Failed" >> beam.Flatten()
        return WriteToSLSResult(sent[WRITTEN_TAG], failed)

    def display_data(self):
        return _display_data(self._config)
