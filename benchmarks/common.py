"""Generated benchmark data, made inside a DoFn: ~190-byte logs of 6 string fields (the
best case), or typed ~270-byte logs as apps write them (numbers, a boolean, a null, a nested
object, a host to use as the source).

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


def make_typed_logs(first: int, count: int) -> Iterator[dict]:
    """Typed logs number ``first`` to ``first + count - 1``, as apps write them."""
    for i in range(first, first + count):
        yield {
            "ts": 1764144000.123 + i / 1000,
            "level": "INFO" if i % 10 else "WARN",
            "status": 200 if i % 13 else 503,
            "latency_ms": (i % 997) / 4,
            "ok": i % 13 != 0,
            "retry": None,
            "host": f"web-{i % 16:02d}",
            "path": f"/api/v1/items/{i % 9973}",
            "user": {"id": i % 7919, "plan": "pro", "tags": ["a", "b"]},
            "msg": f"item {i} served to customer {i % 7919}",
        }


def source_of(log: dict) -> str:
    """The per-element source of a typed log: its host."""
    return log["host"]


def generated_logs(pipeline, count: int, per_seed: int = LOGS_PER_SEED, typed: bool = False):
    """A PCollection of exactly ``count`` logs, made in a DoFn from seeds of ``per_seed`` logs."""
    seeds = [(first, min(per_seed, count - first)) for first in range(0, count, per_seed)]
    make = make_typed_logs if typed else make_logs
    return pipeline | "Seeds" >> beam.Create(seeds) | "Generate" >> beam.FlatMapTuple(make)
