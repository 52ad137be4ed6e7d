"""The streaming (stateful) path: bundle sizes, state operations, latency, many groups.

``python -m benchmarks.streaming`` measures, in one run:

1. Bundle sizes: a streaming TestStream of ``--logs`` string logs delivered in
   bundles of 10, 100 and 1000 elements, on the BundleBasedDirectRunner (the
   local runner that takes TestStream in streaming mode), Beam's floor (an
   identity ``Map``) and ``WriteToSLS`` (stateful) in turn; logs/s, state
   operations a log and logs a chunk (the sink's own counters).
2. Latency: ``pipelines.pubsub_to_sls`` against the real Pub/Sub emulator
   (``--max-buffering-secs 1``), at each of ``--rates`` messages a second for
   ``--secs`` seconds (then ``--after-secs`` more, unmeasured: the stream goes
   on), with the stateful sink and with ``--sink-mode bundle``, beside Beam's
   floor on the same runner (``benchmarks.pubsub_floor``: the same read, no
   sink); publish → stored latency p50/p95/p99 (the SLS emulator records when
   it stored each log) and throughput. Skipped, saying why, without the
   Pub/Sub emulator.
3. Many groups: one million distinct topics through the stateful path's
   pre-batcher, the worker's RSS sampled as they pass (every per-key cache is
   bounded).

Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.windowed_value import WindowedValue

from benchmarks.common import make_logs
from benchmarks.harness import LOGSTORE, PROJECT
from sls_beam import WriteToSLS
from sls_beam.dofns import BufferInStateFn, PrepareForStateFn
from sls_beam.emulator import Emulator

PUBSUB_LAUNCHER = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"


def _stream_of(logs: int, bundle: int) -> TestStream:
    stream = TestStream().advance_watermark_to(0)
    data = list(make_logs(0, logs))
    for first in range(0, logs, bundle):
        stream = stream.add_elements(
            [TimestampedValue(log, 1) for log in data[first : first + bundle]]
        )
    return stream.advance_watermark_to_infinity()


def _run_stream(logs: int, bundle: int, sink: beam.PTransform | None) -> float:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = _stream_of(logs, bundle)  # made before the clock starts
    started = time.perf_counter()
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=options) as pipeline:
        events = pipeline | stream
        _ = events | (sink if sink is not None else beam.Map(lambda log: log))
    return time.perf_counter() - started


class _StateCounter:
    """Counts the chunks the pre-batcher hands to Beam state and the state operations
    the buffering step makes (the streaming DirectRunner does not report a stateful
    step's metrics): the benchmark runs in this process."""

    def __init__(self):
        self.chunks = 0
        self.operations = 0
        self._outputs_of = PrepareForStateFn._outputs_of
        self._counted = BufferInStateFn._counted

    def __enter__(self):
        counter = self

        def outputs_of(fn, batcher, added):
            for output in counter._outputs_of(fn, batcher, added):
                counter.chunks += isinstance(output, WindowedValue)
                yield output

        def counted(fn, operations):
            counter.operations += operations
            counter._counted(fn, operations)

        PrepareForStateFn._outputs_of = outputs_of
        BufferInStateFn._counted = counted
        return self

    def __exit__(self, *exc):
        PrepareForStateFn._outputs_of = self._outputs_of
        BufferInStateFn._counted = self._counted


def bundle_rows(logs: int, bundle_sizes: tuple[int, ...]) -> list[dict]:
    """Per bundle size: logs/s of the floor and of the stateful sink, and what reaches
    Beam state: chunks a log, and state operations a log (reads, writes, adds, clears
    and timers set, as the buffering step counts them)."""
    rows = []
    with Emulator(retain_logs=False, trust_logs=True) as emulator:
        for bundle in bundle_sizes:
            floor_secs = _run_stream(logs, bundle, None)
            sink = WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE, mode="stateful")
            requests_before = emulator.stats()["accepted_requests"]
            with _StateCounter() as counted:
                sink_secs = _run_stream(logs, bundle, sink)
            batches = emulator.stats()["accepted_requests"] - requests_before
            rows.append(
                {
                    "bundle_elements": bundle,
                    "floor_logs_per_sec": round(logs / floor_secs),
                    "stateful_logs_per_sec": round(logs / sink_secs),
                    "over_floor": round(floor_secs / sink_secs, 2),
                    "logs_per_chunk": round(logs / counted.chunks, 1),
                    "state_operations_per_log": round(counted.operations / logs, 4),
                    "logs_per_batch": round(logs / batches),
                }
            )
        assert emulator.stats()["logs"] == logs * len(bundle_sizes)  # nothing lost
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _publish_steadily(publisher, topic: str, rate: int, count: int, field: str) -> float:
    """Publish ``count`` messages ``{field: n, "sent": time}`` at ``rate`` a second; the
    seconds it took (longer when the publisher lags)."""
    begin = time.perf_counter()
    for n in range(count):
        # The publisher's pace (not a synchronisation): a steady rate.
        delay = begin + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        publisher.publish(topic, json.dumps({field: n, "sent": time.time()}).encode())
    return time.perf_counter() - begin


def _lags(arrivals: list[tuple[dict, float]]) -> list[float]:
    """Seconds from publish to arrival of each log, in order."""
    return sorted(at - float(log["sent"]) for log, at in arrivals)


class _Arrivals(Protocol):
    """The logs a latency row's pipeline delivered, and when each arrived."""

    def wait_for(self, count: int, timeout: float) -> bool: ...

    def all(self) -> list[tuple[dict, float]]: ...


class _StoredArrivals:
    """Logs stored by the SLS emulator, at the time it stored them."""

    def __init__(self, emulator: Emulator):
        self._emulator = emulator

    def wait_for(self, count: int, timeout: float) -> bool:
        return self._emulator.wait_for_logs(count, timeout=timeout)

    def all(self) -> list[tuple[dict, float]]:
        return [(log.contents, log.arrived) for log in self._emulator.logs()]


class _FileArrivals:
    """Logs the floor pipeline wrote to a file (see benchmarks.pubsub_floor)."""

    def __init__(self, path: Path):
        self.path = path

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        # Lines counted, not parsed: the poll shares the CPU with the pipeline it measures.
        while self._written().count(b"\n") < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)  # a benchmark's poll of a file another process writes
        return True

    def all(self) -> list[tuple[dict, float]]:
        written = self._written()
        lines = written[: written.rfind(b"\n") + 1].splitlines()  # whole lines: one may be cut
        return [(record["log"], record["arrived"]) for record in map(json.loads, lines)]

    def _written(self) -> bytes:
        return self.path.read_bytes() if self.path.exists() else b""


def latency_row(
    rate: int,
    secs: float,
    max_buffering_secs: float,
    mode: str = "stateful",
    after_secs: float = 10.0,
) -> dict:
    """Publish → stored latency through the Pub/Sub pipeline, at a steady rate for
    ``secs`` (measured), then ``after_secs`` more (the stream goes on: unmeasured but
    for the latest arrival of those, the quiet end). ``mode``: the sink's
    (``stateful``, ``bundle``), or ``floor`` for the same read with no sink."""
    if not os.path.exists(PUBSUB_LAUNCHER):
        return {"skipped": "the Pub/Sub emulator is not installed"}
    from google.cloud import pubsub_v1

    port = _free_port()
    pubsub = subprocess.Popen(
        [PUBSUB_LAUNCHER, "--host=127.0.0.1", f"--port={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    started = threading.Event()
    threading.Thread(
        target=lambda: [started.set() for line in pubsub.stdout if "Server started" in line],
        daemon=True,
    ).start()
    pipeline = None
    try:
        assert started.wait(120), "the Pub/Sub emulator did not start"
        os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
        topic, subscription = (
            "projects/demo-project/topics/logs",
            "projects/demo-project/subscriptions/logs",
        )
        publisher = pubsub_v1.PublisherClient()
        publisher.create_topic(name=topic)
        pubsub_v1.SubscriberClient().create_subscription(name=subscription, topic=topic)
        with Emulator(trust_logs=True) as emulator, tempfile.TemporaryDirectory() as tmp:
            if mode == "floor":
                arrivals: _Arrivals = _FileArrivals(Path(tmp) / "arrivals.jsonl")
                command = ["benchmarks.pubsub_floor", "--out", str(arrivals.path)]
            else:
                arrivals = _StoredArrivals(emulator)
                command = [
                    "pipelines.pubsub_to_sls",
                    "--endpoint", emulator.endpoint,
                    "--sls_project", PROJECT,
                    "--logstore", LOGSTORE,
                    "--max-buffering-secs", str(max_buffering_secs),
                    "--sink-mode", mode,
                    "--progress-secs", "0",
                ]  # fmt: skip
            pipeline = subprocess.Popen(
                [sys.executable, "-m", *command, "--subscription", subscription],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            # Warm-up: the pipeline is running once a first message lands.
            publisher.publish(topic, b'{"warmup": "1"}').result(timeout=60)
            assert arrivals.wait_for(1, timeout=180), "the pipeline did not start"
            total = int(rate * secs)
            published_secs = _publish_steadily(publisher, topic, rate, total, "i")
            # The stream goes on, unmeasured, as a live one does: on this runner a quiet
            # stream's last logs wait for its next pull (up to 30 s), which the logs
            # published after the measured ones show on their own.
            after = int(rate * after_secs)
            _publish_steadily(publisher, topic, rate, after, "after")
            arrived = arrivals.wait_for(total + after + 1, timeout=120)
            stored = arrivals.all()
        measured = [(log, at) for log, at in stored if "i" in log]
        lags = _lags(measured)
        last = max(at for _, at in measured)
        first = min(float(log["sent"]) for log, _ in measured)
        quiet_end = max(_lags([(log, at) for log, at in stored if "after" in log]), default=None)
        q = statistics.quantiles(lags, n=100)
        return {
            "rate_per_sec": rate,
            "secs": secs,
            "published_per_sec": round(total / published_secs),
            "max_buffering_secs": max_buffering_secs,
            "sink_mode": mode,
            "received": len(measured),
            "all_arrived": arrived,
            "p50_secs": round(q[49], 2),
            "p95_secs": round(q[94], 2),
            "p99_secs": round(q[98], 2),
            "max_secs": round(lags[-1], 2),
            "logs_per_sec": round(len(measured) / (last - first)),
            "stream_goes_on_secs": after_secs,
            "quiet_end_max_secs": None if quiet_end is None else round(quiet_end, 2),
            "runner": "BundleBasedDirectRunner (the local runner that streams from Pub/Sub)",
        }
    finally:
        if pipeline is not None:
            os.killpg(pipeline.pid, signal.SIGTERM)
            pipeline.wait(timeout=30)
        os.killpg(pubsub.pid, signal.SIGTERM)
        pubsub.wait(timeout=30)
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def many_topics_memory(logs: int) -> list[dict]:
    """RSS while ``logs`` logs of as many distinct topics pass the pre-batcher."""
    from sls_beam.config import SLSWriteConfig

    config = SLSWriteConfig(
        endpoint="http://127.0.0.1:1",
        project=PROJECT,
        logstore=LOGSTORE,
        topic=lambda log: log["topic"],
        max_buffered_bytes=8 << 20,
    )
    fn = PrepareForStateFn(config, windowed=False)
    fn.setup()
    fn.start_bundle()
    samples, chunks = [], 0
    base = _rss_mb()
    for n in range(logs):
        chunks += len(fn.process({"topic": f"topic-{n}", "msg": "hello"}))
        if (n + 1) % (logs // 5) == 0:
            samples.append({"logs": n + 1, "rss_mb": round(_rss_mb(), 1), "chunks": chunks})
    return [{"baseline_rss_mb": round(base, 1), "max_buffered_bytes": 8 << 20}, *samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=20_000, help="logs per bundle-size run")
    parser.add_argument(
        "--rates",
        type=lambda text: [int(rate) for rate in text.split(",")],
        default=[500, 2000],
        help="Pub/Sub messages a second, comma-separated: a latency row each, per sink",
    )
    parser.add_argument("--secs", type=float, default=60.0, help="seconds of publishing")
    parser.add_argument(
        "--after-secs",
        type=float,
        default=10.0,
        help="seconds the stream goes on after the measured messages (unmeasured)",
    )
    parser.add_argument("--topics", type=int, default=1_000_000, help="distinct topics")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    figures = {
        "bundles": bundle_rows(args.logs, (10, 100, 1000)),
        "many_topics": many_topics_memory(args.topics),
        "latency": [
            latency_row(rate, args.secs, 1.0, mode, args.after_secs)
            for rate in args.rates
            for mode in ("floor", "stateful", "bundle")
        ],
    }
    print(json.dumps(figures, indent=2))
    out = args.out / "streaming.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
