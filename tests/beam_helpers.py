"""Helpers for pipeline tests: importable by reference from worker processes."""

from __future__ import annotations

from collections import defaultdict

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

from sls_beam import METRICS_NAMESPACE


class FakeClock:
    """Processing time that starts at 0, like the TestStream's TestClock."""

    def __call__(self) -> float:
        return 0.0


def run(pipeline_fn, runner="FnApiRunner", **options):
    """Build a pipeline with ``pipeline_fn(p)``, run it, return (result, metrics by name)."""
    pipeline = beam.Pipeline(
        runner=runner, options=beam.options.pipeline_options.PipelineOptions(**options)
    )
    pipeline_fn(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    return result, sink_metrics(result)


def sink_metrics(result) -> dict:
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    found = {}
    for counter in query["counters"]:
        found[counter.key.metric.name] = found.get(counter.key.metric.name, 0) + counter.committed
    for dist in query["distributions"]:
        found[dist.key.metric.name] = dist.committed
    return found


def requests_by_id(logs):
    """Stored logs grouped per request, in arrival order: {request_id: [StoredLog]}."""
    grouped = defaultdict(list)
    for log in logs:
        grouped[log.request_id].append(log)
    return dict(grouped)


class Collect(beam.PTransform):
    """Writes a PCollection's elements to a JSON-lines file (worker-safe)."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def expand(self, pcoll):
        return pcoll | beam.Map(repr) | beam.io.WriteToText(str(self.path), shard_name_template="")


def make_logs(first: int, count: int):
    """Logs number ``first`` to ``first + count - 1``, as apps write them: numbers, a
    boolean, a null, a nested object, non-ASCII text, and a unique ``message``."""
    for i in range(first, first + count):
        yield {
            "time": f"2026-11-25T08:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
            "level": "INFO" if i % 10 else "WARN",
            "status": 200 if i % 13 else 503,
            "latency_ms": (i % 997) / 4,
            "cached": i % 3 == 0,
            "trace": None if i % 5 else f"t-{i:x}",
            "user": {"id": i % 7919, "region": "cn-hangzhou", "tags": ["a", "b"][: i % 3]},
            "message": f"订单 {i} processed — customer {i % 7919}",
        }


def generated_logs(pipeline, count: int, per_seed: int = 10_000):
    """Exactly ``count`` logs, made in a DoFn from a few seeds (a large Create costs
    ~18 µs an element, which would swamp the sink in a soak)."""
    seeds = [(first, min(per_seed, count - first)) for first in range(0, count, per_seed)]
    return pipeline | "Seeds" >> beam.Create(seeds) | "Generate" >> beam.FlatMapTuple(make_logs)
