"""The PutWebTracking wire format: pure functions and values, no I/O.

One request carries logs of a single (topic, source, tags) group::

    POST /logstores/{logstore}/track
    x-log-apiversion: 0.6.0
    x-log-bodyrawsize: <UTF-8 byte length of the JSON below>
    x-log-compresstype: lz4 | deflate          (absent when uncompressed)
    Content-Type: application/json

    {"__logs__": [{"key": "value", ...}, ...],
     "__tags__": {"k": "v"}, "__topic__": "t", "__source__": "s"}

(the official web SDK's order; a group field is left out when empty).

``lz4`` is a raw LZ4 *block* (no frame, no size prefix); ``deflate`` is
zlib-wrapped (RFC 1950). Every value on the wire is a string.

Value rules (how a Python value becomes the string the service stores):

============================  =================================================
Python value                  string sent
============================  =================================================
``str``                       as is (must be valid UTF-8: no lone surrogates);
                              a subclass (a ``str`` enum) by its characters
``bytes``                     decoded as UTF-8 (an error if it is not UTF-8)
``bool``                      ``"true"`` / ``"false"``
``None``                      ``"null"``
``int``                       decimal digits (however many)
``float``                     shortest round-trip form (``"1.5"``); NaN and
                              infinities as ``"NaN"``, ``"Infinity"``,
                              ``"-Infinity"``
``dict``, ``list``, ``tuple``  compact JSON (a NamedTuple as a list; non-finite
                              floats inside become ``null``, other objects
                              their ``str()``)
``datetime``, ``date``        ISO 8601
anything else                 ``str(value)``
============================  =================================================

Key rules: a key is a non-empty ``str`` of at most 128 UTF-8 bytes and is not
one of the service's reserved names (``__topic__``, ``__source__``,
``__tag__:…``, ``__partition_time__``, ``__extract_others__``,
``_extract_others_``, ``__raw__``, ``__raw_log__``). ``__time__`` is
overwritten by the service with the arrival time, so a log that carries it
is only accepted when an ``event_time_key`` is configured: the value then
travels in that field instead. A value is at most 1 MiB of UTF-8. A ``str``
subclass key (a ``str`` enum) is written by its characters; two keys that
give the same field are an error naming both. A value whose conversion
raises (its ``__str__``, a ``tzinfo``) is an error naming the key and the
exception, never a crash.
"""

from __future__ import annotations

import datetime
import functools
import math
import operator
import re
import time
import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, repeat
from typing import Any, NamedTuple, Protocol

import lz4.block
import orjson

from sls_beam import accelerated
from sls_beam.errors import InvalidLogError, describe, excerpt, key_text

API_VERSION = "0.6.0"

#: The service's limits for one PutWebTracking request.
SERVICE_MAX_LOGS = 4096
SERVICE_MAX_RAW_BYTES = 3 * 1024 * 1024
#: The smallest ``max_batch_bytes`` allowed: room for a group's fields and a log.
MIN_BATCH_BYTES = 1024
#: The service's limits for one key and one value (UTF-8 bytes).
MAX_KEY_BYTES = 128
MAX_VALUE_BYTES = 1024 * 1024
#: Topic, source, tag keys and tag values are at most this many UTF-8 bytes.
MAX_GROUP_FIELD_BYTES = 128

COMPRESSIONS = ("lz4", "deflate", "none")
DEFAULT_COMPRESSION = "lz4"

RESERVED_KEYS = frozenset(
    {
        "__topic__",
        "__source__",
        "__partition_time__",
        "__extract_others__",
        "_extract_others_",
        "__raw__",
        "__raw_log__",
    }
)
TIME_KEY = "__time__"
TAG_KEY_PREFIX = "__tag__:"

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
#: A str of at most this many characters is surely within MAX_VALUE_BYTES of UTF-8.
_SURELY_SHORT_CHARS = MAX_VALUE_BYTES // 4


def utf8_len(text: str) -> int:
    """UTF-8 byte length of ``text`` (lone surrogates counted as 3 bytes)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _check_short_field(name: str, value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidLogError(name, f"{what} must be a str, not {type(value).__name__}")
    value = str.__str__(value)  # a str enum: its characters
    if utf8_len(value) > MAX_GROUP_FIELD_BYTES:
        raise InvalidLogError(name, f"{what} must be at most {MAX_GROUP_FIELD_BYTES} UTF-8 bytes")
    _check_utf8(name, value)
    return value


def _check_utf8(key: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidLogError(
            key, f"value is not valid UTF-8 (lone surrogate at index {e.start})"
        ) from None


def key_rule_violation(key: Any) -> str | None:
    """Return why ``key`` cannot name a log field, or ``None`` if it can."""
    if not isinstance(key, str):
        return f"keys must be str, not {type(key).__name__}"
    if not key:
        return "keys must not be empty"
    if utf8_len(key) > MAX_KEY_BYTES:
        return f"keys must be at most {MAX_KEY_BYTES} UTF-8 bytes"
    if key in RESERVED_KEYS or key.startswith(TAG_KEY_PREFIX):
        return "is reserved by the service (use another name)"
    if key == TIME_KEY:
        return (
            "is replaced by the service with the arrival time; set event_time_key "
            "(--event-time-field in the example pipelines) to keep it in a field of that name"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "keys must be valid UTF-8 (no lone surrogates)"
    return None


class LogGroup(tuple):
    """What one request shares: topic, source and tags (validated, hashable).

    Build it with :meth:`of`, which checks every rule and raises
    :class:`InvalidLogError` naming the field. A group is a dict key for
    every run of logs on the hot path: as a tuple (topic, source, tags) its
    hash and equality are the tuple's, in C, where a class's own ``__hash__``
    cost a Python call each lookup (~0.1 µs). It keeps its request's body
    suffix once made.
    """

    def __new__(cls, topic: str = "", source: str = "", tags: tuple[tuple[str, str], ...] = ()):
        return tuple.__new__(cls, (topic, source, tags))

    topic = property(operator.itemgetter(0), doc="The topic (str; empty for none).")
    source = property(operator.itemgetter(1), doc="The source (str; empty for none).")
    tags = property(operator.itemgetter(2), doc="The tags: (key, value) pairs of str, by key.")

    def __repr__(self) -> str:
        return f"LogGroup(topic={self[0]!r}, source={self[1]!r}, tags={self[2]!r})"

    def __reduce__(self):
        # Leave the cached suffix behind: made again where it is needed.
        return (LogGroup, tuple(self))

    @classmethod
    def of(cls, topic: Any = "", source: Any = "", tags: Mapping[str, Any] | None = None):
        """A validated group. Tag values are written by the log value rules
        (``True`` → ``"true"``, a list → JSON); topic and source must be str."""
        topic = "" if topic is None else topic
        source = "" if source is None else source
        topic = _check_short_field("__topic__", topic, "topic")
        source = _check_short_field("__source__", source, "source")
        items = []
        for key, value in (tags or {}).items():
            if not isinstance(key, str) or not key:
                raise InvalidLogError("__tags__", f"tag keys must be non-empty str, got {key!r}")
            name = f"__tags__.{key}"
            key = _check_short_field(name, key, "tag key")
            items.append((key, _check_short_field(name, stringify(name, value), "tag value")))
        return cls(topic, source, tuple(sorted(items)))

    def body_suffix(self) -> bytes:
        """The JSON that follows the logs in a request body: the group's fields, as the
        official web SDK writes them (tags, topic, source; each only when set)."""
        try:
            return self._suffix
        except AttributeError:
            tail = b"]"
            if self.tags:
                tail += b',"__tags__":' + orjson.dumps(dict(self.tags))
            if self.topic:
                tail += b',"__topic__":' + orjson.dumps(self.topic)
            if self.source:
                tail += b',"__source__":' + orjson.dumps(self.source)
            object.__setattr__(self, "_suffix", tail + b"}")
            return self._suffix

    def overhead_bytes(self) -> int:
        """Raw bytes a request of this group adds around its logs."""
        return len(_BODY_PREFIX) + len(self.body_suffix())


_BODY_PREFIX = b'{"__logs__":['


@dataclass(frozen=True)
class BatchLimits:
    """Bounds on one request: log count and raw (uncompressed) JSON bytes.

    Both default to the service's limits and may only be lowered.
    """

    max_logs: int = SERVICE_MAX_LOGS
    max_bytes: int = SERVICE_MAX_RAW_BYTES

    def __post_init__(self):
        if not 1 <= self.max_logs <= SERVICE_MAX_LOGS:
            raise ValueError(
                f"max_batch_logs must be within 1..{SERVICE_MAX_LOGS}, not {self.max_logs!r}"
            )
        if not MIN_BATCH_BYTES <= self.max_bytes <= SERVICE_MAX_RAW_BYTES:
            raise ValueError(
                f"max_batch_bytes must be within {MIN_BATCH_BYTES}..{SERVICE_MAX_RAW_BYTES}, "
                f"not {self.max_bytes!r}"
            )

    def room(self, group: LogGroup) -> int:
        """Raw bytes that the logs of one request of ``group``, and the commas
        between them, may take: the size rule's one home."""
        return self.max_bytes - group.overhead_bytes()

    def fits(self, count: int, logs_bytes: int, size: int, room: int, logs: int = 1) -> bool:
        """Whether ``logs`` more logs, ``size`` bytes joined by commas, fit beside
        ``count`` logs of ``logs_bytes`` in all (without commas), within a
        group's :meth:`room`. Each log after the first costs one more byte:
        the comma before it."""
        return count + logs <= self.max_logs and logs_bytes + count + size <= room


class LogEncoder:
    """Turns one log (a mapping) into its compact JSON bytes, once.

    The encoded bytes are what a request carries, so each log is measured and
    serialised exactly once. The encoder remembers which keys it already
    validated (the set of distinct keys in a log stream is small), which keeps
    the per-log Python work to one pass over the fields.

    Args:
      event_time_key: field that carries the event time. A log's own
        ``__time__`` moves there, and :meth:`encode`'s ``event_time`` fills it
        when the log has neither.
      max_log_bytes: a log whose JSON is larger than this can never be sent
        and is rejected here (bytes).
      log_time: give each log ``__time__``, a JSON number of Unix seconds (the
        signed path, where the service keeps it): the log's own ``__time__``,
        else :meth:`encode`'s ``event_time``, else the time of encoding. It is
        written last in the log, as the official web SDK writes it.
    """

    def __init__(
        self,
        event_time_key: str | None = None,
        max_log_bytes: int = SERVICE_MAX_RAW_BYTES,
        log_time: bool = False,
    ):
        if event_time_key is not None:
            problem = key_rule_violation(event_time_key)
            if problem:
                raise ValueError(f"event_time_key {event_time_key!r}: {problem}")
        self.event_time_key = event_time_key
        self.max_log_bytes = max_log_bytes
        self.log_time = log_time
        self._valid_keys: set[str] = set()

    def encode(self, log: Mapping[str, Any], event_time: str | None = None) -> bytes:
        """Return the compact UTF-8 JSON object for ``log``.

        Raises:
          InvalidLogError: naming the key and the rule, if the log breaks one.
        """
        if log.__class__ is dict and log and not self.event_time_key and not self.log_time:
            if self._valid_keys.issuperset(log):
                data = _encode_known(log)
                if data is not None and len(data) <= self.max_log_bytes:
                    return data
        return self._dump(self._normalise(log, event_time))

    def encode_many(self, logs: Sequence[dict]) -> bytes | None:
        """The logs' JSON objects joined by commas, when every log is a plain one;
        else ``None``.

        "Plain": a non-empty dict whose keys were all validated before and
        whose values are of the common exact types (``str``, ``int``,
        ``float``, ``bool``, ``None``, ``dict``, ``list``). Where the package
        was built with its C encoder (``sls_beam/_speedups.c``), that writes
        them, log after log. Without it, all-str logs are written by one
        ``orjson`` call, and others a column (one key over all logs) at a
        time in C: set and map operations check the types, one ``orjson``
        call writes a column of numbers (its text split into the values) or
        escapes a column of text, and one join interleaves the columns; so a
        batch costs little Python work per log.
        The bytes are those :meth:`encode` gives each log. ``None`` (nothing
        encoded) sends the caller to :meth:`encode`, log by log, which names
        any broken rule.
        """
        return self.encode_runs([logs])[0]

    def encode_runs(self, runs: Sequence[Sequence[dict]]) -> list[bytes | None]:
        """:meth:`encode_many` of each run, with one pass over the columns of all
        (runs of a few logs each, such as a bundle's logs per group, cost about
        what one run of all of them does). A run that is not all plain is ``None``."""
        if accelerated.speedups is not None and not self.event_time_key:
            return self._in_c(runs, keep=False)
        logs = runs[0] if len(runs) == 1 else list(chain.from_iterable(runs))
        if self.event_time_key or not all(logs):
            return self._each_run(runs)
        if not self._valid_keys.issuperset(set().union(*logs)):
            return self._each_run(runs)
        ends = list(accumulate(map(len, runs)))
        if self.log_time:  # each log ends in the time of encoding, as a number
            encoded = self._typed_runs(logs, ends, f',"{TIME_KEY}":{int(time.time())}')
        else:
            try:
                # Every value a str (join refuses anything else): orjson writes them as they are.
                "".join(chain.from_iterable(map(dict.values, logs)))
            except TypeError:
                encoded = self._typed_runs(logs, ends)
            else:
                encoded = list(map(self._text_run, runs))
        if None in encoded and len(runs) > 1:
            return self._each_run(runs)
        return encoded

    def encode_runs_keeping(
        self, runs: Sequence[Sequence[dict]], own_groups: bool = False
    ) -> tuple[list[bytes | None], list[bytes | KeptRun | None]]:
        """:meth:`encode_runs`, and for each run what gives its logs back as they were, for
        a failed record: the wire JSON itself where it is the logs' own JSON (every value
        a str), else a :class:`KeptRun` of the wire JSON and its kinds: a letter a field
        that says what the field's wire text was made from (see :func:`logs_from_wire`),
        written in the same pass. The logs are made again only when one fails; kept, a
        typed log costs a few bytes beside its wire JSON. ``None`` for a run that holds a
        value that would not come back as it was (a dict or str subclass, a tuple, an int
        past 64 bits or a non-finite float inside a nested value), and for every run
        without the C encoder.

        ``own_groups``: the caller grouped the logs by their own ``__topic__``,
        ``__source__`` (str) and ``__tags__``: the C encoder leaves those fields out of
        the wire JSON, and keeps them with the kinds. (Without it, such a run is ``None``:
        the per-log path.)"""
        if accelerated.speedups is not None and not self.event_time_key:
            return self._in_c(runs, keep=True, own_groups=own_groups)
        return self.encode_runs(runs), [None] * len(runs)

    def time_tail(self) -> bytes:
        """The JSON that ends every log encoded now: its ``__time__`` with ``log_time``
        (the time of encoding, for logs without one), else nothing."""
        return f',"{TIME_KEY}":{int(time.time())}'.encode() if self.log_time else b""

    def _in_c(self, runs: Sequence[Sequence[dict]], keep: bool, own_groups=False):
        """The C encoder's ``encode_runs`` (see ``sls_beam/_speedups.c``)."""
        return accelerated.speedups.encode_runs(
            list(map(list, runs)),
            self._valid_keys,
            self.time_tail(),
            self.max_log_bytes,
            keep,
            own_groups,
        )

    def _each_run(self, runs: Sequence[Sequence[dict]]) -> list[bytes | None]:
        """Runs on their own, so that one that is not plain leaves the others in bulk."""
        if len(runs) == 1:
            return [None]
        return [self.encode_runs([run])[0] for run in runs]

    def _text_run(self, logs: Sequence[dict]) -> bytes | None:
        """A run of logs whose values are all str (and keys known)."""
        try:
            joined = orjson.dumps(logs)[1:-1]
        except orjson.JSONEncodeError:  # a lone surrogate: encode() names the field
            return None
        # No value and no log can be longer than all of them together.
        if (
            len(joined) > MAX_VALUE_BYTES
            and max(utf8_len(value) for log in logs for value in log.values()) > MAX_VALUE_BYTES
        ):
            return None
        if len(joined) > self.max_log_bytes and max(map(len, map(orjson.dumps, logs))) > (
            self.max_log_bytes
        ):
            return None
        return joined

    def _typed_runs(
        self, logs: Sequence[dict], ends: list[int], tail: str = ""
    ) -> list[bytes | None]:
        """Runs of logs with values other than str (the runs end at ``ends`` in ``logs``):
        their columns made once, then each run's logs cut from them. ``tail``: JSON
        that ends every log (its ``__time__``)."""
        shapes = set(map(tuple, logs))
        starts = [0, *ends[:-1]]
        if len(shapes) == 1:  # the common case: the columns interleaved, cut into runs
            shape = shapes.pop()
            columns = _column_texts(logs)
            if columns is None:
                return [None] * len(ends)
            return [
                self._sized(joined.encode(), shape, columns, start, end, tail)
                for joined, start, end in zip(
                    _interleaved(shape, columns, ends, tail), starts, ends, strict=True
                )
            ]
        if len(shapes) > _MAX_SHAPES:
            return [None] * len(ends)
        texts = [""] * len(logs)
        for shape, positions in _positions_by_shape(logs).items():
            columns = _column_texts(list(map(logs.__getitem__, positions)))
            if columns is None:
                return [None] * len(ends)
            deque(map(texts.__setitem__, positions, _each_log(shape, columns, tail)), maxlen=0)
        encoded = []
        for start, end in zip(starts, ends, strict=True):
            joined = ",".join(texts[start:end]).encode()
            too_large = len(joined) > self.max_log_bytes and (
                max(map(utf8_len, texts[start:end])) > self.max_log_bytes
            )
            encoded.append(None if too_large else joined)
        return encoded

    def _sized(
        self,
        joined: bytes,
        shape: tuple[str, ...],
        columns: list[list[str]],
        start: int,
        end: int,
        tail: str,
    ) -> bytes | None:
        """``joined`` (the logs ``start`` to ``end`` of these columns), unless one of its
        logs is over ``max_log_bytes``."""
        if len(joined) > self.max_log_bytes:  # no log can be longer than all of them
            run = [column[start:end] for column in columns]
            if max(map(utf8_len, _each_log(shape, run, tail))) > self.max_log_bytes:
                return None
        return joined

    def _normalise(self, log: Mapping[str, Any], event_time: str | None) -> dict[str, str]:
        if not isinstance(log, Mapping):
            raise not_a_mapping(log)
        fields: dict[str, str] = {}
        valid = self._valid_keys
        time_key = self.event_time_key
        time_value = None
        for key, value in log.items():
            if key.__class__ is not str or key not in valid:
                if key == TIME_KEY and (time_key or self.log_time):
                    time_value = value
                    continue
                problem = key_rule_violation(key)
                if problem:
                    raise InvalidLogError(key, problem)
                if key.__class__ is not str:
                    original, key = key, str.__str__(key)  # a str enum: its characters
                    if key in fields:
                        raise _same_field(original, key)
                valid.add(key)
            if value.__class__ is not str or len(value) > _SURELY_SHORT_CHARS:
                value = self._stringify(key, value)
            fields[key] = value
        if time_key:
            if time_value is not None:
                if time_key in fields:
                    raise _same_field(TIME_KEY, time_key)
                fields[time_key] = self._stringify(time_key, time_value)
            elif event_time is not None and time_key not in fields:
                fields[time_key] = event_time
        if not fields:
            raise InvalidLogError(None, "a log must have at least one field")
        if self.log_time:
            if time_value is not None:
                fields[TIME_KEY] = unix_seconds(time_value)
            else:
                fields[TIME_KEY] = int(float(event_time)) if event_time else int(time.time())
        return fields

    def _dump(self, fields: dict[str, str]) -> bytes:
        try:
            data = _kept(orjson.dumps(fields))
        except orjson.JSONEncodeError as e:
            for key, value in fields.items():
                if value.__class__ is str:
                    _check_utf8(key, value)
            raise InvalidLogError(None, f"the log cannot be written as JSON: {e}") from None
        if len(data) > self.max_log_bytes:
            check_log_size(len(data), self.max_log_bytes)
        return data

    @staticmethod
    def _stringify(key: str, value: Any) -> str:
        text = stringify(key, value)
        if len(text) * 4 > MAX_VALUE_BYTES and utf8_len(text) > MAX_VALUE_BYTES:
            raise InvalidLogError(
                key,
                f"value is {utf8_len(text)} UTF-8 bytes; the limit is {MAX_VALUE_BYTES} (1 MiB)",
            )
        return text


def _encode_known(log: dict) -> bytes | None:
    """The JSON of a log whose keys are all known valid, in few C-level steps; ``None``
    sends the caller to the slow path, which applies (and names) every rule.

    All-str logs go to orjson as they are. Values of the common exact types
    are written by :data:`_QUICK_TEXT` in one comprehension (the same strings
    as :func:`stringify`); anything else (another type, an int past 4300
    digits, a text that is not UTF-8, a log so large a value might pass
    1 MiB) takes the slow path.
    """
    speedups = accelerated.speedups
    if speedups is not None:
        return speedups.encode_runs([[log]], None, b"", SERVICE_MAX_RAW_BYTES)[0]
    try:
        for value in log.values():
            if value.__class__ is not str:
                log = {
                    k: v if v.__class__ is str else _QUICK_TEXT[v.__class__](v)
                    for k, v in log.items()
                }
                break
        data = orjson.dumps(log)
    except (KeyError, ValueError, TypeError, orjson.JSONEncodeError):
        return None
    return _kept(data) if len(data) <= _SURELY_SHORT_CHARS else None


def _float_text(value: float) -> str:
    return repr(value) if math.isfinite(value) else _NON_FINITE.get(value, "NaN")


def _json_text(value: Any) -> str:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


#: The string form of values of the common exact types, as :func:`stringify`
#: writes them (the value rules), for the quick path.
_QUICK_TEXT = {
    int: str,
    float: _float_text,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
    dict: _json_text,
    list: _json_text,
}


#: Logs of more key orders than this in one batch are encoded log by log.
_MAX_SHAPES = 16
_NUMBERS = frozenset({int, float})
_CONTAINERS = frozenset({dict, list})
_BOOL_TEXT = {True: "true", False: "false"}


def _positions_by_shape(logs: Sequence[dict]) -> dict[tuple, list[int]]:
    """Where the logs of each key order (a shape) are."""
    positions: dict[tuple, list[int]] = {}
    for index, shape in enumerate(map(tuple, logs)):
        positions.setdefault(shape, []).append(index)
    return positions


def _column_texts(logs: Sequence[dict]) -> list[list[str]] | None:
    """Each column's values (the logs share their keys and their order) as the
    contents of JSON strings; ``None``: a value is not of a quick type or may be
    over 1 MiB (the per-log path names the rule it breaks)."""
    columns = []
    for values in zip(*map(dict.values, logs), strict=True):  # one pass: the same key order
        column = _column_contents(values)
        if column is None:
            return None
        columns.append(column)
    return columns


class _ShapeTexts(NamedTuple):
    """The fixed text around the values of logs of one key order: written once per order."""

    first: str  # the first key, as JSON: '"k1"'
    separators: list[str]  # between one value and the next in a log: '","k2":"', ...
    fields: str  # one log's fields, for %: '"k1":"%s","k2":"%s"'


@functools.lru_cache(maxsize=1024)
def _shape_texts(keys: tuple[str, ...]) -> _ShapeTexts:
    names = [orjson.dumps(key).decode() for key in keys]
    separators = [f'","{name[1:]}:"' for name in names[1:]]
    fields = ",".join(name.replace("%", "%%") + ':"%s"' for name in names)
    return _ShapeTexts(names[0], separators, fields)


def _interleaved(
    keys: tuple[str, ...], columns: list[list[str]], ends: list[int], tail: str = ""
) -> list[str]:
    """The logs' JSON objects joined by commas, from their columns, a text for each run
    (the runs end at ``ends``), in one C-level join: runs are parted by a NUL, which
    JSON from orjson never holds raw. ``tail``: JSON that ends every log."""
    texts = _shape_texts(keys)
    between_logs = '"' + tail + "},{" + texts.first + ':"'
    last_separators = [between_logs] * ends[-1]
    for end in ends[:-1]:
        last_separators[end - 1] = '"' + tail + "}\0{" + texts.first + ':"'
    pieces = []
    for column, separator in zip(columns, texts.separators, strict=False):
        pieces += (column, repeat(separator))
    pieces += (columns[-1], last_separators)
    text = "".join(chain.from_iterable(zip(*pieces, strict=False)))  # repeat() is endless
    return ("{" + texts.first + ':"' + text[: -len(between_logs)] + '"' + tail + "}").split("\0")


def _each_log(keys: tuple[str, ...], columns: list[list[str]], tail: str = "") -> list[str]:
    """Each log's JSON object, from the columns."""
    template = "{" + _shape_texts(keys).fields + tail.replace("%", "%%") + "}"
    return list(map(template.__mod__, zip(*columns, strict=True)))


def _column_contents(column: Sequence) -> list[str] | None:
    """One column's values as the contents of JSON strings (escaped, without the
    quotes), per the value rules; ``None``: a value is not of a quick type or may
    be over 1 MiB."""
    kinds = set(map(type, column))
    if len(kinds) == 1:
        kind = next(iter(kinds))
        if kind is str:
            return _json_string_contents(column)
        if kind is bool:
            return list(map(_BOOL_TEXT.__getitem__, column))
        if kind is type(None):
            return ["null"] * len(column)
    if kinds <= _NUMBERS:
        numbers = _numbers_as_repr(column)
        if numbers is not None:
            return numbers
    if kinds <= _CONTAINERS:
        nested = _nested_json_contents(column)
        if nested is not None:
            return nested
    try:
        texts = [v if v.__class__ is str else _QUICK_TEXT[v.__class__](v) for v in column]
    except (KeyError, ValueError, TypeError, orjson.JSONEncodeError):
        return None
    return _json_string_contents(texts)


def _json_string_contents(texts: list) -> list[str] | None:
    """Each text escaped as in a JSON string, without its quotes: one orjson call,
    cut at ``","``, which can only stand between two strings (inside one, every
    quote follows a backslash). ``None``: a text is not valid UTF-8, or may be
    over 1 MiB."""
    try:
        text = orjson.dumps(texts).decode()[2:-2]
    except orjson.JSONEncodeError:
        return None
    return _short(text, text.split('","'))


def _nested_json_contents(column: Sequence) -> list[str] | None:
    """dicts and lists as their JSON text, escaped as in a JSON string: each written by
    orjson as it is (in C), and escaped all at once. orjson's JSON holds no raw
    control character, so only quotes and backslashes need escaping, and never a
    NUL, which parts the values meanwhile. ``None``: orjson needs the per-value
    rules (keys that are not str, values it does not know) or a value may be long."""
    try:
        joined = b"\0".join(map(orjson.dumps, column))
    except orjson.JSONEncodeError:
        return None
    text = joined.replace(b"\\", b"\\\\").replace(b'"', b'\\"').decode()
    return _short(text, text.split("\0"))


def _short(text: str, contents: list[str]) -> list[str] | None:
    """``contents`` (cut from ``text``), unless one may be over 1 MiB."""
    if len(text) > _SURELY_SHORT_CHARS and max(map(len, contents)) > _SURELY_SHORT_CHARS:
        return None
    return contents


def _numbers_as_repr(column: Sequence) -> list[str] | None:
    """ints and floats written as ``str``/``repr`` write them, by one orjson call;
    ``None`` where orjson writes otherwise: an exponent, a float under 1e-4
    (``0.00001`` for ``1e-05``), NaN or an infinity (``null``), an int past 64 bits."""
    try:
        text = orjson.dumps(column).decode()[1:-1]
    except orjson.JSONEncodeError:
        return None
    if "e" in text or "n" in text or "0.0000" in text and _TINY.search(text):
        return None
    return text.split(",")


_TINY = re.compile(r"(?:^|,)-?0\.0000")


def _same_field(first: Any, second: str) -> InvalidLogError:
    return InvalidLogError(
        second,
        f"keys {key_text(first)} and {key_text(second)} give the same field; "
        "a log may have each field once",
    )


def _kept(data: bytes) -> bytes:
    """A right-sized copy of orjson's output, for logs that wait in a batch.

    orjson writes into a large buffer and shrinks it in place; keeping
    thousands of those fragments the heap (measured: 2.3 µs a log to keep
    one, 0.4 µs to copy it), while the copy's buffer is freed at once and reused.
    """
    return bytes(memoryview(data))


def encode_plain(log: dict) -> bytes:
    """The JSON of one log already found plain by :meth:`LogEncoder.encode_many`
    (the same bytes that call gave it)."""
    data = _encode_known(log)
    return data if data is not None else LogEncoder().encode(log)


#: What a field's wire text was made from, by its letter in a run's kinds (see
#: LogEncoder.encode_runs_keeping): each the inverse of the value rules for that kind.
_VALUE_OF_TEXT = {
    ord("s"): str,
    ord("i"): int,
    ord("f"): float,  # repr's text, "NaN" and the infinities read back as the same float
    ord("b"): "true".__eq__,
    ord("n"): lambda text: None,
    ord("j"): orjson.loads,  # orjson's text of an exact dict or list that reads back
}
#: The letters of the fields a log names its own group with, left out of the wire JSON.
_OWN_FIELD_OF_LETTER = {ord("T"): "__topic__", ord("S"): "__source__", ord("G"): "__tags__"}


class KeptRun(Protocol):
    """What the C encoder keeps of a typed run while its batch waits (its
    ``_speedups.KeptRun``): its wire JSON and its kinds, from which
    :func:`logs_from_wire` makes its logs again. Not a tuple: the garbage collector
    counts a tuple from its making to its freeing, and a source per element keeps ~16
    runs a handover alive until their batches close."""

    wire: bytes
    kinds: bytes


def logs_from_wire(joined: bytes, kinds: bytes) -> list[dict]:
    """The logs a run's wire JSON (``joined``: their JSON objects joined by commas) was
    encoded from, made again with the run's ``kinds``: a letter a field of each log, in
    its order (``s`` str, ``i`` int, ``f`` float, ``b`` bool, ``n`` None, ``j`` a dict or
    list; ``T``, ``S``, ``G``: its own ``__topic__``, ``__source__``, ``__tags__``, left
    out of the wire), ``;`` after each log; after a NUL, the JSON of those left out, in
    order, joined by commas. Fields the wire adds after a log's own (its ``__time__``)
    are not the log's. Run only for a failed record."""
    letters, _, own_json = kinds.partition(b"\0")
    own_values = iter(orjson.loads(b"[" + own_json + b"]"))
    logs = []
    for sent, log_letters in zip(
        orjson.loads(b"[" + joined + b"]"), letters[:-1].split(b";"), strict=True
    ):
        fields = iter(sent.items())
        log = {}
        for letter in log_letters:
            own_field = _OWN_FIELD_OF_LETTER.get(letter)
            if own_field is not None:
                log[own_field] = next(own_values)
            else:
                key, text = next(fields)
                log[key] = _VALUE_OF_TEXT[letter](text)
        logs.append(log)
    return logs


def not_a_mapping(log: Any) -> InvalidLogError:
    """The error for an element that is not a log at all."""
    return InvalidLogError(None, f"a log must be a mapping, not {type(log).__name__}")


def check_log_size(size: int, max_bytes: int) -> None:
    """Refuse a log whose JSON (``size`` bytes) cannot fit in one request."""
    if size > max_bytes:
        raise InvalidLogError(
            None,
            f"the log is {size} bytes of JSON; one request holds at most {max_bytes} "
            "beside its topic, source and tags (max_batch_bytes)",
        )


def stringify(key: str, value: Any) -> str:
    """The string form of one value, per the table in this module's docstring.

    Raises:
      InvalidLogError: naming ``key``, when the value has no string form
        (bytes that are not UTF-8, JSON nested too deep, a conversion that raised).
    """
    try:
        return _text_of(key, value)
    except InvalidLogError:
        raise
    except Exception as e:  # the value's own code (__str__, tzinfo, __iter__) raised
        raise InvalidLogError(
            key, f"a {type(value).__name__} value could not be written: {describe(e)}"
        ) from None


def _text_of(key: str, value: Any) -> str:
    cls = value.__class__
    if cls is str:
        return value
    if cls is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if cls is int:
        return int_text(value)
    if cls is float:
        if math.isfinite(value):
            return repr(value)
        return _NON_FINITE.get(value, "NaN")
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidLogError(
                key, f"bytes value is not valid UTF-8 (at byte {e.start})"
            ) from None
    if isinstance(value, (Mapping, list, tuple)):
        try:
            return orjson.dumps(
                value, default=_json_default, option=orjson.OPT_NON_STR_KEYS
            ).decode()
        except orjson.JSONEncodeError as e:
            raise InvalidLogError(key, f"value cannot be written as JSON: {e}") from None
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    # Subclasses (StrEnum, IntEnum, numpy scalars registered as numbers) take
    # their base form, as orjson writes them.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return _text_of(key, bool(value))
    if isinstance(value, int):
        return int_text(int(value))
    if isinstance(value, float):
        return _text_of(key, float(value))
    return str(value)


def _json_default(value: Any) -> Any:
    """What orjson cannot write itself: a NamedTuple as a list, a mapping as an
    object, anything else by its ``str()``."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


def unix_seconds(value: Any) -> int:
    """A log's own ``__time__`` as whole Unix seconds (the signed path sends it).

    Accepts a number, a numeric string, or a ``datetime`` (naive: UTC).

    Raises:
      InvalidLogError: naming ``__time__`` and the rule.
    """
    seconds: Any = value
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        seconds = value.timestamp()
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            seconds = None
    if seconds.__class__ is bool or not isinstance(seconds, (int, float)):
        raise InvalidLogError(
            TIME_KEY,
            f"must be Unix seconds (a number, a numeric string or a datetime), "
            f"not {type(value).__name__} {excerpt(repr(value))}",
        )
    if not 0 <= seconds < 2**32:  # NaN fails this too
        raise InvalidLogError(TIME_KEY, f"{seconds!r} is not Unix seconds within 0..2**32-1")
    return int(seconds)


def int_text(value: int) -> str:
    """Decimal digits of ``value``, however many (``str()`` refuses past 4300)."""
    try:
        return str(value)
    except ValueError:
        # Python's guard against slow conversion: split into parts it accepts.
        high, low = divmod(abs(value), 10**4000)
        sign = "-" if value < 0 else ""
        return f"{sign}{int_text(high)}{str(low).zfill(4000)}"


@dataclass(frozen=True)
class EncodedRequest:
    """One PutWebTracking request, ready to send.

    Attributes:
      body: the bytes on the wire (compressed unless ``compression='none'``).
      headers: the protocol headers (API version, raw size, compression, type).
      raw_size: UTF-8 byte length of the JSON before compression.
      log_count: how many logs the request carries.
    """

    body: bytes
    headers: Mapping[str, str]
    raw_size: int
    log_count: int


def encode_request(
    group: LogGroup, logs: Sequence[bytes], compression: str = DEFAULT_COMPRESSION
) -> EncodedRequest:
    """Assemble and compress one request from already-encoded logs.

    Args:
      group: topic, source and tags shared by every log.
      logs: each log's JSON bytes, as :meth:`LogEncoder.encode` returned them.
      compression: ``lz4`` (raw block), ``deflate`` (zlib) or ``none``.
    """
    return encode_pieces(group, logs, len(logs), compression)


def encode_pieces(
    group: LogGroup,
    pieces: Sequence[bytes],
    log_count: int,
    compression: str = DEFAULT_COMPRESSION,
) -> EncodedRequest:
    """:func:`encode_request` for logs' JSON in pieces (each a log's, or a run's
    joined by commas), ``log_count`` logs in all: the body written in one copy."""
    if log_count < 1 or not pieces:
        raise ValueError("a request needs at least one log")
    raw = _raw_body(group, pieces)
    headers = {
        "x-log-apiversion": API_VERSION,
        "x-log-bodyrawsize": str(len(raw)),
        "Content-Type": "application/json",
    }
    if compression == "lz4":
        body = lz4.block.compress(raw, store_size=False)
    elif compression == "deflate":
        body = zlib.compress(raw)
    elif compression == "none":
        body = raw
    else:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
    if compression != "none":
        headers["x-log-compresstype"] = compression
    return EncodedRequest(body, headers, len(raw), log_count)


def _raw_body(group: LogGroup, pieces: Sequence[bytes]) -> bytes:
    """The request body before compression: the pieces, commas between them, between the
    body's head and tail, written by one join (each byte copied once)."""
    parts = [b","] * (2 * len(pieces) + 1)  # head, piece, comma, piece, ..., piece, tail
    parts[0], parts[-1] = _BODY_PREFIX, group.body_suffix()
    parts[1::2] = pieces
    return b"".join(parts)


def split_into_requests(
    logs: Iterable[bytes], limits: BatchLimits, group: LogGroup
) -> list[list[bytes]]:
    """Cut encoded logs, in order, into chunks that each fit ``limits``.

    A log is added to the current chunk only if it fits; otherwise the chunk
    is closed first, so no chunk ever overflows (each log measured once).
    """
    room = limits.room(group)
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    current_bytes = 0
    for log in logs:
        size = len(log)
        if current and not limits.fits(len(current), current_bytes, size, room):
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(log)
        current_bytes += size
    if current:
        chunks.append(current)
    return chunks
