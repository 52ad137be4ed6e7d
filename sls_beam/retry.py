"""Which answers are worth another attempt, and how long to wait: a value."""

from __future__ import annotations

import random
from dataclasses import dataclass

#: 403 codes that mean "over quota, slow down" rather than "forbidden".
QUOTA_ERROR_CODES = frozenset({"WriteQuotaExceed", "ShardWriteQuotaExceed", "ExceedQuota"})

#: 4xx codes saying that the *content* of a batch was refused: splitting the
#: batch can isolate the bad logs so the rest still lands.
CONTENT_ERROR_CODES = frozenset(
    {
        "PostBodyInvalid",
        "PostBodyTooLarge",
        "InvalidKey",
        "InvalidEncoding",
        "InvalidTimestamp",
        "ParameterInvalid",
        "InvalidLogSize",
    }
)


#: Codes of failures without an answer that would fail the same way again:
#: an untrusted TLS certificate, or TLS spoken to a plain-HTTP server.
FINAL_NETWORK_CODES = frozenset({"TLSError"})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter.

    Retried: network errors and timeouts (``status`` is ``None``) but TLS
    certificate and protocol failures, HTTP 5xx, 429, and 403 with a quota
    code (``WriteQuotaExceed``, ``ShardWriteQuotaExceed``, ``ExceedQuota``).
    Never retried: other 4xx, such as 400 (malformed), 401 (web tracking
    disabled), 404 and 413, and ``TLSError``, which would fail the same way
    again.

    The wait before attempt ``n + 1`` is drawn uniformly from
    ``[0, min(backoff_max_secs, base * 2 ** (n - 1))]`` ("full jitter"), where
    ``base`` is ``quota_backoff_base_secs`` for quota answers (a shard that is
    over quota needs longer to drain) and ``backoff_base_secs`` otherwise.
    An answer's ``Retry-After`` (429, 503) is honoured instead, capped by
    ``backoff_max_secs``.

    Attributes:
      max_attempts: attempts in all, the first included (>= 1).
      backoff_base_secs: first backoff ceiling for errors (seconds).
      quota_backoff_base_secs: first backoff ceiling for quota answers (seconds).
      backoff_max_secs: largest single wait (seconds).
    """

    max_attempts: int = 8
    backoff_base_secs: float = 0.2
    quota_backoff_base_secs: float = 1.0
    backoff_max_secs: float = 30.0

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.backoff_base_secs, self.quota_backoff_base_secs, self.backoff_max_secs) < 0:
            raise ValueError("backoff times must not be negative")

    @staticmethod
    def is_quota(status: int | None, error_code: str | None) -> bool:
        """Whether the answer says the project or shard is over its write quota."""
        return status == 429 or (status == 403 and error_code in QUOTA_ERROR_CODES)

    def is_retryable(self, status: int | None, error_code: str | None) -> bool:
        """Whether an answer (``status`` ``None``: no answer) deserves another attempt."""
        if status is None:
            return error_code not in FINAL_NETWORK_CODES
        return status >= 500 or self.is_quota(status, error_code)

    def backoff_secs(
        self,
        attempt: int,
        quota: bool,
        rng: random.Random,
        retry_after_secs: float | None = None,
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``retry_after_secs``: the server's ``Retry-After``, which wins when given.
        """
        if retry_after_secs is not None:
            return min(retry_after_secs, self.backoff_max_secs)
        base = self.quota_backoff_base_secs if quota else self.backoff_base_secs
        ceiling = min(self.backoff_max_secs, base * 2 ** (attempt - 1))
        return rng.uniform(0, ceiling)
