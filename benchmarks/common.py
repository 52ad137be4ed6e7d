"""Generated benchmark data: ~190-byte logs with 6 fields, made inside a DoFn.

A large ``beam.Create`` costs ~18 µs per element and would hide the sink's
own cost, so each pipeline creates a few seeds and expands them in a FlatMap.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam

LOGS_PER_SEED = 10_000


def make_logs(first: int, count: int) -> Iterator[dict[str, str]]:
    """Logs number ``first`` to ``first + count - 1``: ~190 bytes of JSON, 6 fields."""
    for i in range(first, first + count):
        yield {
            "time": "2026-11-25T08:00:00.000Z",
            "level": "INFO" if i % 10 else "WARN",
            "service": "checkout",
            "path": f"/api/orders/{i % 9973}",
            "latency_ms": str(i % 997),
            "message": f"order {i} processed for customer {i % 7919} in region cn-hangzhou-b",
        }


def generated_logs(pipeline, count: int, per_seed: int = LOGS_PER_SEED):
    """A PCollection of exactly ``count`` logs, made in a DoFn from seeds of ``per_seed`` logs."""
    seeds = [(first, min(per_seed, count - first)) for first in range(0, count, per_seed)]
    return pipeline | "Seeds" >> beam.Create(seeds) | "Generate" >> beam.FlatMapTuple(make_logs)
