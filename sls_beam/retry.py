"""Every classification of an answer, and how long to wait before another attempt: a value.

The tables are data; :class:`RetryPolicy` reads them. Callers ask the policy
(is it retryable, is it quota, did the service refuse the content) and never
look at statuses and codes themselves.
"""

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


#: Defaults of :class:`RetryPolicy` (attempts; seconds).
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_BACKOFF_BASE_SECS = 0.2
DEFAULT_QUOTA_BACKOFF_BASE_SECS = 1.0
DEFAULT_BACKOFF_MAX_SECS = 30.0

#: Statuses with which the service refuses a batch's content (with a code of
#: CONTENT_ERROR_CODES): splitting the batch isolates the bad logs.
CONTENT_REFUSAL_STATUSES = frozenset({400, 413})

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

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base_secs: float = DEFAULT_BACKOFF_BASE_SECS
    quota_backoff_base_secs: float = DEFAULT_QUOTA_BACKOFF_BASE_SECS
    backoff_max_secs: float = DEFAULT_BACKOFF_MAX_SECS

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts!r}")
        times = (self.backoff_base_secs, self.quota_backoff_base_secs, self.backoff_max_secs)
        if min(times) < 0:
            raise ValueError(f"backoff times must not be negative, not {times!r}")

    @classmethod
    def with_backoff(
        cls, max_attempts: int, backoff_base_secs: float, backoff_max_secs: float
    ) -> RetryPolicy:
        """A policy from the sink's three options: quota answers back off from at least
        DEFAULT_QUOTA_BACKOFF_BASE_SECS (within the longest wait), errors from the base."""
        quota_base = max(backoff_base_secs, min(DEFAULT_QUOTA_BACKOFF_BASE_SECS, backoff_max_secs))
        return cls(max_attempts, backoff_base_secs, quota_base, backoff_max_secs)

    @staticmethod
    def is_quota(status: int | None, error_code: str | None) -> bool:
        """Whether the answer says the project or shard is over its write quota."""
        return status == 429 or (status == 403 and error_code in QUOTA_ERROR_CODES)

    @staticmethod
    def is_refused_content(status: int | None, error_code: str | None) -> bool:
        """Whether the service refused what the batch holds (a bad log, too large):
        the same logs would fail again, but a part of the batch may pass."""
        return status in CONTENT_REFUSAL_STATUSES and error_code in CONTENT_ERROR_CODES

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
