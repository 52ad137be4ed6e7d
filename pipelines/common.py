"""What the example pipelines share: sink options, the failed output, progress, the summary."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from sls_beam import METRICS_NAMESPACE, FailedLog, WriteToSLS

#: Metrics namespace of the example pipelines' own counters (lines read, …).
PIPELINE_NAMESPACE = "sls_beam_pipelines"


class SLSSinkOptions(PipelineOptions):
    """Where and how to write: the options every example pipeline takes."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--endpoint",
            help="SLS endpoint, e.g. cn-hangzhou.log.aliyuncs.com (HTTPS) or http://127.0.0.1:PORT",
        )
        parser.add_argument(
            "--sls_project",
            "--sls-project",
            dest="sls_project",
            help="SLS project (default: --project, which Dataflow also uses for the GCP project)",
        )
        parser.add_argument("--logstore", help="SLS logstore (web tracking enabled)")
        parser.add_argument("--topic", dest="sls_topic", default="", help="log topic")
        parser.add_argument(
            "--source", dest="sls_source", default=None, help="log source (files: the file name)"
        )
        parser.add_argument(
            "--compression",
            default="lz4",
            choices=["lz4", "deflate", "none"],
            help="request compression",
        )
        parser.add_argument(
            "--event-time-field",
            "--event_time_field",
            dest="event_time_field",
            default=None,
            help="field to keep each log's event time in: a log's own __time__ moves there "
            "(the service overwrites __time__ with the arrival time; without this flag, "
            "logs that carry __time__ go to the failed output)",
        )
        parser.add_argument(
            "--failed-output",
            "--failed_output",
            dest="failed_output",
            default=None,
            help="path prefix for logs that could not be read or written (JSON lines)",
        )
        parser.add_argument(
            "--max-in-flight",
            "--max_in_flight",
            dest="max_in_flight",
            type=int,
            default=4,
            help="requests awaiting answers at once, per DoFn instance (one per worker thread)",
        )
        parser.add_argument(
            "--progress-secs",
            "--progress_secs",
            dest="progress_secs",
            type=float,
            default=10.0,
            help="seconds between progress lines (0: none)",
        )

    def sls_project_name(self) -> str | None:
        return self.sls_project or self.view_as(GoogleCloudOptions).project


def sink_from_options(options: SLSSinkOptions, endpoint: str, project: str) -> WriteToSLS:
    """The WriteToSLS transform the options describe."""
    return WriteToSLS(
        endpoint,
        project,
        options.logstore,
        topic=options.sls_topic,
        source=options.sls_source or "",
        compression=options.compression,
        event_time_key=options.event_time_field,
        max_in_flight=options.max_in_flight,
    )


def failure_record(failed: Any) -> str:
    """One JSON line of the failed output, in one schema for every failure.

    Fields: ``stage`` (``read``: the line could not be parsed; ``write``: the
    sink did not write the log), ``file`` and ``line`` (where the log came
    from, when known), ``raw`` (the line, or the log as JSON, as text),
    ``reason``, and for write failures ``error_code``, ``status`` and
    ``request_id``.
    """
    if isinstance(failed, FailedLog):
        log = failed.log
        record = {
            "stage": "write",
            "file": getattr(log, "file", None),
            "line": getattr(log, "line", None),
            "raw": log if failed.log_is_excerpt else _as_text(log),
            "reason": failed.error_message,
            "error_code": failed.error_code,
            "status": failed.status,
            "request_id": failed.request_id,
        }
    else:  # a line that could not be read: file, line, raw, reason
        record = {"stage": "read", **failed, "error_code": "Malformed"}
        record.update(status=None, request_id=None)
    return orjson.dumps(record, default=str).decode()


def _as_text(log: Any) -> str:
    """A log as the JSON text it came from (as near as can be told), never raising."""
    try:
        return orjson.dumps(log, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(log)[:10_000]


BEAM_OPTIONS_HELP = (
    "Beam's own options are accepted too: --runner (FnApiRunner here by default; "
    "DataflowRunner, FlinkRunner, PortableRunner), --direct_num_workers, and each "
    "runner's settings; see "
    "https://beam.apache.org/releases/pydoc/current/apache_beam.options.pipeline_options.html"
)


def exit_with_help_if_asked(argv: list[str], prog: str, doc: str, *option_classes) -> None:
    """For ``-h``/``--help``: print every option of the pipeline, with defaults, and exit.

    Beam's own parser knows only the options classes it has seen, and prints
    none of them; this lists the pipeline's own, then points at Beam's.
    """
    if not {"-h", "--help"} & set(argv):
        return
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc.strip().splitlines()[0],
        epilog=BEAM_OPTIONS_HELP,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for options in option_classes:
        options._add_argparse_args(parser)
    parser.print_help()
    raise SystemExit(0)


class ReportProgress(beam.DoFn):
    """Prints logs written and logs/s every ``interval_secs`` (per worker)."""

    def __init__(self, interval_secs: float):
        self._interval = interval_secs

    def setup(self):
        self._started = self._last = time.monotonic()
        self._logs = 0

    def process(self, written):
        self._logs += written.log_count
        now = time.monotonic()
        if self._interval and now - self._last >= self._interval:
            self._last = now
            rate = self._logs / (now - self._started)
            print(
                f"progress: {self._logs:,} logs written, {rate:,.0f} logs/s",
                file=sys.stderr,
                flush=True,
            )


def counter(name: str):
    return Metrics.counter(PIPELINE_NAMESPACE, name)


def summarize(result, elapsed_secs: float) -> dict:
    """The run's figures, from Beam metrics (so it works on any runner)."""
    figures: dict[str, int] = {}
    for namespace in (PIPELINE_NAMESPACE, METRICS_NAMESPACE):
        query = result.metrics().query(MetricsFilter().with_namespace(namespace))
        for item in query["counters"]:
            figures[item.key.metric.name] = figures.get(item.key.metric.name, 0) + item.committed
    written = figures.get("logs_written", 0)
    return {
        "logs_read": figures.get("logs_read", 0),
        "logs_written": written,
        "logs_failed": figures.get("failed_logs", 0) + figures.get("malformed", 0),
        "lines_malformed": figures.get("malformed", 0),
        "requests": figures.get("requests", 0),
        "raw_bytes": figures.get("raw_bytes", 0),
        "sent_bytes": figures.get("sent_bytes", 0),
        "elapsed_secs": round(elapsed_secs, 2),
        "logs_per_sec": round(written / elapsed_secs) if elapsed_secs else 0,
    }


def print_summary(summary: dict) -> None:
    width = max(map(len, summary))
    print("summary:")
    for key, value in summary.items():
        print(
            f"  {key:<{width}}  {value:,}"
            if isinstance(value, int)
            else f"  {key:<{width}}  {value}"
        )


def default_runner(argv: list[str]) -> list[str]:
    """Use Beam's portable in-process runner when none is named.

    The plain DirectRunner first tries to download the Prism runner binary,
    which fails without internet; FnApiRunner is what it falls back to.
    """
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in argv):
        return [*argv, "--runner=FnApiRunner"]
    return argv
