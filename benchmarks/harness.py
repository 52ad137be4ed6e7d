"""What the benchmarks share: an emulator in its own process, a pipeline of generated
logs, and timing."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager

import apache_beam as beam
import requests

from benchmarks.common import generated_logs

PROJECT, LOGSTORE = "bench-project", "bench-logstore"


@contextmanager
def emulator_process(latency_ms: float = 0.0, trust_logs: bool = True):
    """The emulator in its own process; yields its endpoint.

    By default it trusts the logs (it still decompresses, size-checks and
    parses every body): on a 2-core machine it shares the pipeline's CPU,
    which the real service does not.
    """
    command = ["sls_beam.emulator", "--no-retain", "--latency-ms", str(latency_ms)]
    if trust_logs:
        command.append("--trust-logs")
    with serving(command) as endpoint:
        yield endpoint


@contextmanager
def serving(module_and_args: list[str]):
    """``python -m`` a server that prints its address first, in its own process; yields
    that address."""
    process = subprocess.Popen(
        [sys.executable, "-m", *module_and_args], stdout=subprocess.PIPE, text=True
    )
    try:
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=30)


def stats(endpoint: str) -> dict:
    return requests.get(f"{endpoint}/_emulator/stats", timeout=10).json()


def timed(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_rate(count: int, run_once: Callable[[], None], repeat: int) -> float:
    return statistics.median(count / timed(run_once) for _ in range(repeat))


def run_pipeline(logs: int, sink: beam.PTransform | None, typed: bool = False) -> None:
    with beam.Pipeline(runner="FnApiRunner") as p:
        generated = generated_logs(p, logs, typed=typed)
        if sink is None:
            _ = generated | "Identity" >> beam.Map(lambda log: log)
        else:
            _ = generated | sink
