"""Batches: the immutable value one request carries, and the batcher that cuts elements
into them, one open batch per log group, within the request limits and a memory bound."""

from __future__ import annotations

import gc
import marshal
import operator
import pickle
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, islice
from typing import Any, NamedTuple

import orjson
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from sls_beam import accelerated, grouping
from sls_beam.errors import InvalidLogError
from sls_beam.json_lines import EncodedLines, JsonLines, NotJsonError, line_starts, parse_line
from sls_beam.preparing import LogPreparer, callable_raised, log_content, names_own_group
from sls_beam.wire import BatchLimits, KeptRun, LogGroup, encode_plain, logs_from_wire

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
      pieces: the logs' JSON in order, in pieces (each a log's, or a run's joined by
        commas): the middle of the request body, joined by commas where it is made
        (:func:`wire.encode_pieces`, off the batching thread). Not joined here: with
        many groups, a batch's pieces have left the processor's cache by its close,
        and a join there wrote them all again, one copy more than the request's own.
      origins: for each log, what it came from: the element, its WindowedValue,
        or (logs buffered in Beam state) the log as sent, decoded when read.
      window: the WindowedValue every log is reported in, or ``None`` when
        each origin is a WindowedValue of its own.
      logs: each log's JSON when known; ``None`` for plain logs encoded in
        bulk, whose origins are those logs (made again if the batch is split).
    """

    group: LogGroup
    pieces: Sequence[bytes]
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
        """A batch of logs each encoded on its own (its pieces are those logs)."""
        return cls(group, logs, origins, window, logs)

    @property
    def joined(self) -> bytes:
        """The logs' JSON joined by commas (made anew on each read): a chunk of the
        stateful path, buffered in Beam state."""
        return b",".join(self.pieces)

    @property
    def count(self) -> int:
        """How many logs the batch holds."""
        return len(self.origins)

    def element(self, index: int) -> Any:
        """What log ``index`` came from (for a failed record)."""
        origin = self.origins[index]
        return origin if self.window is not None else origin.value

    def in_window(self, index: int, value: Any) -> WindowedValue:
        """``value`` in the window (and with the timestamp) of log ``index``. A shared
        window spares reading the origins (unpacked only when a log fails)."""
        origin = self.origins[index] if self.window is None else None
        return in_window(origin, self.window, value)

    def halves(self) -> tuple[Batch, Batch]:
        """Two new batches of the first and second half, to isolate a refused log."""
        logs = self.logs
        if logs is None:  # encoded in bulk: each log on its own now
            logs = [encode_plain(log_content(origin)) for origin in self.origins]
        middle = self.count // 2
        return (
            Batch.of(self.group, logs[:middle], self.origins[:middle], self.window),
            Batch.of(self.group, logs[middle:], self.origins[middle:], self.window),
        )


class _Runs(Sequence):
    """Items kept a run at a time (each run stored compactly), a run unpacked when one
    of its items is first read: the origins of a batch, read only when it fails."""

    def __init__(self, runs: Sequence, counts: Sequence[int]):
        self._runs = runs
        self._ends = list(accumulate(counts))
        self._unpacked: dict[int, list] = {}

    def _unpack(self, run) -> list:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        run = bisect_right(self._ends, index)
        if run not in self._unpacked:
            self._unpacked[run] = self._unpack(self._runs[run])
        return self._unpacked[run][index - (self._ends[run - 1] if run else 0)]


class SentChunks(_Runs):
    """The origins of logs buffered in Beam state, in chunks (each a run of logs' JSON
    joined by commas, and its count): the logs as sent, a chunk decoded when first read."""

    def _unpack(self, chunk: bytes) -> list:
        return orjson.loads(b"[" + chunk + b"]")


class PackedElements(_Runs):
    """Elements kept packed, a run at a time, and unpacked only when read (a failure).

    A batch waits for its answer while thousands more logs arrive; holding its
    elements as dicts would have Python's garbage collector move them all to
    its oldest generation and traverse the whole heap again and again
    (measured: ~5 µs a log, a third of the sink's time). Packed, a run of
    elements is one bytes object the collector never looks at, and less memory.

    Args:
      runs: each run's elements: what the C encoder kept of its logs (their own
        JSON, or their wire JSON and kinds: see LogEncoder.encode_runs_keeping),
        or packed by :func:`pack_run` (or a list, kept as it is when the
        collector ignores them or pickle refused one).
      counts: how many elements each run holds.
    """

    def _unpack(self, run: bytes | KeptRun | list | _LinesRun) -> list:
        kind = run.__class__
        if kind is list:
            return run
        if kind is _LinesRun:
            return run.logs()
        if kind is not bytes:  # what the C encoder kept: a KeptRun
            return logs_from_wire(run.wire, run.kinds)
        first = run[0]
        if first == _JSON:
            return orjson.loads(b"[" + run + b"]")
        return pickle.loads(run) if first == _PICKLED else marshal.loads(run)


class _LinesRun(NamedTuple):
    """The origins of a run of logs the C encoder wrote from a :class:`JsonLines`'s
    lines: the element and where each log's line starts; each made when first read."""

    lines: JsonLines
    starts: memoryview

    def logs(self) -> list:
        return list(map(self.lines.log_at, self.starts))


#: The first byte of a pickle (its PROTO opcode), and of logs' JSON joined by commas (a
#: JSON object's); marshal's data of a list begins with ``[`` or ``[`` | 0x80.
_PICKLED = pickle.PROTO[0]
_JSON = ord("{")


def pack_run(elements: list, logs: list) -> bytes | list:
    """A run of elements packed for :class:`PackedElements`; the list itself when the
    collector does not look at them (dicts of strings and numbers only: CPython leaves
    them untracked) or pickle refuses one of them (a value of the user's).

    Elements that are the very logs the bulk encoder took (``logs``) go to
    ``marshal``, ~30 % faster than pickle: their values are of the exact types it
    writes as they are (it refuses subclasses and other types, which orjson may
    have taken in a nested value: those runs are pickled). Other elements (a
    NamedTuple, a dataclass) are pickled: marshal knows no class of the user's,
    and would turn a ``bytearray`` into ``bytes``."""
    if not any(map(gc.is_tracked, elements)):
        return elements
    if all(map(operator.is_, elements, logs)):
        try:
            return marshal.dumps(elements)
        except ValueError:  # unmarshallable: a subclass, a type of the user's
            pass
    try:
        return pickle.dumps(elements, pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - whatever a user's __reduce__ raises
        return elements


class Added(NamedTuple):
    """What adding an element closed: batches to send, and elements refused:
    (element, origin, why)."""

    batches: list[Batch]
    invalid: list[tuple[Any, Any, InvalidLogError]]


def _merged(outcomes: Iterable[Added | None]) -> Added | None:
    """What several additions closed, together; ``None`` when none closed anything."""
    merged = None
    for added in outcomes:
        if added is None:
            continue
        if merged is None:
            merged = added
        else:
            merged.batches.extend(added.batches)
            merged.invalid.extend(added.invalid)
    return merged


#: Elements of the bulk lane wait, over all groups, until there are this many;
#: then they are encoded and packed. Few enough that they are still young for
#: the garbage collector when they go (its first generation is 700 new objects:
#: a typed log with a nested object is 3 or 4); measured on typed logs, 128 beat
#: 64, 256 and 1024 (1024: 30 % slower). Dicts of strings and numbers only,
#: which the collector does not track, wait for a batch's worth (``max_logs``),
#: encoded by one orjson call.
WAITING_LOGS = 128

#: Elements a DoFn gathers before it hands them to KeyedBatcher.add_elements together
#: (global-window input without event times): as many as the bulk lane encodes at once.
HANDOVER_ELEMENTS = WAITING_LOGS

#: The first batches of this many groups are sent early, each a little earlier (see
#: KeyedBatcher._full_at): enough to spread the batches of groups that fill in step.
STAGGERED_GROUPS = 16

#: An element timestamp at or before this is none (Beam's MIN_TIMESTAMP): it leaves a
#: log to the bulk lane, where a signed log's time is that of its encoding.
_NO_TIME = MIN_TIMESTAMP.micros

#: The dict methods the bulk lane reads a log through (C-level, as orjson does).
_DICT_READS = ("__iter__", "__getitem__", "__len__", "keys", "values", "items", "get")
_plain_dict_classes: dict[type, bool] = {dict: True}


def _is_plain_dict(cls: type) -> bool:
    """Whether ``cls`` is ``dict`` or a subclass that reads as one (only adds attributes)."""
    try:
        return _plain_dict_classes[cls]
    except KeyError:
        plain = issubclass(cls, dict) and all(
            getattr(cls, name) is getattr(dict, name) for name in _DICT_READS
        )
        if len(_plain_dict_classes) < 1000:  # bounded, even for classes made on the fly
            _plain_dict_classes[cls] = plain
        return plain


class _Open:
    """A batch being filled: its pieces (a log's JSON, or a run of logs joined), its
    origins in runs (each a list, or packed by :func:`pack_run`) and their counts,
    the count of logs, their bytes without the commas between them, the group's
    room, and what the batch counts in ``buffered_bytes``."""

    __slots__ = ("pieces", "runs", "counts", "count", "nbytes", "room", "full_at", "cost", "loose")

    def __init__(self, room: int, full_at: int):
        self.pieces: list[bytes] = []
        self.runs: list[bytes | list] = []
        self.counts: list[int] = []
        self.count = 0
        self.nbytes = 0
        self.room = room
        self.full_at = full_at  # logs: the batch is sent once it holds as many
        self.cost = OPEN_BATCH_COST
        self.loose = False  # the last run holds the origins of logs added one by one

    def add_log(self, log: bytes, origin: Any, cost: int) -> None:
        """One log's JSON, its origin, and what it costs in ``buffered_bytes``."""
        self.pieces.append(log)
        if self.loose:
            self.runs[-1].append(origin)
            self.counts[-1] += 1
        else:
            self.runs.append([origin])
            self.counts.append(1)
            self.loose = True
        self.count += 1
        self.nbytes += len(log)
        self.cost += cost

    def add_run(self, joined: bytes, count: int, origins: Any, cost: int | None = None) -> int:
        """A run of ``count`` logs' JSON joined by commas, and their origins (packed, or a
        list of the elements: never added to), costing ``cost`` in ``buffered_bytes``;
        by default the origins are what the encoder kept of the logs (see
        LogEncoder.encode_runs_keeping), which cost nothing beside their wire JSON
        where they are that JSON (all-str logs), else their kinds. Returns the cost."""
        size = len(joined)
        if cost is None:
            cost = size if origins is joined else size + len(origins.kinds)
        self.pieces.append(joined)
        self.runs.append(origins)
        self.counts.append(count)
        self.loose = False
        self.count += count
        self.nbytes += size - (count - 1)  # without the commas
        self.cost += cost
        return cost

    def batch(self, group: LogGroup, window: WindowedValue | None) -> Batch:
        if len(self.runs) == 1 and self.runs[0].__class__ is list:
            origins = self.runs[0]
        else:
            origins = PackedElements(self.runs, self.counts)
        if len(self.pieces) == self.count:  # each log on its own
            return Batch.of(group, self.pieces, origins, window)
        return Batch(group, self.pieces, origins, window)


def place_kept_runs(
    open_batches: dict[LogGroup, _Open],
    runs: list[tuple[LogGroup, tuple[list, list]]],
    encoded: list[bytes | None],
    kept_runs: list[bytes | KeptRun | None],
) -> tuple[int, list[int]]:
    """The bulk lane's common case, for all of a handover's runs in one call (in C where
    built): each run (group, (elements, contents)) whose logs the encoder wrote
    (``encoded``) and kept as what gives them back (``kept_runs``), each element its own
    content, added to its group's open batch where the run fits it (the size rule of
    BatchLimits.fits; the count's is met short of ``full_at``) and leaves it short of full.
    Returns what those runs cost in ``buffered_bytes``, and the indices of the others, in
    order, for the general way (:meth:`KeyedBatcher._place`): after a run left, its
    group's next runs are left too, so that a group's logs stay in order. A source per
    element makes ~16 runs of a handover's 128 logs; Python's steps a run cost ~0.3 µs,
    ~0.04 µs a log."""
    if accelerated.speedups is not None:
        return accelerated.speedups.place_runs(open_batches, runs, encoded, kept_runs)
    cost = 0
    left: list[int] = []
    left_groups = set()  # a group's logs stay in order: its runs after one left are left
    for index, ((group, (elements, contents)), joined, kept) in enumerate(
        zip(runs, encoded, kept_runs, strict=True)
    ):
        batch = open_batches.get(group)
        if (
            batch is not None
            and group not in left_groups
            and kept is not None
            and elements is contents
            and batch.count + len(elements) < batch.full_at
            and batch.nbytes + batch.count + len(joined) <= batch.room
        ):
            cost += batch.add_run(joined, len(elements), kept)
        else:
            left.append(index)
            left_groups.add(group)
    return cost, left


if accelerated.speedups is not None:
    accelerated.speedups.bind_open_batch(_Open)


class KeyedBatcher:
    """Elements → bounded batches, one open batch per group: the bundle path's batching.

    A batch is closed *before* logs that would overflow it are added (so no
    batch ever exceeds ``limits``) and as soon as it holds ``max_logs``. When
    what is buffered over all groups (the logs' JSON plus :data:`LOG_COST` a
    log, or their packed elements, and :data:`OPEN_BATCH_COST` an open batch)
    passes ``max_buffered_bytes``, the oldest open batches are closed early, in
    O(1) each, which bounds memory however many groups the input has.

    The bulk lane: with a shared ``window``, ``dict`` elements (and subclasses
    that read as dicts) wait per group, up to :data:`WAITING_LOGS` over all
    groups, and are then encoded a run at a time
    (:meth:`LogEncoder.encode_runs_keeping`) and kept as what gives them back (their
    wire JSON and its kinds) or packed (:class:`PackedElements`). A run that is not all plain
    takes the per-log path, which names any broken rule.

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
        self._bulk = window is not None and preparer.takes_bulk
        self._waiting: dict[LogGroup, tuple[list, list]] = {}  # elements, contents
        self._waiting_count = 0
        self._waiting_limit = WAITING_LOGS
        self._static_group = preparer.static_group
        self._static_waiting: tuple[list, list] | None = None
        # The dicts whose group is their callables' or their own fields' (see
        # _dynamic_runs): grouped and encoded a run at a time, the callables called on
        # all of them at once; and whether one of them names its own group fields.
        self._options = preparer.options
        self._source_callable = preparer.source_callable
        self._dynamic: list = []
        self._dynamic_own = False
        self._staggered: set[LogGroup] = set()  # groups whose first batch was sent early
        self.buffered_bytes = 0

    def add(self, element: Any, origin: Any, timestamp=None) -> Added | None:
        """Add one element; return what that closed, or ``None`` (the common case).

        ``origin`` is what a failure of this log is reported with: the element
        itself when the batcher has a shared window, else its WindowedValue.
        """
        if (
            self._bulk
            and (element.__class__ is dict or _is_plain_dict(element.__class__))
            and (timestamp is None or timestamp.micros <= _NO_TIME)
        ):
            if names_own_group(element):
                return self._wait_in_group(element)
            return self._wait_plain([element])
        if isinstance(element, JsonLines):
            return self._add_lines(element, origin, timestamp)
        try:
            group, data = self._preparer.prepare(element, timestamp)
        except InvalidLogError as e:
            return Added([], [(element, origin, e)])
        added = Added([], [])
        self._add(group, data, origin, added)
        return added if added.batches else None

    def add_elements(self, elements: list) -> Added | None:
        """Add elements of the shared window without event times, each its own origin, in
        order: the same as :meth:`add` of each, in fewer Python steps. Beam calls a DoFn
        once an element; a DoFn that gathers elements and hands them over together spares
        the batcher's per-element checks (~0.15 µs a log): one scan (in C where built,
        :func:`grouping.element_runs`) finds the runs of plain dicts, which go to the bulk lane
        whole, and of dicts naming their own topic, source or tags, which wait together
        (see :meth:`_dynamic_runs`); the others are added one by one."""
        if not self._bulk:
            return _merged(self.add(element, element) for element in elements)
        outcomes = []
        start = 0
        for kind, end in grouping.element_runs(elements):
            run = elements[start:end]
            if kind == grouping.PLAIN_RUN:
                outcomes.append(self._wait_plain(run))
            elif kind == grouping.OWN_GROUP_RUN:
                self._dynamic += run
                self._dynamic_own = True
                outcomes.append(self._waited(len(run)))
            else:
                outcomes += [self.add(element, element) for element in run]
            start = end
        return _merged(outcomes)

    def _wait_plain(self, run: list) -> Added | None:
        """Plain dicts without group fields of their own (each its own content and origin)
        waiting in the bulk lane: with the constant group, else with the others whose group
        their callables give (see :meth:`_dynamic_runs`); encoded once enough wait."""
        if self._static_group is not None:
            # The common case, in few operations: the constant group, each element its
            # own content (one list holds both).
            waiting = self._static_waiting
            if waiting is not None:
                waiting[0].extend(run)
            elif self._static_group in self._waiting:  # apart: a log named it itself
                waiting = self._waiting[self._static_group]
                waiting[0].extend(run)
                waiting[1].extend(run)
            else:
                same = list(run)
                self._static_waiting = self._waiting[self._static_group] = (same, same)
        else:
            # A group per element (a source per file or host, a topic or tags of its
            # own): the callables called and the elements grouped a run at a time (see
            # _dynamic_runs), nearly as cheap as a constant group.
            self._dynamic.extend(run)
        return self._waited(len(run))

    def _wait_in_group(self, element: dict) -> Added | None:
        """A dict element waiting in the bulk lane with its group (its own fields', or its
        callables'); one whose group breaks a rule, or whose callable raised, fails."""
        try:
            group, content = self._preparer.group_of(element)
        except InvalidLogError as e:
            return Added([], [(element, element, e)])
        self._wait(group, element, content)
        return self._waited(1)

    def _waited(self, count: int) -> Added | None:
        """Count ``count`` more waiting elements; encode them all once enough wait."""
        self._waiting_count += count
        if self._waiting_count >= self._waiting_limit:
            return self._encode_waiting()
        return None

    def _add_lines(self, lines: JsonLines, origin: Any, timestamp) -> Added | None:
        """The logs of a :class:`JsonLines`: the lines the C encoder wrote placed in their
        group's batches a run at a time (with a shared window and no event time), the
        others (and all of them without it) parsed and added log by log."""
        added = Added([], [])
        encoded = None
        if self._bulk and (timestamp is None or timestamp.micros <= _NO_TIME):
            try:
                group = self._preparer.group_of_lines(lines)
            except InvalidLogError as e:  # a callable raised: each line fails with it
                for start in line_starts(lines.text):
                    log = lines.log_at(start)
                    added.invalid.append((log, log, e))
                return added
            encoded = self._preparer.encode_lines(lines.text)
            if encoded is None:  # built without the C encoder: parsed, into the bulk lane
                others = self._wait_lines(group, lines, added)
            else:
                others = self._place_lines(group, lines, encoded, added)
        else:
            others = line_starts(lines.text)
        for start in others:
            self._add_line(lines, start, origin, timestamp, added)
        self._make_room(added)
        return added if added.batches or added.invalid else None

    def _wait_lines(self, group: LogGroup, lines: JsonLines, added: Added) -> list:
        """Without the C encoder: each line parsed and its log waiting in the bulk lane,
        with its element's group; return the starts of the lines that name their own
        group fields (the per-log path's). A line that is not a JSON object fails."""
        others = []
        for start in line_starts(lines.text):
            try:
                content = parse_line(lines.line_at(start))
            except NotJsonError as e:
                log = lines.log_at(start)
                added.invalid.append((log, log, e))
                continue
            if names_own_group(content):
                others.append(start)
                continue
            self._wait(group, lines.log_at(start), content)
            encoded = self._waited(1)
            if encoded is not None:
                added.batches.extend(encoded.batches)
                added.invalid.extend(encoded.invalid)
        return others

    def _place_lines(
        self, group: LogGroup, lines: JsonLines, encoded: EncodedLines, added: Added
    ) -> list:
        """Put the logs the C encoder wrote in their group's batches, as many a run as
        fit each (cut at their ends: nothing written twice); return the starts of the
        lines left to the per-log path (the C encoder's, and a log too large alone)."""
        joined, ends, starts = encoded.joined, encoded.ends, encoded.starts
        others = list(encoded.others)
        count = len(ends)
        # The text is kept while a batch holds one of its logs: each run counts its share.
        text_share = len(lines.text) / max(count, 1)
        first = cut = 0  # the first log to place, and where it starts in `joined`
        while first < count:
            batch = self._open.get(group) or self._start(group)
            room = batch.room - batch.nbytes - batch.count  # the bytes after a comma
            last = min(count, first + batch.full_at - batch.count)
            end = bisect_right(ends, cut + room, first, last)
            if end == first:  # the next log does not fit
                if batch.count:
                    added.batches.append(self._close(group))
                else:  # alone larger than a request: the per-log path says so
                    others.append(starts[first])
                    first += 1
                    cut = ends[first - 1] + 1
                continue
            piece = joined[cut : ends[end - 1]]
            cost = len(piece) + int(text_share * (end - first)) + 8 * (end - first)
            batch.add_run(piece, end - first, _LinesRun(lines, starts[first:end]), cost)
            self.buffered_bytes += cost
            if batch.count >= batch.full_at:
                added.batches.append(self._close(group))
            first, cut = end, ends[end - 1] + 1
        return others

    def _add_line(self, lines: JsonLines, start: int, origin: Any, timestamp, added: Added):
        """One line of a JsonLines, parsed, on the per-log path; a line that is not a
        JSON object, or breaks a rule, fails alone."""
        log = lines.log_at(start)
        if self._window is None:  # each log reported in its element's window
            origin = origin.with_value(log)
        else:
            origin = log
        try:
            group, data = self._preparer.prepare_line(lines, lines.line_at(start), timestamp)
        except InvalidLogError as e:
            added.invalid.append((log, origin, e))
            return
        self._add(group, data, origin, added)

    def _wait(self, group: LogGroup, element: Any, content: Any) -> None:
        waiting = self._waiting.get(group)
        if waiting is None or waiting[0] is waiting[1]:
            waiting = self._waiting[group] = (
                ([], []) if waiting is None else (waiting[0], list(waiting[1]))
            )
            if group == self._static_group:  # the constant group, by a log's own fields
                self._static_waiting = None
        waiting[0].append(element)
        waiting[1].append(content)

    def drain(self) -> Added:
        """Close and return everything buffered."""
        added = self._encode_waiting(draining=True)
        added.batches.extend(self._close(group) for group in list(self._open))
        return added

    def in_window(self, origin: Any, value: Any) -> WindowedValue:
        """``value`` in the window of the element that ``origin`` stands for."""
        return in_window(origin, self._window, value)

    def _encode_waiting(self, draining: bool = False) -> Added | None:
        if (
            not draining
            and self._waiting_limit < self._limits.max_logs
            and not any(
                map(
                    gc.is_tracked,
                    chain(
                        chain.from_iterable(e for e, _ in self._waiting.values()),
                        self._dynamic,
                    ),
                )
            )
        ):
            self._waiting_limit = self._limits.max_logs  # untracked: they may wait for more
            return None
        self._waiting_limit = WAITING_LOGS
        added = Added([], [])
        dynamic, own = self._dynamic, self._dynamic_own
        self._dynamic, self._dynamic_own = [], False
        runs = self._dynamic_runs(dynamic, own, added) if dynamic else []
        runs += self._waiting.items()
        self._waiting, self._waiting_count = {}, 0
        self._static_waiting = None
        if not runs:
            return added
        encoded, kept_runs = self._preparer.encode_runs_keeping(
            [contents for _, (_, contents) in runs], own_groups=own
        )
        cost, left = place_kept_runs(self._open, runs, encoded, kept_runs)
        self.buffered_bytes += cost
        for index in left:
            group, (elements, contents) = runs[index]
            self._place(group, elements, contents, encoded[index], kept_runs[index], added)
        self._make_room(added)
        return added

    def _dynamic_runs(
        self, elements: list, own: bool, added: Added
    ) -> list[tuple[LogGroup, tuple]]:
        """The dicts waiting with a group of their own (``own``: one names its own topic,
        source or tags) or of their callables, as runs, per group: each callable called on
        them all by ``map``, the dicts grouped by what sets their group (in C where
        built), each its own content (the encoder leaves a log's own fields out of the
        wire JSON, and keeps them beside it for a failed record). One whose callable
        raised, or whose group breaks a rule, fails; one whose fields are not str (tags:
        a dict of str) takes the general way, its content a copy without the fields."""
        if not own and self._source_callable is not None:
            return self._sourced_runs(elements, added)  # the usual case, in fewer steps
        elements, columns = self._called_columns(elements, added)
        runs: list = []
        loose: dict[LogGroup, tuple[list, list]] = {}
        field_groups = self._preparer.field_groups
        for key, run in grouping.group_by_fields(elements, *columns, own).items():
            if key[0] is ...:  # a log of its own: its group the general way
                called = tuple(
                    option if column is None else column[key[1]]
                    for option, column in zip(self._options, columns, strict=True)
                )
                element = run[0]
                try:
                    group, content = self._preparer.group_of_called(element, called)
                except InvalidLogError as e:
                    added.invalid.append((element, element, e))
                    continue
                waiting = loose.setdefault(group, ([], []))
                waiting[0].append(element)
                waiting[1].append(content)
                continue
            try:
                group = field_groups[key]
            except InvalidLogError as e:  # its group breaks a rule: each of its logs fails
                added.invalid.extend((element, element, e) for element in run)
                continue
            runs.append((group, (run, run)))
        return runs + list(loose.items())

    def _called_columns(self, elements: list, added: Added) -> tuple[list, list]:
        """The elements whose callables all returned, and what each callable (topic,
        source, tags) gave for each (``None`` for an option that is not a callable)."""
        columns: list = []
        for name, option in zip(("topic", "source", "tags"), self._options, strict=True):
            if not callable(option):
                columns.append(None)
                continue
            kept, values, failed = self._values_of(option, name, elements, added)
            if failed:  # reported: left out of the columns already made too
                dropped = set(failed)
                columns = [
                    None
                    if column is None
                    else [value for i, value in enumerate(column) if i not in dropped]
                    for column in columns
                ]
            elements = kept
            columns.append(values)
        return elements, columns

    def _sourced_runs(self, elements: list, added: Added) -> list[tuple[LogGroup, tuple]]:
        """The waiting elements of a source callable alone (none names its own group
        fields) as runs, per group (each element its own content): the callable called on
        each by ``map`` and the elements grouped by what it gave, in C where built. One
        whose call raised, or whose source breaks a rule, fails alone."""
        elements, sources, _ = self._values_of(self._source_callable, "source", elements, added)
        try:
            by_source = list(grouping.group_by(sources, elements).items())
        except TypeError:  # a source that is not hashable (refused below): a run a log
            pairs = zip(sources, elements, strict=True)
            by_source = [(source, [element]) for source, element in pairs]
        runs = []
        preparer = self._preparer
        source_groups, group_of_source = preparer.source_groups, preparer.group_of_source
        for source, run in by_source:
            try:
                if source.__class__ is str:
                    group = source_groups[source]
                else:
                    group = group_of_source(source)
            except InvalidLogError as e:  # the source breaks a rule: each of its logs fails
                added.invalid.extend((element, element, e) for element in run)
            else:
                runs.append((group, (run, run)))
        return runs

    @staticmethod
    def _values_of(
        option: Callable[[Any], Any], name: str, elements: list, added: Added
    ) -> tuple[list, list, list[int]]:
        """The elements whose ``name`` callable returned, what it returned for each, and
        the places of those whose call raised, which fail (the others are called once
        each)."""
        values: list = []
        failed: list[int] = []
        kept = elements
        start = 0
        while True:
            called = len(values)
            try:
                # islice costs ~50 instructions a log: only past a call that raised.
                rest = islice(elements, start, None) if start else elements
                values.extend(map(option, rest))
                break
            except Exception as e:  # noqa: BLE001 - the user's callable
                place = start + len(values) - called
                if kept is elements:
                    kept = elements[:place]
                else:
                    kept += elements[start:place]
                failed.append(place)
                added.invalid.append((elements[place], elements[place], callable_raised(name, e)))
                start = place + 1
        if kept is not elements:
            kept += elements[start:]
        return kept, values, failed

    def _place(
        self,
        group: LogGroup,
        elements: list,
        contents: list,
        joined: bytes | None,
        kept: bytes | KeptRun | None,
        added: Added,
    ) -> None:
        """Put a group's waiting elements (``joined``: their JSON, if encoded in bulk;
        ``kept``: what gives the logs back, if any) in its open batch, in order, in runs
        that fill it; encode again what is cut."""
        limits = self._limits
        batch = self._open.get(group)
        if (  # the common case: the run fits the open batch
            joined is not None
            and batch is not None
            and limits.fits(batch.count, batch.nbytes, len(joined), batch.room, len(elements))
        ):
            self._append_run(group, batch, joined, elements, contents, added, kept)
            self._make_room(added)
            return
        whole = contents
        runs = deque([(elements, contents)])
        while runs:
            elements, contents = runs.popleft()
            batch = self._open.get(group)
            free = limits.max_logs - (batch.count if batch else 0)
            if len(elements) > free:
                runs.appendleft((elements[free:], contents[free:]))
                elements, contents = elements[:free], contents[:free]
            if contents is not whole:  # a part: encoded on its own (and packed)
                joined, kept = self._preparer.encode_many(contents), None
            if joined is None:  # not all plain: log by log, which names any problem
                for element, content in zip(elements, contents, strict=True):
                    self._add_one(group, element, content, added)
                continue
            if batch is None:
                batch = self._start(group)
            if limits.fits(batch.count, batch.nbytes, len(joined), batch.room, len(elements)):
                self._append_run(group, batch, joined, elements, contents, added, kept)
                continue
            if len(elements) > 1:
                # Fill the batch: first the logs that may still fit (as the run's mean
                # size says; at most all but one), the rest after.
                left = batch.room - batch.nbytes - batch.count
                first = left * len(elements) // len(joined) if batch.count else len(elements) // 2
                first = min(max(first, 1), len(elements) - 1)
                runs.appendleft((elements[first:], contents[first:]))
                runs.appendleft((elements[:first], contents[:first]))
            elif batch.count:  # one log, and no room for it here: a new batch
                added.batches.append(self._close(group))
                runs.appendleft((elements, contents))
            else:  # one log larger than any request: the per-log path says so
                self._add_one(group, elements[0], contents[0], added)
        self._make_room(added)

    def _append_run(
        self,
        group: LogGroup,
        batch: _Open,
        joined: bytes,
        elements: list,
        contents: list,
        added: Added,
        kept: bytes | KeptRun | None = None,
    ) -> None:
        """Add a run to ``batch``, its elements kept as what the encoder ``kept`` of the
        logs when they are those logs, else packed; send the batch if that filled it."""
        if kept is not None and (
            elements is contents or all(map(operator.is_, elements, contents))
        ):
            self.buffered_bytes += batch.add_run(joined, len(elements), kept)
        else:
            packed = pack_run(elements, contents)
            packed_cost = LOG_COST * len(elements) if packed is elements else len(packed)
            self.buffered_bytes += batch.add_run(
                joined, len(elements), packed, len(joined) + packed_cost
            )
        if batch.count >= batch.full_at:
            added.batches.append(self._close(group))

    def _add_one(self, group: LogGroup, element: Any, content: Any, added: Added) -> None:
        if names_own_group(content):  # a log of the own-group runs: its fields are its group
            content = log_content(content)
        try:
            data = self._preparer.encode_log(content, group)
        except InvalidLogError as e:
            added.invalid.append((element, element, e))
            return
        self._add(group, data, element, added)

    def _add(self, group: LogGroup, log: bytes, origin: Any, added: Added) -> None:
        batch = self._open.get(group)
        size = len(log)
        cost = size + LOG_COST
        if batch is not None:
            # The common case, in few operations: room in the batch and in the buffer, and
            # the batch not full after this log.
            if (
                batch.count + 1 < batch.full_at
                and self._limits.fits(batch.count, batch.nbytes, size, batch.room)
                and self.buffered_bytes + cost <= self._max_buffered_bytes
            ):
                batch.add_log(log, origin, cost)
                self.buffered_bytes += cost
                return
        if batch is not None and not self._limits.fits(batch.count, batch.nbytes, size, batch.room):
            added.batches.append(self._close(group))
            batch = None
        if batch is None:
            batch = self._start(group)
        batch.add_log(log, origin, cost)
        self.buffered_bytes += cost
        if batch.count >= batch.full_at:
            added.batches.append(self._close(group))
        self._make_room(added)

    def _start(self, group: LogGroup) -> _Open:
        batch = self._open[group] = _Open(self._limits.room(group), self._full_at(group))
        self.buffered_bytes += batch.cost
        return batch

    def _full_at(self, group: LogGroup) -> int:
        """How many logs the group's new batch is sent at: ``max_logs``, but for the first
        batch of each of the first :data:`STAGGERED_GROUPS` groups, sent a little earlier
        each (down to half). Groups whose logs come interleaved (a source per host)
        would otherwise fill their batches in step, all sent at once, for ever: the
        worker would stall on each burst until all but ``max_in_flight`` are answered."""
        max_logs = self._limits.max_logs
        if len(self._staggered) >= STAGGERED_GROUPS or group in self._staggered:
            return max_logs
        self._staggered.add(group)
        return max_logs - (len(self._staggered) - 1) * max_logs // (2 * STAGGERED_GROUPS)

    def _make_room(self, added: Added) -> None:
        while self.buffered_bytes > self._max_buffered_bytes and self._open:
            added.batches.append(self._close(next(iter(self._open))))

    def _close(self, group: LogGroup) -> Batch:
        batch = self._open.pop(group)
        self.buffered_bytes -= batch.cost
        return batch.batch(group, self._window)
