"""Reading log files into logs: each line with its number, parsed as JSON lines, text or CSV.

A line that cannot be read (not UTF-8, not JSON, a CSV row of the wrong
width or with a field over the csv module's limit) becomes a
:data:`MALFORMED` record with its file, line number, raw text and reason;
the lines around it are read as usual. Nothing here stops a backfill.

Each file is read whole by one worker, in large buffered blocks; many files
spread over the workers (split a single huge file to read it in parallel).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator

import apache_beam as beam
import orjson
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

from pipelines.common import counter

MALFORMED = "malformed"
FORMATS = ("jsonl", "text", "csv")
#: How a file's extension names its format (``auto``).
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
#: Most of a bad line that its record keeps (characters).
MAX_RAW_CHARS = 10_000
_READ_BUFFER_BYTES = 1 << 20


class LineLog(dict):
    """A log read from a file; knows its file and line number (which are not sent).

    A ``dict``, so the sink writes it as any log; when it fails, the failed
    record says where it came from.
    """

    __slots__ = ("file", "line")

    def __init__(self, fields, file: str, line: int):
        super().__init__(fields)
        self.file = file
        self.line = line


def malformed(file: str, line: int, raw: bytes | str, reason: str) -> dict:
    """The failed-output record of a line that could not be read."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return {"file": file, "line": line, "raw": raw[:MAX_RAW_CHARS], "reason": reason}


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


class ReadLogFiles(beam.DoFn):
    """A matched file → its logs (:class:`LineLog`) and, on :data:`MALFORMED`, its bad lines.

    Args:
      input_format: ``jsonl``, ``text`` or ``csv``.
      source_from_file: set each log's ``__source__`` to its file's name
        (unless the log has one).
    """

    def __init__(self, input_format: str, source_from_file: bool):
        if input_format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        self._format = input_format
        self._source_from_file = source_from_file
        self._read = counter("logs_read")
        self._malformed = counter("malformed")
        self._blank = counter("blank_lines")

    def process(self, readable) -> Iterator:
        path = readable.metadata.path
        source = os.path.basename(path)[:128] if self._source_from_file else None
        with readable.open() as raw:
            lines = enumerate(io.BufferedReader(raw, _READ_BUFFER_BYTES), 1)
            parse = self._parse_csv if self._format == "csv" else self._parse_lines
            for output in parse(path, lines):
                if isinstance(output, LineLog):
                    if source is not None and "__source__" not in output:
                        output["__source__"] = source
                    yield output
                else:
                    self._malformed.inc()
                    yield pvalue.TaggedOutput(MALFORMED, output)

    def _parse_lines(self, path: str, lines: Iterable[tuple[int, bytes]]) -> Iterator:
        as_json = self._format == "jsonl"
        for number, raw in lines:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                self._blank.inc()
                continue
            self._read.inc()
            if as_json:
                try:
                    log = orjson.loads(line)  # checks UTF-8 too
                except orjson.JSONDecodeError as e:
                    yield malformed(path, number, line, f"not valid JSON: {e}")
                    continue
                if not isinstance(log, dict):
                    reason = f"a JSON {type(log).__name__}, not an object"
                    yield malformed(path, number, line, reason)
                    continue
            else:
                try:
                    log = {"content": line.decode("utf-8")}
                except UnicodeDecodeError as e:
                    yield malformed(path, number, line, f"not valid UTF-8 (at byte {e.start})")
                    continue
            yield LineLog(log, path, number)

    def _parse_csv(self, path: str, lines: Iterable[tuple[int, bytes]]) -> Iterator:
        """Rows under the header row; a row is one or more physical lines (quoted newlines)."""
        texts = _CsvLines(path, lines)
        rows = csv.reader(texts)
        header = None
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as e:
                self._read.inc()
                yield malformed(path, texts.first_line, texts.take(), f"not valid CSV: {e}")
                continue
            finally:
                yield from texts.bad
                texts.bad.clear()
            number, raw = texts.first_line, texts.take()
            if not row:
                continue
            if header is None:
                header = row
                continue
            self._read.inc()
            if len(row) != len(header):
                reason = f"{len(row)} values under a header of {len(header)} fields"
                yield malformed(path, number, raw, reason)
                continue
            yield LineLog(dict(zip(header, row, strict=True)), path, number)


class _CsvLines:
    """Decoded lines for ``csv.reader``, remembering the raw text of the row being read.

    A line that is not UTF-8 becomes a malformed record (in ``bad``) and an
    empty line for the reader, so that the rows around it are still read.
    """

    def __init__(self, path: str, lines: Iterable[tuple[int, bytes]]):
        self._path = path
        self._lines = iter(lines)
        self._row: list[str] = []
        self.first_line = 0
        self.bad: list[dict] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        number, raw = next(self._lines)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.bad.append(
                malformed(self._path, number, raw, f"not valid UTF-8 (at byte {e.start})")
            )
            return "\n"
        if not self._row:
            self.first_line = number
        self._row.append(text)
        return text

    def take(self) -> str:
        """The raw text of the row just read (and forget it)."""
        text, self._row = "".join(self._row).rstrip("\r\n"), []
        return text
