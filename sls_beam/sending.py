"""Keeping up to N requests in flight, to hide network latency behind encoding."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sls_beam.batching import Batch
from sls_beam.client import SendResult, WebTrackingClient
from sls_beam.errors import SLSError
from sls_beam.wire import encode_joined


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
    """Compresses and sends batches on background threads, at most N at once.

    Outcomes come back in submission order through :meth:`completed`, so the
    caller (one Beam DoFn thread) handles every outcome itself: metrics and
    outputs are only touched on the caller's thread.

    Args:
      client: sends each request (its retries run on the sending thread).
      compression: ``lz4``, ``deflate`` or ``none``.
      max_in_flight: requests sent concurrently (>= 1).
    """

    def __init__(self, client: WebTrackingClient, compression: str, max_in_flight: int):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._client = client
        self._compression = compression
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="sls-sender")
        self._pending: deque[Future] = deque()
        self._prefixes: dict = {}

    def submit(self, batch: Batch) -> None:
        """Start sending ``batch``; call :meth:`completed` to bound what is in flight."""
        prefix = self._prefixes.get(batch.group)
        if prefix is None:
            prefix = self._prefixes[batch.group] = batch.group.body_prefix()
        self._pending.append(self._pool.submit(self._send, batch, prefix))

    def completed(self, keep: int) -> list[Outcome]:
        """Outcomes of finished requests, oldest first, waiting until at most ``keep`` remain."""
        done = []
        while self._pending and (len(self._pending) > keep or self._pending[0].done()):
            done.append(self._pending.popleft().result())
        return done

    def _send(self, batch: Batch, prefix: bytes) -> Outcome:
        request = encode_joined(
            batch.group, batch.joined_logs(), batch.count, self._compression, prefix=prefix
        )
        sizes = (request.raw_size, len(request.body))
        try:
            return Outcome(batch, *sizes, result=self._client.send(request))
        except SLSError as e:
            return Outcome(batch, *sizes, error=e)

    def close(self) -> None:
        """Stop the sending threads (requests still pending are abandoned)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pending.clear()
