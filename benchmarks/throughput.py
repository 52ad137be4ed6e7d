"""Throughput, latency hiding and memory of WriteToSLS, side by side in one run.

``python -m benchmarks.throughput`` measures, on the same generated data
(made inside a DoFn) and on the DirectRunner's FnApiRunner, each scenario
``--repeat`` times, the median reported; Beam's floor and the rows beside
it run in turn, round by round, so that the drift of a shared machine
touches them alike. Beam ends a bundle on its state sampler's next tick
(every 200 ms once a stage has run ~1 s), so a run's time moves in 200 ms
steps: the bounded runs use 2M logs to keep a step under ~5 %.

1. Realistic logs first: typed ~270-byte logs (numbers, a boolean, a null, a
   nested object) with the source a callable of the element, and with a
   constant source, beside Beam's floor (an identity ``Map``) on the same logs; then
   the official Rust producer's Python binding alone on those logs, for comparison
   (``benchmarks.producer``).
2. String-only ~190-byte logs, the best case: lz4, deflate, none, and an
   emulator checking every log, beside their floor.
3. ``WriteToSLS`` in streaming mode (the stateful path).
4. A naive sink: one POST per element (fewer elements; reported per log).
5. The files backfill against ``ReadFromText | Map(json.loads)`` on one typed
   JSON-lines file (``benchmarks.files``).
6. The encoder alone (bulk runs, joined, compressed), typed and string logs, and the
   encoder of JSON lines (``sls_beam.JsonLines``) alone on typed lines.
7. With 50 ms added to every answer: logs/s with ``max_in_flight`` 1, 4 and 16.
8. Where a typed log's time goes (``benchmarks.breakdown``).
9. Peak RSS for ``--memory-logs`` logs with a fast and with a stalled server.

The emulator runs in a process of its own (like the real service, it is not
the pipeline's CPU), keeping counters only. Figures go to a table on stdout
and to ``throughput.json`` and a plot ``throughput.png`` in
``benchmarks/results/`` (or ``--out``). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import orjson
import requests

from benchmarks.breakdown import breakdown
from benchmarks.common import make_logs, make_typed_logs, source_of
from benchmarks.files import BACKFILL, files_rows
from benchmarks.files import FLOOR as FILES_FLOOR
from benchmarks.harness import (
    LOGSTORE,
    PROJECT,
    emulator_process,
    median_rate,
    run_pipeline,
    stats,
    timed,
)
from benchmarks.memory import measure_in_subprocess
from benchmarks.producer import PRODUCER_BEST, PRODUCER_TYPED, producer_rows
from sls_beam import WriteToSLS, accelerated
from sls_beam.batching import WAITING_LOGS
from sls_beam.json_lines import encode_lines
from sls_beam.wire import SERVICE_MAX_RAW_BYTES, BatchLimits, LogEncoder, LogGroup, encode_pieces

RESULTS = Path(__file__).parent / "results"


class NaiveSink(beam.DoFn):
    """What a user might write first: one uncompressed POST per log, waiting for each."""

    def __init__(self, endpoint: str):
        self._endpoint = endpoint

    def setup(self):
        self._session = requests.Session()
        host = self._endpoint.split("//", 1)[1]
        self._headers = {
            "Host": f"{PROJECT}.{host}",
            "x-log-apiversion": "0.6.0",
            "Content-Type": "application/json",
        }

    def process(self, log):
        body = json.dumps({"__logs__": [{k: str(v) for k, v in log.items()}]})
        self._session.post(
            f"{self._endpoint}/logstores/{LOGSTORE}/track",
            data=body,
            headers=self._headers,
            timeout=30,
        ).raise_for_status()


def encoder_rate(logs: int, repeat: int, typed: bool) -> float:
    """The encoder as the sink drives it: runs of WAITING_LOGS logs in bulk, full
    requests' worth of runs joined into their bodies, compressed."""
    data = list((make_typed_logs if typed else make_logs)(0, logs))
    group = LogGroup()
    limits = BatchLimits()

    def encode_all():
        encoder = LogEncoder()
        encoder.encode(data[0])  # learns the keys, as the first logs of a bundle do
        runs = [data[i : i + WAITING_LOGS] for i in range(0, logs, WAITING_LOGS)]
        encoded = [encoder.encode_many(run) for run in runs]
        per_request = limits.max_logs // WAITING_LOGS
        for first in range(0, len(encoded), per_request):
            pieces = encoded[first : first + per_request]
            count = sum(len(run) for run in runs[first : first + per_request])
            encode_pieces(group, pieces, count, "lz4")

    return median_rate(logs, encode_all, repeat)


def json_lines_encoder_rate(logs: int, repeat: int) -> float:
    """The encoder of :class:`~sls_beam.JsonLines` as the sink drives it: typed logs as
    JSON lines in 1 MiB blocks, each block's logs written from their text, cut into full
    requests at their ends, compressed."""
    text = b"".join(orjson.dumps(log) + b"\n" for log in make_typed_logs(0, logs))
    blocks, start = [], 0
    while start < len(text):
        end = text.rfind(b"\n", start, start + (1 << 20)) + 1 or len(text)
        blocks.append(text[start:end])
        start = end
    group = LogGroup()
    per_request = BatchLimits().max_logs

    def encode_all():
        for block in blocks:
            encoded = encode_lines(block, b"", SERVICE_MAX_RAW_BYTES)
            cut = 0
            for first in range(0, len(encoded.ends), per_request):
                last = min(first + per_request, len(encoded.ends))
                end = encoded.ends[last - 1]
                encode_pieces(group, (encoded.joined[cut:end],), last - first, "lz4")
                cut = end + 1

    return median_rate(logs, encode_all, repeat)


@dataclass(frozen=True)
class SinkScenario:
    """One row: ``WriteToSLS(**sink_args)`` into an emulator of its own."""

    name: str
    sink_args: dict = field(default_factory=dict)
    latency_ms: float = 0.0
    trust_logs: bool = True
    typed: bool = False  # typed logs (make_typed_logs) instead of string-only ones


def sink_rows(
    scenarios: list[SinkScenario], logs: int, repeat: int, floor_name: str | None = None
) -> list[dict]:
    """Run every scenario (and Beam's floor, when named) once per round, ``repeat`` rounds.

    Interleaving the runs, each with its emulator already up, exposes them all
    to the same drift of this shared machine; each row reports its median.
    """
    rates: dict[str, list[float]] = {}
    with ExitStack() as stack:
        endpoints = [
            stack.enter_context(emulator_process(s.latency_ms, s.trust_logs)) for s in scenarios
        ]
        for _ in range(repeat):
            if floor_name:  # on the same data as the rows
                rate = logs / timed(lambda: run_pipeline(logs, None, scenarios[0].typed))
                rates.setdefault(floor_name, []).append(rate)
            for scenario, endpoint in zip(scenarios, endpoints, strict=True):
                sink = WriteToSLS(endpoint, PROJECT, LOGSTORE, **scenario.sink_args)
                rate = logs / timed(lambda sink=sink, s=scenario: run_pipeline(logs, sink, s.typed))
                rates.setdefault(scenario.name, []).append(rate)
        counted = [stats(endpoint) for endpoint in endpoints]
    rows = []
    if floor_name:
        rows.append(
            {"scenario": floor_name, "logs_per_sec": round(statistics.median(rates[floor_name]))}
        )
    for scenario, count in zip(scenarios, counted, strict=True):
        assert count["logs"] == logs * repeat, (scenario.name, count)  # nothing lost
        rate = statistics.median(rates[scenario.name])
        raw_per_log = count["raw_bytes"] / count["logs"]
        sent_per_log = count["body_bytes"] / count["logs"]
        rows.append(
            {
                "scenario": scenario.name,
                "logs_per_sec": round(rate),
                "raw_mb_per_sec": round(rate * raw_per_log / 1e6, 1),
                "sent_mb_per_sec": round(rate * sent_per_log / 1e6, 1),
                "compression_ratio": round(raw_per_log / sent_per_log, 2),
            }
        )
    return rows


#: Row names that the ratios are found by.
FLOOR = "beam floor (identity Map)"
BOUNDED = "WriteToSLS bounded, {}"
TYPED_FLOOR = "beam floor, typed logs"
TYPED = "WriteToSLS bounded, lz4, typed logs, constant source"
TYPED_SOURCE = "WriteToSLS bounded, lz4, typed logs, source callable (host)"


def main() -> None:
    parser = argparse.ArgumentParser(description="WriteToSLS throughput benchmarks")
    parser.add_argument("--logs", type=int, default=2_000_000, help="logs per bounded run")
    parser.add_argument(
        "--streaming-logs",
        type=int,
        default=2_000_000,
        help="logs per streaming run (as many as the bounded rows: the stateful stage's "
        "fixed costs weigh on small runs)",
    )
    parser.add_argument("--latency-logs", type=int, default=200_000)
    parser.add_argument("--naive-logs", type=int, default=2_000)
    parser.add_argument("--memory-logs", type=int, default=1_000_000)
    parser.add_argument("--file-lines", type=int, default=1_000_000, help="lines of the file")
    parser.add_argument(
        "--producer-logs", type=int, default=500_000, help="logs per run of the official producer"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--bounded-only",
        action="store_true",
        help="only Beam's floor and the bounded rows, printed (a quick check of the hot path)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and PNG go")
    args = parser.parse_args()
    rows: list[dict] = []

    def show(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    def rate(scenario: str) -> float:
        [row] = [row for row in rows if row["scenario"] == scenario]
        return row["logs_per_sec"]

    # Realistic logs first: typed values, a nested object, a per-element source.
    typed_scenarios = [
        SinkScenario(TYPED_SOURCE, {"source": source_of}, typed=True),
        SinkScenario(TYPED, {"source": "app"}, typed=True),
    ]
    for row in sink_rows(typed_scenarios, args.logs, args.repeat, floor_name=TYPED_FLOOR):
        show(row)
    typed_floor = rate(TYPED_FLOOR)
    producer = producer_rows(args.producer_logs, args.repeat)  # standalone, on the same logs
    for row in producer:
        show(row)
    bounded_scenarios = [
        SinkScenario(BOUNDED.format(compression), {"compression": compression})
        for compression in ("lz4", "deflate", "none")
    ]
    bounded_scenarios.append(
        SinkScenario("WriteToSLS bounded, lz4, emulator checking every log", trust_logs=False)
    )
    for row in sink_rows(bounded_scenarios, args.logs, args.repeat, floor_name=FLOOR):
        show(row)
    floor = rate(FLOOR)
    if args.bounded_only:
        for scenario in bounded_scenarios:
            print(f"{scenario.name}: {rate(scenario.name) / floor:.2f}x the floor")
        for scenario in typed_scenarios:
            print(f"{scenario.name}: {rate(scenario.name) / typed_floor:.2f}x its floor")
        return
    streaming = SinkScenario("WriteToSLS streaming path (stateful), lz4", {"mode": "stateful"})
    for row in sink_rows([streaming], args.streaming_logs, args.repeat):
        show(row)
    with emulator_process() as endpoint:
        naive = median_rate(
            args.naive_logs,
            lambda: run_pipeline(args.naive_logs, beam.ParDo(NaiveSink(endpoint))),
            args.repeat,
        )
    show({"scenario": "naive sink (one POST per log)", "logs_per_sec": round(naive)})
    for row in files_rows(args.file_lines, args.repeat):
        show(row)
    for typed in (True, False):
        show(
            {
                "scenario": f"encoder alone (one core), lz4, {'typed' if typed else 'string'} logs",
                "logs_per_sec": round(encoder_rate(200_000, args.repeat, typed)),
            }
        )
    if accelerated.speedups is not None:
        show(
            {
                "scenario": "JSON lines encoder alone (one core), lz4, typed lines",
                "logs_per_sec": round(json_lines_encoder_rate(200_000, args.repeat)),
            }
        )
    encoder = rate("encoder alone (one core), lz4, string logs")
    typed_encoder = rate("encoder alone (one core), lz4, typed logs")
    steps = breakdown(min(args.logs, 500_000), args.repeat)
    print(json.dumps({"per-log breakdown, typed logs, source callable (us)": steps}))
    in_flight_counts = (1, 4, 16)
    latency_rows = sink_rows(
        [
            SinkScenario(
                f"50 ms RTT, max_in_flight={n} (1000-log batches)",
                {"max_in_flight": n, "max_batch_logs": 1000},
                latency_ms=50,
            )
            for n in in_flight_counts
        ],
        args.latency_logs,
        args.repeat,
    )
    latency = {}
    for n, row in zip(in_flight_counts, latency_rows, strict=True):
        latency[n] = row["logs_per_sec"]
        show(row)
    memory = []
    if not args.skip_memory:
        for label, latency_ms in (("fast server", 0), ("stalled server (500 ms answers)", 500)):
            for logs in (args.memory_logs // 5, args.memory_logs):
                figures = measure_in_subprocess(logs, latency_ms, 1000)
                memory.append({"server": label, **figures})
                print(json.dumps(memory[-1]), flush=True)

    bounded = rate(BOUNDED.format("lz4"))
    ratios = {
        "bounded_lz4_over_floor": round(bounded / floor, 2),
        "bounded_deflate_over_floor": round(rate(BOUNDED.format("deflate")) / floor, 2),
        "bounded_none_over_floor": round(rate(BOUNDED.format("none")) / floor, 2),
        "typed_over_typed_floor": round(rate(TYPED) / typed_floor, 2),
        "typed_source_callable_over_typed_floor": round(rate(TYPED_SOURCE) / typed_floor, 2),
        # What a source per element costs above a constant one, in microseconds a log.
        "dynamic_group_extra_us": round(1e6 / rate(TYPED_SOURCE) - 1e6 / rate(TYPED), 2),
        "files_backfill_over_read_and_parse": round(rate(BACKFILL) / rate(FILES_FLOOR), 2),
        "typed_encoder_logs_per_sec": round(typed_encoder),
        "bounded_lz4_over_naive": round(bounded / naive, 1),
        "bounded_lz4_over_encoder": round(bounded / encoder, 2),
        "in_flight_4_over_1_at_50ms": round(latency[4] / latency[1], 2),
        "in_flight_16_over_1_at_50ms": round(latency[16] / latency[1], 2),
    }
    if producer:  # the sink inside Beam, against the official producer alone (issue #14)
        for name, scenario in (("best", PRODUCER_BEST), ("typed", PRODUCER_TYPED)):
            ratios[f"typed_source_callable_over_producer_{name}"] = round(
                rate(TYPED_SOURCE) / rate(scenario), 2
            )
    machine = {
        "python": platform.python_version(),
        "beam": beam.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    report(rows, ratios, memory, machine, args.out, steps)


def report(
    rows: list[dict],
    ratios: dict,
    memory: list[dict],
    machine: dict,
    out: Path,
    steps: dict[str, float],
) -> None:
    print("\n| scenario | logs/s | raw MB/s | sent MB/s | compression |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['scenario']} | {row['logs_per_sec']:,} | {row.get('raw_mb_per_sec', '')} "
            f"| {row.get('sent_mb_per_sec', '')} | {row.get('compression_ratio', '')} |"
        )
    print("\n| ratio | value |\n|---|---:|")
    for key, value in ratios.items():
        print(f"| {key} | {value} |")
    if memory:
        print("\n| server | logs | RSS before MB | peak RSS MB | growth MB |")
        print("|---|---:|---:|---:|---:|")
        for row in memory:
            print(
                f"| {row['server']} | {row['logs']:,} | {row['baseline_rss_mb']} "
                f"| {row['peak_rss_mb']} | {row['growth_mb']} |"
            )
    out.mkdir(parents=True, exist_ok=True)
    print("\n| step (typed logs, source callable) | µs a log |\n|---|---:|")
    for step, micros in steps.items():
        print(f"| {step} | {micros} |")
    payload = {
        "machine": machine,
        "scenarios": rows,
        "ratios": ratios,
        "per_log_breakdown_us": steps,
        "memory": memory,
    }
    (out / "throughput.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(rows, out / "throughput.png")
    print(f"\nwrote {out / 'throughput.json'} and {out / 'throughput.png'}")


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: pip install -e '.[bench]' for the plot)")
        return
    names = [row["scenario"] for row in rows]
    rates = [row["logs_per_sec"] for row in rows]
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.2))
    bars = axes.barh(names[::-1], rates[::-1], color="#3b7dd8")
    axes.set_xscale("log")
    axes.set_xlabel("logs/s (log scale, median)")
    axes.set_title("WriteToSLS throughput, FnApiRunner, 2 cores (median)")
    for bar, rate in zip(bars, rates[::-1], strict=True):
        axes.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {rate:,}",
            va="center",
            fontsize=8,
        )
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
