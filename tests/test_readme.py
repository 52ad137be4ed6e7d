"""The README is a contract: every command and code block in it runs, as written.

Blocks run in a fresh folder (with the repository's ``pipelines/`` beside
them, as from the repository's root), with this environment's ``python``
first on PATH (an activated venv). Where a block names an endpoint, it is
pointed at a running emulator: ``http://127.0.0.1:8080`` (the README's local
emulator) and ``cn-hangzhou.log.aliyuncs.com`` (a real region) both become
the emulator's address, and the block must deliver logs to it. Marks (see
``tests/readme.py``) say which blocks are not run here, and why.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from sls_beam import WriteToSLS
from sls_beam.emulator import Emulator
from tests.readme import README, Block, blocks, setup_commands

REPO = README.parent
RUNNABLE = [b for b in blocks() if b.lang in ("sh", "python", "yaml") and b.mark is None]
SERVERS = [b for b in blocks() if b.mark == "server"]
PUBSUB = [b for b in blocks() if b.mark == "pubsub"]
LOCAL_EMULATOR = "http://127.0.0.1:8080"
REGION = "cn-hangzhou.log.aliyuncs.com"


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "pipelines").symlink_to(REPO / "pipelines")
    return tmp_path


def environment() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def pointed_at(code: str, endpoint: str) -> str:
    return code.replace(LOCAL_EMULATOR, endpoint).replace(REGION, endpoint)


def run_block(block: Block, folder: Path, endpoint: str) -> subprocess.CompletedProcess:
    code = pointed_at(block.code, endpoint)
    if block.lang == "sh":
        command = ["bash", "-euo", "pipefail", "-c", code]
    elif block.lang == "python":
        command = [sys.executable, "-c", code]
    else:  # yaml: run as Beam YAML's own command would
        (folder / "block.yaml").write_text(code)
        command = [sys.executable, "-m", "apache_beam.yaml.main", "--yaml_pipeline_file=block.yaml"]
    # Each block takes seconds; a hung one must not eat the whole CI budget.
    return subprocess.run(
        command, cwd=folder, env=environment(), capture_output=True, text=True, timeout=180
    )


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.name)
def test_block_runs_as_written(block, folder, emulator):
    if block.lang == "yaml" or "apache_beam.yaml" in block.code:
        pytest.importorskip("apache_beam.yaml.main", reason="needs apache-beam[yaml]")
    done = run_block(block, folder, emulator.endpoint)
    assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}\n{done.stderr}"
    if LOCAL_EMULATOR in block.code or REGION in block.code:
        assert emulator.stats()["logs"] > 0, f"{block.name} delivered no log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(command: str, folder: Path):
    """Start a server command; return (process, the first line it printed)."""
    process = subprocess.Popen(
        shlex.split(command), cwd=folder, env=environment(), stdout=subprocess.PIPE, text=True
    )
    return process, process.stdout.readline().strip()


@pytest.mark.parametrize("block", SERVERS, ids=lambda b: b.name)
def test_server_block_serves(block, folder):
    command = block.code.strip().replace("--port 8080", f"--port {free_port()}")
    process, endpoint = serve(command, folder)
    try:
        assert requests.get(f"{endpoint}/_emulator/stats", timeout=10).status_code == 200
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_main_command_twice_in_one_folder_then_the_emulator_on_what_it_left(folder):
    """The set-up's main job, run as written twice in the same folder, then the
    emulator started on the folder it left, as the job's own hint says."""
    main_job = setup_commands()[0].split(" && ")[-1].replace(".venv/bin/python", "python")
    hint = ""
    for run in (1, 2):
        done = subprocess.run(
            ["bash", "-c", main_job],
            cwd=folder,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"run {run}:\n{done.stdout}\n{done.stderr}"
        assert "logs_written     5,000" in done.stdout
        hint = re.search(r"or serve them: (python -m sls_beam\.emulator [^ ]+ [^ ]+)", done.stdout)
    assert "(10,000 in all, 5,000 from this run" in done.stdout
    process, endpoint = serve(f"{hint.group(1)} --port {free_port()}", folder)
    try:
        logs = requests.get(
            f"{endpoint}/_emulator/logs",
            params={"project": "demo-project", "logstore": "demo-logstore"},
            timeout=30,
        ).json()
        assert len(logs) == 10_000
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


@pytest.mark.parametrize("block", PUBSUB, ids=lambda b: b.name)
def test_pubsub_block_streams_logs_as_they_come(block, folder, emulator, pubsub_emulator):
    """The local Pub/Sub command as written: a steady trickle of messages lands in
    seconds (it took 25-60 s on the stateful sink), with progress lines meanwhile."""
    from google.cloud import pubsub_v1

    subscription = re.search(r"--subscription (\S+)", block.code).group(1)
    topic = subscription.replace("/subscriptions/", "/topics/")
    publisher = pubsub_v1.PublisherClient()
    publisher.create_topic(name=topic)
    pubsub_v1.SubscriberClient().create_subscription(name=subscription, topic=topic)
    code = pointed_at(block.code, emulator.endpoint).replace(
        "127.0.0.1:8085", f"127.0.0.1:{pubsub_emulator}"
    )
    process = subprocess.Popen(
        ["bash", "-c", code],
        cwd=folder,
        env=environment(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    errors: list[str] = []

    def read_stderr():
        for line in process.stderr:
            errors.append(line)

    threading.Thread(target=read_stderr, daemon=True).start()
    try:
        count, lags = 40, []
        for i in range(count):  # ~10 messages a second for 4 s, each awaited in the SLS emulator
            sent = time.monotonic()
            publisher.publish(topic, f'{{"i": {i}}}'.encode()).result(timeout=30)
            assert emulator.wait_for_logs(i + 1, timeout=60), (emulator.stats(), errors)
            lags.append(time.monotonic() - sent)
            time.sleep(0.1)  # the publisher's pace (not a synchronisation)
        assert sorted(int(log.contents["i"]) for log in emulator.logs()) == list(range(count))
        assert max(lags[5:]) < 10, lags  # a ceiling; once running, each lands in seconds
        assert any("logs written" in line for line in errors), errors
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def readme_default(cell: str):
    """A default as the README's options table writes it, as a Python value."""
    cell = cell.strip()
    words = {"—": inspect.Parameter.empty, "none": None, "`True`": True, '`""`': ""}
    if cell in words:
        return words[cell]
    if cell.endswith(" MiB"):
        return int(cell[:-4]) * 1024 * 1024
    if cell.startswith("`") and cell.endswith("`"):
        return cell.strip("`")
    return float(cell)


def test_the_options_table_shows_the_defaults_the_code_names():
    parameters = inspect.signature(WriteToSLS.__init__).parameters
    rows = re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \| ([^|]+) \|", README.read_text(), re.M)
    shown = {}
    for names, defaults in rows:
        names = [n.strip("`") for n in names.split(", ")]
        if not set(names) <= set(parameters):
            continue  # another table
        values = (
            defaults.split(", ") if len(names) > 1 and "," in defaults else [defaults] * len(names)
        )
        shown.update(zip(names, values, strict=True))
    assert set(shown) == set(parameters) - {"self"}
    for name, cell in shown.items():
        default = parameters[name].default
        if callable(default) and default is not inspect.Parameter.empty:
            assert cell.strip("` ") == f"{default.__module__}.{default.__name__}", name
        else:
            assert readme_default(cell) == default, (name, cell, default)


def test_only_marked_blocks_are_left_out():
    """Every block is run here, or marked with the reason it is not."""
    marks = [b.mark for b in blocks() if b.lang in ("sh", "python", "yaml")]
    assert marks.count("setup") == 1  # run by .ci/run, as a new user would
    assert set(marks) <= {None, "setup", "server", "cloud", "pubsub"}
    assert len(RUNNABLE) >= 5


def test_the_emulator_the_readme_talks_to_is_the_one_blocks_reach(emulator):
    assert pointed_at(f"--endpoint {LOCAL_EMULATOR}", emulator.endpoint).endswith(emulator.endpoint)
    assert isinstance(emulator, Emulator)
