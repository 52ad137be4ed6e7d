"""The files backfill against Beam's own read-and-parse, on the same typed JSON-lines file.

``python -m benchmarks.files`` writes ``--lines`` typed logs (~230 bytes a
line, :func:`benchmarks.common.make_typed_logs`) to a file, then runs, in
turn for ``--repeat`` rounds, each as a fresh process on the FnApiRunner:

1. Beam's floor: ``ReadFromText | Map(json.loads)`` (nothing written);
2. ``python -m pipelines.files_to_sls`` into an emulator in its own process
   (trusting the logs, like the sink rows of ``benchmarks.throughput``).

Each figure is lines over the process's wall time (start-up included, on
both sides), the median of the rounds. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.common import make_typed_logs
from benchmarks.harness import LOGSTORE, PROJECT, emulator_process, stats

FLOOR = "beam floor: ReadFromText | Map(json.loads), typed lines"
BACKFILL = "files_to_sls, typed lines, source = file name"

_FLOOR_PROGRAM = """
import json, sys
import apache_beam as beam
with beam.Pipeline(runner="FnApiRunner") as p:
    _ = p | beam.io.ReadFromText(sys.argv[1]) | beam.Map(json.loads)
"""


def write_typed_lines(path: Path, lines: int) -> None:
    with open(path, "wb") as f:
        for first in range(0, lines, 10_000):
            chunk = make_typed_logs(first, min(10_000, lines - first))
            f.write(b"".join(orjson.dumps(log) + b"\n" for log in chunk))


def _wall_secs(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def files_rows(lines: int, repeat: int) -> list[dict]:
    """The floor's and the backfill's lines/s, interleaved round by round."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.jsonl"
        write_typed_lines(path, lines)
        rates: dict[str, list[float]] = {FLOOR: [], BACKFILL: []}
        with emulator_process() as endpoint:
            for _ in range(repeat):
                floor = [sys.executable, "-c", _FLOOR_PROGRAM, str(path)]
                rates[FLOOR].append(lines / _wall_secs(floor))
                backfill = [
                    sys.executable,
                    "-m",
                    "pipelines.files_to_sls",
                    "--input",
                    str(path),
                    "--endpoint",
                    endpoint,
                    "--sls_project",
                    PROJECT,
                    "--logstore",
                    LOGSTORE,
                    "--progress-secs",
                    "0",
                ]
                rates[BACKFILL].append(lines / _wall_secs(backfill))
            assert stats(endpoint)["logs"] == lines * repeat  # nothing lost
        size = path.stat().st_size
    return [
        {
            "scenario": name,
            "logs_per_sec": round(statistics.median(values)),
            "raw_mb_per_sec": round(statistics.median(values) * size / lines / 1e6, 1),
        }
        for name, values in rates.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = files_rows(args.lines, args.repeat)
    for row in rows:
        print(json.dumps(row))
    print(f"backfill / floor: {rows[1]['logs_per_sec'] / rows[0]['logs_per_sec']:.2f}x")


if __name__ == "__main__":
    main()
