"""Ordinary-but-awkward values and raising user code, importable by pipeline workers."""

from __future__ import annotations

import datetime
import enum
from typing import NamedTuple


class Field(str, enum.Enum):
    """A str enum used as a key (``enum.StrEnum`` is Python 3.11+)."""

    LEVEL = "level"


class Point(NamedTuple):
    x: int
    y: float


class RaisingStr:
    """A value whose ``__str__`` raises (its ``__repr__`` is fine)."""

    def __str__(self):
        raise RuntimeError("no text for you")

    def __repr__(self):
        return "RaisingStr()"

    def __eq__(self, other):
        return isinstance(other, RaisingStr)

    def __hash__(self):
        return 1


class RaisingZone(datetime.tzinfo):
    """A time zone whose offset raises."""

    def utcoffset(self, dt):
        raise ValueError("zone database unavailable")

    def tzname(self, dt):
        return "??"

    def dst(self, dt):
        return None


def nested(depth: int) -> dict:
    """A dict nested ``depth`` levels deep, built without recursion."""
    value: dict = {"leaf": "x"}
    for _ in range(depth):
        value = {"d": value}
    return value


#: Which element number carries which awkwardness, and whether it must land.
BIG_INT = 10**5000


def odd_element(n: int) -> dict:
    """Element ``n``: most are plain; a few carry one awkward value each."""
    log = {"n": n, "msg": f"message {n}", "ratio": n / 7, "ok": n % 2 == 0}
    if n == 1:
        log["big"] = BIG_INT  # lands: decimal digits, however many
    elif n == 2:
        log = {Field.LEVEL: "warn", "n": n}  # lands: key "level"
    elif n == 3:
        log["__tags__"] = {"ids": [1, 2]}  # lands: tag value '[1,2]'
    elif n == 4:
        log["point"] = Point(1, 2.5)  # lands: '[1,2.5]'
    elif n == 6:
        log["bad"] = RaisingStr()  # fails, naming "bad"
    elif n == 7:
        log["at"] = datetime.datetime(2026, 1, 1, tzinfo=RaisingZone())  # fails, naming "at"
    elif n == 8:
        log["deep"] = nested(10_000)  # fails, reported as an excerpt
    return log


#: Element numbers that must fail, and the words their reason must hold.
MUST_FAIL = {
    5: "topic callable raised ZeroDivisionError",
    6: "key 'bad'",
    7: "key 'at'",
    8: "key 'deep'",
}


def raising_topic(log) -> str:
    """A topic callable that raises for element 5."""
    return "app" if log.get("n") != 5 else str(1 / 0)
