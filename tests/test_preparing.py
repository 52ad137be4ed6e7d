"""Element preparation on its own: element → (group, log JSON); no HTTP, no pipeline."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import apache_beam as beam
import orjson
import pytest
from apache_beam.utils.timestamp import Timestamp

from sls_beam.config import SLSWriteConfig
from sls_beam.errors import InvalidLogError
from sls_beam.preparing import LogPreparer
from sls_beam.wire import BatchLimits, LogGroup
from tests.helpers import LOGSTORE, PROJECT


def preparer(**options) -> LogPreparer:
    config = SLSWriteConfig(
        endpoint="http://127.0.0.1:1", project=PROJECT, logstore=LOGSTORE, **options
    )
    return LogPreparer(config)


def test_a_logs_own_group_fields_override_and_leave_the_log():
    prepare = preparer(topic="default", source="here", tags={"env": "prod"}).prepare
    group, data = prepare({"__topic__": "mine", "__tags__": {"team": "a"}, "msg": "m"})
    assert group == LogGroup.of("mine", "here", {"env": "prod", "team": "a"})
    assert orjson.loads(data) == {"msg": "m"}
    group, _ = prepare({"msg": "plain"})
    assert group == LogGroup.of("default", "here", {"env": "prod"})


def tags_of(log):
    return {"n": log["n"] % 2}


def test_groups_are_made_once_per_distinct_group():
    prepare = preparer(tags=tags_of).prepare
    groups = [prepare({"n": n})[0] for n in range(100)]
    assert len({id(g) for g in groups}) == 2  # the memo hands back the same two objects
    assert {g.tags for g in groups} == {(("n", "0"),), (("n", "1"),)}


class Point(NamedTuple):
    x: int


@dataclasses.dataclass
class Event:
    level: str
    detail: str | None = None


@pytest.mark.parametrize(
    ("element", "fields"),
    [
        (beam.Row(level="INFO", code=3), {"level": "INFO", "code": "3"}),
        (Point(4), {"x": "4"}),
        (Event("WARN"), {"level": "WARN"}),  # a None field is absent from the record
        ("just text", {"content": "just text"}),
        (b"bytes", {"content": "bytes"}),
    ],
)
def test_elements_of_every_shape_become_logs(element, fields):
    _, data = preparer().prepare(element)
    assert orjson.loads(data) == fields


def test_the_element_timestamp_fills_the_event_time_field():
    _, data = preparer(event_time_key="ts").prepare({"m": "x"}, Timestamp(1700000000.25))
    assert orjson.loads(data) == {"m": "x", "ts": "1700000000.25"}


def test_a_log_too_large_for_one_request_is_refused_with_the_room_it_had():
    room = BatchLimits(max_bytes=2048).room(LogGroup.of("t" * 20))
    assert room < 2000 < 2048
    with pytest.raises(InvalidLogError, match=f"at most {room} beside its topic"):
        preparer(topic="t" * 20, max_batch_bytes=2048).prepare({"m": "x" * 1992})


def test_a_logs_own_tags_must_be_a_mapping():
    with pytest.raises(InvalidLogError, match="__tags__ must be a mapping"):
        preparer().prepare({"__tags__": None, "msg": "m"})


def test_own_group_fields_leave_the_element_itself_untouched():
    element = {"__source__": "host-1", "msg": "m"}
    group, data = preparer().prepare(element)
    assert (group.source, orjson.loads(data)) == ("host-1", {"msg": "m"})
    assert element == {"__source__": "host-1", "msg": "m"}  # a failure reports it whole
