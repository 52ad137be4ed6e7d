"""Backfill log files into SLS: ``python -m pipelines.files_to_sls --input GLOB``.

Formats: ``jsonl`` (one JSON object a line), ``text`` (each line becomes
``{"content": line}``), ``csv`` (a header row names the fields), or ``auto``
(the default: from the first file's extension, else its first line). Each
log's source is its file's name unless ``--source`` is given.

With no ``--endpoint`` it starts the embedded SLS emulator, which keeps what
it receives under ``--data-dir`` (adding to earlier runs unless ``--fresh``),
and says where to look. Lines that cannot be read, and logs the sink cannot
write, go to the failed output (``--failed-output``, by default
``sls-failed/failed``, each run in files of its own named by its UTC time),
one JSON object each with the file, line number, raw line and reason, so
every line is accounted for.

Runs on DirectRunner (the default here: FnApiRunner), Dataflow and Flink::

    python -m pipelines.files_to_sls --input 'gs://bucket/logs/*.jsonl' \\
        --endpoint cn-hangzhou.log.aliyuncs.com --sls_project P --logstore L \\
        --runner DataflowRunner --project GCP_PROJECT --region R \\
        --temp_location gs://bucket/tmp --extra_package dist/sls_beam-0.1.0-py3-none-any.whl
"""

from __future__ import annotations

import glob
import os
import sys
import time
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.common import (
    ReportProgress,
    SLSSinkOptions,
    add_flag,
    default_runner,
    exit_with_help_if_asked,
    failure_record,
    prepare_process,
    print_summary,
    sink_from_options,
    summarize,
)
from pipelines.reading import (
    FORMATS,
    MALFORMED,
    LogFile,
    ReadLogFiles,
    detect_format,
    each_output,
    file_source,
    matched_files,
)
from sls_beam.emulator import Emulator, data_file

DEMO_PROJECT = "demo-project"
DEMO_LOGSTORE = "demo-logstore"
DEFAULT_FAILED_OUTPUT = os.path.join("sls-failed", "failed")
DEFAULT_DATA_DIR = "sls-emulator-data"
#: Past this share of lines that could not be read, the summary says to check --format.
MOSTLY_MALFORMED = 0.5


class FilesToSLSOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        # Not required=True: Beam parses every options class ever imported, for every pipeline.
        add_flag(parser, "input", help="file pattern (local, gs://, …); required")
        add_flag(
            parser,
            "format",
            dest="input_format",
            default="auto",
            choices=["auto", *FORMATS],
            help="input format; auto: from the first file's extension (.jsonl/.json/.ndjson, "
            ".csv), else from its first line (a JSON object: jsonl; otherwise text)",
        )
        add_flag(
            parser,
            "data-dir",
            default=DEFAULT_DATA_DIR,
            help="with no --endpoint: where the embedded emulator keeps the logs",
        )
        add_flag(
            parser,
            "fresh",
            action="store_true",
            help="with no --endpoint: start the embedded emulator empty (by default each run "
            "adds to what earlier runs left in --data-dir)",
        )


def read_logs(pipeline, pattern: str, input_format: str):
    """The logs and the malformed-line records of the files ``pattern`` matches."""
    parsed = (
        pipeline
        | "Match" >> fileio.MatchFiles(pattern)
        | "Describe" >> beam.Map(LogFile.of, input_format)
        | "SpreadFiles" >> beam.Reshuffle()
        | "Read" >> beam.ParDo(ReadLogFiles(input_format))
        | "Lines" >> beam.FlatMap(each_output).with_outputs(MALFORMED, main="logs")
    )
    return parsed["logs"], parsed[MALFORMED]


def build(
    pipeline,
    options: PipelineOptions,
    endpoint: str,
    project: str,
    input_format: str,
    failed_prefix: str,
):
    """Read → parse → WriteToSLS; malformed lines and failed logs → the failed output,
    files named ``failed_prefix-NNNNN-of-NNNNN.jsonl``."""
    files = options.view_as(FilesToSLSOptions)
    sink = options.view_as(SLSSinkOptions)
    logs, malformed = read_logs(pipeline, files.input, input_format)
    # Each log's source is its file's name, unless --source gives one.
    result = logs | "WriteToSLS" >> sink_from_options(
        sink, endpoint, project, default_source=file_source
    )
    if sink.progress_secs:
        result.written | "Progress" >> beam.ParDo(ReportProgress(sink.progress_secs))
    (
        (malformed, result.failed)
        | "AllFailures" >> beam.Flatten()
        | "ToJson" >> beam.Map(failure_record)
        | "WriteFailed"
        >> beam.io.WriteToText(failed_prefix, file_name_suffix=".jsonl", skip_if_empty=True)
    )


def failed_prefix_of(sink: SLSSinkOptions) -> str:
    """Where this run's failed output goes: ``--failed-output`` and the run's UTC time, so
    that a run never replaces what an earlier run left there (Beam's text sink deletes
    the files its prefix matches)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{sink.failed_output or DEFAULT_FAILED_OUTPUT}-{stamp}"


def run(argv: list[str] | None = None) -> dict:
    """Run the backfill; return the summary figures."""
    argv = list(sys.argv[1:] if argv is None else argv)
    exit_with_help_if_asked(
        argv, "python -m pipelines.files_to_sls", __doc__, FilesToSLSOptions, SLSSinkOptions
    )
    options = PipelineOptions(default_runner(argv))
    files = options.view_as(FilesToSLSOptions)
    sink = options.view_as(SLSSinkOptions)
    if not files.input:
        raise SystemExit("--input is required: a file pattern such as 'logs/*.jsonl'")
    paths = matched_files(files.input)
    input_format = files.input_format
    if input_format == "auto":
        input_format, why = detect_format(paths[0])
        print(f"format: {input_format} (from {why}; --format sets it)")
    emulator = None
    endpoint, project = sink.endpoint, sink.sls_project_name()
    if endpoint is None:
        project = project or DEMO_PROJECT
        sink.logstore = sink.logstore or DEMO_LOGSTORE
        if files.fresh:
            for path in glob.glob(os.path.join(files.data_dir, "*", "*.jsonl")):
                os.remove(path)
        emulator = Emulator(data_dir=files.data_dir)
        endpoint = emulator.start()
        print(f"No --endpoint: writing to the embedded SLS emulator at {endpoint}")
    if not project or not sink.logstore:
        raise SystemExit("--sls_project (or --project) and --logstore are required with --endpoint")
    failed_prefix = failed_prefix_of(sink)
    started = time.monotonic()
    prepare_process()
    try:
        pipeline = beam.Pipeline(options=options)
        try:
            build(pipeline, options, endpoint, project, input_format, failed_prefix)
        except ValueError as e:  # a bad option value: one line, no traceback
            raise SystemExit(f"error: {e}") from None
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        if emulator:
            emulator.close()
    summary = summarize(result, time.monotonic() - started)
    print_summary(summary)
    report(summary, sink, failed_prefix, files, input_format, emulator, project)
    return summary


def report(
    summary, sink, failed_prefix: str, files, input_format: str, emulator, project: str
) -> None:
    """Where things went, and what to do when the input looked like another format."""
    read, malformed = summary["logs_read"], summary["lines_malformed"]
    if summary["logs_failed"]:
        print(f"failed output: {failed_prefix}*.jsonl")
    if read and malformed > MOSTLY_MALFORMED * read:
        others = " or ".join(f"--format {f}" for f in FORMATS if f != input_format)
        print(
            f"warning: {malformed:,} of {read:,} lines could not be read as {input_format}; "
            f"is the input another format? Try {others}",
            file=sys.stderr,
        )
    if emulator:
        path = data_file(files.data_dir, project, sink.logstore)
        kept = emulator.stats()["logs"]
        print(
            f"logs received by the emulator: {path} ({kept:,} in all, "
            f"{summary['logs_written']:,} from this run; --fresh starts empty)"
        )
        print(f"  look at them:  head -n 3 {path}")
        print(
            f"  or serve them: python -m sls_beam.emulator --data-dir {files.data_dir}"
            f"  (then GET /_emulator/logs?project={project}&logstore={sink.logstore})"
        )


if __name__ == "__main__":
    run()
