"""Cutting encoded logs into bounded batches, one open batch per log group."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sls_beam.wire import BatchLimits, LogGroup


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
    """

    group: LogGroup
    logs: list[bytes] = field(default_factory=list)
    origins: list[Any] | None = None
    window_value: Any = None
    nbytes: int = 0

    def origin(self, index: int):
        """The ``WindowedValue`` to report log ``index`` in, should it fail."""
        if self.origins is not None:
            return self.origins[index]
        return self.window_value.with_value(json.loads(self.logs[index]))

    def origin_window(self):
        """A ``WindowedValue`` of the batch (its first log's), to report the request in."""
        return self.window_value if self.origins is None else self.origins[0]

    def halves(self) -> tuple[Batch, Batch]:
        """Split in two, to isolate a log the service refuses."""
        middle = len(self.logs) // 2
        return self._part(0, middle), self._part(middle, len(self.logs))

    def _part(self, start: int, stop: int) -> Batch:
        logs = self.logs[start:stop]
        origins = None if self.origins is None else self.origins[start:stop]
        return Batch(self.group, logs, origins, self.window_value, sum(map(len, logs)))


class KeyedBatcher:
    """Accumulates logs per group and hands back batches as they fill up.

    A batch is closed *before* a log that would overflow it is added (so no
    batch ever exceeds ``limits``) and as soon as it holds ``max_logs``. When
    the logs buffered over all groups pass ``max_buffered_bytes``, the largest
    open batch is closed early, which bounds memory however many groups the
    input has.
    """

    def __init__(self, limits: BatchLimits, max_buffered_bytes: int):
        self.limits = limits
        self.max_buffered_bytes = max_buffered_bytes
        self._open: dict[LogGroup, Batch] = {}
        self._overheads: dict[LogGroup, int] = {}
        self.buffered_bytes = 0

    def add(self, group: LogGroup, log: bytes, origin: Any) -> list[Batch]:
        """Add one encoded log; return the batches this closed (often none)."""
        closed = []
        batch = self._open.get(group)
        if batch is None:
            batch = self._open[group] = Batch(group, [], [])
            if group not in self._overheads:
                self._overheads[group] = group.overhead_bytes()
        elif not self.limits.fits(len(batch.logs), batch.nbytes, len(log), self._overheads[group]):
            closed.append(self._close(group))
            batch = self._open[group] = Batch(group, [], [])
        batch.logs.append(log)
        batch.origins.append(origin)
        batch.nbytes += len(log)
        self.buffered_bytes += len(log)
        if len(batch.logs) >= self.limits.max_logs:
            closed.append(self._close(group))
        if self.buffered_bytes > self.max_buffered_bytes:
            largest = max(self._open, key=lambda g: self._open[g].nbytes)
            closed.append(self._close(largest))
        return closed

    def drain(self) -> list[Batch]:
        """Close and return every open batch."""
        return [self._close(group) for group in list(self._open)]

    def _close(self, group: LogGroup) -> Batch:
        batch = self._open.pop(group)
        self.buffered_bytes -= batch.nbytes
        return batch
