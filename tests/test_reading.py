"""Reading log files in byte ranges: every line read once, in its range, with its place."""

from __future__ import annotations

import gzip
import json

import pytest
from apache_beam import pvalue
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker

from pipelines import reading
from pipelines.reading import (
    MALFORMED,
    FileRanges,
    LineBlock,
    LineLog,
    LogFile,
    ReadLogFiles,
    blank_lines,
    each_output,
    file_source,
)
from sls_beam.json_lines import line_starts


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 bytes, so that ranges and blocks end everywhere in a line."""
    monkeypatch.setattr(reading, "_BLOCK_BYTES", 64)


def typed_lines(count: int) -> list[bytes]:
    lines = []
    for n in range(count):
        log = {"n": n, "ok": n % 2 == 0, "msg": "é" * (n % 7) + "x" * (n * 13 % 150)}
        lines.append(json.dumps(log, ensure_ascii=False).encode())
    return lines


def read_range(path, size: int, restriction: OffsetRange, split_after: int | None = None):
    """What one reader of ``restriction`` outputs, and its tracker (checked done).

    ``split_after``: after that many outputs the runner splits the rest off
    (as a checkpoint would), and the residual range is returned too."""
    tracker = OffsetRestrictionTracker(restriction)
    fn = ReadLogFiles("jsonl")
    outputs, residual = [], None
    for output in each_of(fn.process(LogFile(str(path), size, True), tracker)):
        outputs.append(output)
        if split_after is not None and len(outputs) == split_after:
            _, split = tracker.try_split(0.5)
            residual = split
    tracker.check_done()
    return outputs, residual


def each_of(lists):
    """The reader's outputs one by one, as the pipeline's FlatMap hands them on; a block
    of JSON lines as what the sink reports each of its lines with (a line that is not a
    JSON object: its malformed record, tagged here as the reader tags its own)."""
    for outputs in lists:
        for output in each_output(outputs):
            if output.__class__ is not LineBlock:
                yield output
                continue
            for start in line_starts(output.text):
                log = output.log_at(start)
                yield log if log.__class__ is LineLog else pvalue.TaggedOutput(MALFORMED, log)


@pytest.mark.parametrize(
    "block, blank",
    [
        (b'{"a":1}\n{"b":2}\n', 0),
        (b'{"a":1}\n\n  \r\n{"b":2}\n', 2),
        (b' {"a":1}\nx\n', 0),
        (b"\n{}\n", 1),
        (b'{"a":1}\n \t\n', 1),
        (b"", 0),
    ],
)
def test_blank_lines_are_counted_in_a_block(block, blank):
    assert blank_lines(block) == blank


def offsets_of(data: bytes) -> list[int]:
    starts, position = [], 0
    for line in data.split(b"\n")[:-1]:
        starts.append(position)
        position += len(line) + 1
    return starts


@pytest.mark.parametrize("range_bytes", [1, 50, 97, 256, 1000, 10**6])
def test_ranges_read_every_line_once_with_its_offset(tmp_path, small_blocks, range_bytes):
    lines = typed_lines(120)
    lines[10] = b"\r\n".join([lines[10], b""])[:-1]  # a CRLF line ending
    lines.insert(40, b"")  # a blank line
    lines.insert(41, b"not json")
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "app.jsonl"
    path.write_bytes(data)
    outputs = []
    for restriction in OffsetRange(0, len(data)).split(range_bytes):
        outputs += read_range(path, len(data), restriction)[0]
    logs = [o for o in outputs if isinstance(o, LineLog)]
    bad = [o.value for o in outputs if isinstance(o, pvalue.TaggedOutput)]
    assert [log["n"] for log in logs] == list(range(120))  # once each, in order
    starts = offsets_of(data)
    for log in logs:  # the offset finds the line
        line = data[log.offset : data.index(b"\n", log.offset)]
        assert json.loads(line) == dict(log)
    assert [b["raw"] for b in bad] == ["not json"] and bad[0]["offset"] == starts[41]
    first_range_lines = [log for log in logs if log.offset < range_bytes]
    assert all(log.line == starts.index(log.offset) + 1 for log in first_range_lines)
    assert all(log.line is None for log in logs if log.offset >= range_bytes)


def test_a_split_while_reading_leaves_the_rest_to_the_residual(tmp_path, small_blocks):
    data = b"\n".join(typed_lines(200)) + b"\n"
    path = tmp_path / "app.jsonl"
    path.write_bytes(data)
    primary, residual = read_range(path, len(data), OffsetRange(0, len(data)), split_after=30)
    assert residual is not None and residual.start < len(data)
    rest, _ = read_range(path, len(data), residual)
    numbers = [o["n"] for o in primary + rest]
    assert numbers == list(range(200))


def test_a_line_too_long_is_malformed_and_never_held_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(reading, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(reading, "_BLOCK_BYTES", 300)
    data = b'{"a": 1}\n' + b'{"b": "' + b"x" * 5000 + b'"}\n{"c": 3}\n{"d": 4}'
    path = tmp_path / "long.jsonl"
    path.write_bytes(data)
    outputs, _ = read_range(path, len(data), OffsetRange(0, len(data)))
    logs = [(dict(o), o.line, o.offset) for o in outputs if isinstance(o, LineLog)]
    assert logs == [({"a": 1}, 1, 0), ({"c": 3}, 3, 5019), ({"d": 4}, 4, 5028)]
    [bad] = [o.value for o in outputs if isinstance(o, pvalue.TaggedOutput)]
    assert (bad["line"], bad["offset"]) == (2, 9) and "longer than" in bad["reason"]
    assert bad["raw"].startswith('{"b": "xxx') and len(bad["raw"]) <= reading.MAX_RAW_CHARS


def test_compressed_files_and_csv_are_read_whole(tmp_path):
    data = b"\n".join(typed_lines(50)) + b"\n"
    gz = tmp_path / "app.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    ranges = FileRanges()

    class Metadata:
        path, size_in_bytes = str(gz), gz.stat().st_size

    file = LogFile.of(Metadata, "jsonl")
    assert not file.splittable
    [whole] = list(ranges.split(file, ranges.initial_restriction(file)))
    tracker = OffsetRestrictionTracker(whole)
    outputs = list(each_of(ReadLogFiles("jsonl").process(file, tracker)))
    tracker.check_done()
    assert [o["n"] for o in outputs] == list(range(50))
    assert {file_source(o) for o in outputs} == {"app.jsonl.gz"}
    assert [o.line for o in outputs] == list(range(1, 51))
    Metadata.path = str(tmp_path / "x.csv")
    assert not LogFile.of(Metadata, "csv").splittable
    Metadata.path = str(tmp_path / "x.jsonl")
    big = LogFile.of(Metadata, "jsonl")._replace(size=200 << 20)
    assert len(list(ranges.split(big, ranges.initial_restriction(big)))) == 3  # 64 MiB ranges


@pytest.mark.parametrize(
    "json_line", [None, b'{"a": 1, "t": 1.5, "u": {"v": [null, true]}}\r'], ids=["csv", "jsonl"]
)
def test_a_pickled_line_log_keeps_its_fields_and_its_place(json_line):
    """Pickled as its fields (a CSV row, a text line) or as the JSON line it was read
    from (parsed again): the same fields, of the same types, and the same place."""
    import pickle

    fields = {"a": 1, "t": 1.5, "u": {"v": [None, True]}}
    log = LineLog(fields, "f.jsonl", 3, 42, json_line)
    pickled = pickle.dumps(log)
    assert (b"_parsed" in pickled) == (json_line is not None)  # a JSON line: read again
    copy = pickle.loads(pickled)
    assert (type(copy), dict(copy), copy.file, copy.line, copy.offset, copy.json_line) == (
        LineLog,
        fields,
        "f.jsonl",
        3,
        42,
        json_line,
    )
    assert type(copy["t"]) is float and type(copy["u"]["v"][1]) is bool


def test_the_backfill_reads_a_file_in_ranges_and_writes_each_line_once(
    tmp_path, monkeypatch, emulator
):
    from pipelines import files_to_sls
    from tests.test_pipelines import sink_args

    monkeypatch.setattr(reading, "RANGE_BYTES", 4096)
    monkeypatch.setattr(reading, "_BLOCK_BYTES", 512)
    lines = typed_lines(3000)
    data = b"\n".join(lines) + b"\n"
    (tmp_path / "app.jsonl").write_bytes(data)
    ranges = list(FileRanges().split(LogFile("x", len(data), True), OffsetRange(0, len(data))))
    assert len(ranges) > 50
    summary = files_to_sls.run(["--input", str(tmp_path / "app.jsonl"), *sink_args(emulator)])
    stored = sorted(int(log.contents["n"]) for log in emulator.logs())
    assert stored == list(range(3000)) and summary["logs_read"] == 3000
    assert {log.source for log in emulator.logs()} == {"app.jsonl"}
