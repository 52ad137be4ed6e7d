"""Stream Pub/Sub messages into SLS: ``python -m pipelines.pubsub_to_sls``.

::

    python -m pipelines.pubsub_to_sls \\
        --subscription projects/my-gcp-project/subscriptions/app-logs \\
        --endpoint cn-hangzhou.log.aliyuncs.com --sls_project my-project --logstore my-logstore \\
        --attributes-as tags --event-time-field publish_time --failed-output gs://my-bucket/failed

Locally (no runner named) it runs on Beam's BundleBasedDirectRunner: the
DirectRunner's streaming engine, which needs no download. Its Pub/Sub read
waits up to 30 s for messages while idle, and processing-time timers fire
only between reads, so for a local run pass ``--sink-mode bundle``: each
bundle is written as it ends, and logs land within a second or two.

A message whose payload is a JSON object becomes the log; any other payload
becomes ``{"content": payload}``. Message attributes become tags, fields, or
nothing. The element timestamp is the Pub/Sub publish time, so
``--event-time-field`` carries it (Unix seconds) in a field of the log.
Logs that cannot be written go to the failed output, a file per window
(``--failed-window-secs``, one minute by default).
"""

from __future__ import annotations

import sys
import time

import apache_beam as beam
import orjson
from apache_beam.io import fileio
from apache_beam.io.gcp.pubsub import ReadFromPubSub
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms import window

from pipelines.common import (
    ReportProgress,
    SLSSinkOptions,
    add_flag,
    counter,
    default_runner,
    exit_with_help_if_asked,
    failure_record,
    prepare_process,
    sink_from_options,
)

#: Seconds of failures that share one failed-output file.
DEFAULT_FAILED_WINDOW_SECS = 60.0


class PubSubToSLSOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_flag(parser, "subscription", help="projects/PROJECT/subscriptions/NAME to read")
        add_flag(
            parser,
            "pubsub-topic",
            help="projects/PROJECT/topics/NAME to read (a temporary subscription is made)",
        )
        add_flag(
            parser,
            "attributes-as",
            default="tags",
            choices=["tags", "fields", "none"],
            help="where message attributes go",
        )
        add_flag(
            parser,
            "failed-window-secs",
            type=float,
            default=DEFAULT_FAILED_WINDOW_SECS,
            help="one failed-output file per window of this many seconds",
        )


class MessageToLog(beam.DoFn):
    """A PubsubMessage → a log (a dict), with its attributes where asked."""

    def __init__(self, attributes_as: str):
        self._attributes_as = attributes_as
        self._read = counter("logs_read")

    def process(self, message):
        self._read.inc()
        try:
            log = orjson.loads(message.data)
        except orjson.JSONDecodeError:
            log = None
        if not isinstance(log, dict):
            log = {"content": message.data}  # bytes: the sink refuses non-UTF-8 into failed
        attributes = message.attributes or {}
        if attributes and self._attributes_as == "tags":
            log["__tags__"] = {**attributes, **log.get("__tags__", {})}
        elif attributes and self._attributes_as == "fields":
            log = {**attributes, **log}
        yield log


def at_processing_time(record):
    """Re-stamp a record with the current time (forward only, which Beam allows)."""
    return window.TimestampedValue(record, time.time())


def build(pipeline, options: PipelineOptions):
    """Pub/Sub → logs → WriteToSLS; failed logs → windowed JSON-lines files."""
    source = options.view_as(PubSubToSLSOptions)
    sink = options.view_as(SLSSinkOptions)
    if bool(source.subscription) == bool(source.pubsub_topic):
        raise SystemExit("give exactly one of --subscription and --pubsub_topic")
    if not (sink.endpoint and sink.sls_project_name() and sink.logstore):
        raise SystemExit("--endpoint, --sls_project (or --project) and --logstore are required")
    messages = pipeline | "Read" >> ReadFromPubSub(
        subscription=source.subscription, topic=source.pubsub_topic, with_attributes=True
    )
    result = (
        messages
        | "ToLog" >> beam.ParDo(MessageToLog(source.attributes_as))
        | "WriteToSLS" >> sink_from_options(sink, sink.endpoint, sink.sls_project_name())
    )
    if sink.progress_secs:
        result.written | "Progress" >> beam.ParDo(ReportProgress(sink.progress_secs))
    if sink.failed_output:
        (
            result.failed
            # Window by when the log failed: a backlog's publish times may be older than the
            # watermark already is (the DirectRunner's is wall-clock), and would come late.
            | "AtFailureTime" >> beam.Map(at_processing_time)
            | "Window" >> beam.WindowInto(window.FixedWindows(source.failed_window_secs))
            | "ToJson" >> beam.Map(failure_record)
            | "WriteFailed"
            >> fileio.WriteToFiles(
                path=sink.failed_output,
                file_naming=fileio.default_file_naming("failed", ".jsonl"),
                shards=1,
            )
        )
    return result


def run(argv: list[str] | None = None, wait: bool = True):
    """Start the streaming pipeline; with ``wait``, block until it ends."""
    argv = list(sys.argv[1:] if argv is None else argv)
    exit_with_help_if_asked(
        argv, "python -m pipelines.pubsub_to_sls", __doc__, PubSubToSLSOptions, SLSSinkOptions
    )
    options = PipelineOptions(default_runner(argv, "BundleBasedDirectRunner"))
    options.view_as(StandardOptions).streaming = True
    prepare_process()
    pipeline = beam.Pipeline(options=options)
    try:
        build(pipeline, options)
    except ValueError as e:  # a bad option value: one line, no traceback
        raise SystemExit(f"error: {e}") from None
    result = pipeline.run()
    if wait:
        result.wait_until_finish()
    return result


if __name__ == "__main__":
    run()
