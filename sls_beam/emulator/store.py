"""What the emulator keeps: logstores, accepted logs (optionally on disk), counters."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sls_beam.emulator.protocol import LogGroupPayload, Rejection

_log = logging.getLogger("sls_beam.emulator")

#: Data files kept open at once; the least recently written is closed past this.
MAX_OPEN_FILES = 64


@dataclass(frozen=True)
class StoredLog:
    """One accepted log as the service stores it.

    ``time`` is Unix seconds: the receive time for anonymous writes (like the
    real service, the emulator replaces any ``__time__`` the client sent), or
    the log's own ``__time__`` for signed writes. ``arrived`` is when the
    emulator stored it (Unix seconds, to the microsecond): latency benchmarks
    read it.
    """

    project: str
    logstore: str
    topic: str
    source: str
    tags: dict
    contents: dict
    time: int
    request_id: str
    arrived: float = 0.0


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
      memory_logs: keep at most this many logs of each logstore in memory (the
        newest); ``None``: all of them. ``data_dir`` still keeps every log.
    """

    def __init__(
        self,
        strict: bool = False,
        data_dir: str | None = None,
        retain: bool = True,
        memory_logs: int | None = None,
    ):
        self.strict = strict
        self.data_dir = Path(data_dir) if data_dir else None
        self.retain = retain
        self.memory_logs = memory_logs
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._in_flight = 0
        self._tracking: dict[tuple[str, str], bool] = {}
        self._logs: dict[tuple[str, str], deque[StoredLog]] = {}
        self._files: OrderedDict[tuple[str, str], object] = OrderedDict()  # oldest first
        self.counters: Counter = Counter()
        self.rejections: Counter = Counter()
        self.faults: Counter = Counter()
        if self.data_dir:
            self._load()

    def create_logstore(self, project: str, logstore: str, web_tracking: bool = True) -> None:
        """Declare a logstore (needed in strict mode) and set its web tracking switch."""
        with self._lock:
            self._tracking[(project, logstore)] = web_tracking
            self._kept((project, logstore))

    def check_writable(self, project: str, logstore: str, signed: bool = False) -> None:
        """Raise the service's rejection if ``project``/``logstore`` cannot take a write
        (``signed``: web tracking need not be on)."""
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
        if not enabled and not signed:
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
        keep_time: bool = False,
    ) -> None:
        """Store one accepted request's logs: all of them, or (on any error) none.
        ``keep_time`` (a signed request): a log's numeric ``__time__`` is its time."""
        records = []
        lines = ""
        arrived = time.time()
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
                    _time_of(log, received) if keep_time else received,
                    request_id,
                    arrived,
                )
                for log in payload.logs
            ]
        if self.data_dir:
            # Encoded before anything is stored: what cannot be written is not kept either.
            lines = "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records)
            lines.encode("utf-8")
        with self._lock:
            if self.data_dir:
                out = self._file(project, logstore)
                out.write(lines)
                out.flush()
            self.counters["accepted_requests"] += 1
            self.counters["logs"] += len(payload.logs)
            self.counters["raw_bytes"] += payload.raw_bytes
            self.counters["body_bytes"] += body_bytes
            if self.retain:
                self._kept((project, logstore)).extend(records)
            self._arrived.notify_all()

    def _kept(self, key: tuple[str, str]) -> deque[StoredLog]:
        """The logs of one logstore kept in memory (the newest ``memory_logs``)."""
        kept = self._logs.get(key)
        if kept is None:
            kept = self._logs[key] = deque(maxlen=self.memory_logs)
        return kept

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
                        "preflights",
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
        out = self._files.get(key)
        if out is not None:
            self._files.move_to_end(key)
            return out
        if len(self._files) >= MAX_OPEN_FILES:
            self._files.popitem(last=False)[1].close()
        folder = self.data_dir / project
        folder.mkdir(parents=True, exist_ok=True)
        out = self._files[key] = open(folder / f"{logstore}.jsonl", "a", encoding="utf-8")
        return out

    def _load(self) -> None:
        for path in sorted(self.data_dir.glob("*/*.jsonl")):
            records = _read_data_file(path)
            if records is None:
                continue
            key = (path.parent.name, path.stem)
            self._tracking.setdefault(key, True)
            self.counters["logs"] += len(records)
            if self.retain:
                self._kept(key).extend(records)


def _read_data_file(path: Path) -> list[StoredLog] | None:
    """The logs of one data file; ``None`` (with a warning) for a file not the emulator's."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(StoredLog(**json.loads(line)))
            except (ValueError, TypeError):
                if not records:
                    _log.warning("skipping %s: not a file of emulator logs (line %d)", path, number)
                    return None
                _log.warning("skipping line %d of %s: not a stored log (cut short?)", number, path)
    return records


def data_file(data_dir: str | os.PathLike, project: str, logstore: str) -> Path:
    """Where ``--data-dir`` keeps the logs of one logstore."""
    return Path(data_dir) / project / f"{logstore}.jsonl"


def _time_of(log: dict, received: int) -> int:
    """A signed log's ``__time__`` (Unix seconds, a number), else the receive time."""
    value = log.get("__time__")
    if value.__class__ in (int, float) and 0 <= value < 2**32:
        return int(value)
    return received
