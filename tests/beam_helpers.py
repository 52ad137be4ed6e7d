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
