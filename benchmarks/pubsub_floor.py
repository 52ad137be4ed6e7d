"""Beam's floor for the Pub/Sub latency rows: ``python -m benchmarks.pubsub_floor``.

The pipeline of ``pipelines.pubsub_to_sls`` without the sink: read the
subscription on the same runner (BundleBasedDirectRunner, streaming), turn each
message into a log as it does, and append ``{"log": ..., "arrived": unix secs}``
to a JSON-lines file at the end of each bundle. What this runner
carries with nothing after the read, to set beside what it carries with the sink.
"""

from __future__ import annotations

import argparse
import time

import apache_beam as beam
import orjson
from apache_beam.io.gcp.pubsub import ReadFromPubSub
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.pubsub_to_sls import MessageToLog


class RecordArrival(beam.DoFn):
    """Each log and when it got here, a line in ``path`` (appended at each bundle's end)."""

    def __init__(self, path: str):
        self._path = path

    def start_bundle(self):
        self._lines: list[bytes] = []

    def process(self, log):
        self._lines.append(orjson.dumps({"log": log, "arrived": time.time()}) + b"\n")

    def finish_bundle(self):
        with open(self._path, "ab") as f:
            f.writelines(self._lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscription", required=True)
    parser.add_argument("--out", required=True, help="JSON-lines file of arrivals")
    args = parser.parse_args()
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as pipeline:
        (
            pipeline
            | ReadFromPubSub(subscription=args.subscription, with_attributes=True)
            | beam.ParDo(MessageToLog("tags"))
            | beam.ParDo(RecordArrival(args.out))
        )


if __name__ == "__main__":
    main()
