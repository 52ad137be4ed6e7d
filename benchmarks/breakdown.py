"""Where a log's time goes in WriteToSLS, on typed logs with a per-element source.

``python -m benchmarks.breakdown`` runs Beam's floor (identity ``Map``) and the
sink (``source=`` a callable of the element, lz4) on the same generated typed
logs, in one process, with the sink's steps timed from inside:

- preparing: the logs' groups (the source callable, the grouping by source, the
  memo of groups), measured apart on the same logs, as the batcher does it;
- encoding: :meth:`LogEncoder.encode_runs_keeping`, a bundle's waiting logs at a
  time (the wire JSON, and what gives the logs back, kept while their batch waits), and
  ``encode_many`` of the parts of runs cut at a batch's end;
- packing: the elements packed (marshal, or pickle) while their batch waits, where
  what the encoder keeps would not give them back as they are (``pack_run``);
- compressing: each request's body made from its batch's pieces (joined in one copy
  with its head and tail, :func:`wire.encode_pieces`) and compressed with lz4, on the
  sender's helper thread;
- the rest: what is left of the sink's time (buffering, bookkeeping, the
  sending thread's share of the interpreter).

Each step is the CPU time of the thread that runs it; figures are microseconds a
log, the median of ``--repeat`` runs.

It then measures what a dynamic group costs over a constant one where the pipeline
cannot tell (the difference of two pipelines' times drifts by more than it): the
bundle path's batcher alone, fed the same typed logs with a constant source, and
with each dynamic group the issue names: ``source=``, ``topic=`` or ``tags=`` a
callable, or a log's own ``__source__``, ``__topic__`` or ``__tags__`` (16 hosts,
or the 2 log levels as topics), in interleaved rounds, the process's CPU time,
medians. The logs are 2,048
made once and fed again and again: in cache, as a bundle's just-made elements are.
A source callable is also measured over the same logs with one host and with 4 (a
handover of 128 logs makes one run of 128, or 4 of 32, where 16 hosts make 16 of 8),
and over 16 hosts with batches of 256 logs (16 open batches ~1 MB in all, not ~18):
what grows with the hosts, and not with the open batches' memory, is a cost a run.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

from apache_beam.transforms.window import GlobalWindows

from benchmarks.common import make_typed_logs, source_of
from benchmarks.harness import LOGSTORE, PROJECT, emulator_process, run_pipeline, timed
from sls_beam import WriteToSLS, batching, grouping, inflight, wire
from sls_beam.config import SLSWriteConfig
from sls_beam.preparing import LogPreparer

#: The steps timed from inside, each reported (0 where it never ran).
TIMED_STEPS = ("encoding", "packing", "compressing")


def _timing(owner, name: str, spent: dict[str, float], label: str):
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed_call(*args, **kwargs):
        # The calling thread's CPU time: compression runs on the sender's helper thread,
        # where wall time would count its waits for the interpreter lock too.
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.thread_time() - started

    setattr(owner, name, timed_call)
    return original


def _config(source, **options) -> SLSWriteConfig:
    """The sink's configuration with ``source``, for its parts run without Beam."""
    return SLSWriteConfig(
        endpoint="http://127.0.0.1:1",
        project=PROJECT,
        logstore=LOGSTORE,
        source=source,
        **options,
    )


def preparing_secs(logs: int) -> float:
    """What the batcher's source lane does for the logs' groups, as it does it: the
    callable called on each waiting run (by ``map``), the run grouped by source, each
    source's group looked up."""
    preparer = LogPreparer(_config(source_of))
    data = list(make_typed_logs(0, min(logs, 200_000)))
    runs = [data[i : i + batching.WAITING_LOGS] for i in range(0, len(data), batching.WAITING_LOGS)]
    started = time.perf_counter()
    for run in runs:
        for source in grouping.group_by(list(map(source_of, run)), run):
            preparer.group_of_source(source)
    return (time.perf_counter() - started) * logs / len(data)


def breakdown(logs: int, repeat: int) -> dict[str, float]:
    runs: list[dict[str, float]] = []
    spent: dict[str, float] = {}
    originals = [
        *(
            (wire.LogEncoder, name, _timing(wire.LogEncoder, name, spent, "encoding"))
            for name in ("encode_runs_keeping", "encode_many")
        ),
        (batching, "pack_run", _timing(batching, "pack_run", spent, "packing")),
        (inflight, "encode_pieces", _timing(inflight, "encode_pieces", spent, "compressing")),
    ]
    try:
        with emulator_process() as endpoint:
            sink = WriteToSLS(endpoint, PROJECT, LOGSTORE, source=source_of)
            for _ in range(repeat):
                floor = timed(lambda: run_pipeline(logs, None, typed=True))
                spent.clear()
                total = timed(lambda: run_pipeline(logs, sink, typed=True))
                steps = {label: spent.get(label, 0.0) for label in TIMED_STEPS}
                figures = {"beam floor": floor, **steps, "preparing": preparing_secs(logs)}
                figures["the rest"] = total - sum(figures.values())
                figures["total"] = total
                runs.append({k: v / logs * 1e6 for k, v in figures.items()})
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    return {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}


def _batcher_secs(logs: list[dict], source, **options) -> float:
    """The bundle path's batcher, handed ``logs`` as the sink's DoFn hands them over
    (``HANDOVER_ELEMENTS`` at a time), and drained: CPU seconds."""
    config = _config(source, **options)
    batcher = batching.KeyedBatcher(
        LogPreparer(config),
        config.limits(),
        config.max_buffered_bytes,
        window=GlobalWindows.windowed_value(None),
    )
    handover = batching.HANDOVER_ELEMENTS
    started = time.process_time()
    for first in range(0, len(logs), handover):
        batcher.add_elements(logs[first : first + handover])
    batcher.drain()
    return time.process_time() - started


def _topic_of(log: dict) -> str:
    return log["level"]


def _tags_of(log: dict) -> dict:
    return {"host": log["host"]}


def dynamic_group_extra(logs: int, repeat: int) -> dict[str, float]:
    """µs a log of the batcher with each dynamic group the issue names (16 hosts, or
    the log level's 2 topics), over a constant source: what a dynamic group costs (see
    the module)."""
    distinct = list(make_typed_logs(0, 2048))
    times = max(1, logs // len(distinct))

    def own(field: str, value) -> list[dict]:
        return [{**log, field: value(log)} for log in distinct] * times

    one_host = [{**log, "host": "web-00"} for log in distinct] * times
    four_hosts = [{**log, "host": f"web-{i % 4:02d}"} for i, log in enumerate(distinct)] * times

    cases = {
        "constant source": (distinct * times, "app", {}),
        "source callable": (distinct * times, source_of, {}),
        "source callable, one host": (one_host, source_of, {}),
        "source callable, 4 hosts": (four_hosts, source_of, {}),
        "source callable, batches of 256 logs": (
            distinct * times,
            source_of,
            {"max_batch_logs": 256},
        ),
        "topic callable": (distinct * times, "app", {"topic": _topic_of}),
        "tags callable": (distinct * times, "app", {"tags": _tags_of}),
        "own __source__": (own("__source__", source_of), "app", {}),
        "own __topic__": (own("__topic__", _topic_of), "app", {}),
        "own __tags__": (own("__tags__", _tags_of), "app", {}),
        "own __source__, source callable": (own("__source__", source_of), source_of, {}),
    }
    secs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, (data, source, options) in cases.items():
            secs[name].append(_batcher_secs(data, source, **options))
    count = len(distinct) * times
    constant = statistics.median(secs["constant source"]) / count * 1e6
    figures = {"constant source": round(constant, 3)}
    for name, runs in secs.items():
        if name != "constant source":
            figures[f"{name}, extra"] = round(statistics.median(runs) / count * 1e6 - constant, 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    figures = breakdown(args.logs, args.repeat)
    print(json.dumps(figures))
    print("\n| step | µs a log |\n|---|---:|")
    for step, micros in figures.items():
        print(f"| {step} | {micros} |")
    dynamic = dynamic_group_extra(args.logs, max(args.repeat, 5))
    print(json.dumps({"dynamic group, the batcher alone (us a log)": dynamic}))


if __name__ == "__main__":
    main()
