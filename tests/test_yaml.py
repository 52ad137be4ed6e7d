"""Beam YAML: the shipped example pipeline, end to end against the emulator."""

from __future__ import annotations

import json
import os

import pytest

from pipelines import files_to_sls
from sls_beam.emulator import Emulator
from tests.helpers import LOGSTORE, PROJECT

yaml_main = pytest.importorskip("apache_beam.yaml.main", reason="needs apache-beam[yaml]")
EXAMPLE = os.path.join(os.path.dirname(files_to_sls.__file__), "write_to_sls.yaml")


def test_yaml_example_writes_to_the_emulator(emulator, tmp_path):
    variables = {"endpoint": emulator.endpoint, "failed_path": str(tmp_path / "failed")}
    yaml_main.run(
        [
            f"--yaml_pipeline_file={EXAMPLE}",
            f"--jinja_variables={json.dumps(variables)}",
            "--runner=FnApiRunner",
        ]
    )
    logs = emulator.logs("demo-project", "demo-logstore")
    assert sorted(log.contents["message"] for log in logs) == [
        "order 1001 paid",
        "order 1002 retried",
        "query served",
    ]
    assert {(log.topic, log.tags["pipeline"]) for log in logs} == {("yaml-demo", "beam-yaml")}
    assert {log.contents["latency_ms"] for log in logs} == {"41", "950", "12"}


def yaml_spec(endpoint: str, failed_path) -> str:
    return f"""
providers:
  - type: python
    config: {{}}
    transforms:
      WriteToSLS: "sls_beam.WriteToSLS"
pipeline:
  transforms:
    - type: Create
      name: Logs
      config:
        elements:
          - {{message: fine}}
          - {{{"k" * 129}: key too long}}
    - type: WriteToSLS
      name: Write
      input: Logs
      config:
        endpoint: "{endpoint}"
        project: {PROJECT}
        logstore: {LOGSTORE}
        error_handling: {{output: failed}}
    - type: MapToFields
      name: Msg
      input: Write.failed
      config: {{language: python, fields: {{line: msg}}}}
    - type: WriteToText
      input: Msg
      config: {{path: "{failed_path}"}}
"""


def run_yaml(spec: str, tmp_path) -> list[str]:
    """Run a YAML pipeline; the lines of its failed output."""
    path = tmp_path / "p.yaml"
    path.write_text(spec)
    yaml_main.run([f"--yaml_pipeline_file={path}", "--runner=FnApiRunner"])
    return [line for f in tmp_path.glob("failed*") for line in f.read_text().splitlines()]


def test_yaml_error_output_gets_failed_logs(emulator, tmp_path):
    lines = run_yaml(yaml_spec(emulator.endpoint, tmp_path / "failed"), tmp_path)
    assert [log.contents for log in emulator.logs()] == [{"message": "fine"}]
    assert len(lines) == 1
    assert "InvalidLog: key 'kkkk" in lines[0] and "at most 128 UTF-8 bytes" in lines[0]


def test_yaml_error_output_gets_logs_the_service_refused(tmp_path):
    """A 404 (no such logstore) goes to the error output too: the pipeline succeeds."""
    with Emulator(strict=True) as emulator:
        emulator.create_logstore(PROJECT, "other-logstore")
        lines = run_yaml(yaml_spec(emulator.endpoint, tmp_path / "failed"), tmp_path)
    assert len(lines) == 2
    assert sum("LogStoreNotExist" in line and "HTTP 404" in line for line in lines) == 1


def test_yaml_signed_writes_with_credentials_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-yaml")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "yaml-secret")
    spec = yaml_spec("ENDPOINT", tmp_path / "failed").replace(
        "        error_handling:",
        "        credentials: env\n"
        "        signature_version: v4\n"
        "        region: cn-hangzhou\n"
        "        error_handling:",
    )
    with Emulator(access_keys={"LTAI-yaml": "yaml-secret"}) as emulator:
        emulator.create_logstore(PROJECT, LOGSTORE, web_tracking=False)  # signed only
        lines = run_yaml(spec.replace("ENDPOINT", emulator.endpoint), tmp_path)
        assert [log.contents for log in emulator.logs()] == [{"message": "fine"}]
    assert len(lines) == 1 and "InvalidLog" in lines[0]  # the key too long, as unsigned
