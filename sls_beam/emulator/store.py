"""What the emulator keeps: logstores, accepted logs (optionally on disk), counters."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sls_beam.emulator.protocol import LogGroupPayload, Rejection


@dataclass(frozen=True)
class StoredLog:
    """One accepted log as the service stores it.

    ``time`` is the receive time in Unix seconds: like the real service, the
    emulator replaces any ``__time__`` the client sent with it.
    """

    project: str
    logstore: str
    topic: str
    source: str
    tags: dict
    contents: dict
    time: int
    request_id: str


class Store:
    """Thread-safe storage of logstores, logs and counters.

    Args:
      strict: when True, writes to an undeclared project or logstore get 404,
        as on the real service; otherwise logstores are created on first write,
        with web tracking on.
      data_dir: when set, every accepted log is appended to
        ``{data_dir}/{project}/{logstore}.jsonl`` (one JSON object a line) and
        those files are loaded again at start, so results outlive the process.
      retain: keep logs in memory for :meth:`logs` (benchmarks turn it off).
    """

    def __init__(self, strict: bool = False, data_dir: str | None = None, retain: bool = True):
        self.strict = strict
        self.data_dir = Path(data_dir) if data_dir else None
        self.retain = retain
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._in_flight = 0
        self._tracking: dict[tuple[str, str], bool] = {}
        self._logs: dict[tuple[str, str], list[StoredLog]] = {}
        self._files: dict[tuple[str, str], object] = {}
        self.counters: Counter = Counter()
        self.rejections: Counter = Counter()
        self.faults: Counter = Counter()
        if self.data_dir:
            self._load()

    def create_logstore(self, project: str, logstore: str, web_tracking: bool = True) -> None:
        """Declare a logstore (needed in strict mode) and set its web tracking switch."""
        with self._lock:
            self._tracking[(project, logstore)] = web_tracking
            self._logs.setdefault((project, logstore), [])

    def check_writable(self, project: str, logstore: str) -> None:
        """Raise the service's rejection if ``project``/``logstore`` cannot take a write."""
        key = (project, logstore)
        with self._lock:
            enabled = self._tracking.get(key)
            if enabled is None:
                if self.strict:
                    if not any(p == project for p, _ in self._tracking):
                        raise Rejection(
                            404, "ProjectNotExist", f"The Project does not exist : {project}"
                        )
                    raise Rejection(404, "LogStoreNotExist", f"logstore {logstore} does not exist")
                self._tracking[key] = enabled = True
        if not enabled:
            raise Rejection(
                401, "Unauthorized", f"web tracking is not enabled for logstore {logstore}"
            )

    @contextmanager
    def request_in_flight(self):
        """Count a PutWebTracking request and the most ever answered at once."""
        with self._lock:
            self.counters["requests"] += 1
            self._in_flight += 1
            self.counters["max_concurrent_requests"] = max(
                self.counters["max_concurrent_requests"], self._in_flight
            )
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def bump(self, counter: str, key: str) -> None:
        """Add one to ``counters``, ``rejections`` or ``faults`` under ``key``."""
        with self._lock:
            getattr(self, counter)[key] += 1

    def add(
        self,
        project: str,
        logstore: str,
        payload: LogGroupPayload,
        body_bytes: int,
        received: int,
        request_id: str,
    ) -> None:
        records = []
        if self.retain or self.data_dir:  # a counting-only emulator keeps up with benchmarks
            tags = {str(k): str(v) for k, v in payload.tags.items()}
            records = [
                StoredLog(
                    project,
                    logstore,
                    payload.topic,
                    payload.source,
                    tags,
                    {k: v for k, v in log.items() if k != "__time__"},
                    received,
                    request_id,
                )
                for log in payload.logs
            ]
        with self._lock:
            self.counters["accepted_requests"] += 1
            self.counters["logs"] += len(payload.logs)
            self.counters["raw_bytes"] += payload.raw_bytes
            self.counters["body_bytes"] += body_bytes
            if self.retain:
                self._logs.setdefault((project, logstore), []).extend(records)
            if self.data_dir:
                out = self._file(project, logstore)
                out.write(
                    "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records)
                )
                out.flush()
            self._arrived.notify_all()

    def wait_for_logs(
        self, count: int, timeout: float, where: Callable[[StoredLog], bool] | None = None
    ) -> bool:
        """Block until ``count`` logs (those ``where`` accepts, if given) are stored,
        or ``timeout`` seconds pass; return whether they are."""

        def arrived() -> bool:
            if where is None:
                return self.counters["logs"] >= count
            found = sum(1 for logs in self._logs.values() for log in logs if where(log))
            return found >= count

        with self._arrived:
            return self._arrived.wait_for(arrived, timeout)

    def logs(self, project: str | None = None, logstore: str | None = None) -> list[StoredLog]:
        """Accepted logs, oldest first, optionally of one project and logstore."""
        with self._lock:
            return [
                record
                for (p, ls), records in self._logs.items()
                if project in (None, p) and logstore in (None, ls)
                for record in records
            ]

    def clear(self) -> None:
        """Forget stored logs and counters (not the declared logstores nor files)."""
        with self._lock:
            for records in self._logs.values():
                records.clear()
            for counter in (self.counters, self.rejections, self.faults):
                counter.clear()

    def stats(self) -> dict:
        with self._lock:
            return {
                **{
                    k: self.counters[k]
                    for k in (
                        "requests",
                        "accepted_requests",
                        "logs",
                        "raw_bytes",
                        "body_bytes",
                        "max_concurrent_requests",
                    )
                },
                "rejections": dict(self.rejections),
                "faults": dict(self.faults),
            }

    def close(self) -> None:
        with self._lock:
            for out in self._files.values():
                out.close()
            self._files.clear()

    def _file(self, project: str, logstore: str):
        key = (project, logstore)
        if key not in self._files:
            folder = self.data_dir / project
            folder.mkdir(parents=True, exist_ok=True)
            self._files[key] = open(folder / f"{logstore}.jsonl", "a", encoding="utf-8")
        return self._files[key]

    def _load(self) -> None:
        for path in sorted(self.data_dir.glob("*/*.jsonl")):
            key = (path.parent.name, path.stem)
            self._tracking.setdefault(key, True)
            with open(path, encoding="utf-8") as lines:
                records = [StoredLog(**json.loads(line)) for line in lines if line.strip()]
            if self.retain:
                self._logs.setdefault(key, []).extend(records)


def data_file(data_dir: str | os.PathLike, project: str, logstore: str) -> Path:
    """Where ``--data-dir`` keeps the logs of one logstore."""
    return Path(data_dir) / project / f"{logstore}.jsonl"
