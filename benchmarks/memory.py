"""Peak memory (RSS) of a WriteToSLS pipeline, in a process of its own.

``python -m benchmarks.memory --logs 300000 --latency-ms 100`` prints one JSON
line: ``{"logs", "latency_ms", "baseline_rss_mb", "peak_rss_mb", "growth_mb", …}``:
the peak is sampled during the measured run, after a warm-up run set the baseline.
The emulator runs in the same process with ``retain_logs=False`` (it keeps
counters, not logs), so what grows is the pipeline's own buffering.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading

import apache_beam as beam

from benchmarks.common import generated_logs
from sls_beam import WriteToSLS
from sls_beam.emulator import Emulator, FaultPlan


def rss_mb() -> float:
    """Resident set size now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


class RssSampler(threading.Thread):
    """Samples RSS every ``interval`` seconds until stopped; keeps the largest."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = rss_mb()
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, rss_mb())

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.peak, rss_mb())


def measure(logs: int, latency_ms: float, max_batch_logs: int, max_in_flight: int) -> dict:
    with Emulator(retain_logs=False, faults=FaultPlan(latency_secs=latency_ms / 1000)) as emulator:
        # A first small run warms Beam up, so the baseline holds what every run holds.
        run(emulator.endpoint, 10_000, max_batch_logs, max_in_flight)
        baseline = rss_mb()
        sampler = RssSampler()
        sampler.start()
        run(emulator.endpoint, logs, max_batch_logs, max_in_flight)
        peak = sampler.stop()
        stats = emulator.stats()
    return {
        "logs": logs,
        "latency_ms": latency_ms,
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "growth_mb": round(peak - baseline, 1),
        "received": stats["logs"] - 10_000,
        "max_concurrent_requests": stats["max_concurrent_requests"],
    }


def measure_in_subprocess(
    logs: int, latency_ms: float, max_batch_logs: int, timeout_secs: float = 900
) -> dict:
    """:func:`measure` in a fresh interpreter, so that nothing else is in its memory."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.memory",
        "--logs",
        str(logs),
        "--latency-ms",
        str(latency_ms),
        "--max-batch-logs",
        str(max_batch_logs),
    ]
    out = subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=timeout_secs
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(endpoint: str, logs: int, max_batch_logs: int, max_in_flight: int) -> None:
    with beam.Pipeline(runner="FnApiRunner") as p:
        _ = generated_logs(p, logs) | WriteToSLS(
            endpoint,
            "bench-project",
            "bench-logstore",
            max_batch_logs=max_batch_logs,
            max_in_flight=max_in_flight,
        )


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
