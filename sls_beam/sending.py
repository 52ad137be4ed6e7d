"""Keeping up to N requests in flight, to hide network latency behind batching."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sls_beam.batching import Batch
from sls_beam.client import PendingSend, SendResult, WebTrackingClient
from sls_beam.errors import SLSError
from sls_beam.wire import EncodedRequest, encode_joined


@dataclass(frozen=True)
class Outcome:
    """What became of one batch: a result, or the error that ended its retries.

    Attributes:
      batch: the batch that was sent.
      raw_bytes: JSON size before compression.
      sent_bytes: body size on the wire.
      result: the accepting answer, or ``None`` when ``error`` is set.
      error: why the batch was not accepted.
    """

    batch: Batch
    raw_bytes: int
    sent_bytes: int
    result: SendResult | None = None
    error: SLSError | None = None


class InFlightSender:
    """Sends batches with up to N requests awaiting their answers, on the caller's thread.

    Each batch is compressed and written on a keep-alive connection of its
    own as soon as it is submitted; its answer is read (and any retry made)
    only when :meth:`completed` must make room or is asked to drain. So the
    network's round trips overlap with the caller's batching without any
    thread, and metrics and outputs are only touched on the caller's thread.
    Outcomes come back in submission order.

    Args:
      client: sends each request and retries it per its policy.
      compression: ``lz4``, ``deflate`` or ``none``.
      max_in_flight: requests written and not yet answered, at most (>= 1).
    """

    def __init__(self, client: WebTrackingClient, compression: str, max_in_flight: int):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._client = client
        self._compression = compression
        self._pending: deque[tuple[Batch, EncodedRequest, PendingSend]] = deque()
        self._prefixes: dict = {}

    def submit(self, batch: Batch) -> None:
        """Start sending ``batch``; call :meth:`completed` to bound what is in flight."""
        prefix = self._prefixes.get(batch.group)
        if prefix is None:
            prefix = self._prefixes[batch.group] = batch.group.body_prefix()
        request = encode_joined(
            batch.group, batch.joined_logs(), batch.count, self._compression, prefix=prefix
        )
        self._pending.append((batch, request, self._client.start(request)))

    def completed(self, keep: int) -> list[Outcome]:
        """Outcomes of the oldest requests, waiting for answers until at most ``keep`` remain."""
        done = []
        while len(self._pending) > keep:
            batch, request, pending = self._pending.popleft()
            sizes = (request.raw_size, len(request.body))
            try:
                done.append(Outcome(batch, *sizes, result=pending.result()))
            except SLSError as e:
                done.append(Outcome(batch, *sizes, error=e))
        return done

    def close(self) -> None:
        """Drop the requests still awaiting answers (their logs may or may not land)."""
        for _, _, pending in self._pending:
            pending.abandon()
        self._pending.clear()
