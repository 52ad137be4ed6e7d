"""From batches to the sink's outputs: send them (at most ``max_in_flight`` at once) and
turn each outcome into a written record, failed logs, metrics, or an exception."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from apache_beam import pvalue

from sls_beam.batching import Batch
from sls_beam.config import FAILED_TAG, SLSWriteConfig
from sls_beam.errors import InvalidLogError
from sls_beam.inflight import InFlightSender, Outcome
from sls_beam.metrics import SinkMetrics
from sls_beam.records import FailedLog, WrittenRequest


def refused(metrics: SinkMetrics, element: Any, error: InvalidLogError) -> FailedLog:
    """The failed record of an element that broke a rule (and counted as such)."""
    metrics.invalid_logs.inc()
    metrics.failed_logs.inc()
    return FailedLog.of(element, error.error_code, str(error))


class BatchWriter:
    """Sends batches with up to ``max_in_flight`` requests outstanding and turns
    each outcome into outputs: a written record, failed logs, or an exception.

    :meth:`submit` only queues a batch; :meth:`collect` sends what is queued
    as request slots free up and yields the outputs of what finished. As many
    batches as the caller allows may wait in the queue while it goes on
    batching: many groups whose batches fill at once (a source per host) then
    do not stall the worker until all but a few are answered. A batch the
    service refuses for its *content* (400 PostBodyInvalid and kin, 413) is
    split in halves, queued like any batch, until the bad logs stand alone
    and go to the failed output; the rest of the batch is still delivered.
    At most ``max_in_flight`` requests are ever on the wire.
    """

    def __init__(self, config: SLSWriteConfig, metrics: SinkMetrics):
        self._config = config
        self._metrics = metrics
        self._client = config.make_client()
        self._sender = InFlightSender(self._client, config.compression)
        self._waiting: deque[Batch] = deque()

    def submit(self, batch: Batch) -> None:
        """Queue ``batch``; :meth:`collect` sends it."""
        self._waiting.append(batch)

    def collect(self, keep: int, queued: int = 0) -> Iterator:
        """Send what is queued as request slots free up, and yield the outputs of
        finished requests. Returns once at most ``keep`` requests are in flight and
        at most ``queued`` batches wait for a slot (``keep=0``, ``queued=0``: all
        done); until then it waits for answers."""
        limit = self._config.max_in_flight
        while True:
            while self._waiting and self._sender.in_flight < limit:
                self._sender.submit(self._waiting.popleft())
            if self._sender.in_flight <= keep and len(self._waiting) <= queued:
                if not self._waiting:
                    return
                outcomes = self._sender.answered()  # slots freed without waiting, if any
                if not outcomes:
                    return
            else:
                outcomes = self._sender.completed(limit - 1 if self._waiting else keep)
            for outcome in outcomes:
                yield from self._outputs_of(outcome)

    def close(self) -> None:
        self._sender.close()
        self._client.close()

    def _outputs_of(self, outcome: Outcome) -> Iterator:
        batch, error = outcome.batch, outcome.error
        if error is None:
            result = outcome.result
            self._metrics.written(
                batch.count,
                outcome.raw_bytes,
                outcome.sent_bytes,
                result.elapsed_secs,
                result.attempts,
                result.throttled_secs,
            )
            record = WrittenRequest(
                batch.group.topic,
                batch.group.source,
                batch.count,
                outcome.raw_bytes,
                outcome.sent_bytes,
                result.request_id,
                result.attempts,
            )
            yield batch.in_window(0, record)
            return
        self._metrics.attempted(error.attempts, error.throttled_secs)
        refused_content = self._client.retry.is_refused_content(error.status, error.error_code)
        if refused_content and batch.count > 1:
            self._metrics.split_batches.inc()
            self._waiting.extend(batch.halves())
            return
        if not refused_content and self._config.on_send_failure == "raise":
            raise error
        self._metrics.failed_logs.inc(batch.count)
        for index in range(batch.count):
            failed = FailedLog.of(
                batch.element(index), error.error_code, str(error), error.status, error.request_id
            )
            yield pvalue.TaggedOutput(FAILED_TAG, batch.in_window(index, failed))
