"""Beam's portable job API, as a Flink cluster with a Beam worker-pool sidecar runs Python.

``PortableRunner`` with ``job_endpoint=embed`` submits the pipeline to an
in-process job service, and the SDK workers come from a worker pool started
here (``python -m apache_beam.runners.worker.worker_pool_main``,
``environment_type=EXTERNAL``): each stage runs in other processes, reached
over the Fn API, with every element and every piece of state crossing a
coder, as on Flink. Flink itself cannot be downloaded here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import apache_beam as beam
import pytest

from pipelines import files_to_sls
from sls_beam import WriteToSLS
from tests.helpers import LOGSTORE, PROJECT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "pipelines", "sample", "app-logs.jsonl")


@pytest.fixture(autouse=True)
def in_a_fresh_folder(tmp_path, monkeypatch):
    """Pipelines write default outputs (sls-failed/, beam-temp-*) where they run: not here."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def worker_pool():
    """A Beam SDK worker pool on loopback; yields the pipeline options that use it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    )
    env["PYTHONPATH"] = REPO  # workers unpickle this module's functions by reference
    pool = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apache_beam.runners.worker.worker_pool_main",
            f"--service_port={port}",
        ],
        env=env,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # ready when it accepts connections (bounded wait)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or pool.poll() is not None:
                    pytest.fail("the worker pool did not start")
                time.sleep(0.1)
        yield [
            "--runner=PortableRunner",
            "--job_endpoint=embed",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{port}",
        ]
    finally:
        pool.terminate()
        pool.wait(timeout=30)


def numbered(n: int) -> dict:
    return {"n": n, "msg": f"message {n}", "ok": n % 2 == 0} if n != 7 else {"": "empty key"}


def failed_summary(failed) -> str:
    return json.dumps([failed.error_code, failed.error_message])


@pytest.mark.parametrize("mode", ["bundle", "stateful"])
def test_write_to_sls_through_the_portable_runner(worker_pool, emulator, tmp_path, mode):
    out = tmp_path / "failed"
    options = beam.options.pipeline_options.PipelineOptions(worker_pool)
    with beam.Pipeline(options=options) as p:
        result = (
            p
            | beam.Create(range(500))
            | beam.Map(numbered)
            | WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE, mode=mode, max_batch_logs=64)
        )
        (
            result.failed
            | beam.Map(failed_summary)
            | beam.io.WriteToText(str(out), shard_name_template="")
        )
    stored = sorted(int(log.contents["n"]) for log in emulator.logs(PROJECT, LOGSTORE))
    assert stored == [n for n in range(500) if n != 7]
    [failed] = [json.loads(line) for line in out.read_text().splitlines()]
    assert failed[0] == "InvalidLog" and "keys must not be empty" in failed[1]


def test_files_pipeline_through_the_portable_runner(worker_pool, emulator, tmp_path):
    summary = files_to_sls.run(
        [
            "--input",
            SAMPLE,
            "--endpoint",
            emulator.endpoint,
            "--sls_project",
            PROJECT,
            "--logstore",
            LOGSTORE,
            "--failed-output",
            str(tmp_path / "failed"),
            *worker_pool,
        ]
    )
    assert len(emulator.logs(PROJECT, LOGSTORE)) == 5000
    assert summary["logs_written"] == 5000 and summary["logs_failed"] == 3
    failed = [
        json.loads(line)
        for path in tmp_path.glob("failed*")
        for line in path.read_text().splitlines()
    ]
    lines = open(SAMPLE, encoding="utf-8").read().splitlines()
    assert len(failed) == 3
    assert all(lines[record["line"] - 1] == record["raw"] for record in failed)
