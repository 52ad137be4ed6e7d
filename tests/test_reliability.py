"""Faults survived, bad input contained, memory bounded, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from sls_beam import WriteToSLS
from sls_beam.emulator import Emulator, FaultPlan
from tests.beam_helpers import generated_logs, run
from tests.helpers import LOGSTORE, PROJECT

ROOT = Path(__file__).resolve().parent.parent
SOAK_LOGS = 100_000
SOAK_FAULTS = {"500": 0.04, "502": 0.03, "503": 0.03, "quota": 0.05, "drop": 0.02, "slow": 0.02}


@pytest.mark.parametrize(
    "mode, soak_logs, batch_logs", [("bundle", SOAK_LOGS, 500), ("stateful", 40_000, 200)]
)
def test_fault_soak_every_log_lands_at_least_once(capsys, mode, soak_logs, batch_logs):
    """Both paths (the stateful one: chunks in Beam state, split and redelivered across
    retried bundles) deliver every log through faults and a restart of the server."""
    faults = FaultPlan(SOAK_FAULTS, seed=20261125, slow_secs=1.0)
    with Emulator(faults=faults) as emulator:
        stopper = threading.Event()
        restarted = []

        def restart_midway():
            if emulator.wait_for_logs(soak_logs // 3, timeout=120):
                emulator.stop()
                stopper.wait(0.5)  # the outage: clients meet refused connections meanwhile
                restarted.append(emulator.start())

        restarter = threading.Thread(target=restart_midway)
        restarter.start()

        def build(p):
            result = generated_logs(p, soak_logs, per_seed=5_000) | WriteToSLS(
                emulator.endpoint,
                PROJECT,
                LOGSTORE,
                mode=mode,
                max_batch_logs=batch_logs,
                timeout_secs=0.3,
                max_attempts=15,
                backoff_base_secs=0.02,
                backoff_max_secs=0.5,
            )
            assert_that(result.failed, equal_to([]), label="nothing failed")

        try:
            _, metrics = run(build)
        finally:
            restarter.join()
        stored = emulator.logs(PROJECT, LOGSTORE)
        stats = emulator.stats()
    messages = [log.contents["message"] for log in stored]
    unique = set(messages)
    duplicates = len(messages) - len(unique)
    with capsys.disabled():
        print(
            f"\nsoak ({mode}): {soak_logs} logs, {stats['requests']} requests, "
            f"faults {stats['faults']}, {duplicates} duplicate logs, {metrics['retries']} retries"
        )
    assert len(unique) == soak_logs  # every log received at least once
    assert restarted, "the emulator was not restarted mid-run"
    assert sum(stats["faults"].values()) >= 0.15 * stats["requests"] * 0.5  # faults did happen
    assert stats["faults"].get("slow", 0) >= 1 and stats["faults"].get("drop", 0) >= 1
    # every injected fault cost exactly one retry (nothing ran out); the outage cost more
    assert metrics["retries"] >= sum(stats["faults"].values())
    assert metrics["logs_written"] == soak_logs
    # requests the emulator stored but whose answer was lost (slow, or cut by the restart)
    lost_answers = stats["accepted_requests"] - metrics["requests"]
    assert stats["faults"].get("slow", 0) <= lost_answers <= stats["faults"].get("slow", 0) + 8
    assert duplicates <= lost_answers * batch_logs
    assert metrics["throttled_msecs"] > 0


def test_a_server_that_never_recovers_fails_the_pipeline_with_context():
    with Emulator(faults=FaultPlan({"500": 1.0})) as emulator:

        def build(p):
            (
                p
                | beam.Create([{"i": 1}])
                | WriteToSLS(
                    emulator.endpoint, PROJECT, LOGSTORE, max_attempts=3, backoff_base_secs=0.001
                )
            )

        with pytest.raises(Exception) as caught:
            run(build)
    text = str(caught.value)
    assert "InternalServerError" in text and "HTTP 500" in text and "3 attempts" in text
    assert "request id" in text


def test_in_flight_requests_are_capped_against_a_slow_server():
    with Emulator(faults=FaultPlan(latency_secs=0.05)) as emulator:

        def build(p):
            generated_logs(p, 20_000) | WriteToSLS(
                emulator.endpoint, PROJECT, LOGSTORE, max_batch_logs=200, max_in_flight=3
            )

        run(build)
        stats = emulator.stats()
    assert stats["logs"] == 20_000
    assert stats["max_concurrent_requests"] == 3


@pytest.mark.parametrize("latency_ms", [0, 100])
def test_memory_is_flat_in_the_number_of_logs(latency_ms):
    """RSS growth during a run of 300k logs stays within 40 MB of that for 50k (a leak
    of even ~150 bytes per log would add 37 MB), with a fast server and a slow one."""

    def peak(logs):
        figures = memory_benchmark(logs, latency_ms, max_batch_logs=1000)
        assert figures["received"] == logs
        return figures["growth_mb"]

    small, large = peak(50_000), peak(300_000)
    assert large - small < 40, (small, large)


def test_error_text_never_carries_whole_log_contents(emulator):
    secret = "SECRET-" + "s" * 2_000_000

    def build(p):
        result = (
            p
            | beam.Create([{"token": secret}, {"ok": "1"}])
            | WriteToSLS(emulator.endpoint, PROJECT, LOGSTORE)
        )
        assert_that(
            result.failed
            | beam.Map(lambda f: (len(f.error_message) < 300, "SECRET" in f.error_message)),
            equal_to([(True, False)]),
        )

    run(build)


def test_emulator_listens_on_loopback_by_default():
    with Emulator() as emulator:
        assert emulator.endpoint.startswith("http://127.0.0.1:")
        assert emulator._server.server_address[0] == "127.0.0.1"


def memory_benchmark(logs: int, latency_ms: float, max_batch_logs: int) -> dict:
    """The memory benchmark's figures (``python -m benchmarks.memory``), run in a fresh
    interpreter so that nothing else is in its memory."""
    command = [sys.executable, "-m", "benchmarks.memory", "--logs", str(logs)]
    command += ["--latency-ms", str(latency_ms), "--max-batch-logs", str(max_batch_logs)]
    done = subprocess.run(
        command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=300
    )
    return json.loads(done.stdout.strip().splitlines()[-1])
