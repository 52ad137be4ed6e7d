"""Sending batches and turning each outcome into outputs, metrics or an exception."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from apache_beam import pvalue

from sls_beam.batching import Batch
from sls_beam.config import FAILED_TAG, SLSWriteConfig
from sls_beam.metrics import SinkMetrics
from sls_beam.records import FailedLog, WrittenRequest
from sls_beam.retry import CONTENT_ERROR_CODES
from sls_beam.sending import InFlightSender, Outcome


class BatchWriter:
    """Sends batches with up to ``max_in_flight`` requests outstanding and turns
    each outcome into outputs: a written record, failed logs, or an exception.

    A batch the service refuses for its *content* (400 PostBodyInvalid and
    kin, 413) is split in halves and resent, until the bad logs stand alone
    and go to the failed output; the rest of the batch is still delivered.
    Halves wait for room like any batch: at most ``max_in_flight`` requests
    are ever on the wire.
    """

    def __init__(self, config: SLSWriteConfig, metrics: SinkMetrics):
        self._config = config
        self._metrics = metrics
        self._client = config.make_client()
        self._sender = InFlightSender(self._client, config.compression)
        self._halves: deque[Batch] = deque()  # of refused batches, waiting for room

    def submit(self, batch: Batch) -> Iterator:
        yield from self._settle(keep=self._config.max_in_flight - 1)
        self._sender.submit(batch)

    def flush(self) -> Iterator:
        """Wait for every request: a bundle ends only once all are acknowledged."""
        yield from self._settle(keep=0)

    def close(self) -> None:
        self._sender.close()
        self._client.close()

    def _settle(self, keep: int) -> Iterator:
        """Handle outcomes until no half waits and at most ``keep`` requests are in flight."""
        limit = self._config.max_in_flight
        while True:
            while self._halves and self._sender.in_flight < limit:
                self._sender.submit(self._halves.popleft())
            if not self._halves and self._sender.in_flight <= keep:
                return
            for outcome in self._sender.completed(limit - 1 if self._halves else keep):
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
        self._metrics.attempted(error.attempts, error.throttled_secs)
        refused_content = error.status in (400, 413) and error.error_code in CONTENT_ERROR_CODES
        if refused_content and batch.count > 1:
            self._metrics.split_batches.inc()
            self._halves.extend(batch.halves())
            return
        if not refused_content and self._config.on_send_failure == "raise":
            raise error
        self._metrics.failed_logs.inc(batch.count)
        for index in range(batch.count):
            origin = batch.origin(index)
            failed = FailedLog.of(
                origin.value, error.error_code, str(error), error.status, error.request_id
            )
            yield pvalue.TaggedOutput(FAILED_TAG, origin.with_value(failed))
