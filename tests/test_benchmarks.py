"""The benchmarks still run and count what they claim: every row, every ratio (each row
asserts, inside the benchmark, that the emulator received exactly the logs it made).

Run as a command, as users run it: tests never import ``benchmarks/``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sls_beam import accelerated

ROOT = Path(__file__).resolve().parent.parent


def test_the_throughput_benchmark_runs_every_scenario(tmp_path):
    command = [
        sys.executable,
        "-m",
        "benchmarks.throughput",
        "--logs=10000",
        "--streaming-logs=10000",
        "--latency-logs=4000",
        "--naive-logs=50",
        "--file-lines=3000",
        "--producer-logs=3000",
        "--repeat=1",
        "--skip-memory",
        f"--out={tmp_path}",
    ]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    figures = json.loads((tmp_path / "throughput.json").read_text())
    rows = {row["scenario"]: row for row in figures["scenarios"]}
    # typed rows, the official producer's two, the files backfill and both encoders
    # included; the JSON-lines encoder's row where the C encoder is built
    assert len(rows) == 19 + (accelerated.speedups is not None)
    if accelerated.speedups is not None:
        assert rows["JSON lines encoder alone (one core), lz4, typed lines"]["logs_per_sec"] > 0
    assert all(row["logs_per_sec"] > 0 for row in rows.values())
    assert rows["WriteToSLS bounded, deflate"]["compression_ratio"] > 1
    assert rows["WriteToSLS bounded, none"]["compression_ratio"] == 1.0
    assert set(figures["ratios"]) >= {
        "bounded_lz4_over_floor",
        "bounded_lz4_over_naive",
        "bounded_lz4_over_encoder",
        "in_flight_4_over_1_at_50ms",
        "typed_source_callable_over_typed_floor",
        "files_backfill_over_read_and_parse",
        "typed_source_callable_over_producer_best",
        "typed_source_callable_over_producer_typed",
    }
    steps = figures["per_log_breakdown_us"]
    assert {"beam floor", "encoding", "packing", "preparing", "the rest"} <= set(steps)
    assert abs(sum(v for k, v in steps.items() if k != "total") - steps["total"]) < 0.05


def test_the_streaming_benchmark_runs_every_part(tmp_path):
    command = [
        sys.executable,
        "-m",
        "benchmarks.streaming",
        "--logs=300",
        "--topics=3000",
        "--rates=50",
        "--secs=2",
        "--after-secs=1",
        f"--out={tmp_path}",
    ]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)
    figures = json.loads((tmp_path / "streaming.json").read_text())
    bundles = {row["bundle_elements"]: row for row in figures["bundles"]}
    assert sorted(bundles) == [10, 100, 1000]
    # A chunk a bundle reaches Beam state: fewer state operations a log as bundles grow.
    assert bundles[10]["logs_per_chunk"] == 10 and bundles[100]["logs_per_chunk"] == 100
    assert bundles[100]["state_operations_per_log"] < bundles[10]["state_operations_per_log"]
    assert figures["many_topics"][-1]["logs"] == 3000
    for row in figures["latency"]:
        assert "skipped" in row or (row["all_arrived"] and row["p99_secs"] >= row["p50_secs"])


def test_the_breakdown_reports_each_step_and_what_a_dynamic_group_costs():
    command = [sys.executable, "-m", "benchmarks.breakdown", "--logs=4096", "--repeat=1"]
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith(b"{")]
    steps, dynamic = lines[0], lines[1]["dynamic group, the batcher alone (us a log)"]
    assert {"beam floor", "encoding", "preparing", "the rest", "total"} <= set(steps)
    assert dynamic["constant source"] > 0
    named = ("source", "topic", "tags")  # each dynamic group the issue names, over it
    assert {f"{name} callable, extra" for name in named} | {
        f"own __{name}__, extra" for name in named
    } | {
        f"source callable, {apart}, extra"
        for apart in ("one host", "4 hosts", "batches of 256 logs")  # what a run costs
    } <= set(dynamic)
    assert all(dynamic[key] > -dynamic["constant source"] for key in dynamic)
