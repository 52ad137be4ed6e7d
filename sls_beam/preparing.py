"""Element → (log group, encoded log): the per-element work of the sink."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from sls_beam.config import SLSWriteConfig
from sls_beam.errors import InvalidLogError, describe
from sls_beam.json_lines import EncodedLines, JsonLines, encode_lines, parse_line
from sls_beam.memo import Memo
from sls_beam.wire import (
    LogEncoder,
    LogGroup,
    check_log_size,
    not_a_mapping,
    stringify,
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


def names_own_group(log: Mapping) -> bool:
    """Whether a log sets its own topic, source or tags (:data:`_OWN_GROUP_FIELDS`)."""
    return "__topic__" in log or "__source__" in log or "__tags__" in log


class LogPreparer:
    """Element → (group, encoded log): the per-element work, on the caller's thread.

    User code runs here (topic, source and tags callables, a value's own
    ``__str__``): whatever it raises becomes an :class:`InvalidLogError`
    naming the exception, so one bad element never fails a bundle.
    """

    def __init__(self, config: SLSWriteConfig):
        self._config = config
        self._encoder = LogEncoder(
            config.event_time_key, config.max_batch_bytes, log_time=config.signed
        )
        self._limits = config.limits()
        self._needs_event_time = bool(config.event_time_key) or config.signed
        self._called_options = any(map(callable, (config.topic, config.source, config.tags)))
        self._static_group = (
            None if self._called_options else LogGroup.of(config.topic, config.source, config.tags)
        )
        # (topic, source, tag texts) → its group, validated once.
        self._groups = Memo(lambda key: LogGroup.of(key[0], key[1], dict(key[2])))
        # What sets a group (see field_groups) → the group.
        self._field_groups = Memo(self._group_of_fields)
        # The usual dynamic group (a source per file, host, ...): only `source` is a
        # callable; its string → the group, without the general path's steps.
        self._source_groups = None
        if callable(config.source) and not callable(config.topic) and not callable(config.tags):
            self._source_groups = Memo(
                lambda source: LogGroup.of(config.topic, source, config.tags)
            )

    def prepare(
        self, element: Any, timestamp: Timestamp | None = None, log: Mapping | None = None
    ) -> tuple[LogGroup, bytes]:
        """Raises InvalidLogError for a log (or its topic/source/tags) that breaks a rule,
        or whose reading raised.

        ``timestamp`` (the element's) fills ``event_time_key`` when set. ``log``: the
        log, when it is not the element itself (a line of a :class:`JsonLines`, whose
        callables are given the element).
        """
        return _contained(self._prepare, element, timestamp, log)

    def _prepare(
        self, element: Any, timestamp: Timestamp | None, log: Mapping | None
    ) -> tuple[LogGroup, bytes]:
        if log is None:  # else a log the element holds (a line of a JsonLines)
            if element.__class__ is dict:
                log = element
            else:
                log = element_to_log(element)
                if not isinstance(log, Mapping):
                    raise not_a_mapping(log)
        group = self._static_group
        if group is None or names_own_group(log):
            group, log = self._group_of(element, log)
        event_time = None
        if self._needs_event_time and timestamp is not None and timestamp > MIN_TIMESTAMP:
            event_time = format_event_time(timestamp)
        return group, self.encode_log(log, group, event_time)

    def group_of_lines(self, lines: JsonLines) -> LogGroup:
        """The group of a :class:`JsonLines`'s lines that name none of their own: the
        callables are given the element. Raises InvalidLogError, naming what they raised."""
        if self._static_group is not None:
            return self._static_group
        return self._called_group_of(lines, {})[0]

    def encode_lines(self, text: bytes) -> EncodedLines | None:
        """The lines of a JsonLines written in C (see :func:`encode_lines`), or ``None``:
        no C encoder, or each log needs its own event time."""
        if not self.takes_bulk:
            return None
        return encode_lines(text, self._encoder.time_tail(), self._encoder.max_log_bytes)

    def prepare_line(
        self, lines: JsonLines, line: bytes, timestamp: Timestamp | None = None
    ) -> tuple[LogGroup, bytes]:
        """:meth:`prepare` of one line of ``lines``: its group from the element's callables
        and its own fields. Raises InvalidLogError (NotJsonError: not a JSON object)."""
        return self.prepare(lines, timestamp, parse_line(line))

    def encode_log(
        self, log: Mapping[str, Any], group: LogGroup, event_time: str | None = None
    ) -> bytes:
        """One log's JSON, if it fits a request of ``group``; raises InvalidLogError."""
        data = self._encoder.encode(log, event_time)
        room = self._limits.room(group)
        if len(data) > room:
            check_log_size(len(data), room)
        return data

    @property
    def static_group(self) -> LogGroup | None:
        """The group of every log without fields of its own, when topic, source and tags
        are constants."""
        return self._static_group

    @property
    def needs_event_time(self) -> bool:
        """Whether an element's timestamp goes into its log (``event_time_key``, or the
        ``__time__`` of a signed write)."""
        return self._needs_event_time

    @property
    def takes_bulk(self) -> bool:
        """Whether logs may be encoded in bulk (:meth:`encode_many`): not when each
        needs its own event time."""
        return not self._encoder.event_time_key

    def group_of(self, element: dict) -> tuple[LogGroup, dict]:
        """The group of a ``dict`` element, and its content (without the fields that
        set the group). Raises InvalidLogError, naming what user code raised. (The
        batcher groups the logs of a lone source callable itself, a run at a time:
        :attr:`source_callable`, :meth:`group_of_source`.)"""
        group = self._static_group
        if group is not None and not names_own_group(element):
            return group, element
        return self._called_group_of(element, element)

    def _called_group_of(self, element: Any, log: Any) -> tuple[LogGroup, Any]:
        """:meth:`_group_of`, with what user code raised as an InvalidLogError."""
        return _contained(self._group_of, element, log)

    @property
    def source_callable(self) -> Callable[[Any], Any] | None:
        """The source callable, when it alone sets the group (topic and tags constant)."""
        return self._config.source if self._source_groups is not None else None

    @property
    def source_groups(self) -> Mapping[str, LogGroup] | None:
        """The group of logs whose :attr:`source_callable` gave a str, made once (a miss
        makes it, or raises InvalidLogError); ``None`` without a source callable. A dict
        lookup a run of logs, where a method call would cost ~0.1 µs; other values take
        :meth:`group_of_source`."""
        return self._source_groups

    def group_of_source(self, source: Any) -> LogGroup:
        """The group of logs whose :attr:`source_callable` gave ``source``.
        Raises InvalidLogError if ``source`` breaks a rule."""
        if source.__class__ is str:
            return self._source_groups[source]
        config = self._config
        return LogGroup.of(config.topic, source, config.tags)  # None: no source; else refused

    @property
    def options(self) -> tuple[Any, Any, Any]:
        """The topic, source and tags options, each a value or a callable of the element."""
        config = self._config
        return config.topic, config.source, config.tags

    @property
    def field_groups(self) -> Mapping[tuple, LogGroup]:
        """The group of dicts by what sets it (see :func:`sls_beam.grouping.group_by_fields`),
        made once: a key (topic, source, the tags callable's pairs, the log's own tag
        pairs), a topic or source ``None`` where it is the configuration's (or a callable
        gave None), the tags ``None`` where there are none. A miss makes the group, or
        raises InvalidLogError if one breaks a rule."""
        return self._field_groups

    def _group_of_fields(self, key: tuple) -> LogGroup:
        topic, source, called_tags, own_tags = key
        config = self._config
        if topic is None and not callable(config.topic):
            topic = config.topic
        if source is None and not callable(config.source):
            source = config.source
        tags = config.tags
        if callable(tags):
            tags = dict(called_tags) if called_tags else None
        if own_tags is not None:
            tags = {**(tags or {}), **dict(own_tags)}
        return self._groups[topic, source, _tag_texts(tags) if tags else ()]

    def group_of_called(self, element: dict, called: tuple) -> tuple[LogGroup, dict]:
        """:meth:`group_of` of a ``dict`` element whose callables gave ``called`` (topic,
        source, tags; the configuration's where not a callable): not called again."""
        return _contained(self._group_from, *called, element)

    def encode_many(self, logs: list[dict]) -> bytes | None:
        """Plain logs encoded in bulk (see LogEncoder.encode_many), or ``None``."""
        return self._encoder.encode_many(logs)

    def encode_runs_keeping(
        self, runs: list[list[dict]], own_groups: bool = False
    ) -> tuple[list[bytes | None], list[bytes | None]]:
        """Runs encoded in bulk, and their logs as JSON where it gives them back as they
        are (see LogEncoder.encode_runs_keeping)."""
        return self._encoder.encode_runs_keeping(runs, own_groups)

    def _group_of(self, element: Any, log: Any) -> tuple[LogGroup, Any]:
        config = self._config
        topic, source, tags = config.topic, config.source, config.tags
        if self._called_options:  # only the options given as callables are called
            if callable(topic):
                topic = _called(topic, element, "topic")
            if callable(source):
                source = _called(source, element, "source")
            if callable(tags):
                tags = _called(tags, element, "tags")
        return self._group_from(topic, source, tags, log)

    def _group_from(self, topic: Any, source: Any, tags: Any, log: Any) -> tuple[LogGroup, Any]:
        """The group of ``log`` with the options' values ``topic``, ``source`` and
        ``tags`` (its own fields take their place), and its content without them."""
        if names_own_group(log):
            log = dict(log)  # a copy without the fields that set the group (C-level)
            topic = log.pop("__topic__", topic)
            source = log.pop("__source__", source)
            own_tags = log.pop("__tags__", _NO_TAGS)
            if own_tags is not _NO_TAGS:
                if not isinstance(own_tags, Mapping):
                    raise InvalidLogError("__tags__", "a log's __tags__ must be a mapping")
                tags = {**(tags or {}), **own_tags}
        if tags is not None and not isinstance(tags, Mapping):
            raise InvalidLogError("__tags__", f"tags must be a mapping, not {type(tags).__name__}")
        if topic.__class__ is not str or source.__class__ is not str:
            return LogGroup.of(topic, source, tags), log  # LogGroup.of says what is wrong
        # The memo's key holds the strings that are sent, so values that compare
        # equal but are written differently (True, 1, 1.0) never share a group.
        return self._groups[topic, source, _tag_texts(tags) if tags else ()], log


_NO_TAGS = object()


def _contained(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, where user code runs (a callable, a property, a Mapping's own
    methods): what it raises becomes an InvalidLogError naming it, so one bad element
    never fails a bundle."""
    try:
        return function(*args)
    except InvalidLogError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code
        raise InvalidLogError(None, f"the element could not be read: {describe(e)}") from None


def log_content(element: Any) -> Any:
    """A dict element without the fields that set its group: what is sent of it."""
    if element.__class__ is dict and not names_own_group(element):
        return element
    return {key: value for key, value in element.items() if key not in _OWN_GROUP_FIELDS}


def _called(option: Callable[[Any], Any], element: Any, name: str) -> Any:
    """What the topic, source or tags callable gives for ``element``; what it raises
    becomes an InvalidLogError that names the option and the exception."""
    try:
        return option(element)
    except Exception as e:
        raise callable_raised(name, e) from None


def callable_raised(name: str, error: Exception) -> InvalidLogError:
    """The error of an element whose ``name`` (topic, source, tags) callable raised."""
    return InvalidLogError(f"__{name}__", f"the {name} callable raised {describe(error)}")


def _tag_texts(tags: Mapping[str, Any]) -> tuple:
    return tuple(
        (key, value if value.__class__ is str else stringify(f"__tags__.{key}", value))
        for key, value in tags.items()
    )
