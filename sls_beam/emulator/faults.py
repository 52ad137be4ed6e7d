"""Fault injection: scripted or seeded-random bad answers, latency and dropped connections."""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Iterable, Mapping

#: Fault kinds and what the emulator does for each.
#: ``500``/``502``/``503``: that status with an errorCode; ``quota``: 403
#: WriteQuotaExceed; ``drop``: close the connection without answering (the
#: logs are not stored); ``slow``: store the logs, then answer only after
#: ``slow_secs`` (past a client's timeout, so a retry duplicates them);
#: ``ok``: a normal answer (useful inside a script).
FAULT_KINDS = ("500", "502", "503", "quota", "drop", "slow", "ok")

ERROR_ANSWERS = {
    "500": (500, "InternalServerError", "internal server error (injected)"),
    "502": (502, "BadGateway", "bad gateway (injected)"),
    "503": (503, "ServerBusy", "server is busy (injected)"),
    "quota": (403, "WriteQuotaExceed", "Write quota is exceeded (injected)"),
}


class FaultPlan:
    """Decides, request by request, whether to misbehave. Thread-safe and seeded.

    A script (a queue of kinds) is served first, one kind per request; after
    it, each request draws from ``rates`` with the seeded random generator, so
    a failing test reproduces with the same seed and request order.

    Args:
      rates: probability per kind, e.g. ``{"503": 0.1, "quota": 0.05}``.
      seed: seeds the draws.
      latency_secs: added before every answer (a WAN-like round trip).
      slow_secs: how late a ``slow`` answer comes.
    """

    def __init__(
        self,
        rates: Mapping[str, float] | None = None,
        seed: int = 0,
        latency_secs: float = 0.0,
        slow_secs: float = 5.0,
    ):
        self._lock = threading.Lock()
        self._script: deque[str] = deque()
        self.configure(rates or {}, seed, latency_secs, slow_secs)

    def configure(
        self,
        rates: Mapping[str, float] | None = None,
        seed: int | None = None,
        latency_secs: float | None = None,
        slow_secs: float | None = None,
    ) -> None:
        """Change any of the settings (``None`` keeps the current one)."""
        with self._lock:
            if rates is not None:
                if not isinstance(rates, Mapping) or not all(
                    isinstance(rate, (int, float)) for rate in rates.values()
                ):
                    raise ValueError("rates: an object of kinds and probabilities")
                unknown = set(rates) - set(FAULT_KINDS)
                if unknown or sum(rates.values()) > 1 or min(rates.values(), default=0) < 0:
                    raise ValueError(
                        f"rates: kinds from {FAULT_KINDS}, probabilities summing to <= 1"
                    )
                self.rates = dict(rates)
            if seed is not None:
                self._rng = random.Random(seed)
            if latency_secs is not None:
                self.latency_secs = latency_secs
            if slow_secs is not None:
                self.slow_secs = slow_secs

    def apply(self, settings: Mapping) -> None:
        """Apply ``/_emulator/faults``'s JSON (``clear``, ``script``, ``rates``, ``seed``,
        ``latency_secs``, ``slow_secs``) all at once, or none of it.

        Raises:
          ValueError: naming what is wrong; nothing was changed then.
        """
        unknown = set(settings) - {"clear", "script", "rates", "seed", "latency_secs", "slow_secs"}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        scratch = FaultPlan()  # validates every value before the live plan is touched
        scratch.script(settings.get("script", []))
        numbers = {k: settings[k] for k in ("latency_secs", "slow_secs") if k in settings}
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number of seconds, not {value!r}")
        seed = settings.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer, not {seed!r}")
        scratch.configure(settings.get("rates"), seed, **numbers)
        if settings.get("clear"):
            self.clear()
        self.script(settings.get("script", []))
        self.configure(settings.get("rates"), seed, **numbers)

    def script(self, kinds: Iterable[str]) -> None:
        """Queue faults for the next requests, in order (``ok`` for a normal answer)."""
        if isinstance(kinds, (str, bytes)) or not isinstance(kinds, Iterable):
            raise ValueError(f"script: a list of fault kinds from {FAULT_KINDS}")
        kinds = list(kinds)
        if not all(isinstance(kind, str) for kind in kinds) or set(kinds) - set(FAULT_KINDS):
            raise ValueError(f"fault kinds are {FAULT_KINDS}")
        with self._lock:
            self._script.extend(kinds)

    def clear(self) -> None:
        """No more faults: empty the script, zero the rates and the latency."""
        with self._lock:
            self._script.clear()
            self.rates = {}
            self.latency_secs = 0.0

    def next_fault(self) -> str | None:
        """The fault for the next request, or ``None`` to answer normally."""
        with self._lock:
            if self._script:
                kind = self._script.popleft()
                return None if kind == "ok" else kind
            if not self.rates:
                return None
            draw = self._rng.random()
            for kind, rate in self.rates.items():
                if draw < rate:
                    return None if kind == "ok" else kind
                draw -= rate
            return None
