"""Logs given as JSON text, one object a line: the element, and its lines' encoding.

A JSON-lines file read in blocks, or a message that holds many logs, need not
become a dict a log on the way to the sink: the C encoder
(``sls_beam/_speedups.c``, ``encode_json_lines``) writes each line's log from
its text, the bytes the per-log path writes for the dict ``orjson.loads``
gives. A line it cannot vouch for, and every line where the package was built
without it, is parsed and takes the per-log path, which names any broken rule.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from sls_beam import accelerated
from sls_beam.errors import InvalidLogError, excerpt


class NotJsonError(InvalidLogError):
    """A line of :class:`JsonLines` that is not a JSON object (``error_code`` ``NotJson``)."""

    error_code = "NotJson"


class JsonLines:
    """Logs as UTF-8 JSON text, one object a line, for :class:`~sls_beam.WriteToSLS`.

    Each line is written as the log ``orjson.loads`` gives for it (the value
    rules of any log), without making that dict where the C encoder is built:
    a block of a JSON-lines file, or a Pub/Sub or Kafka message of several
    logs, goes to the wire ~2x faster than parsed logs, and as one element.
    Blank lines are skipped. A line that is not a JSON object fails alone
    (``NotJson``); the others are written.

    The ``topic``, ``source`` and ``tags`` callables are given the
    ``JsonLines`` element, once for all its lines; a line's own ``__topic__``,
    ``__source__`` and ``__tags__`` win, as in any log.

    Subclass it to say where lines came from (see :meth:`log_at`).

    Args:
      text: the lines (``bytes``), each ending in a newline but maybe the last.
    """

    __slots__ = ("text",)

    def __init__(self, text: bytes):
        if not isinstance(text, bytes):
            raise TypeError(f"JsonLines text must be bytes, not {type(text).__name__}")
        self.text = text

    def line_at(self, start: int) -> bytes:
        """The line that starts at byte ``start`` of :attr:`text`, without its newline."""
        end = self.text.find(b"\n", start)
        return self.text[start : end if end >= 0 else len(self.text)]

    def log_at(self, start: int) -> Any:
        """What the line at byte ``start`` is reported with when it fails: its log (a
        dict), or its text (a ``str``) when it is not a JSON object. A subclass may
        give more (its file and line number)."""
        line = self.line_at(start)
        try:
            return parse_line(line)
        except NotJsonError:
            return line.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({excerpt(repr(self.text), 80)})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __reduce__(self):
        return type(self), (self.text,)


def parse_line(line: bytes) -> dict:
    """A line's log; raises :class:`NotJsonError`, whose ``rule`` says why it is none."""
    try:
        log = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise NotJsonError(None, f"not valid JSON: {e}") from None
    if log.__class__ is not dict:
        raise NotJsonError(None, f"a JSON {type(log).__name__}, not an object")
    return log


class EncodedLines(NamedTuple):
    """The lines of a :class:`JsonLines` written by the C encoder.

    Attributes:
      joined: the logs' JSON joined by commas.
      ends: where each log ends in ``joined`` (int64 offsets, exclusive).
      starts: where each log's line starts in the text.
      others: where each line left to the per-log path starts.
    """

    joined: bytes
    ends: memoryview
    starts: memoryview
    others: memoryview


def encode_lines(text: bytes, tail: bytes, max_log_bytes: int) -> EncodedLines | None:
    """``text``'s lines written in C (``tail``: JSON that ends every log, its ``__time__``;
    a log over ``max_log_bytes`` is left to the per-log path), or ``None`` where the
    package was built without it."""
    speedups = accelerated.speedups
    if speedups is None:
        return None
    joined, ends, starts, others = speedups.encode_json_lines(text, tail, max_log_bytes)
    offsets = [memoryview(data).cast("q") for data in (ends, starts, others)]
    return EncodedLines(joined, *offsets)


def line_starts(text: bytes) -> list[int]:
    """Where each line of ``text`` that is not blank starts (the per-log path's lines)."""
    starts = []
    start = 0
    size = len(text)
    while start < size:
        end = text.find(b"\n", start)
        end = size if end < 0 else end
        if text[start:end].strip(b" \t\r"):  # JSON's blanks (a newline ends the line)
            starts.append(start)
        start = end + 1
    return starts
