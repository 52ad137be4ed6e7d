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
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.window import GlobalWindows
from apache_beam.typehints.row_type import RowTypeConstraint

from sls_beam.client import DEFAULT_TIMEOUT_SECS
from sls_beam.config import (
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_BUFFERING_SECS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MODE,
    DEFAULT_NUM_SHARDS,
    FAILED_TAG,
    WRITTEN_TAG,
    PerElement,
    SLSWriteConfig,
    display_data,
)
from sls_beam.credentials import CredentialsSpec
from sls_beam.dofns import BufferInStateFn, PrepareForStateFn, SendFromStateFn, WriteInBundleFn
from sls_beam.records import FailedLog, WrittenRequest
from sls_beam.retry import (
    DEFAULT_BACKOFF_BASE_SECS,
    DEFAULT_BACKOFF_MAX_SECS,
    DEFAULT_MAX_ATTEMPTS,
    RetryPolicy,
)
from sls_beam.signing import DEFAULT_SIGNATURE_VERSION
from sls_beam.wire import DEFAULT_COMPRESSION, SERVICE_MAX_LOGS, SERVICE_MAX_RAW_BYTES


class WriteToSLSResult(NamedTuple):
    """What :class:`WriteToSLS` returns: two PCollections.

    Attributes:
      written: a :class:`WrittenRequest` per accepted request.
      failed: a :class:`FailedLog` per log that was not written.
    """

    written: beam.PCollection
    failed: beam.PCollection


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


class WriteToSLS(beam.PTransform):
    """Writes logs to an Alibaba Cloud SLS logstore through PutWebTracking.

    Each element is one log: a mapping of field names to values, a
    ``beam.Row`` / NamedTuple / dataclass, or a ``str`` (stored as
    ``{"content": s}``); or many, as a :class:`~sls_beam.JsonLines` (JSON
    text, one object a line, written without a dict a log). Logs are grouped
    by (topic, source, tags), cut into batches of at most ``max_batch_logs``
    logs and ``max_batch_bytes`` of raw JSON, and each batch is sent as one
    compressed request.

    Delivery is **at-least-once**: every request is acknowledged before a
    bundle completes, and a failed bundle is retried by the runner, which
    may resend logs that had already landed; a retried request whose answer
    was lost (a timeout) may also store its logs twice. PutWebTracking has no
    idempotency key, so duplicates cannot be excluded; logs are not ordered.
    Anonymous writes: the service replaces ``__time__`` with the arrival
    time, so set ``event_time_key`` to keep the event time in a field of its
    own. Signed writes (``credentials``) keep it: each log carries
    ``__time__`` (its own, else its element's timestamp, else now).

    Retries: network errors, timeouts, HTTP 5xx, 429 and 403 quota answers
    are retried with exponential backoff and full jitter (``retry``); other
    answers are final. A retry waits on the DoFn's own thread, so a
    struggling service slows the pipeline down (backpressure) instead of
    letting batches pile up. When retries run out, the bundle fails
    (``on_send_failure="raise"``, the runner retries it), or the logs go to
    the failed output (``"output"``). Logs that break a rule always go to the
    failed output, and the rest of their batch is still written.

    Args:
      endpoint: SLS endpoint, e.g. ``cn-hangzhou.log.aliyuncs.com`` (HTTPS),
        ``http://host`` for plain HTTP, or ``http://127.0.0.1:PORT`` for the emulator.
      project: SLS project name.
      logstore: logstore name; web tracking must be enabled on it for anonymous
        writes (not for signed ones).
      credentials: ``None`` (anonymous ``/track``, the default), or sign every
        request: a :class:`~sls_beam.Credentials` (pickled into the job: prefer
        the next two), a zero-argument callable returning one (called on the
        worker; again near its ``expiration`` and after an expired-token
        answer), or ``"env"`` (``ALIBABA_CLOUD_ACCESS_KEY_ID``,
        ``ALIBABA_CLOUD_ACCESS_KEY_SECRET``, ``ALIBABA_CLOUD_SECURITY_TOKEN``
        read on the worker). The RAM permission is ``log:PostLogStoreLogs``.
      signature_version: ``v1`` (HMAC-SHA1, as the official web SDK) or ``v4``
        (SLS4-HMAC-SHA256).
      region: ``v4``'s region, e.g. ``cn-hangzhou`` (read from a regional
        endpoint when not given).
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
      max_in_flight: requests awaiting their answers at once, per DoFn
        instance (one per worker thread); more hides more network latency.
      event_time_key: field that carries the event time: a log's ``__time__``
        moves there, or else the element's timestamp (Unix seconds).
      timeout_secs: read timeout of each attempt (seconds).
      max_attempts: attempts per request, the first included.
      backoff_base_secs: first backoff ceiling after an error (seconds).
      backoff_max_secs: longest backoff (seconds).
      on_send_failure: ``raise`` (fail the bundle) or ``output`` (to failed)
        when a request cannot be delivered; by default ``raise``, or
        ``output`` with ``error_handling`` (Beam YAML's errors all go to the
        error output).
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
        *,
        topic: PerElement[str] = "",
        source: PerElement[str] = "",
        tags: PerElement[Mapping[str, Any] | None] = None,
        compression: str = DEFAULT_COMPRESSION,
        max_batch_logs: int = SERVICE_MAX_LOGS,
        max_batch_bytes: int = SERVICE_MAX_RAW_BYTES,
        max_buffering_secs: float = DEFAULT_MAX_BUFFERING_SECS,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        event_time_key: str | None = None,
        timeout_secs: float = DEFAULT_TIMEOUT_SECS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_base_secs: float = DEFAULT_BACKOFF_BASE_SECS,
        backoff_max_secs: float = DEFAULT_BACKOFF_MAX_SECS,
        on_send_failure: str | None = None,
        mode: str = DEFAULT_MODE,
        num_shards: int = DEFAULT_NUM_SHARDS,
        verify: bool | str = True,
        clock: Callable[[], float] = time.time,
        credentials: CredentialsSpec = None,
        signature_version: str = DEFAULT_SIGNATURE_VERSION,
        region: str | None = None,
        error_handling: Mapping[str, str] | None = None,
    ):
        super().__init__()
        if error_handling is not None and not isinstance(error_handling.get("output"), str):
            raise ValueError("error_handling must be {'output': NAME} (Beam YAML's form)")
        self._error_output = error_handling and error_handling["output"]
        if on_send_failure is None:
            on_send_failure = "output" if self._error_output else "raise"
        self._config = SLSWriteConfig(
            endpoint=endpoint,
            project=project,
            logstore=logstore,
            topic=topic,
            source=source,
            tags=tags,
            compression=compression,
            max_batch_logs=max_batch_logs,
            max_batch_bytes=max_batch_bytes,
            max_buffering_secs=max_buffering_secs,
            max_buffered_bytes=max_buffered_bytes,
            max_in_flight=max_in_flight,
            event_time_key=event_time_key,
            timeout_secs=timeout_secs,
            retry=RetryPolicy.with_backoff(max_attempts, backoff_base_secs, backoff_max_secs),
            on_send_failure=on_send_failure,
            mode=mode,
            num_shards=num_shards,
            verify=verify,
            clock=clock,
            credentials=credentials,
            signature_version=signature_version,
            region=region,
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
            fn = WriteInBundleFn(config, windowed=not global_window or bool(config.event_time_key))
            outputs = pcoll | "WriteInBundle" >> beam.ParDo(fn).with_outputs(
                FAILED_TAG, main=WRITTEN_TAG
            )
            return WriteToSLSResult(outputs[WRITTEN_TAG], outputs[FAILED_TAG])
        windowed = not isinstance(pcoll.windowing.windowfn, GlobalWindows)
        prepared = pcoll | "Prepare" >> beam.ParDo(
            PrepareForStateFn(config, windowed)
        ).with_output_types(tuple[str, tuple[bytes, int]]).with_outputs(FAILED_TAG, main="logs")
        sent = (
            prepared["logs"]
            | "Buffer"
            >> beam.ParDo(BufferInStateFn(config.limits(), config.max_buffering_secs, config.clock))
            | "Send"
            >> beam.ParDo(SendFromStateFn(config)).with_outputs(FAILED_TAG, main=WRITTEN_TAG)
        )
        failed = (prepared[FAILED_TAG], sent[FAILED_TAG]) | "Failed" >> beam.Flatten()
        return WriteToSLSResult(sent[WRITTEN_TAG], failed)

    def display_data(self):
        return display_data(self._config)
