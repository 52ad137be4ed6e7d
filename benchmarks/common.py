"""Generated benchmark data: ~200-byte logs with 6 fields, made inside a DoFn.

A large ``beam.Create`` costs ~18 µs per element and would hide the sink's
own cost, so each pipeline creates a few seeds and expands them in a FlatMap.
"""

from __future__ import annotations

import apache_beam as beam

LOGS_PER_SEED = 10_000


def make_logs(seed: int, per_seed: int = LOGS_PER_SEED):
    base = seed * per_seed
    for i in range(base, base + per_seed):
        yield {
            "time": "2026-11-25T08:00:00.000Z",
            "level": "INFO" if i % 10 else "WARN",
            "service": "checkout",
            "path": f"/api/orders/{i % 9973}",
            "latency_ms": str(i % 997),
            "message": f"order {i} processed for customer {i % 7919} in region cn-hangzhou-b",
        }


def generated_logs(pipeline, count: int, per_seed: int = LOGS_PER_SEED):
    """A PCollection of ``count`` logs (a multiple of ``per_seed``), generated in a DoFn."""
    seeds = max(1, count // per_seed)
    return (
        pipeline
        | "Seeds" >> beam.Create(list(range(seeds)))
        | "Generate" >> beam.FlatMap(make_logs, per_seed)
    )
