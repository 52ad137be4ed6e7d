"""Peak memory (RSS) of a WriteToSLS pipeline, in a process of its own.

``python -m benchmarks.memory --logs 300000 --latency-ms 100`` prints one JSON
line: ``{"logs": ..., "latency_ms": ..., "peak_rss_mb": ..., "received": ...}``.
The emulator runs in the same process with ``retain_logs=False`` (it keeps
counters, not logs), so what grows is the pipeline's own buffering.
"""

from __future__ import annotations

import argparse
import json
import resource

import apache_beam as beam

from benchmarks.common import generated_logs
from sls_beam import WriteToSLS
from sls_beam.emulator import Emulator, FaultPlan


def measure(logs: int, latency_ms: float, max_batch_logs: int, max_in_flight: int) -> dict:
    with Emulator(retain_logs=False, faults=FaultPlan(latency_secs=latency_ms / 1000)) as emulator:
        with beam.Pipeline(runner="FnApiRunner") as p:
            _ = generated_logs(p, logs) | WriteToSLS(
                emulator.endpoint,
                "bench-project",
                "bench-logstore",
                max_batch_logs=max_batch_logs,
                max_in_flight=max_in_flight,
            )
        stats = emulator.stats()
    return {
        "logs": logs,
        "latency_ms": latency_ms,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "received": stats["logs"],
        "max_concurrent_requests": stats["max_concurrent_requests"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=300_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--max-batch-logs", type=int, default=4096)
    parser.add_argument("--max-in-flight", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(measure(args.logs, args.latency_ms, args.max_batch_logs, args.max_in_flight)))


if __name__ == "__main__":
    main()
