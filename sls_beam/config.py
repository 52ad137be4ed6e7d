"""What a WriteToSLS worker needs: the validated, picklable configuration."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apache_beam.transforms.display import DisplayDataItem

from sls_beam.client import WebTrackingClient, resolve_target
from sls_beam.retry import RetryPolicy
from sls_beam.wire import (
    COMPRESSIONS,
    SERVICE_MAX_LOGS,
    SERVICE_MAX_RAW_BYTES,
    BatchLimits,
    LogEncoder,
    LogGroup,
)

WRITTEN_TAG = "written"
FAILED_TAG = "failed"
MODES = ("auto", "bundle", "stateful")
ON_SEND_FAILURE = ("raise", "output")
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BUFFERING_SECS = 2.0

Constant = Any  # a constant, or a callable of the element returning one


@dataclass(frozen=True)
class SLSWriteConfig:
    """Everything a worker needs to write: validated once, pickled to workers.

    See :class:`WriteToSLS` for the meaning of each field.
    """

    endpoint: str
    project: str
    logstore: str
    topic: Constant = ""
    source: Constant = ""
    tags: Constant = None
    compression: str = "lz4"
    max_batch_logs: int = SERVICE_MAX_LOGS
    max_batch_bytes: int = SERVICE_MAX_RAW_BYTES
    max_buffering_secs: float = DEFAULT_MAX_BUFFERING_SECS
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    max_in_flight: int = 4
    event_time_key: str | None = None
    timeout_secs: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_send_failure: str = "raise"
    mode: str = "auto"
    num_shards: int = 16
    verify: bool | str = True
    clock: Callable[[], float] = time.time

    def __post_init__(self):
        resolve_target(self.endpoint, self.project, self.logstore)
        self.limits()  # validates the batch limits
        LogEncoder(self.event_time_key)  # validates the event time key
        checks = [
            (self.compression in COMPRESSIONS, f"compression must be one of {COMPRESSIONS}"),
            (self.mode in MODES, f"mode must be one of {MODES}"),
            (self.on_send_failure in ON_SEND_FAILURE, f"on_send_failure: one of {ON_SEND_FAILURE}"),
            (self.max_in_flight >= 1, "max_in_flight must be at least 1"),
            (self.num_shards >= 1, "num_shards must be at least 1"),
            (self.max_buffering_secs >= 0, "max_buffering_secs must not be negative"),
            (
                self.max_buffered_bytes >= self.max_batch_bytes,
                "max_buffered_bytes must be at least max_batch_bytes",
            ),
            (self.timeout_secs > 0, "timeout_secs must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if not any(map(callable, (self.topic, self.source, self.tags))):
            LogGroup.of(self.topic, self.source, self.tags)  # constants: fail at construction

    def limits(self) -> BatchLimits:
        return BatchLimits(self.max_batch_logs, self.max_batch_bytes)

    def make_client(self) -> WebTrackingClient:
        return WebTrackingClient(
            self.endpoint,
            self.project,
            self.logstore,
            timeout_secs=self.timeout_secs,
            retry=self.retry,
            verify=self.verify,
            pool_size=self.max_in_flight,
        )


def display_data(config: SLSWriteConfig) -> dict:
    """Display data of the sink's transform and DoFns (no secrets: there are none)."""
    return {
        "endpoint": config.endpoint,
        "project": config.project,
        "logstore": config.logstore,
        "compression": config.compression,
        "max_batch_logs": config.max_batch_logs,
        "max_batch_bytes": DisplayDataItem(config.max_batch_bytes, label="Max batch bytes (raw)"),
        "max_buffering_secs": config.max_buffering_secs,
        "max_in_flight": config.max_in_flight,
        "on_send_failure": config.on_send_failure,
        "mode": config.mode,
    }
