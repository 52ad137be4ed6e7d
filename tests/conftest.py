"""Shared fixtures: a real emulator on 127.0.0.1 (ephemeral port) per test."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading

import pytest

from sls_beam.emulator import Emulator
from sls_beam.emulator.tls import make_self_signed_certificate


@pytest.fixture
def emulator():
    with Emulator() as running:
        yield running


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (the emulator's --tls one): (cert, key) paths."""
    return make_self_signed_certificate(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def tls_emulator(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with Emulator(tls=context) as running:
        yield running


# --- the Pub/Sub emulator (Debian package google-cloud-cli-pubsub-emulator), where installed

PUBSUB_LAUNCHER = (
    shutil.which("cloud-pubsub-emulator")
    or "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pubsub_emulator(monkeypatch):
    if not os.path.exists(PUBSUB_LAUNCHER):
        pytest.skip(
            "the Pub/Sub emulator (Debian package google-cloud-cli-pubsub-emulator) "
            "is not installed"
        )
    pytest.importorskip("google.cloud.pubsub_v1", reason="needs apache-beam[gcp]")
    port = free_port()
    process = subprocess.Popen(
        [PUBSUB_LAUNCHER, "--host=127.0.0.1", f"--port={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    started = threading.Event()

    def watch():
        for line in process.stdout:
            if "Server started" in line:
                started.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert started.wait(120), "the Pub/Sub emulator did not start"
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
