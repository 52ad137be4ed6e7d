"""The in-flight queue: batches compressed, written and answered, several at once.

Apart from Beam's outputs and metrics (``outputs.py``), so that it can be
tested with batches and a client alone.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sls_beam.batching import Batch
from sls_beam.client import PendingSend, SendResult, WebTrackingClient
from sls_beam.errors import SLSError
from sls_beam.wire import EncodedRequest, encode_pieces


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


@dataclass
class _Request:
    """One batch on its way: compressing, then written, then answered."""

    batch: Batch
    encoding: Future[EncodedRequest]
    request: EncodedRequest | None = None
    pending: PendingSend | None = None


class InFlightSender:
    """Sends batches, several unanswered at once, all on the caller's thread but compression.

    A submitted batch is compressed on a helper thread (zlib and lz4 let the
    caller's thread run meanwhile), then written on a keep-alive connection
    of its own; its answer is read (and any retry made) only when
    :meth:`completed` is asked to leave fewer requests unanswered: the
    caller bounds what is in flight. So compression and the network's round
    trips overlap with the caller's batching, and metrics and outputs are
    only touched on the caller's thread. Outcomes come back in submission
    order.

    Args:
      client: sends each request and retries it per its policy.
      compression: ``lz4``, ``deflate`` or ``none``.
    """

    def __init__(self, client: WebTrackingClient, compression: str):
        self._client = client
        self._compression = compression
        self._compressor = ThreadPoolExecutor(1, thread_name_prefix="sls-compress")
        self._queue: deque[_Request] = deque()  # oldest first

    def submit(self, batch: Batch) -> None:
        """Start sending ``batch``; call :meth:`completed` to bound what is in flight."""
        encoding = self._compressor.submit(
            encode_pieces, batch.group, batch.pieces, batch.count, self._compression
        )
        self._queue.append(_Request(batch, encoding))

    @property
    def in_flight(self) -> int:
        """Batches submitted whose outcome has not been handed back yet."""
        return len(self._queue)

    def completed(self, keep: int) -> list[Outcome]:
        """Outcomes of the oldest requests, waiting for answers until at most ``keep`` remain."""
        self._write_compressed(wait=False)
        done = []
        while len(self._queue) > keep:
            oldest = self._queue[0]
            if oldest.pending is None or not oldest.pending.answered():
                # About to wait: first put every batch on the wire, so that the
                # service works on all of them meanwhile.
                self._write_compressed(wait=True)
            done.append(self._outcome(self._queue.popleft()))
        return done

    def answered(self) -> list[Outcome]:
        """Outcomes of the oldest requests whose answers are already in: no waiting
        (but for the retries an answer may call for)."""
        self._write_compressed(wait=False)
        done = []
        while self._queue and self._queue[0].pending is not None:
            if not self._queue[0].pending.answered():
                break
            done.append(self._outcome(self._queue.popleft()))
        return done

    @staticmethod
    def _outcome(sending: _Request) -> Outcome:
        sizes = (sending.request.raw_size, len(sending.request.body))
        try:
            return Outcome(sending.batch, *sizes, result=sending.pending.result())
        except SLSError as e:
            return Outcome(sending.batch, *sizes, error=e)

    def _write_compressed(self, wait: bool) -> None:
        """Write, in order, the batches whose compression has finished (``wait``: all)."""
        for sending in self._queue:
            if sending.pending is None:
                if not (wait or sending.encoding.done()):
                    return
                sending.request = sending.encoding.result()
                sending.pending = self._client.start(sending.request)

    def close(self) -> None:
        """Drop the requests still awaiting answers (their logs may or may not land)."""
        for sending in self._queue:
            if sending.pending is not None:
                sending.pending.abandon()
        self._queue.clear()
        self._compressor.shutdown(wait=False, cancel_futures=True)
