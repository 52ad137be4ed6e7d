"""Backfill log files into SLS: ``python -m pipelines.files_to_sls --input GLOB``.

Formats: ``jsonl`` (one JSON object a line), ``text`` (each line becomes
``{"content": line}``), ``csv`` (a header row names the fields). Each log's
source is its file's name unless ``--source`` is given.

With no ``--endpoint`` it starts the embedded SLS emulator, keeps what it
receives under ``--data-dir``, and says where to look. Lines that cannot be
read, and logs the sink cannot write, go to the failed output (JSON lines
with the file, the reason and the record), so every line is accounted for.

Runs on DirectRunner (the default here: FnApiRunner), Dataflow and Flink::

    python -m pipelines.files_to_sls --input 'gs://bucket/logs/*.jsonl' \\
        --endpoint cn-hangzhou.log.aliyuncs.com --sls_project P --logstore L \\
        --runner DataflowRunner --project GCP_PROJECT --region R \\
        --temp_location gs://bucket/tmp --extra_package dist/sls_beam-0.1.0-py3-none-any.whl
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time

import apache_beam as beam
import orjson
from apache_beam import pvalue
from apache_beam.io import fileio
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.common import (
    ReportProgress,
    SLSSinkOptions,
    counter,
    default_runner,
    failure_record,
    print_summary,
    sink_from_options,
    summarize,
)
from sls_beam.emulator import Emulator, data_file

MALFORMED = "malformed"
DEMO_PROJECT = "demo-project"
DEMO_LOGSTORE = "demo-logstore"


class FilesToSLSOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        # Not required=True: Beam parses every options class ever imported, for every pipeline.
        parser.add_argument("--input", help="file pattern (local, gs://, …); required")
        parser.add_argument(
            "--format",
            dest="input_format",
            default="jsonl",
            choices=["jsonl", "text", "csv"],
            help="input format (default jsonl)",
        )
        parser.add_argument(
            "--data-dir",
            "--data_dir",
            dest="data_dir",
            default="sls-emulator-data",
            help="with no --endpoint: where the embedded emulator keeps the logs",
        )


class ParseLine(beam.DoFn):
    """(file name, line) → a log, or a malformed-line record on the MALFORMED output."""

    def __init__(self, input_format: str, source_from_file: bool):
        self._format = input_format
        self._source_from_file = source_from_file
        self._read = counter("logs_read")
        self._malformed = counter("malformed")
        self._blank = counter("blank_lines")

    def process(self, element):
        file_name, line = element
        if not line.strip():
            self._blank.inc()
            return
        self._read.inc()
        if self._format == "text":
            log = {"content": line}
        else:
            try:
                log = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                yield self._bad(file_name, f"not valid JSON: {e}", line)
                return
            if not isinstance(log, dict):
                yield self._bad(file_name, f"a JSON {type(log).__name__}, not an object", line)
                return
        yield self._with_source(log, file_name)

    def _with_source(self, log: dict, file_name: str) -> dict:
        if self._source_from_file and "__source__" not in log:
            log["__source__"] = os.path.basename(file_name)[:128]
        return log

    def _bad(self, file_name: str, reason: str, line: str):
        self._malformed.inc()
        record = {"file": file_name, "reason": reason, "record": line[:10_000]}
        return pvalue.TaggedOutput(MALFORMED, record)


class ParseCsvFile(ParseLine):
    """A whole CSV file (its header names the fields) → logs, or malformed rows."""

    def process(self, readable):
        file_name = readable.metadata.path
        with readable.open() as raw:
            rows = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
            for row in rows:
                self._read.inc()
                if None in row or None in row.values():
                    reason = (
                        f"row {rows.line_num} has {len(rows.fieldnames)} header fields "
                        "but a different number of values"
                    )
                    yield self._bad(file_name, reason, repr(row))
                    continue
                yield self._with_source(dict(row), file_name)


def read_logs(pipeline, options: FilesToSLSOptions, source_from_file: bool):
    """The logs and the malformed-line records of the input files."""
    if options.input_format == "csv":
        parsed = (
            pipeline
            | "Match" >> fileio.MatchFiles(options.input)
            | "Open" >> fileio.ReadMatches()
            | "ParseCsv"
            >> beam.ParDo(ParseCsvFile("csv", source_from_file)).with_outputs(
                MALFORMED, main="logs"
            )
        )
    else:
        parsed = (
            pipeline
            | "Read" >> beam.io.ReadFromTextWithFilename(options.input)
            | "Parse"
            >> beam.ParDo(ParseLine(options.input_format, source_from_file)).with_outputs(
                MALFORMED, main="logs"
            )
        )
    return parsed["logs"], parsed[MALFORMED]


def build(pipeline, options: PipelineOptions, endpoint: str, project: str, failed_output: str):
    """Read → parse → WriteToSLS; malformed lines and failed logs → the failed output."""
    files = options.view_as(FilesToSLSOptions)
    sink = options.view_as(SLSSinkOptions)
    logs, malformed = read_logs(pipeline, files, source_from_file=sink.sls_source is None)
    result = logs | "WriteToSLS" >> sink_from_options(sink, endpoint, project)
    if sink.progress_secs:
        result.written | "Progress" >> beam.ParDo(ReportProgress(sink.progress_secs))
    (
        (malformed, result.failed)
        | "AllFailures" >> beam.Flatten()
        | "ToJson" >> beam.Map(failure_record)
        | "WriteFailed" >> beam.io.WriteToText(failed_output, file_name_suffix=".jsonl")
    )


def run(argv: list[str] | None = None) -> dict:
    """Run the backfill; return the summary figures."""
    argv = default_runner(list(sys.argv[1:] if argv is None else argv))
    options = PipelineOptions(argv)
    files = options.view_as(FilesToSLSOptions)
    sink = options.view_as(SLSSinkOptions)
    if not files.input:
        raise SystemExit("--input is required: a file pattern such as 'logs/*.jsonl'")
    emulator = None
    endpoint, project = sink.endpoint, sink.sls_project_name()
    if endpoint is None:
        emulator = Emulator(data_dir=files.data_dir)
        endpoint = emulator.start()
        project = project or DEMO_PROJECT
        sink.logstore = sink.logstore or DEMO_LOGSTORE
        print(f"No --endpoint: writing to the embedded SLS emulator at {endpoint}")
    if not project or not sink.logstore:
        raise SystemExit("--sls_project (or --project) and --logstore are required with --endpoint")
    failed_output = sink.failed_output or os.path.join(files.data_dir, "failed", "failed")
    started = time.monotonic()
    try:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, options, endpoint, project, failed_output)
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        if emulator:
            emulator.close()
    summary = summarize(result, time.monotonic() - started)
    print_summary(summary)
    print(f"failed output: {failed_output}*.jsonl")
    if emulator:
        path = data_file(files.data_dir, project, sink.logstore)
        print(f"logs received by the emulator: {path}")
        print(f"  look at them:  head -n 3 {path}")
        print(
            f"  or serve them: python -m sls_beam.emulator --data-dir {files.data_dir}"
            f"  (then GET /_emulator/logs?project={project}&logstore={sink.logstore})"
        )
    return summary


if __name__ == "__main__":
    run()
