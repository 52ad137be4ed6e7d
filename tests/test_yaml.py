"""Beam YAML: the shipped example pipeline, end to end against the emulator."""

from __future__ import annotations

import json
import os

import pytest

from pipelines import files_to_sls
from tests.conftest import LOGSTORE, PROJECT

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


def test_yaml_error_output_gets_failed_logs(emulator, tmp_path):
    spec = f"""
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
        endpoint: "{emulator.endpoint}"
        project: {PROJECT}
        logstore: {LOGSTORE}
        error_handling: {{output: failed}}
    - type: MapToFields
      name: Msg
      input: Write.failed
      config: {{language: python, fields: {{line: msg}}}}
    - type: WriteToText
      input: Msg
      config: {{path: "{tmp_path / "failed"}"}}
"""
    path = tmp_path / "p.yaml"
    path.write_text(spec)
    yaml_main.run([f"--yaml_pipeline_file={path}", "--runner=FnApiRunner"])
    assert [log.contents for log in emulator.logs()] == [{"message": "fine"}]
    lines = [line for f in tmp_path.glob("failed*") for line in f.read_text().splitlines()]
    assert len(lines) == 1
    assert "InvalidLog: key 'kkkk" in lines[0] and "at most 128 UTF-8 bytes" in lines[0]
