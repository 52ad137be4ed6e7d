"""Element → (log group, encoded log): the per-element work of the sink."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from sls_beam.config import SLSWriteConfig
from sls_beam.errors import InvalidLogError
from sls_beam.wire import (
    LogEncoder,
    LogGroup,
    check_log_size,
    not_a_mapping,
)


def element_to_log(element: Any) -> Any:
    """The log (a mapping) an element stands for.

    Mappings are logs as they are; ``beam.Row``, NamedTuples and dataclass
    instances map field names to values (fields that are None are left
    out, as absent from the record); ``str`` and ``bytes`` become
    ``{"content": element}``. Anything else is returned unchanged, for the
    encoder to refuse with a clear error.
    """
    if isinstance(element, Mapping):
        return element
    if isinstance(element, (str, bytes)):
        return {"content": element}
    if isinstance(element, beam.Row):
        fields = element.as_dict()
    elif hasattr(element, "_asdict"):
        fields = element._asdict()
    elif dataclasses.is_dataclass(element) and not isinstance(element, type):
        fields = {f.name: getattr(element, f.name) for f in dataclasses.fields(element)}
    else:
        return element
    # A schema field that is None is absent from this record (Beam YAML gives every row
    # every field of the schema): leave it out rather than send "null".
    return {name: value for name, value in fields.items() if value is not None}


def format_event_time(timestamp: Timestamp) -> str:
    """Unix seconds, with a fraction only when there is one (``1700000000.25``)."""
    seconds, micros = divmod(timestamp.micros, 1_000_000)
    return str(seconds) if not micros else f"{seconds}.{micros:06d}".rstrip("0")


#: Fields of a log that set its group (and are removed from its content).
_OWN_GROUP_FIELDS = frozenset({"__topic__", "__source__", "__tags__"})


class LogPreparer:
    """Element → (group, encoded log): the per-element work, on the caller's thread."""

    def __init__(self, config: SLSWriteConfig):
        self._config = config
        self._encoder = LogEncoder(config.event_time_key, config.max_batch_bytes)
        self._max_bytes = config.max_batch_bytes
        dynamic = any(map(callable, (config.topic, config.source, config.tags)))
        self._static_group = (
            None if dynamic else LogGroup.of(config.topic, config.source, config.tags)
        )
        self._groups: dict[tuple, LogGroup] = {}
        self._overheads: dict[LogGroup, int] = {}

    def prepare(self, element: Any, timestamp: Timestamp | None = None) -> tuple[LogGroup, bytes]:
        """Raises InvalidLogError for a log (or its topic/source/tags) that breaks a rule.

        ``timestamp`` (the element's) fills ``event_time_key`` when set.
        """
        if element.__class__ is dict:
            log = element
        else:
            log = element_to_log(element)
            if not isinstance(log, Mapping):
                raise not_a_mapping(log)
        group = self._static_group
        if group is None or "__topic__" in log or "__source__" in log or "__tags__" in log:
            group, log = self._group_of(element, log)
        event_time = None
        if self._encoder.event_time_key and timestamp is not None and timestamp > MIN_TIMESTAMP:
            event_time = format_event_time(timestamp)
        data = self._encoder.encode(log, event_time)
        overhead = self.overhead(group)
        if len(data) + overhead > self._max_bytes:
            check_log_size(len(data), self._max_bytes - overhead)
        return group, data

    @property
    def static_group(self) -> LogGroup | None:
        """The group of every log, when topic, source and tags are constants."""
        return self._static_group

    def encode_many(self, logs: list[dict]) -> bytes | None:
        """Plain logs of the static group, encoded in bulk (see LogEncoder.encode_many)."""
        return self._encoder.encode_many(logs)

    def overhead(self, group: LogGroup) -> int:
        overhead = self._overheads.get(group)
        if overhead is None:
            overhead = self._overheads[group] = group.overhead_bytes()
        return overhead

    def _group_of(self, element: Any, log: Any) -> tuple[LogGroup, Any]:
        config = self._config
        topic = config.topic(element) if callable(config.topic) else config.topic
        source = config.source(element) if callable(config.source) else config.source
        tags = config.tags(element) if callable(config.tags) else config.tags
        if isinstance(log, Mapping) and not _OWN_GROUP_FIELDS.isdisjoint(log):
            topic = log.get("__topic__", topic)
            source = log.get("__source__", source)
            own_tags = log.get("__tags__", {})
            if not isinstance(own_tags, Mapping):
                raise InvalidLogError("__tags__", "a log's __tags__ must be a mapping")
            tags = {**(tags or {}), **own_tags}
            log = {k: v for k, v in log.items() if k not in _OWN_GROUP_FIELDS}
        if tags is not None and not isinstance(tags, Mapping):
            raise InvalidLogError("__tags__", f"tags must be a mapping, not {type(tags).__name__}")
        key = (topic, source, tuple(sorted(tags.items(), key=str)) if tags else ())
        try:
            group = self._groups.get(key)
        except TypeError:  # an unhashable topic or source: let LogGroup.of say what is wrong
            group = None
        if group is None:
            group = LogGroup.of(topic, source, tags)
            if len(self._groups) < 10_000:  # bound the cache whatever the cardinality
                self._groups[key] = group
        return group, log
