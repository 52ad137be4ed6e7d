"""Batches: the immutable value one request carries, and the batcher that cuts elements
into them, one open batch per log group, within the request limits and a memory bound."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from apache_beam.utils.windowed_value import WindowedValue

from sls_beam.errors import InvalidLogError
from sls_beam.preparing import LogPreparer
from sls_beam.wire import BatchLimits, LogGroup, encode_plain

#: What buffering costs beside the logs' JSON, in bytes of memory: an open
#: batch (its lists, dict entries, group and body prefix) and each log in it
#: (a bytes object and two list slots). Counted in ``buffered_bytes``, so that
#: many small groups are bounded like few large ones.
OPEN_BATCH_COST = 1024
LOG_COST = 64


def in_window(origin: Any, window: WindowedValue | None, value: Any) -> WindowedValue:
    """``value`` in the window of a log: the batch's shared ``window`` when there is
    one, else the log's origin, which is then the element's own WindowedValue."""
    return window.with_value(value) if window is not None else origin.with_value(value)


@dataclass(frozen=True)
class Batch:
    """Encoded logs of one group, bound for one request. Immutable.

    Attributes:
      group: topic, source and tags of every log.
      joined: the logs' JSON joined by commas: the middle of the request body.
      origins: for each log, what it came from: the element, its WindowedValue,
        or (logs buffered in Beam state) the log as sent, decoded when read.
      window: the WindowedValue every log is reported in, or ``None`` when
        each origin is a WindowedValue of its own.
      logs: each log's JSON when known; ``None`` for plain logs encoded in
        bulk, whose origins are those logs (made again if the batch is split).
    """

    group: LogGroup
    joined: bytes
    origins: Sequence[Any]
    window: WindowedValue | None = None
    logs: Sequence[bytes] | None = None

    @classmethod
    def of(
        cls,
        group: LogGroup,
        logs: Sequence[bytes],
        origins: Sequence[Any],
        window: WindowedValue | None = None,
    ) -> Batch:
        return cls(group, b",".join(logs), origins, window, logs)

    @property
    def count(self) -> int:
        """How many logs the batch holds."""
        return len(self.origins)

    def element(self, index: int) -> Any:
        """What log ``index`` came from (for a failed record)."""
        origin = self.origins[index]
        return origin if self.window is not None else origin.value

    def in_window(self, index: int, value: Any) -> WindowedValue:
        """``value`` in the window (and with the timestamp) of log ``index``."""
        return in_window(self.origins[index], self.window, value)

    def halves(self) -> tuple[Batch, Batch]:
        """Two new batches of the first and second half, to isolate a refused log."""
        logs = self.logs
        if logs is None:  # encoded in bulk: each log on its own now
            logs = [encode_plain(self.origins[i]) for i in range(self.count)]
        middle = self.count // 2
        return (
            Batch.of(self.group, logs[:middle], self.origins[:middle], self.window),
            Batch.of(self.group, logs[middle:], self.origins[middle:], self.window),
        )


class SentLogs(Sequence):
    """The origins of logs buffered in Beam state: the logs as sent, decoded when read."""

    def __init__(self, logs: Sequence[bytes]):
        self._logs = logs

    def __len__(self) -> int:
        return len(self._logs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return SentLogs(self._logs[index])
        return orjson.loads(self._logs[index])


class Added(NamedTuple):
    """What adding an element closed: batches to send, and elements refused:
    (element, origin, why)."""

    batches: list[Batch]
    invalid: list[tuple[Any, Any, InvalidLogError]]


class _Open:
    """A batch being filled: its logs, their origins, their size, the group's room."""

    __slots__ = ("logs", "origins", "nbytes", "room")

    def __init__(self, room: int):
        self.logs: list[bytes] = []
        self.origins: list[Any] = []
        self.nbytes = 0
        self.room = room


class KeyedBatcher:
    """Elements → bounded batches, one open batch per group: the bundle path's batching.

    A batch is closed *before* a log that would overflow it is added (so no
    batch ever exceeds ``limits``) and as soon as it holds ``max_logs``. When
    what is buffered over all groups (the logs' JSON plus :data:`LOG_COST` a
    log and :data:`OPEN_BATCH_COST` an open batch) passes
    ``max_buffered_bytes``, the oldest open batches are closed early, in
    O(1) each, which bounds memory however many groups the input has.

    The fast lane: with a shared ``window`` and constant topic, source and
    tags, plain ``dict`` elements wait as they are and are checked and
    encoded a batch at a time (one ``orjson`` call); a batch of them that is
    not all plain takes the per-log path, which names any broken rule.

    Args:
      preparer: element → (group, log JSON), raising InvalidLogError.
      limits: count and raw bytes of one request.
      max_buffered_bytes: the memory bound above.
      window: the WindowedValue every log is reported in (global-window
        input), or ``None`` when each origin is the element's WindowedValue.
    """

    def __init__(
        self,
        preparer: LogPreparer,
        limits: BatchLimits,
        max_buffered_bytes: int,
        window: WindowedValue | None = None,
    ):
        self._preparer = preparer
        self._limits = limits
        self._max_buffered_bytes = max_buffered_bytes
        self._window = window
        self._open: dict[LogGroup, _Open] = {}  # oldest first
        self._plain: list[dict] = []
        self._plain_group = preparer.static_group if window is not None else None
        self.buffered_bytes = 0

    def add(self, element: Any, origin: Any, timestamp=None) -> Added | None:
        """Add one element; return what that closed, or ``None`` (the common case).

        ``origin`` is what a failure of this log is reported with: the element
        itself when the batcher has a shared window, else its WindowedValue.
        """
        if element.__class__ is dict and self._plain_group is not None:
            plain = self._plain
            plain.append(element)
            if len(plain) >= self._limits.max_logs:
                return self._close_plain()
            return None
        try:
            group, data = self._preparer.prepare(element, timestamp)
        except InvalidLogError as e:
            return Added([], [(element, origin, e)])
        closed = self._add(group, data, origin)
        return Added(closed, []) if closed else None

    def drain(self) -> Added:
        """Close and return everything buffered."""
        added = self._close_plain()
        added.batches.extend(self._close(group) for group in list(self._open))
        return added

    def in_window(self, origin: Any, value: Any) -> WindowedValue:
        """``value`` in the window of the element that ``origin`` stands for."""
        return in_window(origin, self._window, value)

    def _close_plain(self) -> Added:
        logs, self._plain = self._plain, []
        added = Added([], [])
        if not logs:
            return added
        group = self._plain_group
        joined = self._preparer.encode_many(logs)
        if joined is not None and self._limits.fits(0, 0, len(joined), self._limits.room(group)):
            added.batches.append(Batch(group, joined, logs, self._window))
            return added
        # Not all plain, or too large for one request: log by log, which names any problem.
        for log in logs:
            try:
                group, data = self._preparer.prepare(log)
            except InvalidLogError as e:
                added.invalid.append((log, log, e))
                continue
            added.batches.extend(self._add(group, data, log))
        return added

    def _add(self, group: LogGroup, log: bytes, origin: Any) -> list[Batch]:
        batch = self._open.get(group)
        size = len(log)
        cost = size + LOG_COST
        if batch is not None:
            # The common case, in few operations: room in the batch and in the buffer, and
            # the batch not full after this log.
            if (
                len(batch.logs) + 1 < self._limits.max_logs
                and self._limits.fits(len(batch.logs), batch.nbytes, size, batch.room)
                and self.buffered_bytes + cost <= self._max_buffered_bytes
            ):
                batch.logs.append(log)
                batch.origins.append(origin)
                batch.nbytes += size
                self.buffered_bytes += cost
                return []
        closed = []
        if batch is not None and not self._limits.fits(
            len(batch.logs), batch.nbytes, size, batch.room
        ):
            closed.append(self._close(group))
            batch = None
        if batch is None:
            batch = self._open[group] = _Open(self._limits.room(group))
            self.buffered_bytes += OPEN_BATCH_COST
        batch.logs.append(log)
        batch.origins.append(origin)
        batch.nbytes += size
        self.buffered_bytes += cost
        if len(batch.logs) >= self._limits.max_logs:
            closed.append(self._close(group))
        while self.buffered_bytes > self._max_buffered_bytes:
            closed.append(self._close(next(iter(self._open))))
        return closed

    def _close(self, group: LogGroup) -> Batch:
        batch = self._open.pop(group)
        self.buffered_bytes -= batch.nbytes + LOG_COST * len(batch.logs) + OPEN_BATCH_COST
        return Batch.of(group, batch.logs, batch.origins, self._window)
