"""What a WriteToSLS worker needs: the validated, picklable configuration."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from apache_beam.transforms.display import DisplayDataItem

from sls_beam.client import DEFAULT_TIMEOUT_SECS, WebTrackingClient, check_signing
from sls_beam.credentials import CredentialsSpec, check_spec, describe_spec
from sls_beam.endpoints import resolve_target
from sls_beam.retry import RetryPolicy
from sls_beam.signing import DEFAULT_SIGNATURE_VERSION
from sls_beam.wire import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
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

#: Each option's default, named once (those shared with the client live in
#: ``client``/``wire``/``retry``): WriteToSLS, this config, the example
#: pipelines and the README's table all read them from there.
DEFAULT_MAX_BUFFERING_SECS = 2.0
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IN_FLIGHT = 4
DEFAULT_ON_SEND_FAILURE = "raise"
DEFAULT_MODE = "auto"
DEFAULT_NUM_SHARDS = 16

T = TypeVar("T")
#: An option given as a value, or as a callable of the element that returns one.
PerElement = Union[T, Callable[[Any], T]]  # noqa: UP007 - a generic alias needs Union


@dataclass(frozen=True, kw_only=True)
class SLSWriteConfig:
    """Everything a worker needs to write: validated once, pickled to workers.

    Built by keyword only; see :class:`WriteToSLS` for the meaning of each field.
    """

    endpoint: str
    project: str
    logstore: str
    topic: PerElement[str] = ""
    source: PerElement[str] = ""
    tags: PerElement[Mapping[str, Any] | None] = None
    compression: str = DEFAULT_COMPRESSION
    max_batch_logs: int = SERVICE_MAX_LOGS
    max_batch_bytes: int = SERVICE_MAX_RAW_BYTES
    max_buffering_secs: float = DEFAULT_MAX_BUFFERING_SECS
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    event_time_key: str | None = None
    timeout_secs: float = DEFAULT_TIMEOUT_SECS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_send_failure: str = DEFAULT_ON_SEND_FAILURE
    mode: str = DEFAULT_MODE
    num_shards: int = DEFAULT_NUM_SHARDS
    verify: bool | str = True
    clock: Callable[[], float] = time.time
    credentials: CredentialsSpec = None
    signature_version: str = DEFAULT_SIGNATURE_VERSION
    region: str | None = None

    def __post_init__(self):
        resolve_target(self.endpoint, self.project, self.logstore)
        check_spec(self.credentials)
        if self.credentials is not None:
            check_signing(self.endpoint, self.signature_version, self.region)
        self.limits()  # validates the batch limits
        LogEncoder(self.event_time_key)  # validates the event time key
        checks = [
            (self.compression in COMPRESSIONS, "compression", f"one of {COMPRESSIONS}"),
            (self.mode in MODES, "mode", f"one of {MODES}"),
            (
                self.on_send_failure in ON_SEND_FAILURE,
                "on_send_failure",
                f"one of {ON_SEND_FAILURE}",
            ),
            (self.max_in_flight >= 1, "max_in_flight", "at least 1"),
            (self.num_shards >= 1, "num_shards", "at least 1"),
            (self.max_buffering_secs >= 0, "max_buffering_secs", "not negative"),
            (
                self.max_buffered_bytes >= self.max_batch_bytes,
                "max_buffered_bytes",
                f"at least max_batch_bytes ({self.max_batch_bytes})",
            ),
            (self.timeout_secs > 0, "timeout_secs", "positive"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}, not {getattr(self, name)!r}")
        if not any(map(callable, (self.topic, self.source, self.tags))):
            LogGroup.of(self.topic, self.source, self.tags)  # constants: fail at construction

    def limits(self) -> BatchLimits:
        """The count and byte bounds of one request."""
        return BatchLimits(self.max_batch_logs, self.max_batch_bytes)

    def make_client(self) -> WebTrackingClient:
        """A client for this logstore, pooling one connection per request in flight."""
        return WebTrackingClient(
            self.endpoint,
            self.project,
            self.logstore,
            timeout_secs=self.timeout_secs,
            retry=self.retry,
            verify=self.verify,
            pool_size=self.max_in_flight,
            credentials=self.credentials,
            signature_version=self.signature_version,
            region=self.region,
        )

    @property
    def signed(self) -> bool:
        """Whether requests are signed (and logs keep their time)."""
        return self.credentials is not None


def display_data(config: SLSWriteConfig) -> dict:
    """Display data of the sink's transform and DoFns: never a secret (credentials are
    described by their AccessKey id or where they come from)."""
    signing = {}
    if config.signed:
        signing = {
            "credentials": describe_spec(config.credentials),
            "signature_version": config.signature_version,
        }
    return {
        **signing,
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
