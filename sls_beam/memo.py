"""A bounded memo: what a long-lived DoFn remembers per group, without growing forever."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

#: Entries a memo keeps; past this it starts afresh. Enough for the groups of
#: a normal stream to be computed once, small enough (a few MB) that a
#: stream of a million distinct topics cannot grow a worker's memory.
MAX_REMEMBERED = 10_000


class Memo(dict):
    """``memo[key]`` is ``make(key)``, computed once while remembered.

    A hit is a plain dict lookup (the hot path); a miss computes the value,
    first forgetting everything when ``limit`` entries are held. What
    ``make`` raises reaches the caller, and nothing is remembered for it.
    """

    def __init__(self, make: Callable[[Hashable], Any], limit: int = MAX_REMEMBERED):
        super().__init__()
        self._make = make
        self._limit = limit

    def __missing__(self, key: Hashable) -> Any:
        value = self._make(key)
        if len(self) >= self._limit:
            self.clear()
        self[key] = value
        return value
