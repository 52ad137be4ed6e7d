"""What the example pipelines share: sink options, the failed output, progress, the summary."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from sls_beam import METRICS_NAMESPACE, FailedLog, WriteToSLS
from sls_beam.config import (
    DEFAULT_MAX_BUFFERING_SECS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MODE,
    MODES,
    PerElement,
)
from sls_beam.json_lines import NotJsonError
from sls_beam.signing import DEFAULT_SIGNATURE_VERSION, SIGNATURE_VERSIONS
from sls_beam.wire import COMPRESSIONS, DEFAULT_COMPRESSION

#: Metrics namespace of the example pipelines' own counters (lines read, …).
PIPELINE_NAMESPACE = "sls_beam_pipelines"
#: Seconds between progress lines.
DEFAULT_PROGRESS_SECS = 10.0


def add_flag(parser, name: str, **kwargs) -> None:
    """Add ``--name-with-dashes``, also spelled ``--name_with_underscores`` (Beam's style),
    both setting ``name_with_underscores``."""
    dest = kwargs.pop("dest", name.replace("-", "_"))
    spellings = dict.fromkeys([f"--{name}", f"--{name.replace('-', '_')}"])
    parser.add_argument(*spellings, dest=dest, **kwargs)


class SLSSinkOptions(PipelineOptions):
    """Where and how to write: the options every example pipeline takes."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flag(
            parser,
            "endpoint",
            help="SLS endpoint, e.g. cn-hangzhou.log.aliyuncs.com (HTTPS) or http://127.0.0.1:PORT",
        )
        add_flag(
            parser,
            "sls-project",
            help="SLS project (default: --project, which Dataflow also uses for the GCP project)",
        )
        add_flag(parser, "logstore", help="SLS logstore (web tracking enabled)")
        add_flag(parser, "topic", dest="sls_topic", default="", help="log topic")
        add_flag(parser, "source", dest="sls_source", help="log source (files: the file name)")
        add_flag(
            parser,
            "compression",
            default=DEFAULT_COMPRESSION,
            choices=COMPRESSIONS,
            help="request compression",
        )
        add_flag(
            parser,
            "event-time-field",
            help="field to keep each log's event time in: a log's own __time__ moves there "
            "(the service overwrites __time__ with the arrival time; without this flag, "
            "logs that carry __time__ go to the failed output)",
        )
        add_flag(
            parser,
            "failed-output",
            help="path prefix for logs that could not be read or written (JSON lines; "
            "the files backfill's default: sls-failed/failed)",
        )
        add_flag(
            parser,
            "max-in-flight",
            type=int,
            default=DEFAULT_MAX_IN_FLIGHT,
            help="requests awaiting answers at once, per DoFn instance (one per worker thread)",
        )
        add_flag(
            parser,
            "max-buffering-secs",
            type=float,
            default=DEFAULT_MAX_BUFFERING_SECS,
            help="streaming: longest a log waits in a partial batch (seconds)",
        )
        add_flag(
            parser,
            "sink-mode",
            default=DEFAULT_MODE,
            choices=MODES,
            help="WriteToSLS mode: bundle (batch within each bundle), stateful (buffer in "
            "Beam state, flushed by count, bytes, --max-buffering-secs or window end), "
            "auto (stateful for streaming)",
        )
        add_flag(
            parser,
            "credentials",
            choices=["env"],
            help="sign each request with the AccessKey in ALIBABA_CLOUD_ACCESS_KEY_ID, "
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET (and ALIBABA_CLOUD_SECURITY_TOKEN), read on each "
            "worker, so secrets stay out of the job; logs keep their __time__ "
            "(default: anonymous web tracking)",
        )
        add_flag(
            parser,
            "signature-version",
            default=DEFAULT_SIGNATURE_VERSION,
            choices=SIGNATURE_VERSIONS,
            help="with --credentials: v1 (HMAC-SHA1, as the official web SDK) or v4",
        )
        add_flag(
            parser,
            "sls-region",
            help="with --signature-version v4: the SLS region, e.g. cn-hangzhou "
            "(default: read from a regional --endpoint)",
        )
        add_flag(
            parser,
            "progress-secs",
            type=float,
            default=DEFAULT_PROGRESS_SECS,
            help="seconds between progress lines (0: none)",
        )

    def sls_project_name(self) -> str | None:
        return self.sls_project or self.view_as(GoogleCloudOptions).project


def sink_from_options(
    options: SLSSinkOptions, endpoint: str, project: str, default_source: PerElement[str] = ""
) -> WriteToSLS:
    """The WriteToSLS transform the options describe (``default_source``: the source
    when ``--source`` is not given)."""
    return WriteToSLS(
        endpoint,
        project,
        options.logstore,
        topic=options.sls_topic,
        source=options.sls_source or default_source,
        compression=options.compression,
        event_time_key=options.event_time_field,
        max_in_flight=options.max_in_flight,
        max_buffering_secs=options.max_buffering_secs,
        mode=options.sink_mode,
        credentials=options.credentials,
        signature_version=options.signature_version,
        region=options.sls_region,
    )


def failure_record(failed: Any) -> str:
    """One JSON line of the failed output, in one schema for every failure.

    Fields: ``stage`` (``read``: the line could not be parsed; ``write``: the
    sink did not write the log), ``file``, ``line`` and ``offset`` (where the
    log came from, when known: the line number, and the byte offset of the
    line in its file), ``raw`` (the line, or the log as JSON, as text),
    ``reason``, and for write failures ``error_code``, ``status`` and
    ``request_id``.
    """
    if isinstance(failed, FailedLog) and failed.error_code == NotJsonError.error_code:
        # A line the sink found not to be a JSON object (a block of JSON lines goes to the
        # sink whole): its record, as the reader makes for the lines it finds unreadable.
        counter("lines_not_json").inc()
        if isinstance(failed.log, dict) and "reason" in failed.log:
            failed = failed.log
    if isinstance(failed, FailedLog):
        log = failed.log
        record = {
            "stage": "write",
            "file": getattr(log, "file", None),
            "line": getattr(log, "line", None),
            "offset": getattr(log, "offset", None),
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


class _DefaultsShown(argparse.HelpFormatter):
    """Each option's default after its help, where it has one worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, "", False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


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
        description=doc.strip().splitlines()[0].replace("``", ""),
        epilog=BEAM_OPTIONS_HELP,
        formatter_class=_DefaultsShown,
    )
    for options in option_classes:
        options._add_argparse_args(parser)
    parser.print_help()
    raise SystemExit(0)


class _Progress:
    """Logs written in this worker process, and when the last line was printed.

    Process-wide, not per DoFn instance: some runners (the DirectRunner's
    streaming engine) make a new instance for every bundle, whose own clock
    would never reach the interval.
    """

    lock = threading.Lock()
    started: float | None = None
    last = 0.0
    logs = 0

    @classmethod
    def reset(cls) -> None:
        """Start counting afresh (a new pipeline in this process: in-process runners)."""
        with cls.lock:
            cls.started, cls.last, cls.logs = None, 0.0, 0


class ReportProgress(beam.DoFn):
    """Prints logs written and logs/s at most every ``interval_secs`` (per worker process)."""

    def __init__(self, interval_secs: float):
        self._interval = interval_secs

    def setup(self):
        with _Progress.lock:
            if _Progress.started is None:
                _Progress.started = _Progress.last = time.monotonic()

    def process(self, written):
        now = time.monotonic()
        with _Progress.lock:
            _Progress.logs += written.log_count
            if not self._interval or now - _Progress.last < self._interval:
                return
            _Progress.last = now
            logs, rate = _Progress.logs, _Progress.logs / max(now - _Progress.started, 1e-9)
        print(f"progress: {logs:,} logs written, {rate:,.0f} logs/s", file=sys.stderr, flush=True)


class _NoEmptyFinalizeWarning(logging.Filter):
    """Beam warns "No shards found to finalize" when a file output got no element.

    For the failed output that is the good case (nothing failed), so the
    warning would only alarm; every other message of the sink passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No shards found to finalize")


def prepare_process() -> None:
    """What a pipeline's launcher sets up in its own process: progress counted
    afresh, and no warning for an empty failed output."""
    _Progress.reset()
    quiet_empty_outputs()


def quiet_empty_outputs() -> None:
    """Drop Beam's warning about an empty failed output (in this process's runners)."""
    sink_logger = logging.getLogger("apache_beam.io.filebasedsink")
    if not any(isinstance(f, _NoEmptyFinalizeWarning) for f in sink_logger.filters):
        sink_logger.addFilter(_NoEmptyFinalizeWarning())


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
        "lines_malformed": figures.get("malformed", 0) + figures.get("lines_not_json", 0),
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


def default_runner(argv: list[str], runner: str = "FnApiRunner") -> list[str]:
    """Use ``runner`` when the command line names none.

    The plain DirectRunner may first try to download the Prism runner binary,
    which fails (slowly) without internet; FnApiRunner (batch) and
    BundleBasedDirectRunner (streaming, Pub/Sub) are what it falls back to.
    """
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in argv):
        return [*argv, f"--runner={runner}"]
    return argv
