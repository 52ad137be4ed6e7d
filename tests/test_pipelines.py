"""The example pipelines end to end: files into the emulator, Pub/Sub (real emulator) into SLS."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from pipelines import files_to_sls
from tests.helpers import LOGSTORE, PROJECT

SAMPLE = os.path.join(os.path.dirname(files_to_sls.__file__), "sample", "app-logs.jsonl")


@pytest.fixture(autouse=True)
def in_a_fresh_folder(tmp_path, monkeypatch):
    """Pipelines write default outputs (sls-failed/, beam-temp-*) where they run: not here."""
    monkeypatch.chdir(tmp_path)


def sink_args(emulator) -> list[str]:
    return ["--endpoint", emulator.endpoint, "--sls_project", PROJECT, "--logstore", LOGSTORE]


def failed_records(prefix):
    return [
        json.loads(line)
        for path in sorted(glob.glob(f"{prefix}*"))
        for line in open(path, encoding="utf-8")
    ]


def test_files_backfill_into_the_embedded_emulator(tmp_path, capsys):
    data_dir = tmp_path / "data"
    failed_prefix = tmp_path / "failed" / "failed"
    summary = files_to_sls.run(
        [
            "--input",
            SAMPLE,
            "--data-dir",
            str(data_dir),
            "--failed-output",
            str(failed_prefix),
            "--progress-secs",
            "0.001",
        ]
    )
    lines = [line for line in open(SAMPLE, encoding="utf-8") if line.strip()]
    stored = [
        json.loads(line)
        for line in open(data_dir / "demo-project" / "demo-logstore.jsonl", encoding="utf-8")
    ]
    failed = failed_records(failed_prefix)
    # every line is accounted for: written or in the failed output, with file and reason
    assert len(stored) + len(failed) == len(lines) == summary["logs_read"]
    assert {log["contents"]["request_id"] for log in stored} == {
        json.loads(line)["request_id"]
        for line in lines
        if line.startswith("{") and line.rstrip().endswith("}")
    }
    assert len(failed) == summary["logs_failed"] == 3
    for record in failed:
        assert record["file"].endswith("app-logs.jsonl") and record["reason"]
        number = record["line"]
        assert open(SAMPLE, encoding="utf-8").read().splitlines()[number - 1] == record["raw"]
    assert {log["source"] for log in stored} == {"app-logs.jsonl"}
    assert summary["logs_written"] == len(stored)
    assert summary["requests"] >= 1 and summary["raw_bytes"] > summary["sent_bytes"] > 0
    out, err = capsys.readouterr()
    assert "logs written" in err and "logs/s" in err  # progress lines
    assert "summary:" in out and "logs_per_sec" in out and "demo-logstore.jsonl" in out
    assert "format: jsonl (from the file extension .jsonl" in out


def test_files_formats_and_one_failed_record_schema(tmp_path, emulator):
    (tmp_path / "a.txt").write_text("first line\nsecond line\n\nthird\n")
    (tmp_path / "b.csv").write_text("user,action\nann,login\nbob,logout,EXTRA\ncid,view\n")
    failed_prefix = str(tmp_path / "out" / "failed")
    common = [
        *sink_args(emulator),
        "--failed-output",
        failed_prefix,
        "--topic",
        "backfill",
        "--source",
        "host-1",
        "--compression",
        "deflate",
    ]
    text = files_to_sls.run(["--input", str(tmp_path / "*.txt"), "--format", "text", *common])
    assert text["logs_written"] == 3
    csv = files_to_sls.run(["--input", str(tmp_path / "*.csv"), *common])  # auto: csv
    assert (csv["logs_read"], csv["logs_written"], csv["logs_failed"]) == (3, 2, 1)
    contents = [log.contents for log in emulator.logs(PROJECT, LOGSTORE)]
    assert {"content": "second line"} in contents
    assert {"user": "ann", "action": "login"} in contents
    assert {(log.topic, log.source) for log in emulator.logs()} == {("backfill", "host-1")}
    [bad] = failed_records(failed_prefix)
    assert set(bad) == RECORD_FIELDS
    assert bad["file"].endswith("b.csv") and (bad["line"], bad["raw"]) == (3, "bob,logout,EXTRA")
    assert "header of 2 fields" in bad["reason"] and bad["stage"] == "read"


RECORD_FIELDS = {
    "stage", "file", "line", "offset", "raw", "reason", "error_code", "status", "request_id"
}  # fmt: skip


def test_files_pipeline_sends_logs_that_break_rules_to_failed_output(tmp_path, emulator):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n{"": "empty key"}\n{"__tag__:x": "1"}\n')
    prefix = str(tmp_path / "failed")
    summary = files_to_sls.run(
        ["--input", str(tmp_path / "x.jsonl"), *sink_args(emulator), "--failed-output", prefix]
    )
    assert (summary["logs_written"], summary["logs_failed"]) == (1, 2)
    failed = failed_records(prefix)
    assert all(set(f) == RECORD_FIELDS for f in failed)
    assert sorted(
        (f["stage"], f["line"], f["error_code"], f["reason"].split(": ")[0]) for f in failed
    ) == [
        ("write", 2, "InvalidLog", "key ''"),
        ("write", 3, "InvalidLog", "key '__tag__:x'"),
    ]
    assert sorted(f["raw"] for f in failed) == ['{"":"empty key"}', '{"__tag__:x":"1"}']
    assert [(log.source, log.contents) for log in emulator.logs()] == [("x.jsonl", {"a": "1"})]


@pytest.mark.parametrize("input_format", ["jsonl", "text", "csv"])
def test_a_bad_byte_or_a_huge_csv_field_fails_its_line_alone(tmp_path, emulator, input_format):
    header = b"a,b\n" if input_format == "csv" else b""
    good = {"jsonl": b'{"a": "1", "b": "2"}\n', "text": b"fine\n", "csv": b"1,2\n"}[input_format]
    lines = [
        header,
        good,
        b'{"a": "\xff"}\n' if input_format == "jsonl" else b"bad \xff byte\n",
        good,
    ]
    if input_format == "csv":
        lines.append(b"x," + b"y" * 200_000 + b"\n")  # over the csv module's 128 KiB field limit
        lines.append(good)
    (tmp_path / "in.data").write_bytes(b"".join(lines))
    prefix = str(tmp_path / "failed")
    args = [
        "--input",
        str(tmp_path / "in.data"),
        "--format",
        input_format,
        "--failed-output",
        prefix,
    ]
    summary = files_to_sls.run([*args, *sink_args(emulator)])
    failed = failed_records(prefix)
    expected_bad = 2 if input_format == "csv" else 1
    assert (summary["logs_written"], len(failed)) == (lines.count(good), expected_bad)
    first = 3 if input_format == "csv" else 2
    assert failed[0]["line"] == first and "UTF-8" in failed[0]["reason"]
    if input_format == "csv":
        assert failed[1]["line"] == 5 and "field larger than field limit" in failed[1]["reason"]


def test_files_pipeline_fails_loudly_when_the_logstore_refuses_writes(tmp_path, emulator):
    emulator.create_logstore(PROJECT, LOGSTORE, web_tracking=False)
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(Exception, match="web tracking is probably disabled"):
        files_to_sls.run(["--input", str(tmp_path / "x.jsonl"), *sink_args(emulator)])


@pytest.mark.parametrize("input_format", ["jsonl", "text", "csv", "auto"])
def test_a_missing_input_is_one_clear_line_for_every_format(tmp_path, input_format):
    missing = str(tmp_path / "nowhere" / "*.log")
    with pytest.raises(SystemExit, match="no files match; check the path or the pattern"):
        files_to_sls.run(["--input", missing, "--format", input_format])


def test_text_read_as_json_says_which_format_to_use(tmp_path, emulator, capsys):
    (tmp_path / "app.jsonl").write_text("plain words\nmore words\nstill words\n")
    files_to_sls.run(
        [
            "--input",
            str(tmp_path / "app.jsonl"),
            *sink_args(emulator),
            "--failed-output",
            str(tmp_path / "failed"),
        ]
    )
    assert "3 of 3 lines could not be read as jsonl" in capsys.readouterr().err


def test_event_time_field_keeps_a_logs_own_time(tmp_path, emulator, caplog):
    (tmp_path / "x.jsonl").write_text('{"__time__": 1700000000, "msg": "then"}\n')
    args = ["--input", str(tmp_path / "x.jsonl"), *sink_args(emulator)]
    args += ["--failed-output", str(tmp_path / "failed")]
    files_to_sls.run([*args, "--event-time-field", "ts"])
    assert [log.contents for log in emulator.logs()] == [{"ts": "1700000000", "msg": "then"}]
    assert "No shards found" not in caplog.text  # nothing failed: no alarming warning
    assert not list(tmp_path.glob("failed*"))
    summary = files_to_sls.run(args)  # without the flag, the service would overwrite it
    assert summary["logs_failed"] == 1
    [record] = failed_records(tmp_path / "failed")
    assert "--event-time-field" in record["reason"]


@pytest.mark.parametrize(
    ("module", "own_option"),
    [("pipelines.files_to_sls", "--fresh"), ("pipelines.pubsub_to_sls", "--subscription")],
)
def test_help_lists_every_option_with_its_default(module, own_option):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for option in ("--endpoint", "--logstore", "--failed-output", "--sink-mode", own_option):
        assert option in result.stdout
    assert "(default: lz4)" in result.stdout and "--runner" in result.stdout


def test_common_mistakes_are_one_line_that_says_what_to_do(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
    args = ["--input", str(tmp_path / "x.jsonl"), "--sls_project", PROJECT, "--logstore", LOGSTORE]
    with pytest.raises(SystemExit, match=r"^error: endpoint '127.0.0.1:18081' has no scheme"):
        files_to_sls.run([*args, "--endpoint", "127.0.0.1:18081"])
    with pytest.raises(SystemExit, match="--logstore are required"):
        files_to_sls.run(["--input", str(tmp_path / "x.jsonl"), "--endpoint", "http://x:1"])


def test_fresh_starts_the_embedded_emulator_empty(tmp_path, capsys):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    args = ["--input", str(tmp_path / "x.jsonl"), "--data-dir", str(tmp_path / "data")]
    args += ["--failed-output", str(tmp_path / "failed")]
    files_to_sls.run(args)
    files_to_sls.run(args)
    assert "(4 in all, 2 from this run" in capsys.readouterr().out
    files_to_sls.run([*args, "--fresh"])
    assert "(2 in all, 2 from this run" in capsys.readouterr().out


# --- Pub/Sub, against the real Pub/Sub emulator ---------------------------------------------


def is_test_log(log) -> bool:
    return log.tags.get("origin") == "test"


def test_pubsub_pipeline_end_to_end(pubsub_emulator, emulator, tmp_path):
    from google.cloud import pubsub_v1

    from pipelines import pubsub_to_sls

    topic = "projects/demo-project/topics/logs"
    subscription = "projects/demo-project/subscriptions/logs-sls"
    publisher = pubsub_v1.PublisherClient()
    publisher.create_topic(name=topic)
    subscriber = pubsub_v1.SubscriberClient()
    subscriber.create_subscription(name=subscription, topic=topic)

    count = 200
    futures = []
    for i in range(count):
        data = json.dumps({"i": i, "msg": "structured"}) if i % 2 else f"plain message {i}"
        futures.append(publisher.publish(topic, data.encode(), origin="test", parity=str(i % 2)))
    futures.append(publisher.publish(topic, b'{"": "empty key"}', origin="bad"))
    for future in futures:
        future.result(timeout=30)
    failed_dir = tmp_path / "failed"
    result = pubsub_to_sls.run(
        [
            "--subscription",
            subscription,
            *sink_args(emulator),
            "--attributes-as",
            "tags",
            "--event-time-field",
            "publish_time",
            "--runner",
            "BundleBasedDirectRunner",
            "--failed-output",
            str(failed_dir),
            "--failed-window-secs",
            "1",
        ],
        wait=False,
    )
    # The DirectRunner's pull waits up to 30 s on an empty subscription, and timers fire only
    # between pulls: a heartbeat message every half second keeps the pipeline moving.
    stop = threading.Event()

    def heartbeat():
        while not stop.wait(0.5):
            publisher.publish(topic, b'{"heartbeat": "1"}', origin="heartbeat")

    beats = threading.Thread(target=heartbeat, daemon=True)
    beats.start()
    try:
        assert emulator.wait_for_logs(count, timeout=120, where=is_test_log), emulator.stats()
        # The failed file appears once its window closes; nothing signals it, so look for it
        # at the heartbeat's pace, for a bounded time.
        deadline = time.monotonic() + 60
        while not glob.glob(f"{failed_dir}/failed*") and time.monotonic() < deadline:
            stop.wait(0.5)
        [failed] = failed_records(f"{failed_dir}/failed")
    finally:
        stop.set()
        beats.join()
        result.cancel()
    logs = [log for log in emulator.logs(PROJECT, LOGSTORE) if is_test_log(log)]
    assert len(logs) == count
    structured = sorted(int(log.contents["i"]) for log in logs if "i" in log.contents)
    assert structured == list(range(1, count, 2))
    plain = {log.contents["content"] for log in logs if "content" in log.contents}
    assert plain == {f"plain message {i}" for i in range(0, count, 2)}
    assert all(log.tags["origin"] == "test" for log in logs)
    assert all(float(log.contents["publish_time"]) > 1_600_000_000 for log in logs)
    assert set(failed) == RECORD_FIELDS
    assert (failed["stage"], failed["error_code"], json.loads(failed["raw"])) == (
        "write",
        "InvalidLog",
        {"": "empty key", "__tags__": {"origin": "bad"}},
    )


def test_a_run_never_replaces_the_failed_output_of_an_earlier_one(tmp_path, emulator, capsys):
    prefix = str(tmp_path / "failed")
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(f'{{"ok": 1}}\nnot json from {name}\n')
        files_to_sls.run(
            [
                "--input",
                str(tmp_path / f"{name}.jsonl"),
                *sink_args(emulator),
                "--failed-output",
                prefix,
            ]
        )
    assert sorted(record["raw"] for record in failed_records(prefix)) == [
        "not json from a",
        "not json from b",
    ]
    printed = [line for line in capsys.readouterr().out.splitlines() if "failed output" in line]
    assert len(printed) == 2 and printed[0] != printed[1]  # each run names its own files
    assert all(glob.glob(line.split(": ", 1)[1]) for line in printed)
