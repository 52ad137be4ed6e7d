"""Where lz4 bodies are made: a Python helper thread against the C worker, in the pipeline.

``python -m benchmarks.bodies`` runs Beam's floor and ``WriteToSLS`` (typed logs, the
source a callable of the host, lz4) with each body maker in turn, round by round, in one
process (see :mod:`sls_beam.bodies`): logs/s, the sink over the floor, and how often the
pipeline's thread waited (voluntary context switches, on Linux: for the interpreter lock,
or for answers), a batch of 4,096. Medians of ``--repeat`` rounds; the emulator (in a
process of its own) must count every log. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics

from benchmarks.common import source_of
from benchmarks.harness import LOGSTORE, PROJECT, emulator_process, run_pipeline, stats, timed
from sls_beam import WriteToSLS, bodies, inflight

#: Each way of making lz4 bodies, by name.
MAKERS = {
    "python helper thread": lambda compression: bodies.ThreadBodies(compression),
    "C worker": bodies.body_maker,
}


def _waits() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def compare(logs: int, repeat: int) -> dict[str, dict[str, float]]:
    rates: dict[str, list[float]] = {"beam floor": []}
    waits: dict[str, list[float]] = {}
    batches = logs / 4096
    original = inflight.body_maker
    try:
        with emulator_process() as endpoint:
            sink = WriteToSLS(endpoint, PROJECT, LOGSTORE, source=source_of)
            for _ in range(repeat):
                rates["beam floor"].append(logs / timed(lambda: run_pipeline(logs, None, True)))
                for name, maker in MAKERS.items():
                    inflight.body_maker = maker
                    before = _waits()
                    rates.setdefault(name, []).append(
                        logs / timed(lambda: run_pipeline(logs, sink, typed=True))
                    )
                    waits.setdefault(name, []).append((_waits() - before) / batches)
            counted = stats(endpoint)["logs"]
        assert counted == logs * repeat * len(MAKERS), counted  # nothing lost
    finally:
        inflight.body_maker = original
    floor = statistics.median(rates["beam floor"])
    figures = {"beam floor": {"logs_per_sec": round(floor)}}
    for name in MAKERS:
        rate = statistics.median(rates[name])
        figures[name] = {
            "logs_per_sec": round(rate),
            "over_floor": round(rate / floor, 3),
            "waits_a_batch": round(statistics.median(waits[name]), 1),
            "rounds_over_floor": [
                round(r / f, 3) for r, f in zip(rates[name], rates["beam floor"], strict=True)
            ],
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(compare(args.logs, args.repeat), indent=1))


if __name__ == "__main__":
    main()
