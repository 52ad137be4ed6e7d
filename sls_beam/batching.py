"""Cutting encoded logs into bounded batches, one open batch per log group."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sls_beam.wire import BatchLimits, LogGroup, encode_plain


@dataclass
class Batch:
    """Encoded logs of one group, bound for one request.

    Attributes:
      group: topic, source and tags of every log.
      logs: each log's JSON bytes.
      origins: for each log, the Beam ``WindowedValue`` of the element it came
        from (so a failed log is reported with its own element and window);
        ``None`` when only the batch's ``window_value`` is known.
      window_value: the ``WindowedValue`` a batch without ``origins`` came in.
      nbytes: total size of ``logs`` (bytes).
      wrap: when set, ``origins`` hold bare elements and ``wrap(element)``
        makes their ``WindowedValue`` (only ever needed for a failure).
      joined: the logs' JSON already joined by commas, when they were
        encoded in bulk; ``logs`` is then empty until the batch is split,
        and ``origins`` hold the plain logs themselves.
    """

    group: LogGroup
    logs: list[bytes] = field(default_factory=list)
    origins: list[Any] | None = None
    window_value: Any = None
    nbytes: int = 0
    wrap: Callable[[Any], Any] | None = None
    joined: bytes | None = None

    @classmethod
    def of_plain(cls, group: LogGroup, plain_logs: list[dict], joined: bytes, wrap=None) -> Batch:
        """A batch of plain logs encoded in bulk (see ``LogEncoder.encode_many``)."""
        nbytes = len(joined) - (len(plain_logs) - 1)  # without the commas
        return cls(group, [], plain_logs, None, nbytes, wrap, joined)

    @property
    def count(self) -> int:
        """How many logs the batch holds."""
        return len(self.origins) if self.joined is not None else len(self.logs)

    def joined_logs(self) -> bytes:
        """The logs' JSON joined by commas: the middle of the request body."""
        return self.joined if self.joined is not None else b",".join(self.logs)

    def origin(self, index: int):
        """The ``WindowedValue`` to report log ``index`` in, should it fail."""
        if self.origins is None:
            return self.window_value.with_value(json.loads(self.logs[index]))
        origin = self.origins[index]
        return self.wrap(origin) if self.wrap else origin

    def origin_window(self):
        """A ``WindowedValue`` of the batch (its first log's), to report the request in."""
        return self.window_value if self.origins is None else self.origin(0)

    def halves(self) -> tuple[Batch, Batch]:
        """Split in two, to isolate a log the service refuses."""
        if self.joined is not None:  # encoded in bulk: now each log on its own
            self.logs, self.joined = [encode_plain(log) for log in self.origins], None
        middle = len(self.logs) // 2
        return self._part(0, middle), self._part(middle, len(self.logs))

    def _part(self, start: int, stop: int) -> Batch:
        logs = self.logs[start:stop]
        origins = None if self.origins is None else self.origins[start:stop]
        return Batch(self.group, logs, origins, self.window_value, sum(map(len, logs)), self.wrap)


#: What buffering costs beside the logs' JSON, in bytes of memory: an open
#: batch (its object, lists, dict entries, group and body prefix) and each
#: log in it (a bytes object and two list slots). Counted in
#: ``buffered_bytes``, so that many small groups are bounded like few large ones.
OPEN_BATCH_COST = 1024
LOG_COST = 64


class KeyedBatcher:
    """Accumulates logs per group and hands back batches as they fill up.

    A batch is closed *before* a log that would overflow it is added (so no
    batch ever exceeds ``limits``) and as soon as it holds ``max_logs``. When
    what is buffered over all groups (the logs' JSON plus :data:`LOG_COST` a
    log and :data:`OPEN_BATCH_COST` an open batch) passes
    ``max_buffered_bytes``, the oldest open batches are closed early, in
    O(1) each, which bounds memory however many groups the input has.
    """

    def __init__(
        self, limits: BatchLimits, max_buffered_bytes: int, wrap: Callable[[Any], Any] | None = None
    ):
        self.limits = limits
        self.wrap = wrap
        self.max_buffered_bytes = max_buffered_bytes
        self._open: dict[LogGroup, Batch] = {}  # oldest first
        # Per open group: raw bytes its logs and their commas may take in one request.
        self._room: dict[LogGroup, int] = {}
        self.buffered_bytes = 0

    def add(self, group: LogGroup, log: bytes, origin: Any) -> list[Batch] | tuple[()]:
        """Add one encoded log; return the batches this closed (usually none)."""
        batch = self._open.get(group)
        cost = len(log) + LOG_COST
        if batch is not None:
            # The common case, in few operations: room in the batch and in the buffer, and
            # the batch not full after this log.
            if (
                len(batch.logs) + 1 < self.limits.max_logs
                and self._fits(batch, len(log))
                and self.buffered_bytes + cost <= self.max_buffered_bytes
            ):
                batch.logs.append(log)
                batch.origins.append(origin)
                batch.nbytes += len(log)
                self.buffered_bytes += cost
                return ()
        return self._add_closing(group, log, origin)

    def _add_closing(self, group: LogGroup, log: bytes, origin: Any) -> list[Batch]:
        closed = []
        batch = self._open.get(group)
        if batch is not None and not self._fits(batch, len(log)):
            closed.append(self._close(group))
            batch = None
        if batch is None:
            batch = self._open[group] = Batch(group, [], [], wrap=self.wrap)
            self._room[group] = self.limits.max_bytes - group.overhead_bytes()
            self.buffered_bytes += OPEN_BATCH_COST
        batch.logs.append(log)
        batch.origins.append(origin)
        batch.nbytes += len(log)
        self.buffered_bytes += len(log) + LOG_COST
        if len(batch.logs) >= self.limits.max_logs:
            closed.append(self._close(group))
        while self.buffered_bytes > self.max_buffered_bytes:
            closed.append(self._close(next(iter(self._open))))
        return closed

    def _fits(self, batch: Batch, size: int) -> bool:
        """``BatchLimits.fits`` with the group's room precomputed: one more log of
        ``size`` bytes, plus its comma, within the request's raw bytes and count."""
        count = len(batch.logs)
        return count < self.limits.max_logs and (
            batch.nbytes + count + size <= self._room[batch.group]
        )

    def drain(self) -> list[Batch]:
        """Close and return every open batch."""
        return [self._close(group) for group in list(self._open)]

    def _close(self, group: LogGroup) -> Batch:
        batch = self._open.pop(group)
        del self._room[group]
        self.buffered_bytes -= batch.nbytes + LOG_COST * len(batch.logs) + OPEN_BATCH_COST
        return batch
