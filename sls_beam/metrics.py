"""The sink's Beam metrics (namespace ``sls_beam``), updated from plain counts."""

from __future__ import annotations

from apache_beam.metrics import Metrics

#: Beam Metrics namespace of every counter and distribution of the sink.
METRICS_NAMESPACE = "sls_beam"


class SinkMetrics:
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

    def written(
        self,
        log_count: int,
        raw_bytes: int,
        sent_bytes: int,
        latency_secs: float,
        attempts: int,
        throttled_secs: float,
    ) -> None:
        """Count one request the service accepted."""
        self.logs_written.inc(log_count)
        self.requests.inc()
        self.raw_bytes.inc(raw_bytes)
        self.sent_bytes.inc(sent_bytes)
        self.latency_ms.update(int(latency_secs * 1000))
        self.batch_logs.update(log_count)
        self.batch_raw_bytes.update(raw_bytes)
        self.attempted(attempts, throttled_secs)

    def attempted(self, attempts: int, throttled_secs: float) -> None:
        """Count the retries of a request, and its seconds spent throttled (whole
        seconds carried over into ``cumulativeThrottlingSeconds``)."""
        if attempts > 1:
            self.retries.inc(attempts - 1)
        if throttled_secs:
            self.throttled_msecs.inc(int(throttled_secs * 1000))
            self._throttled_carry += throttled_secs
            whole = int(self._throttled_carry)
            if whole:
                self.throttling_secs.inc(whole)
                self._throttled_carry -= whole
