"""Reading log files into logs: each line with its place, parsed as JSON lines, text or CSV.

A line that cannot be read (not UTF-8, not JSON, a CSV row of the wrong
width or with a field over the csv module's limit, a line over
:data:`MAX_LINE_BYTES`) becomes a :data:`MALFORMED` record with its file,
line number, byte offset, raw text and reason; the lines around it are read
as usual. Nothing here stops a backfill.

JSON lines and text are read by a splittable DoFn: a file is cut into
ranges of :data:`RANGE_BYTES` (the lines that start in a range are that
range's), which a distributed runner reads in parallel and may split further
while reading, as ``ReadFromText`` does. Each range is read in 1 MiB blocks
cut at newlines. A block of JSON lines goes to the sink whole, as a
:class:`LineBlock` (an ``sls_beam.JsonLines``: the sink writes its logs from
their text, in C, without a dict a line); a line that is not a JSON object
comes back from the sink as its malformed record (error code ``NotJson``).
Line numbers are known in a file's first range (every file under 64 MiB);
past it a line is told by its byte offset. Compressed files and CSV (whose
quoted fields may hold newlines) are read whole, each by one worker.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam
import orjson
from apache_beam import pvalue
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.transforms.core import RestrictionProvider

from pipelines.common import counter
from sls_beam.json_lines import JsonLines, NotJsonError, parse_line

MALFORMED = "malformed"
FORMATS = ("jsonl", "text", "csv")
#: How a file's extension names its format (``auto``).
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
#: Most of a bad line that its record keeps (characters).
MAX_RAW_CHARS = 10_000
#: Files are read in ranges of this many bytes (in parallel where the runner can).
RANGE_BYTES = 64 << 20
#: A line longer than this is malformed (and skipped without holding it in memory).
MAX_LINE_BYTES = 16 << 20
_BLOCK_BYTES = 1 << 20
#: Outputs of the reader handed on together (see ReadLogFiles).
OUTPUTS_A_LIST = 16


class LineLog(dict):
    """A log read from a file; knows its file, line number and byte offset (not sent).

    A ``dict``, so the sink writes it as any log; when it fails, the failed
    record says where it came from. ``line`` is ``None`` past a file's first
    range (see the module's docstring). ``json_line``: the JSON line its fields
    were parsed from, if any.
    """

    __slots__ = ("file", "line", "offset", "json_line")

    def __init__(
        self,
        fields,
        file: str,
        line: int | None,
        offset: int | None = None,
        json_line: bytes | None = None,
    ):
        super().__init__(fields)
        self.file = file
        self.line = line
        self.offset = offset
        self.json_line = json_line

    def __reduce__(self):
        # Pickled while its batch waits for an answer (sls_beam's PackedElements): as the
        # JSON line it was parsed from, read again if it fails (measured: ~2x faster than
        # pickling its fields; Beam's elements are not changed in place), else as a dict
        # and four values (~1.4x faster than a dict subclass's default).
        if self.json_line is not None:
            return (_parsed, (self.json_line, self.file, self.line, self.offset))
        return (LineLog, (dict(self), self.file, self.line, self.offset))


def _parsed(json_line: bytes, file: str, line: int | None, offset: int | None) -> LineLog:
    """A LineLog parsed again from its JSON line (unpickling)."""
    return LineLog(orjson.loads(json_line), file, line, offset, json_line)


class LineBlock(JsonLines):
    """Whole lines of a JSON-lines file, for the sink to write in bulk (see
    ``sls_beam.JsonLines``): its file, the number of its first line (``None`` past
    a file's first range) and its byte offset in the file.

    A line that fails is reported as a :class:`LineLog`; one that is not a JSON
    object, as its malformed record (see :func:`malformed`).
    """

    __slots__ = ("file", "first_line", "offset")

    def __init__(self, text: bytes, file: str, first_line: int | None, offset: int):
        super().__init__(text)
        self.file = file
        self.first_line = first_line
        self.offset = offset

    def __reduce__(self):
        return LineBlock, (self.text, self.file, self.first_line, self.offset)

    def log_at(self, start: int) -> LineLog | dict:
        line = self.line_at(start)
        number = self.first_line
        if number is not None:
            number += self.text.count(b"\n", 0, start)
        offset = self.offset + start
        try:
            fields = parse_line(line)
        except NotJsonError as e:
            return malformed(self.file, number, line, e.rule, offset)
        return LineLog(fields, self.file, number, offset, line)


#: Where a blank line may begin: after a newline, a newline or JSON's other whitespace.
_MAYBE_BLANK = re.compile(rb"\n[ \t\r\n]")


def blank_lines(block: bytes) -> int:
    """How many lines of ``block`` (whole lines) are blank: one scan when no line starts
    with whitespace, as a JSON-lines file's lines do not."""
    if block[:1] not in _BLANK_STARTS and _MAYBE_BLANK.search(block) is None:
        return 0
    lines = block.count(b"\n")
    return sum(not line.strip(b" \t\r") for line in block.split(b"\n")[:lines])


_BLANK_STARTS = (b" ", b"\t", b"\r", b"\n")


def malformed(file: str, line: int | None, raw: bytes | str, reason: str, offset=None) -> dict:
    """The failed-output record of a line that could not be read."""
    if isinstance(raw, bytes):
        raw = raw[: MAX_RAW_CHARS * 4].decode("utf-8", "replace")
    return {
        "file": file,
        "line": line,
        "offset": offset,
        "raw": raw[:MAX_RAW_CHARS],
        "reason": reason,
    }


def matched_files(pattern: str) -> list[str]:
    """The files ``pattern`` matches, or SystemExit with one line that says what to do."""
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # noqa: BLE001 - a bad pattern or an unreachable filesystem
        raise SystemExit(f"--input {pattern!r}: cannot list files ({e})") from None
    if not found:
        raise SystemExit(f"--input {pattern!r}: no files match; check the path or the pattern")
    return sorted(m.path for m in found)


def detect_format(path: str) -> tuple[str, str]:
    """The format of ``path`` and why: its extension, else its first line."""
    extension = os.path.splitext(path.removesuffix(".gz"))[1].lower()
    if extension in EXTENSIONS:
        return EXTENSIONS[extension], f"the file extension {extension}"
    with FileSystems.open(path) as f:
        for raw in f:
            if raw.strip():
                kind = "jsonl" if raw.lstrip().startswith(b"{") else "text"
                return kind, "its first line" + (" (a JSON object)" if kind == "jsonl" else "")
    return "text", "an empty file"


class LogFile(NamedTuple):
    """A file to read: its path, its size in bytes, and whether it may be read in ranges."""

    path: str
    size: int
    splittable: bool

    @classmethod
    def of(cls, metadata, input_format: str) -> LogFile:
        compressed = (
            CompressionTypes.detect_compression_type(metadata.path) != CompressionTypes.UNCOMPRESSED
        )
        splittable = input_format != "csv" and not compressed
        return cls(metadata.path, metadata.size_in_bytes, splittable)


class FileRanges(RestrictionProvider):
    """A file's byte ranges: :data:`RANGE_BYTES` each, or one for a file read whole
    (a range of one offset, claimed once)."""

    def initial_restriction(self, file: LogFile) -> OffsetRange:
        return OffsetRange(0, file.size if file.splittable else 1)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def split(self, file: LogFile, restriction: OffsetRange) -> Iterator[OffsetRange]:
        if file.splittable:
            yield from restriction.split(RANGE_BYTES, min_num_offsets_per_split=_BLOCK_BYTES)
        else:
            yield restriction

    def restriction_size(self, file: LogFile, restriction: OffsetRange) -> int:
        return restriction.size() if file.splittable else file.size


_FILE_RANGES = beam.DoFn.RestrictionParam(FileRanges())


class _TooLong(NamedTuple):
    """In a file's blocks: a line over MAX_LINE_BYTES (its start), in place of its bytes."""

    excerpt: bytes


def _blocks(f, claims: _Claims) -> Iterator[tuple[int, bytes | _TooLong]]:
    """(offset, block) of blocks of whole lines (each ending in a newline) from ``f``'s
    position, while ``claims`` says they are the reader's. A last line without a
    newline gets one; a line over MAX_LINE_BYTES is skipped (never held whole), a
    :class:`_TooLong` in its place."""
    rest = b""
    while True:
        block = f.read(_BLOCK_BYTES)
        data = rest + block if rest else block
        offset = claims.position
        if not block:
            owned = claims.claim(data + b"\n") if data else None
            if owned:
                yield offset, owned
            return
        end = data.rfind(b"\n")
        if end < 0:
            rest = data
            if len(data) > MAX_LINE_BYTES:
                if claims.claim(b"\n") is None:  # the line's start, claimed as a line
                    return
                yield offset, _TooLong(data[: MAX_RAW_CHARS * 4])
                skipped, rest = _skip_line(f)
                claims.position += len(data) + skipped - 1
            continue
        owned = claims.claim(data[: end + 1])
        if owned is None:
            return
        yield offset, owned
        if len(owned) <= end:  # the range ended inside this block
            return
        rest = data[end + 1 :]


def _skip_line(f) -> tuple[int, bytes]:
    """Read past the next newline: how many bytes that took (newline included), and
    what was read after it."""
    skipped = 0
    while True:
        block = f.read(_BLOCK_BYTES)
        end = block.find(b"\n")
        if end >= 0:
            return skipped + end + 1, block[end + 1 :]
        if not block:
            return skipped, b""
        skipped += len(block)


class _Claims:
    """Claims blocks of lines for the reader of a whole file (everything is its), and
    tracks the offset of the next line."""

    def __init__(self, position: int = 0):
        self.position = position

    def claim(self, block: bytes) -> bytes | None:
        """The part of ``block`` that is the reader's, or ``None``: no more."""
        self.position += len(block)
        return block

    def finish(self) -> None:
        """Mark the reading done."""


class _RangeClaims(_Claims):
    """Claims blocks of lines for the reader of one byte range of a file.

    A block is claimed by its last line's start: a runner splits a range only
    past the last claimed position, so every line of a claimed block is this
    range's. The lines of a block that start past the range's end (as it is
    now: a split moves it) are left to the next range.
    """

    def __init__(self, tracker, position: int):
        super().__init__(position)
        self._tracker = tracker

    def claim(self, block: bytes) -> bytes | None:
        start = self.position
        block = self._before_stop(block)
        if not block:
            self._tracker.try_claim(max(start, self._tracker.current_restriction().stop))
            return None
        if not self._tracker.try_claim(start + block.rfind(b"\n", 0, len(block) - 1) + 1):
            # Split since the end was read: the lines before the new end are still ours.
            block = self._before_stop(block)
            if not block:
                return None
        self.position += len(block)
        return block

    def _before_stop(self, block: bytes) -> bytes:
        """The lines of ``block`` that start before the range's end."""
        start, stop = self.position, self._tracker.current_restriction().stop
        if start >= stop:
            return b""
        if start + len(block) <= stop:
            return block
        return block[: block.find(b"\n", stop - 1 - start) + 1]

    def finish(self) -> None:
        try:  # a claim at the range's end: it is done (unless a claim failed already)
            self._tracker.try_claim(max(self.position, self._tracker.current_restriction().stop))
        except ValueError:
            pass


def file_source(log: LineLog | LineBlock) -> str:
    """The source of a log (or a block of JSON lines) read from a file: the file's name
    (``WriteToSLS(source=...)``; a log's own ``__source__`` wins, as always)."""
    return _file_name(log.file)


@functools.lru_cache(maxsize=1024)
def _file_name(path: str) -> str:
    return os.path.basename(path)[:128]


def each_output(outputs: list) -> list:
    """The outputs of :class:`ReadLogFiles` one by one (``beam.FlatMap(each_output)``)."""
    return outputs


class ReadLogFiles(beam.DoFn):
    """A file (:class:`LogFile`) → its logs (:class:`LineLog`; JSON lines in blocks,
    :class:`LineBlock`) and its bad lines (``TaggedOutput(MALFORMED, record)``), in
    lists of up to :data:`OUTPUTS_A_LIST` for :func:`each_output` to hand on one by
    one: Beam observes the time of every output of a splittable DoFn, which costs more
    than the rest of a log's reading.
    Splittable: see the module's docstring.

    Args:
      input_format: ``jsonl``, ``text`` or ``csv``.
    """

    def __init__(self, input_format: str):
        if input_format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        self._format = input_format
        self._read = counter("logs_read")
        self._malformed = counter("malformed")
        self._blank = counter("blank_lines")

    def process(self, file: LogFile, tracker=_FILE_RANGES) -> Iterator:
        start = tracker.current_restriction().start
        if not file.splittable:
            if tracker.try_claim(0):
                with FileSystems.open(file.path) as f:  # decompressed as its name says
                    yield from self._outputs(file.path, f, _Claims(), 1)
            return
        with FileSystems.open(file.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            position = start
            if start > 0:  # the line that crosses the range's start is the previous range's
                f.seek(start - 1)
                position += len(f.readline()) - 1
            claims = _RangeClaims(tracker, position)
            yield from self._outputs(file.path, f, claims, 1 if start == 0 else None)
            claims.finish()

    def _outputs(self, path: str, f, claims: _Claims, number: int | None) -> Iterator[list]:
        parse = {"jsonl": self._parse_json, "text": self._parse_text, "csv": self._parse_csv}
        outputs = []
        for output in parse[self._format](path, _blocks(f, claims), number):
            if output.__class__ is not LineLog and output.__class__ is not LineBlock:
                self._malformed.inc()
                output = pvalue.TaggedOutput(MALFORMED, output)
            outputs.append(output)
            # A block of lines goes at once: it is worth many outputs, and ~1 MiB to hold.
            if len(outputs) == OUTPUTS_A_LIST or output.__class__ is LineBlock:
                yield outputs
                outputs = []
        if outputs:
            yield outputs

    def _parse_json(self, path: str, blocks, number: int | None) -> Iterator:
        """JSON lines, a block at a time, each block whole (the sink parses it)."""
        for position, block in blocks:
            if block.__class__ is _TooLong:
                yield self._too_long(path, number, position, block)
                number = number and number + 1
                continue
            yield LineBlock(block, path, number, position)
            lines, blank = block.count(b"\n"), blank_lines(block)
            self._read.inc(lines - blank)
            self._blank.inc(blank)
            if number is not None:
                number += lines

    def _parse_text(self, path: str, blocks, number: int | None) -> Iterator:
        for item in self._lines(path, blocks, number):
            if item.__class__ is dict:
                yield item
                continue
            number, position, line = item
            line = line.rstrip(b"\r\n")
            if not line.strip():
                self._blank.inc()
                continue
            self._read.inc()
            try:
                log = {"content": line.decode("utf-8")}
            except UnicodeDecodeError as e:
                reason = f"not valid UTF-8 (at byte {e.start})"
                yield malformed(path, number, line, reason, position)
                continue
            yield LineLog(log, path, number, position)

    def _lines(self, path: str, blocks, number: int | None) -> Iterator:
        """(line number, offset, line with its newline) of each line; for a line too
        long, its malformed record."""
        for position, block in blocks:
            if block.__class__ is _TooLong:
                yield self._too_long(path, number, position, block)
                number = number and number + 1
                continue
            for line in io.BytesIO(block):
                yield number, position, line
                position += len(line)
                if number is not None:
                    number += 1

    def _too_long(self, path: str, number, position: int, block: _TooLong) -> dict:
        self._read.inc()
        reason = f"the line is longer than {MAX_LINE_BYTES >> 20} MiB"
        return malformed(path, number, block.excerpt, reason, position)

    def _parse_csv(self, path: str, blocks, number: int | None) -> Iterator:
        """Rows under the header row; a row is one or more physical lines (quoted newlines)."""
        texts = _CsvLines(path, self._lines(path, blocks, number))
        rows = csv.reader(texts)
        header = None
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as e:
                self._read.inc()
                where = texts.first_line, texts.first_offset
                yield malformed(path, where[0], texts.take(), f"not valid CSV: {e}", where[1])
                continue
            finally:
                yield from texts.bad
                texts.bad.clear()
            number, offset, raw = texts.first_line, texts.first_offset, texts.take()
            if not row:
                continue
            if header is None:
                header = row
                continue
            self._read.inc()
            if len(row) != len(header):
                reason = f"{len(row)} values under a header of {len(header)} fields"
                yield malformed(path, number, raw, reason, offset)
                continue
            yield LineLog(dict(zip(header, row, strict=True)), path, number, offset)


class _CsvLines:
    """Decoded lines for ``csv.reader``, remembering the raw text of the row being read.

    A line that is not UTF-8 (or too long) becomes a malformed record (in
    ``bad``) and an empty line for the reader, so that the rows around it are
    still read.
    """

    def __init__(self, path: str, lines: Iterable):
        self._path = path
        self._lines = iter(lines)
        self._row: list[str] = []
        self.first_line: int | None = 0
        self.first_offset = 0
        self.bad: list[dict] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        item = next(self._lines)
        if item.__class__ is dict:  # a line too long: its record
            self.bad.append(item)
            return "\n"
        number, offset, raw = item
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            reason = f"not valid UTF-8 (at byte {e.start})"
            self.bad.append(malformed(self._path, number, raw.rstrip(b"\r\n"), reason, offset))
            return "\n"
        if not self._row:
            self.first_line, self.first_offset = number, offset
        self._row.append(text)
        return text

    def take(self) -> str:
        """The raw text of the row just read (and forget it)."""
        text, self._row = "".join(self._row).rstrip("\r\n"), []
        return text
